"""Retention: `manage.py workflow prune` and `BELUGA_WORKFLOWS["RETENTION"]` in `runworker`.

Runs are brought to their end in-process (`drive`), then their close is moved into the past,
as if they had ended weeks ago. Every test checks what a user cares about: which runs are gone
with all their rows, and which (running ones, their families) are still there and still work.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.test import override_settings
from django.utils import timezone

from beluga_workflows import retention, workflow
from beluga_workflows.engine import steps
from beluga_workflows.management.commands.workflow import parse_duration
from beluga_workflows.models import ActivityTask, Timer, WorkflowEvent, WorkflowRun
from tests import harness
from tests.api_fixtures import drive, start, users_fixture  # noqa: F401

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def cli(*args: str) -> str:
    out = StringIO()
    call_command("workflow", *args, stdout=out)
    return out.getvalue()


def exit_code(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as failure:
        cli(*args)
    return failure.value.returncode, str(failure.value)


def closed_long_ago(workflow_id: str, days: float) -> WorkflowRun:
    """Pretend the (closed) run with this id ended `days` ago."""
    run = WorkflowRun.objects.get(workflow_id=workflow_id)
    assert run.status != "running", run.status
    WorkflowRun.objects.filter(pk=run.pk).update(closed_at=timezone.now() - days * DAY)
    return run


def research_canceled(workflow_id: str) -> WorkflowRun:
    """A canceled tutorial run: it owns events, an activity attempt and a timer."""
    executor = workflow.get_executor()
    executor.start("research", workflow.WorkflowOptions(id=workflow_id, input="Q4", timeout=3600))
    drive(workflow_id)  # schedules research_activity (not run: no worker here)
    executor.cancel(workflow_id)
    run = drive(workflow_id)
    assert run.status == "canceled"
    assert run.activity_tasks.exists() and run.timers.exists()
    return run


def rows_of(run: WorkflowRun) -> tuple[int, int, int]:
    return (
        WorkflowEvent.objects.filter(run_id=run.pk).count(),
        ActivityTask.objects.filter(run_id=run.pk).count(),
        Timer.objects.filter(run_id=run.pk).count(),
    )


@pytest.fixture
def old_and_new() -> dict[str, WorkflowRun]:
    """Four runs that closed 40 days ago, one closed yesterday, one running since long ago."""
    runs = {}
    for workflow_id in ("old-1", "old-2"):
        start("api_echo", workflow_id, 1)
        runs[workflow_id] = closed_long_ago(workflow_id, 40)
    start("api_fail", "old-failed", {"amount": -1})
    runs["old-failed"] = closed_long_ago("old-failed", 40)
    research_canceled("old-canceled")
    runs["old-canceled"] = closed_long_ago("old-canceled", 40)
    start("api_echo", "recent", 2)
    runs["recent"] = closed_long_ago("recent", 1)
    runs["running"] = start("api_approval", "running")
    WorkflowRun.objects.filter(pk=runs["running"].pk).update(created_at=timezone.now() - 400 * DAY)
    return runs


def remaining() -> set[str]:
    return set(WorkflowRun.objects.values_list("workflow_id", flat=True))


# Durations on the command line.


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("15m", 900), ("2h", 7200), ("30d", 30 * 86400), ("0s", 0), (" 7d ", 604800)],
)
def test_durations_are_an_integer_and_a_unit(text: str, seconds: int) -> None:
    assert parse_duration(text, "--older-than") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["30", "30x", "1.5d", "-3d", "d", "", "3 d", "30days", "1e3s"])
def test_a_bad_duration_is_a_usage_error_naming_the_value(text: str) -> None:
    code, message = exit_code("prune", f"--older-than={text}")
    assert code == 2
    assert f"--older-than {text!r} is not a duration" in message
    assert "<int><s|m|h|d>" in message and "30d" in message


def test_a_duration_past_100_years_is_refused() -> None:
    code, message = exit_code("prune", "--older-than", "40000d")
    assert code == 2 and "at most 100 years" in message


def test_start_takes_a_duration_or_plain_seconds_for_timeout_and_wait() -> None:
    cli("start", "api_approval", "--id", "two-days", "--timeout", "2d")
    cli("start", "api_approval", "--id", "plain", "--timeout", "90")
    started = {
        run.workflow_id: run.timeout_seconds
        for run in WorkflowRun.objects.filter(workflow_id__in=["two-days", "plain"])
    }
    assert started == {"two-days": 172800.0, "plain": 90.0}
    code, message = exit_code("start", "api_approval", "--timeout", "2x")
    assert code == 2 and "--timeout '2x' is not a duration" in message
    assert "plain number of seconds" in message
    code, message = exit_code("start", "api_echo", "--wait", "soon")
    assert code == 2 and "--wait 'soon'" in message
    assert WorkflowRun.objects.count() == 2  # nothing started by the refused ones


# Pruning.


def test_a_handle_on_a_pruned_run_says_not_found() -> None:
    executor = workflow.get_executor()
    handle = executor.start("api_echo", workflow.WorkflowOptions(id="gone", input=1))
    drive("gone")
    closed_long_ago("gone", 40)
    cli("prune", "--older-than", "30d")
    with pytest.raises(workflow.WorkflowNotFoundError):
        handle.status()
    with pytest.raises(workflow.WorkflowNotFoundError):
        handle.result(timeout=1)


@pytest.mark.core
def test_prune_deletes_old_closed_runs_with_all_their_rows(old_and_new) -> None:
    canceled = old_and_new["old-canceled"]
    assert all(rows_of(canceled))  # events, an attempt and a timer to delete

    out = cli("prune", "--older-than", "30d")

    assert out.startswith("Deleted 4 runs closed before ")
    assert remaining() == {"recent", "running"}
    for name in ("old-1", "old-2", "old-failed", "old-canceled"):
        assert rows_of(old_and_new[name]) == (0, 0, 0), name
    # The running run is untouched and still works.
    running = old_and_new["running"]
    cli("signal", "running", "approval", "true")
    assert drive("running").status == "completed"
    assert WorkflowEvent.objects.filter(run_id=running.pk).count() > 2


def test_prune_works_in_batches_and_reports_every_row(old_and_new) -> None:
    old = [rows_of(run) for name, run in old_and_new.items() if name.startswith("old")]
    expected = [sum(counts) for counts in zip(*old, strict=True)]
    report = json.loads(cli("prune", "--older-than", "30d", "--batch-size", "3", "--json"))
    assert report["runs"] == 4 and report["batches"] == 2
    assert [report["events"], report["activity_tasks"], report["timers"]] == expected
    assert report["dry_run"] is False and report["mirror_only"] is False
    assert set(report["statuses"]) == {s.value for s in retention.CLOSED}
    assert json.loads(cli("prune", "--older-than", "30d", "--json"))["runs"] == 0


def test_a_dry_run_counts_and_deletes_nothing(old_and_new) -> None:
    before = WorkflowEvent.objects.count(), WorkflowRun.objects.count()
    out = cli("prune", "--older-than", "30d", "--dry-run")
    assert out.startswith("Would delete 4 runs closed before ")
    assert "Dry run: nothing was deleted." in out
    assert (WorkflowEvent.objects.count(), WorkflowRun.objects.count()) == before
    dry = json.loads(cli("prune", "--older-than", "30d", "--dry-run", "--json"))
    done = json.loads(cli("prune", "--older-than", "30d", "--json"))
    assert dry["dry_run"] and dry["batches"] == 0
    for key in ("runs", "events", "activity_tasks", "timers"):
        assert dry[key] == done[key], key


def test_status_limits_what_is_pruned(old_and_new) -> None:
    cli("prune", "--older-than", "30d", "--status", "failed,canceled")
    assert remaining() == {"old-1", "old-2", "recent", "running"}


@pytest.mark.parametrize("status", ["running", "bogus", "completed,runing"])
def test_status_must_name_closed_statuses(old_and_new, status: str) -> None:
    code, message = exit_code("prune", "--older-than", "30d", "--status", status)
    assert code == 2 and "is not a closed status" in message and "timed_out" in message
    assert len(remaining()) == 6


def test_older_than_defaults_to_the_retention_setting(old_and_new, settings) -> None:
    code, message = exit_code("prune")
    assert code == 2 and "--older-than is required" in message
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "RETENTION": timedelta(days=30)}
    assert cli("prune").startswith("Deleted 4 runs")


def test_on_temporal_prune_says_it_deletes_the_mirror_only(old_and_new, settings) -> None:
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "EXECUTOR": "temporal"}
    out = cli("prune", "--older-than", "30d", "--dry-run")
    assert "mirror rows" in out and "namespace's retention" in out
    assert json.loads(cli("prune", "--older-than", "30d", "--json"))["mirror_only"] is True


# Families: children, parents, continue-as-new chains.


def test_a_child_stays_while_its_parent_runs() -> None:
    start("api_parent", "p1", {"children": ["c1", "c2"]})
    drive("c1"), drive("c2")  # both wait for approval
    cli("signal", "c1", "approval", "true")
    drive("c1")
    steps.notify_parent(WorkflowRun.objects.get(workflow_id="c1").pk)  # as after commit
    closed_long_ago("c1", 40)

    cli("prune", "--older-than", "30d")
    assert remaining() == {"p1", "c1", "c2"}  # p1 still runs, and its page lists c1

    cli("signal", "c2", "approval", "true")
    drive("c2")
    steps.notify_parent(WorkflowRun.objects.get(workflow_id="c2").pk)
    assert drive("p1").status == "completed"
    for workflow_id in ("p1", "c2"):
        closed_long_ago(workflow_id, 40)
    cli("prune", "--older-than", "30d")
    assert remaining() == set()


def test_a_closed_parent_stays_while_a_child_runs() -> None:
    start("api_parent", "p1", {"children": ["c1"]})
    drive("c1")
    # As with ParentClosePolicy.ABANDON: the parent ended, its child runs on.
    WorkflowRun.objects.filter(workflow_id="p1").update(
        status="failed", closed_at=timezone.now() - 40 * DAY
    )
    cli("prune", "--older-than", "30d")
    assert remaining() == {"p1", "c1"}
    assert WorkflowRun.objects.get(workflow_id="c1").parent.workflow_id == "p1"

    cli("signal", "c1", "approval", "false")
    drive("c1")
    closed_long_ago("c1", 40)
    assert remaining() == {"p1", "c1"}
    cli("prune", "--older-than", "30d")
    assert "p1" in remaining()  # until c1 has handed its outcome over (the sweeper's job)
    steps.notify_parent(WorkflowRun.objects.get(workflow_id="c1").pk)
    cli("prune", "--older-than", "30d")
    assert remaining() == set()


def test_the_earlier_runs_of_a_chain_go_while_the_chain_goes_on() -> None:
    start("api_ticker", "ticker", 1)
    cli("signal", "ticker", "tick", "null")
    drive("ticker")  # continued as new: the chain's second run takes over
    old = WorkflowRun.objects.get(workflow_id="ticker", status="continued_as_new")
    WorkflowRun.objects.filter(pk=old.pk).update(closed_at=timezone.now() - 40 * DAY)

    assert json.loads(cli("prune", "--older-than", "30d", "--json"))["runs"] == 1

    current = WorkflowRun.objects.get(workflow_id="ticker")
    assert current.status == "running" and current.continued_from is None
    assert json.loads(cli("describe", "ticker", "--json"))["continued_from"] is None
    drive("ticker")
    cli("signal", "ticker", "tick", "null")
    drive("ticker")  # the chain goes on: continued again, then done after the third tick
    cli("signal", "ticker", "tick", "null")
    assert drive("ticker").result == 3


# Safe while workers run.


@pytest.mark.django_db(transaction=True)
def test_a_row_another_process_holds_is_left_for_the_next_prune(old_and_new) -> None:
    held = old_and_new["old-1"]
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            WorkflowRun.objects.select_for_update().get(pk=held.pk)
            locked.set()
            release.wait(30)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        report = json.loads(cli("prune", "--older-than", "30d", "--batch-size", "1", "--json"))
        assert report["runs"] == 3  # it did not wait for the held row
        assert remaining() == {"old-1", "recent", "running"}
    finally:
        release.set()
        holder.join(10)
    assert json.loads(cli("prune", "--older-than", "30d", "--json"))["runs"] == 1
    assert remaining() == {"recent", "running"}
    from project.celery import app

    harness.purge_broker(app)  # committed for real: no later worker may get their messages


# RETENTION: runworker prunes on its own.


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runworker_prunes_on_its_own_with_retention(old_and_new, worker_factory, tmp_path):
    worker_factory(env=harness.settings_env(tmp_path, RETENTION=7 * 86400))
    harness.wait_until(lambda: remaining() == {"recent", "running"}, 30, message="pruned")
    assert rows_of(old_and_new["old-canceled"]) == (0, 0, 0)
    assert WorkflowRun.objects.get(workflow_id="running").status == "running"


def test_only_one_worker_prunes_at_a_time(old_and_new) -> None:
    """The exclusive batch (a worker's) yields to another exclusive prune in progress."""
    cutoff = timezone.now() - 30 * DAY
    other = connections.create_connection("default")  # another worker's
    try:
        with other.cursor() as theirs:
            theirs.execute("BEGIN")
            theirs.execute("SELECT pg_advisory_xact_lock(%s, %s)", retention.LOCK)
            assert retention.prune_batch(cutoff, exclusive=True) is None
            assert len(remaining()) == 6
            theirs.execute("COMMIT")
    finally:
        other.close()
    assert retention.prune_batch(cutoff, exclusive=True).runs == 4


# The RETENTION setting is checked.


@pytest.mark.parametrize("value", [0, -1, "30d", True, float("inf"), timedelta(0), 10**10])
def test_a_bad_retention_is_reported_by_check(value: Any) -> None:
    from django.conf import settings

    with override_settings(BELUGA_WORKFLOWS={**settings.BELUGA_WORKFLOWS, "RETENTION": value}):
        messages = [m for m in run_checks() if m.id.startswith("beluga_workflows.")]
    assert [m.id for m in messages] == ["beluga_workflows.E010"]
    assert "BELUGA_WORKFLOWS['RETENTION'] must be" in messages[0].msg and messages[0].hint


@pytest.mark.parametrize("value", [None, 3600, 0.5, timedelta(days=30)])
def test_a_good_retention_passes_check(value: Any) -> None:
    from django.conf import settings

    with override_settings(BELUGA_WORKFLOWS={**settings.BELUGA_WORKFLOWS, "RETENTION": value}):
        assert [m for m in run_checks() if m.id.startswith("beluga_workflows.")] == []
