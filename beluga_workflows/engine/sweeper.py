"""The safety net that makes a killed worker lose nothing.

``runworker`` calls :func:`sweep` every ``POLL_INTERVAL`` seconds. It fires due timers;
notices activity attempts whose worker died (their advisory lock is free) and either times
them out (past their deadline, or silent past their heartbeat timeout) or sends them again
(on their own queue); fails attempts no worker started within their schedule-to-start
timeout; re-advances runs whose workflow-step message was lost; and hands closed children's
outcomes to parents that have not received them (the worker died between the two). It
never relies on the broker redelivering anything.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from ..conf import beluga_settings
from ..models import ActivityTask, Timer, WorkflowRun
from ..options import Status
from . import dispatch, holds, steps
from .locks import advisory_lock
from .timeouts import deadline_error, heartbeat_error, heartbeat_missed, retryable

logger = logging.getLogger("beluga_workflows")
BATCH = 200


class _Backlog:
    """Whether a message sent at some moment may still wait in its broker queue.

    A queue is first in, first out: once it has been seen empty after a message was sent, that
    message has left it (taken by a worker, or lost). Until then a message older than
    ``REDISPATCH_AFTER`` may merely wait behind a backlog, and sending it again would only
    add to the backlog. Each sweeper asks the broker at most once per pass, and only when it
    has something to send again.
    """

    def __init__(self) -> None:
        self.empty_at: dict[str, datetime] = {}
        self.asked: dict[str, datetime] = {}

    def may_wait(self, queue: str, sent_at: datetime, now: datetime) -> bool:
        if self.asked.get(queue) != now:
            self.asked[queue] = now
            length = dispatch.queued(queue)
            if length is None or length == 0:  # empty (or the broker cannot say: send)
                self.empty_at[queue] = now
        empty_at = self.empty_at.get(queue)
        return empty_at is None or empty_at < sent_at


backlog = _Backlog()


def sweep(attempts: bool = True) -> int:
    """One pass; returns how many things it acted on. ``attempts=False`` leaves activity
    attempts alone (just after a database outage, while live workers take their leases back)."""
    recovered = recover_activities() if attempts else 0
    return (
        fire_due_timers()
        + recovered
        + recover_runs()
        + recover_child_outcomes()
        + retry_held_runs()
    )


#: Whether this process has swept yet: its first pass retries every held run at once, since
#: a worker that starts is usually a new deploy, maybe with the fix (see engine/holds.py).
_started = False


def retry_held_runs() -> int:
    global _started
    retried = holds.retry_due(everything=not _started, batch=BATCH)
    _started = True
    return retried


def fire_due_timers() -> int:
    due = Timer.objects.filter(state=Timer.State.PENDING, fire_at__lte=timezone.now())
    fired = 0
    for pk in due.order_by("fire_at").values_list("pk", flat=True)[:BATCH]:
        fired += steps.fire_timer(pk)
    return fired


def _silent(now: datetime) -> RawSQL:
    """Attempts started (or last heartbeating) longer ago than their heartbeat timeout."""
    return RawSQL(
        "(COALESCE(heartbeat_at, started_at) + "
        "make_interval(secs => (options ->> 'heartbeat_timeout')::float8) <= %s)",
        [now],
        output_field=BooleanField(),
    )


def recover_activities() -> int:
    now = timezone.now()
    stale = now - timedelta(seconds=beluga_settings.REDISPATCH_AFTER)
    candidates = ActivityTask.objects.filter(state=ActivityTask.State.SCHEDULED).filter(
        Q(deadline__lte=now) | Q(dispatched_at__lte=stale, not_before__lte=stale) | Q(_silent(now))
    )
    acted = 0
    rows = candidates.values_list(
        "pk", "attempt", "started_at", "deadline", "dispatched_at", "options__queue"
    )[:BATCH]
    for pk, attempt, started_at, deadline, dispatched_at, queue in rows:
        if (
            started_at is None
            and (deadline is None or deadline > now)
            and backlog.may_wait(dispatch.activity_queue(queue), dispatched_at, now)
        ):
            # Never started, not late, and its message may still wait behind others (a wide
            # fan-out's backlog): nothing to do — and no lock taken, which would make the
            # worker that takes the message meanwhile think it runs elsewhere.
            continue
        with advisory_lock(pk) as free:
            if not free:
                continue  # a live worker is running it; that worker enforces the timeout
            task = ActivityTask.objects.filter(
                pk=pk, state=ActivityTask.State.SCHEDULED, attempt=attempt
            ).first()
            if task is None:
                continue
            queue = task.options.get("queue")
            if heartbeat_missed(task, timezone.now()):
                # Started, then silent: its worker died (a live one would hold the lock).
                why = " (its worker died)"
                steps.finish_activity(pk, attempt, error=heartbeat_error(task, attempt, why))
            elif task.deadline is not None and task.deadline <= timezone.now():
                # Started and out of time (its worker died), or never started in time.
                error = deadline_error(task, attempt, "did not finish (its worker died)")
                steps.finish_activity(pk, attempt, error=error, retryable=retryable(error))
            elif backlog.may_wait(dispatch.activity_queue(queue), task.dispatched_at, now):
                continue  # its message may still be queued behind others
            else:
                logger.info("Sending activity %s (attempt %s) again", task.name, attempt)
                ActivityTask.objects.filter(pk=pk).update(dispatched_at=timezone.now())
                dispatch.activity(pk, attempt, queue=queue)
            acted += 1
    return acted


def recover_runs() -> int:
    stale = timezone.now() - timedelta(seconds=beluga_settings.REDISPATCH_AFTER)
    stalled = WorkflowRun.objects.filter(
        status=Status.RUNNING.value, advance_requested_at__lte=stale
    ).values_list("pk", flat=True)[:BATCH]
    acted = 0
    for pk in stalled:
        logger.info("Advancing stalled run %s", pk)
        steps.advance(pk)
        acted += 1
    return acted


def recover_child_outcomes() -> int:
    stale = timezone.now() - timedelta(seconds=beluga_settings.REDISPATCH_AFTER)
    closed = (
        WorkflowRun.objects.filter(notify_parent=True, closed_at__lte=stale)
        .exclude(status=Status.RUNNING.value)
        .values_list("pk", flat=True)[:BATCH]
    )
    acted = 0
    for pk in closed:
        logger.info("Telling the parent of run %s how it ended", pk)
        acted += steps.notify_parent(pk)
    return acted
