"""Workflows of the width tests (imported by the worker subprocesses too)."""

from __future__ import annotations

from beluga_workflows import workflow


def double(ctx: workflow.ActivityContext, value: int) -> int:
    return value * 2


def refused_step(ctx: workflow.ActivityContext, value: int) -> int:
    """Its completion is what the test's trigger makes PostgreSQL refuse."""
    return value


@workflow.defn(name="width_fan_out")
def fan_out(ctx: workflow.WorkflowContext, n: int) -> int:
    futures = [ctx.start_activity(double, i) for i in range(n)]
    return sum(ctx.gather(*futures))


@workflow.defn(name="width_chain")
def chain(ctx: workflow.WorkflowContext, n: int) -> int:
    value = 0
    for _ in range(n):
        value = ctx.execute_activity(double, value + 1)
    return value


@workflow.defn(name="width_refused")
def refused(ctx: workflow.WorkflowContext, value: int) -> int:
    return ctx.execute_activity(refused_step, value) + 1


@workflow.defn(name="width_refused_hold", on_error="hold")
def refused_hold(ctx: workflow.WorkflowContext, value: int) -> int:
    return ctx.execute_activity(refused_step, value, workflow.with_activity_timeout(2)) + 1


@workflow.defn(name="width_parked")
def parked(ctx: workflow.WorkflowContext, _: object) -> list[object]:
    return [ctx.wait_for_signal("more").payload for _ in range(100)]
