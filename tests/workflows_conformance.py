"""Workflows and activities of the conformance suite, run unchanged on every executor.

Module-level functions, so `runworker` subprocesses import them as `tests.workflows_conformance`;
public names start with `conf_`. Activities count their runs with `harness.record_run`, so
tests can check how often each really ran, outside the engine's bookkeeping.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

from beluga_workflows import workflow
from tests import harness

#: Set in a worker's environment to run "version 2" of `conf_nondeterminism`.
CODE_VERSION_ENV = "BELUGA_TEST_CODE_VERSION"
# Read once, at import: a new deployment is a new worker process.
CODE_VERSION = os.environ.get(CODE_VERSION_ENV, "1")


# Activities -------------------------------------------------------------------------------


def research(ctx: workflow.ActivityContext, topic: str) -> str:
    harness.record_run("research", ctx.activity_id)
    return f"Research findings on {topic!r}: key insights discovered."


def report(ctx: workflow.ActivityContext, findings: str) -> str:
    harness.record_run("report", ctx.activity_id)
    return f"Final Report\n\n{findings}\n\nConclusion: Action recommended."


def flaky(ctx: workflow.ActivityContext, args: dict[str, Any]) -> int:
    """Fails its first `fails` attempts with `error` (a builtin exception name)."""
    harness.record_run("flaky", str(ctx.attempt))
    if ctx.attempt <= args["fails"]:
        raise {"PermissionError": PermissionError}.get(args.get("error", ""), ConnectionError)(
            f"attempt {ctx.attempt} failed"
        )
    return ctx.attempt


def slow(ctx: workflow.ActivityContext, seconds: float) -> str:
    """Runs `seconds` unless its attempt is cancelled or times out first."""
    harness.record_run("slow")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.heartbeat({"left": round(deadline - time.monotonic(), 1)})
        if ctx.is_cancelled():
            harness.record_run("slow-cancelled")
            return "cancelled"
        time.sleep(0.1)
    return "done"


def cleanup(ctx: workflow.ActivityContext, reason: str) -> str:
    harness.record_run("cleanup", reason)
    return "cleaned up"


def step_a(ctx: workflow.ActivityContext, _: Any) -> str:
    return "a"


def step_b(ctx: workflow.ActivityContext, _: Any) -> str:
    return "b"


# Workflows --------------------------------------------------------------------------------


@workflow.defn(name="conf_tutorial")
def tutorial(ctx: workflow.WorkflowContext, topic: str) -> str:
    """The README's tutorial: research, wait for approval, report."""
    findings = ctx.execute_activity(
        research,
        topic,
        workflow.with_activity_retry(
            workflow.RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=1))
        ),
        workflow.with_activity_timeout(timedelta(minutes=1)),
    )
    signal = ctx.wait_for_signal("approval", timedelta(hours=24))
    if signal.payload is not True:
        return "Workflow rejected by reviewer."
    return ctx.execute_activity(
        report, findings, workflow.with_activity_timeout(timedelta(minutes=1))
    )


@workflow.defn(name="conf_retry")
def retry(ctx: workflow.WorkflowContext, args: dict[str, Any]) -> Any:
    policy = workflow.RetryPolicy(
        max_attempts=args["max_attempts"],
        initial_interval=timedelta(milliseconds=100),
        max_interval=timedelta(milliseconds=200),
        non_retryable_errors=(PermissionError,),
    )
    return ctx.execute_activity(
        flaky, args, workflow.with_activity_retry(policy), workflow.with_activity_timeout(10)
    )


@workflow.defn(name="conf_activity_timeout")
def activity_timeout(ctx: workflow.WorkflowContext, seconds: float) -> dict[str, Any]:
    try:
        ctx.execute_activity(
            slow,
            seconds,
            workflow.with_activity_timeout(1),
            workflow.with_activity_retry(workflow.RetryPolicy(max_attempts=1)),
        )
    except workflow.ActivityError as exc:
        return {"cause_type": exc.cause_type, "attempts": exc.attempts}
    return {"cause_type": None, "attempts": 1}


@workflow.defn(name="conf_signal_order")
def signal_order(ctx: workflow.WorkflowContext, count: int) -> list[Any]:
    """Waits for `go`, then takes `count` `item` signals — all may have arrived long before."""
    ctx.wait_for_signal("go")
    items = []
    for payload in ctx.receive_signal("item"):
        items.append(payload)
        if len(items) == count:
            return items
    return items


@workflow.defn(name="conf_signal_timeout")
def signal_timeout(ctx: workflow.WorkflowContext, args: dict[str, Any]) -> str:
    try:
        signal = ctx.wait_for_signal("approval", args["seconds"])
    except workflow.SignalTimeoutError as exc:
        if args.get("reraise"):
            raise
        return f"no approval within {exc.timeout_seconds:g}s"
    return f"approved: {signal.payload}"


@workflow.defn(name="conf_cancel")
def cancel_with_cleanup(ctx: workflow.WorkflowContext, wait_on: str) -> str:
    """Blocks on a signal or a long activity; on cancel runs a cleanup activity, re-raises."""
    try:
        if wait_on == "activity":
            ctx.execute_activity(slow, 30, workflow.with_activity_timeout(60))
        else:
            ctx.wait_for_signal("never")
    except workflow.WorkflowCanceledError:
        ctx.execute_activity(cleanup, wait_on)
        raise
    return "not canceled"


@workflow.defn(name="conf_waits_forever")
def waits_forever(ctx: workflow.WorkflowContext, _: Any) -> Any:
    return ctx.wait_for_signal("finish").payload


@workflow.defn(name="conf_two_signals")
def two_signals(ctx: workflow.WorkflowContext, _: Any) -> Any:
    first = ctx.wait_for_signal("first").payload
    return [first, ctx.wait_for_signal("second").payload]


@workflow.defn(name="conf_sleep")
def sleep(ctx: workflow.WorkflowContext, seconds: float) -> float:
    before = ctx.now()
    ctx.sleep(seconds)
    return (ctx.now() - before).total_seconds()


@workflow.defn(name="conf_queries", signals=["finish", "extend"], queries=["progress"])
def queries(ctx: workflow.WorkflowContext, _: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"stage": "started", "random": ctx.random(), "uuid": str(ctx.uuid4())}
    ctx.set_query_handler("progress", lambda: dict(state))
    state["stage"] = "waiting"
    signal = ctx.wait_for_signal("finish")
    state["stage"] = "finished"
    return {"payload": signal.payload, "random": state["random"], "uuid": state["uuid"]}


@workflow.defn(name="conf_nondeterminism")
def nondeterminism(ctx: workflow.WorkflowContext, _: Any) -> str:
    """Version 2 of this code calls another activity first: runs begun on version 1 break."""
    ctx.execute_activity(step_b if CODE_VERSION == "2" else step_a, None)
    ctx.wait_for_signal("go")
    return "done"
