"""Fan-out: one run starting N trivial activities at once and gathering them, ours beside DBOS.

* **ours** — one run of ``bench_fanout`` (``bench/workflows.py``): N ``ctx.start_activity``
  calls, then one ``ctx.gather``. Started through the public ``workflow.new("default")``
  executor as an application would, run by one ``manage.py runworker --concurrency C`` at its
  default settings (default pool); a fresh worker and clean tables for every size, and a
  warm-up fan-out of 10 first. Wall time from ``execute()`` to ``result()`` returning; the
  worker's resident memory sampled from ``/proc`` during the run (peak), and the write
  transactions of the run (distinct ``xmin`` of its rows).
* **DBOS** — one DBOS workflow enqueuing N steps on a DBOS queue and waiting for their handles
  (``bench/dbos_peer.py --only fanout``), in a process of its own per size, on a system
  database ``bench_dbos`` of the same PostgreSQL server. Wall time from ``start_workflow`` to
  ``get_result()``.

Every size of every system has a wall-clock cap (``--cap``, 15 minutes): a run that does not
finish in time is reported as stuck instead of holding the benchmark up, and ours is not run at
the larger sizes after that.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/beluga \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
    .venv/bin/python -m bench.fanout [--sizes 100,1000,10000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Any

from bench import common

SYSTEMS = ("ours", "dbos")
HEADERS = ["activities", "ours s", "ours ms/activity", "DBOS s", "DBOS ms/activity",
           "ours / DBOS", "worker peak RSS", "write txns (ours)", "DBOS peak RSS"]  # fmt: skip


class PeakSampler:
    """The peak resident memory (MiB) of a process and its children, read from ``/proc``
    every ``every`` seconds in a thread of its own until ``stop()``."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every = pid, every
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak_mib = max(self.peak_mib, common.proc_stats(self.pid)["rss_mib"])
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, common.proc_stats(self.pid)["rss_mib"])


# -- ours ----------------------------------------------------------------------------------


def ours_fanout(size: int, args: argparse.Namespace) -> dict[str, Any]:
    from beluga_workflows import workflow
    from beluga_workflows.errors import ResultTimeoutError
    from bench.workflows import fanout

    common.clean()
    out: dict[str, Any] = {"activities": size}
    with common.runworker(f"fanout-ours-{size}", concurrency=args.concurrency) as worker:
        executor = workflow.new("default")
        warm = executor.execute(fanout, workflow.WorkflowOptions(input=10))
        assert warm.result(timeout=120) == 55
        idle = common.proc_stats(worker.pid)
        out["idle_rss_mib"] = idle["rss_mib"]
        with PeakSampler(worker.pid) as sampler:
            began = time.perf_counter()
            handle = executor.execute(fanout, workflow.WorkflowOptions(input=size))
            try:
                result = handle.result(timeout=args.cap)
            except ResultTimeoutError:
                out["status"] = f"stuck (> {args.cap:.0f} s)"
            except Exception as exc:  # the run failed: reported, not raised
                out["status"] = f"failed: {type(exc).__name__}"
                out["error"] = str(exc)[:2000]
            else:
                out["status"] = "ok"
                out["seconds"] = time.perf_counter() - began
                assert result == size * (size + 1) // 2, result
        out["worker_peak_rss_mib"] = sampler.peak_mib
        out["worker_hwm_mib"] = common.proc_stats(worker.pid)["peak_mib"]
        out["worker_cpu_s"] = common.proc_stats(worker.pid)["cpu_s"] - idle["cpu_s"]  # the run
    if out["status"] == "ok":
        out["ms_per_activity"] = out["seconds"] * 1000 / size
        out["write_transactions"] = common.run_writers(handle.run_id)
    else:
        out["seconds_waited"] = time.perf_counter() - began
    _progress("ours", out)
    return out


# -- DBOS ------------------------------------------------------------------------------------


def dbos_fanout(size: int, args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings

    from bench.versus import _database_url

    database = _database_url(settings.DATABASES["default"], "bench_dbos")
    command = [sys.executable, "-m", "bench.dbos_peer", "--database", database,
               "--only", "fanout", "--fanout", str(size)]  # fmt: skip
    out: dict[str, Any] = {"activities": size}
    began = time.perf_counter()
    try:
        # The cap, plus DBOS's launch and warm-up.
        done = subprocess.run(
            command, cwd=common.ROOT, capture_output=True, text=True,
            timeout=args.cap + 60, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        out.update(status=f"stuck (> {args.cap:.0f} s)", seconds_waited=time.perf_counter() - began)
    else:
        if done.returncode != 0:
            out.update(status=f"failed: exit {done.returncode}", error=done.stderr[-2000:])
        else:
            peer = json.loads(done.stdout.strip().splitlines()[-1])
            out.update(peer["fanout"], status="ok", dbos_version=peer["dbos_version"])
    _progress("dbos", out)
    return out


# -- report ----------------------------------------------------------------------------------


def _ok(entry: dict[str, Any] | None) -> bool:
    return bool(entry) and entry.get("status") == "ok"


def growth(entries: list[dict[str, Any]]) -> tuple[int, int, float] | None:
    """(smallest size, largest finished size, ms/activity there ÷ ms/activity at the smallest)."""
    done = [e for e in entries if _ok(e)]
    if len(done) < 2 or entries[0] is not done[0]:
        return None
    factor = done[-1]["ms_per_activity"] / done[0]["ms_per_activity"]
    return done[0]["activities"], done[-1]["activities"], factor


def report(results: dict[str, Any]) -> str:
    sizes = results["args"]["sizes"]
    ours = {e["activities"]: e for e in results.get("ours", [])}
    dbos = {e["activities"]: e for e in results.get("dbos", [])}
    rows = []
    for size in sizes:
        o, d = ours.get(size), dbos.get(size)

        def seconds(entry: dict[str, Any] | None) -> Any:
            if entry is None:
                return "–"
            return entry["seconds"] if _ok(entry) else entry["status"]

        rows.append([
            size,
            seconds(o), o["ms_per_activity"] if _ok(o) else "–",
            seconds(d), d["ms_per_activity"] if _ok(d) else "–",
            f"{o['seconds'] / d['seconds']:.2f}" if _ok(o) and _ok(d) else "–",
            o["worker_peak_rss_mib"] if o and "worker_peak_rss_mib" in o else "–",
            o["write_transactions"] if _ok(o) else "–",
            d["peak_rss_mib"] if _ok(d) else "–",
        ])  # fmt: skip
    args = results["args"]
    lines = [
        f"One run fanning out N trivial activities and gathering them; ours: one runworker "
        f"(concurrency {args['concurrency']}, default pool); DBOS: steps on a DBOS queue at its "
        "defaults (no concurrency limit, polled every second), one process; cap "
        f"{args['cap']:.0f} s per size. RSS in MiB (worker: sampled peak during the run; DBOS: "
        "the process's peak, client included).",
        "",
        common.table(HEADERS, rows),
        "",
    ]
    for name, entries in (("ours", results.get("ours")), ("DBOS", results.get("dbos"))):
        if not entries:
            continue
        grew = growth(entries)
        if grew is None:
            lines.append(f"* {name}: per-activity growth –")
        else:
            small, large, factor = grew
            lines.append(
                f"* {name}: per-activity growth {small:,} → {large:,} activities: {factor:.2f}×"
            )
    return "\n".join(lines)


def _progress(system: str, entry: dict[str, Any]) -> None:
    if _ok(entry):
        what = f"{entry['seconds']:.2f} s, {entry['ms_per_activity']:.2f} ms/activity"
    else:
        what = entry["status"]
    print(f"{system}: fan-out {entry['activities']:,}: {what}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="activities per run")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cap", type=float, default=900.0, help="seconds per size and system")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes takes comma-separated integers, not {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes needs positive sizes")
    systems = common.executor_names(parser, args.systems, SYSTEMS)
    common.setup_django()
    results: dict[str, Any] = {"args": vars(args), "services": common.services()}
    if "ours" in systems:
        results["ours"] = []
        for size in args.sizes:
            if results["ours"] and not _ok(results["ours"][-1]):
                skipped = "not run (a smaller size did not finish)"
                results["ours"].append({"activities": size, "status": skipped})
                continue
            results["ours"].append(ours_fanout(size, args))
    if "dbos" in systems:
        results["dbos"] = [dbos_fanout(size, args) for size in args.sizes]
    print(report(results))
    common.save(args.json, results)


if __name__ == "__main__":
    main()
