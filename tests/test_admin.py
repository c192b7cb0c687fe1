"""The Django admin: run list and page, Approve / Reject / Cancel with and without permission.

Runs are brought to "waiting for approval" with the engine's own step, in-process (`drive`), and
every button must leave its mark in the history through the executor — or nothing at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from beluga_workflows import registry, timeline, workflow
from beluga_workflows.history import EventType, HistoryEvent
from beluga_workflows.models import WorkflowRun
from tests.api_fixtures import drive, event_types, signals, start, users_fixture  # noqa: F401

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/beluga_workflows/workflowrun/"
APPROVALS = CHANGELIST + "approvals/"


def page(run: WorkflowRun, action: str = "change") -> str:
    return f"{CHANGELIST}{run.pk}/{action}/"


@pytest.fixture
def login(users):
    def client(username: str) -> Client:
        c = Client()
        c.force_login(users[username])
        return c

    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# Lists and pages.


@pytest.mark.core
def test_changelist_shows_runs_with_filters_and_search(login):
    start("api_approval", "order-1", {"amount": 1})
    start("api_echo", "echo-1", 1)
    client = login("viewer")

    listing = client.get(CHANGELIST)
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "order-1" in html and "echo-1" in html and "signal:approval" in html
    assert "Pending approvals (1)" in html
    assert "Add workflow run" not in html  # read-only

    waiting = client.get(CHANGELIST, {"waiting": "approval"}).content.decode()
    assert "order-1" in waiting and "echo-1" not in waiting
    completed = client.get(CHANGELIST, {"status__exact": "completed"}).content.decode()
    assert "echo-1" in completed and "order-1" not in completed
    found = client.get(CHANGELIST, {"q": "order"}).content.decode()
    assert "order-1" in found and "echo-1" not in found


def test_anonymous_users_are_sent_to_the_login_page(users):
    response = Client().get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_without_view_permission_cannot_see_runs(login):
    run = start("api_approval", "order-1")
    client = login("nobody")
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(page(run)).status_code == 403
    assert client.get(APPROVALS).status_code == 403


def test_rows_cannot_be_added_changed_or_deleted(login):
    run = start("api_echo", "echo-1", 1)
    client = login("admin")
    assert client.get(CHANGELIST + "add/").status_code == 403
    assert client.get(page(run, "delete")).status_code == 403
    assert client.post(page(run), {"status": "failed"}).status_code == 200  # a page, no form
    run.refresh_from_db()
    assert run.status == "completed"


@pytest.mark.core
def test_run_page_shows_input_outcome_timeline_and_history(login):
    run = start("api_approval", "order-1", {"amount": 42})
    client = login("reviewer")
    html = client.get(page(run)).content.decode()
    assert "&quot;amount&quot;: 42" in html
    assert "Waiting for signal &#x27;approval&#x27;" in html  # the history, in words
    assert 'class="bw-gantt"' in html and "bw-seg-running" in html  # the picture
    assert ">Approve</button>" in html and ">Reject</button>" in html
    assert "Cancel run" not in html  # the reviewer may not cancel

    client.post(page(run, "approve"))
    run = drive("order-1")
    html = client.get(page(run)).content.decode()
    assert run.status == "completed"
    assert "Signal &#x27;approval&#x27; = true from &#x27;reviewer&#x27;" in html
    assert "&quot;approved&quot;: true" in html  # the result
    assert ">Approve</button>" not in html


def test_viewer_sees_no_buttons(login):
    run = start("api_approval", "order-1")
    html = login("viewer").get(page(run)).content.decode()
    assert ">Approve</button>" not in html and "Cancel run" not in html


def test_failed_run_page_shows_the_error(login):
    run = start("api_fail", "bad-1", {"amount": -1})
    html = login("viewer").get(page(run)).content.decode()
    assert run.status == "failed"
    assert "<strong>ValueError</strong>: amount must be positive" in html


# The buttons.


@pytest.mark.core
@pytest.mark.parametrize("action, payload, verb", [("approve", True, "Approved"),
                                                   ("reject", False, "Rejected")])  # fmt: skip
def test_approve_and_reject_send_the_approval_signal_as_the_user(login, action, payload, verb):
    run = start("api_approval", "order-1", "laptop")
    response = login("reviewer").post(page(run, action), follow=True)
    assert response.status_code == 200
    assert any(m.startswith(verb) for m in messages_of(response))
    assert signals(run) == [{"name": "approval", "payload": payload, "sender": "reviewer"}]
    assert LogEntry.objects.filter(object_id=str(run.pk)).exists()  # admin's own audit log
    assert drive("order-1").result == {"request": "laptop", "approved": payload}


@pytest.mark.core
@pytest.mark.parametrize("user, action", [("viewer", "approve"), ("viewer", "reject"),
                                          ("operator", "approve"), ("reviewer", "cancel"),
                                          ("viewer", "cancel")])  # fmt: skip
def test_buttons_without_the_permission_are_403_and_send_nothing(login, user, action):
    run = start("api_approval", "order-1")
    before = event_types(run)
    assert login(user).post(page(run, action)).status_code == 403
    assert event_types(run) == before


def test_buttons_need_post(login):
    run = start("api_approval", "order-1")
    assert login("admin").get(page(run, "approve")).status_code == 405
    assert signals(run) == []


def test_approving_a_run_not_waiting_for_approval_sends_nothing(login):
    run = start("api_echo", "echo-1", 1)
    response = login("admin").post(page(run, "approve"), follow=True)
    assert any("not waiting for approval" in m for m in messages_of(response))
    assert event_types(run) == ["WorkflowStarted", "WorkflowCompleted"]


@pytest.mark.core
def test_cancel_goes_through_the_executor_as_the_user(login):
    run = start("api_approval", "order-1")
    response = login("operator").post(page(run, "cancel"), follow=True)
    assert any(m.startswith("Asked 'order-1' to cancel") for m in messages_of(response))
    assert run.events.get(type="CancelRequested").data == {"sender": "operator"}
    assert drive("order-1").status == "canceled"
    again = login("operator").post(page(run, "cancel"), follow=True)
    assert any("already finished" in m for m in messages_of(again))


def test_buttons_return_to_a_safe_next_page_only(login):
    run = start("api_approval", "order-1")
    client = login("admin")
    back = client.post(page(run, "approve"), {"next": APPROVALS})
    assert back["Location"] == APPROVALS
    start("api_approval", "order-2")
    run2 = WorkflowRun.objects.get(workflow_id="order-2")
    evil = client.post(page(run2, "approve"), {"next": "https://evil.example/"})
    assert evil["Location"] == page(run2)


# The pending-approvals page and bulk actions.


@pytest.mark.core
def test_a_workflow_names_its_own_approval_signal(login):
    run = start("api_expense", "expense-1", "taxi")
    client = login("reviewer")
    # Waiting for `details`, not for its approval signal: no buttons, not pending approval.
    assert "expense-1" not in client.get(CHANGELIST, {"waiting": "approval"}).content.decode()
    assert ">Approve</button>" not in client.get(page(run)).content.decode()
    assert client.post(page(run, "approve"), follow=True).status_code == 200
    assert signals(run) == []

    workflow.get_executor().signal("expense-1", workflow.Signal("details", {"km": 12}))
    run = drive("expense-1")
    assert run.waiting_for == "signal:manager_decision"
    assert "expense-1" in client.get(CHANGELIST, {"waiting": "approval"}).content.decode()
    assert ">Approve</button>" in client.get(page(run)).content.decode()
    assert ">Approve</button>" in client.get(APPROVALS).content.decode()

    response = client.post(page(run, "approve"), follow=True)
    assert any("'manager_decision' signal (true)" in m for m in messages_of(response))
    assert signals(run)[-1] == {"name": "manager_decision", "payload": True, "sender": "reviewer"}
    assert drive("expense-1").result == {"request": "taxi", "approved": True}


def test_an_approval_signal_must_be_a_name():
    with pytest.raises(ValueError, match="approval_signal must be a signal name"):
        workflow.defn(name="bad_approval", approval_signal=" ")
    assert registry.approval_signal("api_approval") == "approval"
    assert registry.approval_signal("api_expense") == "manager_decision"


@pytest.mark.core
def test_pending_approvals_page_lists_waiting_runs_with_buttons(login):
    start("api_approval", "order-1")
    start("api_approval", "order-2")
    start("api_echo", "echo-1", 1)
    html = login("reviewer").get(APPROVALS).content.decode()
    assert "order-1" in html and "order-2" in html and "echo-1" not in html
    assert html.count(">Approve</button>") == 2
    assert ">Approve</button>" not in login("viewer").get(APPROVALS).content.decode()


def test_bulk_actions_approve_only_runs_waiting_for_approval(login):
    waiting = [start("api_approval", f"order-{i}") for i in range(2)]
    done = start("api_echo", "echo-1", 1)
    ids = [str(r.pk) for r in [*waiting, done]]
    response = login("reviewer").post(
        CHANGELIST, {"action": "approve_selected", "_selected_action": ids}, follow=True
    )
    text = " ".join(messages_of(response))
    assert "Done for 2 run(s)" in text and "Skipped 1 run(s)" in text and "echo-1" in text
    for run in waiting:
        assert signals(run)[0]["sender"] == "reviewer"
    assert signals(done) == []


def test_bulk_actions_are_offered_by_permission(login):
    start("api_approval", "order-1")
    assert "approve_selected" not in login("viewer").get(CHANGELIST).content.decode()
    html = login("reviewer").get(CHANGELIST).content.decode()
    assert "approve_selected" in html and "cancel_selected" not in html


# The timeline, from a hand-written history (a unit test: no database needed).


def test_timeline_pairs_attempts_waits_and_signals():
    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    events = [
        HistoryEvent(1, EventType.WORKFLOW_STARTED, at(0), name="research"),
        HistoryEvent(2, EventType.ACTIVITY_SCHEDULED, at(0), 0, "fetch", 1),
        HistoryEvent(3, EventType.ACTIVITY_ATTEMPT_FAILED, at(1), 0, "fetch", 1,
                     {"error": {"type": "ConnectionError", "message": "down"}, "retry_in": 2}),
        HistoryEvent(4, EventType.ACTIVITY_COMPLETED, at(4), 0, "fetch", 2, {"result": "ok"}),
        HistoryEvent(5, EventType.SIGNAL_RECEIVED, at(5), None, "approval", 0,
                     {"payload": True, "sender": "alice"}),
        HistoryEvent(6, EventType.SIGNAL_WAIT_STARTED, at(6), 1, "approval", 0, {"timeout": 60}),
        HistoryEvent(7, EventType.SIGNAL_WAIT_STARTED, at(6), 2, "approval", 0, {"timeout": 60}),
        HistoryEvent(8, EventType.TIMER_FIRED, at(66), 2, "signal_timeout"),
        HistoryEvent(9, EventType.WORKFLOW_COMPLETED, at(70), data={"result": "done"}),
    ]  # fmt: skip
    line = timeline.build(events)
    fetch, first_wait, second_wait = line.spans
    assert (fetch.outcome, fetch.attempts, fetch.duration) == ("completed", 2, 4.0)
    assert [s.kind for s in fetch.segments] == ["attempt-failed", "backoff", "attempt-ok"]
    # The signal sent before the wait satisfied it at once; the next wait timed out.
    assert (first_wait.outcome, first_wait.duration, first_wait.detail) == (
        "received", 0.0, "true from alice"
    )  # fmt: skip
    assert (second_wait.outcome, second_wait.duration) == ("timed_out", 60.0)
    assert line.duration == 70.0 and line.markers[0].label == "approval = true (alice)"
    assert timeline.describe(events[2]) == (
        "Attempt 1 of fetch failed: ConnectionError: down; retrying in 2.0 s."
    )
    chart = timeline.gantt(line, now=at(70))
    assert chart["total"] == "1 min 10 s"
    assert chart["rows"][2]["segments"][0]["left"] == f"{6 / 70 * 100:.3f}"


def test_timeline_draws_parallel_activities_and_children_as_lanes():
    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    events = [
        HistoryEvent(1, EventType.WORKFLOW_STARTED, at(0), name="review_batch"),
        HistoryEvent(2, EventType.ACTIVITY_SCHEDULED, at(0), 0, "summarize", 1),
        HistoryEvent(3, EventType.ACTIVITY_SCHEDULED, at(0), 1, "summarize", 1),
        HistoryEvent(4, EventType.ACTIVITY_SCHEDULED, at(0), 2, "summarize", 1),
        HistoryEvent(5, EventType.ACTIVITY_COMPLETED, at(3), 1, "summarize", 1),
        HistoryEvent(6, EventType.ACTIVITY_COMPLETED, at(4), 0, "summarize", 1),
        HistoryEvent(7, EventType.ACTIVITY_COMPLETED, at(5), 2, "summarize", 1),
        HistoryEvent(8, EventType.CHILD_WORKFLOW_SCHEDULED, at(5), 3, "batch_report", 0,
                     {"id": "b-report"}),
        HistoryEvent(9, EventType.CHILD_WORKFLOW_STARTED, at(5), 3, "batch_report", 0,
                     {"id": "b-report", "run_id": "r"}),
        HistoryEvent(10, EventType.CHILD_WORKFLOW_COMPLETED, at(9), 3, "batch_report", 0,
                     {"id": "b-report", "result": "ok"}),
        HistoryEvent(11, EventType.WORKFLOW_COMPLETED, at(10), data={"result": "done"}),
    ]  # fmt: skip
    line = timeline.build(events)
    assert [(s.kind, s.step, s.start, s.end) for s in line.spans] == [
        ("activity", 0, at(0), at(4)),
        ("activity", 1, at(0), at(3)),
        ("activity", 2, at(0), at(5)),
        ("child", 3, at(5), at(9)),
    ]
    chart = timeline.gantt(line, now=at(10))
    assert chart["parallel"] == 3
    # One row (lane) per activity, each bar starting at 0% and overlapping the others.
    lanes = [row["segments"][0] for row in chart["rows"][:3]]
    assert [lane["left"] for lane in lanes] == ["0.000"] * 3
    assert [lane["width"] for lane in lanes] == ["40.000", "30.000", "50.000"]
    child = chart["rows"][3]
    assert child["span"].label == "child b-report" and child["span"].outcome == "completed"
    assert timeline.describe(events[7]).startswith("Starting child workflow batch_report")


# Starting a run from the admin.

START = CHANGELIST + "start/"


def test_only_users_who_may_start_runs_see_the_start_form(login):
    assert login("viewer").get(START).status_code == 403
    assert "Start a run" not in login("viewer").get(CHANGELIST).content.decode()
    starter = login("starter")
    assert "Start a run" in starter.get(CHANGELIST).content.decode()
    form = starter.get(START).content.decode()
    assert '<option value="research">research</option>' in form
    assert '<option value="api_echo">api_echo</option>' in form


@pytest.mark.core
def test_the_start_form_starts_a_run_and_shows_its_page(login):
    response = login("starter").post(
        START, {"workflow": "api_echo", "id": "echo-9", "input": '{"n": 9}', "timeout": "60"}
    )
    run = WorkflowRun.objects.get(workflow_id="echo-9")
    assert response.status_code == 302 and response["Location"] == page(run)
    assert run.input == {"n": 9} and run.timeout_seconds == 60
    assert LogEntry.objects.filter(object_id=str(run.pk)).exists()


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"input": "not json"}, "input", "Not JSON"),
        ({"input": "1", "id": "a/b"}, "id", "/"),
        ({"input": "1", "timeout": "-5"}, "timeout", "more than 0"),
        ({"input": "1", "workflow": "tests.api_fixtures:echo"}, "workflow", "valid choice"),
        ({"input": '"\\u0000"'}, "input", "NUL"),
    ],
)
def test_the_start_form_refuses_bad_input_and_starts_nothing(login, data, field, message):
    response = login("starter").post(START, {"workflow": "api_echo", **data})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors and message in " ".join(errors[field]), errors
    assert not WorkflowRun.objects.exists()


def test_the_start_form_says_when_the_id_is_already_running(login):
    start("api_approval", "order-1")
    response = login("starter").post(
        START, {"workflow": "api_approval", "id": "order-1", "input": "null"}
    )
    assert "already running" in " ".join(response.context["form"].errors["id"])
    assert WorkflowRun.objects.filter(workflow_id="order-1").count() == 1


# Live pages: the version they poll changes when what they show changes.


def test_a_run_page_version_changes_as_the_run_moves_on(login):
    run = start("api_expense", "expense-1", "taxi")
    client = login("viewer")
    url = page(run, "version")
    before = client.get(url).json()
    assert before["status"] == "running"
    assert client.get(url).json() == before  # nothing happened: same version
    workflow.get_executor().signal("expense-1", workflow.Signal("details", 1))
    drive("expense-1")
    assert client.get(url).json()["version"] != before["version"]
    assert login("nobody").get(url).status_code == 403
    assert (
        f'data-bw-version="{client.get(url).json()["version"]}"'
        in client.get(page(run)).content.decode()
    )


def test_the_list_version_changes_when_a_run_starts_or_moves(login):
    client = login("viewer")
    url = CHANGELIST + "version/"
    empty = client.get(url).json()["version"]
    start("api_approval", "order-1")
    started = client.get(url).json()["version"]
    assert started != empty
    workflow.get_executor().signal("order-1", workflow.Signal("approval", True))
    drive("order-1")
    assert client.get(url).json()["version"] != started
    assert login("nobody").get(url).status_code == 403


# Summaries in the history: whole words, text as text.


def test_summaries_show_text_as_text_and_cut_between_words():
    report = "Final Report\n\nResearch findings on 'Q4': key insights discovered.\n\nEnd."
    assert timeline.short_json(report, 200) == (
        "“Final Report Research findings on 'Q4': key insights discovered. End.”"
    )
    cut = timeline.short_json("alpha beta gamma delta epsilon zeta eta theta", 30)
    assert cut.endswith("…") and len(cut) <= 30
    assert cut[:-1].split()[-1] in "“alpha beta gamma delta epsilon zeta eta theta".split()
    assert "\\n" not in timeline.short_json({"text": "a\nb"})
    items = timeline.short_json(list(range(100)), 40)
    assert items.endswith("…") and len(items) <= 40
    assert all(part.strip(" [").isdigit() for part in items[:-1].split(","))  # whole numbers


def test_runs_no_live_worker_serves_are_flagged_and_the_executor_is_shown(login):
    # No runworker runs in this test: a run with a step to take is stuck; one waiting for a
    # person is not (nothing to serve until the signal comes).
    workflow.get_executor().start("api_echo", workflow.WorkflowOptions(id="echo-x", input=1))
    stuck = WorkflowRun.objects.get(workflow_id="echo-x")
    waiting = start("api_approval", "order-1")
    client = login("viewer")

    listing = client.get(CHANGELIST).content.decode()
    assert listing.count('class="bw-no-worker"') == 1
    assert '<td class="field-executor">default</td>' in listing
    assert 'id="bw-no-worker"' in client.get(page(stuck)).content.decode()
    assert 'id="bw-no-worker"' not in client.get(page(waiting)).content.decode()
