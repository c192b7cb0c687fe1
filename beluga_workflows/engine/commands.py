"""Recording a decision's commands: events, rows and work for each thing the workflow asked for.

Called by :func:`~beluga_workflows.engine.steps.decide` inside the step's transaction, with
the run locked: an activity gets its ``ActivityTask`` row and a Celery message (sent on
commit), a timer or a signal-wait timeout its ``Timer`` row, a child workflow its own run
(created here, in the parent's transaction), a signal to a child is delivered to the child's
history at once, and a ``patched`` marker is recorded.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from ..errors import WorkflowError, error_to_json
from ..history import (
    Command,
    EventType,
    RecordMarker,
    ScheduleActivity,
    SignalChild,
    StartChild,
    StartTimer,
    WaitSignal,
)
from ..models import ActivityTask, Timer, WorkflowRun
from ..options import Signal
from . import dispatch, runs, timeouts
from .store import Appender

#: Events ``record`` appends that settle a future at once: the workflow reads them next round.
IMMEDIATE = {
    EventType.CHILD_WORKFLOW_STARTED,
    EventType.CHILD_WORKFLOW_START_FAILED,
    EventType.CHILD_SIGNAL_SENT,
    EventType.CHILD_SIGNAL_FAILED,
}


def record(run: WorkflowRun, appender: Appender, command: Command, now: Any) -> None:
    """Append the command's event and create what carries it out."""
    if isinstance(command, ScheduleActivity):
        _schedule_activity(run, appender, command, now)
    elif isinstance(command, StartTimer):
        fire_at = now + command.duration
        appender.append(
            EventType.TIMER_STARTED,
            step=command.step,
            name=command.name,
            data={"duration": command.duration.total_seconds(), "fire_at": fire_at.isoformat()},
        )
        Timer.objects.create(run=run, step=command.step, kind=Timer.Kind.SLEEP, fire_at=fire_at)
    elif isinstance(command, WaitSignal):
        deadline = now + command.timeout if command.timeout is not None else None
        appender.append(
            EventType.SIGNAL_WAIT_STARTED,
            step=command.step,
            name=command.name,
            data={
                "timeout": command.timeout.total_seconds() if command.timeout else None,
                "deadline": deadline.isoformat() if deadline else None,
            },
        )
        if deadline is not None:
            Timer.objects.create(
                run=run, step=command.step, kind=Timer.Kind.SIGNAL_TIMEOUT, fire_at=deadline
            )
    elif isinstance(command, StartChild):
        _start_child(run, appender, command)
    elif isinstance(command, SignalChild):
        _signal_child(appender, command)
    elif isinstance(command, RecordMarker):
        appender.append(
            EventType.MARKER_RECORDED,
            name=command.name,
            data={"deprecated": command.deprecated},
        )


def _schedule_activity(
    run: WorkflowRun, appender: Appender, command: ScheduleActivity, now: Any
) -> None:
    options = command.options
    appender.append(
        EventType.ACTIVITY_SCHEDULED,
        step=command.step,
        name=command.name,
        attempt=1,
        data={"input": command.input, "options": options.to_json()},
    )
    # The task's options also keep when a schedule-to-close timeout ends (see .timeouts).
    task_options, deadline = timeouts.task_options(options, now)
    task = ActivityTask(
        run=run,
        step=command.step,
        name=command.name,
        reference=command.reference,
        input=command.input,
        options=task_options,
        not_before=now,
        deadline=deadline,
        dispatched_at=now,
    )
    appender.add_task(task, _dispatch)


def _dispatch(task: ActivityTask) -> None:
    """After commit: an attempt whose lock the step took runs in this thread (eager)."""
    claimed = task if getattr(task, "locked", False) else None
    dispatch.activity(task.pk, 1, claimed=claimed, queue=task.options.get("queue"))


def _start_child(run: WorkflowRun, appender: Appender, command: StartChild) -> None:
    appender.append(
        EventType.CHILD_WORKFLOW_SCHEDULED,
        step=command.step,
        name=command.name,
        data=command.to_json(),
    )
    timeout = command.timeout
    try:
        child = runs.create_run(
            command.name,
            command.reference,
            command.workflow_id,
            command.input,
            timeout_seconds=timeout.total_seconds() if timeout else None,
            deadline=timezone.now() + timeout if timeout else None,
            parent=run,
            parent_step=command.step,
            parent_close_policy=command.parent_close_policy,
        )
    except WorkflowError as exc:
        appender.append(
            EventType.CHILD_WORKFLOW_START_FAILED,
            step=command.step,
            name=command.name,
            data={"error": error_to_json(exc)},
        )
        return
    appender.append(
        EventType.CHILD_WORKFLOW_STARTED,
        step=command.step,
        name=command.name,
        data={"id": child.workflow_id, "run_id": str(child.run_id)},
    )


def _signal_child(appender: Appender, command: SignalChild) -> None:
    appender.append(
        EventType.CHILD_SIGNAL_SCHEDULED,
        step=command.step,
        name=command.name,
        data=command.to_json(),
    )
    try:
        runs.signal(command.child_id, Signal(command.name, command.payload, command.sender))
    except WorkflowError as exc:
        appender.append(
            EventType.CHILD_SIGNAL_FAILED,
            step=command.step,
            name=command.name,
            data={"error": error_to_json(exc)},
        )
        return
    appender.append(EventType.CHILD_SIGNAL_SENT, step=command.step, name=command.name)
