"""GPU check: train on CUDA with mixed precision and on the CPU, predict the test split, compare.

    python bench/device_check.py --data-dir ../shared/data/chest-ct [--epochs 2] [--out runs/device-check]

Both runs are the real ``python -m train`` (same seed, data and arguments, ``--device cuda`` and
``--device cpu``). The script prints training images/s on each device; then, for the GPU-trained
weights, test-split predictions on the GPU against the same weights on the CPU (inference must
agree to float tolerance: both run float32), with inference images/s of both; and how far the
two trainings' answers agree (mixed precision and GPU kernels sum in another order, so they
drift apart, but both must learn). On a machine without a CUDA GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lungdemo.metrics import classification_metrics  # noqa: E402
from lungdemo.predictor import Predictor  # noqa: E402
from train.data import labels_of, load_images, scan_split  # noqa: E402
from train.train import main as train_main  # noqa: E402

INFERENCE_TOLERANCE = 1e-3
"""Largest probability difference allowed between CUDA and CPU inference of the same weights."""


def train_on(device: str, args: argparse.Namespace) -> tuple[Path, float]:
    """A ``python -m train`` run on ``device``; returns its model folder and training images/s."""
    out = args.out / device
    argv = [
        *("--data-dir", str(args.data_dir), "--out", str(out), "--device", device),
        *("--epochs", str(args.epochs), "--pretrained", args.pretrained, "--hidden", str(args.hidden)),
        *("--limit", str(args.limit), "--cache-dir", str(args.cache_dir), "--skip-test", "--overwrite"),
    ]
    if train_main(argv) != 0:
        raise SystemExit(f"training on {device} failed")
    record = json.loads((out / "model" / "training_args.json").read_text())
    images = sum(record["train_counts"].values()) * record["epochs_run"]
    return out / "model", images / record["train_seconds"]


def predict(predictor: Predictor, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    """Probabilities for cached test slices and images/s (after one warm-up batch)."""
    predictor.probabilities_canonical(images[:batch_size])
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = torch.cat(
        [predictor.probabilities_canonical(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
    return out, len(images) / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "chest-ct")
    p.add_argument("--out", type=Path, default=Path("runs/device-check"))
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/lungdemo"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--pretrained", default="none", help="as python -m train (none needs no download)")
    p.add_argument("--limit", type=int, default=0, help="images per class and split (0 = all)")
    p.add_argument("--batch-size", type=int, default=64, help="inference batch")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): nothing to check")
        return 0
    print(f"GPU: {torch.cuda.get_device_name(0)}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")

    gpu_folder, gpu_train = train_on("cuda", args)
    cpu_folder, cpu_train = train_on("cpu", args)
    print(f"training images/s: cuda {gpu_train:.1f}, cpu {cpu_train:.1f} ({gpu_train / cpu_train:.1f}x)")

    on_gpu = Predictor.from_ref(gpu_folder, device="cuda")
    samples = scan_split(args.data_dir, "test")
    if args.limit:
        samples = [
            s for c in range(len(on_gpu.class_names)) for s in [s for s in samples if s.label == c][: args.limit]
        ]
    images, labels = load_images(samples, on_gpu.cfg, args.cache_dir, desc="decode test"), labels_of(samples)
    p_gpu, gpu_rate = predict(on_gpu, images, args.batch_size)
    p_cpu, cpu_rate = predict(Predictor.from_ref(gpu_folder, device="cpu"), images, args.batch_size)
    diff = float((p_gpu - p_cpu).abs().max())
    same_top = float((p_gpu.argmax(1) == p_cpu.argmax(1)).float().mean())
    print(f"inference images/s (same weights): cuda {gpu_rate:.1f}, cpu {cpu_rate:.1f} ({gpu_rate / cpu_rate:.1f}x)")
    print(f"inference cuda vs cpu: max |p difference| {diff:.2e}, same top class {same_top:.1%}")

    p_cpu_trained, _ = predict(Predictor.from_ref(cpu_folder, device="cpu"), images, args.batch_size)
    names = on_gpu.class_names
    for name, probs in (("cuda-trained", p_gpu), ("cpu-trained", p_cpu_trained)):
        f1 = classification_metrics(labels.numpy(), probs.argmax(1).numpy(), names)["macro"]["f1"]
        print(f"{name}: test macro-F1 {f1:.3f} after {args.epochs} epochs")
    agree = float((p_gpu.argmax(1) == p_cpu_trained.argmax(1)).float().mean())
    print(f"cuda-trained and cpu-trained models give the same top class on {agree:.1%} of {len(images)} test slices")
    if diff > INFERENCE_TOLERANCE:
        print(f"FAIL: CUDA inference differs from CPU inference by more than {INFERENCE_TOLERANCE}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
