"""Calling a workflow function on a :class:`~beluga_workflows.interpreter.Machine`.

:func:`call_workflow` runs the function with a fresh context until it returns, fails or blocks
and turns that into a :class:`~beluga_workflows.interpreter.Decision`; :class:`Replayer` does
so from the start of the history (custom queries, and the replay tests); :func:`run_query`
answers a query from a machine's handlers. It sits above both the machine and the context the
function receives, which import nothing from here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from . import determinism
from .context import AsyncWorkflowContext, WorkflowContext
from .errors import QueryError, WorkflowError
from .history import HistoryEvent
from .interpreter import (
    Abort,
    ContinueAsNew,
    ContinueAsNewRequest,
    Decision,
    Machine,
    PatchPolicy,
    RunInfo,
    Suspend,
)
from .serialization import ensure_json


def _invoke(fn: Callable[..., Any], ctx: WorkflowContext, input: Any) -> Any:
    """Call the workflow function; an ``async def`` one is driven without an event loop."""
    if not inspect.iscoroutinefunction(fn):
        return fn(ctx, input)
    coro = fn(AsyncWorkflowContext(ctx), input)
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        return stop.value
    except RuntimeError as exc:
        if "no running event loop" not in str(exc):
            raise
        raise TypeError(_ASYNC_ONLY.format(ctx.workflow_id, "an asyncio call")) from exc
    coro.close()
    raise TypeError(_ASYNC_ONLY.format(ctx.workflow_id, repr(awaited)))


_ASYNC_ONLY = (
    "Workflow {!r} awaited {}: workflow code may await only workflow futures and ctx "
    "methods (asyncio is not available in workflows; use ctx.sleep, ctx.gather and "
    "ctx.wait_any, and put I/O in activities)."
)


def call_workflow(fn: Callable[..., Any], machine: Machine) -> Decision:
    """Run ``fn`` on ``machine`` until it returns, fails, or blocks (via Suspend).

    The function runs under the determinism guard; a violation fails the run even when the
    workflow code caught it.
    """
    guard = determinism.Guard()
    decision = _call(fn, machine, guard)
    if guard.violation is not None:
        return Decision(done=True, error=guard.violation)
    return decision


def _call(fn: Callable[..., Any], machine: Machine, guard: determinism.Guard) -> Decision:
    ctx = WorkflowContext(machine)
    try:
        try:
            with guard:
                result = _invoke(fn, ctx, machine.info.input)
        except ContinueAsNew as request:
            machine.finish_check()
            carried = ContinueAsNewRequest(request.input, machine.unclaimed_signals())
            return machine.decision(done=True, continue_as_new=carried)
        machine.finish_check()
        ensure_json(result, f"Result of workflow {machine.info.workflow_name!r}")
    except Suspend:
        if machine.failure is not None:
            return Decision(done=True, error=machine.failure)
        return machine.decision()
    except Abort as abort:
        if machine.failure is not None and machine.failure.__traceback__ is None:
            # Where the workflow's code asked for the mismatching step: its traceback.
            machine.failure.__traceback__ = abort.__traceback__
        return Decision(done=True, error=machine.failure)
    except Exception as exc:  # the user's workflow failed, or was canceled
        if machine.failure is not None:
            return Decision(done=True, error=machine.failure)
        return machine.decision(done=True, error=determinism.translate(exc) or exc)
    if machine.failure is not None:
        return Decision(done=True, error=machine.failure)
    return machine.decision(done=True, result=result)


class Replayer:
    """Runs the function from the start on every pass (what the Temporal executor uses)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        info: RunInfo,
        horizon: int | None = None,
        patches: PatchPolicy | None = None,
    ) -> None:
        self.fn = fn
        self.info = info
        self.horizon = horizon
        self.patches = patches
        self.machine: Machine | None = None

    def run(self, events: Sequence[HistoryEvent]) -> Decision:
        def block() -> None:
            assert self.machine is not None
            self.machine.stopped = True
            raise Suspend()

        self.machine = Machine(self.info, events, block, self.horizon, self.patches)
        return call_workflow(self.fn, self.machine)

    def query(self, name: str) -> Any:
        return run_query(self.machine, name)


def run_query(machine: Machine | None, name: str) -> Any:
    handlers = machine.query_handlers if machine is not None else {}
    handler = handlers.get(name)
    if handler is None:
        known = ", ".join(["status", "result", "history", *sorted(handlers)])
        raise QueryError(f"No query handler named {name!r}; this run answers: {known}.")
    try:
        return ensure_json(handler(), f"Result of query {name!r}")
    except WorkflowError:
        raise
    except Exception as exc:
        raise QueryError(f"Query handler {name!r} raised {type(exc).__name__}: {exc}") from exc
