"""The serving benchmark's table: each figure of ``bench/serve.py`` with its target, and what 2 cores allow."""

from __future__ import annotations

import os
from collections.abc import Sequence

CORES = len(os.sched_getaffinity(0))


def table(figures: dict[str, float], clients: Sequence[int]) -> str:
    f = figures
    ratio = f["api_p50_ms"] / f["predict_in_process_p50_ms"]
    rows: list[tuple[str, str, str, bool | None]] = [
        ("cold start: process start -> first answer", f"{f['cold_start_s']:.2f} s", "< 6 s", f["cold_start_s"] < 6),
        ("  (process start -> HTTP server answering)", f"{f['listening_s']:.2f} s", "", None),
    ]
    if "import_floor_s" in f:
        rows.append(("  (import torch, torchvision, gradio alone)", f"{f['import_floor_s']:.2f} s", "", None))
    rows += [
        ("/classify p50, 1 client, plain HTTP", f"{f['api_p50_ms']:.1f} ms", "", None),
        ("/classify p95, 1 client, plain HTTP", f"{f['api_p95_ms']:.1f} ms", "", None),
        ("  of which upload p50", f"{f['upload_p50_ms']:.1f} ms", "", None),
        (
            "Predictor.predict p50 / p95 (this process)",
            f"{f['predict_in_process_p50_ms']:.1f} / {f['predict_in_process_p95_ms']:.1f} ms",
            "",
            None,
        ),
        ("  model forward alone p50 (this process)", f"{f['model_forward_p50_ms']:.1f} ms", "", None),
        ("ratio /classify p50 / predict p50", f"{ratio:.2f}x", "<= 2x", ratio <= 2),
    ]
    for n in clients:
        k = f"c{n}_"
        rows.append((f"throughput, {n} client{'s' if n > 1 else ''}", f"{f[k + 'throughput_rps']:.1f} req/s", "", None))
        rows.append(("  latency p50 / p95", f"{f[k + 'p50_ms']:.0f} / {f[k + 'p95_ms']:.0f} ms", "", None))
        cpu = f"{f[k + 'server_cpu_ms']:.1f} / {f.get(k + 'client_cpu_ms', float('nan')):.1f} ms"
        rows.append(("  CPU time a request: server / bench clients", cpu, "", None))
        errors = f"{int(f[k + 'errors'])} of {int(f[k + 'requests'])}"
        rows.append(("  errors", errors, "0", f[k + "errors"] == 0))
    if 1 in clients and max(clients) > 1:
        top = max(clients)
        speedup = f[f"c{top}_throughput_rps"] / f["c1_throughput_rps"]
        rows.append((f"{top} clients / 1 client request rate", f"{speedup:.2f}x", ">= 3x", speedup >= 3))
        # what the machine allows: one client already keeps this many cores busy, and all cores at the
        # CPU a request measured under load serve at most this rate (the server alone, client excluded)
        busy = f["c1_throughput_rps"] * f["c1_server_cpu_ms"] / 1000
        ceiling = CORES * 1000 / f[f"c{top}_server_cpu_ms"]
        shared = CORES * 1000 / (f[f"c{top}_server_cpu_ms"] + f.get(f"c{top}_client_cpu_ms", float("nan")))
        rows.append(("  cores the server keeps busy for 1 client", f"{busy:.2f} of {CORES}", "", None))
        rows.append(
            (
                f"  ceiling: {CORES} cores / server CPU a request at {top}",
                f"{ceiling:.1f} req/s = {ceiling / f['c1_throughput_rps']:.2f}x "
                f"({shared:.1f} with the bench's clients on the same cores)",
                "",
                None,
            )
        )
    if "mixed_requests" in f:
        verdicts = f"{int(f['mixed_answered'])} / {int(f['mixed_refused'])} / {int(f['mixed_failed'])}"
        mixed = f"{int(f['mixed_requests'])} mixed requests, {int(f['mixed_clients'])} clients"
        rows += [
            (f"{mixed}: answered / refused / failed", verdicts, "_ / _ / 0", f["mixed_failed"] == 0),
            ("  throughput", f"{f['mixed_throughput_rps']:.1f} req/s", "", None),
            (
                "  server RSS before -> after",
                f"{f['rss_before_mixed_mb']:.0f} -> {f['rss_after_mixed_mb']:.0f} MiB",
                "",
                None,
            ),
            ("  server RSS growth", f"{f['rss_growth_pct']:+.1f}%", "< 10%", f["rss_growth_pct"] < 10),
        ]
    rows.append(("server peak RSS", f"{f['peak_rss_mb']:.0f} MiB", "", None))
    if "gradio_client_p50_ms" in f:
        rows.append(
            (
                "gradio_client p50 / p95 (own polling included)",
                f"{f['gradio_client_p50_ms']:.0f} / {f['gradio_client_p95_ms']:.0f} ms",
                "",
                None,
            )
        )
    rows.append(("load average (1 min) at start / end", f"{f['load_start']:.2f} / {f['load_end']:.2f}", "", None))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric'.ljust(width)}  {'value':>18}  {'target':>9}  met", "-" * (width + 38)]
    for name, value, target, met in rows:
        mark = "" if met is None else ("yes" if met else "NO")
        lines.append(f"{name.ljust(width)}  {value:>18}  {target:>9}  {mark}")
    return "\n".join(lines)
