"""Many runs parked on a signal: what do they cost a worker?

Starts K runs of ``bench_parked`` (each waits for a ``go`` signal), lets one `runworker`
(concurrency 2) take their first step, and reports the worker's resident memory, the threads
it holds, and the throughput of starting, parking and releasing them. A parked run should cost
rows, not threads: memory must stay flat as K grows, because at most ``CACHE_SIZE`` runs are
kept live.

    DATABASE_URL=... CELERY_BROKER_URL=... .venv/bin/python -m bench.parked --runs 10000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.step_cost import setup_django, start_worker


def tree_stats(pid: int) -> tuple[float, int]:
    """Resident MiB and thread count of a process and its children."""
    rss_kib, threads = 0, 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kib += int(line.split()[1])
            elif line.startswith("Threads:"):
                threads += int(line.split()[1])
    return rss_kib / 1024, threads


def wait_all(predicate, timeout: float) -> float:
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise TimeoutError("benchmark runs did not get there in time")
        time.sleep(0.5)
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10000)
    args = parser.parse_args()
    setup_django()
    from beluga_workflows import workflow
    from beluga_workflows.models import WorkflowRun
    from bench.workflows import parked

    WorkflowRun.objects.filter(workflow_name="bench_parked").delete()
    worker = start_worker(256)
    try:
        idle_mib, idle_threads = tree_stats(worker.pid)
        executor = workflow.new("default")
        began = time.monotonic()
        ids = [
            executor.execute(parked, workflow.WorkflowOptions(id=f"parked-{i}")).id
            for i in range(args.runs)
        ]
        started_s = time.monotonic() - began
        runs = WorkflowRun.objects.filter(workflow_name="bench_parked")
        parked_s = wait_all(lambda: runs.filter(waiting_for="signal:go").count() == args.runs, 3600)
        parked_mib, parked_threads = tree_stats(worker.pid)
        began = time.monotonic()
        for workflow_id in ids:
            executor.signal(workflow_id, workflow.Signal("go", True))
        wait_all(lambda: runs.filter(status="completed").count() == args.runs, 3600)
        total_release = time.monotonic() - began
    finally:
        worker.terminate()
        worker.wait(30)
    print(f"{args.runs} runs parked on a signal, one runworker (concurrency 2, CACHE_SIZE 256)")
    print(f"worker idle:            {idle_mib:7.1f} MiB, {idle_threads} threads")
    print(f"worker with runs parked:{parked_mib:7.1f} MiB, {parked_threads} threads")
    print(f"start {args.runs / started_s:7.0f} runs/s; all parked {parked_s:.1f}s later")
    print(f"signal + finish all: {total_release:.1f}s ({args.runs / total_release:.0f} runs/s)")


if __name__ == "__main__":
    main()
