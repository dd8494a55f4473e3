"""Does an export's gamma move the crop? Label-free, on real slices, for both body searches.

Usage::

    python bench/framing_gamma.py [--model REF] [--data ../shared/data/chest-ct] [--split train] [--every 3]

For every ``--every``-th slice of ``--split``, frames the clean file and the same file at several
gammas (and one window) with the model's framing, once with ``slice_search: levels`` and once with
``standardized`` (:func:`lungdemo.framing.searched`), and counts the boxes that moved by more than 3%
of their side against that search's own clean box. Also counts the clean slices whose box or tilt
turn differ between the two searches (what a model trained on one meets with the other).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lungdemo.decode import decode_image  # noqa: E402
from lungdemo.framing import Framing, frame_slice  # noqa: E402
from lungdemo.loading import SHIPPED_MODEL_DIR, load_model  # noqa: E402
from train.perturb import gamma, window  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest-ct"
CHANGES = {
    "gamma 2.0": lambda g: gamma(g, None, g=2.0),
    "gamma 2.5": lambda g: gamma(g, None, g=2.5),
    "gamma 0.5": lambda g: gamma(g, None, g=0.5),
    "gamma 0.4": lambda g: gamma(g, None, g=0.4),
    "window 40..200": lambda g: window(g, None, lo=40, hi=200),
}


def moved(a: Framing, b: Framing) -> bool:
    side = max(a.box[2] - a.box[0], a.box[3] - a.box[1])
    return max(abs(x - y) for x, y in zip(a.box, b.box, strict=True)) > 0.03 * side


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(SHIPPED_MODEL_DIR))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--split", default="train")
    p.add_argument("--every", type=int, default=3)
    args = p.parse_args()
    cfg = load_model(args.model).model.preprocess_config
    searches = {s: dataclasses.replace(cfg, slice_search=s).framing() for s in ("levels", "standardized")}
    files = sorted(f for f in (args.data / args.split).rglob("*") if f.is_file())[:: args.every]
    grays = [decode_image(f, cfg.max_pixels)[0] for f in files]
    clean = {s: [frame_slice(g, **kw)[1] for g in grays] for s, kw in searches.items()}
    pairs = list(zip(clean["levels"], clean["standardized"], strict=True))
    print(f"{args.split}: {len(files)} slices; boxes moved by more than 3% of their side")
    print(
        f"clean, levels vs standardized: {sum(moved(a, b) for a, b in pairs)} boxes, "
        f"{sum(a.deskewed != b.deskewed for a, b in pairs)} tilt turns"
    )
    print(f"{'change':16s} {'levels':>7s} {'standardized':>13s}")
    for name, change in CHANGES.items():
        counts = [
            sum(moved(own, frame_slice(change(g), **kw)[1]) for own, g in zip(clean[s], grays, strict=True))
            for s, kw in searches.items()
        ]
        print(f"{name:16s} {counts[0]:7d} {counts[1]:13d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
