"""Fault paths through the real broker and real `runworker` processes.

Each test breaks something the way production does — a duplicate delivery, a lost message, a
backlog, a failing import, SIGTERM or kill -9 in the middle of an activity — and checks that the
engine's guard for it works: the activity runs as often as it should, the history is unchanged.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from beluga_workflows import workflow
from beluga_workflows.conf import beluga_settings
from beluga_workflows.models import ActivityTask, WorkflowEvent, WorkflowRun
from tests import workflows_engine as wf
from tests import workflows_flaky_import as flaky
from tests.harness import purge_broker, run_count, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.broker]


@pytest.fixture
def executor():
    return workflow.new("default")


def start(executor, fn, input=None):
    return executor.execute(fn, workflow.WorkflowOptions(input=input))


def history(handle) -> list[tuple[str, int | None, int | None]]:
    rows = WorkflowEvent.objects.filter(run__run_id=handle.run_id).order_by("sequence")
    return list(rows.values_list("type", "step", "attempt"))


def queued(name: str) -> int:
    from beluga_workflows.engine import dispatch

    length = dispatch.queued(name)
    assert length is not None, "the broker could not be asked"
    return length


def test_duplicate_messages_while_the_activity_runs_change_nothing(
    worker_factory, executor, counter_dir
):
    """A second `run_activity` and `advance_workflow` for the same run, delivered through the
    broker while the activity runs: the advisory lock turns the copy away."""
    from beluga_workflows import tasks

    worker_factory(concurrency=3)
    handle = start(executor, wf.long_activity, 3)
    wait_until(lambda: run_count(counter_dir, "sleepy") == 1, 20, message="activity started")
    run = WorkflowRun.objects.get(run_id=handle.run_id)
    task = ActivityTask.objects.get(run=run)
    tasks.run_activity.apply_async((task.pk, 1), queue=beluga_settings.ACTIVITY_QUEUE)
    tasks.advance_workflow.apply_async((run.pk,), queue=beluga_settings.WORKFLOW_QUEUE)
    # Both copies are taken while the activity still runs.
    wait_until(
        lambda: (
            queued(beluga_settings.ACTIVITY_QUEUE) == queued(beluga_settings.WORKFLOW_QUEUE) == 0
        ),
        2,
        message="duplicates delivered",
    )
    assert ActivityTask.objects.get(pk=task.pk).state == "scheduled"  # still running
    assert handle.result(timeout=30) == "slept 3"
    assert run_count(counter_dir, "sleepy") == 1
    assert [t for t, _, _ in history(handle)] == [
        "WorkflowStarted", "ActivityScheduled", "ActivityCompleted", "WorkflowCompleted",
    ]  # fmt: skip


def test_a_lost_workflow_step_message_is_recovered(worker_factory, executor):
    """The run's first step message never reaches a worker (purged from the queue): the sweeper
    takes the step after REDISPATCH_AFTER."""
    from project.celery import app

    process = worker_factory(start=False)
    handle = start(executor, wf.chain, {"n": 2})
    assert purge_broker(app) >= 1
    process.start().wait_ready()
    assert handle.result(timeout=30) == 10


def test_a_backlog_longer_than_redispatch_after_sends_nothing_twice(executor):
    """An activity message waiting behind a backlog is not sent again; once the queue has been
    seen empty after it was sent (so it left the queue, and was lost), it is."""
    from beluga_workflows.engine import steps, sweeper
    from project.celery import app

    purge_broker(app)
    sweeper.backlog = sweeper._Backlog()
    handle = executor.start("engine_long_activity", workflow.WorkflowOptions(input=1))
    run = WorkflowRun.objects.get(run_id=handle.run_id)
    steps.advance(run.pk)  # no worker: this process takes the step and sends the activity
    activity_queue = beluga_settings.ACTIVITY_QUEUE
    assert queued(activity_queue) == 1
    long_ago = timezone.now() - timedelta(seconds=beluga_settings.REDISPATCH_AFTER * 5)
    ActivityTask.objects.filter(run=run).update(dispatched_at=long_ago, not_before=long_ago)

    for _ in range(3):  # a backlog: the message is still queued
        assert sweeper.recover_activities() == 0
        time.sleep(0.05)
    assert queued(activity_queue) == 1

    purge_broker(app)  # the message is lost
    assert sweeper.recover_activities() == 1
    assert queued(activity_queue) == 1
    assert sweeper.recover_activities() == 0  # sent just now: not stale


def test_a_workflow_whose_import_fails_once_runs_when_it_imports(
    worker_factory, executor, counter_dir, tmp_path
):
    worker = worker_factory(env={"BELUGA_TEST_FAIL_IMPORT_ONCE": str(tmp_path / "imported")})
    handle = start(executor, flaky.flaky_import, 21)
    assert handle.result(timeout=30) == 42
    assert run_count(counter_dir, "import-failed") == 1
    assert "holding it" in worker.log_since_start()  # held, visibly, then taken again
    assert [t for t, _, _ in history(handle)] == [
        "WorkflowStarted", "ActivityScheduled", "ActivityCompleted", "WorkflowCompleted",
    ]  # fmt: skip


def test_sigterm_during_an_activity_finishes_it_and_nothing_runs_again(
    worker_factory, executor, counter_dir
):
    worker = worker_factory()
    handle = start(executor, wf.long_activity, 2)
    wait_until(lambda: run_count(counter_dir, "sleepy") == 1, 20, message="activity started")
    assert worker.stop(timeout=30) == 0
    # The attempt finished and was recorded before the worker exited.
    assert ActivityTask.objects.get(run__run_id=handle.run_id).state == "completed"
    worker.start().wait_ready()
    assert handle.result(timeout=30) == "slept 2"
    time.sleep(beluga_settings.REDISPATCH_AFTER + 0.5)  # the sweeper had its chance
    assert run_count(counter_dir, "sleepy") == 1


def test_kill9_during_an_activity_runs_it_exactly_once_more(worker_factory, executor, counter_dir):
    worker = worker_factory()
    handle = start(executor, wf.long_activity, 2)
    wait_until(lambda: run_count(counter_dir, "sleepy") == 1, 20, message="activity started")
    worker.kill9()
    worker.start().wait_ready()
    assert handle.result(timeout=30) == "slept 2"
    time.sleep(beluga_settings.REDISPATCH_AFTER + 0.5)
    assert run_count(counter_dir, "sleepy") == 2
    completed = [e for e in history(handle) if e[0] == "ActivityCompleted"]
    assert completed == [("ActivityCompleted", 0, 1)]
