"""Batch prediction throughput: ``predict_files`` (batched) against single-image calls, same run.

    python bench/batch_predict.py [FILE_OR_FOLDER...] [--model REF] [--batch-size 32] [--repeats 2]

Both paths classify the same files from disk with the same model and preprocessing: the
single path calls :meth:`Predictor.predict` once per file (what the classify tab does), the
batch path calls :func:`lungdemo.predict.predict_files` (what ``python -m lungdemo.predict``
does). A third row times decoding alone, the part batching cannot speed up, so the ratio can
be read against its ceiling. The paths alternate and the best of ``--repeats`` is kept, so
background load on a shared machine hits both alike. Target: batch >= 2x single.

Default files: the test split of the dataset (``../shared/data/chest-ct/test`` from the repo
root). Default model: the shipped model folder ``lungdemo/shipped_model`` when it exists,
else a random-weight model (image size 224, hidden 512) built in a temporary folder; the
speed of a forward pass does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lungdemo.folder import write_model_folder  # noqa: E402
from lungdemo.loading import SHIPPED_MODEL_DIR as SHIPPED_MODEL  # noqa: E402
from lungdemo.model import LungAlexNet  # noqa: E402
from lungdemo.predict import collect_sources, predict_files  # noqa: E402
from lungdemo.predictor import Predictor  # noqa: E402
from lungdemo.preprocessing import PreprocessConfig, decode_canonical  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest-ct" / "test"
RANDOM_CLASSES = ["adenocarcinoma", "large_cell_carcinoma", "normal", "squamous_cell_carcinoma"]


def random_model_folder(root: Path, image_size: int = 224, hidden: int = 512) -> Path:
    torch.manual_seed(0)
    cfg = PreprocessConfig(image_size=image_size)
    model = LungAlexNet(class_names=RANDOM_CLASSES, hidden=hidden, preprocessing=cfg.to_dict()).eval()
    return write_model_folder(model, root / "model")


def timed(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="*", type=Path, help=f"files or folders (default: {DEFAULT_DATA})")
    p.add_argument("--model", default=None, help="model folder or user/repo[@revision] (default: see above)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=0, help="use only the first N files (0 = all)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="lungdemo-bench-") as tmp:
        if args.model:
            ref, which = args.model, f"{args.model} (given)"
        elif SHIPPED_MODEL.is_dir():
            ref, which = str(SHIPPED_MODEL), f"{SHIPPED_MODEL} (shipped model)"
        else:
            ref = str(random_model_folder(Path(tmp)))
            which = "random weights, image size 224, hidden 512 (no shipped model found)"
        predictor = Predictor.from_ref(ref)
        sources = collect_sources(args.inputs or [DEFAULT_DATA])
        if args.limit:
            sources = sources[: args.limit]
        paths = [payload for _, payload in sources if isinstance(payload, Path)]
        sources = [(str(path), path) for path in paths]
        if not sources:
            print("no image files found", file=sys.stderr)
            return 2
        n = len(sources)

        # warm-up: first-call allocations, file cache
        predict_files(predictor, sources[: args.batch_size], batch_size=args.batch_size)
        for path in paths[:4]:
            predictor.predict(path)

        single: list[float] = []
        batch: list[float] = []
        decode: list[float] = []
        for _ in range(args.repeats):
            single.append(timed(lambda: [predictor.predict(path) for path in paths], n))
            batch.append(timed(lambda: predict_files(predictor, sources, batch_size=args.batch_size), n))
            decode.append(timed(lambda: [decode_canonical(path, predictor.cfg) for path in paths], n))

        rows = predict_files(predictor, sources, batch_size=args.batch_size)
        worst = 0.0
        identical = True
        for row, path in zip(rows, paths, strict=True):
            probs = predictor.predict(path).probabilities
            for cls, value in probs.items():
                got = row[f"p_{cls}"]
                identical &= got == value
                worst = max(worst, abs(got - value))

    size = predictor.cfg.image_size
    print(f"model: {which}")
    print(
        f"files {n}  image size {size}  batch {args.batch_size}  torch threads {torch.get_num_threads()}  "
        f"repeats {args.repeats}"
    )
    print(f"{'path':40s} {'best slices/s':>14s} {'all runs':>22s}")
    for name, values in (
        ("single: Predictor.predict per file", single),
        (f"batch: predict_files (batch {args.batch_size})", batch),
        ("decode only (batching's ceiling)", decode),
    ):
        print(f"{name:40s} {max(values):14.1f} {', '.join(f'{v:.1f}' for v in values):>22s}")
    ratio = max(batch) / max(single)
    print(f"ratio batch / single: {ratio:.2f}x (target >= 2x: {'met' if ratio >= 2 else 'NOT met'})")
    same = "bit-identical" if identical else "not bit-identical"
    print(f"batch vs single probabilities: max |difference| {worst:.2e} ({same})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
