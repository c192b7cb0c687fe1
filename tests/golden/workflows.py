"""The workflows of the golden histories. FROZEN: their histories are checked in next to this
module and must replay unchanged, so changing a function here invalidates its history.

To add a scenario, add new functions (never edit these) and record it with
``python -m tests.golden.record`` (see that module).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from beluga_workflows import workflow


def add(ctx: workflow.ActivityContext, pair: list[int]) -> int:
    return pair[0] + pair[1]


def shout(ctx: workflow.ActivityContext, text: str) -> str:
    return text.upper()


def flaky(ctx: workflow.ActivityContext, failures: int) -> int:
    if ctx.attempt <= failures:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return ctx.attempt


def refuse(ctx: workflow.ActivityContext, reason: str) -> None:
    raise PermissionError(reason)


def pause(ctx: workflow.ActivityContext, seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


FAST_RETRY = workflow.with_activity_retry(
    workflow.RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=50))
)
NO_RETRY = workflow.with_activity_retry(
    workflow.RetryPolicy(max_attempts=3, non_retryable_errors=("PermissionError",))
)


@workflow.defn(name="golden_chain")
def chain(ctx: workflow.WorkflowContext, start: int) -> Any:
    one = ctx.execute_activity(add, [start, 1])
    two = ctx.execute_activity(add, [one, 2])
    return {"sum": two, "text": ctx.execute_activity(shout, f"total {two}")}


@workflow.defn(name="golden_retry")
def retry(ctx: workflow.WorkflowContext, failures: int) -> Any:
    return ctx.execute_activity(flaky, failures, FAST_RETRY)


@workflow.defn(name="golden_failure")
def failure(ctx: workflow.WorkflowContext, reason: str) -> Any:
    return ctx.execute_activity(refuse, reason, NO_RETRY)


@workflow.defn(name="golden_approval")
def approval(ctx: workflow.WorkflowContext, request: str) -> Any:
    ctx.sleep(timedelta(milliseconds=300))
    decision = ctx.wait_for_signal("approval", timedelta(minutes=5))
    if not decision.payload:
        return {"request": request, "approved": False}
    return {"request": request, "approved": True, "by": ctx.execute_activity(shout, request)}


@workflow.defn(name="golden_signal_timeout")
def signal_timeout(ctx: workflow.WorkflowContext, _: Any) -> Any:
    try:
        ctx.wait_for_signal("never", timedelta(milliseconds=300))
    except workflow.SignalTimeoutError:
        return "timed out"
    return "signalled"


@workflow.defn(name="golden_fan_out")
def fan_out(ctx: workflow.WorkflowContext, numbers: list[int]) -> Any:
    futures = [ctx.start_activity(add, [n, n]) for n in numbers]
    return ctx.gather(*futures)


@workflow.defn(name="golden_race")
def race(ctx: workflow.WorkflowContext, _: Any) -> Any:
    slow = ctx.start_activity(pause, 2.0)
    signal = ctx.signal_future("hurry")
    first = ctx.wait_any(slow, signal, timeout=timedelta(seconds=30))
    winner = "signal" if first is signal else "activity"
    return {"winner": winner, "slow": slow.result()}


@workflow.defn(name="golden_child")
def child(ctx: workflow.WorkflowContext, text: str) -> Any:
    return ctx.execute_activity(shout, text)


@workflow.defn(name="golden_parent")
def parent(ctx: workflow.WorkflowContext, texts: list[str]) -> Any:
    children = [
        ctx.start_child_workflow(child, workflow.WorkflowOptions(id=f"{ctx.workflow_id}-{i}",
                                                                 input=text))
        for i, text in enumerate(texts)
    ]  # fmt: skip
    return [c.result() for c in children]


@workflow.defn(name="golden_patched")
def patched(ctx: workflow.WorkflowContext, n: int) -> Any:
    if ctx.patched("double-first"):
        n = ctx.execute_activity(add, [n, n])
    return ctx.execute_activity(add, [n, 1])


@workflow.defn(name="golden_loop")
def loop(ctx: workflow.WorkflowContext, count: int) -> Any:
    ctx.wait_for_signal("tick")
    if count < 2:
        ctx.continue_as_new(count + 1)
    return count


@workflow.defn(name="golden_cancel")
def cancel(ctx: workflow.WorkflowContext, _: Any) -> Any:
    try:
        ctx.wait_for_signal("never")
    except workflow.WorkflowCanceledError:
        ctx.execute_activity(shout, "cleaning up")
        raise
    return "not canceled"
