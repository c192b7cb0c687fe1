"""Step cost: does a step cost more as the history grows? One long workflow, timed per step.

Runs ``bench_chain`` (N activities one after the other, default N = 1,000) through one
``manage.py runworker --concurrency 1`` for each executor:

* ``default``   — the built-in engine (Celery + PostgreSQL) with its cache of live runs;
* ``replay``    — the same with ``BELUGA_CACHE_SIZE=0``: every step replays the whole history
                  from the database (the O(n²) baseline);
* ``temporal``  — the same workflow code on our Temporal executor, against a
                  ``temporal server start-dev`` this script starts (and stops).

For each it reports the mean time per step over the first and the last 100 steps (gaps between
consecutive activity completions as recorded: our ``ActivityCompleted`` events, Temporal's
``ActivityTaskCompleted`` events), their growth (last / first), the total time from the start
call to the run's recorded close, the worker's CPU time, and PostgreSQL write transactions:
per run (distinct ``xmin`` of the run's rows, exact) and cluster-wide (xid delta, which counts
anything else writing to the cluster too — run the benchmark alone). For Temporal the
PostgreSQL writes are the mirror's (our tables kept in step for the admin and REST API).

Diagnostics, not part of the default set (``--variants``):

* ``default-reuse`` — the built-in engine with database connections kept across Celery tasks
  (``DJANGO_CONN_MAX_AGE=300`` and ``CELERY_DB_REUSE_MAX``, see ``bench/settings_reuse.py``);
  the demo settings open a new PostgreSQL connection for every task;
* ``temporal-nomirror`` — a Temporal worker without the mirror thread
  (``python -m bench.temporal_worker``), to separate Temporal from our mirror;
* ``temporal-sdk`` — the same workflow shape written directly against the Temporal SDK
  (``bench/sdk_workflows.py``, hosted by ``python -m bench.temporal_worker --sdk``): what
  Temporal itself costs per step here, apart from our executor.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/beluga \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
    .venv/bin/python -m bench.step_cost [--steps 1000] [--variants default,replay,temporal]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from typing import Any

from bench import common

VARIANTS = (
    "default",
    "replay",
    "temporal",
    "default-reuse",
    "temporal-nomirror",
    "temporal-sdk",
)
DEFAULT_VARIANTS = "default,replay,temporal"


def step_stats(stamps: list[float]) -> dict[str, float]:
    """Mean ms per step over the first and last 100 steps (100 or half the steps, if fewer)."""
    gaps = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:], strict=False)]
    window = min(100, len(gaps) // 2)
    first, last = statistics.mean(gaps[:window]), statistics.mean(gaps[-window:])
    return {
        "first_ms": first,
        "last_ms": last,
        "growth": last / first,
        "window": window,
        "first_median_ms": statistics.median(gaps[:window]),
        "last_median_ms": statistics.median(gaps[-window:]),
        "mean_ms": statistics.mean(gaps),
    }


def measure_default(variant: str, steps: int) -> dict[str, Any]:
    from beluga_workflows import workflow
    from beluga_workflows.models import WorkflowEvent, WorkflowRun
    from bench.workflows import chain

    env = {"BELUGA_CACHE_SIZE": "0" if variant == "replay" else "256"}
    if variant == "default-reuse":
        env.update(common.REUSE_ENV)
    with common.runworker(f"step_cost-{variant}", concurrency=1, env=env) as worker:
        executor = workflow.new("default")
        cpu0 = common.proc_stats(worker.pid)["cpu_s"]
        xid0 = common.cluster_xid()
        began = time.time()
        handle = executor.execute(
            chain, workflow.WorkflowOptions(id=f"bench-chain-{uuid.uuid4()}", input=steps)
        )
        assert handle.result(timeout=7200) == steps
        xids = common.cluster_xid() - xid0
        stats = common.proc_stats(worker.pid)
    run = WorkflowRun.objects.get(run_id=handle.run_id)
    stamps = [
        t.timestamp()
        for t in WorkflowEvent.objects.filter(run=run, type="ActivityCompleted")
        .order_by("sequence")
        .values_list("timestamp", flat=True)
    ]
    return {
        "variant": variant,
        "steps": steps,
        "total_s": run.closed_at.timestamp() - began,
        **step_stats(stamps),
        "worker_cpu_s": stats["cpu_s"] - cpu0,
        "worker_rss_mib": stats["rss_mib"],
        "run_write_txns": common.run_writers(handle.run_id),
        "cluster_write_txns": xids,
    }


async def start_sdk(client: Any, steps: int, task_queue: str) -> tuple[str, str]:
    """Run ``bench.sdk_workflows.SdkChain`` to its end with the plain Temporal client."""
    workflow_id = f"bench-sdk-chain-{uuid.uuid4()}"
    handle = await client.start_workflow(
        "bench_sdk_chain", steps, id=workflow_id, task_queue=task_queue
    )
    assert await handle.result() == steps
    return workflow_id, handle.result_run_id or handle.first_execution_run_id or ""


def measure_temporal(variant: str, steps: int, server: Any) -> dict[str, Any]:
    from temporalio.api.enums.v1 import EventType

    from beluga_workflows import workflow
    from beluga_workflows.models import WorkflowRun
    from bench.workflows import chain

    task_queue = f"bench-step-cost-{uuid.uuid4().hex[:8]}"
    command = None
    if variant in ("temporal-nomirror", "temporal-sdk"):
        command = [sys.executable, "-m", "bench.temporal_worker", "--concurrency", "1"]
        command += ["--sdk"] if variant == "temporal-sdk" else []
    with common.runworker(
        f"step_cost-{variant}",
        concurrency=1,
        executor="temporal",
        temporal=server,
        task_queue=task_queue,
        command=command,
    ) as worker:
        executor = common.temporal_executor(server, task_queue)
        cpu0 = common.proc_stats(worker.pid)["cpu_s"]
        server_cpu0 = common.proc_stats(server.process.pid)["cpu_s"]
        xid0 = common.cluster_xid()
        began = time.time()
        if variant == "temporal-sdk":
            workflow_id, run_id = executor.call(lambda client: start_sdk(client, steps, task_queue))
        else:
            handle = executor.execute(
                chain, workflow.WorkflowOptions(id=f"bench-chain-{uuid.uuid4()}", input=steps)
            )
            assert handle.result(timeout=7200) == steps
            workflow_id, run_id = handle.id, handle.run_id
        done_at = time.time()
        if command is None:  # let the mirror catch up, so its writes are all counted
            mirrored = WorkflowRun.objects.filter(run_id=run_id, status="completed")
            common.wait_for(mirrored.exists, 300, "mirror of the finished run", every=0.1)
        mirror_lag = time.time() - done_at
        xids = common.cluster_xid() - xid0
        stats = common.proc_stats(worker.pid)
        server_stats = common.proc_stats(server.process.pid)
        events = executor.call(lambda client: common.temporal_events(client, workflow_id, run_id))
        closed = executor._describe(workflow_id, run_id).close_time
    stamps = [t for kind, t in events if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED]
    # How long the worker spent on each workflow task (our interpreter, or the SDK's workflow).
    task_ms = [
        (b[1] - a[1]) * 1000
        for a, b in zip(events, events[1:], strict=False)
        if a[0] == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
        and b[0] == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    window = min(100, len(task_ms) // 2)
    return {
        "variant": variant,
        "steps": steps,
        "total_s": closed.timestamp() - began,
        **step_stats(stamps),
        "worker_cpu_s": stats["cpu_s"] - cpu0,
        "worker_rss_mib": stats["rss_mib"],
        "server_cpu_s": server_stats["cpu_s"] - server_cpu0,
        "workflow_task_first_ms": statistics.mean(task_ms[:window]),
        "workflow_task_last_ms": statistics.mean(task_ms[-window:]),
        "mirror_lag_s": mirror_lag if command is None else None,
        "cluster_write_txns": xids,
    }


def report(rows: list[dict[str, Any]]) -> str:
    steps = rows[0]["steps"]
    window = rows[0]["window"]
    lines = [
        f"{steps:,}-activity workflow, one runworker (concurrency 1); "
        f"first/last = mean over the first/last {window} steps",
        "",
        common.table(
            [
                "executor",
                "total s",
                f"first {window} ms/step (median)",
                f"last {window} ms/step (median)",
                "last/first",
                "worker CPU ms/step",
                "PG write txns (run)",
                "PG write txns (cluster)",
            ],
            [
                [
                    r["variant"],
                    r["total_s"],
                    f"{r['first_ms']:.1f} ({r['first_median_ms']:.1f})",
                    f"{r['last_ms']:.1f} ({r['last_median_ms']:.1f})",
                    r["growth"],
                    r["worker_cpu_s"] * 1000 / steps,
                    r.get("run_write_txns", "–"),
                    r["cluster_write_txns"],
                ]
                for r in rows
            ],
        ),
    ]
    by = {r["variant"]: r for r in rows}
    pairs = [
        ("temporal", "default"),
        ("replay", "default"),
        ("default-reuse", "default"),
        ("temporal-nomirror", "temporal"),
        ("temporal", "temporal-sdk"),
        ("default", "temporal-sdk"),
    ]
    ratio_rows = [
        [
            f"{a} / {b}",
            common.ratio(by[a]["total_s"], by[b]["total_s"]),
            common.ratio(by[a]["first_ms"], by[b]["first_ms"]),
            common.ratio(by[a]["last_ms"], by[b]["last_ms"]),
        ]
        for a, b in pairs
        if a in by and b in by
    ]
    if ratio_rows:
        lines += [
            "",
            common.table(
                ["ratio", "total time", f"first {window} ms/step", f"last {window} ms/step"],
                ratio_rows,
            ),
        ]
    for r in rows:
        if r.get("server_cpu_s") is not None:
            lag = r.get("mirror_lag_s")
            lines.append(
                f"\n{r['variant']}: Temporal dev server CPU {r['server_cpu_s']:.1f}s; workflow "
                f"task (started → completed) {r['workflow_task_first_ms']:.1f} ms over the first "
                f"{window} steps, {r['workflow_task_last_ms']:.1f} ms over the last"
                + (f"; mirror finished {lag:.1f}s after the run" if lag is not None else "")
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"comma-separated, of {', '.join(VARIANTS)} (default {DEFAULT_VARIANTS})",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    common.setup_django()
    common.clean()
    rows = []
    for variant in [v for v in variants if not v.startswith("temporal")]:
        rows.append(measure_default(variant, args.steps))
        print(f"{variant}: {rows[-1]['total_s']:.1f}s", file=sys.stderr, flush=True)
    if any(v.startswith("temporal") for v in variants):
        with common.temporal_server("step_cost") as server:
            for variant in [v for v in variants if v.startswith("temporal")]:
                rows.append(measure_temporal(variant, args.steps, server))
                print(f"{variant}: {rows[-1]['total_s']:.1f}s", file=sys.stderr, flush=True)
    print(report(rows))
    common.save(args.json, rows)


if __name__ == "__main__":
    main()
