"""Parked runs: what do K runs waiting for a signal cost, built-in engine vs Temporal?

Starts K runs of ``bench_parked`` (each waits for a ``go`` signal, then finishes) from
``--clients`` threads (default 4, as several web processes would) against one
``manage.py runworker --concurrency 2``, waits until every run is parked on its signal, then
signals them all (from the same client threads) and waits until every run has finished.
Reports:

* the worker's resident memory (RSS) and threads idle (ready, no runs), with all K runs parked,
  after they all finished, its peak RSS over the whole benchmark, and the CPU time it used;
* for Temporal also the dev server's RSS at the same moments — the Temporal side of the cost
  (the built-in engine's side is K run rows and 2 events each in PostgreSQL; the database size
  grown by the benchmark is reported for it);
* time to start K runs (the client's ``execute()`` calls), until all are parked (from the first
  start), to signal all (the client's ``signal()`` calls) and until all are finished (from the
  first signal).

"Parked" is read from each system itself: our run rows' ``waiting_for = 'signal:go'`` for the
built-in engine; for Temporal the run's memo entry ``beluga_wait``, which our Temporal workflow
sets when it starts waiting, read through Temporal visibility. For Temporal the time until our
mirror (the Django rows the admin and REST API read) shows every run finished is given too.

K defaults to 10,000 for both (``--runs``, ``--temporal-runs``).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/beluga \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
    .venv/bin/python -m bench.parked [--runs 10000] [--temporal-runs 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from typing import Any

from bench import common

EXECUTORS = ("default", "temporal")
SETTLE = 3.0  # seconds a worker is left alone before its memory is read


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def database_bytes() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        return int(cursor.fetchone()[0])


def measure_default(runs: int, concurrency: int, clients: int) -> dict[str, Any]:
    from beluga_workflows import workflow
    from beluga_workflows.models import WorkflowRun
    from bench.workflows import parked

    tag = uuid.uuid4().hex[:8]
    executor = workflow.new("default")
    size0 = database_bytes()
    with common.runworker("parked-default", concurrency=concurrency) as worker:
        time.sleep(SETTLE)
        idle = common.proc_stats(worker.pid)
        began = time.time()
        ids = common.in_parallel(
            lambda i: (
                executor.execute(parked, workflow.WorkflowOptions(id=f"bench-parked-{tag}-{i}")).id
            ),
            runs,
            clients,
        )
        start_s = time.time() - began
        log(f"default: started {runs} in {start_s:.1f}s")
        rows = WorkflowRun.objects.filter(workflow_id__startswith=f"bench-parked-{tag}-")
        waiting = rows.filter(status="running", waiting_for="signal:go")
        common.wait_for(lambda: waiting.count() == runs, 3600, "all runs parked", 1.0)
        parked_s = time.time() - began
        log(f"default: all parked {parked_s:.1f}s after the first start")
        time.sleep(SETTLE)
        with_parked = common.proc_stats(worker.pid)
        size1 = database_bytes()
        # Resuming one of many parked runs vs resuming a lone run: signal → result, p50.
        sample = ids[:: max(1, runs // RESUME_SAMPLE)][:RESUME_SAMPLE]
        resume_many = [resume(executor, workflow_id) for workflow_id in sample]
        resume_lone = [resume(executor, lone(executor, tag, n)) for n in range(RESUME_SAMPLE)]
        rest = sorted(set(ids) - set(sample))
        released = time.time()
        common.in_parallel(
            lambda i: executor.signal(rest[i], workflow.Signal("go", True)), len(rest), clients
        )
        signal_s = time.time() - released
        log(f"default: signalled {runs} in {signal_s:.1f}s")
        done = rows.filter(status="completed")
        common.wait_for(lambda: done.count() == runs, 3600, "all runs finished", 1.0)
        finished_s = time.time() - released
        time.sleep(SETTLE)
        after = common.proc_stats(worker.pid)
    return {
        "executor": "default",
        "runs": runs,
        "concurrency": concurrency,
        "clients": clients,
        "idle": idle,
        "parked": with_parked,
        "after": after,
        "start_s": start_s,
        "parked_s": parked_s,
        "signal_s": signal_s,
        "finished_s": finished_s,
        "database_growth_mib": (size1 - size0) / 2**20,
        "resume_many_p50_ms": statistics.median(resume_many),
        "resume_lone_p50_ms": statistics.median(resume_lone),
    }


RESUME_SAMPLE = 50


def resume(executor: Any, workflow_id: str) -> float:
    """Signal a parked run and wait for its result: milliseconds."""
    from beluga_workflows import workflow

    handle = executor.get_handle(workflow_id)
    began = time.perf_counter()
    executor.signal(workflow_id, workflow.Signal("go", True))
    handle.result(timeout=60)
    return (time.perf_counter() - began) * 1000


def lone(executor: Any, tag: str, n: int) -> str:
    """A fresh run, parked, with nothing else parked beside it but what is already there."""
    from beluga_workflows import workflow
    from bench.workflows import parked

    handle = executor.execute(parked, workflow.WorkflowOptions(id=f"bench-lone-{tag}-{n}"))
    common.wait_for(
        lambda: executor.describe(handle.id).waiting_for == "signal:go", 60, "parked", 0.005
    )
    return handle.id


async def _parked_count(client: Any, task_queue: str) -> int:
    from beluga_workflows.executors.temporal.convert import WAIT_MEMO

    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
    return sum(
        1
        for execution in await common.temporal_list(client, query)
        if WAIT_MEMO in execution.raw_info.memo.fields
    )


def measure_temporal(runs: int, concurrency: int, clients: int) -> dict[str, Any]:
    from beluga_workflows import workflow
    from beluga_workflows.models import WorkflowRun
    from bench.workflows import parked

    tag = uuid.uuid4().hex[:8]
    task_queue = f"bench-parked-{tag}"
    completed = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Completed'"
    with common.temporal_server("parked") as server:
        executor = common.temporal_executor(server, task_queue)
        with common.runworker(
            "parked-temporal",
            concurrency=concurrency,
            executor="temporal",
            temporal=server,
            task_queue=task_queue,
        ) as worker:
            time.sleep(SETTLE)
            idle = common.proc_stats(worker.pid)
            server_idle = common.proc_stats(server.process.pid)
            began = time.time()
            ids = common.in_parallel(
                lambda i: (
                    executor.execute(
                        parked, workflow.WorkflowOptions(id=f"bench-parked-{tag}-{i}")
                    ).id
                ),
                runs,
                clients,
            )
            start_s = time.time() - began
            log(f"temporal: started {runs} in {start_s:.1f}s")

            def all_parked() -> bool:
                count = executor.call(lambda client: _parked_count(client, task_queue))
                return bool(count == runs)

            common.wait_for(all_parked, 3600, "all runs parked", 2.0)
            parked_s = time.time() - began
            log(f"temporal: all parked {parked_s:.1f}s after the first start")
            time.sleep(SETTLE)
            with_parked = common.proc_stats(worker.pid)
            server_parked = common.proc_stats(server.process.pid)
            released = time.time()
            common.in_parallel(
                lambda i: executor.signal(ids[i], workflow.Signal("go", True)), runs, clients
            )
            signal_s = time.time() - released
            log(f"temporal: signalled {runs} in {signal_s:.1f}s")

            def all_done() -> bool:
                return bool(
                    executor.call(lambda client: common.temporal_count(client, completed)) == runs
                )

            common.wait_for(all_done, 3600, "all runs finished", 1.0)
            finished_s = time.time() - released
            rows = WorkflowRun.objects.filter(workflow_id__startswith=f"bench-parked-{tag}-")
            mirrored = rows.filter(status="completed")
            try:
                common.wait_for(lambda: mirrored.count() == runs, 600, "the mirror", 1.0)
                mirror_s: float | None = time.time() - released
            except TimeoutError:
                mirror_s = None
            time.sleep(SETTLE)
            after = common.proc_stats(worker.pid)
            server_after = common.proc_stats(server.process.pid)
    return {
        "executor": "temporal",
        "runs": runs,
        "concurrency": concurrency,
        "clients": clients,
        "idle": idle,
        "parked": with_parked,
        "after": after,
        "server_idle": server_idle,
        "server_parked": server_parked,
        "server_after": server_after,
        "start_s": start_s,
        "parked_s": parked_s,
        "signal_s": signal_s,
        "finished_s": finished_s,
        "mirror_finished_s": mirror_s,
    }


def report(rows: list[dict[str, Any]]) -> str:
    concurrency, clients = rows[0]["concurrency"], rows[0]["clients"]
    lines = [
        f"K runs parked on a signal, one runworker (concurrency {concurrency}), {clients} client "
        "threads starting and signalling; RSS in MiB, threads in parentheses",
        "",
    ]

    def mem(stats: dict[str, float]) -> str:
        return f"{stats['rss_mib']:.0f} ({stats['threads']:.0f})"

    memory = []
    for r in rows:
        memory.append(
            [
                f"{r['executor']} worker",
                r["runs"],
                mem(r["idle"]),
                mem(r["parked"]),
                r["parked"]["rss_mib"] - r["idle"]["rss_mib"],
                mem(r["after"]),
                r["after"]["peak_mib"],
                r["after"]["cpu_s"] - r["idle"]["cpu_s"],
            ]
        )
        if "server_idle" in r:
            memory.append(
                [
                    "Temporal dev server",
                    r["runs"],
                    mem(r["server_idle"]),
                    mem(r["server_parked"]),
                    r["server_parked"]["rss_mib"] - r["server_idle"]["rss_mib"],
                    mem(r["server_after"]),
                    r["server_after"]["peak_mib"],
                    r["server_after"]["cpu_s"] - r["server_idle"]["cpu_s"],
                ]
            )
    lines.append(
        common.table(
            ["process", "K", "idle", "K parked", "Δ RSS", "all finished", "peak RSS", "CPU s"],
            memory,
        )
    )
    timing = [
        [
            r["executor"],
            r["runs"],
            r["start_s"],
            r["runs"] / r["start_s"],
            r["parked_s"],
            r["runs"] / r["parked_s"],
            r["signal_s"],
            r["finished_s"],
            r["runs"] / r["finished_s"],
        ]
        for r in rows
    ]
    lines += [
        "",
        common.table(
            [
                "executor",
                "K",
                "start all s",
                "starts/s",
                "all parked s",
                "parked/s",
                "signal all s",
                "all finished s",
                "finished/s",
            ],
            timing,
        ),
    ]
    for r in rows:
        if r.get("database_growth_mib") is not None:
            lines.append(
                f"\ndefault: PostgreSQL database grew {r['database_growth_mib']:.0f} MiB "
                f"for {r['runs']:,} parked runs"
            )
        if r.get("resume_many_p50_ms") is not None:
            many, lone_ms = r["resume_many_p50_ms"], r["resume_lone_p50_ms"]
            lines.append(
                f"\ndefault: resuming one of {r['runs']:,} parked runs (signal → result, p50 of "
                f"{RESUME_SAMPLE}) {many:.1f} ms; a lone run {lone_ms:.1f} ms: "
                f"{common.ratio(many, lone_ms):.2f}x"
            )
        if "mirror_finished_s" in r:
            value = r["mirror_finished_s"]
            lines.append(
                "\ntemporal: our mirror showed every run finished "
                + (f"{value:.1f}s after the first signal" if value else "not within 600s")
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10000, help="K for the built-in engine")
    parser.add_argument("--temporal-runs", type=int, help="K for Temporal (default: --runs)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--clients", type=int, default=4, help="client threads starting and signalling runs"
    )
    parser.add_argument("--executors", default="default,temporal")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    names = common.executor_names(parser, args.executors, EXECUTORS)
    common.setup_django()
    common.clean()
    rows = []
    if "default" in names:
        rows.append(measure_default(args.runs, args.concurrency, args.clients))
    if "temporal" in names:
        rows.append(
            measure_temporal(args.temporal_runs or args.runs, args.concurrency, args.clients)
        )
    print(report(rows))
    common.save(args.json, rows)


if __name__ == "__main__":
    main()
