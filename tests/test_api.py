"""The REST API through DRF's client: every endpoint, status code and permission.

Most tests run the engine's steps in-process (`drive`) inside the test transaction; the ones
marked `slow` run the tutorial workflow on a real `runworker` subprocess.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from beluga_workflows.models import WorkflowRun
from tests.api_fixtures import api_fixture, drive, event_types, signals, start, users_fixture  # noqa: F401
from tests.harness import wait_until

pytestmark = pytest.mark.django_db

LIST = "/api/workflows/"
APPROVALS = "/api/approvals/"


def url(workflow_id: str, action: str = "") -> str:
    return f"{LIST}{workflow_id}/" + (f"{action}/" if action else "")


# Authentication and permissions.


@pytest.mark.core
@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", LIST, None),
        ("post", LIST, {"workflow": "api_echo"}),
        ("get", url("w1"), None),
        ("get", url("w1", "events"), None),
        ("post", url("w1", "signal"), {"name": "approval", "payload": True}),
        ("get", url("w1", "query/status"), None),
        ("post", url("w1", "cancel"), None),
        ("get", APPROVALS, None),
    ],
)
def test_anonymous_requests_get_401_with_a_scheme_to_use(api, method, path, body):
    start("api_approval", "w1")
    response = getattr(api(None), method)(path, body, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert event_types(WorkflowRun.objects.get(workflow_id="w1"))[-1] == "SignalWaitStarted"


@pytest.mark.core
@pytest.mark.parametrize(
    "user, method, path, body",
    [
        ("nobody", "get", LIST, None),
        ("nobody", "get", url("w1"), None),
        ("nobody", "get", url("w1", "events"), None),
        ("nobody", "get", url("w1", "query/status"), None),
        ("nobody", "get", APPROVALS, None),
        ("viewer", "post", LIST, {"workflow": "api_echo", "id": "w2"}),
        ("viewer", "post", url("w1", "signal"), {"name": "approval", "payload": True}),
        ("starter", "post", url("w1", "signal"), {"name": "approval", "payload": True}),
        ("operator", "post", url("w1", "signal"), {"name": "approval", "payload": True}),
        ("viewer", "post", url("w1", "cancel"), None),
        ("reviewer", "post", url("w1", "cancel"), None),
    ],
)
def test_users_without_the_permission_get_403_and_nothing_happens(api, user, method, path, body):
    run = start("api_approval", "w1")
    before = event_types(run)
    response = getattr(api(user), method)(path, body, format="json")
    assert response.status_code == 403
    assert "permission" in response.json()["detail"]
    assert event_types(run) == before
    assert not WorkflowRun.objects.filter(workflow_id="w2").exists()


def test_session_authentication_works_and_enforces_csrf(users):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(users["reviewer"])
    start("api_approval", "w1")
    assert client.get(url("w1")).status_code == 200
    refused = client.post(url("w1", "signal"), {"name": "approval"}, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]


# List and filters.


@pytest.mark.core
def test_list_filters_by_status_and_workflow_and_paginates(api):
    start("api_echo", "done-1", 1)
    start("api_echo", "done-2", 2)
    start("api_approval", "waiting-1")
    client = api("viewer")

    everything = client.get(LIST).json()
    assert everything["count"] == 3 and everything["next"] is None
    assert [r["id"] for r in everything["results"]] == ["waiting-1", "done-2", "done-1"]

    completed = client.get(LIST, {"status": "completed"}).json()
    assert {r["id"] for r in completed["results"]} == {"done-1", "done-2"}
    approvals = client.get(LIST, {"workflow": "api_approval"}).json()
    assert [r["id"] for r in approvals["results"]] == ["waiting-1"]
    waiting = client.get(LIST, {"waiting_for": "signal:approval"}).json()
    assert [r["id"] for r in waiting["results"]] == ["waiting-1"]


def test_list_pages_hold_page_size_runs(api):
    for i in range(3):
        start("api_echo", f"e{i}", i)
    first = api("viewer").get(LIST, {"page_size": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = api("viewer").get(first["next"]).json()
    assert [r["id"] for r in second["results"]] == ["e0"]


def test_list_refuses_a_bad_filter_value_naming_the_parameter(api):
    response = api("viewer").get(LIST, {"status": "bogus"})
    assert response.status_code == 400
    assert "status" in response.json()


# Start.


@pytest.mark.core
def test_start_by_public_name_returns_201_with_the_run(api):
    response = api("starter").post(
        LIST,
        {"workflow": "api_approval", "id": "order-7", "input": {"amount": 7}, "timeout": 60},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == "order-7" and body["workflow"] == "api_approval"
    assert body["status"] == "running" and body["input"] == {"amount": 7}
    assert set(body) >= {
        "id", "run_id", "workflow", "status", "input", "result", "error",
        "created_at", "updated_at", "waiting_for",
    }  # fmt: skip
    run = WorkflowRun.objects.get(run_id=body["run_id"])
    assert run.timeout_seconds == 60 and event_types(run) == ["WorkflowStarted"]


def test_start_without_an_id_gets_a_uuid(api):
    body = api("starter").post(LIST, {"workflow": "api_echo"}, format="json").json()
    assert len(body["id"]) == 36 and body["input"] is None


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "workflow"),
        ({"workflow": "nope"}, "workflow"),
        # An import path is never accepted, even one that names a real workflow function.
        ({"workflow": "tests.api_fixtures:echo"}, "workflow"),
        ({"workflow": "project.demo.workflows:research_workflow"}, "workflow"),
        ({"workflow": "api_echo", "timeout": -5}, "timeout"),
        ({"workflow": "api_echo", "timeout": "soon"}, "timeout"),
        ({"workflow": "api_echo", "id": "x" * 256}, "id"),
    ],
)
def test_start_refuses_bad_bodies_with_400_naming_the_field(api, body, field):
    response = api("starter").post(LIST, body, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not WorkflowRun.objects.exists()


def test_unknown_workflow_message_lists_the_registered_names(api):
    response = api("starter").post(LIST, {"workflow": "nope"}, format="json")
    assert "research" in response.json()["workflow"][0]


def test_start_refuses_non_json_bodies(api):
    client = api("starter")
    form = client.post(LIST, {"workflow": "api_echo", "input": "true"})  # form-encoded
    assert form.status_code == 415
    broken = client.post(LIST, '{"workflow": ', content_type="application/json")
    assert broken.status_code == 400
    nan = client.post(
        LIST, '{"workflow": "api_echo", "input": NaN}', content_type="application/json"
    )
    assert nan.status_code == 400
    assert not WorkflowRun.objects.exists()


@pytest.mark.core
def test_starting_a_running_id_is_409_and_a_finished_one_runs_again(api):
    client = api("starter")
    start("api_approval", "dup")
    response = client.post(LIST, {"workflow": "api_approval", "id": "dup"}, format="json")
    assert response.status_code == 409 and "already running" in response.json()["detail"]
    start("api_echo", "again", 1)
    rerun = client.post(LIST, {"workflow": "api_echo", "id": "again"}, format="json")
    assert rerun.status_code == 201
    assert WorkflowRun.objects.filter(workflow_id="again").count() == 2


# One run: detail, events, query.


@pytest.mark.core
def test_detail_events_and_query_of_a_run(api):
    start("api_echo", "e1", {"x": 1})
    client = api("viewer")

    detail = client.get(url("e1")).json()
    assert detail["status"] == "completed" and detail["result"] == {"x": 1}
    assert detail["error"] is None and detail["waiting_for"] == ""

    page = client.get(url("e1", "events")).json()
    assert (page["id"], page["next"]) == ("e1", None)
    events = page["results"]
    assert [e["type"] for e in events] == ["WorkflowStarted", "WorkflowCompleted"]
    assert [e["sequence"] for e in events] == [1, 2]
    assert events[0]["details"] == {"input": {"x": 1}, "timeout": None}
    assert set(events[0]) >= {"sequence", "type", "timestamp", "step", "name", "attempt", "details"}

    assert client.get(url("e1", "query/status")).json() == {"result": "completed"}
    assert client.get(url("e1", "query/result")).json() == {"result": {"x": 1}}
    assert client.get(url("e1", "query/double")).json() == {"result": [{"x": 1}, {"x": 1}]}


def test_ids_with_dots_and_spaces_are_addressable(api):
    start("api_echo", "report.v2 final", 1)
    response = api("viewer").get(
        reverse("beluga_workflows_api:workflow-detail", args=["report.v2 final"])
    )
    assert response.status_code == 200 and response.json()["id"] == "report.v2 final"


@pytest.mark.parametrize(
    "method, action, body",
    [
        ("get", "", None),
        ("get", "events", None),
        ("get", "query/status", None),
        ("post", "signal", {"name": "approval", "payload": True}),
        ("post", "cancel", None),
    ],
)
def test_unknown_id_is_404(api, method, action, body):
    response = getattr(api("admin"), method)(url("no-such-run", action), body, format="json")
    assert response.status_code == 404
    assert "no-such-run" in response.json()["detail"]


def test_query_without_a_handler_is_400_with_the_known_ones(api):
    start("api_approval", "q1")
    response = api("viewer").get(url("q1", "query/bogus"))
    assert response.status_code == 400
    assert "status, result, history" in response.json()["query_type"][0]


# Signal, cancel and approvals.


@pytest.mark.core
def test_signal_is_202_and_records_the_user_as_sender(api):
    start("api_approval", "a1", "laptop")
    response = api("reviewer").post(
        url("a1", "signal"), {"name": "approval", "payload": True}, format="json"
    )
    assert response.status_code == 202
    assert response.json()["id"] == "a1"
    run = WorkflowRun.objects.get(workflow_id="a1")
    assert signals(run) == [{"name": "approval", "payload": True, "sender": "reviewer"}]
    run = drive("a1")
    assert run.status == "completed" and run.result == {"request": "laptop", "approved": True}


def test_signal_body_errors_are_400(api):
    start("api_approval", "a1")
    client = api("reviewer")
    missing = client.post(url("a1", "signal"), {"payload": True}, format="json")
    assert missing.status_code == 400 and "name" in missing.json()
    blank = client.post(url("a1", "signal"), {"name": ""}, format="json")
    assert blank.status_code == 400 and "name" in blank.json()
    assert signals(WorkflowRun.objects.get(workflow_id="a1")) == []


@pytest.mark.core
def test_signal_and_cancel_on_a_finished_run_are_409_and_record_nothing(api):
    run = start("api_echo", "done", 1)
    before = event_types(run)
    signal = api("admin").post(url("done", "signal"), {"name": "approval"}, format="json")
    assert signal.status_code == 409 and "already finished" in signal.json()["detail"]
    cancel = api("admin").post(url("done", "cancel"))
    assert cancel.status_code == 409
    assert event_types(run) == before


@pytest.mark.core
def test_cancel_is_202_records_the_user_and_the_run_ends_canceled(api):
    start("api_approval", "c1")
    response = api("operator").post(url("c1", "cancel"))
    assert response.status_code == 202
    run = WorkflowRun.objects.get(workflow_id="c1")
    assert run.events.get(type="CancelRequested").data == {"sender": "operator"}
    assert drive("c1").status == "canceled"
    assert api("operator").post(url("c1", "cancel")).status_code == 409


@pytest.mark.core
def test_approvals_lists_runs_waiting_for_a_signal(api):
    start("api_approval", "a1", "first")
    start("api_approval", "a2", "second")
    start("api_echo", "not-waiting", 1)
    response = api("viewer").get(APPROVALS)
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [r["id"] for r in rows] == ["a1", "a2"]  # oldest wait first
    assert rows[0]["signal"] == "approval" and rows[0]["workflow"] == "api_approval"
    assert rows[0]["since"] and rows[0]["deadline"] is None
    assert (rows[0]["input_preview"], rows[0]["input_size"]) == ('"first"', 7)
    assert api("viewer").get(APPROVALS, {"signal": "other"}).json()["count"] == 0

    api("reviewer").post(url("a1", "signal"), {"name": "approval", "payload": False}, format="json")
    drive("a1")
    assert [r["id"] for r in api("viewer").get(APPROVALS).json()["results"]] == ["a2"]


# The OpenAPI document.


@pytest.mark.core
def test_schema_describes_every_endpoint_body_and_error(api):
    response = api("viewer").get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    expected = {
        ("/api/workflows/", "get"): {"200", "400", "401", "403"},
        ("/api/workflows/", "post"): {"201", "400", "401", "403", "409", "413", "415"},
        ("/api/workflows/{id}/", "get"): {"200", "401", "403", "404"},
        ("/api/workflows/{id}/events/", "get"): {"200", "400", "401", "403", "404", "409"},
        ("/api/workflows/{id}/signal/", "post"): {
            "202",
            "400",
            "401",
            "403",
            "404",
            "409",
            "413",
            "415",
        },
        ("/api/workflows/{id}/query/{query_type}/", "get"): {"200", "400", "401", "403", "404"},
        ("/api/workflows/{id}/cancel/", "post"): {"202", "401", "403", "404", "409"},
        ("/api/approvals/", "get"): {"200", "400", "401", "403"},
    }
    for (path, method), codes in expected.items():
        assert set(paths[path][method]["responses"]) == codes, (path, method)
    components = schema["components"]["schemas"]
    assert "research" in components["BelugaWorkflowEnum"]["enum"]
    assert set(components["BelugaSignal"]["required"]) == {"name"}
    assert {"workflow", "id", "input", "timeout"} <= set(components["BelugaStart"]["properties"])


def test_schema_docs_page_is_served_without_a_cdn(users):
    from django.test import Client

    client = Client()
    client.force_login(users["viewer"])
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert b"cdn" not in page.content.lower()


# The tutorial on a real worker.


@pytest.mark.slow
@pytest.mark.core
@pytest.mark.django_db(transaction=True)
def test_tutorial_approval_through_the_api_with_a_worker(worker, api):
    client = api("admin")
    created = client.post(
        LIST, {"workflow": "research", "id": "research-q4-2025", "input": "Q4 revenue analysis",
               "timeout": 172800}, format="json",
    )  # fmt: skip
    assert created.status_code == 201
    wait_until(
        lambda: client.get(APPROVALS).json()["count"] == 1, 30, message="waiting for approval"
    )
    pending = client.get(APPROVALS).json()["results"][0]
    assert (pending["id"], pending["signal"]) == ("research-q4-2025", "approval")
    assert pending["deadline"]

    # A reviewer without signal permission cannot approve; one with it can.
    refused = api("viewer").post(url("research-q4-2025", "signal"), {"name": "approval",
                                 "payload": True}, format="json")  # fmt: skip
    assert refused.status_code == 403
    accepted = api("reviewer").post(
        url("research-q4-2025", "signal"), {"name": "approval", "payload": True}, format="json"
    )
    assert accepted.status_code == 202

    detail = wait_until(
        lambda: (d := client.get(url("research-q4-2025")).json())["status"] == "completed" and d,
        30,
        message="completed",
    )
    assert detail["result"].startswith("Final Report")
    events = client.get(url("research-q4-2025", "events")).json()["results"]
    received = [e for e in events if e["type"] == "SignalReceived"]
    assert received[0]["details"] == {"payload": True, "sender": "reviewer"}
    activities = [e["name"] for e in events if e["type"] == "ActivityCompleted"]
    assert activities == ["research_activity", "report_activity"]
    again = api("reviewer").post(url("research-q4-2025", "signal"), {"name": "approval"},
                                 format="json")  # fmt: skip
    assert again.status_code == 409


# The project's own DRF settings: which apply to this API, and which it keeps to itself.


def test_a_project_wide_permission_default_also_guards_this_api(api, settings, users):
    # A project that limits its whole API to staff limits this one too (both must allow).
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    }
    users["viewer"].is_staff = False  # the fixtures' users are staff (for the admin)
    users["viewer"].save()
    assert api("viewer").get("/api/workflows/").status_code == 403
    assert api("viewer").get("/api/").status_code == 403
    users["viewer"].is_staff = True
    users["viewer"].save()
    assert api("viewer").get("/api/workflows/").status_code == 200
    # ...and our own permission still applies on top: staff without `add` cannot start.
    assert (
        api("viewer").post("/api/workflows/", {"workflow": "api_echo"}, format="json").status_code
        == 403
    )


def test_filters_and_pagination_ignore_the_project_defaults(api, settings):
    # With no filter backend and limit/offset pagination as the project's defaults, the
    # filters still filter and the pages are still numbered (as documented for this API).
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_FILTER_BACKENDS": [],
        "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    }
    start("api_approval", "order-1")
    start("api_echo", "echo-1", 1)
    viewer = api("viewer")
    running = viewer.get("/api/workflows/", {"status": "running"}).json()
    assert [r["id"] for r in running["results"]] == ["order-1"]
    assert viewer.get("/api/workflows/", {"status": "bogus"}).status_code == 400
    assert viewer.get("/api/approvals/", {"signal": "nope"}).json()["results"] == []
    assert viewer.get("/api/workflows/", {"page_size": 1, "page": 2}).json()["count"] == 2
