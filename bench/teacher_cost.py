"""Where a distillation batch goes: augmentation, the teachers step by step (train/frozen.py), the student.

    python bench/teacher_cost.py --teacher runs/teacher4 runs/teacher5 --data-dir ../shared/data/chest-ct

Decoded training slices framed as the first teacher was trained, one batch of the student's size.
Each variant of the teachers' forward runs ``--repeats`` times, in turn with the others, and keeps its
best, so background load hits all alike. Each ``+`` row adds one step of ``train/frozen.py`` to the row
above; the last is how training runs them, and its largest logit difference to the first is printed.
Pause any training run first: it shares the cores.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train_throughput import loop_arguments, parse_loop_arguments
from lungdemo.model import LungAlexNet
from lungdemo.preprocessing import normalize
from train.augment import AugmentConfig, apply_params, sample_params
from train.data import CLASS_NAMES, DEFAULT_CACHE_DIR, load_images, scan_split
from train.frozen import fold_batch_norm, pad_inside, teacher_for_inference
from train.teacher import load_teachers, stored_preprocessing


def call_ms(fn: Callable[[], object]) -> float:
    """One call's wall time in milliseconds."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first calls pick kernels and allocate
    return min(call_ms(fn) for _ in range(repeats))


def main() -> None:
    p = loop_arguments(__doc__.split("\n")[0])
    p.add_argument("--teacher", type=Path, nargs="+", default=[Path("runs/teacher4"), Path("runs/teacher5")])
    args = parse_loop_arguments(p)

    pre = stored_preprocessing(args.teacher[0])[0]
    samples = scan_split(args.data_dir, "train")
    images = load_images(samples[: args.batch_size], pre, DEFAULT_CACHE_DIR)
    gen = torch.Generator().manual_seed(0)
    augment = AugmentConfig(gamma=0.75, window=0.1, noise=0.05, downscale_prob=0.3, jpeg_prob=0.3, rotate_deg=15)

    def augmented() -> torch.Tensor:
        return apply_params(images, sample_params(len(images), augment, gen, tuple(images.shape)))

    x = normalize(augmented(), pre)
    loaded = load_teachers(tuple(args.teacher), pre)
    cl = torch.channels_last
    channels_last = copy.deepcopy(loaded).to(memory_format=cl)
    norms_folded = fold_batch_norm(copy.deepcopy(loaded)).to(memory_format=cl)
    pads_inside = fold_batch_norm(copy.deepcopy(loaded))
    pad_inside(pads_inside)
    pads_inside = pads_inside.to(memory_format=cl)
    folded = teacher_for_inference(copy.deepcopy(loaded))
    student = LungAlexNet(class_names=list(CLASS_NAMES), hidden=args.hidden, preprocessing=pre.to_dict())
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)

    def student_step() -> None:
        loss = torch.nn.functional.cross_entropy(student(x), torch.zeros(len(x), dtype=torch.long))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad():
        diff = (folded(x) - loaded(x)).abs().max().item()
        variants = {
            "teachers as loaded": loaded,
            "+ channels_last": channels_last,
            "+ batch norm folded": norms_folded,
            "+ pads inside the convs": pads_inside,
            "+ activations in place": folded,
        }
        for model in variants.values():
            model(x)  # warm-up, once each
        rows = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, model in variants.items():
                rows[name].append(call_ms(lambda m=model: m(x)))
    aug_ms = best_ms(augmented, args.repeats)
    student_ms = best_ms(student_step, args.repeats)

    batches = -(-len(samples) // args.batch_size)
    print(
        f"teachers {', '.join(map(str, args.teacher))}  batch {args.batch_size}  size {pre.image_size}  "
        f"threads {torch.get_num_threads()}  repeats {args.repeats}"
    )
    print(f"{'part':28s} {'ms/batch':>9s} {'epoch s':>8s}  (an epoch: {batches} batches, {len(samples)} slices)")
    print(f"{'augmentation':28s} {aug_ms:9.0f} {aug_ms * batches / 1000:8.1f}")
    for name, times in rows.items():
        print(f"{name:28s} {min(times):9.0f} {min(times) * batches / 1000:8.1f}")
    print(f"{'student fwd+bwd+step':28s} {student_ms:9.0f} {student_ms * batches / 1000:8.1f}")
    print(f"largest logit difference, as trained against as loaded: {diff:.2e}")


if __name__ == "__main__":
    main()
