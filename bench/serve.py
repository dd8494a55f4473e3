"""Serving benchmark: how fast the demo answers, as curl or a browser sees it.

Usage::

    python bench/serve.py --model PATH_OR_USER/REPO [--requests 50] [--clients 1 4 16] [--json out.json]

Starts ``python app.py --model X --port P`` as a child process and measures, in one run:

* cold start: from process start to the first answered ``/classify`` request;
* ``/classify`` latency for one client, p50/p95, over Gradio's plain HTTP API: ``POST
  /gradio_api/upload``, ``POST /gradio_api/call/classify``, then ``GET`` the event stream
  ``/gradio_api/call/classify/{event_id}`` until its ``complete`` event;
* in this process, on the same slices and interleaved with those requests (the server idle
  meanwhile): :meth:`Predictor.predict` (decode + preprocess + forward) and the forward pass alone;
* throughput, latency and errors with 1, 4 and 16 concurrent clients (``--clients``);
* the server's RSS before and after ``--mixed`` (2,000) requests of ``bench/load.py``'s mix
  (good slices, unusual files, bad files, oversized uploads) from 16 clients, and their verdicts;
* ``gradio_client`` latency beside it: its own polling adds tens of milliseconds per call,
  so it is reported but not what the targets refer to.

Each call is a new Gradio session, as ``curl`` sends it; ``--client-sessions`` gives each client
one session for all its calls, as ``gradio_client`` and the page do.

``--without-check`` serves a copy of the folder without the out-of-distribution check; the
difference between the two runs' ``/classify`` p50 is what the check adds (issue 13's target:
at most 15 ms).

Targets (issue 16): single-client p50 at most 2x the in-process ``predict`` p50; 16 clients at
least 3x the single-client request rate with no errors; RSS growth under 10% over the mixed
requests; cold start under 6 s. The machine's load average is printed with the figures: on a
shared machine every figure depends on it. The bench process imports torch and gradio only
after the cold start is measured, so it does not compete with the server while it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/serve.py` from a checkout: import lungdemo from it

from bench.serve_clients import (  # noqa: E402
    classify_http,
    gradio_client_latency,
    mixed_memory,
    peak_rss_mb,
    percentile,
    run_load,
)
from bench.serve_report import table  # noqa: E402

SHIPPED_MODEL = REPO / "lungdemo" / "shipped_model"
EXAMPLES = REPO / "examples"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff"}
MIN_LOAD_REQUESTS = 96
"""Requests in a throughput run at least (a 1-client run needs enough for a steady rate)."""
MIXED_WARMUP = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_floor_s() -> float:
    """Seconds a fresh interpreter takes to import torch, torchvision and gradio: the part of
    the cold start no app code can remove (measured before the server starts)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, torchvision, gradio"], check=True, env=os.environ.copy())
    return time.perf_counter() - start


def start_server(model: str, port: int, log_path: Path) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    if Path(model).exists():
        env.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no network
    log = log_path.open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--model", model, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, t0


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C the app (it shuts down cleanly), kill it if it has not exited after 15 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_first_answer(
    proc: subprocess.Popen, url: str, image: tuple[str, bytes], t0: float, timeout_s: float
) -> tuple[float, float]:
    """Seconds from process start to (first HTTP response, first answered /classify)."""
    listening = None
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.perf_counter() - t0 < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {proc.returncode} before answering")
            try:
                http.get("/gradio_api/info", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.02)
                continue
            if listening is None:
                listening = time.perf_counter() - t0
            call = classify_http(http, image[1], image[0])
            if call.ok:
                return listening, time.perf_counter() - t0
            time.sleep(0.02)
    raise TimeoutError(f"no answer from {url} within {timeout_s:.0f} s")


def image_files(paths: Sequence[str]) -> list[Path]:
    """The image files named, with folders expanded (sorted)."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        files += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
    if not files:
        raise SystemExit(f"no images found in {list(paths)}")
    return files


class InProcess:
    """The same model in this process: forward pass alone, and decode + preprocess + forward."""

    def __init__(self, model_ref: str, images: list[tuple[str, bytes]]) -> None:
        import torch

        from lungdemo.loading import load_model
        from lungdemo.predictor import Predictor
        from lungdemo.preprocessing import decode_canonical, normalize

        self.torch = torch
        self.predictor = Predictor(load_model(model_ref))
        cfg = self.predictor.cfg
        self.inputs = [normalize(decode_canonical(data, cfg)[0], cfg).unsqueeze(0) for _, data in images]
        self.images = images
        for i in range(2):  # warm-up
            self.forward(i)

    def forward(self, i: int) -> float:
        x = self.inputs[i % len(self.inputs)]
        with self.torch.inference_mode():
            start = time.perf_counter()
            self.predictor.model(x)
            return time.perf_counter() - start

    def predict(self, i: int) -> float:
        start = time.perf_counter()
        self.predictor.predict(self.images[i % len(self.images)][1])
        return time.perf_counter() - start


def single_client(
    url: str, images: list[tuple[str, bytes]], local: InProcess, n: int, session: str | None
) -> dict[str, float]:
    """``n`` sequential API requests, each followed by the same slice in this process.

    Interleaving puts both measurements under the same conditions: on a shared machine the
    background load drifts, and a ratio of two figures taken minutes apart would measure
    the drift. The server is idle while this process computes, and the other way round.
    """
    calls, forward, full = [], [], []
    with httpx.Client(base_url=url, timeout=120) as http:
        for i in range(5):  # warm-up
            classify_http(http, images[i % len(images)][1], images[i % len(images)][0])
        for i in range(n):
            name, data = images[i % len(images)]
            calls.append(classify_http(http, data, name, session))
            forward.append(local.forward(i))
            full.append(local.predict(i))
    failed = [c.error for c in calls if not c.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} single-client requests failed, e.g. {failed[0]}")
    latencies = [c.total_s for c in calls]
    return {
        "api_p50_ms": statistics.median(latencies) * 1000,
        "api_p95_ms": percentile(latencies, 95) * 1000,
        "upload_p50_ms": statistics.median(c.upload_s for c in calls) * 1000,
        "model_forward_p50_ms": statistics.median(forward) * 1000,
        "predict_in_process_p50_ms": statistics.median(full) * 1000,
        "predict_in_process_p95_ms": percentile(full, 95) * 1000,
        "torch_threads": float(local.torch.get_num_threads()),
    }


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model``, defaulting to the shipped model when the checkout has one (shared by the benches)."""
    has_default = SHIPPED_MODEL.is_dir()
    parser.add_argument(
        "--model",
        default=str(SHIPPED_MODEL) if has_default else None,
        required=not has_default,
        help="model folder or user/repo[@revision] (default: the shipped model, when it exists)",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_argument(parser)
    parser.add_argument(
        "--images", nargs="+", default=[str(EXAMPLES)], help="image files or folders (default: examples/)"
    )
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--requests", type=int, default=50, help="sequential requests for p50/p95 (default 50)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients per throughput run (1 4 16)"
    )
    parser.add_argument(
        "--load-requests",
        type=int,
        default=12,
        help="requests per client in a throughput run (12; at least 96 a run)",
    )
    parser.add_argument("--mixed", type=int, default=2000, help="mixed requests for the memory figure (0: skip)")
    parser.add_argument("--mixed-clients", type=int, default=16, help="clients sending the mixed requests")
    parser.add_argument("--client-requests", type=int, default=20, help="gradio_client calls (default 20; 0: skip)")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for the server")
    parser.add_argument(
        "--skip-import-floor", action="store_true", help="do not time `import torch, torchvision, gradio` alone"
    )
    parser.add_argument(
        "--without-check",
        action="store_true",
        help="serve a copy of the (local) model folder without ood.json/ood.safetensors: run once with and "
        "once without it to see what the out-of-distribution check adds to each figure",
    )
    parser.add_argument("--client-sessions", action="store_true", help="one Gradio session per client (see above)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def copy_without_check(model: str) -> str:
    """A temporary copy of a local model folder without the out-of-distribution check's files."""
    import shutil

    from lungdemo.ood import OOD_FILES

    src = Path(model)
    if not src.is_dir():
        raise SystemExit(f"--without-check needs a local model folder, got {model!r}")
    dst = Path(tempfile.mkdtemp(prefix="lungdemo-nocheck-")) / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*OOD_FILES))
    return str(dst)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.without_check:
        args.model = copy_without_check(args.model)
    image_paths = image_files(args.images)
    images = [(p.name, p.read_bytes()) for p in image_paths]
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    figures: dict[str, float] = {"load_start": os.getloadavg()[0]}
    log_path = Path(tempfile.mkstemp(prefix="lungdemo-serve-", suffix=".log")[1])

    if not args.skip_import_floor:
        figures["import_floor_s"] = import_floor_s()
    proc, t0 = start_server(args.model, port, log_path)
    try:
        try:
            figures["listening_s"], figures["cold_start_s"] = wait_first_answer(
                proc, url, images[0], t0, args.start_timeout
            )
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: {exc}\n--- server log ({log_path}) ---\n{log_path.read_text()[-3000:]}", file=sys.stderr)
            return 1
        print(f"server up: cold start {figures['cold_start_s']:.2f} s; measuring...", file=sys.stderr)

        try:
            session = uuid.uuid4().hex[:11] if args.client_sessions else None
            figures.update(single_client(url, images, InProcess(args.model, images), args.requests, session))
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for clients in args.clients:
            total = max(MIN_LOAD_REQUESTS, args.load_requests * clients)
            figures.update(run_load(url, proc.pid, images, clients, total, args.client_sessions))
        if args.mixed:
            figures.update(mixed_memory(url, proc.pid, args.mixed, args.mixed_clients, warmup=MIXED_WARMUP))
        if args.client_requests:
            figures.update(gradio_client_latency(url, image_paths, args.client_requests))
        figures["peak_rss_mb"], figures["rss_end_mb"] = peak_rss_mb(proc.pid)
        figures["load_end"] = os.getloadavg()[0]
    finally:
        stop_server(proc)

    figures["ratio_api_p50_to_predict"] = figures["api_p50_ms"] / figures["predict_in_process_p50_ms"]
    check = "without its out-of-distribution check" if args.without_check else "as it is"
    sessions = "one session per client" if args.client_sessions else "a new session per call"
    threads = int(figures["torch_threads"])
    print(f"model: {args.model} ({check}); {len(images)} images; {sessions}; torch threads here: {threads}")
    print(table(figures, args.clients))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
