"""Training throughput: the project's training loop against a bare AlexNet loop, same run.

    python bench/train_throughput.py --data-dir ../shared/data/chest-ct --images 256 --repeats 3

Both loops use the same model configuration, batch size, optimizer and decoded slices. The
bare loop feeds pre-normalised tensors straight to forward/backward/step; the project's loop
(:func:`train.engine.train_one_epoch`) adds shuffling, batch augmentation and normalisation.
The ratio says how much of the machine the pipeline leaves to the model (target >= 0.9).
Loops alternate and the best of ``--repeats`` is kept, so background load hits both alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lungdemo.model import LungAlexNet
from lungdemo.preprocessing import PreprocessConfig, normalize
from train.augment import AugmentConfig
from train.data import CLASS_NAMES, DEFAULT_CACHE_DIR, labels_of, load_images, scan_split
from train.engine import EpochConfig, Split, TrainingParts, train_one_epoch


def bare_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer, bs: int) -> float:
    crit = nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    for i in range(0, len(x), bs):
        loss = crit(model(x[i : i + bs]), y[i : i + bs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(x) / (time.perf_counter() - t0)


def loop_arguments(description: str) -> argparse.ArgumentParser:
    """The options of the training benches (this one and ``bench/teacher_cost.py``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data/chest-ct"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    return p


def parse_loop_arguments(p: argparse.ArgumentParser) -> argparse.Namespace:
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    p = loop_arguments(__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    args = parse_loop_arguments(p)

    cfg = PreprocessConfig(image_size=args.image_size)
    samples = scan_split(args.data_dir, "train")[: args.images]
    images = load_images(samples, cfg, DEFAULT_CACHE_DIR)
    labels = labels_of(samples)
    pre_normalised = normalize(images, cfg)
    torch.manual_seed(0)
    model = LungAlexNet(class_names=list(CLASS_NAMES), hidden=args.hidden, preprocessing=cfg.to_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    crit = nn.CrossEntropyLoss()
    parts = TrainingParts(model, opt, crit, torch.Generator().manual_seed(0))
    epoch_cfg = EpochConfig(cfg, AugmentConfig(), args.batch_size)

    bare_loop(model, pre_normalised[: args.batch_size * 2], labels[: args.batch_size * 2], opt, args.batch_size)
    bare, pipe = [], []
    for r in range(args.repeats):
        bare.append(bare_loop(model, pre_normalised, labels, opt, args.batch_size))
        t0 = time.perf_counter()
        train_one_epoch(parts, Split(images, labels), epoch_cfg, r + 1)
        pipe.append(len(images) / (time.perf_counter() - t0))

    print(
        f"images {len(images)}  size {args.image_size}  batch {args.batch_size}  hidden {args.hidden}  "
        f"threads {torch.get_num_threads()}  repeats {args.repeats}"
    )
    print(f"{'loop':32s} {'best img/s':>10s} {'all runs':>24s}")
    print(f"{'bare AlexNet fwd+bwd+step':32s} {max(bare):10.1f} {', '.join(f'{v:.1f}' for v in bare):>24s}")
    print(f"{'project train_one_epoch':32s} {max(pipe):10.1f} {', '.join(f'{v:.1f}' for v in pipe):>24s}")
    print(f"ratio pipeline / bare: {max(pipe) / max(bare):.3f}")


if __name__ == "__main__":
    main()
