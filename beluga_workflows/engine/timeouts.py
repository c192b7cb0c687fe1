"""Activity timeouts on the built-in engine: an attempt's bounds and the errors they record.

An activity has up to three (see ``docs/activities.md``): start-to-close bounds each attempt
(``ActivityTask.deadline``); schedule-to-close bounds them all, retries' back-off included —
its end is kept in the task's copy of the options (:data:`CLOSE_BY`) and caps every attempt's
deadline; the heartbeat timeout bounds the silence since the attempt's start or its last
heartbeat (``ActivityTask.heartbeat_at``). Each error names the timeout it hit in its
``timeout`` field, so a retry can tell "this attempt was slow" from "no time is left".
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
    ``ActivityTimeoutError`` hit (``start_to_close``, ``heartbeat``, ``schedule_to_close``)."""
    info = {
        "type": type(exc).__name__,
        "types": [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)],
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
    }
    if timeout is not None:
        info["timeout"] = timeout
    return info


def task_options(options: ActivityOptions, now: datetime) -> tuple[dict[str, Any], datetime]:
    """A new task's options (with its schedule-to-close end) and its first attempt's deadline."""
    stored = options.to_json()
    deadline = now + options.timeout
    if options.schedule_to_close_timeout is not None:
        end = now + options.schedule_to_close_timeout
        stored[CLOSE_BY] = end.isoformat()
        deadline = min(deadline, end)
    return stored, deadline


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
    return bool(
        seconds and task.heartbeat_at and task.heartbeat_at + timedelta(seconds=seconds) <= now
    )


def deadline_error(task: ActivityTask, attempt: int, cause: str) -> dict[str, Any]:
    """The error of an attempt that reached its deadline: start-to-close, or schedule-to-close
    when that ends first. ``cause`` says how the attempt went (did not finish, did not start)."""
    options = ActivityOptions.from_json(task.options)
    end = close_by(task)
    if end is not None and task.deadline >= end:
        return error_info(
            ActivityTimeoutError(
                f"Attempt {attempt} of {task.name!r} {cause} within the activity's "
                f"{_seconds(options.schedule_to_close_timeout):g}s schedule-to-close timeout."
            ),
            "schedule_to_close",
        )
    return error_info(
        ActivityTimeoutError(
            f"Attempt {attempt} of {task.name!r} {cause} within its "
            f"{_seconds(options.timeout):g}s timeout."
        ),
        "start_to_close",
    )


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
