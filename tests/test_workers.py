"""Live workers: heartbeats of real `runworker` processes in the REST API, the CLI and the admin,
and `no_worker` on runs whose pending work no live worker serves.

Workers beat every 0.3 s here (a settings module made for the test), so "not live" — silent
for 3 intervals — comes within a second of a kill -9.
"""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import tests.workflows_engine  # noqa: F401  (registers engine_long_activity, engine_sleep)
from beluga_workflows import heartbeats, workflow
from beluga_workflows.models import WorkerHeartbeat, WorkflowRun
from tests import harness
from tests.api_fixtures import api_fixture, drive, start, users_fixture  # noqa: F401

pytestmark = pytest.mark.django_db

WORKERS = "/api/workers/"
ADMIN = "/admin/beluga_workflows/workerheartbeat/"
BEAT = 0.3


def cli(*args: str) -> str:
    out = StringIO()
    call_command("workflow", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def fast_beats(tmp_path: Path) -> dict[str, str]:
    heartbeats.clear_cache()
    return harness.settings_env(tmp_path, HEARTBEAT_INTERVAL=BEAT)


def listed(api: Any) -> list[dict[str, Any]]:
    response = api("viewer").get(WORKERS)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def no_worker(workflow_id: str) -> bool:
    heartbeats.clear_cache()
    return workflow.get_executor().describe(workflow_id).no_worker


def beat(executor: str = "default", queues: tuple[str, ...] = (), **fields: Any) -> Any:
    """A worker's row as its heartbeat writes it (for the rules, without a process)."""
    heartbeats.clear_cache()
    defaults = {"beluga_workflows", "beluga_activities"} if executor == "default" else set()
    return WorkerHeartbeat.objects.create(
        host="elsewhere",
        pid=fields.pop("pid", 4242),
        executor=executor,
        queues=list(queues or sorted(defaults)),
        concurrency=4,
        interval=fields.pop("interval", 5.0),
        started_at=timezone.now(),
        last_beat=fields.pop("last_beat", timezone.now()),
        **fields,
    )


# Real workers announce themselves.


@pytest.mark.slow
@pytest.mark.core
@pytest.mark.django_db(transaction=True)
def test_a_running_worker_is_listed_everywhere_and_gone_after_sigterm(
    worker_factory, fast_beats, api, users
) -> None:
    process = worker_factory(env=fast_beats)

    [shown] = harness.wait_until(lambda: listed(api), 10, message="a heartbeat")
    assert shown["pid"] == process.pid and shown["executor"] == "default"
    assert shown["queues"] == ["beluga_workflows", "beluga_activities"]
    assert (shown["concurrency"], shown["pool"], shown["sweeper"]) == (2, "threads", True)
    assert shown["live"] is True and shown["interval"] == BEAT
    # It keeps beating.
    harness.wait_until(lambda: listed(api)[0]["last_beat"] != shown["last_beat"], 5, 0.1)

    assert [w["pid"] for w in json.loads(cli("workers", "--json"))] == [process.pid]
    table = cli("workers")
    assert str(process.pid) in table and " live" in table
    admin = Client()
    admin.force_login(users["viewer"])
    page = admin.get(ADMIN).content.decode()
    assert str(process.pid) in page and "beluga_activities" in page
    assert api(None).get(WORKERS).status_code == 401

    assert process.stop() == 0
    assert listed(api) == []  # a clean shutdown deletes its row
    assert "No worker has announced itself" in cli("workers")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_is_not_live_then_forgotten(worker_factory, fast_beats, api) -> None:
    dead = worker_factory(env=fast_beats)
    harness.wait_until(lambda: listed(api), 10, message="a heartbeat")
    dead.kill9()
    [shown] = harness.wait_until(
        lambda: [w for w in listed(api) if not w["live"]], 5, message="taken for dead"
    )
    assert shown["pid"] == dead.pid
    assert "NOT LIVE" in cli("workers")

    # Long dead: the next worker to start forgets it.
    WorkerHeartbeat.objects.filter(pid=dead.pid).update(
        last_beat=timezone.now() - heartbeats.FORGET_AFTER - timedelta(seconds=1)
    )
    alive = worker_factory(env=fast_beats)
    harness.wait_until(
        lambda: [w["pid"] for w in listed(api)] == [alive.pid], 10, message="forgotten"
    )


# no_worker.


@pytest.mark.slow
@pytest.mark.core
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_worker_died_is_flagged(worker_factory, fast_beats, counter_dir, api) -> None:
    process = worker_factory(env=fast_beats)
    executor = workflow.get_executor()
    executor.start("engine_long_activity", workflow.WorkflowOptions(id="long", input=60))
    harness.wait_until(lambda: harness.run_count(counter_dir, "sleepy") == 1, 30, message="run")
    assert no_worker("long") is False  # its attempt runs on a live worker

    process.kill9()
    harness.wait_until(lambda: no_worker("long"), 5, message="flagged")
    assert api("viewer").get("/api/workflows/long/").json()["no_worker"] is True
    assert api("viewer").get("/api/workflows/").json()["results"][0]["no_worker"] is True
    assert "no_worker:        true" in cli("describe", "long")

    worker_factory(env=fast_beats)  # its successor takes the attempt over
    harness.wait_until(lambda: not no_worker("long"), 10, message="served again")


def test_with_no_worker_a_started_run_is_flagged_everywhere(api) -> None:
    response = api("starter").post(
        "/api/workflows/", {"workflow": "research", "id": "r1"}, format="json"
    )
    assert response.status_code == 201 and response.json()["no_worker"] is True
    assert no_worker("r1") is True
    assert api("viewer").get("/api/workflows/r1/").json()["no_worker"] is True
    assert api("viewer").get("/api/workflows/").json()["results"][0]["no_worker"] is True
    assert json.loads(cli("describe", "r1", "--json"))["no_worker"] is True
    assert json.loads(cli("list", "--json"))[0]["no_worker"] is True
    assert "see `manage.py workflow workers`" in cli("describe", "r1")


def test_a_default_run_is_not_served_by_a_temporal_worker() -> None:
    workflow.get_executor().start("research", workflow.WorkflowOptions(id="r1", input="Q4"))
    beat("temporal", ("beluga-workflows",))
    assert no_worker("r1") is True
    beat("default")
    assert no_worker("r1") is False


def test_each_kind_of_pending_work_needs_its_own_server() -> None:
    executor = workflow.get_executor()
    executor.start("research", workflow.WorkflowOptions(id="r1", input="Q4"))
    steps_only = beat(queues=("beluga_workflows",), sweeper=True)
    assert no_worker("r1") is False  # a workflow step is pending: its queue is served
    drive("r1")  # now an activity attempt is pending, on a queue nobody serves
    assert no_worker("r1") is True
    steps_only.delete()
    beat(sweeper=False)
    assert no_worker("r1") is False

    executor.start("engine_sleep", workflow.WorkflowOptions(id="s1", input=0.01))
    drive("s1")  # sleeping: a timer, soon due, and only a sweeper fires it
    harness.wait_until(lambda: no_worker("s1"), 5, message="a due timer nobody fires")
    beat(sweeper=True, pid=2)
    assert no_worker("s1") is False


def test_a_run_that_waits_for_a_signal_needs_no_worker() -> None:
    start("api_approval", "a1")
    assert no_worker("a1") is False  # nothing to do until someone signals
    cli("signal", "a1", "approval", "true")
    assert no_worker("a1") is True  # now a step is pending
    start("api_echo", "e1", 1)
    assert no_worker("e1") is False  # closed runs never are


def test_a_worker_silent_for_3_intervals_is_not_live() -> None:
    workflow.get_executor().start("research", workflow.WorkflowOptions(id="r1", input="Q4"))
    row = beat(interval=1.0, last_beat=timezone.now() - timedelta(seconds=2))
    assert no_worker("r1") is False
    WorkerHeartbeat.objects.filter(pk=row.pk).update(
        last_beat=timezone.now() - timedelta(seconds=3.5)
    )
    assert no_worker("r1") is True
    assert [w.live for w in heartbeats.workers(fresh=True)] == [False]


def test_a_list_costs_the_same_queries_whatever_its_length(api) -> None:
    beat(queues=("beluga_workflows",))  # activities unserved: the costliest path

    def queries() -> int:
        heartbeats.clear_cache()
        with CaptureQueriesContext(connection) as captured:
            assert api("viewer").get("/api/workflows/").status_code == 200
        return len(captured)

    for n in range(2):
        start("api_approval", f"a{n}")
    queries()  # the first request also makes the viewer's token
    few = queries()
    for n in range(2, 8):
        start("api_approval", f"a{n}")
    assert queries() == few


def test_the_admin_page_needs_the_view_permission(users) -> None:
    beat()
    client = Client()
    client.force_login(users["nobody"])
    assert client.get(ADMIN).status_code == 403
    client.force_login(users["viewer"])
    page = client.get(ADMIN)
    assert page.status_code == 200 and "elsewhere" in page.content.decode()
    assert "Add worker" not in page.content.decode()
    assert client.post(ADMIN + "add/", {}).status_code == 403


def test_the_endpoint_is_in_the_schema(api) -> None:
    schema = api("viewer").get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    document = schema.json()
    assert "/api/workers/" in document["paths"]
    assert "BelugaWorker" in document["components"]["schemas"]
    run = document["components"]["schemas"]["BelugaRun"]["properties"]
    assert run["no_worker"]["type"] == "boolean"
    assert api("nobody").get(WORKERS).status_code == 403


# On Temporal.


@pytest.mark.slow
@pytest.mark.temporal
@pytest.mark.django_db(transaction=True)
def test_on_temporal_a_run_is_flagged_when_no_worker_polls_its_task_queue(
    use_temporal, worker_factory, fast_beats, api
) -> None:
    process = worker_factory(env=fast_beats)
    task_queue = use_temporal["TEMPORAL"]["TASK_QUEUE"]
    [shown] = harness.wait_until(lambda: listed(api), 10, message="a heartbeat")
    assert (shown["executor"], shown["queues"]) == ("temporal", [task_queue])

    temporal = workflow.new("temporal")
    temporal.start("research", workflow.WorkflowOptions(id="t1", input="Q4"))
    harness.wait_until(
        lambda: temporal.describe("t1").waiting_for == "signal:approval", 30, message="wait"
    )
    heartbeats.clear_cache()
    assert temporal.describe("t1").no_worker is False
    # Started on the built-in engine while only a Temporal worker runs: nobody serves it.
    default = workflow.new("default")
    default.start("research", workflow.WorkflowOptions(id="d1", input="Q4"))
    heartbeats.clear_cache()
    assert default.describe("d1").no_worker is True

    assert process.stop() == 0
    assert listed(api) == []  # its row went with it
    heartbeats.clear_cache()
    assert temporal.describe("t1").no_worker is True
    harness.wait_until(lambda: WorkflowRun.objects.filter(workflow_id="t1").exists(), 10)
    listing = api("viewer").get("/api/workflows/", {"id": "t1"}).json()["results"]
    assert listing[0]["no_worker"] is True


# HEARTBEAT_INTERVAL is checked.


@pytest.mark.parametrize("value", [0, -1, None, "5"])
def test_a_bad_heartbeat_interval_is_reported_by_check(value: Any) -> None:
    from django.conf import settings

    overrides = {**settings.BELUGA_WORKFLOWS, "HEARTBEAT_INTERVAL": value}
    with override_settings(BELUGA_WORKFLOWS=overrides):
        messages = [m for m in run_checks() if m.id.startswith("beluga_workflows.")]
    assert [m.id for m in messages] == ["beluga_workflows.E003"]
    assert "['HEARTBEAT_INTERVAL'] must be a positive number of seconds" in messages[0].msg
