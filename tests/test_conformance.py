"""One conformance suite, run unchanged on every executor.

Each test runs once on the built-in engine and once on Temporal, each time against a real
`manage.py runworker` subprocess (Celery + PostgreSQL, or a Temporal worker on the session's
Temporal dev server), with the workflows of `tests/workflows_conformance.py`. What a user can
observe — results, errors, statuses, queries, how often activities ran — must be the same.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from beluga_workflows import workflow
from tests import workflows_conformance as wf
from tests.conformance import Engine
from tests.harness import run_count, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
def test_tutorial(engine: Engine, counter_dir: Any, approve: bool) -> None:
    handle = engine.start(wf.tutorial, "Q4 revenue analysis", timeout=timedelta(hours=48))
    engine.wait_for(handle.id, "signal:approval")
    assert handle.status() is workflow.Status.RUNNING
    assert engine.executor.query(handle.id, "status") == "running"
    state = engine.executor.describe(handle.id)
    assert state.workflow == "conf_tutorial" and state.input == "Q4 revenue analysis"
    assert state.waiting_deadline - state.waiting_since == timedelta(hours=24)

    engine.executor.signal(handle.id, workflow.Signal("approval", approve, sender="reviewer"))

    result = handle.result(timeout=30)
    if approve:
        assert result.startswith("Final Report") and "Q4 revenue analysis" in result
    else:
        assert result == "Workflow rejected by reviewer."
    assert handle.status() is workflow.Status.COMPLETED
    assert run_count(counter_dir, "research") == 1
    assert run_count(counter_dir, "report") == (1 if approve else 0)
    history = engine.executor.history(handle.id)
    received = [e for e in history if e.type is workflow.EventType.SIGNAL_RECEIVED]
    assert [e.data for e in received] == [{"payload": approve, "sender": "reviewer"}]
    assert history[0].type is workflow.EventType.WORKFLOW_STARTED
    assert history[-1].type is workflow.EventType.WORKFLOW_COMPLETED


def test_retry_until_the_activity_succeeds(engine: Engine, counter_dir: Any) -> None:
    handle = engine.start(wf.retry, {"fails": 2, "max_attempts": 3})
    assert handle.result(timeout=30) == 3
    assert run_count(counter_dir, "flaky") == 3


def test_exhausted_retries_fail_the_run_with_the_activity_error(
    engine: Engine, counter_dir: Any
) -> None:
    handle = engine.start(wf.retry, {"fails": 5, "max_attempts": 2})
    with pytest.raises(workflow.WorkflowFailedError) as raised:
        handle.result(timeout=30)
    cause = raised.value.cause
    assert isinstance(cause, workflow.ActivityError)
    assert (cause.activity, cause.attempts, cause.cause_type) == ("flaky", 2, "ConnectionError")
    assert cause.cause_message == "attempt 2 failed"
    assert run_count(counter_dir, "flaky") == 2
    assert handle.status() is workflow.Status.FAILED
    assert engine.executor.describe(handle.id).error["type"] == "ActivityError"


def test_non_retryable_error_fails_at_once(engine: Engine, counter_dir: Any) -> None:
    handle = engine.start(wf.retry, {"fails": 5, "max_attempts": 5, "error": "PermissionError"})
    with pytest.raises(workflow.WorkflowFailedError) as raised:
        handle.result(timeout=30)
    assert (raised.value.cause.attempts, raised.value.cause.cause_type) == (1, "PermissionError")
    assert run_count(counter_dir, "flaky") == 1


def test_activity_timeout(engine: Engine, counter_dir: Any) -> None:
    began = time.monotonic()
    handle = engine.start(wf.activity_timeout, 20)
    assert handle.result(timeout=30) == {"cause_type": "ActivityTimeoutError", "attempts": 1}
    assert time.monotonic() - began < 15  # the 1s timeout, not the activity's 20s
    assert run_count(counter_dir, "slow") == 1
    # The abandoned attempt learns it timed out and stops on its own.
    wait_until(lambda: run_count(counter_dir, "slow-cancelled") == 1, 20, message="slow stops")


def test_signals_sent_before_the_wait_are_kept_in_order(engine: Engine) -> None:
    handle = engine.start(wf.signal_order, 3)
    for item in (1, 2, 3):
        engine.executor.signal(handle.id, workflow.Signal("item", item))
    engine.executor.signal(handle.id, workflow.Signal("go"))
    assert handle.result(timeout=30) == [1, 2, 3]


def test_signal_arriving_in_time_wins_over_its_timeout(engine: Engine) -> None:
    handle = engine.start(wf.signal_timeout, {"seconds": 60})
    engine.wait_for(handle.id, "signal:approval")
    engine.executor.signal(handle.id, workflow.Signal("approval", "yes"))
    assert handle.result(timeout=30) == "approved: yes"


def test_signal_timeout(engine: Engine) -> None:
    handle = engine.start(wf.signal_timeout, {"seconds": 1})
    assert handle.result(timeout=30) == "no approval within 1s"

    failing = engine.start(wf.signal_timeout, {"seconds": 1, "reraise": True})
    with pytest.raises(workflow.WorkflowFailedError) as raised:
        failing.result(timeout=30)
    assert raised.value.cause.type_name == "SignalTimeoutError"


@pytest.mark.parametrize("wait_on", ["signal", "activity"])
def test_cancel_runs_the_cleanup_activity(engine: Engine, counter_dir: Any, wait_on: str) -> None:
    handle = engine.start(wf.cancel_with_cleanup, wait_on)
    engine.wait_for(handle.id, "signal:never" if wait_on == "signal" else "activity:slow")
    if wait_on == "activity":
        wait_until(lambda: run_count(counter_dir, "slow") == 1, 20, message="slow running")

    engine.executor.cancel(handle.id, sender="operator")

    with pytest.raises(workflow.WorkflowCanceledError):
        handle.result(timeout=30)
    assert handle.status() is workflow.Status.CANCELED
    assert run_count(counter_dir, "cleanup") == 1
    types = engine.event_types(handle.id)
    assert "CancelRequested" in types and types[-1] == "WorkflowCanceled"
    if wait_on == "activity":  # the running activity is told, and stops
        wait_until(lambda: run_count(counter_dir, "slow-cancelled") == 1, 20, message="stop")
    with pytest.raises(workflow.WorkflowClosedError):
        engine.executor.cancel(handle.id)
    with pytest.raises(workflow.WorkflowClosedError):
        engine.executor.signal(handle.id, workflow.Signal("never"))


def test_workflow_timeout(engine: Engine) -> None:
    handle = engine.start(wf.waits_forever, timeout=1)
    with pytest.raises(workflow.WorkflowTimeoutError) as raised:
        handle.result(timeout=30)
    assert raised.value.timeout_seconds == 1
    assert handle.status() is workflow.Status.TIMED_OUT
    assert engine.executor.describe(handle.id).error["type"] == "WorkflowTimeoutError"
    assert engine.event_types(handle.id)[-1] == "WorkflowTimedOut"
    with pytest.raises(workflow.WorkflowClosedError):
        engine.executor.signal(handle.id, workflow.Signal("finish"))


def test_durable_sleep(engine: Engine) -> None:
    began = time.monotonic()
    handle = engine.start(wf.sleep, 1.5)
    engine.wait_for(handle.id, "timer:sleep")
    slept = handle.result(timeout=30)
    assert slept >= 1.5 and time.monotonic() - began >= 1.5
    assert "TimerFired" in engine.event_types(handle.id)


def test_queries_builtin_and_custom(engine: Engine) -> None:
    executor = engine.executor
    handle = engine.start(wf.queries)
    engine.wait_for(handle.id, "signal:finish")

    assert executor.query(handle.id, "status") == "running"
    assert executor.query(handle.id, "result") is None
    progress = executor.query(handle.id, "progress")
    assert progress["stage"] == "waiting"
    history = executor.query(handle.id, "history")
    assert history[0]["type"] == "WorkflowStarted" and history[0]["sequence"] == 1
    assert "SignalWaitStarted" in [event["type"] for event in history]
    with pytest.raises(workflow.QueryError):
        executor.query(handle.id, "no-such-query")

    executor.signal(handle.id, workflow.Signal("finish", 42))
    result = handle.result(timeout=30)
    # ctx.random() and ctx.uuid4() are the same on every replay of the run.
    assert result == {"payload": 42, "random": progress["random"], "uuid": progress["uuid"]}
    assert executor.query(handle.id, "status") == "completed"
    assert executor.query(handle.id, "result") == result
    assert executor.query(handle.id, "progress")["stage"] == "finished"


def test_duplicate_id(engine: Engine) -> None:
    executor = engine.executor
    first = engine.start(wf.waits_forever, id="order-42")
    with pytest.raises(workflow.WorkflowAlreadyStartedError):
        engine.start(wf.waits_forever, id="order-42")
    executor.signal("order-42", workflow.Signal("finish", "first"))
    assert first.result(timeout=30) == "first"

    second = engine.start(wf.waits_forever, id="order-42")  # a finished id may run again
    assert second.run_id != first.run_id
    assert executor.get_handle("order-42").run_id == second.run_id
    executor.signal("order-42", workflow.Signal("finish", "second"))
    assert second.result(timeout=30) == "second"
    assert first.result(timeout=5) == "first"


def test_unknown_id(engine: Engine) -> None:
    executor = engine.executor
    with pytest.raises(workflow.WorkflowNotFoundError):
        executor.describe("no-such-run")
    with pytest.raises(workflow.WorkflowNotFoundError):
        executor.signal("no-such-run", workflow.Signal("approval", True))
    with pytest.raises(workflow.WorkflowNotFoundError):
        executor.cancel("no-such-run")
    with pytest.raises(workflow.WorkflowNotFoundError):
        executor.get_handle("no-such-run")


def test_non_determinism_fails_the_run(engine: Engine) -> None:
    handle = engine.start(wf.nondeterminism)
    engine.wait_for(handle.id, "signal:go")

    # Deploy "version 2" of the code, which calls another activity first.
    engine.worker.stop()
    engine.worker.env[wf.CODE_VERSION_ENV] = "2"
    engine.worker.start().wait_ready()
    engine.executor.signal(handle.id, workflow.Signal("go"))

    with pytest.raises(workflow.WorkflowFailedError) as raised:
        handle.result(timeout=60)
    cause = raised.value.cause
    assert isinstance(cause, workflow.NonDeterminismError)
    assert (cause.step, cause.expected, cause.got) == (0, "activity 'step_a'", "activity 'step_b'")
    assert handle.status() is workflow.Status.FAILED
