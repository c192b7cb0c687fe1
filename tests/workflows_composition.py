"""Workflows of the composition conformance suite: fan-out, races, children, versioning,
continue-as-new and async code, run unchanged on every executor.

Public names start with `comp_`. Activities count their runs with `harness.record_run`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from beluga_workflows import workflow
from tests import harness
from tests.workflows_conformance import CODE_VERSION

ONCE = workflow.with_activity_retry(workflow.RetryPolicy(max_attempts=1))


# Activities -------------------------------------------------------------------------------


def summarize(ctx: workflow.ActivityContext, doc: str) -> str:
    harness.record_run("summarize", doc)
    time.sleep(0.2)
    if doc.startswith("bad"):
        raise ValueError(f"cannot read {doc}")
    return f"summary of {doc}"


def slow_check(ctx: workflow.ActivityContext, seconds: float) -> str:
    harness.record_run("slow_check")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.heartbeat()
        if ctx.is_cancelled():
            harness.record_run("slow_check-cancelled")
            return "cancelled"
        time.sleep(0.1)
    return "check passed"


def audit(ctx: workflow.ActivityContext, what: str) -> str:
    harness.record_run("audit", what)
    return f"audited {what}"


def cleanup(ctx: workflow.ActivityContext, who: str) -> str:
    harness.record_run("cleanup", who)
    return "cleaned up"


async def double_async(ctx: workflow.ActivityContext, value: int) -> int:
    harness.record_run("double_async", str(value))
    await asyncio.sleep(0.05)
    return value * 2


# Workflows --------------------------------------------------------------------------------


@workflow.defn(name="comp_fan_out")
def fan_out(ctx: workflow.WorkflowContext, docs: list[str]) -> list[str]:
    futures = [ctx.start_activity(summarize, doc, ONCE) for doc in docs]
    return ctx.gather(*futures)


@workflow.defn(name="comp_race")
def race(ctx: workflow.WorkflowContext, args: dict[str, Any]) -> dict[str, Any]:
    """An approval or a slow check, whichever comes first (or neither, within a timeout)."""
    approval = ctx.signal_future("approval")
    check = ctx.start_activity(
        slow_check, args["check_seconds"], workflow.with_activity_timeout(60)
    )
    first = ctx.wait_any(approval, check, timeout=args.get("timeout"))
    if first is None:
        return {"winner": None}
    if first is approval:
        return {"winner": "approval", "payload": approval.result().payload}
    return {"winner": "check", "result": check.result()}


@workflow.defn(name="comp_child")
def child(ctx: workflow.WorkflowContext, args: dict[str, Any]) -> Any:
    mode = args["mode"]
    if mode == "wait":
        return f"child got {ctx.wait_for_signal('go').payload}"
    if mode == "fail":
        return ctx.execute_activity(summarize, "bad-child", ONCE)
    if mode == "forever":
        try:
            ctx.wait_for_signal("never")
        except workflow.WorkflowCanceledError:
            ctx.execute_activity(cleanup, "child")
            raise
    return ctx.execute_activity(summarize, args.get("doc", "child-doc"))


@workflow.defn(name="comp_parent")
def parent(ctx: workflow.WorkflowContext, args: dict[str, Any]) -> Any:
    options = workflow.WorkflowOptions(
        id=args["child_id"],
        input=args["child"],
        parent_close_policy=args.get("policy", "cancel"),
    )
    kid = ctx.start_child_workflow(child, options)
    if "signal" in args:
        kid.signal("go", args["signal"]).result()
    if args.get("detach"):
        return kid.id
    try:
        return {"result": kid.result()}
    except workflow.WorkflowFailedError as exc:
        if args.get("reraise"):
            raise
        return {"failed": type(exc.cause).__name__, "child": exc.workflow_id}


@workflow.defn(name="comp_versioned")
def versioned(ctx: workflow.WorkflowContext, _: Any) -> str:
    """Version 2 adds an audit step at the start, behind `ctx.patched`."""
    path = "original"
    if CODE_VERSION == "2" and ctx.patched("audit-step"):
        ctx.execute_activity(audit, "new runs")
        path = "patched"
    ctx.wait_for_signal("go")
    return path


@workflow.defn(name="comp_continue")
def keep_going(ctx: workflow.WorkflowContext, seen: list[Any]) -> list[Any]:
    """One `tick` per run; after three, the chain ends with all of them."""
    seen = [*seen, ctx.wait_for_signal("tick").payload]
    if len(seen) < 3:
        ctx.continue_as_new(seen)
    return seen


@workflow.defn(name="comp_async")
async def async_workflow(ctx: workflow.AsyncWorkflowContext, values: list[int]) -> dict[str, Any]:
    futures = [ctx.start_activity(double_async, value) for value in values]
    doubled = await ctx.gather(*futures)
    await ctx.sleep(timedelta(milliseconds=200))
    return {"doubled": doubled}
