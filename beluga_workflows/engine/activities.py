"""Running one activity attempt in a worker.

The attempt holds a PostgreSQL advisory lock on its task for as long as it runs. The lock
dies with the worker's connection, so the sweeper can tell "running somewhere" from "its
worker died" without a write per attempt; a duplicate delivery finds the lock taken and
stops. The activity itself runs in its own thread so the attempt timeout holds even when the
code never returns: the attempt is recorded as timed out and the thread's late result is
ignored (``ActivityContext.is_cancelled()`` turns true for it).
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

from django.db import connections
from django.utils import timezone

from .. import registry
from ..activity import ActivityContext, call_activity
from ..errors import ActivityTimeoutError, InvalidPayloadError
from ..models import ActivityTask
from ..serialization import ensure_json, ensure_size
from . import eager, locks, sql, steps
from .store import with_reconnect

logger = logging.getLogger("beluga_workflows")


def error_info(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "types": [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)],
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
    }


def run_attempt(task_pk: int, attempt: int, claimed: ActivityTask | None = None) -> None:
    """Execute one attempt if it is still due, and record its outcome.

    The attempt's advisory lock is held from before it is read until after its outcome is
    committed: taken here, or already by the step that scheduled it (``claimed``, an eager
    attempt of this thread). In a worker draining eager attempts its release rides on the
    next statement of the next attempt; otherwise it is released at once.
    """
    key = locks.key(task_pk)
    previous = locks.take_pending()
    if claimed is None:
        task = sql.claim_attempt(key, task_pk, previous)
        if previous is not None:
            locks.released()
            previous = None
        if task is None or not task.locked:  # type: ignore[attr-defined]
            return  # gone, or running elsewhere (a duplicate delivery)
        locks.taken()
    else:
        task = claimed
    try:
        if task.state != ActivityTask.State.SCHEDULED or task.attempt != attempt:
            return
        now = timezone.now()
        if task.deadline <= now:
            timeout = ActivityTimeoutError(
                f"Attempt {attempt} of {task.name!r} was not started in time."
            )
            with_reconnect(steps.finish_activity, task_pk, attempt, error=error_info(timeout))
            return
        outcome = _execute(task, (task.deadline - now).total_seconds())
        if previous is not None and "error" not in outcome:
            released, previous = previous, None
            locks.released()  # by the statement that records this outcome
            with_reconnect(
                steps.finish_activity,
                task_pk,
                attempt,
                run_pk=task.run_id,
                release=released,
                **outcome,
            )
        else:
            with_reconnect(steps.finish_activity, task_pk, attempt, run_pk=task.run_id, **outcome)
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


def record_heartbeat(task_pk: int, attempt: int, details: Any) -> None:
    ActivityTask.objects.filter(pk=task_pk, attempt=attempt).update(
        heartbeat=details, heartbeat_at=timezone.now()
    )


def attempt_is_current(task_pk: int, attempt: int) -> bool:
    """Still the attempt the engine waits for (not timed out, retried or canceled)?"""
    return ActivityTask.objects.filter(
        pk=task_pk, attempt=attempt, state=ActivityTask.State.SCHEDULED
    ).exists()


def _execute(task: ActivityTask, seconds: float) -> dict[str, Any]:
    timed_out = threading.Event()

    def cancelled() -> bool:
        if not timed_out.is_set() and not attempt_is_current(task.pk, task.attempt):
            timed_out.set()  # canceled, or replaced by a retry: it stays so
        return timed_out.is_set()

    ctx = ActivityContext(
        workflow_id=task.run.workflow_id,
        run_id=str(task.run.run_id),
        activity_id=f"{task.run.run_id}:{task.step}",
        attempt=task.attempt,
        on_heartbeat=lambda details: record_heartbeat(task.pk, task.attempt, details),
        cancelled=cancelled,
    )
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fn = registry.resolve(task.reference)
            result = call_activity(fn, ctx, task.input)
            what = f"Result of activity {task.name!r}"
            box["result"] = ensure_size(ensure_json(result, what), what)
        except InvalidPayloadError as exc:
            box["error"], box["retryable"] = error_info(exc), False
        except BaseException as exc:  # the user's activity failed
            box["error"] = error_info(exc)
        finally:
            connections.close_all()  # this thread's own connections, if the activity used the ORM

    thread = threading.Thread(target=target, name=f"activity-{task.pk}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        timed_out.set()
        timeout = ActivityTimeoutError(
            f"Attempt {task.attempt} of {task.name!r} ran past its {seconds:.3g}s timeout."
        )
        return {"error": error_info(timeout)}
    if "error" in box:
        return {"error": box["error"], "retryable": box.get("retryable", True)}
    return {"result": box.get("result")}
