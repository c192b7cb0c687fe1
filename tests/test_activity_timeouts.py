"""Activity timeouts mean what they say: start-to-close from an attempt's start, schedule-to-start
from its scheduling, schedule-to-close over everything — on both executors.

The acceptance tests run real `runworker` subprocesses against the real broker and database (and
a Temporal dev server for the `temporal` ones): work waiting in line for a busy worker is not
late, an activity no worker takes fails with its schedule-to-start timeout and is not retried, a
slow attempt still times out and is retried, and so does one whose worker was killed (the
deadline its start recorded outlives the worker). The option checks at the end are unit tests.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from beluga_workflows import testing, workflow
from beluga_workflows.options import ActivityOptions, build_activity_options
from tests import workflows_activity_timeouts as wf
from tests.harness import run_count, wait_until

EXECUTORS = ["default", pytest.param("temporal", marks=pytest.mark.temporal)]


@pytest.fixture(params=EXECUTORS)
def executor_name(request: pytest.FixtureRequest) -> str:
    if request.param == "temporal":
        request.getfixturevalue("use_temporal")
    return str(request.param)


def start(executor: Any, fn: Any, input: Any = None) -> Any:
    return executor.execute(fn, workflow.WorkflowOptions(input=input))


def errors(executor: Any, handle: Any, event_type: str) -> list[dict[str, Any]]:
    """The recorded errors of the run's `ActivityAttemptFailed` or `ActivityFailed` events."""
    return [e.data["error"] for e in executor.history(handle.id) if e.type == event_type]


# Acceptance: real workers, both executors.


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_work_waiting_in_line_for_a_busy_worker_is_not_late(
    executor_name, worker_factory, counter_dir
):
    """Six activities of 1.5 s, each with a 3 s start-to-close timeout and no retry, started
    together on a worker that runs one at a time: the last starts ~7.5 s after it was
    scheduled, and still completes, since its clock started when the worker took it."""
    worker_factory(concurrency=1)
    executor = workflow.new(executor_name)
    handle = start(executor, wf.line, {"n": 6, "seconds": 1.5, "timeout": 3})
    assert handle.result(timeout=60) == [0, 1, 2, 3, 4, 5]
    assert run_count(counter_dir, "works") == 6
    assert errors(executor, handle, "ActivityAttemptFailed") == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_an_activity_no_worker_starts_fails_with_its_schedule_to_start_timeout(
    executor_name, worker_factory, counter_dir
):
    """On a queue no worker serves, with a 2 s schedule-to-start timeout and three attempts
    allowed: it fails after one, never having run, with the timeout named."""
    worker_factory()  # the default queues only
    executor = workflow.new(executor_name)
    queue = f"timeouts-nobody-{uuid.uuid4().hex[:8]}"
    handle = start(executor, wf.schedule_to_start, queue)
    outcome = handle.result(timeout=30)
    assert outcome["type"] == "ActivityTimeoutError"
    assert outcome["attempts"] == 1  # not retried: a retry would wait in the same line
    assert "2s schedule-to-start timeout" in outcome["message"]
    assert run_count(counter_dir, "unserved") == 0
    assert [e.get("timeout") for e in errors(executor, handle, "ActivityFailed")] == [
        "schedule_to_start"
    ]
    assert errors(executor, handle, "ActivityAttemptFailed") == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_a_slow_attempt_still_times_out_and_is_retried(executor_name, worker, counter_dir):
    executor = workflow.new(executor_name)
    handle = start(executor, wf.slow_attempt, 20)
    assert handle.result(timeout=30) == 2
    assert run_count(counter_dir, "slow-first") == 2
    if executor_name == "default":  # Temporal keeps no event per failed attempt
        failed = errors(executor, handle, "ActivityAttemptFailed")
        assert [e["timeout"] for e in failed] == ["start_to_close"]


# Acceptance: the built-in engine's durable deadline.


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_a_killed_workers_attempt_times_out_at_the_deadline_its_start_recorded(
    worker_factory, counter_dir, settings
):
    """The worker running an attempt (3 s start-to-close) is killed; another worker's sweeper
    times the attempt out from the deadline recorded when it started and retries it — long
    before it would send it again as lost (REDISPATCH_AFTER, 30 s as in production)."""
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "REDISPATCH_AFTER": 30.0}
    first = worker_factory()
    executor = workflow.new("default")
    handle = start(executor, wf.killed, 60)
    wait_until(lambda: run_count(counter_dir, "slow-first") == 1, 20, message="attempt 1 runs")
    worker_factory()  # ready while the first still works: only its sweeper can help
    first.kill9()
    assert handle.result(timeout=20) == ["quick", 2]
    failed = errors(executor, handle, "ActivityAttemptFailed")
    assert [e["timeout"] for e in failed] == ["start_to_close"]
    # Timed out by the sweeper (Redis: the message stays with the dead worker), or — RabbitMQ
    # hands the unacknowledged message to the second worker at once — by that worker, which
    # runs the attempt again only for what is left of the deadline its first start recorded.
    assert failed[0]["message"] in (
        "Attempt 1 of 'slow_first' did not finish (its worker died) within its 3s timeout.",
        "Attempt 1 of 'slow_first' did not finish within its 3s timeout.",
    )


# The testing harness: the option is accepted and recorded; an attempt starts when it is due.


def test_the_testing_harness_accepts_the_timeouts_and_starts_attempts_when_due(counter_dir):
    env = testing.WorkflowEnvironment()
    handle = env.execute(
        wf.line, workflow.WorkflowOptions(input={"n": 3, "seconds": 0, "timeout": 1})
    )
    assert handle.result() == [0, 1, 2]
    handle = env.execute(wf.schedule_to_start, workflow.WorkflowOptions(input="gpu"))
    assert handle.result() == "ran"
    scheduled = [e for e in env.history(handle.id) if e.type == "ActivityScheduled"]
    assert scheduled[0].data["options"]["schedule_to_start_timeout"] == 2


# Unit: the option itself.


def test_schedule_to_start_is_stored_only_when_set_and_reads_back():
    assert "schedule_to_start_timeout" not in ActivityOptions().to_json()
    opts = build_activity_options((workflow.with_activity_schedule_to_start_timeout(90),))
    assert opts.schedule_to_start_timeout == timedelta(seconds=90)
    assert opts.to_json()["schedule_to_start_timeout"] == 90
    assert ActivityOptions.from_json(opts.to_json()) == opts


@pytest.mark.parametrize(
    "option, error",
    [
        (lambda: workflow.with_activity_schedule_to_start_timeout(0), "greater than zero"),
        (lambda: workflow.with_activity_schedule_to_start_timeout(-1), "must not be negative"),
        (lambda: workflow.with_activity_schedule_to_start_timeout("5s"), "timedelta or a number"),
        (lambda: workflow.with_activity_schedule_to_start_timeout(float("nan")), "finite"),
        (lambda: ActivityOptions(schedule_to_start_timeout=timedelta(0)), "greater than zero"),
    ],
)
def test_a_bad_schedule_to_start_timeout_is_refused_with_a_clear_error(option, error):
    with pytest.raises((TypeError, ValueError), match=error) as info:
        option()
    assert "schedule-to-start" in str(info.value) or "schedule_to_start" in str(info.value)


def test_a_non_option_names_the_schedule_to_start_option():
    with pytest.raises(TypeError, match="with_activity_schedule_to_start_timeout"):
        build_activity_options((timedelta(seconds=5),))
