"""What one prediction costs in CPU, part by part, and what batching can save of it.

Usage::

    python bench/request_cost.py [--model REF] [--data ../shared/data/chest-ct] [--every 8] [--threads 1]

On every ``--every``-th test file, process CPU time per file (``time.process_time``, so the figure is
the work done, whatever the number of threads) for: decoding, framing (decode + frame minus decode),
normalisation + the classifier's forward pass and the out-of-distribution check, each at batch 1 and
at batch 8 (per image), then the whole :meth:`Predictor.predict`. The parts that do not batch bound
what concurrent clients can gain from sharing forward passes on a machine of a given number of cores
(see docs/development.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lungdemo.decode import decode_image  # noqa: E402
from lungdemo.loading import SHIPPED_MODEL_DIR  # noqa: E402
from lungdemo.predictor import Predictor  # noqa: E402
from lungdemo.preprocessing import decode_canonical  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest-ct"


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    """Process CPU milliseconds per call of ``fn`` over ``repeat`` calls (after one warm-up call)."""
    fn()
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(SHIPPED_MODEL_DIR))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--every", type=int, default=8, help="take every N-th test file")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_ref(args.model)
    cfg = predictor.cfg
    files = sorted(f for f in (args.data / "test").rglob("*") if f.is_file())[:: args.every]
    datas = [f.read_bytes() for f in files]

    def each(fn: Callable[[bytes], object]) -> Callable[[], None]:
        return lambda: [fn(d) for d in datas]

    n = len(datas)
    decode = cpu_ms(each(lambda d: decode_image(d, cfg.max_pixels)), 1) / n
    framed = cpu_ms(each(lambda d: decode_canonical(d, cfg)), 1) / n
    canon = torch.stack([decode_canonical(d, cfg)[0] for d in datas[:8]])
    rows = [
        ("decode", decode, None),
        ("framing", framed - decode, None),
        (
            "normalise + forward",
            cpu_ms(lambda: predictor.probabilities_canonical(canon[:1]), 20),
            cpu_ms(lambda: predictor.probabilities_canonical(canon), 5) / len(canon),
        ),
    ]
    if predictor.ood is not None:
        check = predictor.ood
        rows.append(
            (
                "out-of-distribution check",
                cpu_ms(lambda: check.check(canon[:1]), 20),
                cpu_ms(lambda: check.check(canon), 5) / len(canon),
            )
        )
    predict = cpu_ms(each(predictor.predict), 1) / n
    print(f"model {args.model}, {n} test files, {args.threads} torch thread(s); CPU ms per file")
    print(f"{'part':28s} {'batch 1':>8s} {'batch 8':>8s}")
    for name, one, eight in rows:
        print(f"{name:28s} {one:8.1f} {'' if eight is None else f'{eight:8.1f}':>8s}")
    print(f"{'Predictor.predict':28s} {predict:8.1f}")
    fixed = sum(one for _, one, eight in rows if eight is None)
    best = fixed + sum(eight for _, _, eight in rows if eight is not None)
    print(f"batched best case: {best:.1f} ms a file ({best / predict:.0%} of predict's); unbatched: decode, framing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
