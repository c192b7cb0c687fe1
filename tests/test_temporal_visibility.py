"""What Temporal's own tools see of a beluga run: search attributes and visibility lists,
declared signals and queries, and payloads encoded by the project's data converter.

Runs a real `runworker` in Temporal mode against the session's dev server (which declares
the `BelugaWaitingFor` search attribute, as an operator would).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from beluga_workflows import workflow
from beluga_workflows.executors.temporal import TemporalWorkflowStore
from beluga_workflows.models import WorkflowRun
from tests import temporal_codec
from tests import workflows_composition as comp
from tests import workflows_conformance as wf
from tests.api_fixtures import api_fixture, users_fixture  # noqa: F401
from tests.harness import wait_until
from tests.test_temporal import TUTORIAL_EVENTS, temporal_cli, wait_for_row

pytestmark = [pytest.mark.temporal, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def executor(use_temporal: Any, worker_factory: Any) -> Any:
    worker_factory()
    return workflow.new("temporal")


def start(executor: Any, fn: Any, input: Any = None, **options: Any) -> Any:
    return executor.execute(fn, workflow.WorkflowOptions(input=input, **options))


def shown(address: str, workflow_id: str) -> list[str]:
    """The event types of the run's Temporal history, as `temporal workflow show` prints it."""
    out = temporal_cli(address, "workflow", "show", "--workflow-id", workflow_id, "-o", "json")
    return [event["eventType"] for event in json.loads(out)["events"]]


def test_the_wait_is_a_search_attribute_and_lists_come_from_visibility(
    executor: Any, temporal_server: str
) -> None:
    store = TemporalWorkflowStore(executor)
    handle = start(executor, wf.tutorial, "Q4", id="sa-approval")
    start(executor, wf.waits_forever, id="sa-other")

    def ids(**filters: Any) -> list[str]:
        return sorted(state.workflow_id for state in store.list(**filters))

    wait_until(lambda: ids(waiting_for="signal:approval") == ["sa-approval"], 30,
               message="listed by what it waits for")  # fmt: skip
    wait_until(lambda: ids(waiting_for="signal:finish") == ["sa-other"], 30)
    assert ids(workflow="conf_waits_forever") == ["sa-other"]
    assert ids(status="running") == ["sa-approval", "sa-other"]
    listed = {s.workflow_id: s for s in store.list()}
    assert listed["sa-approval"].waiting_for == "signal:approval"
    query = "ExecutionStatus = 'Running' AND BelugaWaitingFor = 'signal:approval'"
    cli_list = temporal_cli(temporal_server, "workflow", "list", "--query", query)
    assert "sa-approval" in cli_list and "sa-other" not in cli_list

    # Reads of one run and the mirror still have the whole wait, deadline included.
    state = executor.describe("sa-approval")
    assert state.waiting_for == "signal:approval"
    assert state.waiting_deadline - state.waiting_since == timedelta(hours=24)
    wait_for_row("sa-approval", "waiting row", waiting_for="signal:approval")

    # One argument, as the Temporal CLI sends it, reaches the declared handler.
    temporal_cli(temporal_server, "workflow", "signal", "--workflow-id", "sa-approval",
                 "--name", "approval", "--input", "true")  # fmt: skip
    assert handle.result(timeout=30).startswith("Final Report")
    wait_until(lambda: ids(waiting_for="signal:approval") == [], 30, message="wait over")
    wait_until(lambda: ids(status="completed") == ["sa-approval"], 30)
    done = wait_for_row("sa-approval", "completed row", status="completed")
    assert done.waiting_for == ""
    assert [e.type.value for e in executor.history("sa-approval")] == TUTORIAL_EVENTS

    # Per signal wait: one memo update (the wait started) and the attribute set, then cleared.
    types = shown(temporal_server, "sa-approval")
    assert types.count("EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED") == 1, types
    assert types.count("EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES") == 2, types
    replay(executor, "sa-approval")  # today's code issues the same commands on replay


def replay(executor: Any, workflow_id: str) -> None:
    """Replay the run's Temporal history with Temporal's replayer, as a new worker would."""
    import concurrent.futures

    from temporalio.worker import Replayer
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from beluga_workflows.executors.temporal.workflow import BelugaWorkflow

    async def run(client: Any) -> None:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        replayer = Replayer(
            workflows=[BelugaWorkflow],
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
            ),
            workflow_task_executor=concurrent.futures.ThreadPoolExecutor(1),
            data_converter=client.data_converter,
        )
        await replayer.replay_workflow(history)

    executor.call(run)


def test_a_namespace_without_the_attribute_runs_everything_and_runworker_declares_it(
    use_temporal: Any, settings: Any, worker_factory: Any, temporal_server: str
) -> None:
    from beluga_workflows.executors.temporal import visibility

    namespace = "beluga-fresh"
    temporal_cli(temporal_server, "operator", "namespace", "create", "--namespace", namespace)
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "TEMPORAL": {**settings.BELUGA_WORKFLOWS["TEMPORAL"], "NAMESPACE": namespace},
    }
    executor = workflow.new("temporal")
    store = TemporalWorkflowStore(executor)
    visibility.forget()

    def started(workflow_id: str) -> Any:  # a new namespace takes moments to reach every service
        return wait_until(lambda: _start_or_none(executor, workflow_id), 30)

    before = started("before-attribute")  # the namespace lacks it: the run keeps to its memo
    worker_factory()  # declares it
    visibility.forget()
    after = started("after-attribute")
    for workflow_id in ("before-attribute", "after-attribute"):
        wait_until(lambda w=workflow_id: executor.describe(w).waiting_for == "signal:finish", 30)
    wait_until(lambda: [s.workflow_id for s in store.list(waiting_for="signal:finish")]
               == ["after-attribute"], 30)  # fmt: skip
    for handle in (before, after):
        executor.signal(handle.id, workflow.Signal("finish", handle.id))
        assert handle.result(timeout=30) == handle.id
        replay(executor, handle.id)  # each replays as it ran: with the memo, with the attribute


def _start_or_none(executor: Any, workflow_id: str) -> Any:
    from temporalio.service import RPCError

    try:
        return start(executor, wf.waits_forever, id=workflow_id)
    except RPCError:
        return None


def test_children_and_continued_runs_publish_their_wait_too(executor: Any) -> None:
    store = TemporalWorkflowStore(executor)
    start(executor, comp.parent, {"child_id": "sa-child", "child": {"mode": "wait"}},
          id="sa-parent")  # fmt: skip
    chain = start(executor, comp.keep_going, [], id="sa-chain")

    def waiting(label: str) -> list[str]:
        return sorted(state.workflow_id for state in store.list(waiting_for=label))

    wait_until(lambda: waiting("signal:go") == ["sa-child"], 30, message="the child listed")
    wait_until(lambda: waiting("signal:tick") == ["sa-chain"], 30, message="the chain listed")
    first_run = store.list(waiting_for="signal:tick")[0].run_id
    executor.signal("sa-chain", workflow.Signal("tick", 1))

    def next_run() -> bool:
        listed = store.list(waiting_for="signal:tick")
        return len(listed) == 1 and listed[0].run_id != first_run

    wait_until(next_run, 30, message="the continued run listed")
    executor.signal("sa-child", workflow.Signal("go", "now"))
    wait_until(lambda: waiting("signal:go") == [], 30, message="the child's wait over")
    executor.signal("sa-chain", workflow.Signal("tick", 2))
    executor.signal("sa-chain", workflow.Signal("tick", 3))
    assert chain.result(timeout=30) == [1, 2, 3]


def test_metadata_lists_the_runs_signals_and_queries(executor: Any, temporal_server: str) -> None:
    handle = start(executor, wf.queries, id="metadata")
    wait_until(lambda: executor.describe("metadata").waiting_for == "signal:finish", 30)

    out = temporal_cli(temporal_server, "workflow", "metadata", "--workflow-id", "metadata",
                       "-o", "json")  # fmt: skip
    metadata = json.loads(out)["queryResult"][0]
    definition = metadata["definition"]
    assert definition["type"] == "conf_queries"
    queries = {q.get("name") for q in definition["queryDefinitions"]}
    signals = {s.get("name") for s in definition["signalDefinitions"]}
    assert {"status", "result", "history", "progress"} <= queries, queries
    # "extend" is never waited for: it is listed because @workflow.defn declared it.
    assert {"finish", "extend"} <= signals, signals
    assert metadata["currentDetails"].startswith("Waiting for signal:finish since ")

    # The declared handlers answer as the dynamic ones do.
    assert executor.query("metadata", "progress")["stage"] == "waiting"
    executor.signal("metadata", workflow.Signal("finish", {"ok": 1}, sender="tester"))
    assert handle.result(timeout=30)["payload"] == {"ok": 1}
    replay(executor, "metadata")
    received = [e for e in executor.history("metadata") if e.type.value == "SignalReceived"]
    assert received[0].data == {"payload": {"ok": 1}, "sender": "tester"}


def test_a_payload_codec_keeps_temporal_from_storing_plaintext(
    use_temporal: Any, settings: Any, worker_factory: Any, temporal_server: str, api: Any
) -> None:
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "TEMPORAL": {
            **settings.BELUGA_WORKFLOWS["TEMPORAL"],
            "PAYLOAD_CODEC": "tests.temporal_codec.codec",
        },
    }
    worker_factory(env={"DJANGO_SETTINGS_MODULE": "tests.settings_codec"})
    executor = workflow.new("temporal")
    secret = "secret topic 7f3a"
    handle = start(executor, wf.tutorial, secret, id="encoded")
    wait_until(lambda: executor.describe("encoded").waiting_for == "signal:approval", 30)
    executor.signal("encoded", workflow.Signal("approval", True, sender="reviewer"))
    assert secret in handle.result(timeout=30)

    # What Temporal stores: encoded payloads only (read with a client without the codec).
    from temporalio.client import Client

    async def raw(client: Any) -> list[Any]:
        plain = await Client.connect(temporal_server, namespace=client.namespace)
        handle = plain.get_workflow_handle("encoded")
        return [event async for event in handle.fetch_history_events()]

    events = executor.call(raw)
    assert events and not any(secret.encode() in e.SerializeToString() for e in events)
    started = events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == temporal_codec.ENCODING

    # What beluga shows: decoded values, from Temporal and from the mirror.
    state = executor.describe("encoded")
    assert state.input == secret and secret in state.result
    history = executor.history("encoded")
    assert [e.type.value for e in history] == TUTORIAL_EVENTS
    assert history[1].data["input"] == secret
    row = wait_for_row("encoded", "completed row", status="completed")
    assert row.input == secret and row.workflow_reference == "tests.workflows_conformance:tutorial"
    detail = api("viewer").get("/api/workflows/encoded/").json()
    assert detail["input"] == secret and detail["result"] == state.result
    assert WorkflowRun.objects.filter(workflow_id="encoded", waiting_for="").exists()
    replay(executor, "encoded")


def test_the_mirror_can_keep_values_out_of_the_database(
    use_temporal: Any, settings: Any, worker_factory: Any
) -> None:
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "TEMPORAL": {
            **settings.BELUGA_WORKFLOWS["TEMPORAL"],
            "PAYLOAD_CODEC": "tests.temporal_codec.codec",
            "MIRROR_PAYLOADS": False,
        },
    }
    worker_factory(env={"DJANGO_SETTINGS_MODULE": "tests.settings_codec",
                        "BELUGA_TEST_MIRROR_PAYLOADS": "0"})  # fmt: skip
    executor = workflow.new("temporal")
    handle = start(executor, wf.waits_forever, "secret input", id="valueless")
    wait_for_row("valueless", "waiting row", waiting_for="signal:finish")
    executor.signal("valueless", workflow.Signal("finish", "secret payload"))
    assert handle.result(timeout=30) == "secret payload"

    row = wait_for_row("valueless", "completed row", status="completed")
    assert (row.input, row.result) == (None, None)
    data = {e.type: e.data for e in row.events.all()}
    assert data["WorkflowStarted"]["input"] is None
    assert data["WorkflowStarted"]["temporal"]["values"] is False
    assert data["SignalReceived"]["payload"] is None and data["WorkflowCompleted"]["result"] is None
    state = executor.describe("valueless")  # from Temporal: the values are there
    assert (state.input, state.result) == ("secret input", "secret payload")


def test_check_refuses_a_data_converter_that_is_not_one(settings: Any) -> None:
    temporal = settings.BELUGA_WORKFLOWS["TEMPORAL"]
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "TEMPORAL": {**temporal, "PAYLOAD_CODEC": "tests.temporal_codec.KEY"},
    }
    with pytest.raises(SystemCheckError, match=r"beluga_workflows\.E005.*PAYLOAD_CODEC"):
        call_command("check")
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "TEMPORAL": {**temporal, "DATA_CONVERTER": "tests.no_such_module.converter"},
    }
    with pytest.raises(SystemCheckError, match="DATA_CONVERTER"):
        call_command("check")
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "TEMPORAL": {**temporal, "PAYLOAD_CODEC": "tests.temporal_codec.XorCodec"},
    }
    call_command("check")  # a class is made once, without arguments
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "TEMPORAL": {**temporal, "MIRROR_PAYLOADS": "no"},
    }
    with pytest.raises(SystemCheckError, match="MIRROR_PAYLOADS"):
        call_command("check")
