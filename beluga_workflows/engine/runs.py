"""Starting, signalling and cancelling runs: the engine's entry points for clients.

REST views, admin actions, the CLI and the default executor call these; none of them writes
run or event rows itself.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import registry
from ..errors import WorkflowAlreadyStartedError
from ..history import EventType
from ..models import ActivityTask, Timer, WorkflowRun
from ..options import Signal, Status
from ..serialization import ensure_json
from . import dispatch
from .store import Appender, lock_running


def start(
    workflow_name: str,
    reference: str,
    workflow_id: str | None = None,
    input: Any = None,
    timeout: timedelta | None = None,
) -> WorkflowRun:
    """Create a run and ask a worker to take its first step."""
    registry.resolve(workflow_name, reference)  # fail here, not in a worker, on a bad name
    ensure_json(input, f"Input of workflow {workflow_name!r}")
    workflow_id = workflow_id or str(uuid.uuid4())
    now = timezone.now()
    try:
        with transaction.atomic():
            if WorkflowRun.objects.filter(
                workflow_id=workflow_id, status=Status.RUNNING.value
            ).exists():
                raise WorkflowAlreadyStartedError(workflow_id)
            run = WorkflowRun.objects.create(
                workflow_id=workflow_id,
                workflow_name=workflow_name,
                workflow_reference=reference,
                input=input,
                timeout_seconds=timeout.total_seconds() if timeout else None,
                advance_requested_at=now,
            )
            Appender(run).append(
                EventType.WORKFLOW_STARTED,
                name=workflow_name,
                data={"input": input, "timeout": run.timeout_seconds},
                timestamp=now,
            )
            if timeout:
                Timer.objects.create(
                    run=run, kind=Timer.Kind.WORKFLOW_TIMEOUT, fire_at=now + timeout
                )
            run.save(update_fields=["last_sequence"])
            dispatch.advance(run.pk)
    except IntegrityError as exc:  # lost the race to another start with the same id
        if "beluga_one_running_run_per_id" in str(exc):
            raise WorkflowAlreadyStartedError(workflow_id) from exc
        raise
    return run


def signal(workflow_id: str, sig: Signal) -> WorkflowRun:
    """Record a signal in the run's history (its durable inbox) and nudge a worker."""
    if not isinstance(sig.name, str) or not sig.name:
        raise ValueError("A signal needs a non-empty name.")
    ensure_json(sig.payload, f"Payload of signal {sig.name!r}")
    with transaction.atomic():
        run = lock_running(workflow_id, f"signal {sig.name!r} to")
        Appender(run).append(
            EventType.SIGNAL_RECEIVED,
            name=sig.name,
            data={"payload": sig.payload, "sender": sig.sender},
        )
        request_advance(run)
    return run


def cancel(workflow_id: str, sender: str | None = None) -> WorkflowRun:
    """Ask the run to stop: its current wait raises ``WorkflowCanceledError``.

    Asking twice is harmless; the second request records nothing.
    """
    with transaction.atomic():
        run = lock_running(workflow_id, "cancel")
        if run.events.filter(type=EventType.CANCEL_REQUESTED.value).exists():
            return run
        Appender(run).append(EventType.CANCEL_REQUESTED, data={"sender": sender})
        # The pending step is over for the workflow: late results and timers are stale.
        ActivityTask.objects.filter(run=run, state=ActivityTask.State.SCHEDULED).update(
            state=ActivityTask.State.CANCELED
        )
        Timer.objects.filter(run=run, state=Timer.State.PENDING).exclude(
            kind=Timer.Kind.WORKFLOW_TIMEOUT
        ).update(state=Timer.State.CANCELED)
        request_advance(run)
    return run


def request_advance(run: WorkflowRun) -> None:
    run.advance_requested_at = timezone.now()
    run.save(update_fields=["last_sequence", "advance_requested_at", "updated_at"])
    dispatch.advance(run.pk)
