"""Lists and histories stay cheap to read, however large the payloads.

Runs here hold 1 MiB inputs and results (the largest `MAX_PAYLOAD_BYTES` lets in by default),
written straight into the tables. Lists — the REST run list and approvals, the admin's
changelist and approvals page, `manage.py workflow list` — answer small pages with previews and
sizes, and their SQL never reads a payload column whole (only through PostgreSQL's `::text`
preview): the web process does not hold the values. A run's detail still has them whole.
`GET .../events/` is paged by sequence; `manage.py workflow history` writes a long history as it
reads it, a batch at a time, and its `--json` is still the one list `testing.replay` reads.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from beluga_workflows import previews, testing
from beluga_workflows.history import HistoryEvent
from beluga_workflows.models import WorkflowEvent, WorkflowRun
from tests.api_fixtures import api_fixture, users_fixture  # noqa: F401
from tests.golden import workflows as golden

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
BIG = "x" * MIB  # its JSON text is MIB + 2 bytes (the quotes)
SMALL_PAGE = 200_000  # bytes: a page of 50 runs with 1 MiB payloads answers less than this
LIST = "/api/workflows/"
ADMIN = "/admin/beluga_workflows/workflowrun/"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def big_runs(count: int, waiting: bool = False, prefix: str = "big") -> list[WorkflowRun]:
    """`count` runs with a 1 MiB input; completed with a 1 MiB result, or waiting for approval."""
    return WorkflowRun.objects.bulk_create(
        WorkflowRun(
            workflow_id=f"{prefix}-{n:03}",
            workflow_name="api_approval",
            status="running" if waiting else "completed",
            input=BIG,
            result=None if waiting else BIG,
            waiting_for="signal:approval" if waiting else "",
            waiting_since=T0 + timedelta(seconds=n) if waiting else None,
        )
        for n in range(count)
    )


def run_with_events(workflow_id: str, count: int, payload: Any = True) -> WorkflowRun:
    """A running run with a history of `count` events: its start, then signals."""
    run = WorkflowRun.objects.create(
        workflow_id=workflow_id, workflow_name="api_approval", last_sequence=count
    )
    WorkflowEvent.objects.bulk_create(
        WorkflowEvent(
            run=run,
            sequence=n,
            type="WorkflowStarted" if n == 1 else "SignalReceived",
            name="api_approval" if n == 1 else "note",
            data={"input": None, "timeout": None}
            if n == 1
            else {"payload": payload, "sender": f"s{n}"},
            timestamp=T0 + timedelta(seconds=n),
        )
        for n in range(1, count + 1)
    )
    return run


#: A run's payload column read as itself (of the listed runs, or of a joined parent, `T2`), not
#: through its `::text` preview.
WHOLE_PAYLOAD = re.compile(
    r'(?:"beluga_workflows_workflowrun"|\bT\d+)\."(input|result|error)"(?!\)::text)'
)


def whole_payload_reads(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if WHOLE_PAYLOAD.search(q["sql"])]


def admin_client(users: dict[str, Any]) -> Client:
    client = Client()
    client.force_login(users["admin"])
    return client


# Lists: previews and sizes, computed by PostgreSQL.


@pytest.mark.core
def test_the_run_list_answers_previews_and_sizes_and_never_loads_a_payload(api):
    parent, *runs = big_runs(50)
    WorkflowRun.objects.filter(pk__in=[run.pk for run in runs[:10]]).update(parent=parent)
    with CaptureQueriesContext(connection) as queries:
        response = api("viewer").get(LIST, {"page_size": 50})
    assert response.status_code == 200
    assert len(response.content) < SMALL_PAGE  # 50 × 2 MiB of payloads before
    assert whole_payload_reads(queries) == []
    rows = response.json()["results"]
    assert len(rows) == 50
    row = rows[0]
    assert not {"input", "result", "error"} & set(row)
    assert row["input_preview"] == '"' + "x" * (previews.PREVIEW_CHARS - 1)
    assert (row["input_size"], row["result_size"]) == (MIB + 2, MIB + 2)
    assert (row["error_preview"], row["error_size"]) == (None, None)
    assert not previews.is_whole(row["input_preview"], row["input_size"])

    detail = api("viewer").get(f"{LIST}big-000/").json()  # one run: whole values
    assert detail["input"] == BIG and detail["result"] == BIG


def test_a_small_payload_previews_whole_and_parses(api):
    value = {"amount": 7, "note": "größer"}
    WorkflowRun.objects.create(
        workflow_id="small", workflow_name="api_echo", status="failed", input=value,
        error={"type": "ValueError", "message": "no"},
    )  # fmt: skip
    (row,) = api("viewer").get(LIST).json()["results"]
    assert previews.is_whole(row["input_preview"], row["input_size"])
    assert json.loads(row["input_preview"]) == value
    assert json.loads(row["error_preview"]) == {"type": "ValueError", "message": "no"}
    assert (row["result_preview"], row["result_size"]) == (None, None)


def test_the_approvals_list_is_small(api):
    big_runs(50, waiting=True)
    with CaptureQueriesContext(connection) as queries:
        response = api("viewer").get("/api/approvals/", {"page_size": 50})
    assert response.status_code == 200 and response.json()["count"] == 50
    assert len(response.content) < SMALL_PAGE
    assert whole_payload_reads(queries) == []
    row = response.json()["results"][0]
    assert (row["id"], row["signal"], row["input_size"]) == ("big-000", "approval", MIB + 2)
    assert "input" not in row and row["input_preview"].startswith('"xxx')


def test_the_cli_list_prints_previews(users):
    big_runs(20)
    out = StringIO()
    with CaptureQueriesContext(connection) as queries:
        call_command("workflow", "list", "--json", stdout=out)
    assert len(out.getvalue()) < SMALL_PAGE
    assert whole_payload_reads(queries) == []
    listed = json.loads(out.getvalue())
    assert len(listed) == 20 and listed[0]["result_size"] == MIB + 2
    assert not {"input", "result", "error"} & set(listed[0])


def test_the_admin_changelist_and_approvals_page_are_small(users):
    big_runs(50)
    big_runs(30, waiting=True, prefix="waiting")
    client = admin_client(users)
    with CaptureQueriesContext(connection) as queries:
        changelist = client.get(ADMIN)
        approvals = client.get(f"{ADMIN}approvals/")
    assert changelist.status_code == 200 and b"big-049" in changelist.content
    assert approvals.status_code == 200 and b"waiting-029" in approvals.content
    assert len(changelist.content) < SMALL_PAGE and len(approvals.content) < SMALL_PAGE
    assert whole_payload_reads(queries) == []
    assert "xxxxxxxxxx… (1.0 MiB)" in approvals.content.decode()  # its start and its size

    # A run's own page still shows its input (cut for display, as before).
    run = WorkflowRun.objects.get(workflow_id="big-000")
    page = client.get(f"{ADMIN}{run.pk}/change/")
    assert page.status_code == 200 and b"1,048,578 characters in all" in page.content


def test_short_previews_read_like_the_pages_values():
    assert previews.short('{"amount": 7}', 13) == '{"amount": 7}'
    assert previews.short('"laptop"', 8) == "“laptop”"
    assert previews.short(None, None) == "null"
    assert previews.short('"' + "x" * 199, MIB + 2, 10) == '"xxxxxxxxx… (1.0 MiB)'


# The events endpoint: pages by sequence.


def events_url(workflow_id: str) -> str:
    return f"{LIST}{workflow_id}/events/"


@pytest.mark.core
def test_events_are_paged_by_sequence_and_next_reaches_the_end(api):
    run = run_with_events("long", 250)
    client = api("viewer")
    first = client.get(events_url("long")).json()
    assert (first["id"], first["run_id"]) == ("long", str(run.run_id))
    assert [e["sequence"] for e in first["results"]] == list(range(1, 101))  # 100 by default
    assert "after=100" in first["next"] and f"run_id={run.run_id}" in first["next"]

    sequences, url, pages = [], events_url("long"), 0
    while url:
        page = client.get(url).json()
        sequences += [e["sequence"] for e in page["results"]]
        url, pages = page["next"], pages + 1
    assert sequences == list(range(1, 251)) and pages == 3  # oldest first, nothing twice

    whole = client.get(events_url("long"), {"limit": 1000}).json()
    assert len(whole["results"]) == 250 and whole["next"] is None
    exact = client.get(events_url("long"), {"limit": 50, "after": 200}).json()
    assert [e["sequence"] for e in exact["results"]] == list(range(201, 251))
    assert exact["next"] is None  # no empty page to fetch at the end
    assert client.get(events_url("long"), {"after": 250}).json()["results"] == []


def test_at_most_a_thousand_events_a_page(api):
    run_with_events("longer", 1005)
    page = api("viewer").get(events_url("longer"), {"limit": 1000}).json()
    assert len(page["results"]) == 1000 and "after=1000" in page["next"]
    rest = api("viewer").get(page["next"]).json()
    assert [e["sequence"] for e in rest["results"]] == list(range(1001, 1006))


@pytest.mark.parametrize(
    "query, parameter",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"after": str(2**40)}, "after"),
        ({"run_id": "not-a-uuid"}, "run_id"),
    ],
)
def test_a_bad_paging_parameter_is_a_400_naming_it(api, query, parameter):
    run_with_events("p", 3)
    response = api("viewer").get(events_url("p"), query)
    assert response.status_code == 400
    assert list(response.json()) == [parameter]


def test_both_bad_parameters_are_named_at_once(api):
    run_with_events("p", 3)
    response = api("viewer").get(events_url("p"), {"limit": "0", "after": "x"})
    assert response.status_code == 400 and set(response.json()) == {"limit", "after"}


def test_next_keeps_reading_the_same_run_when_the_id_is_run_again(api):
    old = run_with_events("again", 150)
    first = api("viewer").get(events_url("again")).json()
    WorkflowRun.objects.filter(pk=old.pk).update(status="completed")
    newer = run_with_events("again", 2)  # a new run of the id, running
    rest = api("viewer").get(first["next"]).json()
    assert rest["run_id"] == str(old.run_id)
    assert [e["sequence"] for e in rest["results"]] == list(range(101, 151))
    assert api("viewer").get(events_url("again")).json()["run_id"] == str(newer.run_id)
    unknown = api("viewer").get(events_url("again"), {"run_id": str(uuid.uuid4())})
    assert unknown.status_code == 404


def test_a_page_of_large_events_stops_early_and_next_reads_on(api):
    run_with_events("heavy", 41, payload=BIG)  # 40 signals of 1 MiB: 42 MB in one answer before
    client = api("viewer")
    first = client.get(events_url("heavy"))
    assert first.status_code == 200 and len(first.content) < 5 * MIB
    assert [e["sequence"] for e in first.json()["results"]] == [1, 2, 3, 4]  # 4 MiB of details
    sequences, url = [], events_url("heavy")
    while url:
        page = client.get(url)
        assert len(page.content) < 5 * MIB
        sequences += [e["sequence"] for e in page.json()["results"]]
        url = page.json()["next"]
    assert sequences == list(range(1, 42))
    assert len(client.get(events_url("heavy"), {"limit": 2}).json()["results"]) == 2


def test_replay_reads_the_joined_pages_of_a_history(api):
    record = json.loads(
        (Path(__file__).parent / "golden" / "histories" / "approval-08.json").read_text()
    )
    run = WorkflowRun.objects.create(
        workflow_id=record["workflow_id"], run_id=record["run_id"],
        workflow_name=record["workflow"], status=record["status"],
    )  # fmt: skip
    WorkflowEvent.objects.bulk_create(
        WorkflowEvent(run=run, **{**HistoryEvent.from_json(e).__dict__, "type": e["type"]})
        for e in record["events"]
    )
    pages, url = [], events_url(record["workflow_id"]) + "?limit=3"
    while url:
        pages.append(api("viewer").get(url).json())
        url = pages[-1]["next"]
    assert len(pages) == 3
    joined = [event for page in pages for event in page["results"]]
    assert testing.replay(golden.approval, joined).result["approved"] is True
    with pytest.raises(ValueError, match="next"):  # one page of several is not a history
        testing.replay(golden.approval, pages[0])


# The CLI's history: streamed.


def event_reads(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"] for q in queries.captured_queries if "beluga_workflows_workflowevent" in q["sql"]
    ]


@pytest.mark.core
def test_cli_history_json_is_the_whole_history_read_a_batch_at_a_time(users):
    from beluga_workflows.engine.store import load_history

    run = run_with_events("streamed", 250, payload={"n": "ü\u2028x"})
    out = StringIO()
    with CaptureQueriesContext(connection) as queries:
        call_command("workflow", "history", "streamed", "--json", stdout=out)
    whole = [event.to_json() for event in load_history(run.pk)]
    assert out.getvalue() == json.dumps(whole, indent=2, ensure_ascii=False, default=str) + "\n"
    assert json.loads(out.getvalue()) == json.loads(json.dumps(whole, default=str))
    batches = [sql for sql in event_reads(queries) if "LIMIT 101" in sql]
    assert len(batches) == 3  # 100 + 100 + 50 events, never the 250 at once


def test_cli_history_text_and_edge_cases(users):
    run_with_events("short", 3)
    text = StringIO()
    call_command("workflow", "history", "short", stdout=text)
    lines = text.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert "+0 ms" in lines[0] and "Started api_approval" in lines[0]

    WorkflowRun.objects.create(workflow_id="empty", workflow_name="api_approval")
    empty = StringIO()
    call_command("workflow", "history", "empty", "--json", stdout=empty)
    assert json.loads(empty.getvalue()) == []


def test_an_event_larger_than_a_page_is_a_page_alone():
    from beluga_workflows.history_pages import PAGE_BYTES, fitting

    assert fitting([PAGE_BYTES * 2, 10]) == 1
    assert fitting([10, PAGE_BYTES, 10]) == 1
    assert fitting([10, 10, None]) == 3 and fitting([]) == 0


def test_the_schema_describes_both_shapes_and_the_event_pages(api):
    schema = api("viewer").get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    paths, components = schema.json()["paths"], schema.json()["components"]["schemas"]
    listed = components["BelugaPaginatedBelugaRunSummaryList"]["properties"]["results"]
    assert listed["items"]["$ref"].endswith("/BelugaRunSummary")
    summary = set(components["BelugaRunSummary"]["properties"])
    assert {"input_preview", "input_size", "result_preview", "error_size"} <= summary
    assert not {"input", "result", "error"} & summary
    assert {"input", "result", "error"} <= set(components["BelugaRun"]["properties"])
    assert "input" not in components["BelugaApproval"]["properties"]

    events = paths["/api/workflows/{id}/events/"]["get"]
    assert {p["name"] for p in events["parameters"]} == {"id", "limit", "after", "run_id"}
    page = components["BelugaPaginatedBelugaEventList"]
    assert set(page["required"]) == {"id", "run_id", "next", "results"}
    assert page["properties"]["results"]["items"]["$ref"].endswith("/BelugaEvent")


@pytest.mark.temporal
@pytest.mark.django_db(transaction=True)
def test_on_temporal_the_list_previews_the_mirror_and_events_page_temporals_history(
    use_temporal: Any, worker_factory: Any, api: Any
) -> None:
    from beluga_workflows import workflow
    from tests import workflows_conformance as wf
    from tests.harness import wait_until

    worker_factory()
    executor = workflow.new("temporal")
    item = "y" * 50_000
    handle = executor.execute(wf.signal_order, workflow.WorkflowOptions(id="t-pages", input=4))
    for name, payload in [("go", None)] + [("item", item)] * 4:
        executor.signal("t-pages", workflow.Signal(name, payload))
    assert handle.result(timeout=30) == [item] * 4
    client = api("viewer")
    listed = wait_until(
        lambda: [r for r in client.get(LIST).json()["results"] if r["status"] == "completed"],
        30,
        message="the mirrored row completed",
    )
    assert listed[0]["result_size"] > 200_000 and "result" not in listed[0]
    assert len(listed[0]["result_preview"]) == previews.PREVIEW_CHARS

    whole = [event.sequence for event in executor.history("t-pages")]
    sequences, url = [], events_url("t-pages") + "?limit=3"
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 3 and page["run_id"] == handle.run_id
        sequences += [e["sequence"] for e in page["results"]]
        url = page["next"]
    assert sequences == whole
