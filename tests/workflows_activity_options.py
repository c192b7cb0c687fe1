"""Workflows and activities of the activity-option tests; imported by the worker subprocess too.

Activities count what really ran with ``harness.record_run`` (files outside the engine).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from beluga_workflows import workflow
from tests import harness


def chunks(ctx: workflow.ActivityContext, spec):
    """Work through ``spec["n"]`` chunks, heartbeating after each; a retry resumes where the
    last heartbeat of the attempt before says it got to."""
    start = (ctx.heartbeat_details or {}).get("done", 0)
    harness.record_run("resume", f"{ctx.attempt} {start}")
    for i in range(start, spec["n"]):
        harness.record_run("chunk", f"{ctx.attempt} {i}")
        time.sleep(spec["pause"])
        ctx.heartbeat({"done": i + 1})
    return {"attempt": ctx.attempt, "resumed_from": start}


@workflow.defn(name="options_resumable")
def resumable(ctx: workflow.WorkflowContext, spec):
    return ctx.execute_activity(
        chunks,
        spec,
        workflow.with_activity_timeout(timedelta(seconds=60)),
        workflow.with_activity_heartbeat_timeout(timedelta(seconds=1)),
        workflow.with_activity_retry(
            workflow.RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=100))
        ),
    )


def stalls(ctx: workflow.ActivityContext, seconds):
    """Heartbeats once, then hangs (the first attempt); the next one returns what it got."""
    if ctx.heartbeat_details is None:
        ctx.heartbeat({"stalled_at": 1})
        time.sleep(seconds)
        return {"attempt": ctx.attempt, "details": None}
    return {"attempt": ctx.attempt, "details": ctx.heartbeat_details}


@workflow.defn(name="options_stalled")
def stalled(ctx: workflow.WorkflowContext, seconds):
    return ctx.execute_activity(
        stalls,
        seconds,
        workflow.with_activity_timeout(timedelta(seconds=30)),
        workflow.with_activity_heartbeat_timeout(timedelta(seconds=1)),
        workflow.with_activity_retry(
            workflow.RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=50))
        ),
    )


def always_fails(ctx: workflow.ActivityContext, _):
    harness.record_run("always-fails", str(ctx.attempt))
    raise ConnectionError(f"attempt {ctx.attempt} failed")


def sleeps(ctx: workflow.ActivityContext, seconds):
    harness.record_run("sleeps", str(ctx.attempt))
    time.sleep(seconds)
    return "woke"


def _failure(error: workflow.ActivityError) -> dict:
    return {"attempts": error.attempts, "type": error.cause_type, "message": error.cause_message}


@workflow.defn(name="options_schedule_to_close")
def schedule_to_close(ctx: workflow.WorkflowContext, _):
    """Two activities that would retry for long, stopped by their schedule-to-close timeout:
    one failing fast (its back-off runs into it), one hanging (its attempt runs into it)."""
    outcome = {}
    many_retries = workflow.RetryPolicy(
        max_attempts=100, initial_interval=timedelta(milliseconds=200), backoff_coefficient=1.0
    )
    try:
        ctx.execute_activity(
            always_fails,
            None,
            workflow.with_activity_retry(many_retries),
            workflow.with_activity_schedule_to_close_timeout(timedelta(seconds=1.5)),
        )
    except workflow.ActivityError as error:
        outcome["failing"] = _failure(error)
    try:
        ctx.execute_activity(
            sleeps,
            5,
            workflow.with_activity_retry(many_retries),
            workflow.with_activity_timeout(timedelta(seconds=20)),
            workflow.with_activity_schedule_to_close_timeout(timedelta(seconds=1)),
        )
    except workflow.ActivityError as error:
        outcome["hanging"] = _failure(error)
    return outcome


def where(ctx: workflow.ActivityContext, label):
    harness.record_run("special", label)
    return os.getpid()


@workflow.defn(name="options_special_queue")
def special_queue(ctx: workflow.WorkflowContext, label):
    return ctx.execute_activity(where, label, workflow.with_activity_queue("special"))
