"""`TemporalWorkflowStore.save` is refused, says why, and changes nothing.

On Temporal a run's state is what its Temporal history says, and only the run appends to it;
the error must send the caller to the executor's signal/cancel instead.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from beluga_workflows import workflow
from beluga_workflows.executors.temporal import TemporalWorkflowStore
from beluga_workflows.models import WorkflowRun
from tests import workflows_conformance as wf
from tests.harness import wait_until

pytestmark = [pytest.mark.temporal, pytest.mark.django_db(transaction=True)]


def test_save_is_refused_and_the_run_goes_on_as_temporal_says(
    use_temporal: Any, worker_factory: Any
) -> None:
    worker_factory()
    executor = workflow.new("temporal")
    store = TemporalWorkflowStore(executor)
    handle = executor.execute(wf.waits_forever, workflow.WorkflowOptions(id="store-save"))
    wait_until(lambda: executor.describe("store-save").waiting_for == "signal:finish", 30)
    state = store.load("store-save")

    forged = replace(state, status=workflow.Status.COMPLETED, result="forged")
    with pytest.raises(workflow.WorkflowError) as refused:
        store.save(forged)
    message = str(refused.value)
    assert "cannot save the state of 'store-save'" in message
    assert "Temporal history" in message  # why
    assert "signal() or cancel()" in message  # what to do instead

    # Nothing changed, in Temporal or in the mirror: the run waits, then ends as its code says.
    assert store.load("store-save").status is workflow.Status.RUNNING
    wait_until(
        lambda: WorkflowRun.objects.filter(workflow_id="store-save", status="running").exists(),
        30,
        message="mirrored row",
    )
    executor.signal("store-save", workflow.Signal("finish", "real"))
    assert handle.result(timeout=30) == "real"
    assert store.load("store-save").result == "real"
