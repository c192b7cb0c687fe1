"""Child workflows and continue-as-new chains as users see them: REST, admin and CLI.

Runs are driven in-process with the engine's own steps (`drive`, and `notify_parent` — what the
worker does after a child closes), inside the test transaction.
"""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from beluga_workflows import workflow
from beluga_workflows.engine import steps
from beluga_workflows.models import WorkflowRun
from tests.api_fixtures import api_fixture, drive, start, users_fixture  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.core]

API = "/api/workflows/"


def family() -> tuple[WorkflowRun, list[WorkflowRun]]:
    """A parent with two children waiting for approval; the first child approved and done."""
    parent = start("api_parent", "batch-1", {"children": ["batch-1-a", "batch-1-b"]})
    children = [drive(cid) for cid in ("batch-1-a", "batch-1-b")]
    workflow.get_executor().signal("batch-1-a", workflow.Signal("approval", True))
    children[0] = drive("batch-1-a")
    assert steps.notify_parent(children[0].pk)  # what the worker does after the child closes
    parent.refresh_from_db()
    return parent, children


def test_rest_shows_children_and_parent_and_filters_by_parent(api):
    parent, (done, waiting) = family()
    client = api("viewer")

    detail = client.get(f"{API}batch-1/").json()
    assert detail["parent_id"] is None and detail["status"] == "running"
    assert detail["waiting_for"] == "child:api_approval"
    assert [(c["id"], c["status"]) for c in detail["children"]] == [
        ("batch-1-a", "completed"),
        ("batch-1-b", "running"),
    ]
    child = client.get(f"{API}batch-1-b/").json()
    assert (child["parent_id"], child["parent_run_id"]) == ("batch-1", str(parent.run_id))

    listed = client.get(API, {"parent": "batch-1"}).json()["results"]
    assert sorted(run["id"] for run in listed) == ["batch-1-a", "batch-1-b"]
    assert client.get(API, {"parent": "nobody-here"}).json()["results"] == []
    approvals = client.get("/api/approvals/").json()["results"]
    assert [a["id"] for a in approvals] == ["batch-1-b"]

    events = [e["type"] for e in client.get(f"{API}batch-1/events/").json()["results"]]
    assert events.count("ChildWorkflowScheduled") == 2
    assert events.count("ChildWorkflowStarted") == 2
    assert events[-1] == "ChildWorkflowCompleted"


def test_the_parent_finishes_when_its_last_child_does(api):
    parent, (done, waiting) = family()
    api("reviewer").post(
        f"{API}batch-1-b/signal/", {"name": "approval", "payload": False}, format="json"
    )
    waiting = drive("batch-1-b")
    assert steps.notify_parent(waiting.pk)
    assert not steps.notify_parent(waiting.pk)  # told once, whoever asks again
    parent.refresh_from_db()
    assert parent.status == "completed"
    assert parent.result == [
        {"request": "batch-1-a", "approved": True},
        {"request": "batch-1-b", "approved": False},
    ]


def test_cancelling_the_parent_over_rest_cancels_running_children(api):
    parent, (done, waiting) = family()
    assert api("operator").post(f"{API}batch-1/cancel/").status_code == 202
    waiting.refresh_from_db()
    assert waiting.events.filter(type="CancelRequested").exists()
    assert drive("batch-1-b").status == "canceled"
    assert not done.events.filter(type="CancelRequested").exists()  # it had finished


def test_admin_links_parent_children_and_chain(users):
    parent, (done, waiting) = family()
    client = Client()
    client.force_login(users["viewer"])
    html = client.get(f"/admin/beluga_workflows/workflowrun/{parent.pk}/change/").content.decode()
    assert 'id="bw-children"' in html
    for child in (done, waiting):
        assert f"/admin/beluga_workflows/workflowrun/{child.pk}/change/" in html
    assert "child batch-1-a" in html  # its bar in the timeline
    child_html = client.get(
        f"/admin/beluga_workflows/workflowrun/{waiting.pk}/change/"
    ).content.decode()
    assert 'id="bw-parent"' in child_html
    assert f"/admin/beluga_workflows/workflowrun/{parent.pk}/change/" in child_html

    first = start("api_ticker", "tick-1", 1)
    workflow.get_executor().signal("tick-1", workflow.Signal("tick"))
    drive("tick-1")
    first.refresh_from_db()
    second = WorkflowRun.objects.get(continued_from=first)
    first_html = client.get(
        f"/admin/beluga_workflows/workflowrun/{first.pk}/change/"
    ).content.decode()
    assert 'id="bw-continued-as"' in first_html and str(second.run_id) in first_html
    second_html = client.get(
        f"/admin/beluga_workflows/workflowrun/{second.pk}/change/"
    ).content.decode()
    assert 'id="bw-continued-from"' in second_html and str(first.run_id) in second_html


def test_rest_follows_a_continue_as_new_chain(api):
    first = start("api_ticker", "tick-2", 1)
    client = api("reviewer")
    for expected in (2, 3):
        client.post(f"{API}tick-2/signal/", {"name": "tick"}, format="json")
        drive("tick-2")
        detail = client.get(f"{API}tick-2/").json()
        assert detail["input"] == expected and detail["status"] == "running"
    client.post(f"{API}tick-2/signal/", {"name": "tick"}, format="json")
    drive("tick-2")
    detail = client.get(f"{API}tick-2/").json()
    assert detail["status"] == "completed" and detail["result"] == 3
    assert detail["continued_from"] is not None
    runs = client.get(API, {"id": "tick-2"}).json()["results"]
    assert [r["status"] for r in runs] == ["completed", "continued_as_new", "continued_as_new"]
    assert runs[1]["continued_as"] == runs[0]["run_id"]
    assert runs[2]["run_id"] == str(first.run_id)
    listed = client.get(API, {"status": "continued_as_new"}).json()["results"]
    assert len(listed) == 2
    assert workflow.get_executor().get_handle("tick-2").result(timeout=1) == 3
    handle = workflow.get_executor().get_handle("tick-2")
    assert handle.run_id == runs[0]["run_id"]


def test_cli_describe_and_list_show_the_family(users):
    parent, _ = family()
    out = StringIO()
    call_command("workflow", "describe", "batch-1", stdout=out)
    text = out.getvalue()
    assert "child:            batch-1-a (api_approval, completed)" in text
    assert "child:            batch-1-b (api_approval, running)" in text
    out = StringIO()
    call_command("workflow", "describe", "batch-1-b", "--json", stdout=out)
    assert json.loads(out.getvalue())["parent_id"] == "batch-1"
    out = StringIO()
    call_command("workflow", "list", "--parent", "batch-1", "--json", stdout=out)
    assert sorted(run["id"] for run in json.loads(out.getvalue())) == ["batch-1-a", "batch-1-b"]
