"""Workflows of tests/test_observability.py (module-level, so worker subprocesses import them
as `tests.workflows_observability`)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from beluga_workflows import workflow
from tests import harness
from tests.observability_hooks import TENANT

FAST_RETRY = workflow.with_activity_retry(
    workflow.RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=100))
)


def fails_once(ctx: workflow.ActivityContext, _: Any) -> int:
    harness.record_run("fails_once", str(ctx.attempt))
    if ctx.attempt == 1:
        raise ConnectionError("the first attempt fails")
    return ctx.attempt


def inside(ctx: workflow.ActivityContext, _: Any) -> dict[str, Any]:
    """What the activity sees of its attempt: the hook's context variable, the current span."""
    from opentelemetry import trace

    span = trace.get_current_span().get_span_context()
    return {
        "tenant": TENANT.get(),
        "trace_id": f"{span.trace_id:032x}" if span.is_valid else None,
    }


def always_fails(ctx: workflow.ActivityContext, _: Any) -> None:
    raise PermissionError("never allowed")


@workflow.defn(name="obs_traced")
def traced(ctx: workflow.WorkflowContext, _: Any) -> dict[str, Any]:
    """An activity that fails once, one that looks around, then a signal."""
    attempt = ctx.execute_activity(fails_once, None, FAST_RETRY)
    seen = ctx.execute_activity(inside, None)
    go = ctx.wait_for_signal("go", timedelta(minutes=1))
    return {"attempt": attempt, "inside": seen, "go": go.payload}


@workflow.defn(name="obs_fails")
def fails(ctx: workflow.WorkflowContext, _: Any) -> None:
    ctx.execute_activity(
        always_fails, None, workflow.with_activity_retry(workflow.RetryPolicy(max_attempts=1))
    )


@workflow.defn(name="obs_sandboxed")
def sandboxed(ctx: workflow.WorkflowContext, _: Any) -> str:
    """Tries I/O, which workflow code may not do: refused inside a step, hooks or no hooks."""
    try:
        with open(os.devnull):
            return "opened"
    except Exception as exc:
        return type(exc).__name__


@workflow.defn(name="obs_held", on_error="hold")
def held(ctx: workflow.WorkflowContext, _: Any) -> Any:
    """A bug: the run is held for a fix, and a step hook sees it still running."""
    return {}["missing"]
