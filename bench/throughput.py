"""Throughput: many short runs at once through one worker, built-in engine vs Temporal.

Starts R runs of ``bench_chain`` with A activities each (default 200 × 3) all at once, from
``--clients`` threads (default 4, as several web processes would), against one
``manage.py runworker --concurrency 4`` that is already running, and measures from just before
the first start to the last run's recorded close: runs/s and activities/s. Each executor runs
``--repeat`` rounds (default 3) on the same worker; the median round is reported, with the
spread. The start phase (the clients' ``execute()`` calls, which for Temporal include
refreshing our mirror of the run) is reported separately; the worker works while the clients
are still starting runs, so a slow start phase caps the throughput.

* ``default``  — the built-in engine (Celery on Redis/RabbitMQ + PostgreSQL);
* ``temporal`` — the same workflow on our Temporal executor against a
                 ``temporal server start-dev`` this script starts (and stops);
* ``default-reuse`` — a diagnostic, not run unless asked for: the built-in engine with database
                 connections kept across Celery tasks (see ``bench/settings_reuse.py``).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/beluga \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
    .venv/bin/python -m bench.throughput [--runs 200] [--activities 3] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from typing import Any

from bench import common

EXECUTORS = ("default", "temporal", "default-reuse")


def start_all(
    executor: Any, runs: int, activities: int, tag: str, clients: int
) -> tuple[list[Any], float]:
    from beluga_workflows import workflow
    from bench.workflows import chain

    began = time.time()
    handles = common.in_parallel(
        lambda i: executor.execute(
            chain, workflow.WorkflowOptions(id=f"bench-tp-{tag}-{i}", input=activities)
        ),
        runs,
        clients,
    )
    return handles, began


def round_default(executor: Any, runs: int, activities: int, clients: int) -> dict[str, float]:
    from django.db.models import Max

    from beluga_workflows.models import WorkflowRun

    tag = uuid.uuid4().hex[:8]
    handles, began = start_all(executor, runs, activities, tag, clients)
    started = time.time() - began
    rows = WorkflowRun.objects.filter(run_id__in=[h.run_id for h in handles])
    common.wait_for(lambda: rows.filter(status="completed").count() == runs, 1800, "all runs", 0.1)
    last_close = rows.aggregate(last=Max("closed_at"))["last"].timestamp()
    return {"start_s": started, "makespan_s": last_close - began}


def round_temporal(executor: Any, runs: int, activities: int, clients: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    handles, began = start_all(executor, runs, activities, tag, clients)
    started = time.time() - began
    for handle in handles:
        assert handle.result(timeout=1800) == activities
    query = f"WorkflowId STARTS_WITH 'bench-tp-{tag}-' AND ExecutionStatus = 'Completed'"
    closed: list[Any] = []

    def listed() -> bool:
        closed[:] = executor.call(lambda client: common.temporal_list(client, query))
        return len(closed) == runs

    common.wait_for(listed, 60, "visibility of the closed runs", 0.2)
    last_close = max(ex.close_time for ex in closed).timestamp()
    return {"start_s": started, "makespan_s": last_close - began}


def measure(name: str, args: argparse.Namespace, server: Any = None) -> dict[str, Any]:
    from beluga_workflows import workflow

    task_queue = f"bench-throughput-{uuid.uuid4().hex[:8]}"
    with common.runworker(
        f"throughput-{name}",
        concurrency=args.concurrency,
        executor="temporal" if name == "temporal" else "default",
        temporal=server,
        task_queue=task_queue,
        env=common.REUSE_ENV if name == "default-reuse" else None,
    ) as worker:
        if name != "temporal":
            executor, one_round = workflow.new("default"), round_default
        else:
            executor, one_round = common.temporal_executor(server, task_queue), round_temporal
        rounds = []
        for _ in range(args.repeat):
            cpu0 = common.proc_stats(worker.pid)["cpu_s"]
            server_cpu0 = common.proc_stats(server.process.pid)["cpu_s"] if server else 0.0
            result = one_round(executor, args.runs, args.activities, args.clients)
            result["worker_cpu_s"] = common.proc_stats(worker.pid)["cpu_s"] - cpu0
            if server:
                result["server_cpu_s"] = (
                    common.proc_stats(server.process.pid)["cpu_s"] - server_cpu0
                )
            rounds.append(result)
            print(f"{name}: {result['makespan_s']:.2f}s", file=sys.stderr, flush=True)
        peak = common.proc_stats(worker.pid)["peak_mib"]
    median = sorted(rounds, key=lambda r: r["makespan_s"])[len(rounds) // 2]
    makespans = [r["makespan_s"] for r in rounds]
    return {
        "executor": name,
        "runs": args.runs,
        "activities": args.activities,
        "concurrency": args.concurrency,
        "clients": args.clients,
        **median,
        "runs_per_s": args.runs / median["makespan_s"],
        "activities_per_s": args.runs * args.activities / median["makespan_s"],
        "makespans": makespans,
        "spread": (max(makespans) - min(makespans)) / statistics.median(makespans),
        "worker_peak_mib": peak,
    }


def report(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    lines = [
        f"{first['runs']} runs × {first['activities']} activities started at once from "
        f"{first['clients']} client threads, one runworker (concurrency {first['concurrency']}); "
        f"median of {len(first['makespans'])} rounds",
        "",
        common.table(
            [
                "executor",
                "makespan s",
                "runs/s",
                "activities/s",
                "start phase s",
                "rounds (s)",
                "worker CPU s",
                "worker peak RSS MiB",
            ],
            [
                [
                    r["executor"],
                    r["makespan_s"],
                    r["runs_per_s"],
                    r["activities_per_s"],
                    r["start_s"],
                    " / ".join(f"{m:.2f}" for m in r["makespans"]),
                    r["worker_cpu_s"],
                    r["worker_peak_mib"],
                ]
                for r in rows
            ],
        ),
    ]
    by = {r["executor"]: r for r in rows}
    if "default" in by and "temporal" in by:
        d, t = by["default"], by["temporal"]
        lines.append(
            f"\ndefault / temporal throughput: {common.ratio(d['runs_per_s'], t['runs_per_s']):.2f}"
            f"x; Temporal dev server CPU {t['server_cpu_s']:.1f}s in the median round"
        )
    if "default-reuse" in by and "default" in by:
        gain = common.ratio(by["default-reuse"]["runs_per_s"], by["default"]["runs_per_s"])
        lines.append(f"default-reuse / default throughput: {gain:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--activities", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--clients", type=int, default=4, help="client threads starting the runs (default 4)"
    )
    parser.add_argument("--executors", default="default,temporal")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    names = common.executor_names(parser, args.executors, EXECUTORS)
    common.setup_django()
    common.clean()
    rows = []
    for name in [n for n in names if n != "temporal"]:
        rows.append(measure(name, args))
    if "temporal" in names:
        with common.temporal_server("throughput") as server:
            rows.append(measure("temporal", args, server))
    print(report(rows))
    common.save(args.json, rows)


if __name__ == "__main__":
    main()
