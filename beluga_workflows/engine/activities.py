"""Running one activity attempt in a worker.

The attempt holds a PostgreSQL advisory lock on its task for as long as it runs. The lock
dies with the worker's connection, so the sweeper can tell "running somewhere" from "its
worker died" without a write per attempt; a duplicate delivery finds the lock taken and
stops. The activity itself runs in its own thread so the attempt timeout holds even when the
code never returns: the attempt is recorded as timed out and the thread's late result is
ignored (``ActivityContext.is_cancelled()`` turns true for it).

An attempt starts when a worker takes it, not when it is scheduled: the statement that
claims it stamps ``started_at`` and moves its ``deadline`` to the start-to-close end (see
:mod:`.timeouts`), so an attempt that waited in line for a free worker gets its whole
timeout, and one that waited past its schedule-to-start timeout fails without running.

An activity with a heartbeat timeout is timed out here when it goes that long without a
heartbeat (counted from its start), and by the sweeper when its worker died: its lock is free
and the task's last heartbeat (``heartbeat_at``, else ``started_at``) is older than the
timeout. The details of the last heartbeat stay on the task across retries,
for the next attempt's ``ActivityContext.heartbeat_details``. A schedule-to-close timeout
caps every attempt's deadline (see :mod:`.timeouts`); :func:`.steps.finish_activity` retries
nothing past it.

A connection can die while its worker lives (a database restart, a terminated backend), and
the lock with it. So an attempt running longer than a third of ``REDISPATCH_AFTER`` renews a
lease every third: it moves the task's ``dispatched_at`` forward (the sweeper sends an attempt
again only when that is older than ``REDISPATCH_AFTER`` *and* the lock is free) and, on a new
connection, takes the lock again. A live attempt is never sent again while its worker can
reach the database at least once per ``REDISPATCH_AFTER``.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections
from django.utils import timezone

from .. import observability, registry
from ..activity import ActivityContext, call_activity
from ..conf import beluga_settings
from ..errors import InvalidPayloadError, UntrustedReferenceError
from ..hooks import ActivityInfo
from ..models import ActivityTask
from ..serialization import ensure_json, ensure_size
from . import eager, failures, locks, runs, sql, steps
from .timeouts import (
    deadline_error,
    error_info,
    heartbeat_error,
    heartbeat_timeout,
    needs_start_stamp,
    retryable,
    started_deadline,
)

logger = logging.getLogger("beluga_workflows")


#: Pauses before claiming again an attempt whose lock someone holds without having started
#: it: most likely the sweeper, looking at work that waited long in the queue (a wide
#: fan-out's), which lets go within milliseconds. Giving up at once would leave the attempt
#: to wait for the sweeper to send it again, ``REDISPATCH_AFTER`` later.
_RECLAIM_PAUSES = (0.005, 0.02, 0.05, 0.1)


def _inspected(task: ActivityTask, attempt: int) -> bool:
    """Whether the attempt's lock is held by someone who has not started it."""
    return (
        task.state == ActivityTask.State.SCHEDULED
        and task.attempt == attempt
        and task.started_at is None
    )


def _claim_again(key: int, task_pk: int, attempt: int) -> ActivityTask | None:
    task = None
    for pause in _RECLAIM_PAUSES:
        time.sleep(pause)
        task = sql.claim_attempt(key, task_pk, None, attempt, timezone.now())
        if task is None or task.locked or not _inspected(task, attempt):  # type: ignore[attr-defined]
            break
    return task


def run_attempt(task_pk: int, attempt: int, claimed: ActivityTask | None = None) -> None:
    """Execute one attempt if it is still due, and record its outcome.

    The attempt's advisory lock is held from before it is read until after its outcome is
    committed: taken here, or already by the step that scheduled it (``claimed``, an eager
    attempt of this thread). In a worker draining eager attempts its release rides on the
    next statement of the next attempt; otherwise it is released at once.
    """
    key = locks.key(task_pk)
    previous = locks.take_pending()
    now = timezone.now()
    if claimed is None:
        try:
            task = sql.claim_attempt(key, task_pk, previous, attempt, now)
        except (OperationalError, InterfaceError):
            # A kept connection that died since the last task (a restart, a terminated
            # backend): the deferred lock died with it. Claim on a new one.
            if connection.in_atomic_block:
                raise
            connection.close()
            locks.forget()
            previous = None
            task = sql.claim_attempt(key, task_pk, None, attempt, now)
        if previous is not None:
            locks.released()
            previous = None
        if task is not None and not task.locked and _inspected(task, attempt):  # type: ignore[attr-defined]
            task = _claim_again(key, task_pk, attempt)
        if task is None or not task.locked:  # type: ignore[attr-defined]
            return  # gone, or running elsewhere (a duplicate delivery)
        locks.taken()
    else:
        task = claimed
    try:
        if task.state != ActivityTask.State.SCHEDULED or task.attempt != attempt:
            return
        if task.started_at is None and (task.deadline is None or task.deadline > now):
            _start(task, now)  # an eager attempt: the claim statement started the others
        if task.deadline is not None and task.deadline <= now:
            # It waited past its schedule-to-start (or -close) end, or started before on a
            # worker that died and is out of time.
            error = deadline_error(task, attempt, "did not finish (its worker died)")
            failures.guarded(
                task.run_id,
                steps.finish_activity,
                task_pk,
                attempt,
                error=error,
                retryable=retryable(error),
            )
            return
        assert task.deadline is not None and task.started_at is not None
        epoch = locks.epoch()
        outcome = _execute(task, (task.deadline - now).total_seconds())
        if locks.epoch() != epoch:
            previous = None  # its connection died while the activity ran, and the lock with it
        # The outcome is kept while the database is away: the attempt's lease and lock are
        # taken again on each new connection, so the sweeper does not send it again meanwhile.
        patience = max(3 * float(beluga_settings.REDISPATCH_AFTER), 30.0)

        def relock() -> None:
            renew_lease(task)

        if previous is not None and "error" not in outcome:
            released, previous = previous, None
            locks.released()  # by the statement that records this outcome
            failures.guarded(
                task.run_id,
                steps.finish_activity,
                task_pk,
                attempt,
                run_pk=task.run_id,
                release=released,
                patience=patience,
                on_reconnect=relock,
                **outcome,
            )
        else:
            failures.guarded(
                task.run_id,
                steps.finish_activity,
                task_pk,
                attempt,
                run_pk=task.run_id,
                patience=patience,
                on_reconnect=relock,
                **outcome,
            )
    finally:
        if not locks.held():
            pass  # the connection died and took every lock with it (see with_reconnect)
        else:
            if previous is not None:
                locks.release(previous)
            if eager.draining_now():
                locks.defer(key)
            else:
                locks.release(key)


def _start(task: ActivityTask, now: datetime) -> None:
    """Start an attempt the claim statement did not (an eager one: its step took its lock).
    Its start is recorded now only when its waiting deadline would misjudge its worker's
    death (see :func:`.timeouts.needs_start_stamp`); else by its first lease renewal."""
    task.started_at, task.deadline = now, started_deadline(task, now)
    if needs_start_stamp(task):
        ActivityTask.objects.filter(pk=task.pk, attempt=task.attempt, started_at=None).update(
            started_at=now, deadline=task.deadline
        )


def record_heartbeat(task_pk: int, attempt: int, details: Any) -> None:
    ActivityTask.objects.filter(pk=task_pk, attempt=attempt).update(
        heartbeat=details, heartbeat_at=timezone.now()
    )


def attempt_is_current(task_pk: int, attempt: int) -> bool:
    """Still the attempt the engine waits for (not timed out, retried or canceled)?"""
    return ActivityTask.objects.filter(
        pk=task_pk, attempt=attempt, state=ActivityTask.State.SCHEDULED
    ).exists()


def renew_lease(task: ActivityTask) -> None:
    """Tell the sweeper this attempt is alive, and hold its lock again if the connection
    holding it died. Never raises: a database out of reach is tried again next time."""
    try:
        if locks.held():
            try:
                _touch(task)
                return
            except DatabaseError:
                logger.warning("Lost the database connection while an activity ran; reconnecting")
                connection.close()
                locks.forget()
        _touch(task, relock=True)
    except DatabaseError:
        logger.warning("Could not renew the lease of activity task %s", task.pk, exc_info=True)


def _touch(task: ActivityTask, relock: bool = False) -> None:
    """Move the lease on; an eager attempt not recorded as started yet is, by this write."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ActivityTask._meta.db_table} SET dispatched_at = now(), "
            "deadline = CASE WHEN started_at IS NULL THEN %s ELSE deadline END, "
            "started_at = COALESCE(started_at, %s) "
            "WHERE id = %s AND attempt = %s AND state = %s",
            [
                task.deadline,
                task.started_at,
                task.pk,
                task.attempt,
                str(ActivityTask.State.SCHEDULED),
            ],
        )
        if not relock:
            return
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [locks.key(task.pk)])
        if cursor.fetchone()[0]:
            locks.taken()
            logger.info("Holding the lock of activity task %s again", task.pk)
        else:  # a copy started in the moment the lock was free; the first outcome counts
            logger.warning("Activity task %s is running elsewhere too", task.pk)


def _execute(task: ActivityTask, seconds: float) -> dict[str, Any]:
    if not observability.enabled():
        return _attempt(task, seconds, None)
    info = ActivityInfo(
        task.run.workflow_id,
        str(task.run.run_id),
        task.name,
        f"{task.run.run_id}:{task.step}",
        task.attempt,
        "default",
    )
    observed = observability.attempt(info, parent=lambda: runs.carried_trace(task.run_id))
    outcome = _attempt(task, seconds, observed)
    if observed is not None:
        observed.end(outcome.get("error"))
    return outcome


def _attempt(
    task: ActivityTask, seconds: float, observed: observability.Attempt | None
) -> dict[str, Any]:
    timed_out = threading.Event()
    beat = heartbeat_timeout(task)
    last_beat = [time.monotonic()]

    def on_heartbeat(details: Any) -> None:
        last_beat[0] = time.monotonic()
        record_heartbeat(task.pk, task.attempt, details)

    def cancelled() -> bool:
        if not timed_out.is_set() and not attempt_is_current(task.pk, task.attempt):
            timed_out.set()  # canceled, or replaced by a retry: it stays so
        return timed_out.is_set()

    ctx = ActivityContext(
        workflow_id=task.run.workflow_id,
        run_id=str(task.run.run_id),
        activity_id=f"{task.run.run_id}:{task.step}",
        attempt=task.attempt,
        on_heartbeat=on_heartbeat,
        cancelled=cancelled,
        heartbeat_details=task.heartbeat,
    )
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fn = registry.resolve(task.reference)
            if observed is None:
                result = call_activity(fn, ctx, task.input)
            else:  # its span current and its hooks around it, in this thread
                result = observed.call(lambda: call_activity(fn, ctx, task.input))
            what = f"Result of activity {task.name!r}"
            box["result"] = ensure_size(ensure_json(result, what), what)
        except (InvalidPayloadError, UntrustedReferenceError) as exc:  # no retry helps
            box["error"], box["retryable"] = error_info(exc), False
        except BaseException as exc:  # the user's activity failed
            box["error"] = error_info(exc)
        finally:
            connections.close_all()  # this thread's own connections, if the activity used the ORM

    thread = threading.Thread(target=target, name=f"activity-{task.pk}", daemon=True)
    thread.start()
    ends = time.monotonic() + seconds
    every = max(float(beluga_settings.REDISPATCH_AFTER) / 3, 0.1)
    renew_at = time.monotonic() + every
    missed = False
    while True:
        now = time.monotonic()
        wait = min(renew_at, ends) - now
        if beat is not None:
            wait = min(wait, last_beat[0] + beat - now)
        thread.join(max(wait, 0))
        now = time.monotonic()
        if not thread.is_alive() or now >= ends:
            break
        if beat is not None and now - last_beat[0] >= beat:
            missed = True
            break
        if now >= renew_at:
            renew_lease(task)
            renew_at = time.monotonic() + every
    if thread.is_alive():
        timed_out.set()
        if missed:
            return {"error": heartbeat_error(task, task.attempt)}
        return {"error": deadline_error(task, task.attempt, "did not finish")}
    if "error" in box:
        return {"error": box["error"], "retryable": box.get("retryable", True)}
    return {"result": box.get("result")}
