"""The public API: ``from beluga_workflows import workflow``.

Mirrors the Beluga ``workflow`` package: write workflows and activities as plain functions,
get an executor with ``workflow.new("default")`` (or ``"temporal"``), and start, signal, query
and cancel runs through it. Importing this module does not need Django settings; the stores
load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .activity import ActivityContext
from .context import AsyncWorkflowContext, WorkflowContext
from .errors import (
    ActivityError,
    ActivityTimeoutError,
    ApplicationError,
    DeterminismViolationError,
    ExecutorNotFoundError,
    InvalidPayloadError,
    MissingDependencyError,
    NonDeterminismError,
    PayloadTooLargeError,
    QueryError,
    ResultTimeoutError,
    SignalTimeoutError,
    WorkflowAlreadyStartedError,
    WorkflowCanceledError,
    WorkflowClosedError,
    WorkflowError,
    WorkflowFailedError,
    WorkflowLimitError,
    WorkflowNameError,
    WorkflowNotFoundError,
    WorkflowNotHeldError,
    WorkflowTimeoutError,
)
from .executors import get_executor, list_executors, new, register
from .executors.base import DurableExecutor, WorkflowHandle
from .futures import (
    ActivityFuture,
    ChildSignalFuture,
    ChildWorkflowFuture,
    Future,
    SignalFuture,
    TimerFuture,
)
from .history import EventType, HistoryEvent
from .options import (
    ActivityOptions,
    Config,
    ParentClosePolicy,
    RetryPolicy,
    Signal,
    Status,
    WorkflowOptions,
    with_activity_heartbeat_timeout,
    with_activity_queue,
    with_activity_retry,
    with_activity_schedule_to_close_timeout,
    with_activity_schedule_to_start_timeout,
    with_activity_timeout,
)
from .registry import activity, defn
from .state import WorkflowState

if TYPE_CHECKING:  # loaded lazily below: they need Django models
    from .executors.temporal.store import TemporalWorkflowStore
    from .stores import DjangoWorkflowStore, InMemoryWorkflowStore, WorkflowStore

#: ``workflow.list()`` -> the registered executor names, as in the Beluga registry.
list = list_executors  # noqa: A001

__all__ = [
    "ActivityContext",
    "ActivityError",
    "ActivityFuture",
    "AsyncWorkflowContext",
    "ChildSignalFuture",
    "ChildWorkflowFuture",
    "Future",
    "ParentClosePolicy",
    "SignalFuture",
    "TimerFuture",
    "ActivityOptions",
    "ActivityTimeoutError",
    "ApplicationError",
    "Config",
    "DeterminismViolationError",
    "DjangoWorkflowStore",
    "DurableExecutor",
    "EventType",
    "ExecutorNotFoundError",
    "HistoryEvent",
    "InMemoryWorkflowStore",
    "InvalidPayloadError",
    "MissingDependencyError",
    "NonDeterminismError",
    "PayloadTooLargeError",
    "QueryError",
    "ResultTimeoutError",
    "RetryPolicy",
    "Signal",
    "SignalTimeoutError",
    "TemporalWorkflowStore",
    "Status",
    "WorkflowAlreadyStartedError",
    "WorkflowCanceledError",
    "WorkflowClosedError",
    "WorkflowContext",
    "WorkflowError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNameError",
    "WorkflowNotFoundError",
    "WorkflowLimitError",
    "WorkflowNotHeldError",
    "WorkflowOptions",
    "WorkflowState",
    "WorkflowStore",
    "WorkflowTimeoutError",
    "activity",
    "defn",
    "get_executor",
    "list",
    "new",
    "register",
    "with_activity_heartbeat_timeout",
    "with_activity_queue",
    "with_activity_retry",
    "with_activity_schedule_to_close_timeout",
    "with_activity_schedule_to_start_timeout",
    "with_activity_timeout",
]

_LAZY = {"WorkflowStore", "DjangoWorkflowStore", "InMemoryWorkflowStore"}
_TEMPORAL_LAZY = {"TemporalWorkflowStore"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import stores

        return getattr(stores, name)
    if name in _TEMPORAL_LAZY:
        from .executors.temporal import store

        return getattr(store, name)
    raise AttributeError(f"module 'beluga_workflows.workflow' has no attribute {name!r}")
