"""The one Temporal activity that runs every beluga activity function.

:func:`beluga_activity` is a *dynamic* Temporal activity: its type is the activity's
``module:qualname`` reference (see :mod:`.convert`), which it imports and calls as
``fn(ActivityContext(...), input)`` in the worker's thread pool. Temporal retries it with the
policy the workflow asked for; our ``non_retryable_errors`` match any class in the exception's
MRO, as in the built-in engine, so the activity itself marks such failures non-retryable.

``ActivityContext.heartbeat`` is Temporal's heartbeat; ``is_cancelled()`` turns true when the
run is canceled or the attempt timed out — Temporal delivers that to a sync activity when it
heartbeats. No exception is thrown into the activity's thread, as in the built-in engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from ... import observability, registry
from ...activity import ActivityContext, call_activity
from ...errors import InvalidPayloadError, UntrustedReferenceError
from ...hooks import ActivityInfo
from ...serialization import ensure_json, ensure_size

#: The trace context each running attempt's headers carried, by task token (the worker's
#: interceptor, :class:`.worker.TraceCarrier`, puts it here; the attempt's thread reads it).
TRACES: dict[bytes, Any] = {}


@activity.defn(dynamic=True, no_thread_cancel_exception=True)
def beluga_activity(args: Sequence[RawValue]) -> Any:
    info = activity.info()
    spec = activity.payload_converter().from_payload(args[0].payload) if args else {}
    if not observability.enabled():
        return _attempt(info, spec, None)
    observed = observability.attempt(
        ActivityInfo(
            info.workflow_id or "",
            info.workflow_run_id or "",
            str(spec.get("name") or info.activity_type),
            f"{info.workflow_run_id}:{info.activity_id}",
            info.attempt,
            "temporal",
        ),
        parent=lambda: TRACES.get(info.task_token),
    )
    try:
        result = _attempt(info, spec, observed)
    except BaseException as exc:
        if observed is not None:
            observed.end(exc.__cause__ or exc)  # the activity's own error, not our wrapper
        raise
    if observed is not None:
        observed.end()
    return result


def _attempt(info: Any, spec: dict[str, Any], observed: observability.Attempt | None) -> Any:
    from django.db import close_old_connections

    non_retryable = set(
        (spec.get("options") or {}).get("retry", {}).get("non_retryable_errors", [])
    )
    ctx = ActivityContext(
        workflow_id=info.workflow_id or "",
        run_id=info.workflow_run_id or "",
        activity_id=f"{info.workflow_run_id}:{info.activity_id}",
        attempt=info.attempt,
        on_heartbeat=activity.heartbeat,
        cancelled=activity.is_cancelled,
    )
    close_old_connections()
    try:
        fn = registry.resolve(info.activity_type)
        if observed is None:
            result = call_activity(fn, ctx, spec.get("input"))
        else:  # its span current and its hooks around it, in this thread
            result = observed.call(lambda: call_activity(fn, ctx, spec.get("input")))
        what = f"Result of activity {spec.get('name', info.activity_type)!r}"
        return ensure_size(ensure_json(result, what), what)
    except (InvalidPayloadError, UntrustedReferenceError) as exc:  # no attempt can do better
        raise ApplicationError(
            str(exc), {"attempt": info.attempt}, type=type(exc).__name__, non_retryable=True
        ) from exc
    except Exception as exc:  # the user's activity failed
        names = [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)]
        raise ApplicationError(
            str(exc),
            {"attempt": info.attempt, "types": names},
            type=type(exc).__name__,
            non_retryable=bool(non_retryable.intersection(names)),
        ) from exc
    finally:
        close_old_connections()
