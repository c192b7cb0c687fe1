"""Activity timeouts on the built-in engine: an attempt's bounds and the errors they record.

An activity has up to four (see ``docs/activities.md``), each on a clock of its own:

* **start-to-close** bounds one attempt from its start — when a worker takes it — to its end.
  An attempt waiting in line for a free worker is not late work, so its clock is not running;
* **schedule-to-start** bounds how long an attempt may wait for a worker, from being
  scheduled or from its retry becoming due; it is not retried (no retry starts sooner);
* **schedule-to-close** bounds them all, retries' back-off included; its end is kept in the
  task's copy of the options (:data:`CLOSE_BY`) and caps every other deadline;
* the **heartbeat** timeout bounds the silence since the attempt's start or its last
  heartbeat.

``ActivityTask.deadline`` is the one the sweeper watches, so a dead worker's attempt is
noticed without anyone left to notice it: before the attempt starts it is the sooner of the
schedule-to-start and schedule-to-close ends (or none), and the statement that claims the
attempt (:func:`.sql.claim_attempt`) stamps ``started_at`` and moves it to the start-to-close
end (:func:`started_deadline`), in the round trip the claim already took. Each error names
the timeout it hit in its ``timeout`` field, so a retry can tell "this attempt was slow" from
"no time is left".
"""

from __future__ import annotations

import traceback
from datetime import datetime, timedelta
from typing import Any

from ..errors import ActivityTimeoutError
from ..models import ActivityTask
from ..options import ActivityOptions

#: The key of ``ActivityTask.options`` that holds the schedule-to-close deadline (ISO 8601).
CLOSE_BY = "close_by"


def error_info(exc: BaseException, timeout: str | None = None) -> dict[str, Any]:
    """An attempt's error as recorded; ``timeout`` names the timeout an
    ``ActivityTimeoutError`` hit (``start_to_close``, ``schedule_to_start``, ``heartbeat``,
    ``schedule_to_close``)."""
    info = {
        "type": type(exc).__name__,
        "types": [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)],
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
    }
    if timeout is not None:
        info["timeout"] = timeout
    return info


def task_options(options: ActivityOptions, now: datetime) -> tuple[dict[str, Any], datetime | None]:
    """A new task's options (with its schedule-to-close end) and its first attempt's deadline
    while it waits for a worker (:func:`waiting_deadline`)."""
    stored = options.to_json()
    end = None
    if options.schedule_to_close_timeout is not None:
        end = now + options.schedule_to_close_timeout
        stored[CLOSE_BY] = end.isoformat()
    return stored, waiting_deadline(options, now, end)


def waiting_deadline(
    options: ActivityOptions, due: datetime, end: datetime | None
) -> datetime | None:
    """The deadline of an attempt due at ``due`` that has not started: its schedule-to-start
    end or the schedule-to-close ``end``, whichever comes first; None when it has neither."""
    ends = [end] if end is not None else []
    if options.schedule_to_start_timeout is not None:
        ends.append(due + options.schedule_to_start_timeout)
    return min(ends, default=None)


def started_deadline(task: ActivityTask, now: datetime) -> datetime:
    """The deadline of an attempt that starts at ``now``: its start-to-close end, capped by
    the schedule-to-close end (what :func:`.sql.claim_attempt` computes in SQL)."""
    deadline = now + timedelta(seconds=float(task.options["timeout"]))
    end = close_by(task)
    return deadline if end is None else min(deadline, end)


def needs_start_stamp(task: ActivityTask) -> bool:
    """Whether an attempt that starts without :func:`.sql.claim_attempt` (an eager one) must
    record its start at once: only when its waiting deadline would misjudge its dead worker
    (a schedule-to-start end, a heartbeat timeout counted from the start). Otherwise a lease
    renewal records it; one killed before that is sent again, like a lost message."""
    options = task.options or {}
    return bool(options.get("schedule_to_start_timeout") or options.get("heartbeat_timeout"))


def close_by(task: ActivityTask) -> datetime | None:
    """When the activity's schedule-to-close timeout ends (None: it has none)."""
    value = (task.options or {}).get(CLOSE_BY)
    return datetime.fromisoformat(value) if value else None


def heartbeat_timeout(task: ActivityTask) -> float | None:
    """The task's heartbeat timeout in seconds, or None."""
    seconds = (task.options or {}).get("heartbeat_timeout")
    return float(seconds) if seconds else None


def heartbeat_missed(task: ActivityTask, now: datetime) -> bool:
    """Whether the attempt started, then sent no heartbeat for its heartbeat timeout."""
    seconds = heartbeat_timeout(task)
    last = task.heartbeat_at or task.started_at
    return bool(seconds and last and last + timedelta(seconds=seconds) <= now)


def deadline_error(task: ActivityTask, attempt: int, cause: str) -> dict[str, Any]:
    """The error of an attempt that reached its deadline. Started: start-to-close, or
    schedule-to-close when that ends first. Not started: schedule-to-start, or again
    schedule-to-close when that ends first. ``cause`` says how the attempt went (did not
    finish, its worker died); an attempt that did not start says so itself."""
    options = ActivityOptions.from_json(task.options)
    end = close_by(task)
    started = task.started_at is not None
    if not started:
        cause = "was not started"
    if end is not None and task.deadline is not None and task.deadline >= end:
        return error_info(
            ActivityTimeoutError(
                f"Attempt {attempt} of {task.name!r} {cause} within the activity's "
                f"{_seconds(options.schedule_to_close_timeout):g}s schedule-to-close timeout."
            ),
            "schedule_to_close",
        )
    if not started:
        return error_info(
            ActivityTimeoutError(
                f"Attempt {attempt} of {task.name!r} {cause} within its "
                f"{_seconds(options.schedule_to_start_timeout):g}s schedule-to-start timeout "
                "(no worker of its queue was free to take it)."
            ),
            "schedule_to_start",
        )
    return error_info(
        ActivityTimeoutError(
            f"Attempt {attempt} of {task.name!r} {cause} within its "
            f"{_seconds(options.timeout):g}s timeout."
        ),
        "start_to_close",
    )


def retryable(error: dict[str, Any]) -> bool:
    """Whether a timeout error may be retried: not when the attempt never started (as on
    Temporal, a retry would wait in the same line) nor when no time is left."""
    return error.get("timeout") not in ("schedule_to_start", "schedule_to_close")


def heartbeat_error(task: ActivityTask, attempt: int, why: str = "") -> dict[str, Any]:
    error = ActivityTimeoutError(
        f"Attempt {attempt} of {task.name!r} sent no heartbeat within its "
        f"{heartbeat_timeout(task) or 0:g}s heartbeat timeout{why}."
    )
    return error_info(error, "heartbeat")


def schedule_to_close_error(
    task: ActivityTask, attempt: int, error: dict[str, Any]
) -> dict[str, Any]:
    """The error of an activity whose schedule-to-close timeout ends before its next retry
    could start: a timeout, quoting the last attempt's error."""
    if error.get("timeout") == "schedule_to_close":
        return error  # the attempt itself ran into it: its error says so already
    limit = ActivityOptions.from_json(task.options).schedule_to_close_timeout
    timeout = ActivityTimeoutError(
        f"Activity {task.name!r} did not complete within its {_seconds(limit):g}s "
        f"schedule-to-close timeout (attempt {attempt}: {error.get('type')}: "
        f"{error.get('message')})."
    )
    return {**error_info(timeout, "schedule_to_close"), "traceback": ""}


def _seconds(delta: timedelta | None) -> float:
    return delta.total_seconds() if delta is not None else 0.0
