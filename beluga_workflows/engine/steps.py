"""Advancing runs: the workflow step, activity outcomes and timers.

Each function here is one short transaction with the run row locked: append what happened,
let the interpreter decide what the workflow does next, and record that. An activity that
completes is recorded *and* the next step decided in the same transaction, which keeps a run
of N activities to N+2 write transactions.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import registry
from ..errors import WorkflowTimeoutError
from ..history import EventType, ScheduleActivity, StartTimer, WaitSignal
from ..interpreter import Decision, RunInfo, error_to_json
from ..models import ActivityTask, Timer, WorkflowRun
from ..options import ActivityOptions, RetryPolicy, Status
from . import dispatch, runners
from .store import Appender, lock_run

logger = logging.getLogger("beluga_workflows")


def advance(run_pk: int) -> None:
    """The workflow step: process events that arrived since the last step."""
    with transaction.atomic():
        run = lock_run(run_pk)
        if run is None or run.status != Status.RUNNING.value:
            return
        if run.advance_requested_at is None:
            return  # a duplicate message: the step was taken already
        appender = Appender(run)
        decide(run, appender)


def decide(run: WorkflowRun, appender: Appender) -> None:
    """Run the workflow function over its history and record what it does next."""
    run.advance_requested_at = None
    try:
        fn = registry.resolve(run.workflow_name, run.workflow_reference)
        info = RunInfo(run.workflow_id, str(run.run_id), run.workflow_name, run.input)
        decision = runners.decide(run, fn, info, appender)
    except Exception:
        # Our failure or a deployment problem (the workflow cannot be imported), not the
        # workflow's: keep what was recorded and let the sweeper try this step again.
        logger.exception("Could not advance workflow %s; will retry", run.workflow_id)
        runners.forget(run.pk)
        run.advance_requested_at = timezone.now()
        run.save()
        return
    _apply(run, appender, decision)
    run.save()


def _apply(run: WorkflowRun, appender: Appender, decision: Decision) -> None:
    now = timezone.now()
    first_new = len(appender.added)
    for command in decision.commands:
        if isinstance(command, ScheduleActivity):
            options = command.options
            appender.append(
                EventType.ACTIVITY_SCHEDULED,
                step=command.step,
                name=command.name,
                attempt=1,
                data={"input": command.input, "options": options.to_json()},
            )
            task = ActivityTask.objects.create(
                run=run,
                step=command.step,
                name=command.name,
                reference=command.reference,
                input=command.input,
                options=options.to_json(),
                not_before=now,
                deadline=now + options.timeout,
                dispatched_at=now,
            )
            dispatch.activity(task.pk, 1)
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
    runners.note(run.pk, appender.added[first_new:])
    if run.waiting_for.startswith("signal:") and (decision.commands or decision.done):
        # The signal arrived: the wait's timeout timer has nothing left to do.
        Timer.objects.filter(
            run=run, state=Timer.State.PENDING, kind=Timer.Kind.SIGNAL_TIMEOUT
        ).exclude(step__in=[c.step for c in decision.commands]).update(state=Timer.State.CANCELED)
    if decision.done:
        if decision.error is None:
            _close(
                run,
                appender,
                Status.COMPLETED,
                EventType.WORKFLOW_COMPLETED,
                result=decision.result,
            )
        elif decision.canceled:
            _close(run, appender, Status.CANCELED, EventType.WORKFLOW_CANCELED)
        else:
            error = error_to_json(decision.error)
            _close(run, appender, Status.FAILED, EventType.WORKFLOW_FAILED, error=error)
        return
    _set_waiting(run, decision, now)


def _set_waiting(run: WorkflowRun, decision: Decision, now: Any) -> None:
    if decision.waiting is None:
        run.waiting_for = ""
        run.waiting_since = run.waiting_deadline = None
        return
    kind, name, step = decision.waiting
    label = {
        EventType.ACTIVITY_SCHEDULED: "activity",
        EventType.TIMER_STARTED: "timer",
        EventType.SIGNAL_WAIT_STARTED: "signal",
    }[kind]
    waiting_for = f"{label}:{name}"
    if waiting_for != run.waiting_for or decision.commands:
        run.waiting_for = waiting_for
        run.waiting_since = now
        timer = None
        if kind is not EventType.ACTIVITY_SCHEDULED:  # activities have no timer row
            timer = Timer.objects.filter(run=run, step=step, state=Timer.State.PENDING).first()
        run.waiting_deadline = timer.fire_at if timer else None


def _close(
    run: WorkflowRun,
    appender: Appender,
    status: Status,
    event: EventType,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
) -> None:
    data: dict[str, Any] = {}
    if event is EventType.WORKFLOW_COMPLETED:
        data["result"] = result
    if error is not None:
        data["error"] = error
    appender.append(event, data=data)
    run.status = status.value
    run.result = result
    run.error = error
    run.closed_at = timezone.now()
    run.waiting_for = ""
    run.waiting_since = run.waiting_deadline = None
    run.advance_requested_at = None
    ActivityTask.objects.filter(run=run, state=ActivityTask.State.SCHEDULED).update(
        state=ActivityTask.State.CANCELED
    )
    Timer.objects.filter(run=run, state=Timer.State.PENDING).update(state=Timer.State.CANCELED)
    runners.forget(run.pk)


def finish_activity(
    task_pk: int,
    attempt: int,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    retryable: bool = True,
    run_pk: int | None = None,
) -> bool:
    """Record one attempt's outcome; retry, or resolve the step and decide the next one.

    Returns False when the outcome is stale (the attempt already timed out, the run was
    canceled, or a duplicate delivery finished first): nothing is recorded then.
    """
    if run_pk is None:
        known = ActivityTask.objects.filter(pk=task_pk).values_list("run_id", flat=True).first()
        if known is None:
            return False
        run_pk = known
    with transaction.atomic():
        run = lock_run(run_pk)
        task = ActivityTask.objects.filter(pk=task_pk).first()
        if (
            run is None
            or task is None
            or run.status != Status.RUNNING.value
            or task.state != ActivityTask.State.SCHEDULED
            or task.attempt != attempt
        ):
            return False
        appender = Appender(run)
        if error is None:
            task.state = ActivityTask.State.COMPLETED
            task.save(update_fields=["state"])
            appender.append(
                EventType.ACTIVITY_COMPLETED,
                step=task.step,
                name=task.name,
                attempt=attempt,
                data={"result": result},
            )
            decide(run, appender)
            return True
        options = ActivityOptions.from_json(task.options)
        if retryable and _may_retry(options.retry, attempt, error):
            delay = options.retry.backoff(attempt)
            now = timezone.now()
            appender.append(
                EventType.ACTIVITY_ATTEMPT_FAILED,
                step=task.step,
                name=task.name,
                attempt=attempt,
                data={"error": error, "retry_in": delay.total_seconds()},
            )
            task.attempt = attempt + 1
            task.not_before = now + delay
            task.deadline = task.not_before + options.timeout
            task.dispatched_at = now
            task.save(update_fields=["attempt", "not_before", "deadline", "dispatched_at"])
            run.save(update_fields=["last_sequence", "updated_at"])
            dispatch.activity(task.pk, task.attempt, countdown=delay.total_seconds())
            return True
        task.state = ActivityTask.State.FAILED
        task.save(update_fields=["state"])
        appender.append(
            EventType.ACTIVITY_FAILED,
            step=task.step,
            name=task.name,
            attempt=attempt,
            data={"error": error},
        )
        decide(run, appender)
        return True


def _may_retry(policy: RetryPolicy, attempt: int, error: dict[str, Any]) -> bool:
    if attempt >= policy.max_attempts:
        return False
    names = set(policy.error_names())
    return not names.intersection(error.get("types", [error.get("type")]))


def fire_timer(timer_pk: int) -> bool:
    """A due timer: a sleep or signal timeout resumes the workflow; a workflow timeout ends it."""
    timer = Timer.objects.filter(pk=timer_pk).only("run_id").first()
    if timer is None:
        return False
    with transaction.atomic():
        # Skip a run another worker is advancing: the timer stays due for the next sweep.
        run = lock_run(timer.run_id, skip_locked=True)
        timer = Timer.objects.filter(pk=timer_pk, state=Timer.State.PENDING).first()
        if run is None or timer is None:
            return False
        timer.state = Timer.State.FIRED
        timer.save(update_fields=["state"])
        if run.status != Status.RUNNING.value:
            return False
        appender = Appender(run)
        if timer.kind == Timer.Kind.WORKFLOW_TIMEOUT:
            seconds = run.timeout_seconds
            error = error_to_json(WorkflowTimeoutError(run.workflow_id, seconds))
            _close(run, appender, Status.TIMED_OUT, EventType.WORKFLOW_TIMED_OUT, error=error)
            run.save()
            return True
        appender.append(EventType.TIMER_FIRED, step=timer.step, name=timer.kind)
        decide(run, appender)
        return True
