"""Workflows the benchmarks run (imported by the benchmark's worker too)."""

from __future__ import annotations

from beluga_workflows import workflow


def increment(ctx: workflow.ActivityContext, value: int) -> int:
    return value + 1


@workflow.defn(name="bench_chain")
def chain(ctx: workflow.WorkflowContext, n: int) -> int:
    value = 0
    for _ in range(n):
        value = ctx.execute_activity(increment, value)
    return value


@workflow.defn(name="bench_parked")
def parked(ctx: workflow.WorkflowContext, _: object) -> object:
    return ctx.wait_for_signal("go").payload


@workflow.defn(name="bench_approval")
def approval(ctx: workflow.WorkflowContext, value: int) -> int:
    """Parked until its approval, then one activity (the signal -> result latency)."""
    approved = ctx.wait_for_signal("approval").payload
    return ctx.execute_activity(increment, value if approved else -1)


@workflow.defn(name="bench_fanout")
def fanout(ctx: workflow.WorkflowContext, n: int) -> int:
    """N trivial activities started at once, then gathered (the fan-out benchmark)."""
    futures = [ctx.start_activity(increment, i) for i in range(n)]
    return sum(ctx.gather(*futures))
