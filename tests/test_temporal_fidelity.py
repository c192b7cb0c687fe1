"""What Temporal's own tools see of a beluga run: activity types that are the activities'
names, payloads that are the user's input, and the activity options Temporal enforces
(heartbeat timeouts, task queues). Also what a worker refuses: workflow and activity types that
name anything but the project's workflows and their activities.

Runs real `runworker`s in Temporal mode against the session's dev server; the last tests are
unit tests of the registry and need neither.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow as temporal_workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from beluga_workflows import registry, testing, workflow
from beluga_workflows.errors import UntrustedReferenceError
from beluga_workflows.executors.temporal import convert
from tests import workflows_temporal_fidelity as wf
from tests.harness import run_count, wait_until


def start(executor: Any, fn: Any, input: Any = None) -> Any:
    return executor.execute(fn, workflow.WorkflowOptions(input=input))


def temporal_history(executor: Any, workflow_id: str) -> list[Any]:
    """The run's events as Temporal has them (what `temporal workflow show` prints)."""

    async def fetch(client: Client) -> list[Any]:
        handle = client.get_workflow_handle(workflow_id)
        return [event async for event in handle.fetch_history_events()]

    return executor.call(fetch)  # type: ignore[no-any-return]


def payload_converter(executor: Any) -> Any:
    async def get(client: Client) -> Any:
        return client.data_converter.payload_converter

    return executor.call(get)


def scheduled(events: list[Any]) -> list[Any]:
    return [
        event.activity_task_scheduled_event_attributes
        for event in events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]


@temporal_workflow.defn(sandboxed=False)
class PlainCaller:
    """A workflow written with the plain Temporal SDK, scheduling activities by type on the
    beluga worker's task queue: what anyone with access to the namespace can do."""

    @temporal_workflow.run
    async def run(self, queue: str, calls: list[list[Any]]) -> list[dict[str, Any]]:
        outcomes = []
        for activity_type, arg in calls:
            try:
                result = await temporal_workflow.execute_activity(
                    activity_type,
                    arg,
                    task_queue=queue,
                    start_to_close_timeout=timedelta(seconds=20),
                    retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(0.1)),
                )
                outcomes.append({"result": result})
            except ActivityError as err:
                cause = err.cause
                assert isinstance(cause, ApplicationError)
                outcomes.append({"error": cause.message, "non_retryable": cause.non_retryable})
        return outcomes


# -- on a real Temporal server ---------------------------------------------------------------


@pytest.fixture
def executor(use_temporal: Any, worker_factory: Any) -> Any:
    worker_factory(env={wf.WORKER_ENV: "main"})
    return workflow.new("temporal")


@pytest.mark.temporal
@pytest.mark.django_db(transaction=True)
def test_temporal_shows_activity_names_ids_and_the_users_input(executor: Any) -> None:
    handle = start(executor, wf.research, "Q4")
    assert handle.result(timeout=30) == "Q4: 2 sources"

    attributes = scheduled(temporal_history(executor, handle.id))
    converter = payload_converter(executor)
    # The activity's name, never its import path; the decorated one by the name it was given.
    assert [a.activity_type.name for a in attributes] == ["collect_sources", "summarize-v2"]
    assert [a.activity_id for a in attributes] == ["0-collect_sources", "1-summarize-v2"]
    # The one argument is the user's input, exactly as the workflow passed it.
    inputs = [converter.from_payloads(list(a.input.payloads)) for a in attributes]
    assert inputs == [["Q4"], [{"topic": "Q4", "sources": ["a", "b"]}]]
    assert attributes[0].start_to_close_timeout.ToTimedelta() == timedelta(seconds=30)
    # Where the function is travels in a header only our worker reads.
    header = converter.from_payload(attributes[0].header.fields[convert.ACTIVITY_HEADER])
    assert header["reference"] == "tests.workflows_temporal_fidelity:collect_sources"

    # Our history (REST, admin, CLI) names the steps the same way, with the same inputs.
    steps = [e for e in executor.history(handle.id) if e.type == "ActivityScheduled"]
    assert [(e.step, e.name, e.data["input"]) for e in steps] == [
        (0, "collect_sources", "Q4"),
        (1, "summarize-v2", {"topic": "Q4", "sources": ["a", "b"]}),
    ]
    assert steps[0].data["options"]["timeout"] == 30


@pytest.mark.temporal
@pytest.mark.django_db(transaction=True)
def test_a_run_an_earlier_version_started_keeps_its_activities_form(executor: Any) -> None:
    """Runs in flight across the upgrade replay: their activities are scheduled as they were
    (type the import reference, id the step, argument ``{"name", "input", "options"}``)."""
    workflow_id = f"earlier-{uuid.uuid4()}"
    reference = registry.reference(wf.research)

    async def start_as_before(client: Client) -> Any:
        handle = await client.start_workflow(
            "fidelity_research",
            "Q3",
            id=workflow_id,
            task_queue=executor.task_queue,
            memo={convert.REFERENCE_MEMO: reference},  # all an earlier version put there
        )
        return await handle.result()

    assert executor.call(start_as_before, timeout=30) == "Q3: 2 sources"
    attributes = scheduled(temporal_history(executor, workflow_id))
    assert [(a.activity_type.name, a.activity_id) for a in attributes] == [
        ("tests.workflows_temporal_fidelity:collect_sources", "0"),
        ("tests.workflows_temporal_fidelity:summarize", "1"),
    ]
    steps = [e for e in executor.history(workflow_id) if e.type == "ActivityScheduled"]
    assert [(e.step, e.name, e.data["input"]) for e in steps] == [
        (0, "collect_sources", "Q3"),
        (1, "summarize-v2", {"topic": "Q3", "sources": ["a", "b"]}),
    ]


@pytest.mark.temporal
@pytest.mark.django_db(transaction=True)
def test_types_naming_anything_else_fail_clearly_and_run_nothing(
    executor: Any, counter_dir: Path
) -> None:
    """A plain Temporal workflow may call the project's activities by name; a type that is no
    activity of the project fails at once (non-retryable). A workflow type naming a function
    of the project that is not a workflow fails the run."""
    plain_queue = f"plain-{uuid.uuid4()}"
    calls = [
        ["research_activity", "Q4"],  # the demo app's activity (its workflows.py)
        ["record_run", "forged"],  # a function of the project, but no activity
        ["os:getpid", {"input": None, "options": {}}],  # shaped like an earlier version's
    ]

    async def scenario(client: Client) -> tuple[list[dict[str, Any]], str]:
        async with Worker(
            client,
            task_queue=plain_queue,
            workflows=[PlainCaller],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            outcomes = await client.execute_workflow(
                PlainCaller.run,
                args=[executor.task_queue, calls],
                id=f"plain-{uuid.uuid4()}",
                task_queue=plain_queue,
            )
        try:  # a project function that is not a workflow, as a workflow type
            await client.execute_workflow(
                "tests.harness:record_run",
                "forged",
                id=f"forged-{uuid.uuid4()}",
                task_queue=executor.task_queue,
            )
        except WorkflowFailureError as exc:
            return outcomes, str(getattr(exc.cause, "message", exc.cause))
        return outcomes, "the forged workflow completed"

    outcomes, forged_workflow = executor.call(scenario, timeout=60)
    assert outcomes[0] == {"result": "Research findings on 'Q4': key insights discovered."}
    assert outcomes[1]["non_retryable"] and "Unknown activity 'record_run'" in outcomes[1]["error"]
    assert outcomes[2]["non_retryable"] and "not part of this project" in outcomes[2]["error"]
    assert "is not a workflow" in forged_workflow
    assert run_count(counter_dir, "forged") == 0


@pytest.mark.temporal
@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_timeout_retries_a_killed_workers_attempt_with_its_details(
    use_temporal: Any, worker_factory: Any, counter_dir: Path
) -> None:
    first = worker_factory()
    executor: Any = workflow.new("temporal")
    handle = executor.execute(wf.heartbeats, workflow.WorkflowOptions(input=3))
    wait_until(lambda: run_count(counter_dir, "resumable-hanging"), 30, message="heartbeats")
    first.kill9()  # mid-attempt, mid-heartbeat: nothing reports the attempt's end
    killed = time.monotonic()
    worker_factory()
    # The 2s heartbeat timeout, not the 5-minute attempt timeout, hands the step on.
    assert handle.result(timeout=30) == {"attempt": 2, "resumed_from": 3}
    assert time.monotonic() - killed < 30
    assert run_count(counter_dir, "resumable-1") == 1
    attributes = scheduled(temporal_history(executor, handle.id))
    assert attributes[0].heartbeat_timeout.ToTimedelta() == timedelta(seconds=2)


@pytest.mark.temporal
@pytest.mark.django_db(transaction=True)
def test_an_activity_queue_is_served_only_by_a_worker_with_that_queue(
    use_temporal: Any, worker_factory: Any
) -> None:
    queue = f"fidelity-gpu-{uuid.uuid4().hex[:8]}"
    worker_factory(env={wf.WORKER_ENV: "main"})
    executor: Any = workflow.new("temporal")
    handle = executor.execute(wf.queues, workflow.WorkflowOptions(input=queue))
    time.sleep(1.5)  # the main worker does not take the queue's activity
    waiting = executor.describe(handle.id)
    assert waiting.waiting_for == "activity:where"
    assert waiting.no_worker  # no live worker polls that task queue
    worker_factory(env={wf.WORKER_ENV: "gpu"}, args=("--queues", queue))
    assert handle.result(timeout=30) == ["gpu", "main"]
    attributes = scheduled(temporal_history(executor, handle.id))
    assert [a.task_queue.name for a in attributes] == [queue, executor.task_queue]

    from beluga_workflows.models import WorkerHeartbeat

    queues = {tuple(row.queues) for row in WorkerHeartbeat.objects.all()}
    assert (queue,) in queues and (executor.task_queue,) in queues


# -- the registry, without a server ----------------------------------------------------------


def test_a_decorated_activity_is_recorded_by_its_name_on_the_built_in_engine_too() -> None:
    with testing.WorkflowEnvironment() as env:
        handle = env.execute(wf.research, workflow.WorkflowOptions(input="Q4"))
        assert handle.result() == "Q4: 2 sources"
        names = [e.name for e in env.history(handle.id) if e.type == "ActivityScheduled"]
    assert names == ["collect_sources", "summarize-v2"]


def test_an_activity_cannot_take_a_name_another_was_given() -> None:
    def summarize_v2(ctx: Any, _: Any) -> None:
        return None

    summarize_v2.__module__, summarize_v2.__qualname__ = __name__, "summarize_v2"
    with pytest.raises(workflow.WorkflowNameError, match='@workflow.activity\\(name="..."\\)'):
        registry.check_activity_name("summarize-v2", registry.reference(summarize_v2))
    registry.check_activity_name("summarize-v2", registry.reference(wf.summarize))
    with pytest.raises(workflow.WorkflowNameError, match="already used"):
        workflow.activity(summarize_v2, name="summarize-v2")


def test_workers_resolve_activities_by_name_and_workflows_only_if_they_are_workflows() -> None:
    assert registry.resolve_activity("summarize-v2") is wf.summarize
    assert registry.resolve_activity("collect_sources") is wf.collect_sources
    # A reference that no longer imports (the module moved): the name still finds it.
    assert registry.resolve_activity("collect_sources", "tests.moved:collect_sources") is (
        wf.collect_sources
    )
    with pytest.raises(workflow.WorkflowNameError, match="Unknown activity"):
        registry.resolve_activity("record_run")
    with pytest.raises(workflow.WorkflowNameError, match="is not the activity"):
        registry.resolve_activity("collect_sources", "tests.harness:record_run")
    # A header naming a function of the project that no workflow module holds: refused.
    with pytest.raises(UntrustedReferenceError, match="no activity of the project"):
        registry.resolve_activity("record_run", "tests.harness:record_run")
    assert registry.resolve_workflow("fidelity_research") is wf.research
    assert registry.resolve_workflow("tests.workflows_engine:sleepy").__name__ == "sleepy"
    with pytest.raises(workflow.WorkflowNameError, match="is not a workflow"):
        registry.resolve_workflow("tests.harness:record_run")
