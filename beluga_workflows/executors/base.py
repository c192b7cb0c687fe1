"""The executor interface: what every backend (built-in engine, Temporal) provides."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import (
    WorkflowCanceledError,
    WorkflowFailedError,
    WorkflowTimeoutError,
    error_from_json,
)
from ..history import HistoryEvent
from ..options import Signal, Status, WorkflowOptions
from ..state import WorkflowState


def raise_for_outcome(
    workflow_id: str, status: Status, error: dict[str, Any] | None, timeout: float | None = None
) -> None:
    """What ``handle.result()`` raises for a run that did not complete (same on every executor)."""
    if status is Status.FAILED:
        raise WorkflowFailedError(workflow_id, error_from_json(error or {}))
    if status is Status.CANCELED:
        raise WorkflowCanceledError(workflow_id)
    if status is Status.TIMED_OUT:
        raise WorkflowTimeoutError(workflow_id, (error or {}).get("timeout", timeout))


class WorkflowHandle(abc.ABC):
    """A started run: its ids, its status, and a way to wait for its result."""

    def __init__(self, workflow_id: str, run_id: str) -> None:
        self._id = workflow_id
        self._run_id = run_id

    @property
    def id(self) -> str:
        return self._id

    @property
    def run_id(self) -> str:
        return self._run_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self._id!r} run_id={self._run_id!r}>"

    @abc.abstractmethod
    def status(self) -> Status: ...

    @abc.abstractmethod
    def result(self, timeout: float | None = None) -> Any:
        """Block until the run ends; return its result or raise WorkflowFailedError,
        WorkflowCanceledError or WorkflowTimeoutError (ResultTimeoutError if ``timeout``
        seconds pass first)."""


class Worker(Protocol):
    def run(self) -> None: ...


class DurableExecutor(abc.ABC):
    """Starts, signals, queries and cancels runs. Obtain one with ``workflow.new(name)``."""

    name: str = ""

    def execute(
        self, fn: Callable[..., Any], options: WorkflowOptions | None = None
    ) -> WorkflowHandle:
        """Start a run of ``fn`` (a plain module-level function or a ``@workflow.defn`` one)."""
        return self._start(fn, options or WorkflowOptions())

    def start(self, workflow_name: str, options: WorkflowOptions | None = None) -> WorkflowHandle:
        """Start a workflow by its registered public name (what REST, admin and CLI use)."""
        from ..errors import WorkflowNameError
        from ..registry import resolve_public

        if not isinstance(workflow_name, str):
            raise WorkflowNameError(
                f"start() takes a workflow's public name, not {workflow_name!r}; "
                "start a function with execute(fn, options)."
            )
        return self._start(resolve_public(workflow_name), options or WorkflowOptions())

    @abc.abstractmethod
    def _start(self, fn: Callable[..., Any], options: WorkflowOptions) -> WorkflowHandle: ...

    @abc.abstractmethod
    def signal(self, workflow_id: str, signal: Signal) -> None: ...

    @abc.abstractmethod
    def query(self, workflow_id: str, query_type: str) -> Any: ...

    @abc.abstractmethod
    def cancel(self, workflow_id: str, sender: str | None = None) -> None: ...

    def retry(self, workflow_id: str) -> None:
        """Let a run held for a fix (``ON_WORKFLOW_ERROR = "hold"``) run its code again now,
        on whatever code the workers have; ``WorkflowNotHeldError`` if it is not held."""
        raise NotImplementedError(f"The {self.name!r} executor cannot retry held runs.")

    @abc.abstractmethod
    def get_handle(self, workflow_id: str) -> WorkflowHandle: ...

    @abc.abstractmethod
    def describe(self, workflow_id: str) -> WorkflowState: ...

    @abc.abstractmethod
    def history(self, workflow_id: str) -> list[HistoryEvent]: ...

    @abc.abstractmethod
    def worker(self, concurrency: int = 4, **options: Any) -> Worker:
        """What ``manage.py runworker`` runs for this executor."""
