"""Which batching serves ``/classify`` best: none, this project's micro-batcher, or Gradio's own?

Usage::

    python bench/batch_modes.py [--model REF] [--modes single micro gradio] [--clients 1 16]

For each mode a minimal Gradio app with one ``/classify`` endpoint (the upload's bytes in,
the label dict out, as the demo's) runs in a child process, and 1 and 16 plain-HTTP clients
(upload, call, event stream: ``bench/serve.py``'s client) send the example slices:

* ``single``: :meth:`Predictor.predict` per request, ``concurrency_limit=2`` (the demo before
  batching);
* ``single16``: the same with ``concurrency_limit=16``;
* ``micro``: :class:`~lungdemo.batching.BatchedPredictor`, ``concurrency_limit=16``;
* ``gradio``: ``batch=True, max_batch_size=16``: one call decodes the batch's files one after
  another and runs one forward pass. One bad file fails every request of its batch: Gradio
  has no way to answer one item of a batch with an error.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serve import (  # noqa: E402
    EXAMPLES,
    SHIPPED_MODEL,
    free_port,
    image_files,
    stop_server,
)
from bench.serve_clients import concurrent_load, cpu_seconds  # noqa: E402

MODES = ("single", "single16", "micro", "gradio")
MAX_BATCH = 16


def serve(mode: str, model: str, port: int, torch_threads: int) -> None:
    """The child process: one /classify endpoint in ``mode`` (blocks until interrupted)."""
    import gradio as gr
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)

    from lungdemo.batching import BatchedPredictor
    from lungdemo.predictor import Predictor
    from lungdemo.preprocessing import decode_canonical

    predictor = Predictor.from_ref(model)
    names = predictor.class_names

    def read(payload: dict) -> bytes:
        return Path(payload["path"]).read_bytes()

    if mode in ("single", "single16"):

        def classify(payload: dict) -> dict[str, float]:
            return predictor.predict(read(payload)).probabilities

        options = {"concurrency_limit": 2 if mode == "single" else MAX_BATCH}
    elif mode == "micro":
        batched = BatchedPredictor(predictor, max_batch_size=MAX_BATCH)

        def classify(payload: dict) -> dict[str, float]:
            return batched.predict(read(payload)).probabilities

        options = {"concurrency_limit": MAX_BATCH}
    elif mode == "gradio":

        def classify(payloads: list[dict]) -> list[list[dict[str, float]]]:
            canon = torch.stack([decode_canonical(read(p), predictor.cfg)[0] for p in payloads])
            probs = predictor.probabilities_canonical(canon).tolist()
            return [[dict(zip(names, row, strict=True)) for row in probs]]

        options = {"concurrency_limit": 1, "batch": True, "max_batch_size": MAX_BATCH}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    with gr.Blocks(analytics_enabled=False) as demo:
        upload = gr.File()
        label = gr.Label()
        gr.Button().click(classify, upload, label, api_name="classify", preprocess=False, **options)
    demo.queue(max_size=256, default_concurrency_limit=MAX_BATCH)
    demo.launch(server_name="127.0.0.1", server_port=port, quiet=True, prevent_thread_lock=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    demo.close()


def measure(url: str, images: list[tuple[str, bytes]], clients: int, total: int) -> tuple[float, float, int]:
    """``total`` requests from ``clients`` threads: (requests a second, p50 ms, errors)."""
    figures = concurrent_load(url, images, clients, total)
    return figures["throughput_rps"], figures["p50_ms"], int(figures["errors"])


def run_mode(
    mode: str, model: str, images: list[tuple[str, bytes]], clients: Sequence[int], per_client: int, threads: int
) -> list:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--serve", mode, "--model", model, "--port", str(port)]
    cmd += ["--torch-threads", str(threads)]
    proc = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                httpx.get(f"{url}/gradio_api/info", timeout=5)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the {mode} server did not start") from None
                time.sleep(0.1)
        measure(url, images, 4, 40)  # warm-up
        rows = []
        for n in clients:
            total = per_client * max(n, 4)
            before = cpu_seconds(proc.pid)
            rps, p50, errors = measure(url, images, n, total)
            rows.append((mode, n, rps, p50, errors, (cpu_seconds(proc.pid) - before) / total * 1000))
        return rows
    finally:
        stop_server(proc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(SHIPPED_MODEL))
    parser.add_argument("--images", nargs="+", default=[str(EXAMPLES)])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--per-client", type=int, default=20, help="requests per client (at least 4 clients' worth)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads in the server (0: torch's default)")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.model, args.port, args.torch_threads)
        return 0
    images = [(p.name, p.read_bytes()) for p in image_files(args.images)]
    loads = [os.getloadavg()[0]]
    rows = []
    for mode in args.modes:
        rows += run_mode(mode, args.model, images, args.clients, args.per_client, args.torch_threads)
        loads.append(os.getloadavg()[0])
    print(f"load average (1 min) between modes: {' '.join(f'{x:.1f}' for x in loads)}")
    print(f"{'mode':<9} {'clients':>7} {'req/s':>7} {'p50 ms':>7} {'errors':>6} {'x 1 client':>10} {'server CPU':>10}")
    base: dict[str, float] = {}
    for mode, n, rps, p50, errors, cpu in rows:
        base.setdefault(mode, rps)
        print(f"{mode:<9} {n:>7} {rps:>7.1f} {p50:>7.1f} {errors:>6} {rps / base[mode]:>10.2f} {cpu:>7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
