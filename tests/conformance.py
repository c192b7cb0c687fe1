"""What the `engine` fixture (in `conftest.py`) gives a conformance test: one executor and
its `runworker`.

Each test that takes `engine` runs once on the built-in engine and once on Temporal, each time
against a real `manage.py runworker` subprocess (Celery + PostgreSQL, or a Temporal worker on
the session's Temporal dev server).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beluga_workflows import workflow
from tests import harness
from tests.harness import wait_until


@dataclass
class Engine:
    kind: str
    executor: workflow.DurableExecutor
    worker: harness.WorkerProcess

    def start(self, fn: Any, input: Any = None, **options: Any) -> workflow.WorkflowHandle:
        return self.executor.execute(fn, workflow.WorkflowOptions(input=input, **options))

    def wait_for(self, workflow_id: str, waiting_for: str, timeout: float = 30) -> None:
        wait_until(
            lambda: self.executor.describe(workflow_id).waiting_for == waiting_for,
            timeout,
            message=f"{workflow_id} waiting for {waiting_for!r}",
        )

    def event_types(self, workflow_id: str) -> list[str]:
        return [event.type.value for event in self.executor.history(workflow_id)]
