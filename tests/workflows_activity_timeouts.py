"""Workflows and activities of `test_activity_timeouts.py`; imported by the worker subprocess too.

Activities count what really ran with ``harness.record_run`` (files outside the engine).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from beluga_workflows import workflow
from tests import harness

ONCE = workflow.with_activity_retry(workflow.RetryPolicy(max_attempts=1))
FEW_RETRIES = workflow.with_activity_retry(
    workflow.RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=100))
)


def _failure(error: workflow.ActivityError) -> dict[str, Any]:
    return {"attempts": error.attempts, "type": error.cause_type, "message": error.cause_message}


def works(ctx: workflow.ActivityContext, spec: dict[str, Any]) -> int:
    """Work ``spec["seconds"]``, then answer its number."""
    harness.record_run("works", str(spec["i"]))
    time.sleep(spec["seconds"])
    return int(spec["i"])


@workflow.defn(name="timeouts_line")
def line(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> list[int]:
    """``spec["n"]`` activities at once, each well within its start-to-close timeout, but not
    all of them within it counted from when they were scheduled: they wait for one worker."""
    futures = [
        ctx.start_activity(
            works,
            {"i": i, "seconds": spec["seconds"]},
            workflow.with_activity_timeout(timedelta(seconds=spec["timeout"])),
            ONCE,
        )
        for i in range(spec["n"])
    ]
    return ctx.gather(*futures)  # type: ignore[no-any-return]


def unserved(ctx: workflow.ActivityContext, _: Any) -> str:
    harness.record_run("unserved")
    return "ran"


@workflow.defn(name="timeouts_schedule_to_start")
def schedule_to_start(ctx: workflow.WorkflowContext, queue: str) -> Any:
    """An activity on a queue no worker serves: it must start within 2 s or fail, for good."""
    try:
        return ctx.execute_activity(
            unserved,
            None,
            workflow.with_activity_queue(queue),
            workflow.with_activity_schedule_to_start_timeout(timedelta(seconds=2)),
            FEW_RETRIES,
        )
    except workflow.ActivityError as error:
        return _failure(error)


def slow_first(ctx: workflow.ActivityContext, seconds: float) -> int:
    """The first attempt hangs for ``seconds`` (stopping when told it timed out); the next
    ones answer at once."""
    harness.record_run("slow-first", str(ctx.attempt))
    if ctx.attempt == 1:
        until = time.monotonic() + seconds
        while time.monotonic() < until and not ctx.is_cancelled():
            time.sleep(0.05)
    return ctx.attempt


@workflow.defn(name="timeouts_slow_attempt")
def slow_attempt(ctx: workflow.WorkflowContext, seconds: float) -> int:
    return ctx.execute_activity(  # type: ignore[no-any-return]
        slow_first, seconds, workflow.with_activity_timeout(timedelta(seconds=1)), FEW_RETRIES
    )


def quick(ctx: workflow.ActivityContext, _: Any) -> str:
    return "quick"


@workflow.defn(name="timeouts_killed")
def killed(ctx: workflow.WorkflowContext, seconds: float) -> list[Any]:
    """A quick activity (run by the step's own thread) and a slow one (sent through the broker)
    whose first attempt's worker the test kills."""
    first = ctx.start_activity(quick, None)
    second = ctx.start_activity(
        slow_first, seconds, workflow.with_activity_timeout(timedelta(seconds=3)), FEW_RETRIES
    )
    return ctx.gather(first, second)  # type: ignore[no-any-return]
