"""The one Temporal activity that runs every beluga activity function.

:func:`beluga_activity` is a *dynamic* Temporal activity: its type is the activity's stable
name (``@workflow.activity(name=...)``, else the function's name) and its one argument the
activity's input, as if a plain Temporal SDK workflow had scheduled it. It finds the function
with :func:`~beluga_workflows.registry.resolve_activity` — by the import reference our
workflows put in the :data:`~.convert.ACTIVITY_HEADER` (within the project's own modules), else
by the name — and calls ``fn(ActivityContext(...), input)`` in the worker's thread pool. A
name that is no activity of the project fails the attempt at once (non-retryable), having run
nothing. Activities scheduled by an earlier version (type ``module:qualname``, argument
``{"name", "input", "options"}``) run as before.

Temporal retries it with the policy the workflow asked for; our ``non_retryable_errors`` match
any class in the exception's MRO, as in the built-in engine, so the activity itself marks such
failures non-retryable. ``ActivityContext.heartbeat`` is Temporal's heartbeat and
``heartbeat_details`` the last details the previous attempt sent; ``is_cancelled()`` turns
true when the run is canceled or the attempt timed out — Temporal delivers that to a sync
activity when it heartbeats. No exception is thrown into the activity's thread, as in the
built-in engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from ... import observability, registry
from ...activity import ActivityContext, call_activity
from ...errors import InvalidPayloadError, WorkflowNameError
from ...hooks import ActivityInfo
from ...serialization import ensure_json, ensure_size
from . import convert

#: The trace context each running attempt's headers carried, by task token (the worker's
#: interceptor, :class:`.worker.TraceCarrier`, puts it here; the attempt's thread reads it).
TRACES: dict[bytes, Any] = {}
#: The :data:`~.convert.ACTIVITY_HEADER` of each running attempt, by task token.
SPECS: dict[bytes, Any] = {}


@contextlib.contextmanager
def carried_spec(headers: Mapping[str, Payload]) -> Iterator[None]:
    """While an attempt runs, its activity header where its thread finds it (the worker's
    inbound interceptor calls this: the activity function itself sees no headers)."""
    header = headers.get(convert.ACTIVITY_HEADER)
    if header is None:
        yield
        return
    token = activity.info().task_token
    SPECS[token] = activity.payload_converter().from_payload(header)
    try:
        yield
    finally:
        SPECS.pop(token, None)


@dataclass(frozen=True)
class _Call:
    """What an attempt runs: the activity's name, where to look for it, its input."""

    name: str
    reference: str
    step: int | None
    input: Any
    non_retryable: frozenset[str]


def _call(info: activity.Info, args: Sequence[RawValue]) -> _Call:
    converter = activity.payload_converter()
    values = [converter.from_payload(arg.payload) for arg in args]
    legacy = convert.legacy_activity(info.activity_type, values)
    spec = SPECS.get(info.task_token)
    if spec is None and legacy is not None:  # scheduled by an earlier version
        retry = (legacy.get("options") or {}).get("retry", {})
        return _Call(
            str(legacy.get("name") or registry.display_name(info.activity_type)),
            info.activity_type,
            convert.activity_step(info.activity_id),
            legacy.get("input"),
            frozenset(retry.get("non_retryable_errors", [])),
        )
    spec = spec if isinstance(spec, dict) else {}
    policy = info.retry_policy
    step = spec.get("step")
    return _Call(
        info.activity_type,
        str(spec.get("reference") or ""),
        step if isinstance(step, int) else None,
        values[0] if values else None,
        frozenset(policy.non_retryable_error_types or ()) if policy else frozenset(),
    )


@activity.defn(dynamic=True, no_thread_cancel_exception=True)
def beluga_activity(args: Sequence[RawValue]) -> Any:
    info = activity.info()
    call = _call(info, args)
    step = call.step if call.step is not None else info.activity_id
    activity_id = f"{info.workflow_run_id}:{step}"  # as on the built-in engine
    if not observability.enabled():
        return _attempt(info, call, activity_id, None)
    observed = observability.attempt(
        ActivityInfo(
            info.workflow_id or "",
            info.workflow_run_id or "",
            call.name,
            activity_id,
            info.attempt,
            "temporal",
        ),
        parent=lambda: TRACES.get(info.task_token),
    )
    try:
        result = _attempt(info, call, activity_id, observed)
    except BaseException as exc:
        if observed is not None:
            observed.end(exc.__cause__ or exc)  # the activity's own error, not our wrapper
        raise
    if observed is not None:
        observed.end()
    return result


def _attempt(
    info: activity.Info, call: _Call, activity_id: str, observed: observability.Attempt | None
) -> Any:
    from django.db import close_old_connections

    try:  # a name no activity of the project has: no attempt can do better
        fn = registry.resolve_activity(call.name, call.reference)
    except WorkflowNameError as exc:
        raise ApplicationError(
            str(exc), {"attempt": info.attempt}, type=type(exc).__name__, non_retryable=True
        ) from exc
    ctx = ActivityContext(
        workflow_id=info.workflow_id or "",
        run_id=info.workflow_run_id or "",
        activity_id=activity_id,  # the same for every attempt of the step
        attempt=info.attempt,
        on_heartbeat=activity.heartbeat,
        cancelled=activity.is_cancelled,
        heartbeat_details=info.heartbeat_details[0] if info.heartbeat_details else None,
    )
    close_old_connections()
    try:
        if observed is None:
            result = call_activity(fn, ctx, call.input)
        else:  # its span current and its hooks around it, in this thread
            result = observed.call(lambda: call_activity(fn, ctx, call.input))
        what = f"Result of activity {call.name!r}"
        return ensure_size(ensure_json(result, what), what)
    except InvalidPayloadError as exc:  # no attempt can do better
        raise ApplicationError(
            str(exc), {"attempt": info.attempt}, type=type(exc).__name__, non_retryable=True
        ) from exc
    except Exception as exc:  # the user's activity failed
        names = [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)]
        raise ApplicationError(
            str(exc),
            {"attempt": info.attempt, "types": names},
            type=type(exc).__name__,
            non_retryable=bool(call.non_retryable.intersection(names)),
        ) from exc
    finally:
        close_old_connections()
