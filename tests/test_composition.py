"""Concurrency and composition inside a workflow, on every executor.

Fan-out/fan-in, races, child workflows, versioning under running runs, continue-as-new and
async code: each test runs once on the built-in engine and once on Temporal against a real
`runworker` (`tests/conformance.py`), with the workflows of `tests/workflows_composition.py`.
What a user observes — results, errors, statuses, histories in meaning, how often activities
ran — must be the same.
"""

from __future__ import annotations

from typing import Any

import pytest

from beluga_workflows import workflow
from beluga_workflows.models import WorkflowRun
from tests import workflows_composition as wf
from tests.conformance import Engine
from tests.harness import run_count, wait_until
from tests.workflows_conformance import CODE_VERSION_ENV

pytestmark = pytest.mark.django_db(transaction=True)

E = workflow.EventType


def test_fan_out_runs_activities_in_parallel_and_gathers_in_order(
    engine: Engine, counter_dir: Any
) -> None:
    handle = engine.start(wf.fan_out, ["q1", "q2", "q3", "q4"])
    assert handle.result(timeout=60) == [f"summary of q{i}" for i in (1, 2, 3, 4)]
    assert run_count(counter_dir, "summarize") == 4
    types = engine.event_types(handle.id)
    # All four were scheduled at once, before any of them finished.
    assert types[1:5] == ["ActivityScheduled"] * 4
    assert types.count("ActivityCompleted") == 4 and types[-1] == "WorkflowCompleted"


def test_gather_raises_the_failure_after_every_activity_finished(
    engine: Engine, counter_dir: Any
) -> None:
    handle = engine.start(wf.fan_out, ["a", "bad-b", "c"])
    with pytest.raises(workflow.WorkflowFailedError) as raised:
        handle.result(timeout=60)
    cause = raised.value.cause
    assert isinstance(cause, workflow.ActivityError)
    assert (cause.activity, cause.cause_type) == ("summarize", "ValueError")
    assert cause.cause_message == "cannot read bad-b"
    assert run_count(counter_dir, "summarize") == 3
    types = engine.event_types(handle.id)
    assert types.count("ActivityCompleted") == 2 and types.count("ActivityFailed") == 1
    assert types[-1] == "WorkflowFailed"


def test_race_an_approval_wins_over_a_slow_check(engine: Engine, counter_dir: Any) -> None:
    handle = engine.start(wf.race, {"check_seconds": 30})
    engine.wait_for(handle.id, "signal:approval, activity:slow_check")
    engine.executor.signal(handle.id, workflow.Signal("approval", "go ahead"))
    assert handle.result(timeout=30) == {"winner": "approval", "payload": "go ahead"}
    # The check was left running when the workflow finished; the run's close stops it.
    wait_until(lambda: run_count(counter_dir, "slow_check-cancelled") == 1, 20, message="stop")


def test_race_a_fast_check_wins_over_the_approval(engine: Engine) -> None:
    handle = engine.start(wf.race, {"check_seconds": 0.2})
    assert handle.result(timeout=30) == {"winner": "check", "result": "check passed"}
    with pytest.raises(workflow.WorkflowClosedError):
        engine.executor.signal(handle.id, workflow.Signal("approval", True))


def test_wait_any_times_out(engine: Engine) -> None:
    handle = engine.start(wf.race, {"check_seconds": 30, "timeout": 1})
    assert handle.result(timeout=30) == {"winner": None}
    assert "TimerFired" in engine.event_types(handle.id)


def test_child_workflow_gets_a_signal_and_returns_to_its_parent(engine: Engine) -> None:
    args = {"child_id": "kid-1", "child": {"mode": "wait"}, "signal": "hello"}
    handle = engine.start(wf.parent, args, id="parent-1")
    assert handle.result(timeout=60) == {"result": "child got hello"}

    kid = engine.executor.describe("kid-1")
    assert kid.status is workflow.Status.COMPLETED and kid.workflow == "comp_child"
    assert (kid.parent_id, kid.parent_run_id) == ("parent-1", handle.run_id)
    parent_state = engine.executor.describe("parent-1")
    assert [(c["id"], c["run_id"]) for c in parent_state.children] == [("kid-1", kid.run_id)]
    types = engine.event_types("parent-1")
    for kind in ("ChildWorkflowScheduled", "ChildWorkflowStarted", "ChildSignalScheduled"):
        assert kind in types
    assert types.index("ChildSignalSent") < types.index("ChildWorkflowCompleted")
    received = [e for e in engine.executor.history("kid-1") if e.type is E.SIGNAL_RECEIVED]
    assert [(e.name, e.data["payload"]) for e in received] == [("go", "hello")]
    # The admin, the REST API and the CLI read the run table: the child's row links its parent.
    wait_until(
        lambda: WorkflowRun.objects.filter(
            workflow_id="kid-1", parent__workflow_id="parent-1", status="completed"
        ).exists(),
        30,
        message="the child's row with its parent",
    )


def test_child_failure_reaches_the_parent_with_its_cause(engine: Engine) -> None:
    handle = engine.start(wf.parent, {"child_id": "kid-2", "child": {"mode": "fail"}})
    assert handle.result(timeout=60) == {"failed": "ActivityError", "child": "kid-2"}

    reraising = engine.start(
        wf.parent, {"child_id": "kid-3", "child": {"mode": "fail"}, "reraise": True}
    )
    with pytest.raises(workflow.WorkflowFailedError) as raised:
        reraising.result(timeout=60)
    child_failure = raised.value.cause
    assert isinstance(child_failure, workflow.WorkflowFailedError)
    assert child_failure.workflow_id == "kid-3"
    assert isinstance(child_failure.cause, workflow.ActivityError)
    assert child_failure.cause.cause_message == "cannot read bad-child"


def test_cancelling_the_parent_cancels_its_child(engine: Engine, counter_dir: Any) -> None:
    handle = engine.start(wf.parent, {"child_id": "kid-4", "child": {"mode": "forever"}})
    engine.wait_for(handle.id, "child:comp_child")
    engine.wait_for("kid-4", "signal:never")
    engine.executor.cancel(handle.id, sender="operator")
    with pytest.raises(workflow.WorkflowCanceledError):
        handle.result(timeout=60)
    with pytest.raises(workflow.WorkflowCanceledError):
        engine.executor.get_handle("kid-4").result(timeout=60)
    assert run_count(counter_dir, "cleanup") == 1


def test_an_abandoned_child_outlives_its_parent(engine: Engine) -> None:
    args = {"child_id": "kid-5", "child": {"mode": "wait"}, "policy": "abandon", "detach": True}
    handle = engine.start(wf.parent, args)
    assert handle.result(timeout=60) == "kid-5"
    engine.wait_for("kid-5", "signal:go")
    assert engine.executor.describe("kid-5").status is workflow.Status.RUNNING
    engine.executor.signal("kid-5", workflow.Signal("go", "later"))
    assert engine.executor.get_handle("kid-5").result(timeout=30) == "child got later"


def test_patched_code_under_running_runs(engine: Engine, counter_dir: Any) -> None:
    before = engine.start(wf.versioned)
    engine.wait_for(before.id, "signal:go")

    # Deploy version 2, which adds an audit step at the start behind ctx.patched().
    engine.worker.stop()
    engine.worker.env[CODE_VERSION_ENV] = "2"
    engine.worker.start().wait_ready()
    after = engine.start(wf.versioned)
    engine.wait_for(after.id, "signal:go")

    for handle in (before, after):
        engine.executor.signal(handle.id, workflow.Signal("go"))
    assert before.result(timeout=60) == "original"  # passed that point before the change
    assert after.result(timeout=60) == "patched"
    assert run_count(counter_dir, "audit") == 1
    markers = [e for e in engine.executor.history(after.id) if e.type is E.MARKER_RECORDED]
    assert [m.name for m in markers] == ["audit-step"]
    assert "MarkerRecorded" not in engine.event_types(before.id)


def test_continue_as_new_follows_the_chain_and_keeps_signals(engine: Engine) -> None:
    handle = engine.start(wf.keep_going, [], id="ticker")
    engine.wait_for("ticker", "signal:tick")
    for tick in (1, 2, 3):  # ticks the running run has not taken move on to the next run
        engine.executor.signal("ticker", workflow.Signal("tick", tick))
    assert handle.result(timeout=60) == [1, 2, 3]
    assert handle.status() is workflow.Status.CONTINUED_AS_NEW
    last = engine.executor.describe("ticker")
    assert last.status is workflow.Status.COMPLETED and last.run_id != handle.run_id
    assert last.continued_from is not None
    history = engine.executor.history("ticker")
    assert history[0].type is E.WORKFLOW_STARTED and history[0].data["input"] == [1, 2]


def test_async_workflow_and_async_activities(engine: Engine, counter_dir: Any) -> None:
    handle = engine.start(wf.async_workflow, [1, 2, 3])
    assert handle.result(timeout=60) == {"doubled": [2, 4, 6]}
    assert run_count(counter_dir, "double_async") == 3
