"""The benchmark's HTTP side: one /classify request as a plain client sends it, many clients at
once, the mixed-request memory run, gradio_client beside them, and the server's RSS and CPU
from /proc. ``bench/serve.py`` starts the server and prints the figures.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class Call:
    """One /classify request over plain HTTP."""

    ok: bool
    total_s: float
    upload_s: float
    error: str = ""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): no interpolation between two requests."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def classify_http(http: httpx.Client, data: bytes, name: str, session: str | None = None) -> Call:
    """Upload, call, read the event stream: the whole request as a plain HTTP client sees it.

    Without ``session`` each call is a new Gradio session (as ``curl`` sends it); with one, the
    calls share it, as ``gradio_client`` and the page do."""
    start = time.perf_counter()
    try:
        up = http.post("/gradio_api/upload", files={"files": (name, data, "application/octet-stream")})
        up.raise_for_status()
        uploaded = time.perf_counter()
        file_data = {"path": up.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": name}
        body: dict[str, object] = {"data": [file_data]} | ({"session_hash": session} if session else {})
        call = http.post("/gradio_api/call/classify", json=body)
        call.raise_for_status()
        event_id = call.json()["event_id"]
        event = ""
        with http.stream("GET", f"/gradio_api/call/classify/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    end = time.perf_counter()
                    if event == "complete":
                        return Call(True, end - start, uploaded - start)
                    return Call(False, end - start, uploaded - start, line.partition(":")[2].strip())
        return Call(False, time.perf_counter() - start, uploaded - start, f"stream ended without a result ({event})")
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return Call(False, time.perf_counter() - start, 0.0, f"{type(exc).__name__}: {exc}")


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(peak, current) resident memory of ``pid`` in MiB, from /proc (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (Linux /proc), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    url: str, pid: int, images: list[tuple[str, bytes]], clients: int, total: int, sessions: bool = False
) -> dict[str, float]:
    """Throughput, latency and the server's CPU time per request of ``total`` good requests from
    ``clients`` clients (keys ``c{clients}_...``). CPU time a request says what the server could
    serve on idle cores, whatever else the machine runs; the clients' own CPU time a request says
    what they take from the same cores here (remote visitors would not)."""
    before, mine = cpu_seconds(pid), time.process_time()
    figures = concurrent_load(url, images, clients, total, sessions)
    figures["server_cpu_ms"] = (cpu_seconds(pid) - before) / total * 1000
    figures["client_cpu_ms"] = (time.process_time() - mine) / total * 1000  # this process: the client threads
    return {f"c{clients}_{key}": value for key, value in figures.items()}


def concurrent_load(
    url: str, images: list[tuple[str, bytes]], clients: int, total: int, sessions: bool = False
) -> dict[str, float]:
    """``clients`` threads, each with its own connection (and with ``sessions`` its own Gradio session),
    sharing ``total`` requests."""
    counter = iter(range(total))
    lock = threading.Lock()
    calls: list[Call] = []

    def worker(worker_id: int) -> None:
        session = uuid.uuid4().hex[:11] if sessions else None
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                name, data = images[(i + worker_id) % len(images)]
                call = classify_http(http, data, name, session)
                with lock:
                    calls.append(call)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - start
    ok = [c.total_s for c in calls if c.ok]
    errors = [c.error for c in calls if not c.ok]
    if errors:
        print(f"load errors (first 3): {errors[:3]}", file=sys.stderr)
    return {
        "requests": float(len(calls)),
        "errors": float(len(errors)),
        "throughput_rps": len(ok) / wall,
        "p50_ms": statistics.median(ok) * 1000 if ok else float("nan"),
        "p95_ms": percentile(ok, 95) * 1000 if ok else float("nan"),
    }


def mixed_memory(url: str, pid: int, total: int, clients: int, warmup: int) -> dict[str, float]:
    """RSS before and after ``total`` requests of bench/load.py's mix; its verdicts.

    "Before" is read after a warm-up round of the same mix, once the allocators and Gradio's
    caches hold what a serving process holds.
    """
    from bench.load import OVERSIZED_EVERY, Item, build_mix, run_clients
    from tests.bad_input_corpus import oversized_file

    mix = build_mix()
    oversized = Item("bad:oversized", "big.png", oversized_file(), "413")
    run_clients(url, mix, oversized, clients, max(1, warmup // clients))
    time.sleep(1.0)  # let the last responses' buffers go before reading RSS
    before = peak_rss_mb(pid)[1]
    start = time.perf_counter()
    outcomes = run_clients(url, mix, oversized, clients, total // clients)
    wall = time.perf_counter() - start
    time.sleep(1.0)
    after = peak_rss_mb(pid)[1]
    failed = [o.detail for o in outcomes if o.verdict == "failed"]
    if failed:
        print(f"mixed-request failures (first 3): {failed[:3]}", file=sys.stderr)
    return {
        "mixed_requests": float(len(outcomes)),
        "mixed_clients": float(clients),
        "mixed_oversized_every": float(OVERSIZED_EVERY),
        "mixed_answered": float(sum(o.verdict == "answered" for o in outcomes)),
        "mixed_refused": float(sum(o.verdict == "refused" for o in outcomes)),
        "mixed_failed": float(len(failed)),
        "mixed_throughput_rps": len(outcomes) / wall,
        "rss_before_mixed_mb": before,
        "rss_after_mixed_mb": after,
        "rss_growth_pct": 100.0 * (after - before) / before,
    }


def gradio_client_latency(url: str, image_paths: list[Path], n: int) -> dict[str, float]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    times = []
    for i in range(n + 2):
        start = time.perf_counter()
        client.predict(handle_file(str(image_paths[i % len(image_paths)])), api_name="/classify")
        if i >= 2:  # two warm-up calls
            times.append(time.perf_counter() - start)
    return {
        "gradio_client_p50_ms": statistics.median(times) * 1000,
        "gradio_client_p95_ms": percentile(times, 95) * 1000,
    }
