"""Workflows and activities used by the engine tests; imported by the worker subprocess too.

Activities count their real executions with ``harness.record_run`` (files outside the engine),
so tests can prove what ran once.
"""

from __future__ import annotations

import time
from datetime import timedelta

from beluga_workflows import workflow
from tests import harness


def step(ctx: workflow.ActivityContext, data):
    harness.record_run(f"start-{data['i']}")
    time.sleep(data.get("delay", 0))
    harness.record_run(f"done-{data['i']}")
    return data["i"] * 10


@workflow.defn(name="engine_chain")
def chain(ctx: workflow.WorkflowContext, spec):
    total = 0
    for i in range(spec["n"]):
        total += ctx.execute_activity(step, {"i": i, "delay": spec.get("delay", 0)})
    return total


def echo(ctx: workflow.ActivityContext, i):
    return i


@workflow.defn(name="engine_eager_chain")
def eager_chain(ctx: workflow.WorkflowContext, n):
    return [ctx.execute_activity(echo, i) for i in range(n)]


@workflow.defn(name="engine_parallel")
def parallel(ctx: workflow.WorkflowContext, delays):
    """All activities at once; fan-in with gather."""
    futures = [ctx.start_activity(step, {"i": i, "delay": d}) for i, d in enumerate(delays)]
    return sum(ctx.gather(*futures))


def flaky(ctx, fail_times):
    harness.record_run("flaky")
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return f"ok on attempt {ctx.attempt}"


@workflow.defn(name="engine_retry")
def retrying(ctx, spec):
    policy = workflow.RetryPolicy(
        max_attempts=spec["max_attempts"],
        initial_interval=timedelta(milliseconds=50),
        non_retryable_errors=(KeyError,),
    )
    try:
        return ctx.execute_activity(flaky, spec["fail_times"], workflow.with_activity_retry(policy))
    except workflow.ActivityError as exc:
        return {"failed": exc.cause_type, "attempts": exc.attempts}


def lookup(ctx, key):
    harness.record_run("lookup")
    return {}[key]


@workflow.defn(name="engine_non_retryable")
def non_retryable(ctx, key):
    policy = workflow.RetryPolicy(max_attempts=5, non_retryable_errors=(KeyError,))
    return ctx.execute_activity(lookup, key, workflow.with_activity_retry(policy))


def slow(ctx, seconds):
    harness.record_run("slow")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.is_cancelled():
        time.sleep(0.05)
    return "finished"


def sleepy(ctx, seconds):
    harness.record_run("sleepy")
    time.sleep(seconds)
    return f"slept {seconds}"


@workflow.defn(name="engine_sleepy_pair")
def sleepy_pair(ctx, seconds):
    return [ctx.execute_activity(sleepy, seconds) for _ in range(2)]


@workflow.defn(name="engine_long_activity")
def long_activity(ctx, seconds):
    one_minute = workflow.with_activity_timeout(timedelta(seconds=60))
    return ctx.execute_activity(sleepy, seconds, one_minute)


@workflow.defn(name="engine_timeout")
def activity_timeout(ctx, seconds):
    return ctx.execute_activity(
        slow,
        seconds,
        workflow.with_activity_timeout(timedelta(seconds=1)),
        workflow.with_activity_retry(workflow.RetryPolicy(max_attempts=2)),
    )


@workflow.defn(name="engine_sleep")
def sleeper(ctx, seconds):
    started = ctx.now()
    ctx.sleep(seconds)
    return (ctx.now() - started).total_seconds()


@workflow.defn(name="engine_collect")
def collect(ctx, count):
    items = []
    for payload in ctx.receive_signal("item"):
        items.append(payload)
        if len(items) == count:
            return items


def cleanup(ctx, reason):
    harness.record_run("cleanup")
    return f"cleaned up after {reason}"


@workflow.defn(name="engine_cancellable")
def cancellable(ctx, _):
    try:
        ctx.wait_for_signal("never")
    except workflow.WorkflowCanceledError:
        ctx.execute_activity(cleanup, "cancel")
        raise


@workflow.defn(name="engine_wait")
def wait_with_timeout(ctx, seconds):
    try:
        return ctx.wait_for_signal("approval", timedelta(seconds=seconds)).payload
    except workflow.SignalTimeoutError as exc:
        return f"timed out: {exc.signal_name}"


@workflow.defn(name="engine_queries")
def with_queries(ctx, _):
    progress = {"stage": "started", "values": []}
    ctx.set_query_handler("progress", lambda: progress)
    for payload in ctx.receive_signal("value"):
        progress["values"].append(payload)
        progress["stage"] = f"got {len(progress['values'])}"
        if payload == "stop":
            return progress["values"]


@workflow.defn(name="engine_fails")
def fails(ctx, message):
    raise ValueError(message)


@workflow.defn(name="engine_two_waits")
def two_waits(ctx, seconds):
    first = ctx.wait_for_signal("first", timedelta(seconds=60)).payload
    try:
        second = ctx.wait_for_signal("second", timedelta(seconds=seconds)).payload
    except workflow.SignalTimeoutError:
        second = "timed out"
    return [first, second]
