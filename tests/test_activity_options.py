"""Activity options on the built-in engine: heartbeat timeout, schedule-to-close, queues.

The acceptance tests run real `runworker` subprocesses on the real broker and database: a
worker killed with `kill -9` in the middle of a heartbeating activity, a retry that resumes
from the last heartbeat, retries cut short by the schedule-to-close timeout, and an activity
that waits for a worker of its own queue. The option checks at the end are unit tests.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from beluga_workflows import heartbeats, workflow
from beluga_workflows.management.commands.runworker import parse_queues
from beluga_workflows.options import ActivityOptions, RetryPolicy, build_activity_options
from beluga_workflows.worker import celery_queues
from tests import workflows_activity_options as wf
from tests.harness import run_count, wait_until


@pytest.fixture
def executor():
    return workflow.new("default")


def start(executor, fn, input=None):
    return executor.execute(fn, workflow.WorkflowOptions(input=input))


def counted(counter_dir: Path, name: str) -> list[list[str]]:
    """The lines `record_run(name, detail)` wrote: `[pid, *detail words]` each."""
    path = counter_dir / name
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


# Acceptance: real workers.


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_a_killed_worker_is_noticed_after_the_heartbeat_timeout_and_the_retry_resumes(
    worker_factory, executor, counter_dir, settings
):
    # As in production: a dead worker's attempt would be sent again only after 30 s.
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "REDISPATCH_AFTER": 30.0}
    first = worker_factory()
    handle = start(executor, wf.resumable, {"n": 60, "pause": 0.1})
    wait_until(lambda: run_count(counter_dir, "chunk") >= 3, 20, message="activity started")
    second = worker_factory()  # ready while the first still works: only its sweeper can help
    first.kill9()
    killed_at = time.monotonic()
    done_by_first = [int(c[2]) for c in counted(counter_dir, "chunk") if c[1] == "1"]

    wait_until(lambda: run_count(counter_dir, "resume") == 2, 20, message="a second attempt")
    noticed_after = time.monotonic() - killed_at
    # The 1 s heartbeat timeout, not the 60 s start-to-close timeout, brought the retry.
    assert noticed_after < 10, noticed_after

    result = handle.result(timeout=30)
    assert result["attempt"] == 2
    # It resumed from the last heartbeat the dead attempt recorded, not from zero.
    assert result["resumed_from"] in (max(done_by_first), max(done_by_first) + 1)
    assert result["resumed_from"] > 0
    redone = [c for c in counted(counter_dir, "chunk") if c[1] == "2"]
    assert len(redone) == 60 - result["resumed_from"]
    assert {c[0] for c in redone} == {str(second.pid)}
    failed = [e for e in executor.history(handle.id) if e.type == "ActivityAttemptFailed"]
    assert len(failed) == 1
    assert failed[0].data["error"]["timeout"] == "heartbeat"
    assert "1s heartbeat timeout" in failed[0].data["error"]["message"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_a_live_attempt_that_stops_heartbeating_times_out_and_the_retry_gets_its_details(
    worker, executor
):
    began = time.monotonic()
    handle = start(executor, wf.stalled, 8)
    assert handle.result(timeout=20) == {"attempt": 2, "details": {"stalled_at": 1}}
    assert time.monotonic() - began < 6  # the 1 s heartbeat timeout, not the 8 s hang
    failed = [e for e in executor.history(handle.id) if e.type == "ActivityAttemptFailed"]
    assert [e.data["error"]["timeout"] for e in failed] == ["heartbeat"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_the_schedule_to_close_timeout_stops_retries(worker, executor, counter_dir):
    began = time.monotonic()
    outcome = start(executor, wf.schedule_to_close).result(timeout=30)
    assert time.monotonic() - began < 8  # 1.5 s + 1 s, not 100 retries nor a 20 s attempt

    failing = outcome["failing"]
    assert failing["type"] == "ActivityTimeoutError"
    assert "1.5s schedule-to-close timeout" in failing["message"]
    assert "ConnectionError" in failing["message"]  # the last attempt's error, quoted
    assert 2 <= failing["attempts"] < 20
    assert run_count(counter_dir, "always-fails") == failing["attempts"]

    hanging = outcome["hanging"]
    assert hanging["type"] == "ActivityTimeoutError"
    assert hanging["attempts"] == 1
    assert "1s schedule-to-close timeout" in hanging["message"]
    assert run_count(counter_dir, "sleeps") == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.broker
def test_an_activity_on_its_own_queue_waits_for_a_worker_of_that_queue(
    worker_factory, executor, counter_dir
):
    worker_factory()  # the default queues only
    handle = start(executor, wf.special_queue, "gpu-job")

    def flagged() -> bool:
        heartbeats.clear_cache()
        return executor.describe(handle.id).no_worker

    wait_until(flagged, 10, message="no_worker for the special queue")
    time.sleep(1.0)  # the default worker had its chance (eager included), and the sweeper too
    assert run_count(counter_dir, "special") == 0
    assert executor.describe(handle.id).status == workflow.Status.RUNNING

    special = worker_factory(args=("--queues", "special"))
    assert handle.result(timeout=20) == special.pid
    assert [c[0] for c in counted(counter_dir, "special")] == [str(special.pid)]
    heartbeats.clear_cache()
    assert executor.describe(handle.id).no_worker is False


# Unit: the options themselves.


def test_options_default_to_none_and_serialize_only_what_is_set():
    opts = ActivityOptions()
    assert (opts.heartbeat_timeout, opts.schedule_to_close_timeout, opts.queue) == (None,) * 3
    assert set(opts.to_json()) == {"retry", "timeout"}
    full = build_activity_options(
        (
            workflow.with_activity_heartbeat_timeout(timedelta(seconds=5)),
            workflow.with_activity_schedule_to_close_timeout(90),
            workflow.with_activity_queue("gpu"),
        )
    )
    assert full.heartbeat_timeout == timedelta(seconds=5)
    assert full.schedule_to_close_timeout == timedelta(seconds=90)
    assert full.queue == "gpu"
    assert ActivityOptions.from_json(full.to_json()) == full


def test_options_stored_before_these_existed_still_load():
    old = {"retry": RetryPolicy().to_json(), "timeout": 300.0}
    assert ActivityOptions.from_json(old) == ActivityOptions()


@pytest.mark.parametrize(
    "option, error",
    [
        (lambda: workflow.with_activity_heartbeat_timeout(0), "greater than zero"),
        (lambda: workflow.with_activity_heartbeat_timeout(-1), "must not be negative"),
        (lambda: workflow.with_activity_heartbeat_timeout("5s"), "timedelta or a number"),
        (lambda: workflow.with_activity_schedule_to_close_timeout(0), "greater than zero"),
        (lambda: workflow.with_activity_schedule_to_close_timeout(float("inf")), "finite"),
        (lambda: workflow.with_activity_queue(""), "must not be empty"),
        (lambda: workflow.with_activity_queue("gpu queue"), "only letters, digits"),
        (lambda: workflow.with_activity_queue("x" * 201), "at most 200"),
        (lambda: workflow.with_activity_queue(7), "must be a string"),
        (lambda: ActivityOptions(heartbeat_timeout=timedelta(0)), "greater than zero"),
        (lambda: ActivityOptions(queue="a/b"), "only letters, digits"),
    ],
)
def test_bad_options_are_refused_with_a_clear_error(option, error):
    with pytest.raises((TypeError, ValueError), match=error):
        option()


def test_the_default_queue_by_name_is_the_default_queue():
    assert build_activity_options((workflow.with_activity_queue("default"),)).queue is None


def test_a_non_option_names_every_option_function():
    with pytest.raises(TypeError) as info:
        build_activity_options((timedelta(seconds=5),))
    for name in ("with_activity_heartbeat_timeout", "with_activity_queue", "with_activity_retry"):
        assert name in str(info.value)


def test_worker_queues_expand_default_and_keep_other_names(settings):
    assert celery_queues(None) == ["beluga_workflows", "beluga_activities"]
    assert celery_queues(["gpu"]) == ["gpu"]
    assert celery_queues(["default", "gpu"]) == ["beluga_workflows", "beluga_activities", "gpu"]
    assert parse_queues(" gpu, default,gpu ") == ["gpu", "default"]
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="at least one"):
        parse_queues(" , ")
    with pytest.raises(CommandError, match="only letters"):
        parse_queues("gpu,bad queue")
