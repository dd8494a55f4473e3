"""Load and bad-input bench: N clients x M requests, good slices mixed with bad files.

Usage::

    python bench/load.py [--model REF] [--clients 16] [--requests-per-client 64] [--json out.json]

Starts ``python app.py --model REF --port P`` on 127.0.0.1 as a child process and sends, over
Gradio's plain HTTP API (``POST /gradio_api/upload``, ``POST /gradio_api/call/classify``, then
the event stream ``GET /gradio_api/call/classify/{event_id}``; the client code is
``bench/serve.py``'s), a fixed, deterministic mix of:

* the good slices in ``examples/`` (twice as often as anything else);
* unusual but valid files: 16-bit PNG, CMYK JPEG, animated GIF, a CT DICOM, a colour photo;
* bad files: truncated PNG, zero bytes, text renamed .png, HTML, SVG, a 40000x40000 PNG
  header, DICOM without pixel data, DICOM with a 40000x40000 header, DICOM compressed with
  a codec the server lacks;
* every 128th request, a file one byte over the upload limit (refused by Gradio with 413).

The files come from ``tests/bad_input_corpus.py``, the corpus the tests check one by one.
Every request is counted as

* **answered**: a good or unusual file got its probabilities;
* **refused**: a bad file got its own one-line reason (the expected message) or the 413;
* **failed**: anything else: a wrong or generic message, a bad file answered, a good file
  refused, a timeout, a dropped connection.

Memory: the server's RSS (``VmRSS`` of the app process) is read after a warm-up round and
after all requests; the growth between them is the figure the target refers to (under 10%).
Targets: 0 failed, RSS growth under 10%. The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/load.py` from a checkout: import lungdemo, bench, tests

from bench.serve import (  # noqa: E402  (after the sys.path line above)
    add_model_argument,
    free_port,
    start_server,
    stop_server,
    wait_first_answer,
)
from bench.serve_clients import classify_http, peak_rss_mb, percentile  # noqa: E402
from tests.bad_input_corpus import ANSWERED, EXAMPLES, REFUSED, oversized_file  # noqa: E402

OVERSIZED_EVERY = 128
TARGET_RSS_GROWTH_PCT = 10.0


@dataclass(frozen=True)
class Item:
    """One file of the mix and what counts as the right reply to it."""

    kind: str
    name: str
    data: bytes
    expect: str
    """"answer", "413", or the start of the expected error message."""


@dataclass
class Outcome:
    item: Item
    verdict: str  # answered / refused / failed
    seconds: float
    detail: str = ""


def build_mix() -> list[Item]:
    """The repeating mix: good slices twice, then the unusual files, then the bad ones."""
    good = [Item(f"good:{p.stem}", p.name, p.read_bytes(), "answer") for p in EXAMPLES]
    unusual = [Item(f"unusual:{k}", c.file_name, c.make(), "answer") for k, c in ANSWERED.items()]
    bad = [Item(f"bad:{k}", c.file_name, c.make(), c.expected) for k, c in REFUSED.items()]
    return good + unusual + good + bad


def error_message(raw: str) -> str:
    """The message of an ``error`` event's data line (JSON), or the raw text."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw
    return str(payload.get("error") or raw) if isinstance(payload, dict) else raw


def judge(item: Item, ok: bool, error: str) -> tuple[str, str]:
    """(verdict, detail) for one reply."""
    if item.expect == "answer":
        return ("answered", "") if ok else ("failed", f"{item.kind} refused: {error[:160]}")
    if ok:
        return "failed", f"{item.kind} was answered, not refused"
    if item.expect == "413":
        return ("refused", "") if "413" in error else ("failed", f"{item.kind}: {error[:160]}")
    message = error_message(error)
    if message.startswith(item.expect) and "\n" not in message:
        return "refused", ""
    return "failed", f"{item.kind}: unexpected message {message[:160]!r}"


def run_clients(
    url: str, mix: list[Item], oversized: Item, clients: int, per_client: int, offset: int = 0
) -> list[Outcome]:
    """``clients`` threads, each with its own connection, each sending ``per_client`` requests.

    Client ``i``'s ``j``-th request is item ``i * 64 + offset + j`` of the repeating mix, so
    every client walks the whole mix and the rounds of a run continue where the last stopped.
    """
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            for j in range(per_client):
                n = index * 64 + offset + j
                item = oversized if n % OVERSIZED_EVERY == OVERSIZED_EVERY - 1 else mix[n % len(mix)]
                call = classify_http(http, item.data, item.name)
                verdict, detail = judge(item, call.ok, call.error)
                with lock:
                    outcomes.append(Outcome(item, verdict, call.total_s, detail))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return outcomes


def rss_mb(pid: int) -> float:
    return peak_rss_mb(pid)[1]


def summarize(outcomes: list[Outcome], wall_s: float) -> dict[str, float]:
    counts = Counter(o.verdict for o in outcomes)
    all_s = [o.seconds for o in outcomes]
    answered_s = [o.seconds for o in outcomes if o.verdict == "answered"]
    return {
        "requests": float(len(outcomes)),
        "answered": float(counts["answered"]),
        "refused": float(counts["refused"]),
        "failed": float(counts["failed"]),
        "p50_ms": statistics.median(all_s) * 1000,
        "p95_ms": percentile(all_s, 95) * 1000,
        "answered_p50_ms": statistics.median(answered_s) * 1000 if answered_s else float("nan"),
        "answered_p95_ms": percentile(answered_s, 95) * 1000 if answered_s else float("nan"),
        "throughput_rps": len(outcomes) / wall_s,
        "wall_s": wall_s,
    }


def server_settings() -> dict[str, float]:
    """The limits that keep the server's memory bounded, as the app is configured."""
    from lungdemo.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
    from lungdemo.web.demo import CLASSIFY_CONCURRENCY, DEFAULT_MAX_QUEUE
    from lungdemo.web.lifecycle import UPLOAD_GRACE_S

    return {
        "concurrency_limit": float(CLASSIFY_CONCURRENCY),
        "max_queue": float(DEFAULT_MAX_QUEUE),
        "max_file_bytes": float(DEFAULT_MAX_BYTES),
        "max_pixels": float(DEFAULT_MAX_PIXELS),
        "upload_grace_s": float(UPLOAD_GRACE_S),
    }


def report(f: dict[str, float], failures: list[str], rss_series: Sequence[float]) -> str:
    growth_ok = f["rss_growth_pct"] < TARGET_RSS_GROWTH_PCT
    lines = [
        f"{int(f['clients'])} clients x {int(f['per_client'])} requests = {int(f['requests'])} requests "
        f"(after a warm-up of {int(f['warmup_requests'])})",
        f"  answered  {int(f['answered']):5d}   (good and unusual files, probabilities returned)",
        f"  refused   {int(f['refused']):5d}   (bad files, each with its expected one-line reason, or 413)",
        f"  failed    {int(f['failed']):5d}   target 0: {'met' if f['failed'] == 0 else 'NOT MET'}",
        f"latency, all requests   p50 {f['p50_ms']:7.1f} ms   p95 {f['p95_ms']:7.1f} ms",
        f"latency, answered only  p50 {f['answered_p50_ms']:7.1f} ms   p95 {f['answered_p95_ms']:7.1f} ms",
        f"throughput              {f['throughput_rps']:.1f} requests/s over {f['wall_s']:.1f} s",
        f"server RSS              after warm-up {f['rss_warm_mb']:.0f} MiB, after all requests "
        f"{f['rss_end_mb']:.0f} MiB, growth {f['rss_growth_pct']:+.1f}% "
        f"(target < {TARGET_RSS_GROWTH_PCT:g}%: {'met' if growth_ok else 'NOT MET'}); peak {f['rss_peak_mb']:.0f} MiB",
        f"server RSS by round     {' -> '.join(f'{v:.0f}' for v in rss_series)} MiB",
        f"memory bounds (web app) classify at once {int(f['concurrency_limit'])}, queue max {int(f['max_queue'])}, "
        f"upload max {f['max_file_bytes'] / 2**20:g} MiB, pixel max {f['max_pixels']:,.0f}, "
        f"uploads deleted {f['upload_grace_s']:g} s after use",
    ]
    if failures:
        lines.append(f"failures (first 5 of {len(failures)}):")
        lines += [f"  {d}" for d in failures[:5]]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_argument(parser)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--requests-per-client", type=int, default=64, help="requests per client (default 64)")
    parser.add_argument("--warmup", type=int, default=64, help="warm-up requests before the first RSS (default 64)")
    parser.add_argument("--rounds", type=int, default=4, help="RSS is read after each of these rounds (default 4)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for the server")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mix = build_mix()
    oversized = Item("bad:oversized", "big.png", oversized_file(), "413")
    figures: dict[str, float] = {"clients": float(args.clients), "per_client": float(args.requests_per_client)}
    figures.update(server_settings())
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkstemp(prefix="lungdemo-load-", suffix=".log")[1])

    proc, t0 = start_server(args.model, port, log_path)
    try:
        try:
            wait_first_answer(proc, url, (EXAMPLES[0].name, EXAMPLES[0].read_bytes()), t0, args.start_timeout)
        except (RuntimeError, TimeoutError) as exc:
            print(f"error: {exc}\n--- server log ({log_path}) ---\n{log_path.read_text()[-3000:]}", file=sys.stderr)
            return 1
        print(f"server up (pid {proc.pid}); warm-up...", file=sys.stderr)
        per_warm = max(1, args.warmup // args.clients)
        warm = run_clients(url, mix, oversized, args.clients, per_warm)
        figures["warmup_requests"] = float(len(warm))
        time.sleep(1.0)  # let the last responses' buffers be released before reading RSS
        figures["rss_warm_mb"] = rss_mb(proc.pid)
        print(f"RSS after warm-up {figures['rss_warm_mb']:.0f} MiB; measuring...", file=sys.stderr)

        outcomes: list[Outcome] = []
        rss_series = []
        wall = 0.0
        per_round = max(1, args.requests_per_client // args.rounds)
        for r in range(args.rounds):
            count = per_round if r < args.rounds - 1 else args.requests_per_client - per_round * (args.rounds - 1)
            start = time.perf_counter()
            outcomes += run_clients(url, mix, oversized, args.clients, count, offset=r * per_round)
            wall += time.perf_counter() - start
            time.sleep(1.0)
            rss_series.append(rss_mb(proc.pid))
            print(f"  after {len(outcomes)} requests: RSS {rss_series[-1]:.0f} MiB", file=sys.stderr)
        figures["rss_peak_mb"], figures["rss_end_mb"] = peak_rss_mb(proc.pid)
    finally:
        stop_server(proc)

    figures.update(summarize(outcomes, wall))
    figures["rss_growth_pct"] = 100.0 * (figures["rss_end_mb"] - figures["rss_warm_mb"]) / figures["rss_warm_mb"]
    failures = [o.detail for o in outcomes if o.verdict == "failed"] + [
        f"(warm-up) {o.detail}" for o in warm if o.verdict == "failed"
    ]
    by_kind = Counter((o.item.kind, o.verdict) for o in outcomes)
    print(f"model: {args.model}; mix of {len(mix)} files, every {OVERSIZED_EVERY}th request oversized")
    print(report(figures, failures, rss_series))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "figures": figures,
                    "rss_by_round_mb": rss_series,
                    "by_kind": {f"{k} {v}": n for (k, v), n in sorted(by_kind.items())},
                },
                indent=2,
            )
            + "\n"
        )
    met = figures["failed"] == 0 and not failures and figures["rss_growth_pct"] < TARGET_RSS_GROWTH_PCT
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
