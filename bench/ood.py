"""What the out-of-distribution check adds to one prediction: p50 of ``Predictor.predict`` with and without it.

Usage::

    python bench/ood.py --model runs/shipped_model-ood [--repeats 30]

The same model folder is loaded twice, once with its check and once without (``ood=None``),
and both predict the example slices in turn, interleaved, so that load from other processes
hits both alike. Also printed: the check alone (backbone forward, neighbours and probe) on
canonical slices. Run it on an otherwise idle machine; the figures are per call, one at a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/ood.py` from a checkout: import lungdemo from it

from lungdemo.loading import load_model  # noqa: E402
from lungdemo.predictor import Predictor  # noqa: E402
from lungdemo.preprocessing import decode_canonical  # noqa: E402


def p50_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/ood.py", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a model folder with ood.json and ood.safetensors")
    p.add_argument("--repeats", type=int, default=30, help="rounds over the example slices")
    args = p.parse_args(argv)
    loaded = load_model(args.model)
    with_check = Predictor(loaded)
    if with_check.ood is None:
        print(f"error: {args.model} has no out-of-distribution check", file=sys.stderr)
        return 2
    without = Predictor(loaded, ood=None)
    files = [f.read_bytes() for f in sorted((REPO / "examples").glob("*.png"))]
    canon = [decode_canonical(data, with_check.cfg)[0].unsqueeze(0) for data in files]
    for data in files:  # warm-up
        with_check.predict(data)
        without.predict(data)
    timed: dict[str, list[float]] = {"with": [], "without": [], "check": []}
    for _ in range(args.repeats):
        for data, c in zip(files, canon, strict=True):
            for name, call in (
                ("without", lambda d=data: without.predict(d)),
                ("with", lambda d=data: with_check.predict(d)),
                ("check", lambda c=c: with_check.check_canonical(c)),
            ):
                t = time.perf_counter()
                call()
                timed[name].append(time.perf_counter() - t)
    n = len(timed["with"])
    print(f"model: {loaded.description}; {n} predictions each, {len(files)} example slices")
    print(f"predict p50 without the check: {p50_ms(timed['without']):.1f} ms")
    print(f"predict p50 with the check:    {p50_ms(timed['with']):.1f} ms")
    print(f"added p50:                     {p50_ms(timed['with']) - p50_ms(timed['without']):.1f} ms")
    print(f"the check alone p50:           {p50_ms(timed['check']):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
