"""Holding a run for a fix: a bug in workflow code under ON_WORKFLOW_ERROR = "hold".

Each test deploys code for real: `beluga_hold_deployed` is written into a directory on the
worker's PYTHONPATH (see tests/workflows_hold.py), first with a bug, then fixed, and a new
`runworker` picks up the new file — as a deploy or a rollback would. On both executors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from beluga_workflows import workflow
from beluga_workflows.options import Status
from tests import harness
from tests.api_fixtures import api_fixture, drive, event_types, users_fixture  # noqa: F401
from tests.harness import wait_until
from tests.workflows_hold import (
    clock_flow,
    default_flow,
    deliberate_flow,
    deploy_flow,
    drift_flow,
    fail_flow,
)

BROKEN = """\
def total(n):
    return "total: " + n
"""
FIXED = """\
def total(n):
    # The fix: format the number.
    return f"total: {n}"
"""
#: Where the bug is, as the user's traceback must show it.
BUG_LINE = 'beluga_hold_deployed.py", line 2, in total'


class Deploy:
    """One executor, the code directory its workers import from, and its workers."""

    def __init__(self, name: str, factory: Callable[..., harness.WorkerProcess], root: Path):
        self.executor = workflow.new(name)
        self.factory = factory
        self.code = root / "deployed"
        self.code.mkdir()
        self.env = {
            "PYTHONPATH": os.pathsep.join([str(self.code), str(harness.REPO_ROOT)]),
            "PYTHONDONTWRITEBYTECODE": "1",  # a new file of the same size and second is new
        }
        self.worker: harness.WorkerProcess | None = None

    def settings(self, **beluga: Any) -> None:
        """Workers get these BELUGA_WORKFLOWS keys (a settings module beside the code)."""
        self.env.update(harness.settings_env(self.code, **beluga))

    def ship(self, source: str) -> None:
        (self.code / "beluga_hold_deployed.py").write_text(source)

    def start_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.worker = self.factory(env=self.env)

    def start(self, fn: Any, workflow_id: str, value: Any = 21) -> Any:
        return self.executor.execute(fn, workflow.WorkflowOptions(id=workflow_id, input=value))

    def held(self, workflow_id: str) -> Any:
        """The run once it is held (describe() through the executor)."""

        def check() -> Any:
            state = self.executor.describe(workflow_id)
            assert state.status is Status.RUNNING, state
            return state if state.held else None

        return wait_until(check, timeout=40, interval=0.3, message=f"{workflow_id} held")


@pytest.fixture(params=["default", pytest.param("temporal", marks=pytest.mark.temporal)])
def deploy(request: pytest.FixtureRequest, worker_factory: Any, tmp_path: Path) -> Deploy:
    if request.param == "temporal":
        request.getfixturevalue("use_temporal")
    return Deploy(request.param, worker_factory, tmp_path)


@pytest.fixture
def ops_api(django_user_model: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_superuser("ops", "", "pw"))
    return client


def assert_users_traceback(traceback: str) -> None:
    assert BUG_LINE in traceback, traceback
    assert 'return "total: " + n' in traceback
    assert "workflows_hold.py" in traceback  # the workflow's own line that called it
    assert f"{os.sep}beluga_workflows{os.sep}" not in traceback, traceback
    assert "temporalio" not in traceback and "greenlet" not in traceback
    assert traceback.rstrip().endswith('TypeError: can only concatenate str (not "int") to str')


@pytest.mark.django_db(transaction=True)
def test_a_held_run_resumes_by_itself_when_fixed_code_is_deployed(
    deploy: Deploy, ops_api: APIClient
) -> None:
    api = ops_api
    deploy.ship(BROKEN)
    deploy.start_worker()
    handle = deploy.start(deploy_flow, "hold-deploy")

    state = deploy.held("hold-deploy")
    held = state.held
    assert held["error"]["type"] == "TypeError"
    assert held["attempts"] >= 1
    assert_users_traceback(held["traceback"])
    detail = api.get("/api/workflows/hold-deploy/").json()
    assert detail["status"] == "running"
    assert detail["held"]["error"]["type"] == "TypeError"
    assert BUG_LINE in detail["held"]["traceback"]
    out = StringIO()
    call_command("workflow", "describe", "hold-deploy", stdout=out)
    assert "held:" in out.getvalue() and BUG_LINE in out.getvalue()

    # Retrying the broken code changes nothing: it stays held, nothing is recorded.
    assert api.post("/api/workflows/hold-deploy/retry/").status_code == 202
    call_command("workflow", "retry", "hold-deploy", stdout=StringIO())
    assert deploy.executor.describe("hold-deploy").status is Status.RUNNING

    deploy.ship(FIXED)
    deploy.start_worker()
    assert handle.result(timeout=60) == "total: 42"
    assert deploy.executor.describe("hold-deploy").held is None
    types = [event.type.value for event in deploy.executor.history("hold-deploy")]
    assert types.count("ActivityScheduled") == 1 and types[-1] == "WorkflowCompleted"

    # Nothing to retry on a run that is not held.
    response = api.post("/api/workflows/hold-deploy/retry/")
    assert response.status_code == 409, response.content
    with pytest.raises(CommandError) as refused:
        call_command("workflow", "retry", "hold-deploy", stdout=StringIO())
    assert refused.value.returncode == 4


@pytest.mark.django_db(transaction=True)
def test_fail_stays_the_default_and_the_failure_shows_the_users_line(deploy: Deploy) -> None:
    deploy.ship(BROKEN)
    deploy.start_worker()
    handle = deploy.start(default_flow, "fail-default")
    with pytest.raises(workflow.WorkflowFailedError):
        handle.result(timeout=40)
    error = deploy.executor.describe("fail-default").error
    assert error["type"] == "TypeError"
    assert_users_traceback(error["traceback"])


@pytest.mark.django_db(transaction=True)
def test_hold_as_the_setting_with_per_workflow_fail_and_failures_on_purpose(
    deploy: Deploy,
) -> None:
    deploy.settings(ON_WORKFLOW_ERROR="hold")
    deploy.ship(BROKEN)
    deploy.start_worker()
    held = deploy.start(default_flow, "setting-hold")
    failing = deploy.start(fail_flow, "workflow-fail")
    on_purpose = deploy.start(deliberate_flow, "on-purpose")

    with pytest.raises(workflow.WorkflowFailedError) as failed:
        failing.result(timeout=40)
    assert failed.value.cause.type_name == "TypeError"  # type: ignore[attr-defined]
    with pytest.raises(workflow.WorkflowFailedError) as declined:
        on_purpose.result(timeout=40)
    assert declined.value.cause.type_name == "PaymentDeclined"  # type: ignore[attr-defined]
    assert_users_traceback(deploy.held("setting-hold").held["traceback"])
    assert held.status() is Status.RUNNING


@pytest.mark.django_db(transaction=True)
def test_a_non_deterministic_deploy_is_held_until_it_is_rolled_back(deploy: Deploy) -> None:
    deploy.settings(ON_WORKFLOW_ERROR="hold")
    deploy.ship('FIRST_STEP = "double"\n')
    deploy.start_worker()
    handle = deploy.start(drift_flow, "drift")
    wait_until(
        lambda: deploy.executor.describe("drift").waiting_for == "signal:go",
        timeout=40,
        message="the run waiting for its signal",
    )

    deploy.ship('FIRST_STEP = "triple"  # a change that does not fit the running run\n')
    deploy.start_worker()
    deploy.executor.signal("drift", workflow.Signal("go"))  # replayed on the new code
    held = deploy.held("drift").held
    assert held["error"]["type"] == "NonDeterminismError", held

    deploy.ship('FIRST_STEP = "double"  # rolled back\n')
    deploy.start_worker()
    assert handle.result(timeout=60) == 42


# In-process: the web surfaces of a held run on the built-in engine (no worker needed).


@pytest.fixture
def hold(settings: Any) -> None:
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "ON_WORKFLOW_ERROR": "hold"}


@pytest.mark.django_db
def test_a_held_run_in_the_admin_rest_and_cli_and_who_may_retry_it(
    hold: None, api: Any, users: dict[str, Any], client: Any
) -> None:
    executor = workflow.get_executor()
    executor.execute(default_flow, workflow.WorkflowOptions(id="held-web", input=1))
    run = drive("held-web")  # `deployed` is None here: an AttributeError in the user's code
    assert run.status == "running" and run.held["attempts"] == 1
    assert run.held["error"]["type"] == "AttributeError"
    assert 'workflows_hold.py", line' in run.held["traceback"]
    assert event_types(run) == ["WorkflowStarted"]  # nothing the failed pass decided
    assert run.held_retry_at is not None and run.advance_requested_at is None

    state = executor.describe("held-web")
    assert state.held is not None and state.held["next_retry"] is not None
    assert state.no_worker is True  # no live worker sweeps: nobody would try it again
    assert api("viewer").get("/api/workflows/held-web/").json()["held"]["attempts"] == 1
    listed = api("viewer").get("/api/workflows/?status=running").json()["results"]
    assert [r["held"]["error"]["type"] for r in listed] == ["AttributeError"]

    # Retrying needs the signal permission, as in the admin and the CLI.
    assert api("viewer").post("/api/workflows/held-web/retry/").status_code == 403
    with pytest.raises(CommandError) as denied:
        call_command("workflow", "retry", "held-web", "--user", "viewer", stdout=StringIO())
    assert denied.value.returncode == 5
    assert api("reviewer").post("/api/workflows/held-web/retry/").status_code == 202
    run = drive("held-web")
    assert run.held["attempts"] == 2 and event_types(run) == ["WorkflowStarted"]

    client.force_login(users["admin"])
    page = client.get(reverse("admin:beluga_workflows_workflowrun_change", args=[run.pk]))
    html = page.content.decode()
    assert "Held for a fix" in html and "Retry now" in html and "AttributeError" in html
    assert run.held["since"] not in html and re.search(r"Since \d{4}-\d\d-\d\d \d\d:", html)
    assert "workflows_hold.py" in html
    changelist = client.get(reverse("admin:beluga_workflows_workflowrun_changelist"))
    assert "bw-status-held" in changelist.content.decode()
    only_held = client.get(
        reverse("admin:beluga_workflows_workflowrun_changelist") + "?waiting=held"
    )
    assert "held-web" in only_held.content.decode()
    listing = StringIO()
    call_command("workflow", "list", "--held", stdout=listing)
    assert "held-web" in listing.getvalue() and "running (held)" in listing.getvalue()
    answer = client.post(reverse("admin:beluga_workflows_workflowrun_retry", args=[run.pk]))
    assert answer.status_code == 302
    assert drive("held-web").held["attempts"] == 3

    # A held run that is canceled closes as canceled: its code cannot take the cancel.
    assert api("operator").post("/api/workflows/held-web/cancel/").status_code == 202
    run = drive("held-web")
    assert run.status == "canceled" and run.held is None
    assert executor.describe("held-web").held is None


@pytest.mark.django_db
def test_retry_is_refused_for_runs_that_are_not_held(hold: None, api: Any) -> None:
    from tests.api_fixtures import start

    start("api_approval", "fine")  # waits for a signal: nothing wrong with its code
    response = api("reviewer").post("/api/workflows/fine/retry/")
    assert response.status_code == 409 and "not held" in response.json()["detail"]
    assert api("reviewer").post("/api/workflows/nope/retry/").status_code == 404
    with pytest.raises(workflow.WorkflowError):
        workflow.get_executor().retry("fine")


@pytest.mark.django_db
def test_a_determinism_violation_is_a_bug_too(api: Any) -> None:
    workflow.get_executor().execute(clock_flow, workflow.WorkflowOptions(id="clock", input=1))
    run = drive("clock")
    assert run.status == "running", run.error
    assert run.held["error"]["type"] == "DeterminismViolationError"
    assert 'workflows_hold.py", line' in run.held["traceback"]
