"""Conventions shared by every side of the Temporal executor: how our values look in Temporal.

One place decides how a beluga run is written into Temporal and read back, so the workflow
(inside Temporal's sandbox), the activity, the client, the history translator and the mirror
agree:

* the Temporal workflow *type* is the beluga workflow name (public name or ``module:qualname``),
  its single argument the run's input, its execution timeout the run's timeout, and its memo
  holds the function's import reference under :data:`REFERENCE_MEMO`;
* an activity's Temporal *type* is its stable name (``@workflow.activity(name=...)``, else the
  function's name), its one argument the activity's input, its activity id ``<step>-<name>``,
  and its :data:`ACTIVITY_HEADER` carries what only we need. Activities scheduled by earlier
  versions (type ``module:qualname``, id the step, one argument ``{"name", "input",
  "options"}``) still read back and run;
* a signal is sent with two arguments, the payload and ``{"sender": ...}`` (one, the payload,
  is accepted too: that is what ``temporal workflow signal --input`` sends);
* the signal wait in progress is published in the memo under :data:`WAIT_MEMO` and, for runs
  started with it, in the ``BelugaWaitingFor`` search attribute (:mod:`.visibility`); timers carry
  a summary ``step N: sleep`` or ``step N: timeout of signal 'x'`` so history can be read back;
* a failed run ends with a Temporal ``ApplicationError`` whose type is the beluga error class
  name and whose first detail is :func:`~beluga_workflows.interpreter.error_to_json`.

Nothing here imports Django: the workflow module uses it inside the sandbox.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import temporalio.common
import temporalio.exceptions
from temporalio.client import WorkflowExecutionStatus

from ...errors import NonDeterminismError, WorkflowError, error_from_json, error_to_json
from ...options import ActivityOptions, Status
from ...registry import display_name

#: Memo key holding the workflow function's ``module:qualname``, so any worker can import it.
REFERENCE_MEMO = "beluga_reference"

#: Memo key holding the signal waits a run started and what it is blocked on, when signals
#: are involved: ``{"started": [{"signal", "step", "timeout", "deadline"}, ...],
#: "waiting": {"for", "since", "deadline"} | None}`` (Temporal has no event for a signal wait).
WAIT_MEMO = "beluga_wait"

#: Memo key of a child workflow: the parent's step that started it.
PARENT_STEP_MEMO = "beluga_parent_step"

#: Memo key of the runs we start whose activities are named (``"named"``): a run with a
#: :data:`REFERENCE_MEMO` but not this one was started by an earlier version, and its
#: activities keep their earlier form (see :func:`legacy_activity`) so its history replays.
ACTIVITIES_MEMO = "beluga_activities"
ACTIVITIES_NAMED = "named"

_TIMER_SUMMARY = re.compile(r"^step (\d+): (sleep|timer|timeout of signal|timeout)")
_NONDETERMINISM = re.compile(r"(?:\[TMPRL1100\] )?Nondeterminism error", re.IGNORECASE)
_ACTIVITY_MISMATCH = re.compile(r"scheduled event '([^']*)' does not match .* command '([^']*)'")
_STEP_ID = re.compile(r"(\d+)-(.+)")

STATUS_FROM_TEMPORAL = {
    WorkflowExecutionStatus.RUNNING: Status.RUNNING,
    WorkflowExecutionStatus.COMPLETED: Status.COMPLETED,
    WorkflowExecutionStatus.FAILED: Status.FAILED,
    WorkflowExecutionStatus.CANCELED: Status.CANCELED,
    # An operator's `temporal workflow terminate`: the run did not finish its work.
    WorkflowExecutionStatus.TERMINATED: Status.FAILED,
    WorkflowExecutionStatus.CONTINUED_AS_NEW: Status.CONTINUED_AS_NEW,
    WorkflowExecutionStatus.TIMED_OUT: Status.TIMED_OUT,
}

STATUS_TO_QUERY = {
    Status.RUNNING: "ExecutionStatus = 'Running'",
    Status.COMPLETED: "ExecutionStatus = 'Completed'",
    Status.CONTINUED_AS_NEW: "ExecutionStatus = 'ContinuedAsNew'",
    Status.FAILED: "ExecutionStatus IN ('Failed', 'Terminated')",
    Status.CANCELED: "ExecutionStatus = 'Canceled'",
    Status.TIMED_OUT: "ExecutionStatus = 'TimedOut'",
}


def literal(value: str) -> str:
    """``value`` as a string in a Temporal visibility query."""
    if "\\" in value:
        raise ValueError(f"{value!r} cannot be matched in a Temporal visibility query.")
    return "'" + value.replace("'", "\\'") + "'"


def status_from_temporal(status: WorkflowExecutionStatus | int | None) -> Status:
    if status is None:
        return Status.RUNNING
    return STATUS_FROM_TEMPORAL[WorkflowExecutionStatus(status)]


# Timers ----------------------------------------------------------------------------------


def timer_summary(step: int, name: str) -> str:
    """``step 3: sleep`` (``ctx.sleep``), ``step 3: timer`` or ``step 3: timeout`` (wait_any)."""
    return f"step {step}: {name}"


def signal_timeout_summary(step: int, name: str) -> str:
    return f"step {step}: timeout of signal {name!r}"


def child_summary(step: int) -> str:
    return f"step {step}: child workflow"


def parse_timer_summary(summary: str | None) -> tuple[int, str] | None:
    """``(step, name)`` for a timer we started — name ``sleep``, ``timer``, ``timeout`` or
    ``signal_timeout`` — else None."""
    match = _TIMER_SUMMARY.match(summary or "")
    if match is None:
        return None
    kind = match.group(2)
    return int(match.group(1)), "signal_timeout" if kind == "timeout of signal" else kind


# Activities ------------------------------------------------------------------------------

#: The Temporal header of each activity we schedule: ``{"reference", "step", "options"}`` —
#: where the function is (for the worker) and the step's options as our history records them.
ACTIVITY_HEADER = "beluga-activity"


def activity_id(step: int, name: str) -> str:
    """``3-research_activity``: readable in Temporal's UI, unique in the run (the step is)."""
    return f"{step}-{name}"


def activity_step(activity_id: str) -> int | None:
    """The step of an activity id we gave (``3-research_activity``, or ``3`` before)."""
    head = activity_id.partition("-")[0]
    return int(head) if head.isdigit() else None


def legacy_activity(activity_type: str, args: list[Any]) -> dict[str, Any] | None:
    """The ``{"name", "input", "options"}`` argument of an activity scheduled by an earlier
    version (its type an import reference), else None."""
    spec = args[0] if len(args) == 1 else None
    if ":" in activity_type and isinstance(spec, dict) and {"input", "options"} <= set(spec):
        return spec
    return None


def retry_policy(options: ActivityOptions) -> temporalio.common.RetryPolicy:
    """Our RetryPolicy as Temporal's. Temporal has no jitter and wants max >= initial."""
    retry = options.retry
    initial = max(retry.initial_interval, timedelta(milliseconds=1))
    return temporalio.common.RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=retry.backoff_coefficient,
        maximum_interval=max(retry.max_interval, initial),
        maximum_attempts=retry.max_attempts,
        non_retryable_error_types=retry.error_names(),
    )


#: Temporal's timeout types by the names the built-in engine records (``error["timeout"]``).
TIMEOUT_KINDS: dict[int, str] = {
    temporalio.exceptions.TimeoutType.START_TO_CLOSE: "start_to_close",
    temporalio.exceptions.TimeoutType.SCHEDULE_TO_START: "schedule_to_start",
    temporalio.exceptions.TimeoutType.SCHEDULE_TO_CLOSE: "schedule_to_close",
    temporalio.exceptions.TimeoutType.HEARTBEAT: "heartbeat",
}


def activity_failure(
    err: temporalio.exceptions.ActivityError, name: str, options: ActivityOptions
) -> tuple[int, dict[str, Any]]:
    """``(attempts, {"type", "message"})`` of an activity that failed for good."""
    cause = err.cause
    attempt = 0
    if isinstance(cause, temporalio.exceptions.ApplicationError):
        detail = cause.details[0] if cause.details else None
        if isinstance(detail, dict):
            attempt = int(detail.get("attempt") or 0)
        error = {"type": cause.type or "Error", "message": cause.message}
    elif isinstance(cause, temporalio.exceptions.TimeoutError):
        error = {"type": "ActivityTimeoutError", "message": _timeout_message(name, cause, options)}
        if cause.type in TIMEOUT_KINDS:  # which one, as the built-in engine records it
            error["timeout"] = TIMEOUT_KINDS[cause.type]
    elif cause is not None:
        error = {"type": type(cause).__name__, "message": getattr(cause, "message", str(cause))}
    else:
        error = {"type": "ActivityError", "message": err.message}
    if not attempt:
        exhausted = err.retry_state == temporalio.exceptions.RetryState.MAXIMUM_ATTEMPTS_REACHED
        attempt = options.retry.max_attempts if exhausted else 1
    return attempt, error


def _timeout_message(
    name: str, cause: temporalio.exceptions.TimeoutError, options: ActivityOptions
) -> str:
    kind = cause.type
    if kind == temporalio.exceptions.TimeoutType.HEARTBEAT and options.heartbeat_timeout:
        limit = options.heartbeat_timeout.total_seconds()
        return f"{name!r} sent no heartbeat for {limit:g}s (its heartbeat timeout)."
    if kind == temporalio.exceptions.TimeoutType.SCHEDULE_TO_START and (
        options.schedule_to_start_timeout
    ):
        limit = options.schedule_to_start_timeout.total_seconds()
        return (
            f"{name!r} was not started within its {limit:g}s schedule-to-start timeout "
            "(no worker of its task queue was free to take it)."
        )
    if kind == temporalio.exceptions.TimeoutType.SCHEDULE_TO_CLOSE and (
        options.schedule_to_close_timeout
    ):
        limit = options.schedule_to_close_timeout.total_seconds()
        return f"{name!r} did not finish within its {limit:g}s schedule-to-close timeout."
    return f"{name!r} ran past its {options.timeout.total_seconds():g}s timeout."


# Child workflows -------------------------------------------------------------------------


def child_failure(err: temporalio.exceptions.ChildWorkflowError) -> tuple[Status, dict[str, Any]]:
    """How a child ended (failed, canceled, timed out) and its ``error`` dict."""
    cause = err.cause
    if isinstance(cause, temporalio.exceptions.CancelledError):
        return Status.CANCELED, {"type": "WorkflowCanceledError", "message": str(cause)}
    if isinstance(cause, temporalio.exceptions.TimeoutError):
        return Status.TIMED_OUT, {"type": "WorkflowTimeoutError", "message": str(cause)}
    return Status.FAILED, error_json_from_failure(cause)


#: Temporal's marker for ``workflow.patched`` / ``deprecate_patch``.
PATCH_MARKER = "core_patch"


def patch_marker(attributes: Any, payloads: Any) -> tuple[str, bool] | None:
    """``(change_id, deprecated)`` of a ``MarkerRecorded`` event written by ``patched()``."""
    if attributes.marker_name != PATCH_MARKER:
        return None
    change_id, deprecated = "", False
    for key, values in attributes.details.items():
        for value in payloads.from_payloads(list(values.payloads)) if values.payloads else []:
            if isinstance(value, dict):
                change_id = str(value.get("id") or value.get("patch_id") or change_id)
                deprecated = bool(value.get("deprecated", deprecated))
            elif key in ("patch_id", "id") and isinstance(value, str):
                change_id = value
            elif key == "deprecated":
                deprecated = bool(value)
    return (change_id, deprecated) if change_id else None


# Workflow outcomes -----------------------------------------------------------------------


def to_temporal_failure(error: BaseException) -> temporalio.exceptions.ApplicationError:
    """How a failed beluga run ends in Temporal: the beluga error travels as the detail."""
    data = error_to_json(error)
    return temporalio.exceptions.ApplicationError(
        str(error) or type(error).__name__, data, type=data["type"], non_retryable=True
    )


def error_json_from_failure(cause: BaseException | None) -> dict[str, Any]:
    """The beluga ``error`` dict (as the default engine stores it) of a failed Temporal run."""
    if isinstance(cause, temporalio.exceptions.ApplicationError):
        detail = cause.details[0] if cause.details else None
        if isinstance(detail, dict) and "type" in detail:
            return detail
    if isinstance(cause, temporalio.exceptions.TerminatedError):
        return {"type": "WorkflowTerminated", "message": cause.message}
    if cause is None:
        return {"type": "Error", "message": "The workflow failed."}
    message = getattr(cause, "message", None) or str(cause)
    if _NONDETERMINISM.search(message):
        return error_to_json(_nondeterminism(message))
    kind = getattr(cause, "type", None) or type(cause).__name__
    return {"type": kind, "message": message}


def _nondeterminism(message: str) -> NonDeterminismError:
    """Temporal's own finding (on replay, the code issued other commands than the history
    recorded) as the error class the default engine raises."""
    match = _ACTIVITY_MISMATCH.search(message)
    if match:
        # Activity ids are `<step>-<name>` (older runs: activity types `module:qualname`).
        ids = [_STEP_ID.fullmatch(m) for m in match.groups()]
        if all(ids):
            (step, recorded), (_, now) = (i.groups() for i in ids)  # type: ignore[union-attr]
            return NonDeterminismError(int(step), f"activity {recorded!r}", f"activity {now!r}")
        recorded, now = (f"activity {display_name(m)!r}" for m in match.groups())
        return NonDeterminismError(-1, recorded, now)
    detail = _NONDETERMINISM.split(message, maxsplit=1)[-1].strip(" :") or message
    return NonDeterminismError(-1, "other steps", f"something else (Temporal: {detail})")


def error_from_failure(cause: BaseException | None) -> WorkflowError:
    return error_from_json(error_json_from_failure(cause))
