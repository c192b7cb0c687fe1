"""Workers announce themselves: heartbeat rows, the thread that writes them, and which runs
wait on work that no live worker serves (``no_worker``).

Every ``runworker`` (either executor) keeps one :class:`~.models.WorkerHeartbeat` row: inserted
at start, its ``last_beat`` refreshed every ``HEARTBEAT_INTERVAL`` seconds by a thread
(:class:`Heartbeat`), deleted on a clean shutdown. A worker is **live** while its last beat is
at most :data:`LIVE_BEATS` intervals old, measured with the database's clock on both sides, so
hosts whose clocks disagree still agree on who is live. A row left by a worker that died is
shown as not live, and deleted by the live workers after :data:`FORGET_AFTER`.

A running run is flagged ``no_worker`` (:func:`unserved`) when:

* built-in engine: it has pending work — a workflow step (``advance_requested_at``), an
  activity attempt, or a timer that is due — and no live ``default`` worker takes work from
  that queue (``WORKFLOW_QUEUE``; the activity's own queue, ``ACTIVITY_QUEUE`` by default) or,
  for a due timer or a run held for a fix, runs the sweeper;
* Temporal (a mirrored run): no live ``temporal`` worker polls the run's task queue.

Workers started another way than ``runworker`` (``celery worker`` by hand) do not announce
themselves, and their runs are flagged although they progress.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import close_old_connections, connections
from django.db.models.functions import Now
from django.utils import timezone

from .conf import beluga_settings
from .models import ActivityTask, Timer, WorkerHeartbeat, WorkflowEvent, WorkflowRun
from .options import Status

logger = logging.getLogger("beluga_workflows")

#: A worker is live while its last beat is at most this many of its intervals old.
LIVE_BEATS = 3
#: Rows of workers silent this long (or 10 of their intervals, if longer) are deleted.
FORGET_AFTER = timedelta(minutes=15)
#: Seconds a process reuses what it read of the heartbeat table (lists, describe).
CACHE_SECONDS = 1.0
#: Beats between two clean-ups of dead workers' rows.
FORGET_EVERY = 10


@dataclass(frozen=True)
class WorkerStatus:
    """One worker's row, with whether it is live now."""

    host: str
    pid: int
    executor: str
    queues: tuple[str, ...]
    concurrency: int
    pool: str
    sweeper: bool
    interval: float
    started_at: datetime
    last_beat: datetime
    #: Seconds since its last beat, by the database's clock.
    age: float
    live: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "executor": self.executor,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "pool": self.pool,
            "sweeper": self.sweeper,
            "interval": self.interval,
            "started_at": self.started_at.isoformat(),
            "last_beat": self.last_beat.isoformat(),
            "live": self.live,
        }


def status_of(row: WorkerHeartbeat, now: datetime) -> WorkerStatus:
    """``row`` as a :class:`WorkerStatus`, ``now`` being the database's time."""
    age = max(0.0, (now - row.last_beat).total_seconds())
    return WorkerStatus(
        host=row.host,
        pid=row.pid,
        executor=row.executor,
        queues=tuple(str(q) for q in row.queues or ()),
        concurrency=row.concurrency,
        pool=row.pool,
        sweeper=row.sweeper,
        interval=row.interval,
        started_at=row.started_at,
        last_beat=row.last_beat,
        age=age,
        live=age <= LIVE_BEATS * row.interval,
    )


def with_database_time(queryset: Any) -> Any:
    """The rows, each with ``db_now``: the database's time when it read them."""
    return queryset.annotate(db_now=Now())


_cache: tuple[float, list[WorkerStatus]] | None = None


def workers(fresh: bool = False) -> list[WorkerStatus]:
    """Every worker that has a row, live or not: one query, reused for ``CACHE_SECONDS``."""
    global _cache
    cached = _cache
    if not fresh and cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    rows = with_database_time(WorkerHeartbeat.objects.all())
    found = [status_of(row, row.db_now) for row in rows]
    found.sort(key=lambda w: (not w.live, w.executor, w.host, w.pid))
    _cache = (time.monotonic(), found)
    return found


def clear_cache() -> None:
    global _cache
    _cache = None


def live_queues(executor: str) -> set[str]:
    """The queues live workers of ``executor`` take work from."""
    return {q for w in workers() if w.live and w.executor == executor for q in w.queues}


# Which runs wait on work nobody serves.


def unserved(runs: Iterable[WorkflowRun]) -> set[int]:
    """The pks of the running ``runs`` whose pending work no live worker serves.

    At most four queries whatever the number of runs: the workers (cached), the runs' first
    events (which tells mirrored Temporal runs and their task queue), and for built-in runs
    their open attempts (only those on a queue of their own while ``ACTIVITY_QUEUE`` is served)
    and, only when no live worker sweeps, their due timers.
    """
    running = {run.pk: run for run in runs if run.status == Status.RUNNING.value}
    if not running:
        return set()
    started = WorkflowEvent.objects.filter(run_id__in=list(running), sequence=1)
    temporal_queues = dict(started.values_list("run_id", "data__temporal__task_queue"))
    flagged: set[int] = set()
    builtin = []
    for pk, run in running.items():
        task_queue = temporal_queues.get(pk)
        if task_queue is not None:  # mirrored from Temporal
            if task_queue not in live_queues("temporal"):
                flagged.add(pk)
        else:
            builtin.append(run)
    if builtin:
        flagged |= _unserved_builtin(builtin)
    return flagged


def _unserved_builtin(runs: list[WorkflowRun]) -> set[int]:
    queues = live_queues("default")
    sweeping = any(w.live and w.executor == "default" and w.sweeper for w in workers())
    flagged = set()
    if beluga_settings.WORKFLOW_QUEUE not in queues:
        flagged |= {run.pk for run in runs if run.advance_requested_at is not None}
    pks = [run.pk for run in runs if run.pk not in flagged]
    if pks:
        # An attempt waits on its own queue (``with_activity_queue``), else ACTIVITY_QUEUE.
        open_tasks = ActivityTask.objects.filter(run_id__in=pks, state=ActivityTask.State.SCHEDULED)
        if beluga_settings.ACTIVITY_QUEUE in queues:
            open_tasks = open_tasks.filter(options__has_key="queue")
        flagged |= {
            run_id
            for run_id, queue in open_tasks.values_list("run_id", "options__queue")
            if (queue or beluga_settings.ACTIVITY_QUEUE) not in queues
        }
    pks = [pk for pk in pks if pk not in flagged]
    if not sweeping:  # a held run is tried again by the sweeper (engine.holds)
        flagged |= {run.pk for run in runs if run.pk in pks and run.held_retry_at is not None}
        pks = [pk for pk in pks if pk not in flagged]
    if pks and not sweeping:
        flagged |= set(
            Timer.objects.filter(
                run_id__in=pks, state=Timer.State.PENDING, fire_at__lte=timezone.now()
            ).values_list("run_id", flat=True)
        )
    return flagged


def serves_task_queue(task_queue: str) -> bool:
    """Whether a live Temporal worker polls ``task_queue`` (for Temporal's ``describe``)."""
    return task_queue in live_queues("temporal")


# The worker's side.


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker announces about itself."""

    executor: str
    queues: tuple[str, ...]
    concurrency: int
    pool: str = ""
    sweeper: bool = False
    host: str = ""
    pid: int = 0


class Heartbeat(threading.Thread):
    """Keeps this worker's row fresh; deletes it when stopped.

    A beat that fails (the database away) is tried again on the next one; the worker looks
    dead meanwhile, which is true as far as the database can tell. A row deleted while this
    worker was silent (taken for dead) is inserted again.
    """

    def __init__(self, info: WorkerInfo, interval: float) -> None:
        super().__init__(name="beluga-heartbeat", daemon=True)
        self.info = info
        self.interval = interval
        self.stopping = threading.Event()
        self.pk: int | None = None
        self.started_at = timezone.now()

    def run(self) -> None:
        failing = False
        beats = 0
        while not self.stopping.is_set():
            try:
                close_old_connections()
                self.beat()
                if beats % FORGET_EVERY == 0:
                    forget_dead()
                beats += 1
                failing = False
            except Exception:  # a database restart must not stop the beats
                if not failing:
                    logger.warning("Heartbeat failed; retrying every %ss", self.interval)
                failing = True
            self.stopping.wait(self.interval)
        try:
            if self.pk is not None:
                WorkerHeartbeat.objects.filter(pk=self.pk).delete()
        except Exception:  # it will be taken for dead, then forgotten
            logger.warning("Could not delete this worker's heartbeat row", exc_info=True)
        finally:
            connections.close_all()  # this thread's own

    def beat(self) -> None:
        if self.pk is not None and WorkerHeartbeat.objects.filter(pk=self.pk).update(
            last_beat=Now()
        ):
            return
        info = self.info
        self.pk = WorkerHeartbeat.objects.create(
            host=info.host or socket.gethostname(),
            pid=info.pid or os.getpid(),
            executor=info.executor,
            queues=list(info.queues),
            concurrency=info.concurrency,
            pool=info.pool,
            sweeper=info.sweeper,
            interval=self.interval,
            started_at=self.started_at,
            last_beat=Now(),
        ).pk

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.join(timeout)


def forget_dead() -> int:
    """Delete the rows of workers silent for ``FORGET_AFTER`` (or 10 of their intervals)."""
    dead = [
        row.pk
        for row in with_database_time(WorkerHeartbeat.objects.all())
        if (row.db_now - row.last_beat).total_seconds()
        > max(FORGET_AFTER.total_seconds(), 10 * row.interval)
    ]
    if not dead:
        return 0
    return WorkerHeartbeat.objects.filter(pk__in=dead).delete()[0]


@contextmanager
def announced(info: WorkerInfo) -> Iterator[Heartbeat]:
    """Beat for the worker while the block runs; its row is gone after a clean exit."""
    heartbeat = Heartbeat(info, float(beluga_settings.HEARTBEAT_INTERVAL))
    heartbeat.start()
    try:
        yield heartbeat
    finally:
        heartbeat.stop()
