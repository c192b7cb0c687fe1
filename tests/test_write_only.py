"""Write permissions without `view`: a user who may start, signal or cancel runs but not view
them learns a run's id, run id and status, nothing more — the same in REST, admin and CLI."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from beluga_workflows.models import WorkflowRun
from tests.api_fixtures import (  # noqa: F401
    api_fixture,
    drive,
    event_types,
    make_user,
    signals,
    start,
    users_fixture,
)

pytestmark = [pytest.mark.django_db, pytest.mark.core]

MINIMAL = {"id", "run_id", "status"}


@pytest.fixture
def blind(users):
    """Users holding one write permission and no `view`."""
    extra = {
        "launcher": make_user("launcher", "start"),
        "signaller": make_user("signaller", "signal"),
        "stopper": make_user("stopper", "cancel"),
    }
    users.update(extra)
    return users


def test_rest_start_without_view_answers_only_id_run_id_and_status(api, blind):
    response = api("launcher").post(
        "/api/workflows/",
        {"workflow": "api_echo", "id": "secret-1", "input": {"card": "4242"}},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert set(response.json()) == MINIMAL
    assert b"4242" not in response.content
    # A user who may view gets the whole run.
    full = api("starter").post(
        "/api/workflows/", {"workflow": "api_echo", "id": "open-1"}, format="json"
    )
    assert {"input", "result", "error"} <= set(full.json())


def test_rest_signal_and_cancel_without_view_answer_minimal_bodies(api, blind):
    start("api_approval", "order-1", {"card": "4242"})
    signalled = api("signaller").post(
        "/api/workflows/order-1/signal/", {"name": "approval", "payload": True}, format="json"
    )
    assert signalled.status_code == 202
    assert set(signalled.json()) == MINIMAL and b"4242" not in signalled.content
    assert signals(WorkflowRun.objects.get(workflow_id="order-1"))[0]["sender"] == "signaller"

    start("api_approval", "order-2", {"card": "4242"})
    cancelled = api("stopper").post("/api/workflows/order-2/cancel/", format="json")
    assert cancelled.status_code == 202
    assert set(cancelled.json()) == MINIMAL and b"4242" not in cancelled.content


def test_rest_without_view_a_finished_run_looks_like_an_unknown_id(api, blind):
    start("api_echo", "done-1", 1)
    body = {"name": "approval", "payload": True}
    finished = api("signaller").post("/api/workflows/done-1/signal/", body, format="json")
    unknown = api("signaller").post("/api/workflows/nope/signal/", body, format="json")
    assert finished.status_code == unknown.status_code == 404
    assert api("stopper").post("/api/workflows/done-1/cancel/").status_code == 404
    # With `view` the difference is told: 409 for the finished run.
    seen = api("admin").post("/api/workflows/done-1/signal/", body, format="json")
    assert seen.status_code == 409
    # And the read endpoints stay closed.
    assert api("signaller").get("/api/workflows/done-1/").status_code == 403


def test_admin_buttons_need_view_as_well(blind):
    run = start("api_approval", "order-1")
    client = Client()
    client.force_login(blind["signaller"])
    url = f"/admin/beluga_workflows/workflowrun/{run.pk}/approve/"
    assert client.post(url).status_code == 403
    assert signals(run) == []
    client.force_login(blind["stopper"])
    assert client.post(f"/admin/beluga_workflows/workflowrun/{run.pk}/cancel/").status_code == 403
    assert event_types(run)[-1] == "SignalWaitStarted"


def _cli(*args: str) -> str:
    out = StringIO()
    call_command("workflow", *args, stdout=out)
    return out.getvalue()


def test_cli_without_view_prints_only_id_run_id_and_status(blind):
    started = json.loads(
        _cli(
            "start",
            "api_approval",
            "--id",
            "order-1",
            "--input",
            '{"card": "4242"}',
            "--user",
            "launcher",
            "--json",
        )
    )
    assert set(started) == MINIMAL
    drive("order-1")
    text = _cli("signal", "order-1", "approval", "true", "--user", "signaller")
    assert "4242" not in text and "order-1" in text
    drive("order-1")
    # The run has finished: without view it is "not found" (exit 3), with view a conflict (4).
    with pytest.raises(CommandError) as blind_exit:
        _cli("signal", "order-1", "approval", "--user", "signaller")
    assert blind_exit.value.returncode == 3
    with pytest.raises(CommandError) as seen_exit:
        _cli("signal", "order-1", "approval", "--user", "reviewer")
    assert seen_exit.value.returncode == 4
