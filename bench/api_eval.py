"""The test-split figures as a user of the API gets them: every official test slice sent to a running app.

Usage::

    python bench/api_eval.py --model lungdemo/shipped_model --data-dir ../shared/data/chest-ct [--json out.json]

Starts ``python app.py --model X`` as a child process, sends each file of the official test
split, as it is on disk, to ``/classify_json`` with ``gradio_client``, and scores the answers:
accuracy, macro-F1, cancer-subtype macro-F1 and per-class recall with 95% bootstrap intervals,
on the official split and on its leakage-free subset, plus the expected calibration error of
the probabilities the API returned and the share of slices the upload check flagged. It then
compares the figures with the model folder's ``metrics.json`` (which training computed from
cached tensors): they should agree to the last digit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/api_eval.py` from a checkout

from bench.serve import free_port, start_server, stop_server, wait_first_answer  # noqa: E402
from lungdemo.calibration import reliability  # noqa: E402
from lungdemo.intervals import bootstrap_intervals  # noqa: E402
from lungdemo.metrics import classification_metrics  # noqa: E402
from train.audit import DEFAULT_NEAR_THRESHOLD  # noqa: E402
from train.data import CLASS_NAMES, scan_dataset  # noqa: E402
from train.scoring import leakage_free_mask  # noqa: E402


def score(y: np.ndarray, probs: np.ndarray, flagged: np.ndarray) -> dict:
    pred = probs.argmax(1)
    m = classification_metrics(y, pred, list(CLASS_NAMES))
    ci = bootstrap_intervals(y, pred, list(CLASS_NAMES))
    return {
        "n": len(y),
        "accuracy": m["accuracy"],
        "macro_f1": m["macro"]["f1"],
        "cancer_subtype_macro_f1": m["cancer_subtype_macro_f1"],
        "recall": {c: v["recall"] for c, v in m["per_class"].items()},
        "ece": reliability(probs, y)["ece"],
        "flagged_share": float(flagged.mean()),
        "intervals": {k: ci[k] for k in ("accuracy", "macro_f1", "cancer_subtype_macro_f1", "recall")},
    }


def line(name: str, s: dict) -> str:
    ci = s["intervals"]
    rec = ", ".join(f"{c} {v:.3f}" for c, v in s["recall"].items())
    return (
        f"{name}: n={s['n']} accuracy {s['accuracy']:.3f} macro-F1 {s['macro_f1']:.3f} "
        f"[{ci['macro_f1']['low']:.3f}, {ci['macro_f1']['high']:.3f}] subtype macro-F1 "
        f"{s['cancer_subtype_macro_f1']:.3f} [{ci['cancer_subtype_macro_f1']['low']:.3f}, "
        f"{ci['cancer_subtype_macro_f1']['high']:.3f}] ECE {s['ece']:.3f} flagged {s['flagged_share']:.1%}\n"
        f"  recall: {rec}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/api_eval.py", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(REPO / "lungdemo" / "shipped_model"), help="model folder or user/repo@rev")
    p.add_argument("--data-dir", type=Path, required=True, help="dataset root (train/ valid/ test/)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # gradio_client looks up the Hub when created otherwise
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client, handle_file

    splits = scan_dataset(args.data_dir)
    test = splits["test"]
    keep = np.array(leakage_free_mask(splits, args.data_dir, DEFAULT_NEAR_THRESHOLD))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkstemp(prefix="lungdemo-api-eval-", suffix=".log")[1])
    proc, t0 = start_server(args.model, port, log)
    try:
        wait_first_answer(proc, url, (test[0].path.name, test[0].path.read_bytes()), t0, 180.0)
        client = Client(url, verbose=False)
        started = time.perf_counter()
        answers = [client.predict(handle_file(str(s.path)), api_name="/classify_json") for s in test]
        seconds = time.perf_counter() - started
    finally:
        stop_server(proc)
    y = np.array([s.label for s in test])
    probs = np.array([[a["probabilities"][c] for c in CLASS_NAMES] for a in answers])
    flagged = np.array([bool(a["check"] and a["check"]["flagged"]) for a in answers])
    result = {
        "model": args.model,
        "requests": len(answers),
        "seconds": round(seconds, 1),
        "test": score(y, probs, flagged),
        "test_leakage_free": score(y[keep], probs[keep], flagged[keep]),
        "flagged_files": [
            s.path.relative_to(args.data_dir).as_posix() for s, f in zip(test, flagged, strict=True) if f
        ],
    }
    print(f"model: {args.model}; {len(answers)} /classify_json requests in {seconds:.1f} s")
    print(line("official test (API)", result["test"]))
    print(line("leakage-free test (API)", result["test_leakage_free"]))
    print("flagged by the check: " + (", ".join(result["flagged_files"]) or "none"))
    metrics_path = Path(args.model) / "metrics.json"
    if metrics_path.is_file():
        stored = json.loads(metrics_path.read_text())
        for key in ("test", "test_leakage_free"):
            same = abs(stored[key]["macro"]["f1"] - result[key]["macro_f1"]) < 1e-9
            print(
                f"{key}: metrics.json macro-F1 {stored[key]['macro']['f1']:.4f}, API {result[key]['macro_f1']:.4f}"
                f" ({'identical' if same else 'DIFFERENT'})"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
