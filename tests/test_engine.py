"""The built-in engine end to end: a real PostgreSQL, a real broker, `runworker` subprocesses."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from beluga_workflows import workflow
from beluga_workflows.models import WorkflowEvent, WorkflowRun
from project.demo.workflows import research_workflow
from tests import workflows_engine as wf
from tests.harness import run_count, run_writers, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def executor():
    return workflow.new("default")


def start(executor, fn, input=None, **options):
    return executor.execute(fn, workflow.WorkflowOptions(input=input, **options))


def event_types(executor, workflow_id):
    return [e.type.value for e in executor.history(workflow_id)]


def wait_for(executor, workflow_id, waiting_for, timeout=20):
    return wait_until(
        lambda: executor.describe(workflow_id).waiting_for == waiting_for,
        timeout,
        message=f"{workflow_id} waiting for {waiting_for}",
    )


@pytest.mark.broker
@pytest.mark.core
@pytest.mark.parametrize("payload, expected", [(True, "Final Report"), (False, "rejected")])
def test_tutorial_waits_for_approval_then_finishes(worker, executor, payload, expected):
    handle = start(executor, research_workflow, "Q4 revenue analysis", timeout=timedelta(hours=48))
    wait_for(executor, handle.id, "signal:approval")
    assert handle.status() is workflow.Status.RUNNING
    assert executor.query(handle.id, "status") == "running"
    executor.signal(handle.id, workflow.Signal("approval", payload, sender="reviewer"))
    assert expected in handle.result(timeout=20)
    assert handle.status() is workflow.Status.COMPLETED
    received = [e for e in executor.history(handle.id) if e.type.value == "SignalReceived"]
    assert received[0].data == {"payload": payload, "sender": "reviewer"}


@pytest.mark.core
def test_activity_is_retried_with_backoff_until_it_succeeds(worker, executor, counter_dir):
    handle = start(executor, wf.retrying, {"max_attempts": 3, "fail_times": 2})
    assert handle.result(timeout=20) == "ok on attempt 3"
    assert run_count(counter_dir, "flaky") == 3
    types = event_types(executor, handle.id)
    assert types.count("ActivityAttemptFailed") == 2 and "ActivityFailed" not in types


def test_exhausted_retries_reach_the_workflow_as_activity_error(worker, executor, counter_dir):
    handle = start(executor, wf.retrying, {"max_attempts": 2, "fail_times": 5})
    assert handle.result(timeout=20) == {"failed": "ConnectionError", "attempts": 2}
    assert run_count(counter_dir, "flaky") == 2


def test_non_retryable_error_fails_at_once_and_the_run_keeps_the_error(
    worker, executor, counter_dir
):
    handle = start(executor, wf.non_retryable, "missing")
    with pytest.raises(workflow.WorkflowFailedError) as failure:
        handle.result(timeout=20)
    cause = failure.value.cause
    assert isinstance(cause, workflow.ActivityError)
    assert (cause.cause_type, cause.attempts) == ("KeyError", 1)
    assert run_count(counter_dir, "lookup") == 1
    run = WorkflowRun.objects.get(run_id=handle.run_id)
    assert run.status == "failed" and run.error["cause_type"] == "KeyError"


def test_activity_timeout_is_enforced_per_attempt(worker, executor, counter_dir):
    began = time.monotonic()
    handle = start(executor, wf.activity_timeout, 30)
    with pytest.raises(workflow.WorkflowFailedError) as failure:
        handle.result(timeout=25)
    assert failure.value.cause.cause_type == "ActivityTimeoutError"
    assert "within its 1s timeout" in failure.value.cause.cause_message  # as configured
    assert time.monotonic() - began < 15
    assert run_count(counter_dir, "slow") == 2


@pytest.mark.core
def test_a_chain_of_activities_runs_in_its_workers_own_task(worker, executor, counter_dir):
    """Eager activities: a worker runs the activity its own step scheduled, with no broker hop."""
    handle = start(executor, wf.eager_chain, 5)
    assert handle.result(timeout=20) == [0, 1, 2, 3, 4]
    # The worker logs every task message it receives: the run's first step came through the
    # broker, its five activities did not.
    log = worker.log_since_start()
    assert log.count("beluga_workflows.advance_workflow[") >= 1
    assert "beluga_workflows.run_activity[" not in log
    assert run_writers(handle.run_id) == 5 + 2


@pytest.mark.core
def test_durable_sleep(worker, executor):
    handle = start(executor, wf.sleeper, 1)
    assert handle.result(timeout=20) >= 1


def test_signals_sent_before_the_wait_are_kept_in_order(worker, executor):
    handle = start(executor, wf.collect, 3)
    for item in ("a", "b", "c"):
        executor.signal(handle.id, workflow.Signal("item", item))
    assert handle.result(timeout=20) == ["a", "b", "c"]


def test_signal_wait_times_out(worker, executor):
    handle = start(executor, wf.wait_with_timeout, 1)
    assert handle.result(timeout=20) == "timed out: approval"
    assert "TimerFired" in event_types(executor, handle.id)


def test_cancel_reaches_the_current_wait_and_cleanup_runs(worker, executor, counter_dir):
    handle = start(executor, wf.cancellable)
    wait_for(executor, handle.id, "signal:never")
    executor.cancel(handle.id, sender="ops")
    with pytest.raises(workflow.WorkflowCanceledError):
        handle.result(timeout=20)
    assert handle.status() is workflow.Status.CANCELED
    assert run_count(counter_dir, "cleanup") == 1
    types = event_types(executor, handle.id)
    assert types[-1] == "WorkflowCanceled" and "CancelRequested" in types
    with pytest.raises(workflow.WorkflowClosedError, match="already finished"):
        executor.cancel(handle.id)


def test_workflow_timeout(worker, executor):
    handle = start(executor, wf.wait_with_timeout, 600, timeout=1)
    with pytest.raises(workflow.WorkflowTimeoutError):
        handle.result(timeout=20)
    assert handle.status() is workflow.Status.TIMED_OUT


def test_workflow_failure_is_kept_with_its_cause(worker, executor):
    handle = start(executor, wf.fails, "bad input")
    with pytest.raises(workflow.WorkflowFailedError) as failure:
        handle.result(timeout=20)
    assert isinstance(failure.value.cause, workflow.ApplicationError)
    assert failure.value.cause.type_name == "ValueError"
    assert failure.value.cause.message == "bad input"


def test_queries_builtin_and_custom(worker, executor):
    handle = start(executor, wf.with_queries)
    wait_for(executor, handle.id, "signal:value")
    assert executor.query(handle.id, "progress") == {"stage": "started", "values": []}
    executor.signal(handle.id, workflow.Signal("value", 1))
    wait_until(lambda: executor.query(handle.id, "progress")["values"] == [1])
    assert executor.query(handle.id, "progress")["stage"] == "got 1"
    with pytest.raises(workflow.QueryError, match="progress"):
        executor.query(handle.id, "nope")
    executor.signal(handle.id, workflow.Signal("value", "stop"))
    assert handle.result(timeout=20) == [1, "stop"]
    assert executor.query(handle.id, "result") == [1, "stop"]
    history = executor.query(handle.id, "history")
    assert history[0]["type"] == "WorkflowStarted" and history[-1]["type"] == "WorkflowCompleted"


@pytest.mark.core
def test_bad_calls_get_clear_errors(executor):
    with pytest.raises(workflow.InvalidPayloadError, match=r"\$\.when"):
        start(executor, wf.sleeper, {"when": object()})
    handle = start(executor, wf.collect, 1, id="dup")
    with pytest.raises(workflow.WorkflowAlreadyStartedError):
        start(executor, wf.collect, 1, id="dup")
    with pytest.raises(workflow.InvalidPayloadError):
        executor.signal("dup", workflow.Signal("item", {1, 2}))
    with pytest.raises(workflow.WorkflowNotFoundError):
        executor.signal("no-such-run", workflow.Signal("item", 1))
    with pytest.raises(workflow.ExecutorNotFoundError, match="default, temporal"):
        workflow.new("nope")
    assert workflow.list() == ["default", "temporal"]
    assert handle.id == "dup" and len(handle.run_id) == 36


def test_finished_id_can_run_again_and_signals_to_it_are_refused(worker, executor):
    first = start(executor, wf.collect, 1, id="again")
    executor.signal("again", workflow.Signal("item", "x"))
    assert first.result(timeout=20) == ["x"]
    with pytest.raises(workflow.WorkflowClosedError):
        executor.signal("again", workflow.Signal("item", "late"))
    second = start(executor, wf.collect, 1, id="again")
    assert second.run_id != first.run_id


# -- durability ------------------------------------------------------------------------------


def completed_steps(run_id):
    return set(
        WorkflowEvent.objects.filter(run__run_id=run_id, type="ActivityCompleted").values_list(
            "step", flat=True
        )
    )


@pytest.mark.broker
@pytest.mark.core
def test_kill9_mid_run_loses_nothing_and_reruns_no_finished_activity(worker, executor, counter_dir):
    n = 6
    handle = start(executor, wf.chain, {"n": n, "delay": 0.4})
    wait_until(lambda: run_count(counter_dir, "done-2") == 1, 30, message="three activities")
    worker.kill9()
    finished_before_kill = completed_steps(handle.run_id)
    assert finished_before_kill
    worker.start().wait_ready()
    assert handle.result(timeout=60) == sum(i * 10 for i in range(n))
    for i in finished_before_kill:
        assert run_count(counter_dir, f"start-{i}") == 1, f"activity {i} ran again"
    extra = sum(run_count(counter_dir, f"start-{i}") for i in range(n)) - n
    assert extra <= 1  # only the attempt in flight at the kill may run again
    sequences = list(
        WorkflowEvent.objects.filter(run__run_id=handle.run_id).values_list("sequence", flat=True)
    )
    assert sequences == list(range(1, len(sequences) + 1))


@pytest.mark.broker
@pytest.mark.core
def test_kill9_with_parallel_activities_in_flight(worker_factory, executor, counter_dir):
    """Finished activities of a fan-out never run again; those in flight at the kill may."""
    worker = worker_factory(concurrency=4)
    delays = [0.2, 3, 0.2, 3, 0.2, 3]
    handle = start(executor, wf.parallel, delays)
    # Recorded as completed, not merely returned: a kill between the two may rerun one.
    wait_until(
        lambda: {0, 2} <= completed_steps(handle.run_id),
        30,
        message="two quick activities recorded as completed",
    )
    worker.kill9()
    finished_before_kill = completed_steps(handle.run_id)
    in_flight = [
        i
        for i in range(len(delays))
        if run_count(counter_dir, f"start-{i}") and not run_count(counter_dir, f"done-{i}")
    ]
    assert {0, 2} <= finished_before_kill and in_flight
    worker.start().wait_ready()
    assert handle.result(timeout=60) == sum(i * 10 for i in range(len(delays)))
    for i in finished_before_kill:
        assert run_count(counter_dir, f"start-{i}") == 1, f"activity {i} ran again"
    extra = sum(run_count(counter_dir, f"start-{i}") for i in range(len(delays))) - len(delays)
    assert extra <= len(in_flight)


def test_a_dropped_database_connection_loses_no_result_and_reruns_nothing(
    worker, executor, counter_dir
):
    """The worker's PostgreSQL backends are terminated while an activity runs: the worker
    reconnects, records the outcome, and goes on; nothing runs twice."""
    from django.db import connection

    handle = start(executor, wf.sleepy_pair, 1.5)
    wait_until(lambda: run_count(counter_dir, "sleepy") == 1, 20, message="first activity")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    assert handle.result(timeout=30) == ["slept 1.5", "slept 1.5"]
    assert run_count(counter_dir, "sleepy") == 2


def test_a_dropped_connection_never_lets_a_running_activity_start_again(
    worker, executor, counter_dir
):
    """The advisory lock of a running attempt dies with its connection; the attempt renews
    its lease and takes the lock again, so the sweeper (REDISPATCH_AFTER = 2 s here) never
    sends a second copy of an activity that is still running."""
    from django.db import connection

    handle = start(executor, wf.long_activity, 6)
    wait_until(lambda: run_count(counter_dir, "sleepy") == 1, 20, message="activity started")
    time.sleep(0.5)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert handle.result(timeout=30) == "slept 6"
    assert run_count(counter_dir, "sleepy") == 1


def test_an_outcome_waits_out_a_database_outage_and_nothing_runs_again(
    worker, executor, counter_dir
):
    """PostgreSQL refuses every connection from before the activity ends until well past
    REDISPATCH_AFTER (2 s here): the worker keeps the outcome and records it when the database
    is back; the sweeper, back too, leaves the attempt to its live worker."""
    from tests.harness import database_outage

    handle = start(executor, wf.long_activity, 2)
    wait_until(lambda: run_count(counter_dir, "sleepy") == 1, 20, message="activity started")
    with database_outage():
        time.sleep(6)  # the activity ends meanwhile; its outcome cannot be written
    assert handle.result(timeout=30) == "slept 2"
    time.sleep(3)  # the sweeper had its chance
    assert run_count(counter_dir, "sleepy") == 1


@pytest.mark.broker
def test_kill9_while_sleeping_then_the_timer_still_fires(worker, executor):
    handle = start(executor, wf.sleeper, 2)
    wait_for(executor, handle.id, "timer:sleep")
    worker.kill9()
    time.sleep(2.5)  # the timer is due while no worker runs
    worker.start().wait_ready()
    assert handle.result(timeout=30) >= 2


@pytest.mark.broker
def test_duplicate_messages_never_duplicate_events(worker, executor, counter_dir):
    from beluga_workflows import tasks
    from beluga_workflows.models import ActivityTask

    handle = start(executor, wf.chain, {"n": 2})
    assert handle.result(timeout=20) == 10
    before = list(WorkflowEvent.objects.filter(run__run_id=handle.run_id).values_list("pk"))
    run = WorkflowRun.objects.get(run_id=handle.run_id)
    for task in ActivityTask.objects.filter(run=run):  # what a redelivery would do
        tasks.run_activity(task.pk, 1)
    tasks.advance_workflow(run.pk)
    after = list(WorkflowEvent.objects.filter(run__run_id=handle.run_id).values_list("pk"))
    assert before == after
    assert run_count(counter_dir, "start-0") == run_count(counter_dir, "start-1") == 1


@pytest.mark.broker
def test_several_workers_share_runs_without_double_execution(worker_factory, executor, counter_dir):
    worker_factory(concurrency=2)
    worker_factory(concurrency=2)
    handles = [start(executor, wf.chain, {"n": 3}) for _ in range(8)]
    for handle in handles:
        assert handle.result(timeout=60) == 30
    for i in range(3):
        assert run_count(counter_dir, f"start-{i}") == 8


def test_a_run_started_while_no_worker_runs_waits_for_one(worker_factory, executor):
    process = worker_factory(start=False)
    handle = start(executor, wf.chain, {"n": 2})
    time.sleep(0.5)
    assert handle.status() is workflow.Status.RUNNING
    process.start().wait_ready()
    assert handle.result(timeout=30) == 10


def test_sigterm_stops_the_worker_cleanly(worker):
    assert worker.stop(timeout=30) == 0


@pytest.mark.core
def test_a_run_of_n_activities_takes_at_most_n_plus_2_write_transactions(worker, executor):
    n = 10
    handle = start(executor, wf.chain, {"n": n})
    assert handle.result(timeout=30) == sum(i * 10 for i in range(n))
    # Events are never updated, so every transaction that appended one is still visible.
    assert run_writers(handle.run_id) == n + 2

    fan_out = start(executor, wf.parallel, [0] * n)  # all scheduled in one transaction
    assert fan_out.result(timeout=30) == sum(i * 10 for i in range(n))
    assert run_writers(fan_out.run_id) == n + 2


def test_a_signal_retires_its_timeout_but_not_the_next_waits(worker, executor):
    from beluga_workflows.models import Timer

    handle = start(executor, wf.two_waits, 1)
    wait_for(executor, handle.id, "signal:first")
    executor.signal(handle.id, workflow.Signal("first", "a"))
    assert handle.result(timeout=20) == ["a", "timed out"]
    states = dict(Timer.objects.filter(run__run_id=handle.run_id).values_list("step", "state"))
    assert states == {0: "canceled", 1: "fired"}
