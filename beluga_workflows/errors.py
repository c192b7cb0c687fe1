"""The error tree of beluga_workflows.

Every error a user can see derives from :class:`WorkflowError`. Data travels on attributes so
callers (REST views, the CLI, tests) never parse messages. The internal "suspend this run"
signal is *not* here: it lives in :mod:`beluga_workflows.interpreter` as a ``BaseException`` so
that a workflow's ``except Exception`` cannot swallow it.
"""

from __future__ import annotations

from typing import Any


class WorkflowError(Exception):
    """Base class of every beluga_workflows error."""


class WorkflowNotFoundError(WorkflowError):
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"No workflow run with id {workflow_id!r}.")


class WorkflowAlreadyStartedError(WorkflowError):
    def __init__(self, workflow_id: str, run_id: str | None = None) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        super().__init__(
            f"A workflow with id {workflow_id!r} is already running; wait for it to finish, "
            "cancel it, or start the new one under another id."
        )


class WorkflowClosedError(WorkflowError):
    """Signal or cancel sent to a run that has already finished."""

    def __init__(self, workflow_id: str, status: str, action: str) -> None:
        self.workflow_id = workflow_id
        self.status = status
        self.action = action
        super().__init__(
            f"Cannot {action} workflow {workflow_id!r}: it has already finished "
            f"(status {status!r}). Nothing was recorded."
        )


class ApplicationError(WorkflowError):
    """An exception raised by user code, carried across processes by type name and message."""

    def __init__(self, type_name: str, message: str, details: Any = None) -> None:
        self.type_name = type_name
        self.message = message
        self.details = details
        super().__init__(f"{type_name}: {message}" if message else type_name)


class WorkflowFailedError(WorkflowError):
    """Raised by ``handle.result()`` when the workflow function failed; ``cause`` says why."""

    def __init__(self, workflow_id: str, cause: WorkflowError) -> None:
        self.workflow_id = workflow_id
        self.cause = cause
        super().__init__(f"Workflow {workflow_id!r} failed: {cause}")
        self.__cause__ = cause


class WorkflowCanceledError(WorkflowError):
    """The run was canceled. Raised inside workflow code at its current wait, and by
    ``handle.result()`` on a canceled run."""

    def __init__(self, workflow_id: str = "", message: str = "") -> None:
        self.workflow_id = workflow_id
        super().__init__(message or f"Workflow {workflow_id!r} was canceled.")


class WorkflowTimeoutError(WorkflowError):
    def __init__(self, workflow_id: str, timeout_seconds: float | None = None) -> None:
        self.workflow_id = workflow_id
        self.timeout_seconds = timeout_seconds
        limit = f" after {timeout_seconds:g}s" if timeout_seconds is not None else ""
        super().__init__(f"Workflow {workflow_id!r} timed out{limit}.")


class ActivityError(WorkflowError):
    """An activity failed for good (retries exhausted, non-retryable error, or timeout)."""

    def __init__(
        self, activity: str, attempts: int, cause_type: str, cause_message: str, step: int = -1
    ) -> None:
        self.activity = activity
        self.attempts = attempts
        self.cause_type = cause_type
        self.cause_message = cause_message
        self.step = step
        super().__init__(
            f"Activity {activity!r} failed after {attempts} attempt(s): "
            f"{cause_type}: {cause_message}"
        )

    @property
    def cause(self) -> ApplicationError:
        return ApplicationError(self.cause_type, self.cause_message)


class ActivityTimeoutError(WorkflowError):
    """One activity attempt ran past its timeout (the cause of an ActivityError)."""


class SignalTimeoutError(WorkflowError):
    def __init__(self, signal_name: str, timeout_seconds: float | None) -> None:
        self.signal_name = signal_name
        self.timeout_seconds = timeout_seconds
        super().__init__(f"No {signal_name!r} signal arrived within {timeout_seconds or 0:g}s.")


class NonDeterminismError(WorkflowError):
    """The workflow code no longer matches its recorded history."""

    def __init__(self, step: int, expected: str, got: str) -> None:
        self.step = step
        self.expected = expected
        self.got = got
        super().__init__(
            f"Non-deterministic workflow at step {step}: the history recorded {expected}, "
            f"but the code now asks for {got}. Workflow code must make the same calls in the "
            "same order on every replay; deploy changes under a new workflow name."
        )


class WorkflowNotHeldError(WorkflowError):
    """``retry`` asked of a run that is not held for a fix (see ``ON_WORKFLOW_ERROR``)."""

    def __init__(self, workflow_id: str, status: str) -> None:
        self.workflow_id = workflow_id
        self.status = status
        super().__init__(
            f"Workflow {workflow_id!r} is not held for a fix (status {status!r}): there is "
            "nothing to retry. Only a running run whose workflow code failed under "
            "ON_WORKFLOW_ERROR = 'hold' can be retried."
        )


def is_bug(error: BaseException) -> bool:
    """Whether a failure of workflow code is a bug (held under ``ON_WORKFLOW_ERROR = "hold"``)
    rather than a deliberate outcome (which fails the run either way).

    Bugs: any exception that is not a :class:`WorkflowError` (``TypeError``, ``KeyError``…),
    non-determinism, a determinism violation, a value that is not JSON. Deliberate: every other
    ``WorkflowError`` the code raises or lets through — ``ApplicationError`` (raise it to fail a
    run on purpose), ``ActivityError``, ``SignalTimeoutError``, a child's ``WorkflowFailedError``,
    ``WorkflowCanceledError``. Temporal's SDK draws the same line (``FailureError`` fails the
    workflow, anything else its workflow task).
    """
    if not isinstance(error, WorkflowError):
        return isinstance(error, Exception)
    return isinstance(error, NonDeterminismError | DeterminismViolationError | InvalidPayloadError)


class DeterminismViolationError(WorkflowError):
    """Workflow code did something a replay would not repeat the same way (read the wall
    clock, drew a random number, did I/O, started a thread, queried the database).

    ``call`` names what it called, ``replacement`` what to use instead and ``location`` where
    the workflow code made the call. Raised at the call by :mod:`beluga_workflows.determinism`;
    the run fails with it even if the workflow code catches it.
    """

    def __init__(self, call: str, reason: str, replacement: str, location: str = "") -> None:
        self.call = call
        self.reason = reason
        self.replacement = replacement
        self.location = location
        where = f" (in {location})" if location else ""
        super().__init__(
            f"Workflow code must be deterministic, but it called {call}{where}, which "
            f"{reason}. Use {replacement} instead."
        )


class ExecutorNotFoundError(WorkflowError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"No executor named {name!r}; registered executors: {', '.join(known)}.")


class MissingDependencyError(WorkflowError, ImportError):
    """An optional part was used without the package it needs (the message says which extra)."""


class InvalidPayloadError(WorkflowError, TypeError):
    """A workflow input, result, activity input/result or signal payload is not JSON (or
    JSON that cannot be stored: a NUL character, a lone surrogate, too deep, too big)."""

    def __init__(self, what: str, path: str, value: Any, reason: str = "") -> None:
        self.what = what
        self.path = path = path if len(path) <= 120 else path[:117] + "..."
        super().__init__(
            f"{what} {reason} at {path}."
            if reason
            else f"{what} must be JSON (dict, list, str, int, float, bool, None); "
            f"found {type(value).__name__} at {path}."
        )


class PayloadTooLargeError(InvalidPayloadError):
    """A payload larger than ``BELUGA_WORKFLOWS["MAX_PAYLOAD_BYTES"]``."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        WorkflowError.__init__(
            self,
            f"{what} is {size:,} bytes as JSON; the limit is {limit:,} "
            "(BELUGA_WORKFLOWS['MAX_PAYLOAD_BYTES']). Store large data elsewhere and pass a "
            "reference.",
        )
        self.what = what
        self.path = "$"


class QueryError(WorkflowError):
    """A query type the run has no handler for, or a handler that raised."""


class WorkflowLimitError(WorkflowError):
    """A run reached one of the engine's per-run limits (``MAX_PENDING_STEPS``,
    ``MAX_HISTORY_EVENTS``, ``MAX_HISTORY_BYTES``): refused at once, never a hang. ``limit``
    names the setting, ``value`` what the run reached, ``maximum`` the setting's value."""

    def __init__(self, workflow_id: str, limit: str, value: int, maximum: int, what: str) -> None:
        super().__init__(
            f"Workflow {workflow_id!r} reached {limit} = {maximum:,}: {what} ({value:,}). "
            "Split the work: ctx.continue_as_new() starts a fresh history, and child workflows "
            "each carry a part of a fan-out (docs/operations.md, 'Limits per run')."
        )
        self.workflow_id = workflow_id
        self.limit = limit
        self.value = value
        self.maximum = maximum
        self.what = what


class WorkflowNameError(WorkflowError, LookupError):
    """A workflow name that is not registered (or an unimportable function reference)."""


class UntrustedReferenceError(WorkflowNameError):
    """A reference to something that is not the project's own function (``os:getpid``):
    no worker will ever run it."""


class ResultTimeoutError(WorkflowError, TimeoutError):
    """``handle.result(timeout=...)`` gave up waiting; the run goes on."""

    def __init__(self, workflow_id: str, timeout: float | None) -> None:
        self.workflow_id = workflow_id
        self.timeout = timeout
        super().__init__(
            f"Workflow {workflow_id!r} did not finish within {timeout:g}s; it is still running."
            if timeout is not None
            else f"Workflow {workflow_id!r} did not finish."
        )


# Errors as JSON: how a failure travels in the history, the run row and Temporal -------------


def error_to_json(error: BaseException) -> dict[str, Any]:
    """A failure as the history and the run row keep it; :func:`error_from_json` reads it back."""
    data: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, ActivityError):
        data.update(
            activity=error.activity,
            attempts=error.attempts,
            cause_type=error.cause_type,
            cause_message=error.cause_message,
            step=error.step,
        )
    elif isinstance(error, NonDeterminismError):
        data.update(step=error.step, expected=error.expected, got=error.got)
    elif isinstance(error, WorkflowLimitError):
        data.update(
            workflow_id=error.workflow_id,
            limit=error.limit,
            value=error.value,
            maximum=error.maximum,
            what=error.what,
        )
    elif isinstance(error, DeterminismViolationError):
        data.update(
            call=error.call,
            reason=error.reason,
            replacement=error.replacement,
            location=error.location,
        )
    elif isinstance(error, WorkflowTimeoutError):
        data.update(workflow_id=error.workflow_id, timeout=error.timeout_seconds)
    elif isinstance(error, WorkflowFailedError):
        data.update(workflow_id=error.workflow_id, cause=error_to_json(error.cause))
    elif isinstance(error, WorkflowCanceledError | WorkflowAlreadyStartedError):
        data.update(workflow_id=error.workflow_id)
    elif isinstance(error, ApplicationError):
        data.update(type=error.type_name, message=error.message)
    if error.__traceback__ is not None and is_bug(error):
        from .tracebacks import HEADER, user_traceback

        text = user_traceback(error)
        if text.startswith(HEADER):  # where the user's code broke (if it was theirs)
            data["traceback"] = text
    return data


def held_record(error: BaseException, previous: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """What a run held for a fix keeps (``WorkflowRun.held``): the error, the user's
    traceback, since when (``previous``: the hold so far), how many passes failed, the last."""
    from .tracebacks import user_traceback

    previous = previous or {}
    data = error_to_json(error)
    return {
        "error": data,
        "traceback": data.pop("traceback", None) or user_traceback(error),
        "since": previous.get("since") or now,
        "attempts": int(previous.get("attempts", 0)) + 1,
        "last_attempt": now,
    }


def error_from_json(data: dict[str, Any]) -> WorkflowError:
    kind = data.get("type", "Error")
    if kind == "ActivityError":
        return ActivityError(
            data["activity"],
            data["attempts"],
            data["cause_type"],
            data["cause_message"],
            data.get("step", -1),
        )
    if kind == "NonDeterminismError":
        return NonDeterminismError(data["step"], data["expected"], data["got"])
    if kind == "WorkflowLimitError" and "limit" in data:
        return WorkflowLimitError(
            data.get("workflow_id", ""),
            data["limit"],
            int(data.get("value", 0)),
            int(data.get("maximum", 0)),
            data.get("what", ""),
        )
    if kind == "DeterminismViolationError" and "call" in data:
        return DeterminismViolationError(
            data["call"],
            data.get("reason", ""),
            data.get("replacement", ""),
            data.get("location", ""),
        )
    if kind == "WorkflowFailedError" and isinstance(data.get("cause"), dict):
        return WorkflowFailedError(data.get("workflow_id", ""), error_from_json(data["cause"]))
    if kind == "WorkflowCanceledError" and "workflow_id" in data:
        return WorkflowCanceledError(data["workflow_id"], data.get("message", ""))
    if kind == "WorkflowTimeoutError" and "workflow_id" in data:
        return WorkflowTimeoutError(data["workflow_id"], data.get("timeout"))
    if kind == "WorkflowAlreadyStartedError" and "workflow_id" in data:
        return WorkflowAlreadyStartedError(data["workflow_id"])
    return ApplicationError(kind, data.get("message", ""))
