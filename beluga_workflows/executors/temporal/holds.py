"""Runs held for a fix on Temporal: a bug fails the workflow *task*, which Temporal retries.

Under ``ON_WORKFLOW_ERROR = "hold"`` the workflow raises :class:`WorkflowCodeError` (not an
``ApplicationError``) for a bug in its code, so Temporal fails the workflow task and keeps the
run open, retrying the task until a worker's code gets through it — Temporal's own behaviour,
which a rolled-back or fixed deploy relies on. Nothing of the failed task is recorded.

Temporal writes the first failure of such a streak into the history (``WorkflowTaskFailed``,
with our message and stack trace); :class:`HeldFold` reads it back for the translation, so
``describe()``, the mirror, REST and the admin show the run as held with the user's error and
frames. A completed workflow task clears it. ``executor.retry(id)`` sends
:data:`RETRY_SIGNAL`, which the workflow ignores; Temporal still runs the next attempt on its
own schedule (docs/errors.md, "Retry now on Temporal").

This module is imported inside Temporal's sandbox (by the workflow): no Django here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio.api.enums.v1 import WorkflowTaskFailedCause

from ...tracebacks import user_stack

#: ``ON_WORKFLOW_ERROR`` as the worker read it at start (the sandbox keeps Django away).
ON_ERROR = "fail"
#: The signal ``executor.retry(id)`` sends; the workflow and the translation ignore it.
RETRY_SIGNAL = "__beluga_retry"
#: Failed workflow tasks that mean the workflow's code (not, say, a lost sticky worker).
_CODE_FAILURES = (
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE,
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_NON_DETERMINISTIC_ERROR,
)


class WorkflowCodeError(Exception):  # noqa: N818 - the name Temporal's UI shows
    """A bug in workflow code, under ``hold``: it fails the workflow task, not the run.

    Its message is the user's error (``TypeError: ...``) and its traceback the user's (the
    frames Temporal's UI shows, and the mirror reads back).
    """


def held_for_fix(error: BaseException) -> WorkflowCodeError:
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return WorkflowCodeError(message).with_traceback(error.__traceback__)


class HeldFold:
    """The part of the history translation that notices a held run."""

    held: dict[str, Any] | None = None

    def on_workflow_task_failed_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        if a.cause not in _CODE_FAILURES:
            return
        failure = a.failure
        kind = (
            failure.application_failure_info.type
            if failure.HasField("application_failure_info")
            else ""
        )
        message = failure.message
        if kind == WorkflowCodeError.__name__:
            kind, _, message = message.partition(": ")
        elif a.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_NON_DETERMINISTIC_ERROR:
            kind = "NonDeterminismError"  # Temporal's own finding, on replay
        kind = kind or "Error"
        since = self.held["since"] if self.held else at.isoformat()
        attempts = self.held["attempts"] + 1 if self.held else 1
        self.held = {
            "error": {"type": kind, "message": message},
            "traceback": user_stack(failure.stack_trace, f"{kind}: {message}"),
            "since": since,
            "attempts": attempts,
            "last_attempt": at.isoformat(),
        }

    def on_workflow_task_completed_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        self.held = None
