"""Database access for the engine: locking runs, appending and reading history.

Every write happens with the run's row locked (``SELECT … FOR UPDATE``), so two workers or a
redelivered message can never append the same step twice; the unique ``(run, sequence)``
constraint backs that up.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from ..errors import WorkflowClosedError, WorkflowNotFoundError
from ..history import EventType, HistoryEvent
from ..models import WorkflowEvent, WorkflowRun
from ..options import Status


def lock_run(pk: int, skip_locked: bool = False) -> WorkflowRun | None:
    """Lock a run's row; with ``skip_locked`` return None if someone else holds it."""
    return WorkflowRun.objects.select_for_update(skip_locked=skip_locked).filter(pk=pk).first()


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
        if latest.status != Status.CONTINUED_AS_NEW.value:
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
    """Appends events to a locked run inside the current transaction."""

    def __init__(self, run: WorkflowRun) -> None:
        assert transaction.get_connection().in_atomic_block, "append inside transaction.atomic"
        self.run = run
        self.added: list[HistoryEvent] = []

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
        row = WorkflowEvent.objects.create(
            run=self.run,
            sequence=self.run.last_sequence,
            type=type.value,
            step=step,
            name=name,
            attempt=attempt,
            data=data or {},
            timestamp=timestamp or timezone.now(),
        )
        event = to_event(row)
        self.added.append(event)
        return event

    def extend(self, events: Iterable[HistoryEvent]) -> None:
        self.added.extend(events)
