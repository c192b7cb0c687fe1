"""Unit tests of futures, races, children, versioning and continue-as-new in the interpreter.

Pure logic on hand-driven histories (`tests/sim.py`): every decision is checked twice, by a
live continuation fed the new events and by a fresh replay of the whole history.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from beluga_workflows import workflow
from beluga_workflows.history import (
    EventType,
    RecordMarker,
    ScheduleActivity,
    SignalChild,
    StartChild,
    StartTimer,
    Wait,
    WaitSignal,
    waiting_label,
)
from tests.sim import Sim, history

pytestmark = pytest.mark.core


def work(ctx, item):
    return item


def audit(ctx, item):
    return item


def child_flow(ctx, item):
    return item


def fan_out(ctx, items):
    futures = [ctx.start_activity(work, item) for item in items]
    return ctx.gather(*futures)


def scheduled(decision):
    return [(c.step, c.name, c.input) for c in decision.commands if isinstance(c, ScheduleActivity)]


# Fan-out and gather -----------------------------------------------------------------------


def test_fan_out_schedules_every_activity_in_one_decision():
    sim = Sim(fan_out, ["a", "b", "c"])
    assert scheduled(sim.decision) == [(0, "work", "a"), (1, "work", "b"), (2, "work", "c")]
    # One wait stands for the three (a wide fan-out's waits cost O(1)); the label counts them.
    assert sim.decision.waiting == [Wait("activity", "work", 0, count=3)]
    assert waiting_label(sim.decision.waiting) == "activity:work (3)"


def test_gather_returns_results_in_argument_order_whatever_order_they_finish():
    sim = Sim(fan_out, ["a", "b", "c"])
    assert not sim.complete(2, "C").done
    assert sim.decision.waiting == [Wait("activity", "work", 0, count=2)]
    assert not sim.complete(0, "A").done
    decision = sim.complete(1, "B")
    assert decision.done and decision.result == ["A", "B", "C"]


def test_gather_raises_the_first_failure_only_after_all_have_finished():
    sim = Sim(fan_out, ["a", "b", "c"])
    assert not sim.fail(2, "KeyError", "late").done
    assert not sim.fail(0, "ValueError", "first").done  # still waiting for step 1
    decision = sim.complete(1, "B")
    assert decision.done
    error = decision.error
    assert isinstance(error, workflow.ActivityError)
    # Step 2 failed first in history order, so its failure is the one raised.
    assert (error.step, error.cause_type, error.cause_message) == (2, "KeyError", "late")


def test_a_finished_activity_is_not_scheduled_again_on_replay():
    sim = Sim(fan_out, ["a", "b"])
    sim.complete(1, "B")
    sim.complete(0, "A")
    assert sim.types().count("ActivityScheduled") == 2


# Races ------------------------------------------------------------------------------------


def approval_or_check(ctx, _):
    approval = ctx.signal_future("approval")
    check = ctx.start_activity(work, "check")
    first = ctx.wait_any(approval, check)
    if first is approval:
        return {"winner": "approval", "payload": approval.result().payload}
    return {"winner": "check", "result": check.result()}


def test_wait_any_returns_what_came_first_in_history_signal():
    sim = Sim(approval_or_check)
    assert [type(c) for c in sim.decision.commands] == [WaitSignal, ScheduleActivity]
    assert sim.decision.waiting == [Wait("signal", "approval", 0), Wait("activity", "work", 1)]
    decision = sim.signal("approval", True)
    assert decision.result == {"winner": "approval", "payload": True}


def test_wait_any_returns_what_came_first_in_history_activity():
    sim = Sim(approval_or_check)
    decision = sim.complete(1, "ok")
    assert decision.result == {"winner": "check", "result": "ok"}


def test_a_race_settled_in_one_batch_follows_history_order():
    """Both outcomes arrive before the worker looks: the first recorded wins, on every worker."""
    sim = Sim(approval_or_check)
    sim.add(EventType.ACTIVITY_COMPLETED, step=1, name="work", attempt=1, result="ok")
    decision = sim.signal("approval", False)
    assert decision.result == {"winner": "check", "result": "ok"}


def wait_any_with_timeout(ctx, _):
    slow = ctx.start_activity(work, "slow")
    first = ctx.wait_any(slow, timeout=timedelta(hours=1))
    if first is None:
        return "timed out"
    return first.result()


def test_wait_any_timeout_returns_none():
    sim = Sim(wait_any_with_timeout)
    timer = [c for c in sim.decision.commands if isinstance(c, StartTimer)]
    assert [(t.step, t.name) for t in timer] == [(1, "timeout")]
    assert sim.fire(1).result == "timed out"


def test_wait_any_cancels_its_timeout_timer_when_a_future_wins():
    sim = Sim(wait_any_with_timeout)
    decision = sim.complete(0, "fast")
    assert decision.result == "fast"
    assert decision.cancel_timers == [1]
    assert "TimerCanceled" in sim.types()


def timer_race(ctx, _):
    approval = ctx.signal_future("approval")
    deadline = ctx.timer(timedelta(days=2))
    if ctx.wait_any(approval, deadline) is deadline:
        return "escalated"
    deadline.cancel()
    return approval.result().payload


def test_a_timer_future_can_race_a_signal():
    assert Sim(timer_race).fire(1).result == "escalated"
    sim = Sim(timer_race)
    decision = sim.signal("approval", "yes")
    assert decision.result == "yes" and decision.cancel_timers == [1]


# Signals ----------------------------------------------------------------------------------


def two_approvals(ctx, _):
    first = ctx.signal_future("approval")
    second = ctx.signal_future("approval")
    return [second.result().payload, first.result().payload]


def test_signal_futures_take_signals_in_creation_order():
    sim = Sim(two_approvals)
    sim.signal("approval", "one")
    assert sim.signal("approval", "two").result == ["two", "one"]


def test_signal_that_arrived_first_is_taken_without_recording_a_wait():
    events = history((EventType.SIGNAL_RECEIVED, {"name": "approval", "payload": "early"}))
    sim = Sim(two_approvals, events=events)
    assert sim.decision.commands == [WaitSignal(1, "approval", None)]
    assert sim.signal("approval", "late").result == ["late", "early"]


def timed_approval(ctx, _):
    try:
        return ctx.wait_for_signal("approval", timedelta(hours=24)).payload
    except workflow.SignalTimeoutError:
        return "timed out"


def test_a_signal_in_time_retires_the_waits_timeout_timer():
    sim = Sim(timed_approval)
    decision = sim.signal("approval", True)
    assert decision.result is True and decision.cancel_signal_timeouts == [0]


def test_signal_wait_timeout():
    assert Sim(timed_approval).fire(0).result == "timed out"


# Cancellation -----------------------------------------------------------------------------


def cancel_during_gather(ctx, items):
    futures = [ctx.start_activity(work, item) for item in items]
    try:
        return ctx.gather(*futures)
    except workflow.WorkflowCanceledError:
        settled = [f.done() for f in futures]
        ctx.execute_activity(audit, "cleanup")
        raise RuntimeError(f"canceled; settled={settled}") from None


def test_cancel_reaches_the_wait_in_progress_and_settles_pending_activities():
    sim = Sim(cancel_during_gather, ["a", "b"])
    sim.complete(0, "A")
    decision = sim.cancel()
    assert scheduled(decision) == [(2, "audit", "cleanup")]
    decision = sim.complete(2, "done")
    assert decision.done and str(decision.error) == "canceled; settled=[True, True]"


# Child workflows --------------------------------------------------------------------------


def parent(ctx, item):
    child = ctx.start_child_workflow(child_flow, workflow.WorkflowOptions(id="kid", input=item))
    sent = child.signal("hello", 1)
    sent.result()
    try:
        return {"child": child.result(), "run_id": child.run_id}
    except workflow.WorkflowFailedError as exc:
        return {"failed": type(exc.cause).__name__, "message": str(exc.cause)}


def test_child_workflow_start_signal_and_result():
    sim = Sim(parent, "x")
    starts = [c for c in sim.decisions[0].commands if isinstance(c, StartChild)]
    assert [(c.step, c.workflow_id, c.input, c.name) for c in starts] == [
        (0, "kid", "x", "tests.test_futures:child_flow")
    ]
    signals = [c for d in sim.decisions for c in d.commands if isinstance(c, SignalChild)]
    assert [(c.child_id, c.name, c.payload, c.sender) for c in signals] == [
        ("kid", "hello", 1, "workflow:wf-1")
    ]
    assert sim.decision.waiting == [Wait("child", "tests.test_futures:child_flow", 0)]
    assert sim.child_completed(0, "X").result == {"child": "X", "run_id": "r1"}


def test_child_failure_reaches_the_parent_with_its_cause():
    sim = Sim(parent, "x")
    error = {
        "type": "ActivityError",
        "activity": "a",
        "attempts": 2,
        "cause_type": "KeyError",
        "cause_message": "k",
        "step": 0,
        "message": "m",
    }
    decision = sim.child_failed(0, "failed", error)
    assert decision.result == {
        "failed": "ActivityError",
        "message": str(workflow.ActivityError("a", 2, "KeyError", "k", 0)),
    }
    canceled = Sim(parent, "x").child_failed(0, "canceled", {})
    assert canceled.result["failed"] == "WorkflowCanceledError"


def test_a_child_id_that_is_running_fails_the_start():
    def starts_taken(ctx, _):
        child = ctx.start_child_workflow(child_flow, workflow.WorkflowOptions(id="taken"))
        try:
            child.result()
        except workflow.WorkflowAlreadyStartedError as exc:
            return exc.workflow_id

    assert Sim(starts_taken).decision.result == "taken"


def test_child_ids_default_to_a_deterministic_uuid():
    def two_children(ctx, _):
        return [ctx.start_child_workflow(child_flow).id for _ in range(2)]

    first, second = Sim(two_children).decision.result
    assert first != second and Sim(two_children).decision.result == [first, second]


# Versioning -------------------------------------------------------------------------------


def versioned(ctx, _):
    result = ctx.execute_activity(work, "a")
    if ctx.patched("add-audit"):
        ctx.execute_activity(audit, result)
    return ctx.wait_for_signal("done").payload


def test_a_new_run_takes_the_patched_branch_and_records_a_marker():
    sim = Sim(versioned)
    decision = sim.complete(0, "A")
    assert decision.commands[0] == RecordMarker("add-audit")
    assert scheduled(decision) == [(1, "audit", "A")]
    sim.complete(1, "ok")
    assert sim.signal("done", 7).result == 7


def before_the_change(ctx, _):
    result = ctx.execute_activity(work, "a")
    return [result, ctx.wait_for_signal("done").payload]


def test_a_run_that_passed_the_point_before_the_change_replays_without_it():
    old = Sim(before_the_change)
    old.complete(0, "A")  # the old code went on to wait for "done"
    assert old.decision.waiting == [Wait("signal", "done", 1)]
    # New code is deployed; a worker replays the history with it.
    new = Sim(versioned, events=old.events, horizon=old.horizon)
    assert new.decision.commands == [] and new.decision.waiting == [Wait("signal", "done", 1)]
    assert new.signal("done", 1).result == 1
    assert "MarkerRecorded" not in new.types()


def test_a_run_reaching_the_point_after_the_deploy_takes_the_new_code():
    old = Sim(before_the_change)  # waiting for activity 0 when the new code comes
    new = Sim(versioned, events=old.events, horizon=old.horizon)
    decision = new.complete(0, "A")
    assert decision.commands[0] == RecordMarker("add-audit")


def deprecated(ctx, _):
    result = ctx.execute_activity(work, "a")
    ctx.deprecate_patch("add-audit")
    ctx.execute_activity(audit, result)
    return "ok"


def test_deprecate_patch_replays_histories_with_the_marker():
    sim = Sim(versioned)
    sim.complete(0, "A")
    replay = Sim(deprecated, events=sim.events, horizon=sim.horizon)
    assert replay.decision.commands == []
    assert replay.complete(1, "ok").result == "ok"


# Continue-as-new --------------------------------------------------------------------------


def looping(ctx, count):
    payload = ctx.wait_for_signal("tick").payload
    if count + 1 < 3:
        ctx.continue_as_new(count + 1)
    return payload


def test_continue_as_new_hands_over_the_input_and_the_signals_not_taken():
    sim = Sim(looping, 0)
    sim.add(EventType.SIGNAL_RECEIVED, name="other", payload="keep me", sender="a")
    decision = sim.signal("tick", 1)
    assert decision.done and decision.error is None
    request = decision.continue_as_new
    assert request.input == 1
    assert request.signals == [{"name": "other", "payload": "keep me", "sender": "a"}]


def test_continue_as_new_is_not_caught_by_except_exception():
    def stubborn(ctx, _):
        try:
            ctx.continue_as_new("again")
        except Exception:
            return "swallowed"

    assert Sim(stubborn).decision.continue_as_new.input == "again"


# async def workflows -------------------------------------------------------------------------


async def async_fan_out(ctx, items):
    futures = [ctx.start_activity(work, item) for item in items]
    first = await futures[0]
    rest = await ctx.gather(*futures[1:])
    await ctx.sleep(5)
    return [first, *rest]


def test_async_workflows_await_futures_and_ctx_methods():
    sim = Sim(async_fan_out, ["a", "b"])
    sim.complete(1, "B")
    decision = sim.complete(0, "A")
    assert [type(c) for c in decision.commands] == [StartTimer]
    assert sim.fire(2).result == ["A", "B"]


def test_async_workflows_cannot_await_asyncio():
    import asyncio

    async def uses_asyncio(ctx, _):
        await asyncio.sleep(1)

    error = Sim(uses_asyncio).decision.error
    assert isinstance(error, TypeError) and "may await only" in str(error)


# Non-determinism with several steps outstanding ------------------------------------------


def fan_out_renamed(ctx, items):
    futures = [ctx.start_activity(audit if i == 1 else work, item) for i, item in enumerate(items)]
    return ctx.gather(*futures)


def test_non_determinism_is_found_in_a_parallel_step():
    sim = Sim(fan_out, ["a", "b"])
    sim.complete(0, "A")
    decision = Sim(fan_out_renamed, ["a", "b"], events=sim.events, horizon=sim.horizon).decision
    assert isinstance(decision.error, workflow.NonDeterminismError)
    assert (decision.error.step, decision.error.expected, decision.error.got) == (
        1,
        "activity 'work'",
        "activity 'audit'",
    )


def test_futures_of_another_run_are_refused():
    leaked = []

    def first(ctx, _):
        leaked.append(ctx.start_activity(work, 1))
        return "ok"

    def second(ctx, _):
        return ctx.gather(leaked[0])

    Sim(first)
    assert isinstance(Sim(second).decision.error, TypeError)
