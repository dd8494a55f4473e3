"""Micro-batching in this process: does it change the answers, and what does it buy?

Usage::

    python bench/batching.py [--model REF] [--data ../shared/data/chest-ct] [--requests 320]

Prints three tables, all on the real test split:

* how far a batched row is from :meth:`Predictor.predict`'s (max absolute difference of a
  probability, slices that differ at all, top classes that change), per batch size;
* the forward pass (normalise + model + softmax) per batch size: ms a pass, slices a second;
* ``--requests`` predictions from 1, 4 and 16 threads through :meth:`Predictor.predict` (one
  forward pass each, serialised by the Predictor's lock) and through
  :class:`~lungdemo.batching.BatchedPredictor` (shared passes): requests a second, p50, and the
  mean batch size that formed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lungdemo.batching import BatchedPredictor  # noqa: E402
from lungdemo.loading import SHIPPED_MODEL_DIR  # noqa: E402
from lungdemo.predictor import Predictor  # noqa: E402
from lungdemo.preprocessing import decode_canonical  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest-ct"
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
THREADS = (1, 4, 16)


def test_split(data: Path) -> list[bytes]:
    files = sorted(p for p in (data / "test").rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"no files under {data / 'test'}")
    return [p.read_bytes() for p in files]


def equivalence(predictor: Predictor, slices: Sequence[bytes]) -> list[str]:
    """Batched rows against single predictions, batch by batch along the split."""
    canon = torch.stack([decode_canonical(s, predictor.cfg)[0] for s in slices])
    single = torch.tensor([list(predictor.predict(s).probabilities.values()) for s in slices])
    lines = [f"{'batch':>5}  {'max |p_batched - p_single|':>27}  {'slices differing':>16}  {'top class changed':>17}"]
    for size in BATCH_SIZES[1:]:
        rows = torch.cat([predictor.probabilities_canonical(canon[i : i + size]) for i in range(0, len(canon), size)])
        diff = (rows - single).abs()
        differing = int((diff.amax(dim=1) > 0).sum())
        changed = int((rows.argmax(1) != single.argmax(1)).sum())
        lines.append(f"{size:>5}  {float(diff.max()):>27.3e}  {differing:>9} of {len(slices):<4}  {changed:>17}")
    return lines


def forward_cost(predictor: Predictor, slices: Sequence[bytes], repeats: int) -> list[str]:
    canon = torch.stack([decode_canonical(s, predictor.cfg)[0] for s in slices[: max(BATCH_SIZES)]])
    lines = [f"{'batch':>5}  {'ms a pass (p50)':>15}  {'slices/s':>9}"]
    for size in BATCH_SIZES:
        batch = canon[:size]
        predictor.probabilities_canonical(batch)  # warm-up for this shape
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.probabilities_canonical(batch)
            times.append(time.perf_counter() - start)
        p50 = statistics.median(times)
        lines.append(f"{size:>5}  {p50 * 1000:>15.1f}  {size / p50:>9.0f}")
    return lines


def hammer(predict: Callable[[bytes], object], slices: Sequence[bytes], threads: int, total: int) -> tuple[float, ...]:
    """``total`` predictions from ``threads`` threads: (requests a second, p50 seconds)."""
    counter = iter(range(total))
    lock = threading.Lock()
    latencies: list[float] = []

    def worker(_: int) -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            predict(slices[i % len(slices)])
            with lock:
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return total / (time.perf_counter() - start), statistics.median(latencies)


def concurrency(predictor: Predictor, slices: Sequence[bytes], total: int, waits: Sequence[float]) -> list[str]:
    lines = [f"{'threads':>7}  {'path':<28}  {'req/s':>7}  {'p50 ms':>7}  {'mean batch':>10}"]
    for threads in THREADS:
        rps, p50 = hammer(predictor.predict, slices, threads, total)
        lines.append(f"{threads:>7}  {'Predictor.predict':<28}  {rps:>7.1f}  {p50 * 1000:>7.1f}  {1:>10.2f}")
        for wait in waits:
            batched = BatchedPredictor(predictor, max_wait_s=wait)
            try:
                rps, p50 = hammer(batched.predict, slices, threads, total)
            finally:
                batched.close()
            sizes = batched.batcher.batch_sizes
            mean = sum(k * n for k, n in sizes.items()) / max(1, sum(sizes.values()))
            name = f"BatchedPredictor wait {wait * 1000:g} ms"
            lines.append(f"{threads:>7}  {name:<28}  {rps:>7.1f}  {p50 * 1000:>7.1f}  {mean:>10.2f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(SHIPPED_MODEL_DIR), help="model folder or user/repo[@revision]")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the dataset (its test/ split is used)")
    parser.add_argument("--requests", type=int, default=320, help="predictions per concurrency row")
    parser.add_argument("--repeats", type=int, default=20, help="timed passes per batch size")
    parser.add_argument("--waits-ms", type=float, nargs="+", default=[0.0, 5.0], help="max_wait_s values to try")
    parser.add_argument("--skip-equivalence", action="store_true")
    args = parser.parse_args(argv)
    predictor = Predictor.from_ref(args.model)
    slices = test_split(args.data)
    print(f"model: {args.model}; {len(slices)} test slices; torch threads: {torch.get_num_threads()}")
    if not args.skip_equivalence:
        print("\n".join(["", "batched vs single predictions (test split):", *equivalence(predictor, slices)]))
    print("\n".join(["", "forward pass by batch size:", *forward_cost(predictor, slices, args.repeats)]))
    waits = [w / 1000 for w in args.waits_ms]
    print("\n".join(["", "concurrent callers in this process:", *concurrency(predictor, slices, args.requests, waits)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
