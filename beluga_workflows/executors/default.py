"""The built-in executor: the engine on Django models + PostgreSQL, work on Celery."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import observability, registry
from ..conf import default_timeout
from ..engine import holds, notify, runs
from ..engine.store import latest_run, load_history
from ..errors import (
    ResultTimeoutError,
    WorkflowNotFoundError,
)
from ..history import HistoryEvent
from ..interpreter import RunInfo
from ..models import WorkflowRun
from ..options import Config, Signal, Status, WorkflowOptions
from ..replay import Replayer, run_query
from ..state import WorkflowState, run_states
from .base import DurableExecutor, WorkflowHandle, raise_for_outcome


class DefaultHandle(WorkflowHandle):
    def _run(self, run_id: Any = None) -> WorkflowRun:
        run = WorkflowRun.objects.filter(run_id=run_id or self._run_id).first()
        if run is None:  # deleted since (`workflow prune`)
            raise WorkflowNotFoundError(self._id)
        return run

    def status(self) -> Status:
        return Status(self._run().status)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run, following ``continue_as_new`` to the chain's last run.

        Woken by the closing transaction's notification (:mod:`..engine.notify`); without
        one it looks at the run every second.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        listener = notify.listener()
        run_id = self._run_id
        while True:
            watched = str(run_id)
            event = listener.watch(watched)
            try:
                run = self._run(run_id)
                status = Status(run.status)
                if status is Status.CONTINUED_AS_NEW:
                    successor = run.continuations.values_list("run_id", flat=True).first()
                    if successor is not None:
                        run_id = successor
                        continue
                elif status.is_closed:
                    raise_for_outcome(self._id, status, run.error)
                    return run.result
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ResultTimeoutError(self._id, timeout)
                event.wait(notify.FALLBACK if left is None else min(left, notify.FALLBACK))
            finally:
                listener.unwatch(watched, event)


class DefaultExecutor(DurableExecutor):
    name = "default"

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()

    def _start(self, fn: Callable[..., Any], options: WorkflowOptions) -> WorkflowHandle:
        name, reference = registry.workflow_name(fn), registry.reference(fn)
        timeout = options.timeout if options.timeout is not None else default_timeout()
        attributes = {"beluga.workflow.name": name, "beluga.executor": self.name}
        with observability.client_span("beluga.workflow.start", attributes) as span:
            run = runs.start(name, reference, options.id, options.input, timeout)  # type: ignore[arg-type]
            if span is not None:
                span.set_attribute("beluga.workflow.id", run.workflow_id)
                span.set_attribute("beluga.workflow.run_id", str(run.run_id))
        return DefaultHandle(run.workflow_id, str(run.run_id))

    def signal(self, workflow_id: str, signal: Signal) -> None:
        attributes = {
            "beluga.workflow.id": workflow_id,
            "beluga.signal.name": str(signal.name),
            "beluga.executor": self.name,
        }
        with observability.client_span("beluga.workflow.signal", attributes):
            runs.signal(workflow_id, signal)

    def cancel(self, workflow_id: str, sender: str | None = None) -> None:
        runs.cancel(workflow_id, sender)

    def retry(self, workflow_id: str) -> None:
        holds.retry(workflow_id)

    def query(self, workflow_id: str, query_type: str) -> Any:
        run = latest_run(workflow_id)
        if query_type == "status":
            return run.status
        if query_type == "result":
            return run.result
        if query_type == "history":
            return [event.to_json() for event in load_history(run.pk)]
        fn = registry.resolve(run.workflow_name, run.workflow_reference)
        replayer = Replayer(
            fn,
            RunInfo(run.workflow_id, str(run.run_id), run.workflow_name, run.input),
            horizon=run.decided_through,
        )
        replayer.run(load_history(run.pk))
        return run_query(replayer.machine, query_type)

    def get_handle(self, workflow_id: str) -> WorkflowHandle:
        run = latest_run(workflow_id)
        return DefaultHandle(run.workflow_id, str(run.run_id))

    def describe(self, workflow_id: str) -> WorkflowState:
        return run_states([latest_run(workflow_id)], children=True)[0]

    def history(self, workflow_id: str) -> list[HistoryEvent]:
        return load_history(latest_run(workflow_id).pk)

    def worker(self, concurrency: int = 4, **options: Any) -> Any:
        from ..worker import Worker

        return Worker(concurrency=concurrency, **options)
