"""WorkflowStore implementations, the workflow registry and the settings checks."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from django.core.checks import run_checks

from beluga_workflows import registry, workflow
from beluga_workflows.engine import runs
from tests import workflows_engine as wf

pytestmark = pytest.mark.core


def make_state(workflow_id: str, status: str = "running") -> workflow.WorkflowState:
    return workflow.WorkflowState(workflow_id, f"run-{workflow_id}", "w", workflow.Status(status))


def test_in_memory_store_round_trip():
    store = workflow.InMemoryWorkflowStore()
    store.save(make_state("a"))
    store.save(make_state("b", "completed"))
    assert store.load("a").status is workflow.Status.RUNNING
    assert [s.workflow_id for s in store.list()] == ["b", "a"]
    assert [s.workflow_id for s in store.list(status="completed")] == ["b"]
    assert len(store.list(limit=1)) == 1
    store.delete("a")
    with pytest.raises(workflow.WorkflowNotFoundError):
        store.load("a")


@pytest.mark.django_db
def test_django_store_reads_runs_and_deletes_only_finished_ones():
    store = workflow.DjangoWorkflowStore()
    run = runs.start("engine_collect", registry.reference(wf.collect), "store-1", 2)
    runs.start("engine_collect", registry.reference(wf.collect), "store-2", 2)
    state = store.load("store-1")
    assert (state.workflow_id, state.run_id, state.input) == ("store-1", str(run.run_id), 2)
    assert [s.workflow_id for s in store.list(status="running", limit=10)] == [
        "store-2",
        "store-1",
    ]
    with pytest.raises(workflow.WorkflowError, match="still running"):
        store.delete("store-1")
    store.save(replace(state, status=workflow.Status.COMPLETED, result="done"))
    assert store.load("store-1").result == "done"
    store.delete("store-1")
    with pytest.raises(workflow.WorkflowNotFoundError):
        store.load("store-1")


def test_apps_workflows_modules_are_imported_automatically():
    assert "project.demo.workflows" in sys.modules
    assert "research" in registry.public_names()


def another_research(ctx, _):
    return None


def test_a_public_name_cannot_be_taken_twice():
    with pytest.raises(workflow.WorkflowNameError, match="already used"):
        workflow.defn(another_research, name="research")


@pytest.mark.parametrize(
    "reference, reason",
    [
        ("os:getpid", "not part of this project"),  # Python's library
        ("subprocess:run", "not part of this project"),
        ("celery:shared_task", "not part of this project"),  # an installed package
        ("django.contrib.auth.hashers:make_password", "not part of this project"),
        ("antigravity:geohash", "not part of this project"),  # refused before it is imported
        ("tests.workflows_engine:time", "not a function defined in"),  # a module it imported
        ("tests.workflows_engine:nothing_here", "Cannot import"),
        ("../etc:passwd", "not part of this project"),
    ],
)
def test_references_resolve_only_to_the_projects_own_functions(reference, reason):
    with pytest.raises(workflow.WorkflowNameError, match=reason):
        registry.resolve(reference)
    assert "antigravity" not in sys.modules


def test_references_to_project_functions_resolve():
    from tests import workflows_engine

    assert registry.resolve("tests.workflows_engine:sleepy") is workflows_engine.sleepy
    assert registry.resolve("project.demo.workflows:research_workflow").__name__ == (
        "research_workflow"
    )


def test_local_functions_are_refused_as_workflows():
    def local(ctx, _):
        return None

    with pytest.raises(workflow.WorkflowNameError, match="module-level"):
        registry.reference(local)


@pytest.mark.parametrize(
    "override, check_id",
    [
        ({"EXECUTOR": "nope"}, "beluga_workflows.E002"),
        ({"POLL_INTERVAL": 0}, "beluga_workflows.E003"),
        ({"CACHE_SIZE": -1}, "beluga_workflows.E004"),
        ({"TEMPORAL": {"HOST": ""}}, "beluga_workflows.E005"),
        ({"POLL_INTERVALL": 1}, "beluga_workflows.E001"),
        ({"MAX_PAYLOAD_BYTES": "1MB"}, "beluga_workflows.E007"),
        ({"MAX_PAYLOAD_BYTES": 0}, "beluga_workflows.E007"),
    ],
)
def test_bad_settings_are_reported_by_check(settings, override, check_id):
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, **override}
    ids = [message.id for message in run_checks()]
    assert check_id in ids


def test_retry_backoff_is_jittered_and_capped():
    policy = workflow.RetryPolicy(initial_interval=1, backoff_coefficient=2, max_interval=5)
    delays = [policy.backoff(attempt).total_seconds() for attempt in (1, 2, 3, 10)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and 3.2 <= delays[2] <= 4.8
    assert delays[3] <= 6.0
    with pytest.raises(ValueError, match="max_attempts"):
        workflow.RetryPolicy(max_attempts=0)
