"""Workflows and activities of `test_temporal_fidelity.py`: what Temporal's own tools show."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

from beluga_workflows import workflow
from tests import harness

#: Which worker ran an activity: the test sets it in each worker's environment.
WORKER_ENV = "FIDELITY_WORKER"


def collect_sources(ctx: workflow.ActivityContext, topic: str) -> dict[str, Any]:
    """An activity known by its function's name."""
    return {"topic": topic, "sources": ["a", "b"]}


@workflow.activity(name="summarize-v2")
def summarize(ctx: workflow.ActivityContext, found: dict[str, Any]) -> str:
    """An activity with a name of its own, whatever the function is called."""
    return f"{found['topic']}: {len(found['sources'])} sources"


@workflow.defn(name="fidelity_research")
def research(ctx: workflow.WorkflowContext, topic: str) -> str:
    found = ctx.execute_activity(collect_sources, topic, workflow.with_activity_timeout(30))
    return ctx.execute_activity(summarize, found)  # type: ignore[no-any-return]


def resumable(ctx: workflow.ActivityContext, final: int) -> dict[str, Any]:
    """The first attempt heartbeats its way to ``final`` and then hangs on, heartbeating, until
    its worker is killed; the next attempt reports where it could resume."""
    harness.record_run(f"resumable-{ctx.attempt}", str(ctx.heartbeat_details))
    if ctx.attempt > 1:
        return {"attempt": ctx.attempt, "resumed_from": ctx.heartbeat_details}
    for done in range(final + 1):
        ctx.heartbeat(done)
        time.sleep(0.2)
    started = time.monotonic()
    while True:  # the same details again and again: the last ones surely reach Temporal
        ctx.heartbeat(final)
        if time.monotonic() - started > 1.5:
            harness.record_run("resumable-hanging")
        time.sleep(0.2)


@workflow.defn(name="fidelity_heartbeats")
def heartbeats(ctx: workflow.WorkflowContext, final: int) -> Any:
    return ctx.execute_activity(
        resumable,
        final,
        workflow.with_activity_timeout(timedelta(minutes=5)),  # not what ends the attempt
        workflow.with_activity_heartbeat_timeout(timedelta(seconds=2)),
        workflow.with_activity_retry(workflow.RetryPolicy(initial_interval=timedelta(0))),
    )


def where(ctx: workflow.ActivityContext, _: Any) -> str:
    return os.environ.get(WORKER_ENV, "?")


@workflow.defn(name="fidelity_queues")
def queues(ctx: workflow.WorkflowContext, queue: str) -> list[str]:
    elsewhere = ctx.execute_activity(where, None, workflow.with_activity_queue(queue))
    return [elsewhere, ctx.execute_activity(where, None)]
