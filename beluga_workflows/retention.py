"""Retention: deleting closed runs, with every row they own, once they are old enough.

``manage.py workflow prune --older-than 30d`` calls :func:`prune`; with
``BELUGA_WORKFLOWS["RETENTION"]`` set, every ``runworker`` also runs :class:`RetentionLoop`.
It lives at the top of the package, not in :mod:`.engine`, because it serves both executors:
on Temporal it deletes our mirror's copies only, and Temporal's own histories follow the
namespace's retention period.

What may go — a run that is

* closed (any status but ``running``), and closed before the cutoff (``closed_at``; a run
  closed through a store's ``save`` has none, and its last update stands in);
* not the parent of a child that is still running, or that has yet to hand its outcome over:
  the child still points at it;
* not the child of a running parent: a running parent's page lists its children;
* in a continue-as-new chain, judged by its own close time. The earlier runs of a chain that
  goes on are deleted while it runs (keeping history bounded is what continue-as-new is for);
  the run that continued one loses its ``continued_from`` link, nothing else.

Running runs are never touched: the status is part of the query that locks the rows to
delete, and a closed run never runs again (a new run of the same id is a new row). Each batch
of at most :data:`BATCH` runs is one short transaction that skips rows another process holds
(``FOR UPDATE SKIP LOCKED``), so a large prune never holds long locks and is safe while
workers run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import close_old_connections, connection, connections, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from .conf import retention
from .models import ActivityTask, Timer, WorkflowEvent, WorkflowRun
from .options import Status

logger = logging.getLogger("beluga_workflows")

#: Runs deleted per transaction.
BATCH = 500
#: Every status a run ends with: what ``--status`` may name.
CLOSED = tuple(status for status in Status if status.is_closed)
#: Seconds between two passes of a worker's retention loop, and between two full batches.
EVERY = 300.0
PAUSE = 1.0
#: The advisory lock (two-key form, apart from the engine's one-key locks) that lets one
#: worker at a time prune.
LOCK = (0x4245, 0x5245)


@dataclass
class Pruned:
    """What a prune deleted (or, in a dry run, would delete)."""

    runs: int = 0
    events: int = 0
    activity_tasks: int = 0
    timers: int = 0
    batches: int = 0

    def __iadd__(self, other: Pruned) -> Pruned:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)
        return self

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def statuses(names: Iterable[str]) -> tuple[Status, ...]:
    """The closed statuses named; a ValueError naming any that is not one."""
    chosen = []
    for name in names:
        try:
            status = Status(name.strip())
        except ValueError:
            status = None
        if status is None or not status.is_closed:
            raise ValueError(
                f"{name.strip()!r} is not a closed status; use any of "
                f"{', '.join(s.value for s in CLOSED)} (running runs are never deleted)."
            )
        chosen.append(status)
    return tuple(dict.fromkeys(chosen)) or CLOSED


def prunable(cutoff: datetime, only: Iterable[Status] = CLOSED) -> QuerySet[WorkflowRun]:
    """Closed runs of the given statuses, closed before ``cutoff``, that may be deleted."""
    names = [Status(s).value for s in only if Status(s).is_closed]
    held_by_child = WorkflowRun.objects.filter(parent=OuterRef("pk")).filter(
        Q(status=Status.RUNNING.value) | Q(notify_parent=True)
    )
    running_parent = WorkflowRun.objects.filter(
        pk=OuterRef("parent_id"), status=Status.RUNNING.value
    )
    return (
        WorkflowRun.objects.alias(closed=Coalesce("closed_at", "updated_at"))
        .filter(status__in=names, closed__lt=cutoff, notify_parent=False)
        .exclude(status=Status.RUNNING.value)  # the index's condition, for the planner
        .exclude(Exists(held_by_child))
        .exclude(Exists(running_parent))
    )


def prune_batch(
    cutoff: datetime,
    only: Iterable[Status] = CLOSED,
    batch_size: int = BATCH,
    exclusive: bool = False,
) -> Pruned | None:
    """Delete at most ``batch_size`` prunable runs and their rows, in one transaction.

    ``exclusive``: only if no other process is pruning with ``exclusive`` (PostgreSQL's
    advisory lock); None when one is.
    """
    with transaction.atomic():
        if exclusive and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", LOCK)
                if not cursor.fetchone()[0]:
                    return None
        pks = list(
            prunable(cutoff, only)
            .order_by("closed")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:batch_size]
        )
        if not pks:
            return Pruned()
        # Django's collector deletes the events, attempts and timers, and unlinks the
        # children and continuations that stay; `only("pk")` keeps payloads out of memory.
        _, deleted = WorkflowRun.objects.filter(pk__in=pks).only("pk").delete()
    return Pruned(
        runs=deleted.get(WorkflowRun._meta.label, 0),
        events=deleted.get(WorkflowEvent._meta.label, 0),
        activity_tasks=deleted.get(ActivityTask._meta.label, 0),
        timers=deleted.get(Timer._meta.label, 0),
        batches=1,
    )


def prune(cutoff: datetime, only: Iterable[Status] = CLOSED, batch_size: int = BATCH) -> Pruned:
    """Delete every prunable run, a batch (one transaction) at a time."""
    if batch_size < 1:
        raise ValueError("The batch size must be at least 1.")
    only = tuple(only)
    total = Pruned()
    while True:
        done = prune_batch(cutoff, only, batch_size)
        assert done is not None  # not exclusive: never refused
        total += done
        if done.runs < batch_size:  # the last one (or rows others hold: the next prune's)
            return total


def count(cutoff: datetime, only: Iterable[Status] = CLOSED) -> Pruned:
    """What :func:`prune` would delete now (a dry run)."""
    runs = prunable(cutoff, tuple(only))
    return Pruned(
        runs=runs.count(),
        events=WorkflowEvent.objects.filter(run__in=runs).count(),
        activity_tasks=ActivityTask.objects.filter(run__in=runs).count(),
        timers=Timer.objects.filter(run__in=runs).count(),
    )


class RetentionLoop(threading.Thread):
    """A ``runworker`` thread: one batch at start and every :data:`EVERY` seconds, the next
    one sooner while batches come back full. One worker at a time prunes (advisory lock)."""

    def __init__(self, period: timedelta, every: float = EVERY) -> None:
        super().__init__(name="beluga-retention", daemon=True)
        self.period = period
        self.every = every
        self.stopping = threading.Event()

    def run(self) -> None:
        delay = 0.0
        while not self.stopping.wait(delay):
            delay = self.every
            try:
                close_old_connections()
                cutoff = timezone.now() - self.period
                done = prune_batch(cutoff, exclusive=True)
                if done is not None and done.runs:
                    logger.info(
                        "Retention: deleted %s runs closed before %s (%s events)",
                        done.runs,
                        cutoff.isoformat(timespec="seconds"),
                        done.events,
                    )
                    if done.runs >= BATCH:
                        delay = PAUSE
            except Exception:  # the database away: try again on the next pass
                logger.warning("Retention pass failed; retrying in %ss", delay, exc_info=True)
            finally:
                close_old_connections()
        connections.close_all()  # this thread's own

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.join(timeout)


@contextmanager
def pruning() -> Iterator[Any]:
    """Run :class:`RetentionLoop` while the block runs, if ``RETENTION`` is set."""
    period = retention()
    loop = RetentionLoop(period) if period else None
    if loop is not None:
        loop.start()
    try:
        yield loop
    finally:
        if loop is not None:
            loop.stop()
