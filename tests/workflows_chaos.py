"""Workflows of the chaos test (`tests/chaos.py`); imported by its worker subprocesses too.

Four shapes cover what a fault can interrupt: a chain of activities, a durable sleep between
two, signal waits, and a fan-out. Some activities take up to 1.5 s, so a fault finds some in
flight; some fail their first attempt, so retries run under faults too. `random_run` draws a
run's input from a seeded generator and `expected` computes its result from that input alone.

`work` writes a start and an end marker for every execution (`harness.record_run`, outside the
engine), so the chaos test can count executions and tell which ran more than once.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from beluga_workflows import workflow
from tests import harness

#: The counter file the markers go to: `<pid> start|end <activity_id> <attempt> <unix time>`.
EXECUTIONS = "executions"
SIGNAL = "item"

RETRY = workflow.with_activity_retry(
    workflow.RetryPolicy(max_attempts=5, initial_interval=timedelta(milliseconds=200))
)
# Never reached: the waits are timed only so their timeout timers live through the faults.
SIGNAL_TIMEOUT = timedelta(minutes=30)


def value(step: dict[str, Any]) -> int:
    """What `work` returns for `step`."""
    return step["value"] * 3 + 1


def work(ctx: workflow.ActivityContext, step: dict[str, Any]) -> int:
    """Take `step["delay"]` seconds; fail the first attempt when `step["fail_first"]`."""
    key = f"{ctx.activity_id} {ctx.attempt}"
    harness.record_run(EXECUTIONS, f"start {key} {time.time():.6f}")
    time.sleep(step["delay"])
    harness.record_run(EXECUTIONS, f"end {key} {time.time():.6f}")
    if step.get("fail_first") and ctx.attempt == 1:
        raise ConnectionError("the first attempt fails, as planned")
    return value(step)


@workflow.defn(name="chaos_chain")
def chain(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> list[int]:
    return [ctx.execute_activity(work, step, RETRY) for step in spec["steps"]]


@workflow.defn(name="chaos_sleep")
def sleeper(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> list[int]:
    before = ctx.execute_activity(work, spec["before"], RETRY)
    ctx.sleep(spec["sleep"])
    return [before, ctx.execute_activity(work, spec["after"], RETRY)]


@workflow.defn(name="chaos_signals")
def signals(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    first = ctx.execute_activity(work, spec["first"], RETRY)
    items = [ctx.wait_for_signal(SIGNAL, SIGNAL_TIMEOUT).payload for _ in spec["signals"]]
    last = ctx.execute_activity(work, {"value": sum(items), "delay": spec["delay"]}, RETRY)
    return {"first": first, "items": items, "last": last}


@workflow.defn(name="chaos_fanout")
def fanout(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> dict[str, Any]:
    branches = ctx.gather(*(ctx.start_activity(work, step, RETRY) for step in spec["branches"]))
    total = ctx.execute_activity(work, {"value": sum(branches), "delay": spec["delay"]}, RETRY)
    return {"branches": branches, "total": total}


def expected(name: str, spec: dict[str, Any]) -> Any:
    """The result a run of workflow `name` with input `spec` must return."""
    if name == "chaos_chain":
        return [value(step) for step in spec["steps"]]
    if name == "chaos_sleep":
        return [value(spec["before"]), value(spec["after"])]
    if name == "chaos_signals":
        items = spec["signals"]
        return {"first": value(spec["first"]), "items": items, "last": value({"value": sum(items)})}
    if name == "chaos_fanout":
        branches = [value(step) for step in spec["branches"]]
        return {"branches": branches, "total": value({"value": sum(branches)})}
    raise ValueError(f"not a chaos workflow: {name!r}")


def random_run(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A workflow name and its input. Signal payloads are distinct within a run, so the chaos
    test can tell whether a signal whose sending failed was recorded anyway."""
    name = rng.choice(["chaos_chain", "chaos_sleep", "chaos_signals", "chaos_fanout"])
    if name == "chaos_chain":
        return name, {"steps": [_step(rng) for _ in range(rng.randint(2, 4))]}
    if name == "chaos_sleep":
        sleep = round(rng.uniform(0.5, 3.0), 2)
        return name, {"before": _step(rng), "sleep": sleep, "after": _step(rng)}
    if name == "chaos_signals":
        payloads = rng.sample(range(1, 1000), rng.randint(1, 3))
        return name, {"first": _step(rng), "signals": payloads, "delay": _delay(rng)}
    return name, {"branches": [_step(rng) for _ in range(rng.randint(2, 4))], "delay": _delay(rng)}


def _step(rng: random.Random) -> dict[str, Any]:
    return {"value": rng.randint(0, 999), "delay": _delay(rng), "fail_first": rng.random() < 0.15}


def _delay(rng: random.Random) -> float:
    """Half the activities are quick; the others take 0.1-1.5 s, long enough to be caught."""
    return round(rng.uniform(0.1, 1.5) if rng.random() < 0.5 else rng.uniform(0, 0.05), 3)
