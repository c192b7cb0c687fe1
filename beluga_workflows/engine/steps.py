"""Advancing runs: the workflow step, activity outcomes, timers and children's outcomes.

Each function here is one short transaction with the run row locked: append what happened,
let the interpreter decide what the workflow does next, and record that. An activity that
completes is recorded *and* the next step decided in the same transaction, which keeps a run
of N activities to N+2 write transactions. All the commands of one decision (say, forty
activities of a fan-out, a timer and a signal wait) are recorded in that one transaction.

A parent starts and signals its children inside its own transaction (parent row first, then
the child's); a child's close reaches its parent in a transaction of the parent's, right after
the child's commits (:func:`notify_parent`) — or, if the worker died in between, when the
sweeper finds the child still marked ``notify_parent``.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import limits, observability, registry
from ..errors import (
    WorkflowCanceledError,
    WorkflowTimeoutError,
    error_to_json,
)
from ..history import (
    EventType,
    waiting_label,
)
from ..hooks import RunClosedInfo, StepInfo, StepResult
from ..interpreter import Decision, RunInfo
from ..models import ActivityTask, Timer, WorkflowRun
from ..options import ActivityOptions, ParentClosePolicy, RetryPolicy, Status
from . import commands, dispatch, holds, runners, runs, sql, timeouts
from .store import Appender, lock_run

logger = logging.getLogger("beluga_workflows")

#: What a step may change on the run row (saved with the step's events).
RUN_FIELDS = (
    "status",
    "result",
    "error",
    "waiting_for",
    "waiting_since",
    "waiting_deadline",
    "advance_requested_at",
    "decided_through",
    "notify_parent",
    "closed_at",
    "held",
    "held_retry_at",
)

#: Decisions in a row within one transaction, when a step's own commands settle at once
#: (a child started, a signal delivered); a workflow that keeps doing that waits for a worker.
MAX_ROUNDS = 100


def advance(run_pk: int) -> None:
    """The workflow step: process events that arrived since the last step."""
    with transaction.atomic():
        run, history, _ = sql.lock_run_for_step(run_pk, runners.cached_seen(run_pk))
        if run is None or run.status != Status.RUNNING.value:
            return
        if run.advance_requested_at is None:
            return  # a duplicate message: the step was taken already
        appender = Appender(run)
        decide(run, appender, history)


def decide(run: WorkflowRun, appender: Appender, history: sql.Prefetched | None = None) -> None:
    """Run the workflow function over its history and record what it does next.

    ``history`` is what the step already read with the run's lock (see
    :func:`.sql.lock_run_for_step`), so the decision needs no query of its own.
    """
    if not observability.enabled():
        _decide(run, appender, history)
        return
    observability.step(
        StepInfo(run.workflow_id, str(run.run_id), run.workflow_name, "default"),
        lambda: _decide(run, appender, history),
        lambda _: StepResult(Status(run.status), run.waiting_for),
        parent=lambda: runs.carried_trace(run.pk, history),
        links=lambda: runs.signal_traces(run, history),
        first=run.decided_through is None,
    )


def _decide(run: WorkflowRun, appender: Appender, history: sql.Prefetched | None) -> None:
    run.advance_requested_at = None
    for _ in range(MAX_ROUNDS):
        try:
            fn = registry.resolve(run.workflow_name, run.workflow_reference)
            info = RunInfo(run.workflow_id, str(run.run_id), run.workflow_name, run.input)
            decision = runners.decide(run, fn, info, appender, history)
        except Exception as exc:
            # Our failure or a deployment problem (the workflow cannot be imported, its code
            # ran past WORKFLOW_TASK_TIMEOUT), not a decision of the workflow's: record
            # nothing it decided and hold the run with the error — visible in the admin, REST
            # and describe(), tried again with backoff (and at once by a worker that starts,
            # usually the fixed deploy) — instead of retrying it in silence forever.
            logger.exception("Could not advance workflow %s; holding it", run.workflow_id)
            holds.hold(run, exc)
            run.advance_requested_at = None
            break
        if not _apply(run, appender, decision):
            break
    else:
        run.advance_requested_at = timezone.now()  # more next time, from a fresh message
        dispatch.advance(run.pk)
    save(appender)


def _apply(run: WorkflowRun, appender: Appender, decision: Decision) -> bool:
    """Record a decision; True when it settled something the workflow should see now."""
    if decision.done and holds.should_hold(run, decision.error):
        assert decision.error is not None
        if not holds.cancel_requested(run, appender):
            holds.hold(run, decision.error)  # a bug: record nothing this pass decided
            return False
        error = WorkflowCanceledError(run.workflow_id, "The held workflow was canceled.")
        decision = dataclasses.replace(decision, commands=[], error=error)
    holds.clear(run)
    limit = limits.history_exceeded(run.workflow_id, run.last_sequence, run.history_bytes)
    if limit is not None and not decision.done:
        # Too long or too large to go on: fail instead of recording what it decided.
        decision = Decision(done=True, error=limit, read_through=decision.read_through)
    now = timezone.now()
    first_new = len(appender.added)
    run.decided_through = decision.read_through
    for command in decision.commands:
        commands.record(run, appender, command, now)
    _cancel_timers(run, appender, decision)
    new_events = appender.added[first_new:]
    runners.note(run.pk, new_events)
    if decision.done:
        _finish(run, appender, decision)
        return False
    _set_waiting(run, decision, now)
    return any(event.type in commands.IMMEDIATE for event in new_events)


def _cancel_timers(run: WorkflowRun, appender: Appender, decision: Decision) -> None:
    for step in decision.cancel_timers:
        if Timer.objects.filter(run=run, step=step, state=Timer.State.PENDING).update(
            state=Timer.State.CANCELED
        ):
            appender.append(EventType.TIMER_CANCELED, step=step, name="timer")
    if decision.cancel_signal_timeouts:
        # The signal came: the wait's timeout timer has nothing left to do.
        Timer.objects.filter(
            run=run,
            step__in=decision.cancel_signal_timeouts,
            state=Timer.State.PENDING,
            kind=Timer.Kind.SIGNAL_TIMEOUT,
        ).update(state=Timer.State.CANCELED)


def _finish(run: WorkflowRun, appender: Appender, decision: Decision) -> None:
    if decision.continue_as_new is not None:
        _continue_as_new(run, appender, decision)
    elif decision.error is None:
        close(run, appender, Status.COMPLETED, EventType.WORKFLOW_COMPLETED, result=decision.result)
    elif decision.canceled:
        close(run, appender, Status.CANCELED, EventType.WORKFLOW_CANCELED)
    else:
        error = error_to_json(decision.error)
        close(run, appender, Status.FAILED, EventType.WORKFLOW_FAILED, error=error)


def _continue_as_new(run: WorkflowRun, appender: Appender, decision: Decision) -> None:
    """Close the run and start its successor: same id, same workflow, empty history."""
    request = decision.continue_as_new
    assert request is not None
    deadline = (
        Timer.objects.filter(run=run, kind=Timer.Kind.WORKFLOW_TIMEOUT, state=Timer.State.PENDING)
        .values_list("fire_at", flat=True)
        .first()
    )
    successor = uuid.uuid4()
    close(
        run,
        appender,
        Status.CONTINUED_AS_NEW,
        EventType.WORKFLOW_CONTINUED_AS_NEW,
        data={"input": request.input, "new_run_id": str(successor)},
    )
    run.notify_parent = False  # the chain's last run reports to the parent
    save(appender)  # closed before its successor exists: one running run per id
    parent = WorkflowRun.objects.filter(pk=run.parent_id).first() if run.parent_id else None
    runs.create_run(
        run.workflow_name,
        run.workflow_reference,
        run.workflow_id,
        request.input,
        timeout_seconds=run.timeout_seconds,
        deadline=deadline,
        parent=parent,
        parent_step=run.parent_step,
        parent_close_policy=ParentClosePolicy(run.parent_close_policy),
        continued_from=run,
        run_id=successor,
        signals=request.signals,
    )


def _set_waiting(run: WorkflowRun, decision: Decision, now: Any) -> None:
    label = waiting_label(decision.waiting)
    if not label:
        run.waiting_for = ""
        run.waiting_since = run.waiting_deadline = None
        return
    if label != run.waiting_for or decision.commands:
        run.waiting_for = label
        run.waiting_since = now
        timed = [w.step for w in decision.waiting if w.kind in ("signal", "timer")]
        timer = (
            Timer.objects.filter(run=run, step__in=timed, state=Timer.State.PENDING)
            .order_by("fire_at")
            .first()
            if timed
            else None
        )
        run.waiting_deadline = timer.fire_at if timer else None


def close(
    run: WorkflowRun,
    appender: Appender,
    status: Status,
    event: EventType,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    data = dict(data or {})
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
    # Saving the run (``save``) cancels its open tasks, timers and children and wakes waiters.
    appender.closing = True
    runners.forget(run.pk)
    if observability.enabled():
        info = RunClosedInfo(
            run.workflow_id, str(run.run_id), run.workflow_name, status, result, error, "default"
        )
        transaction.on_commit(lambda: observability.run_closed(info))
    if run.notify_parent and status is not Status.CONTINUED_AS_NEW:
        pk = run.pk
        transaction.on_commit(lambda: _notify_quietly(pk))


def save(appender: Appender) -> None:
    """Save a step; a run that closed asks its running children to cancel (by policy)."""
    if appender.save(RUN_FIELDS):
        run = appender.run
        runs.cancel_children(run, f"parent {run.workflow_id!r} closed ({run.status})")


def _notify_quietly(child_pk: int) -> None:
    try:
        notify_parent(child_pk)
    except Exception:  # the sweeper delivers it later
        logger.warning("Could not tell the parent of run %s yet", child_pk, exc_info=True)


def notify_parent(child_pk: int) -> bool:
    """Record a closed child's outcome in its parent's history and advance the parent."""
    parent_pk = WorkflowRun.objects.filter(pk=child_pk).values_list("parent_id", flat=True).first()
    with transaction.atomic():
        parent = lock_run(parent_pk) if parent_pk else None
        child = WorkflowRun.objects.select_for_update().filter(pk=child_pk).first()
        if child is None or not child.notify_parent or child.status == Status.RUNNING.value:
            return False
        child.notify_parent = False
        child.save(update_fields=["notify_parent"])
        if parent is None or parent.status != Status.RUNNING.value:
            return False
        appender = Appender(parent)
        if child.status == Status.COMPLETED.value:
            appender.append(
                EventType.CHILD_WORKFLOW_COMPLETED,
                step=child.parent_step,
                name=child.workflow_name,
                data={"id": child.workflow_id, "run_id": str(child.run_id), "result": child.result},
            )
        else:
            appender.append(
                EventType.CHILD_WORKFLOW_FAILED,
                step=child.parent_step,
                name=child.workflow_name,
                data={
                    "id": child.workflow_id,
                    "run_id": str(child.run_id),
                    "status": child.status,
                    "error": child.error,
                },
            )
        decide(parent, appender)
        return True


def finish_activity(
    task_pk: int,
    attempt: int,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    retryable: bool = True,
    run_pk: int | None = None,
    release: int | None = None,
) -> bool:
    """Record one attempt's outcome; retry, or resolve the step and decide the next one.

    ``release`` is an advisory lock key this thread no longer needs (its previous attempt's):
    released by the same round trip that records a completion.

    Returns False when the outcome is stale (the attempt already timed out, the run was
    canceled, or a duplicate delivery finished first): nothing is recorded then.
    """
    if run_pk is None:
        known = ActivityTask.objects.filter(pk=task_pk).values_list("run_id", flat=True).first()
        if known is None:
            return False
        run_pk = known
    with transaction.atomic():
        if error is None:
            # Completed: lock the run and record the attempt if it is still the current one.
            # In a chain of eager steps the continuation has seen everything already: the
            # history is read only when it has not (see runners.decide).
            run, history, completed = sql.lock_run_for_step(
                run_pk, None, (task_pk, attempt), release
            )
            if run is None or completed is None or run.status != Status.RUNNING.value:
                return False
            step, name = completed
            appender = Appender(run)
            appender.append(
                EventType.ACTIVITY_COMPLETED,
                step=step,
                name=name,
                attempt=attempt,
                data={"result": result},
            )
            decide(run, appender, history)
            return True
        run = lock_run(run_pk)
        if run is None or run.status != Status.RUNNING.value:
            return False
        task = ActivityTask.objects.select_for_update().filter(pk=task_pk).first()
        if task is None or task.state != ActivityTask.State.SCHEDULED or task.attempt != attempt:
            return False
        appender = Appender(run)
        options = ActivityOptions.from_json(task.options)
        failed = {"error": error}
        if retryable and _may_retry(options.retry, attempt, error):
            delay = options.retry.backoff(attempt)
            now = timezone.now()
            close_by = timeouts.close_by(task)
            if close_by is None or now + delay < close_by:
                appender.append(
                    EventType.ACTIVITY_ATTEMPT_FAILED,
                    step=task.step,
                    name=task.name,
                    attempt=attempt,
                    data={"error": error, "retry_in": delay.total_seconds()},
                )
                task.attempt = attempt + 1
                task.not_before = now + delay
                # Not started: its start-to-close clock starts when a worker takes it.
                task.started_at = None
                task.deadline = timeouts.waiting_deadline(options, task.not_before, close_by)
                task.dispatched_at = now
                # The last heartbeat's details stay for the next attempt (heartbeat_details);
                # its time goes, so the heartbeat timeout counts from that attempt's start.
                task.heartbeat_at = None
                fields = ["attempt", "not_before", "deadline", "dispatched_at", "heartbeat_at"]
                task.save(update_fields=[*fields, "started_at"])
                appender.save(["last_sequence"])
                dispatch.activity(
                    task.pk, task.attempt, countdown=delay.total_seconds(), queue=options.queue
                )
                return True
            # No retry may start before the schedule-to-close timeout ends: it failed for good.
            failed = {"error": timeouts.schedule_to_close_error(task, attempt, error)}
            failed["last_error"] = error
        task.state = ActivityTask.State.FAILED
        task.save(update_fields=["state"])
        appender.append(
            EventType.ACTIVITY_FAILED,
            step=task.step,
            name=task.name,
            attempt=attempt,
            data=failed,
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
            close(run, appender, Status.TIMED_OUT, EventType.WORKFLOW_TIMED_OUT, error=error)
            save(appender)
            return True
        appender.append(EventType.TIMER_FIRED, step=timer.step, name=timer.kind)
        decide(run, appender)
        return True
