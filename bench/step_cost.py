"""Does a step cost more as the history grows? A 1,000-activity workflow, timed per step.

Runs the same workflow twice through a real `runworker` (concurrency 1): with the worker's
cache of live runs (the default) and with ``CACHE_SIZE=0`` (every step replays the whole
history from the database — the O(n²) baseline). Reports the mean step time over the first and
the last 100 steps and their ratio, and the write transactions per run.

    DATABASE_URL=... CELERY_BROKER_URL=... .venv/bin/python -m bench.step_cost [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def write_xid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        return int(cursor.fetchone()[0])


def start_worker(cache_size: int, pool: str = "threads") -> subprocess.Popen[bytes]:
    from django.conf import settings

    env = {
        **os.environ,
        "DATABASE_URL": settings.DATABASE_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "BELUGA_CACHE_SIZE": str(cache_size),
        "PYTHONPATH": str(ROOT),
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    log = open(ROOT / ".data" / f"bench-worker-{cache_size}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runworker",
            "--concurrency",
            "1",
            "--pool",
            pool,
            "-l",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while (
        b"runworker ready" not in (ROOT / ".data" / f"bench-worker-{cache_size}.log").read_bytes()
    ):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("worker did not start")
        time.sleep(0.1)
    return proc


def measure(steps: int, cache_size: int, pool: str = "threads") -> dict[str, float]:
    from beluga_workflows import workflow
    from beluga_workflows.models import WorkflowEvent
    from bench.workflows import chain

    worker = start_worker(cache_size, pool)
    try:
        executor = workflow.new("default")
        before = write_xid()
        began = time.monotonic()
        handle = executor.execute(chain, workflow.WorkflowOptions(input=steps))
        assert handle.result(timeout=3600) == steps
        elapsed = time.monotonic() - began
        transactions = write_xid() - before
    finally:
        worker.terminate()
        worker.wait(30)
    stamps = list(
        WorkflowEvent.objects.filter(run__run_id=handle.run_id, type="ActivityCompleted")
        .order_by("sequence")
        .values_list("timestamp", flat=True)
    )
    gaps = [(b - a).total_seconds() * 1000 for a, b in zip(stamps, stamps[1:], strict=False)]
    window = min(100, len(gaps) // 2)
    first, last = statistics.mean(gaps[:window]), statistics.mean(gaps[-window:])
    return {
        "cache_size": cache_size,
        "total_s": elapsed,
        "first_ms": first,
        "last_ms": last,
        "growth": last / first,
        "write_transactions": transactions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pool", default="threads", choices=["threads", "solo", "prefork"])
    args = parser.parse_args()
    setup_django()
    rows = [measure(args.steps, 256, args.pool), measure(args.steps, 0, args.pool)]
    print(f"{args.steps}-activity workflow, one runworker (concurrency 1)")
    print("cache   total s   first-100 ms/step   last-100 ms/step   last/first   write txns")
    for r in rows:
        print(
            f"{r['cache_size']:>5}   {r['total_s']:7.1f}   {r['first_ms']:17.2f}   "
            f"{r['last_ms']:16.2f}   {r['growth']:10.2f}   {r['write_transactions']:10d}"
        )
    print(f"replay / cache, total time: {rows[1]['total_s'] / rows[0]['total_s']:.1f}x")


if __name__ == "__main__":
    main()
