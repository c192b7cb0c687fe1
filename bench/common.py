"""What the benchmarks share: Django setup, `runworker` and Temporal dev-server processes,
process memory and thread counts, write-transaction counters, and table printing.

Every benchmark drives real processes: one ``manage.py runworker`` subprocess (the built-in
engine on Celery + PostgreSQL, or, with ``BELUGA_EXECUTOR=temporal``, a Temporal worker) and,
for the Temporal peer, a ``temporal server start-dev`` this module starts on free ports and
stops again. The benchmark process itself is the client: it starts, signals and waits on runs
through the public ``workflow.new(...)`` executors, as an application would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".data" / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import TemporalDevServer, WorkerProcess, run_writers  # noqa: E402,F401

#: Workflow names of the benchmark workflows; their rows are deleted before each benchmark.
BENCH_PREFIX = "bench_"
#: Worker environment of the ``default-reuse`` diagnostic: database connections kept across
#: Celery tasks (see ``bench/settings_reuse.py``).
REUSE_ENV = {"DJANGO_CONN_MAX_AGE": "300", "DJANGO_SETTINGS_MODULE": "bench.settings_reuse"}


def setup_django() -> None:
    """Configure Django from the environment (``DATABASE_URL``, ``CELERY_BROKER_URL``) and
    migrate. Without those variables the demo settings start the embedded services instead."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + secrets.token_urlsafe(48))
    os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    LOGS.mkdir(parents=True, exist_ok=True)


def services() -> dict[str, str]:
    """The database and broker URLs this process (and its workers) use, for the report."""
    from django.conf import settings

    return {"database": settings.DATABASE_URL, "broker": settings.CELERY_BROKER_URL}


def clean() -> None:
    """Delete the rows of earlier benchmark runs (raw SQL: the ORM's cascade is too slow for
    100,000 runs) and empty the engine's Celery queues."""
    from django.db import connection

    from project.celery import app
    from tests.harness import purge_broker

    runs = "SELECT id FROM beluga_workflows_workflowrun WHERE workflow_name LIKE %s"
    with connection.cursor() as cursor:
        for table in ("workflowevent", "activitytask", "timer"):
            cursor.execute(
                f"DELETE FROM beluga_workflows_{table} WHERE run_id IN ({runs})",
                [BENCH_PREFIX + "%"],
            )
        cursor.execute(
            "DELETE FROM beluga_workflows_workflowrun WHERE workflow_name LIKE %s",
            [BENCH_PREFIX + "%"],
        )
        cursor.execute("VACUUM ANALYZE beluga_workflows_workflowrun")
        cursor.execute("VACUUM ANALYZE beluga_workflows_workflowevent")
        cursor.execute("VACUUM ANALYZE beluga_workflows_activitytask")
    purge_broker(app)


# -- processes -----------------------------------------------------------------------------


@contextlib.contextmanager
def temporal_server(name: str) -> Iterator[TemporalDevServer]:
    """A Temporal dev server (in-memory SQLite, headless) on a free port, stopped afterwards."""
    server = TemporalDevServer(LOGS / f"{name}-temporal-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def runworker(
    name: str,
    *,
    concurrency: int,
    executor: str = "default",
    temporal: TemporalDevServer | None = None,
    task_queue: str = "",
    env: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[WorkerProcess]:
    """One ``manage.py runworker --concurrency N`` (or ``command``), ready when yielded,
    stopped with SIGTERM afterwards. Logs go to ``.data/bench/<name>.log``."""
    from django.conf import settings

    worker_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": settings.DATABASE_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "BELUGA_EXECUTOR": executor,
        "DJANGO_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    if temporal is not None:
        worker_env["BELUGA_TEMPORAL_HOST"] = temporal.address
        worker_env["BELUGA_TEMPORAL_TASK_QUEUE"] = task_queue
    worker_env.update(env or {})
    log = LOGS / f"{name}.log"
    log.unlink(missing_ok=True)
    process = WorkerProcess(worker_env, log, concurrency=concurrency, args=("-l", "WARNING", *args))
    if command is not None:
        process.command = list(command)
    process.start().wait_ready(120)
    try:
        yield process
    finally:
        process.stop(60)


def temporal_executor(server: TemporalDevServer, task_queue: str) -> Any:
    """Our Temporal executor on ``server`` and ``task_queue``, whatever the settings say."""
    from beluga_workflows import workflow

    extra = {"host": server.address, "namespace": "default", "task_queue": task_queue}
    return workflow.new("temporal", workflow.Config(extra=extra))


# -- measurements --------------------------------------------------------------------------


def proc_stats(pid: int) -> dict[str, float]:
    """Resident memory (MiB), its peak so far (MiB), threads and CPU seconds (user + system)
    of a process and its children."""
    rss_kib = hwm_kib = threads = ticks = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "VmRSS":
                    rss_kib += int(value.split()[0])
                elif key == "VmHWM":
                    hwm_kib += int(value.split()[0])
                elif key == "Threads":
                    threads += int(value.split()[0])
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return {
        "rss_mib": rss_kib / 1024,
        "peak_mib": hwm_kib / 1024,
        "threads": threads,
        "cpu_s": ticks / os.sysconf("SC_CLK_TCK"),
    }


def named_cpu(name: str) -> float:
    """CPU seconds (user + system, with reaped children) of every process named ``name``
    (e.g. all PostgreSQL backends), for CPU-per-run figures while a benchmark runs alone."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() != name:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def in_parallel(fn: Callable[[int], Any], count: int, clients: int) -> list[Any]:
    """``[fn(i) for i in range(count)]`` from ``clients`` threads, each with its own database
    connection (closed at the end), as several web processes would call the executor."""
    from django.db import connections

    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def client(offset: int) -> None:
        try:
            for i in range(offset, count, clients):
                results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def cluster_xid() -> int:
    """The cluster's next transaction id. Its delta counts every write transaction in the
    whole PostgreSQL cluster, so it only means something while the benchmark runs alone."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        return int(cursor.fetchone()[0])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> float:
    """Poll until ``predicate()``; return the seconds it took."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f}s")
        time.sleep(every)
    return time.monotonic() - began


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


# -- Temporal reads ------------------------------------------------------------------------


async def temporal_events(client: Any, workflow_id: str, run_id: str) -> list[tuple[int, float]]:
    """``(event type, epoch time)`` of every Temporal history event of one run."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    return [
        (event.event_type, event.event_time.ToDatetime().timestamp())
        async for event in handle.fetch_history_events()
    ]


async def temporal_list(client: Any, query: str) -> list[Any]:
    """Visibility records (``WorkflowExecution``) matching ``query``."""
    return [execution async for execution in client.list_workflows(query, page_size=1000)]


async def temporal_count(client: Any, query: str) -> int:
    return int((await client.count_workflows(query)).count)


# -- output --------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pasted into bench/README.md as it is)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            digits = 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
            return f"{value:,.{digits}f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save(path: str | None, results: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(results, indent=2, default=str) + "\n")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def executor_names(parser: Any, value: str, known: Sequence[str]) -> list[str]:
    """The comma-separated ``--executors`` value, checked against what a benchmark knows."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if unknown := set(names) - set(known):
        parser.error(f"unknown executors: {', '.join(sorted(unknown))}")
    return names
