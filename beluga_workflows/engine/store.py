"""Database access for the engine: locking runs, appending and reading history.

Every write happens with the run's row locked (``SELECT … FOR UPDATE``), so two workers or a
redelivered message can never append the same step twice; the unique ``(run, sequence)``
constraint backs that up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from .. import limits
from ..errors import WorkflowClosedError, WorkflowNotFoundError
from ..history import EventType, HistoryEvent
from ..models import ActivityTask, WorkflowEvent, WorkflowRun
from ..options import Status
from . import eager, locks, sql

logger = logging.getLogger("beluga_workflows")


def lock_run(pk: int, skip_locked: bool = False) -> WorkflowRun | None:
    """Lock a run's row; with ``skip_locked`` return None if someone else holds it."""
    return sql.lock_run(pk, skip_locked)


def lock_running(workflow_id: str, action: str) -> WorkflowRun:
    """The running run with this id, locked; clear errors when there is none.

    A run that continued as new while we waited for its lock is followed to its successor
    (a new statement sees the row its transaction inserted).
    """
    for _ in range(3):
        run = (
            WorkflowRun.objects.select_for_update()
            .filter(workflow_id=workflow_id, status=Status.RUNNING.value)
            .first()
        )
        if run is not None:
            return run
        latest = latest_run(workflow_id)
        if latest.status not in (Status.CONTINUED_AS_NEW.value, Status.RUNNING.value):
            break
    raise WorkflowClosedError(workflow_id, latest.status, action)


def latest_run(workflow_id: str) -> WorkflowRun:
    """The running run with this id, else the most recent one."""
    run = WorkflowRun.objects.filter(workflow_id=workflow_id).order_by("-created_at", "-id").first()
    running = WorkflowRun.objects.filter(
        workflow_id=workflow_id, status=Status.RUNNING.value
    ).first()
    if running is not None:
        return running
    if run is None:
        raise WorkflowNotFoundError(workflow_id)
    return run


T = TypeVar("T")


def with_reconnect(
    fn: Callable[..., T],
    *args: Any,
    patience: float = 0.0,
    on_reconnect: Callable[[], None] | None = None,
    **kwargs: Any,
) -> T:
    """Run one of the engine's transactions; if the database connection died (a restart, a
    terminated backend, an idle timeout), reconnect and run it once more — and with
    ``patience``, keep trying for that many seconds while the database is away, calling
    ``on_reconnect`` before each try.

    Safe for every engine write: each checks the run's state under its lock, so a write that
    did commit before the connection died is recognised (stale) and not recorded twice — and
    an activity's outcome is not lost with the connection. The advisory locks of the old
    session died with it.
    """
    deadline = time.monotonic() + patience
    delay = 0.0
    while True:
        before = connection.connection
        try:
            return fn(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            if transaction.get_connection().in_atomic_block:
                raise  # inside a caller's transaction: the caller decides
            if not connection_lost(exc, before):
                # The database answered and refused (a statement timeout, a limit): the same
                # write would meet the same error again. The caller records the failure.
                raise
            if delay and time.monotonic() + delay > deadline:
                raise
            if not delay:
                logger.warning("Lost the database connection; reconnecting", exc_info=True)
            connection.close()
            locks.forget()
            time.sleep(delay)
            delay = min(max(delay * 2, 0.1), 0.5)
            if on_reconnect is not None:
                on_reconnect()


#: SQLSTATEs of a connection that is gone: class 08 (connection exception), and the server
#: shutting down or terminating the backend (57P01-57P03).
_LOST_STATES = ("57P01", "57P02", "57P03")


def connection_lost(error: BaseException, before: Any) -> bool:
    """After ``error``: whether the database connection is gone (a restart, a terminated
    backend, an idle timeout) rather than the database refusing one statement on a connection
    that works (a statement timeout, a limit, a trigger). ``before`` is the driver connection
    the failed work started on (None if it had none yet).

    The server says which with a SQLSTATE. An error without one comes from the driver: the
    connection broke (or was replaced since) — or it refused to send what it was given, on a
    connection that is still the same and still open."""
    cause = error.__cause__ if error.__cause__ is not None else error
    state = getattr(cause, "sqlstate", None)
    if state:
        return state.startswith("08") or state in _LOST_STATES
    raw = connection.connection
    return before is None or raw is not before or bool(getattr(raw, "closed", True))


def to_event(row: WorkflowEvent) -> HistoryEvent:
    return HistoryEvent(
        sequence=row.sequence,
        type=EventType(row.type),
        timestamp=row.timestamp,
        step=row.step,
        name=row.name,
        attempt=row.attempt,
        data=row.data,
    )


def load_history(run_pk: int, after: int = 0) -> list[HistoryEvent]:
    rows = WorkflowEvent.objects.filter(run_id=run_pk, sequence__gt=after).order_by("sequence")
    return [to_event(row) for row in rows]


class Appender:
    """Appends events (and activity tasks) to a locked run inside the current transaction.

    Rows are written in one go by :meth:`flush` — one ``INSERT`` for the events of a step,
    one for its activity tasks — which every writer calls before it saves the run row, and
    which a reader of the run's history in the same transaction calls first.
    """

    def __init__(self, run: WorkflowRun) -> None:
        assert transaction.get_connection().in_atomic_block, "append inside transaction.atomic"
        self.run = run
        self.added: list[HistoryEvent] = []
        self._events: list[HistoryEvent] = []
        self._tasks: list[tuple[ActivityTask, Callable[[ActivityTask], None]]] = []
        #: Set when the run closes: the save also cancels its open tasks and timers.
        self.closing = False

    def append(
        self,
        type: EventType,
        *,
        step: int | None = None,
        name: str = "",
        attempt: int = 0,
        data: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> HistoryEvent:
        self.run.last_sequence += 1
        self.run.history_bytes += limits.event_size(data or {})
        event = HistoryEvent(
            sequence=self.run.last_sequence,
            type=type,
            timestamp=timestamp or timezone.now(),
            step=step,
            name=name,
            attempt=attempt,
            data=data or {},
        )
        self._events.append(event)
        self.added.append(event)
        return event

    def add_task(self, task: ActivityTask, then: Callable[[ActivityTask], None]) -> None:
        """An activity task row to insert; ``then(task)`` once it has its primary key."""
        self._tasks.append((task, then))

    def flush(self) -> None:
        """Write the events and tasks appended so far."""
        self.save(())

    def save(self, fields: Iterable[str]) -> bool:
        """Write the events and tasks appended so far and the run row's ``fields`` (with
        ``last_sequence``), in one round trip. For a closing run, True when it has running
        children to cancel."""
        events, tasks = self._events, self._tasks
        self._events, self._tasks = [], []
        fields = list(fields)
        if fields:
            fields = [*dict.fromkeys([*fields, "last_sequence", "history_bytes"])]
        closing, self.closing = self.closing and bool(fields), self.closing and not fields
        claim = locks.SPACE if tasks and eager.reserve() else None
        rows = [task for task, _ in tasks]
        children = sql.write(self.run, events, rows, fields, closing, claim)
        for task, then in tasks:
            if getattr(task, "locked", None):
                locks.taken()
            then(task)
        return children
