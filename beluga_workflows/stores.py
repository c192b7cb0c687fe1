"""``WorkflowStore``: save, load, list and delete run state, as in the Beluga seed.

The Django store reads and writes the engine's own tables (``delete`` is retention: it removes
a finished run with its history). The in-memory store is for tests and scripts.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import replace

from django.db import transaction

from .errors import WorkflowError, WorkflowNotFoundError
from .models import WorkflowRun
from .options import Status
from .state import WorkflowState


class WorkflowStore(abc.ABC):
    @abc.abstractmethod
    def save(self, state: WorkflowState) -> None: ...

    @abc.abstractmethod
    def load(self, workflow_id: str) -> WorkflowState:
        """The running run with this id, else the latest; WorkflowNotFoundError if none."""

    @abc.abstractmethod
    def list(
        self, status: Status | str | None = None, limit: int | None = None
    ) -> list[WorkflowState]:
        """Newest first."""

    @abc.abstractmethod
    def delete(self, workflow_id: str) -> None: ...


class InMemoryWorkflowStore(WorkflowStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, WorkflowState] = {}

    def save(self, state: WorkflowState) -> None:
        with self._lock:
            self._states[state.workflow_id] = replace(state)

    def load(self, workflow_id: str) -> WorkflowState:
        with self._lock:
            state = self._states.get(workflow_id)
        if state is None:
            raise WorkflowNotFoundError(workflow_id)
        return state

    def list(
        self, status: Status | str | None = None, limit: int | None = None
    ) -> list[WorkflowState]:
        with self._lock:
            states = list(self._states.values())[::-1]
        if status is not None:
            states = [s for s in states if s.status == Status(status)]
        return states[:limit] if limit is not None else states

    def delete(self, workflow_id: str) -> None:
        with self._lock:
            self._states.pop(workflow_id, None)


class DjangoWorkflowStore(WorkflowStore):
    def save(self, state: WorkflowState) -> None:
        """Update the summary of an existing run (its history is the engine's to write)."""
        with transaction.atomic():
            run = WorkflowRun.objects.select_for_update().filter(run_id=state.run_id).first()
            if run is None:
                raise WorkflowNotFoundError(state.workflow_id)
            run.status = state.status.value
            run.result = state.result
            run.error = state.error
            run.save(update_fields=["status", "result", "error", "updated_at"])

    def load(self, workflow_id: str) -> WorkflowState:
        from .engine.store import latest_run
        from .state import run_state

        return run_state(latest_run(workflow_id))

    def list(
        self, status: Status | str | None = None, limit: int | None = None
    ) -> list[WorkflowState]:
        from .state import run_state

        runs = WorkflowRun.objects.order_by("-created_at", "-id")
        if status is not None:
            runs = runs.filter(status=Status(status).value)
        if limit is not None:
            runs = runs[:limit]
        return [run_state(run) for run in runs]

    def delete(self, workflow_id: str) -> None:
        """Delete finished runs with this id and their history; a running run is refused."""
        runs = WorkflowRun.objects.filter(workflow_id=workflow_id)
        if not runs.exists():
            raise WorkflowNotFoundError(workflow_id)
        if runs.filter(status=Status.RUNNING.value).exists():
            raise WorkflowError(
                f"Workflow {workflow_id!r} is still running; cancel it before deleting it."
            )
        runs.delete()
