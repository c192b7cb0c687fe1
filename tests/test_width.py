"""Width inside one run: a wide fan-out completes, a step is never stuck on a database
limit or error, and the limits per run refuse clearly instead of hanging.

Acceptance tests with real `runworker` subprocesses, PostgreSQL and the broker (no timing
assertions: the speed of a fan-out is measured by `bench.fanout`, beside DBOS).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from beluga_workflows import workflow
from beluga_workflows.engine import sql
from beluga_workflows.history import EventType, HistoryEvent
from beluga_workflows.models import ActivityTask, WorkflowEvent, WorkflowRun
from tests import harness
from tests import workflows_width as wf
from tests.harness import wait_until


def event_counts(workflow_id: str) -> dict[str, int]:
    run = WorkflowRun.objects.filter(workflow_id=workflow_id).latest("id")
    counts: dict[str, int] = {}
    for type in run.events.values_list("type", flat=True):
        counts[type] = counts.get(type, 0) + 1
    return counts


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_5000_wide_fan_out_completes_with_every_activity_recorded_once(worker_factory):
    """Above ~3,120 activities the scheduling step once passed PostgreSQL's 65,535
    bind parameters and the run was stuck for ever; each completion also replayed the whole
    history (quadratic). Now it completes, every activity scheduled and completed once."""
    worker_factory(concurrency=4)
    executor = workflow.new("default")
    handle = executor.execute(wf.fan_out, workflow.WorkflowOptions(id="wide-5000", input=5000))
    assert handle.result(timeout=600) == 2 * sum(range(5000))
    counts = event_counts("wide-5000")
    assert counts["ActivityScheduled"] == 5000
    assert counts["ActivityCompleted"] == 5000
    assert ActivityTask.objects.filter(run__workflow_id="wide-5000").count() == 5000


@pytest.mark.django_db(transaction=True)
@pytest.mark.core
def test_one_step_writes_more_rows_than_one_statement_could_bind():
    """The parameter-limit regression, at the SQL level: 7,000 events and 7,000 tasks (about
    147,000 parameters) in one step are written, with their primary keys."""
    executor = workflow.new("default")
    executor.execute(wf.parked, workflow.WorkflowOptions(id="wide-write", input=None))
    now = timezone.now()
    with transaction.atomic():
        run = sql.lock_run(WorkflowRun.objects.get(workflow_id="wide-write").pk)
        assert run is not None
        first = run.last_sequence + 1
        events = [
            HistoryEvent(first + i, EventType.MARKER_RECORDED, now, None, f"m{i}", 0, {"i": i})
            for i in range(7000)
        ]
        tasks = [
            ActivityTask(
                run=run, step=1000 + i, name="double", reference="tests.workflows_width:double",
                input=i, options={"timeout": 60}, not_before=now, deadline=now, dispatched_at=now,
            )
            for i in range(7000)
        ]  # fmt: skip
        run.last_sequence += 7000
        sql.write(run, events, tasks, ["last_sequence"])
        assert all(task.pk for task in tasks)
        assert len({task.pk for task in tasks}) == 7000
    assert WorkflowEvent.objects.filter(run=run, type="MarkerRecorded").count() == 7000
    assert ActivityTask.objects.filter(run=run).count() == 7000
    assert WorkflowRun.objects.get(pk=run.pk).last_sequence == first + 6999


# A step the database refuses ---------------------------------------------------------------

REFUSAL = "the database refuses this write (test trigger)"


@pytest.fixture
def refusing_database(transactional_db: None) -> Iterator[None]:
    """PostgreSQL refuses to record `refused_step`'s completion, with an error of the class a
    lost connection has (57014, query_canceled: psycopg's OperationalError) on a connection
    that works: the case that once became an endless "reconnecting" loop."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION width_refuse() RETURNS trigger AS $$ BEGIN "
            f"RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = '57014'; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER width_refuse BEFORE INSERT ON beluga_workflows_workflowevent "
            "FOR EACH ROW WHEN (NEW.type = 'ActivityCompleted' AND NEW.name = 'refused_step') "
            "EXECUTE FUNCTION width_refuse()"
        )
    try:
        yield
    finally:
        allow_writes()


def allow_writes() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS width_refuse ON beluga_workflows_workflowevent")


@pytest.mark.django_db(transaction=True)
def test_a_step_the_database_refuses_fails_the_run_with_the_error(
    refusing_database, worker_factory
):
    worker = worker_factory()
    executor = workflow.new("default")
    handle = executor.execute(wf.refused, workflow.WorkflowOptions(id="refused-fail", input=1))
    with pytest.raises(workflow.WorkflowFailedError) as failure:
        handle.result(timeout=30)
    assert REFUSAL in str(failure.value)
    state = executor.describe("refused-fail")
    assert state.status == workflow.Status.FAILED
    assert REFUSAL in state.error["message"]
    assert "reconnecting" not in worker.log_text()


@pytest.mark.django_db(transaction=True)
def test_a_step_the_database_refuses_holds_the_run_under_hold_and_resumes_once_fixed(
    refusing_database, worker_factory
):
    worker_factory()
    executor = workflow.new("default")
    executor.execute(wf.refused_hold, workflow.WorkflowOptions(id="refused-hold", input=1))
    held = wait_until(lambda: executor.describe("refused-hold").held, timeout=30)
    assert REFUSAL in held["error"]["message"]
    assert executor.describe("refused-hold").status == workflow.Status.RUNNING
    allow_writes()  # the fix: the attempt times out, runs again, and is recorded this time
    assert executor.get_handle("refused-hold").result(timeout=60) == 2
    assert executor.describe("refused-hold").held is None


# Limits per run ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "executor_name", ["default", pytest.param("temporal", marks=pytest.mark.temporal)]
)
def test_too_many_pending_steps_fail_the_run_naming_the_limit(
    executor_name, request, worker_factory, tmp_path: Path
):
    if executor_name == "temporal":
        request.getfixturevalue("use_temporal")
    worker_factory(env=harness.settings_env(tmp_path, MAX_PENDING_STEPS=50))
    executor = workflow.new(executor_name)
    handle = executor.execute(wf.fan_out, workflow.WorkflowOptions(id="too-wide", input=60))
    with pytest.raises(workflow.WorkflowFailedError) as failure:
        handle.result(timeout=60)
    assert isinstance(failure.value.cause, workflow.WorkflowLimitError)
    assert "MAX_PENDING_STEPS = 50" in str(failure.value)
    assert "continue_as_new" in str(failure.value)
    scheduled = [e for e in executor.history("too-wide") if e.type.value == "ActivityScheduled"]
    assert scheduled == []  # refused before the step was recorded, not half done


@pytest.mark.django_db(transaction=True)
def test_a_history_past_its_limit_fails_the_run_and_refuses_signals(
    worker_factory, tmp_path: Path, settings: Any
):
    worker_factory(env=harness.settings_env(tmp_path, MAX_HISTORY_EVENTS=20))
    executor = workflow.new("default")
    handle = executor.execute(wf.chain, workflow.WorkflowOptions(id="too-long", input=50))
    with pytest.raises(workflow.WorkflowFailedError) as failure:
        handle.result(timeout=60)
    assert "MAX_HISTORY_EVENTS = 20" in str(failure.value)
    assert len(executor.history("too-long")) <= 24  # stopped at the limit, not at 100 events

    executor.execute(wf.parked, workflow.WorkflowOptions(id="signals", input=None))
    executor.signal("signals", workflow.Signal("more", 1))
    # A limit this run is past already, however many events the worker adds meanwhile.
    limit = len(executor.history("signals")) - 1
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "MAX_HISTORY_EVENTS": limit}
    with pytest.raises(workflow.WorkflowLimitError, match=f"MAX_HISTORY_EVENTS = {limit}:"):
        executor.signal("signals", workflow.Signal("more", 2))
    received = [e for e in executor.history("signals") if e.type is EventType.SIGNAL_RECEIVED]
    assert [e.data["payload"] for e in received] == [1]  # the refused one is not recorded


@pytest.mark.django_db(transaction=True)
@pytest.mark.temporal
def test_on_temporal_a_fan_out_past_the_clusters_pending_limit_fails_instead_of_hanging(
    use_temporal, worker_factory, tmp_path: Path
):
    """Temporal refuses a workflow task that takes a run past its cluster's pending-activity
    limit (2,000 by default) and retries it for ever; the limit is ours to refuse first."""
    worker_factory(
        env=harness.settings_env(
            tmp_path, TEMPORAL={**use_temporal["TEMPORAL"], "MAX_PENDING_ACTIVITIES": 40}
        )
    )
    executor = workflow.new("temporal")
    handle = executor.execute(wf.fan_out, workflow.WorkflowOptions(id="too-wide-t", input=45))
    with pytest.raises(workflow.WorkflowFailedError) as failure:
        handle.result(timeout=60)
    assert "TEMPORAL['MAX_PENDING_ACTIVITIES'] = 40" in str(failure.value)
