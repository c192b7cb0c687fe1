"""Unit tests of the replay interpreter on hand-written histories (pure logic, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from beluga_workflows import workflow
from beluga_workflows.continuation import Continuation
from beluga_workflows.history import EventType, HistoryEvent, ScheduleActivity, WaitSignal
from beluga_workflows.interpreter import RunInfo
from beluga_workflows.replay import Replayer

pytestmark = pytest.mark.core

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INFO = RunInfo("wf-1", "00000000-0000-0000-0000-000000000001", "test", "topic")
CALLS: list[str] = []


def fetch(ctx, value):
    CALLS.append(value)
    return f"fetched {value}"


def publish(ctx, value):
    return f"published {value}"


def two_steps(ctx, topic):
    first = ctx.execute_activity(fetch, topic)
    signal = ctx.wait_for_signal("approval", timedelta(hours=1))
    if signal.payload is not True:
        return "rejected"
    return ctx.execute_activity(publish, first)


class History:
    """Builds a history the way the engine records one."""

    def __init__(self) -> None:
        self.events: list[HistoryEvent] = []
        self.add(EventType.WORKFLOW_STARTED, name="test")

    def add(self, type, *, step=None, name="", attempt=0, **data) -> History:
        seq = len(self.events) + 1
        self.events.append(
            HistoryEvent(seq, type, T0 + timedelta(seconds=seq), step, name, attempt, data)
        )
        return self


def run(fn, events):
    return Replayer(fn, INFO).run(events)


def test_first_pass_asks_for_the_first_activity():
    decision = run(two_steps, History().events)
    assert not decision.done
    [command] = decision.commands
    assert isinstance(command, ScheduleActivity)
    assert (command.step, command.name, command.input) == (0, "fetch", "topic")
    assert command.reference.endswith(":fetch")


def test_replay_returns_recorded_results_without_running_activities():
    CALLS.clear()
    h = History()
    h.add(EventType.ACTIVITY_SCHEDULED, step=0, name="fetch", attempt=1)
    h.add(EventType.ACTIVITY_COMPLETED, step=0, name="fetch", attempt=1, result="recorded")
    h.add(EventType.SIGNAL_WAIT_STARTED, step=1, name="approval")
    h.add(EventType.SIGNAL_RECEIVED, name="approval", payload=True)
    decision = run(two_steps, h.events)
    [command] = decision.commands
    assert isinstance(command, ScheduleActivity)
    assert (command.name, command.input) == ("publish", "recorded")
    assert CALLS == []


def test_signal_sent_before_the_wait_is_kept():
    h = History().add(EventType.SIGNAL_RECEIVED, name="approval", payload=False)
    h.add(EventType.ACTIVITY_SCHEDULED, step=0, name="fetch", attempt=1)
    h.add(EventType.ACTIVITY_COMPLETED, step=0, name="fetch", attempt=1, result="x")
    decision = run(two_steps, h.events)
    assert decision.done and decision.result == "rejected"
    assert decision.commands == []  # consumed from the inbox: no wait was recorded


def test_signal_wait_race_is_decided_by_history_order():
    base = History()
    base.add(EventType.ACTIVITY_SCHEDULED, step=0, name="fetch", attempt=1)
    base.add(EventType.ACTIVITY_COMPLETED, step=0, name="fetch", attempt=1, result="x")
    base.add(EventType.SIGNAL_WAIT_STARTED, step=1, name="approval")
    timer_first = list(base.events)
    timer_first.append(HistoryEvent(5, EventType.TIMER_FIRED, T0, 1))
    timer_first.append(
        HistoryEvent(6, EventType.SIGNAL_RECEIVED, T0, None, "approval", 0, {"payload": True})
    )
    decision = run(two_steps, timer_first)
    assert decision.done and isinstance(decision.error, workflow.SignalTimeoutError)

    signal_first = list(base.events)
    signal_first.append(
        HistoryEvent(5, EventType.SIGNAL_RECEIVED, T0, None, "approval", 0, {"payload": True})
    )
    signal_first.append(HistoryEvent(6, EventType.TIMER_FIRED, T0, 1))
    decision = run(two_steps, signal_first)
    assert not decision.done and decision.commands[0].name == "publish"


def test_changed_code_fails_with_non_determinism_naming_both_steps():
    h = History()
    h.add(EventType.ACTIVITY_SCHEDULED, step=0, name="publish", attempt=1)
    decision = run(two_steps, h.events)
    assert decision.done
    error = decision.error
    assert isinstance(error, workflow.NonDeterminismError)
    assert error.step == 0 and "publish" in error.expected and "fetch" in error.got


def swallow_everything(ctx, _):
    try:
        ctx.execute_activity(fetch, "a")
    except BaseException:  # noqa: BLE001 - a user who catches too much
        pass
    return "done"


def test_user_code_cannot_swallow_non_determinism():
    h = History().add(EventType.ACTIVITY_SCHEDULED, step=0, name="other", attempt=1)
    decision = run(swallow_everything, h.events)
    assert isinstance(decision.error, workflow.NonDeterminismError)


def cleanup_on_cancel(ctx, _):
    try:
        ctx.wait_for_signal("go")
    except workflow.WorkflowCanceledError:
        ctx.execute_activity(publish, "cleanup")
        raise


def test_cancel_is_delivered_at_the_current_wait_and_cleanup_can_run():
    h = History().add(EventType.SIGNAL_WAIT_STARTED, step=0, name="go")
    h.add(EventType.CANCEL_REQUESTED)
    decision = run(cleanup_on_cancel, h.events)
    assert not decision.done
    assert decision.commands[0].name == "publish" and decision.commands[0].input == "cleanup"
    h.add(EventType.ACTIVITY_SCHEDULED, step=1, name="publish", attempt=1)
    h.add(EventType.ACTIVITY_COMPLETED, step=1, name="publish", attempt=1, result="ok")
    decision = run(cleanup_on_cancel, h.events)
    assert decision.done and decision.canceled


def failing_activity_workflow(ctx, _):
    return ctx.execute_activity(fetch, "x")


def test_final_activity_failure_reaches_the_workflow_as_activity_error():
    h = History().add(EventType.ACTIVITY_SCHEDULED, step=0, name="fetch", attempt=1)
    h.add(EventType.ACTIVITY_ATTEMPT_FAILED, step=0, name="fetch", attempt=1, error={"type": "E"})
    h.add(
        EventType.ACTIVITY_FAILED,
        step=0,
        name="fetch",
        attempt=2,
        error={"type": "ValueError", "message": "boom"},
    )
    decision = run(failing_activity_workflow, h.events)
    error = decision.error
    assert isinstance(error, workflow.ActivityError)
    assert (error.attempts, error.cause_type, error.cause_message) == (2, "ValueError", "boom")


def deterministic_values(ctx, _):
    ctx.sleep(1)
    return [ctx.now().isoformat(), ctx.random(), str(ctx.uuid4())]


def test_now_random_and_uuid_are_the_same_on_every_replay():
    h = History().add(EventType.TIMER_STARTED, step=0, name="sleep")
    h.add(EventType.TIMER_FIRED, step=0)
    first = run(deterministic_values, h.events).result
    second = run(deterministic_values, h.events).result
    assert first == second
    assert first[0] == h.events[-1].timestamp.isoformat()


def queried(ctx, _):
    state = {"stage": "waiting"}
    ctx.set_query_handler("stage", lambda: state["stage"])
    ctx.wait_for_signal("go")
    state["stage"] = "after"
    ctx.wait_for_signal("never")


def test_query_handlers_see_the_state_reached_by_replay():
    h = History().add(EventType.SIGNAL_WAIT_STARTED, step=0, name="go")
    replayer = Replayer(queried, INFO)
    replayer.run(h.events)
    assert replayer.query("stage") == "waiting"
    h.add(EventType.SIGNAL_RECEIVED, name="go")
    replayer.run(h.events)
    assert replayer.query("stage") == "after"
    with pytest.raises(workflow.QueryError, match="stage"):
        replayer.query("missing")


def receiver(ctx, _):
    got = []
    for payload in ctx.receive_signal("item"):
        if payload is None:
            return got
        got.append(payload)


def test_receive_signal_yields_payloads_in_arrival_order():
    h = History()
    for value in (1, 2, None):
        h.add(EventType.SIGNAL_RECEIVED, name="item", payload=value)
    assert run(receiver, h.events).result == [1, 2]


def test_continuation_and_replay_agree_step_by_step():
    h = History()
    cont = Continuation(two_steps, INFO, timeout=5)
    decision = cont.feed(h.events)
    assert decision.commands[0].name == "fetch"
    fed = len(h.events)
    h.add(EventType.ACTIVITY_SCHEDULED, step=0, name="fetch", attempt=1)
    cont.note(h.events[fed:])
    fed = len(h.events)
    h.add(EventType.ACTIVITY_COMPLETED, step=0, name="fetch", attempt=1, result="r")
    decision = cont.feed(h.events[fed:])
    assert isinstance(decision.commands[0], WaitSignal)
    assert decision.commands == run(two_steps, h.events).commands
    fed = len(h.events)
    h.add(EventType.SIGNAL_WAIT_STARTED, step=1, name="approval")
    cont.note(h.events[fed:])
    fed = len(h.events)
    h.add(EventType.SIGNAL_RECEIVED, name="approval", payload=False)
    decision = cont.feed(h.events[fed:])
    assert decision.done and decision.result == "rejected" == run(two_steps, h.events).result


def test_non_json_activity_input_is_refused_at_the_call():
    def bad(ctx, _):
        return ctx.execute_activity(fetch, {"when": ctx.now()})

    decision = run(bad, History().events)
    assert isinstance(decision.error, workflow.InvalidPayloadError)
    assert "$.when" in str(decision.error)


def test_defn_declares_signals_and_queries_and_refuses_bad_ones() -> None:
    from beluga_workflows import registry
    from tests import workflows_conformance  # noqa: F401 - registers conf_queries

    assert registry.declared("conf_queries") == (["finish", "extend"], ["progress"])
    assert registry.declared("not-registered") == ([], [])
    with pytest.raises(ValueError, match="signals must be a list of names"):
        workflow.defn(name="bad_declares", signals="nudge")
    with pytest.raises(ValueError, match="queries must be a list of names"):
        workflow.defn(name="bad_declares", queries=[""])
    assert "bad_declares" not in registry.public_names()
