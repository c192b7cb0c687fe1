"""The two timeout settings, end to end.

* ``DEFAULT_TIMEOUT``: the workflow timeout of a run started without ``WorkflowOptions.timeout``,
  on the built-in engine (a real `runworker` fires the timer) and on Temporal (the server
  enforces it as the execution timeout).
* ``WORKFLOW_TASK_TIMEOUT``: a step whose workflow code never reaches a step is given up after
  it, whether the worker keeps live continuations (``CACHE_SIZE`` > 0) or replays every step
  (``CACHE_SIZE = 0``), and the step is taken again later.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from beluga_workflows import registry, workflow
from beluga_workflows.engine import holds, runs, steps
from beluga_workflows.models import WorkflowRun
from tests import harness
from tests import workflows_conformance as conformance
from tests import workflows_engine as wf

pytestmark = pytest.mark.django_db(transaction=True)


def with_settings(settings: Any, **values: Any) -> None:
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, **values}


@pytest.fixture
def no_worker() -> Any:
    """Runs started here get no worker: their first steps' messages are dropped afterwards."""
    from project.celery import app

    yield
    harness.purge_broker(app)


def started_timeout(executor: Any, workflow_id: str) -> Any:
    """The timeout the run's WorkflowStarted event recorded (seconds, or None)."""
    return executor.history(workflow_id)[0].data["timeout"]


# DEFAULT_TIMEOUT


@pytest.mark.slow
def test_default_timeout_times_out_a_run_started_without_one(worker: Any, settings: Any) -> None:
    with_settings(settings, DEFAULT_TIMEOUT=1)
    executor = workflow.new("default")
    handle = executor.execute(wf.wait_with_timeout, workflow.WorkflowOptions(input=600))
    with pytest.raises(workflow.WorkflowTimeoutError):
        handle.result(timeout=20)
    assert handle.status() is workflow.Status.TIMED_OUT
    assert started_timeout(executor, handle.id) == 1.0
    assert executor.history(handle.id)[-1].type.value == "WorkflowTimedOut"


def test_an_explicit_timeout_wins_over_the_default(settings: Any, no_worker: None) -> None:
    with_settings(settings, DEFAULT_TIMEOUT=1)
    executor = workflow.new("default")
    longer = executor.execute(wf.wait_with_timeout, workflow.WorkflowOptions(timeout=600))
    unlimited = executor.execute(wf.wait_with_timeout, workflow.WorkflowOptions(timeout=0))
    default = executor.execute(wf.wait_with_timeout, workflow.WorkflowOptions())
    assert started_timeout(executor, longer.id) == 600.0
    assert started_timeout(executor, unlimited.id) is None  # timeout=0: no limit at all
    assert started_timeout(executor, default.id) == 1.0
    rows = WorkflowRun.objects.filter(workflow_id__in=[longer.id, unlimited.id, default.id])
    assert sorted(rows.values_list("timeout_seconds", flat=True), key=str) == [1.0, 600.0, None]


def test_without_the_setting_a_run_has_no_timeout(no_worker: None) -> None:
    assert django_settings.BELUGA_WORKFLOWS.get("DEFAULT_TIMEOUT") is None
    executor = workflow.new("default")
    handle = executor.execute(wf.wait_with_timeout, workflow.WorkflowOptions())
    assert started_timeout(executor, handle.id) is None
    assert WorkflowRun.objects.get(workflow_id=handle.id).timeout_seconds is None


@pytest.mark.temporal
@pytest.mark.slow
def test_default_timeout_on_temporal(use_temporal: Any, worker_factory: Any, settings: Any) -> None:
    worker_factory()
    with_settings(settings, DEFAULT_TIMEOUT=2)
    executor = workflow.new("temporal")
    handle = executor.execute(conformance.waits_forever, workflow.WorkflowOptions(id="dt-default"))
    kept = executor.execute(
        conformance.waits_forever, workflow.WorkflowOptions(id="dt-explicit", timeout=600)
    )
    harness.wait_until(
        lambda: executor.describe("dt-default").waiting_for == "signal:finish", 30, message="wait"
    )
    with pytest.raises(workflow.WorkflowTimeoutError):
        handle.result(timeout=30)
    assert handle.status() is workflow.Status.TIMED_OUT
    assert started_timeout(executor, "dt-default") == 2.0
    assert kept.status() is workflow.Status.RUNNING  # its own 600 s, not the default
    assert started_timeout(executor, "dt-explicit") == 600.0
    executor.signal("dt-explicit", workflow.Signal("finish", "done"))
    assert kept.result(timeout=30) == "done"


# WORKFLOW_TASK_TIMEOUT

#: Holds the workflow below in a loop that reaches no step, as a runaway loop would.
RELEASE = threading.Event()


def spins_until_released(ctx: workflow.WorkflowContext, _: Any) -> str:
    RELEASE.wait(60)
    return "released" if RELEASE.is_set() else "never released"


@pytest.mark.parametrize("cache_size", [0, 256], ids=["replay every step", "live continuations"])
def test_a_step_that_never_reaches_a_step_is_given_up(cache_size: int, no_worker: None) -> None:
    RELEASE.clear()
    fast = {**django_settings.BELUGA_WORKFLOWS, "CACHE_SIZE": cache_size}
    run = runs.start(
        registry.workflow_name(spins_until_released),
        registry.reference(spins_until_released),
        f"spins-{cache_size}",
    )
    try:
        with override_settings(BELUGA_WORKFLOWS={**fast, "WORKFLOW_TASK_TIMEOUT": 0.5}):
            began = time.monotonic()
            steps.advance(run.pk)  # what a worker does with the run's first step
            took = time.monotonic() - began
        assert took < 10, f"the step ran {took:.1f}s: WORKFLOW_TASK_TIMEOUT was not applied"
        run.refresh_from_db()
        # Nothing recorded; the run is held with the error, in view, and tried again later
        # (with backoff, by a worker that starts, or on request) instead of in silence.
        assert run.status == "running" and run.last_sequence == 1
        assert run.held is not None and run.held["error"]["type"] == "WorkflowTaskTimeout"
        assert run.held_retry_at is not None

        RELEASE.set()  # the code no longer loops: taken again, the step finishes the run
        holds.retry(run.workflow_id)
        with override_settings(BELUGA_WORKFLOWS=fast):
            steps.advance(run.pk)
        run.refresh_from_db()
        assert (run.status, run.result) == ("completed", "released")
        assert run.held is None
    finally:
        RELEASE.set()
