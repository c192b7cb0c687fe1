"""Ours against DBOS and raw Celery, side by side on the same PostgreSQL and broker.

The workloads of issue 8, measured the same way for every system, in one run:

* **W3** — R runs of a workflow with three trivial activities, started at once (ours: from
  ``--clients`` threads through ``executor.execute``, as web processes would); runs/s from the
  first start to the last result the client sees.
* **latency** — a run parked on an ``approval`` signal gets it and runs one activity; the time
  from sending the signal to ``result()`` returning in the client, p50 and p90.
* **steps** — one run of N activities in a row, and one of 10: ms per step, and the growth
  (per-step cost of the long run / the short run's).
* **celery** — raw Celery: R chains of three tasks on the same broker, with no durability at
  all, as the ceiling of the broker path (W3 only).

Ours runs one ``manage.py runworker --concurrency C`` subprocess; DBOS runs in a subprocess of
its own (client and workflows in one process, as DBOS is deployed), on a system database
``bench_dbos`` of the same PostgreSQL server; raw Celery runs a ``celery worker`` with the
same concurrency on the same broker.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/beluga \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
    .venv/bin/python -m bench.versus [--runs 300] [--samples 50] [--steps 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from bench import common

SYSTEMS = ("ours", "dbos", "celery")


# -- ours ----------------------------------------------------------------------------------


def ours_w3(executor: Any, runs: int, clients: int) -> dict[str, Any]:
    from beluga_workflows import workflow
    from bench.workflows import chain

    tag = uuid.uuid4().hex[:8]
    began = time.perf_counter()

    def run(i: int) -> Any:
        return executor.execute(chain, workflow.WorkflowOptions(id=f"w3-{tag}-{i}", input=3))

    handles = common.in_parallel(run, runs, clients)
    results = common.in_parallel(lambda i: handles[i].result(timeout=600), runs, clients)
    elapsed = time.perf_counter() - began
    assert results == [3] * runs, results[:5]
    return {"runs": runs, "seconds": elapsed, "runs_per_s": runs / elapsed}


def ours_latency(executor: Any, samples: int) -> dict[str, Any]:
    from beluga_workflows import workflow
    from bench.workflows import approval

    tag = uuid.uuid4().hex[:8]
    times = []
    for i in range(samples):
        handle = executor.execute(approval, workflow.WorkflowOptions(id=f"lat-{tag}-{i}", input=i))
        common.wait_for(
            lambda h=handle: executor.describe(h.id).waiting_for == "signal:approval",
            30,
            "the approval wait",
            0.005,
        )
        began = time.perf_counter()
        executor.signal(handle.id, workflow.Signal("approval", True))
        assert handle.result(timeout=30) == i + 1
        times.append((time.perf_counter() - began) * 1000)
    return {"samples": samples, "p50_ms": statistics.median(times), "p90_ms": _p90(times)}


def ours_steps(executor: Any, count: int) -> dict[str, Any]:
    from beluga_workflows import workflow
    from bench.workflows import chain

    began = time.perf_counter()
    handle = executor.execute(chain, workflow.WorkflowOptions(input=count))
    assert handle.result(timeout=3600) == count
    elapsed = time.perf_counter() - began
    writers = common.run_writers(handle.run_id)
    return {"steps": count, "seconds": elapsed, "ms_per_step": elapsed * 1000 / count,
            "write_transactions": writers}  # fmt: skip


def measure_ours(args: argparse.Namespace) -> dict[str, Any]:
    from beluga_workflows import workflow

    out: dict[str, Any] = {}
    with common.runworker(
        "versus-ours", concurrency=args.concurrency, args=("--pool", args.pool)
    ) as worker:
        executor = workflow.new("default")
        ours_w3(executor, min(20, args.runs), args.clients)  # warm up
        cpu0 = common.proc_stats(worker.pid)["cpu_s"]
        client0, pg0 = time.process_time(), common.named_cpu("postgres")
        out["w3"] = ours_w3(executor, args.runs, args.clients)
        out["w3"]["cpu_ms_per_run"] = {
            "worker": (common.proc_stats(worker.pid)["cpu_s"] - cpu0) * 1000 / args.runs,
            "client": (time.process_time() - client0) * 1000 / args.runs,
            "postgres": (common.named_cpu("postgres") - pg0) * 1000 / args.runs,
        }
        print(f"ours: w3 CPU ms/run {out['w3']['cpu_ms_per_run']}", file=sys.stderr)
        _progress("ours", "w3", out["w3"]["runs_per_s"], "runs/s")
        ours_latency(executor, 3)
        out["latency"] = ours_latency(executor, args.samples)
        _progress("ours", "latency p50", out["latency"]["p50_ms"], "ms")
        out["steps_short"] = ours_steps(executor, 10)
        out["steps_long"] = ours_steps(executor, args.steps)
        _progress("ours", "ms/step", out["steps_long"]["ms_per_step"], "ms")
        out["worker_peak_mib"] = common.proc_stats(worker.pid)["peak_mib"]
    return out


# -- DBOS ------------------------------------------------------------------------------------


def measure_dbos(args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings

    database = _database_url(settings.DATABASES["default"], "bench_dbos")
    command = [
        sys.executable, "-m", "bench.dbos_peer", "--database", database,
        "--runs", str(args.runs), "--samples", str(args.samples), "--steps", str(args.steps),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=common.ROOT, capture_output=True, text=True, timeout=3600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the DBOS peer failed:\n{done.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    _progress("dbos", "w3", out["w3"]["runs_per_s"], "runs/s")
    return out


def _database_url(db: dict[str, Any], name: str) -> str:
    """A ``postgresql://`` URL for database ``name`` on the server of ``db``; created if needed."""
    import psycopg

    host = db.get("HOST") or "localhost"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    port = db.get("PORT") or 5432
    params = {"host": host, "port": port, "user": user, "password": db.get("PASSWORD") or None}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    if host.startswith("/"):
        return f"postgresql://{user}{password}@/{name}?host={host}&port={port}"
    return f"postgresql://{user}{password}@{host}:{port}/{name}"


# -- raw Celery ------------------------------------------------------------------------------


def measure_celery(args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings

    broker = settings.CELERY_BROKER_URL
    # This process imports celery_peer too (to send the chains): it reads the same variable.
    os.environ["BENCH_BROKER_URL"] = broker
    env = {**os.environ, "PYTHONPATH": str(common.ROOT)}
    log = open(common.LOGS / "versus-celery.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.celery_peer", "worker", "-P", "threads",
         "-c", str(args.concurrency), "-Q", "bench_celery_peer", "-l", "WARNING",
         "--without-gossip", "--without-mingle"],
        cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        from bench import celery_peer

        celery_peer.wait_ready()
        celery_peer.run_chains(min(20, args.runs))  # warm up
        seconds = celery_peer.run_chains(args.runs)
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
    out = {"w3": {"runs": args.runs, "seconds": seconds, "runs_per_s": args.runs / seconds}}
    _progress("celery", "w3", out["w3"]["runs_per_s"], "runs/s")
    return out


# -- report ----------------------------------------------------------------------------------


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    ours, dbos, celery = results.get("ours"), results.get("dbos"), results.get("celery")
    rows: list[list[Any]] = []

    def row(what: str, key: str, field: str, better: str) -> None:
        values = [r[key][field] if r and key in r else None for r in (ours, dbos)]
        ratio = common.ratio(values[0], values[1]) if None not in values else None
        rows.append([what, *(v if v is not None else "–" for v in values),
                     f"{ratio:.2f}" if ratio is not None else "–", better])  # fmt: skip

    row(f"W3: {args.runs} runs × 3 activities, runs/s", "w3", "runs_per_s", "higher")
    row("signal → result p50, ms", "latency", "p50_ms", "lower")
    row("signal → result p90, ms", "latency", "p90_ms", "lower")
    row(f"per step, one {args.steps}-step run, ms", "steps_long", "ms_per_step", "lower")
    row("per step, one 10-step run, ms", "steps_short", "ms_per_step", "lower")
    lines = [
        common.table(["workload", "ours", "DBOS", "ours / DBOS", "better"], rows),
    ]
    if ours:
        growth = ours["steps_long"]["ms_per_step"] / ours["steps_short"]["ms_per_step"]
        lines.append(
            f"\nours: {args.steps}-step run / 10-step run, per step: {growth:.2f}; "
            f"write transactions of the {args.steps}-step run: "
            f"{ours['steps_long']['write_transactions']:,} (N + 2 = {args.steps + 2:,})"
        )
    if dbos:
        growth = dbos["steps_long"]["ms_per_step"] / dbos["steps_short"]["ms_per_step"]
        lines.append(f"DBOS {dbos['dbos_version']}: growth {growth:.2f}")
    if ours and celery:
        ceiling = common.ratio(ours["w3"]["runs_per_s"], celery["w3"]["runs_per_s"])
        lines.append(
            f"raw Celery chains of 3 tasks (no durability): {celery['w3']['runs_per_s']:.1f} "
            f"runs/s; ours / raw Celery: {ceiling:.2f}"
        )
    return "\n".join(lines)


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def _progress(system: str, what: str, value: float, unit: str) -> None:
    print(f"{system}: {what} {value:.2f} {unit}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pool", default="threads", choices=["threads", "prefork"])
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    systems = common.executor_names(parser, args.systems, SYSTEMS)
    common.setup_django()
    common.clean()
    results: dict[str, Any] = {"args": vars(args), "services": common.services()}
    for system in systems:
        results[system] = {"ours": measure_ours, "dbos": measure_dbos, "celery": measure_celery}[
            system
        ](args)
    print(report(results, args))
    common.save(args.json, results)


if __name__ == "__main__":
    main()
