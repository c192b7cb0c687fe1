"""Starting, signalling and cancelling runs: the engine's entry points for clients.

REST views, admin actions, the CLI and the default executor call these; none of them writes
run or event rows itself. The workflow steps call them too — a parent starts its children,
signals them and cancels them inside its own transaction. Locks are always taken parent first,
then child (a child's close reaches its parent after it commits, see
:func:`~beluga_workflows.engine.steps.notify_parent`), so two runs never wait for each other.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import limits, observability, registry
from ..errors import WorkflowAlreadyStartedError
from ..history import EventType
from ..models import ActivityTask, Timer, WorkflowEvent, WorkflowRun
from ..options import ParentClosePolicy, Signal, Status
from ..serialization import ensure_json, ensure_size
from . import dispatch, sql
from .store import Appender, lock_run, lock_running


def start(
    workflow_name: str,
    reference: str,
    workflow_id: str | None = None,
    input: Any = None,
    timeout: timedelta | None = None,
) -> WorkflowRun:
    """Create a run and ask a worker to take its first step."""
    registry.resolve(workflow_name, reference)  # fail here, not in a worker, on a bad name
    ensure_size(ensure_json(input, f"Input of workflow {workflow_name!r}"), "The input")
    now = timezone.now()
    return create_run(  # one statement: in autocommit mode, no transaction to open or close
        workflow_name,
        reference,
        workflow_id or str(uuid.uuid4()),
        input,
        timeout_seconds=timeout.total_seconds() if timeout else None,
        deadline=now + timeout if timeout else None,
    )


def create_run(
    workflow_name: str,
    reference: str,
    workflow_id: str,
    input: Any,
    *,
    timeout_seconds: float | None = None,
    deadline: datetime | None = None,
    parent: WorkflowRun | None = None,
    parent_step: int | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.CANCEL,
    continued_from: WorkflowRun | None = None,
    run_id: uuid.UUID | None = None,
    signals: Sequence[dict[str, Any]] = (),
) -> WorkflowRun:
    """Insert a run with its ``WorkflowStarted`` event, inside the caller's transaction.

    A savepoint keeps a lost race for the id from aborting the caller's transaction (a parent
    starting a child whose id is running gets ``WorkflowAlreadyStartedError``, not a broken
    step). ``signals`` are ones a continued run had not taken yet: they arrive first.
    """
    now = timezone.now()
    run = WorkflowRun(
        workflow_id=workflow_id,
        run_id=run_id or uuid.uuid4(),
        workflow_name=workflow_name,
        workflow_reference=reference,
        input=input,
        timeout_seconds=timeout_seconds,
        advance_requested_at=now,
        parent=parent,
        parent_step=parent_step,
        parent_close_policy=parent_close_policy.value,
        notify_parent=parent is not None,
        continued_from=continued_from,
        created_at=now,
        updated_at=now,
    )
    started: dict[str, Any] = {"input": input, "timeout": timeout_seconds}
    if parent is not None:
        started["parent"] = {"id": parent.workflow_id, "run_id": str(parent.run_id)}
    if continued_from is not None:
        started["continued_from"] = str(continued_from.run_id)
    trace = observability.carrier()  # the caller's span, or the parent's step: its steps' parent
    if trace is not None:
        started[observability.TRACE_KEY] = trace
    events: list[tuple[EventType, str, dict[str, Any]]] = [
        (EventType.WORKFLOW_STARTED, workflow_name, started)
    ]
    for signal in signals:
        data = {"payload": signal.get("payload"), "sender": signal.get("sender")}
        events.append((EventType.SIGNAL_RECEIVED, signal["name"], data))
    run.last_sequence = len(events)
    run.history_bytes = sum(limits.event_size(data) for _, _, data in events)
    try:
        # One statement inserts the run, its first events and its timeout timer; inside a
        # caller's transaction a savepoint keeps a lost race for the id from breaking it.
        with transaction.atomic() if transaction.get_connection().in_atomic_block else _nothing():
            run.pk = sql.insert_run(run, events, now, deadline)
    except IntegrityError as exc:  # lost the race to another start with the same id
        if "beluga_one_running_run_per_id" in str(exc):
            raise WorkflowAlreadyStartedError(workflow_id) from exc
        raise
    run._state.adding = False
    dispatch.advance(run.pk)
    return run


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def signal(workflow_id: str, sig: Signal) -> WorkflowRun:
    """Record a signal in the run's history (its durable inbox) and nudge a worker."""
    if not isinstance(sig.name, str) or not sig.name:
        raise ValueError("A signal needs a non-empty name.")
    ensure_size(ensure_json(sig.payload, f"Payload of signal {sig.name!r}"), "The payload")
    data: dict[str, Any] = {"payload": sig.payload, "sender": sig.sender}
    trace = observability.carrier()  # the signal's span: the step that takes it links to it
    if trace is not None:
        data[observability.TRACE_KEY] = trace
    with transaction.atomic():
        run = lock_running(workflow_id, f"signal {sig.name!r} to")
        limit = limits.history_exceeded(run.workflow_id, run.last_sequence, run.history_bytes)
        if limit is not None:
            raise limit  # recorded, it would only fail the run at its next step
        appender = Appender(run)
        appender.append(EventType.SIGNAL_RECEIVED, name=sig.name, data=data)
        request_advance(appender)
    return run


def cancel(workflow_id: str, sender: str | None = None) -> WorkflowRun:
    """Ask the run to stop: its current wait raises ``WorkflowCanceledError``; its children
    (but abandoned ones) are asked to stop too. Asking twice is harmless."""
    with transaction.atomic():
        run = lock_running(workflow_id, "cancel")
        request_cancel(run, sender)
    return run


def request_cancel(run: WorkflowRun, sender: str | None) -> None:
    """Cancel a locked, running run inside the caller's transaction."""
    if run.events.filter(type=EventType.CANCEL_REQUESTED.value).exists():
        return
    appender = Appender(run)
    appender.append(EventType.CANCEL_REQUESTED, data={"sender": sender})
    # The pending steps are over for the workflow: late results and timers are stale.
    ActivityTask.objects.filter(run=run, state=ActivityTask.State.SCHEDULED).update(
        state=ActivityTask.State.CANCELED
    )
    timers = Timer.objects.filter(run=run, state=Timer.State.PENDING).exclude(
        kind=Timer.Kind.WORKFLOW_TIMEOUT
    )
    for step in timers.filter(kind=Timer.Kind.SLEEP).values_list("step", flat=True):
        appender.append(EventType.TIMER_CANCELED, step=step, name="timer")
    timers.update(state=Timer.State.CANCELED)
    request_advance(appender)
    cancel_children(run, f"parent {run.workflow_id!r} was canceled")


def cancel_children(run: WorkflowRun, reason: str) -> None:
    """Ask the running children of ``run`` to cancel, except the abandoned ones."""
    children = WorkflowRun.objects.filter(
        parent=run,
        status=Status.RUNNING.value,
        parent_close_policy=ParentClosePolicy.CANCEL.value,
    )
    for pk in children.values_list("pk", flat=True):
        child = lock_run(pk)
        if child is not None and child.status == Status.RUNNING.value:
            request_cancel(child, reason)


def request_advance(appender: Appender) -> None:
    """Save what ``appender`` holds and ask a worker to take the run's next step."""
    appender.run.advance_requested_at = timezone.now()
    appender.save(["advance_requested_at"])
    dispatch.advance(appender.run.pk)


def carried_trace(run_pk: int, history: sql.Prefetched | None = None) -> Any:
    """The trace context the run carries (its ``WorkflowStarted`` event's), read once per
    process: from the history a step read already when that has it, else by a query."""

    def load() -> Any:
        if history is not None and history[0] == 0 and history[1]:
            return history[1][0].data.get(observability.TRACE_KEY)
        started = WorkflowEvent.objects.filter(run_id=run_pk, sequence=1)
        return started.values_list(f"data__{observability.TRACE_KEY}", flat=True).first()

    return observability.run_trace(run_pk, load)


def signal_traces(run: WorkflowRun, history: sql.Prefetched | None) -> list[Any]:
    """Trace contexts of the signals a step is the first to read, from the history it read
    already (a signal that an activity's completion step happens to take goes unlinked)."""
    if history is None:
        return []
    seen = run.decided_through or 0
    return [
        event.data.get(observability.TRACE_KEY)
        for event in history[1]
        if event.sequence > seen and event.type is EventType.SIGNAL_RECEIVED
    ]
