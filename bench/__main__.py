"""``make bench``: every comparison in one run, written up in ``bench/results.md`` with a chart.

Runs, one after the other on the same PostgreSQL and broker (each a subprocess of its own):

1. ``bench.versus`` — ours (``runworker --pool threads``, then ``--pool prefork``), DBOS and
   raw Celery: W3 throughput, signal → result latency, per-step cost of a long and a short run;
2. ``bench.step_cost`` — our Temporal executor beside a workflow written directly on the
   Temporal SDK, one dev server: per-step and workflow-task cost over a long run;
3. ``bench.client_cost`` — what ``execute()`` and ``signal()`` cost the caller, ours against
   the plain temporalio client;
4. ``bench.parked`` — K runs parked on a signal: time to start and park them, worker memory
   and threads, resuming one of them against resuming a lone run;
5. ``bench.fanout`` — one run starting N activities at once and gathering them (100, 1,000
   and 10,000), ours beside a DBOS queue fan-out: time, per-activity cost and its growth,
   worker memory.

``--smoke`` runs every script at a tiny size (what the test suite does, to keep them working);
figures from a smoke run mean nothing.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/beluga \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
    .venv/bin/python -m bench [--smoke] [--out bench/results.md] [--chart docs/images/...png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

FULL = {
    "versus": ["--runs", "300", "--samples", "50", "--steps", "1000"],
    "step_cost": ["--steps", "1000", "--variants", "temporal,temporal-sdk"],
    "client_cost": ["--calls", "200"],
    "parked": ["--runs", "100000", "--executors", "default"],
    "fanout": ["--sizes", "100,1000,10000"],
}
SMOKE = {
    "versus": ["--runs", "10", "--samples", "3", "--steps", "20"],
    "step_cost": ["--steps", "20", "--variants", "temporal,temporal-sdk"],
    "client_cost": ["--calls", "5"],
    "parked": ["--runs", "60", "--executors", "default"],
    "fanout": ["--sizes", "5,10"],
}


def run(script: str, args: list[str], out: Path) -> Any:
    """``python -m bench.<script> <args> --json <file>``; its figures."""
    target = out / f"{script}.json"
    command = [sys.executable, "-m", f"bench.{script}", *args, "--json", str(target)]
    print(f"== {' '.join(command[2:])}", file=sys.stderr, flush=True)
    began = time.monotonic()
    done = subprocess.run(command, cwd=common.ROOT, text=True, capture_output=True, check=False)
    sys.stderr.write(done.stderr[-4000:])
    if done.returncode != 0:
        raise SystemExit(f"bench.{script} failed (exit {done.returncode}):\n{done.stdout}")
    print(done.stdout, file=sys.stderr, flush=True)
    figures = json.loads(target.read_text())
    return {"figures": figures, "report": done.stdout.strip(), "seconds": time.monotonic() - began}


def machine() -> str:
    cpus = os.cpu_count()
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = f" ({line.split(':', 1)[1].strip()})"
                break
    except OSError:
        pass
    return f"{cpus} CPUs{model}{memory}; {platform.system()} {platform.release()}; Python " \
        f"{platform.python_version()}"  # fmt: skip


def _safe(url: str) -> str:
    """A service URL without its password (the results are committed)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def versus_rows(results: dict[str, Any]) -> list[list[Any]]:
    """One row per workload: ours (threads), ours (prefork), DBOS, raw Celery, ratios."""
    threads = results["versus_threads"]["figures"]
    prefork = results["versus_prefork"]["figures"]
    dbos = threads["dbos"]
    celery = threads.get("celery")
    rows = []

    def add(label: str, key: str, field: str) -> None:
        ours = [threads["ours"][key][field], prefork["ours"][key][field]]
        peer = dbos[key][field]
        raw = celery[key][field] if celery and key in celery else None
        best = max(ours) if field == "runs_per_s" else min(ours)
        rows.append([label, *ours, peer, raw if raw is not None else "–", best / peer])

    runs = threads["args"]["runs"]
    steps = threads["args"]["steps"]
    add(f"W3: {runs} runs × 3 activities, runs/s", "w3", "runs_per_s")
    add("signal → result p50, ms", "latency", "p50_ms")
    add("signal → result p90, ms", "latency", "p90_ms")
    add(f"per step, one {steps:,}-step run, ms", "steps_long", "ms_per_step")
    add("per step, one 10-step run, ms", "steps_short", "ms_per_step")
    return rows


def write_results(results: dict[str, Any], path: Path, chart: Path | None, smoke: bool) -> None:
    threads = results["versus_threads"]["figures"]
    prefork = results["versus_prefork"]["figures"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m bench`); every figure below comes from one run, "
        "on one machine, with every system on the same PostgreSQL and broker.",
        "",
        f"* Machine: {machine()}.",
        f"* Services: {threads['services']['database']}, broker {threads['services']['broker']}.",
        f"* DBOS {threads['dbos']['dbos_version']}; date {time.strftime('%Y-%m-%d')}.",
    ]
    if smoke:
        lines += ["", "**Smoke run: tiny sizes, the figures mean nothing.**"]
    lines += [
        "",
        "## Ours against DBOS and raw Celery",
        "",
        "One `runworker --concurrency 4` (threads, then prefork); DBOS in one process, as it "
        "is deployed; raw Celery chains of 3 tasks with no durability at all. "
        "*ours / DBOS* uses the better of our two pools.",
        "",
        common.table(
            ["workload", "ours (threads)", "ours (prefork)", "DBOS", "raw Celery", "ours / DBOS"],
            versus_rows(results),
        ),
        "",
    ]
    for name, figures in (("threads", threads), ("prefork", prefork)):
        ours = figures["ours"]
        growth = ours["steps_long"]["ms_per_step"] / ours["steps_short"]["ms_per_step"]
        cpu = ours["w3"].get("cpu_ms_per_run", {})
        lines.append(
            f"* ours ({name}): long/short per-step cost {growth:.2f}; "
            f"{ours['steps_long']['write_transactions']:,} write transactions for "
            f"{ours['steps_long']['steps']:,} activities; W3 CPU per run: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in cpu.items())
        )
    celery = threads.get("celery")
    if celery:
        best = max(threads["ours"]["w3"]["runs_per_s"], prefork["ours"]["w3"]["runs_per_s"])
        lines.append(
            f"* raw Celery: {celery['w3']['runs_per_s']:.1f} runs/s; ours / raw Celery "
            f"{best / celery['w3']['runs_per_s']:.2f}"
        )
    lines += [
        "",
        "## Our Temporal executor beside plain Temporal SDK code",
        "",
        results["step_cost"]["report"],
        "",
        "### What starting and signalling cost the caller",
        "",
        results["client_cost"]["report"],
        "",
        "## Runs parked on a signal",
        "",
        results["parked"]["report"],
        "",
        "## Fan-out",
        "",
        results["fanout"]["report"],
        "",
    ]
    if chart is not None:
        lines += ["", f"![Benchmark chart]({os.path.relpath(chart, path.parent)})", ""]
    path.write_text("\n".join(lines))


def draw(results: dict[str, Any], chart: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = versus_rows(results)
    labels = ["W3 throughput", "signal → result\np50", "signal → result\np90",
              "per step,\nlong run", "per step,\nshort run"]  # fmt: skip
    # Every bar is "how many times better than DBOS": throughput as is, times inverted.
    better = [rows[0][-1]] + [1 / r[-1] for r in rows[1:]]
    step = results["step_cost"]["figures"]
    by = {r["variant"]: r for r in step}
    temporal = by.get("temporal")
    sdk = by.get("temporal-sdk")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [5, 2]})
    colors = ["#2e8540" if b >= 1 else "#ba2121" for b in better]
    axes[0].bar(labels, better, color=colors)
    axes[0].axhline(1.0, color="#333", linewidth=1)
    axes[0].set_ylabel("× DBOS (above 1: ours is better)")
    axes[0].set_title("Built-in engine vs DBOS, same PostgreSQL")
    for i, value in enumerate(better):
        axes[0].text(i, value, f"{value:.2f}×", ha="center", va="bottom")
    if temporal and sdk:
        names = ["first 100", "last 100"]
        ours_ms = [temporal["workflow_task_first_ms"], temporal["workflow_task_last_ms"]]
        sdk_ms = [sdk["workflow_task_first_ms"], sdk["workflow_task_last_ms"]]
        x = range(len(names))
        axes[1].bar([i - 0.2 for i in x], ours_ms, width=0.4, label="our executor")
        axes[1].bar([i + 0.2 for i in x], sdk_ms, width=0.4, label="plain SDK")
        axes[1].set_xticks(list(x), names)
        axes[1].set_ylabel("ms per workflow task")
        axes[1].set_title(f"Temporal, {temporal['steps']:,}-step run")
        axes[1].legend()
    fig.suptitle(f"beluga_workflows benchmarks — {machine()}", fontsize=9)
    fig.tight_layout()
    chart.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(chart, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (keeps scripts working)")
    parser.add_argument("--out", default=str(common.ROOT / "bench" / "results.md"))
    parser.add_argument("--chart", default=str(common.ROOT / "docs/images/benchmarks.png"))
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG (no matplotlib)")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        results = {}
        for pool in ("threads", "prefork"):
            (out / pool).mkdir()
            results[f"versus_{pool}"] = run(
                "versus",
                [*sizes["versus"], "--pool", pool]
                + ([] if pool == "threads" else ["--systems", "ours"]),
                out / pool,
            )
        for script in ("step_cost", "client_cost", "parked", "fanout"):
            results[script] = run(script, sizes[script], out)
    chart = None if args.no_chart else Path(args.chart)
    if chart is not None:
        draw(results, chart)
    write_results(results, Path(args.out), chart, args.smoke)
    print(f"wrote {args.out}" + (f" and {chart}" if chart else ""))


if __name__ == "__main__":
    main()
