"""What a workflow function gets: ``ctx``, its only way to act on the world.

Every method is deterministic and durable: steps (activities, timers, signal waits, child
workflows) are numbered in the order the function takes them and checked against the history
on replay; waits go through the interpreter's :class:`~beluga_workflows.interpreter.Machine`,
which settles every race by history order. ``async def`` workflows get
:class:`AsyncWorkflowContext`, whose waiting methods are awaitable.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, NoReturn

from . import registry
from .futures import (
    ActivityFuture,
    ChildSignalFuture,
    ChildWorkflowFuture,
    Future,
    Group,
    SignalFuture,
    TimerFuture,
    first_settled,
)
from .history import ScheduleActivity, SignalChild, StartChild, StartTimer, WaitSignal
from .interpreter import ContinueAsNew, Machine
from .options import (
    Duration,
    ParentClosePolicy,
    Signal,
    WorkflowOptions,
    build_activity_options,
    to_timedelta,
)
from .serialization import ensure_json


class WorkflowContext:
    """What a workflow function gets: deterministic, durable operations only."""

    def __init__(self, machine: Machine) -> None:
        self._m = machine
        machine.context = self

    @property
    def workflow_id(self) -> str:
        return self._m.info.workflow_id

    @property
    def run_id(self) -> str:
        return self._m.info.run_id

    @property
    def is_replaying(self) -> bool:
        """True while the function re-runs code an earlier pass of this run already ran."""
        return self._m.is_replaying

    # -- activities ---------------------------------------------------------------------------
    def start_activity(
        self, fn: Callable[..., Any], input: Any = None, *options: Any
    ) -> ActivityFuture:
        """Schedule ``fn(activity_ctx, input)`` and return at once; ``.result()`` waits."""
        ensure_json(input, f"Input of activity {getattr(fn, '__name__', fn)!r}")
        name, reference = registry.activity_name(fn), registry.reference(fn)
        registry.check_activity_name(name, reference)
        command = ScheduleActivity(
            step=self._m.take_step(),
            name=name,
            reference=reference,
            input=input,
            options=build_activity_options(options),
        )
        return self._m.add(ActivityFuture(self._m, command))  # type: ignore[return-value]

    def execute_activity(self, fn: Callable[..., Any], input: Any = None, *options: Any) -> Any:
        """Run ``fn(activity_ctx, input)`` once, durably; return its JSON result."""
        return self.start_activity(fn, input, *options).result()

    # -- timers -------------------------------------------------------------------------------
    def timer(self, duration: Duration, name: str = "timer") -> TimerFuture:
        """A durable timer as a future (for races: ``ctx.wait_any(approval, ctx.timer(...))``)."""
        delta = to_timedelta(duration, "timer duration") or timedelta(0)
        command = StartTimer(step=self._m.take_step(), duration=delta, name=name)
        return self._m.add(TimerFuture(self._m, command))  # type: ignore[return-value]

    def sleep(self, duration: Duration) -> None:
        """A durable timer: survives restarts and is not re-slept on replay."""
        delta = to_timedelta(duration, "sleep duration") or timedelta(0)
        self.timer(delta, name="sleep").result()

    # -- signals ------------------------------------------------------------------------------
    def signal_future(self, name: str, timeout: Duration | None = None) -> SignalFuture:
        """A future for the next ``name`` signal that no earlier wait took (it may have
        arrived already). With ``timeout``, ``result()`` raises ``SignalTimeoutError`` when
        none comes in time. ``.cancel()`` gives the claim up."""
        if not isinstance(name, str) or not name:
            raise ValueError("A signal wait needs a non-empty signal name.")
        delta = to_timedelta(timeout, "signal wait timeout")
        command = WaitSignal(step=self._m.take_step(), name=name, timeout=delta)
        future = SignalFuture(self._m, command)
        self._m.add(future)
        self._m.claim_signal(future)
        return future

    def wait_for_signal(self, name: str, timeout: Duration | None = None) -> Signal:
        """Wait for the next ``name`` signal; raise ``SignalTimeoutError`` after ``timeout``."""
        return self.signal_future(name, timeout).result()  # type: ignore[no-any-return]

    def receive_signal(self, name: str) -> Iterator[Any]:
        """Payloads of ``name`` signals, in arrival order; each item is one durable wait."""
        while True:
            yield self.wait_for_signal(name).payload

    # -- waiting for several ------------------------------------------------------------------
    def _own(self, futures: tuple[Future, ...], what: str) -> list[Future]:
        if not futures:
            raise ValueError(f"{what} needs at least one future.")
        for future in futures:
            if not isinstance(future, Future) or future._m is not self._m:
                raise TypeError(f"{what} takes futures of this workflow run, not {future!r}.")
        return list(futures)

    def gather(self, *futures: Future) -> list[Any]:
        """Wait for all; return their results in order. If any failed, raise the failure that
        came first in the history — after all have finished, so no outcome is lost."""
        pending = self._own(futures, "gather")
        group = Group(pending)
        self._m.wait(group.all_done, group.waits)
        failed = first_settled([f for f in pending if f.failed])
        if failed is not None:
            failed.outcome()
        return [f.outcome() for f in pending]

    def wait_any(self, *futures: Future, timeout: Duration | None = None) -> Future | None:
        """The first of ``futures`` to finish (history order settles ties), or None when
        ``timeout`` passes first. The others keep running: wait for them later if needed."""
        candidates = self._own(futures, "wait_any")
        first = first_settled(candidates)
        if first is not None:
            return first
        delta = to_timedelta(timeout, "wait_any timeout")
        timer = self.timer(delta, name="timeout") if delta is not None else None
        watched = candidates + ([timer] if timer is not None else [])
        group = Group(watched)
        try:
            self._m.wait(lambda: group.any_done, group.waits)
        finally:
            group.close()
        first = first_settled(watched)
        if timer is not None and first is not timer:
            timer.cancel()
        return None if first is timer else first

    # -- child workflows ----------------------------------------------------------------------
    def start_child_workflow(
        self, workflow: Callable[..., Any] | str, options: WorkflowOptions | None = None
    ) -> ChildWorkflowFuture:
        """Start a run of its own, linked to this one; returns at once. Cancelling this run
        (or its closing) cancels the child unless ``parent_close_policy="abandon"``."""
        options = options or WorkflowOptions()
        fn = registry.resolve_public(workflow) if isinstance(workflow, str) else workflow
        name, reference = registry.workflow_name(fn), registry.reference(fn)
        ensure_json(options.input, f"Input of child workflow {name!r}")
        step = self._m.take_step()
        child_id = options.id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.run_id}/{step}"))
        if child_id == self.workflow_id:
            raise ValueError("A child workflow needs an id of its own, not its parent's.")
        command = StartChild(
            step=step,
            name=name,
            reference=reference,
            workflow_id=child_id,
            input=options.input,
            timeout=options.timeout,  # type: ignore[arg-type]
            parent_close_policy=ParentClosePolicy(options.parent_close_policy),
        )
        return self._m.add(ChildWorkflowFuture(self._m, command))  # type: ignore[return-value]

    def execute_child_workflow(
        self, workflow: Callable[..., Any] | str, options: WorkflowOptions | None = None
    ) -> Any:
        """Start a child workflow and wait for its result."""
        return self.start_child_workflow(workflow, options).result()

    def signal_child(self, child: ChildWorkflowFuture, signal: Signal) -> ChildSignalFuture:
        if not isinstance(signal.name, str) or not signal.name:
            raise ValueError("A signal needs a non-empty name.")
        ensure_json(signal.payload, f"Payload of signal {signal.name!r}")
        command = SignalChild(
            step=self._m.take_step(),
            name=signal.name,
            child_step=child.step,
            child_id=child.id,
            payload=signal.payload,
            sender=signal.sender or f"workflow:{self.workflow_id}",
        )
        return self._m.add(ChildSignalFuture(self._m, command))  # type: ignore[return-value]

    # -- versioning and continuation ----------------------------------------------------------
    def patched(self, change_id: str) -> bool:
        """Versioning: True where the run takes the code added under ``change_id``.

        New runs, and runs that reach this point for the first time after the change was
        deployed, take it (and record a marker); a run that passed this point before the
        change replays without it.
        """
        return self._m.patched(_change_id(change_id))

    def deprecate_patch(self, change_id: str) -> None:
        """The change is now the only path: keep replaying runs recorded with or without it."""
        self._m.patched(_change_id(change_id), deprecated=True)

    def continue_as_new(self, input: Any = None) -> NoReturn:
        """Close this run as ``continued_as_new`` and start a fresh one with the same id, an
        empty history and ``input``. Signals not taken yet are handed to the new run."""
        ensure_json(input, f"Input of workflow {self._m.info.workflow_name!r}")
        raise ContinueAsNew(input)

    # -- the rest -----------------------------------------------------------------------------
    def set_query_handler(self, name: str, fn: Callable[[], Any]) -> None:
        if name in ("status", "result", "history"):
            raise ValueError(f"{name!r} is a built-in query and cannot be replaced.")
        self._m.query_handlers[name] = fn

    def now(self) -> datetime:
        """Workflow time: the timestamp of the latest history event replay has reached."""
        return self._m.current_time

    def random(self) -> float:
        return self._m.rng.random()

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._m.rng.getrandbits(128), version=4)


def _change_id(change_id: str) -> str:
    if not isinstance(change_id, str) or not change_id:
        raise ValueError("A change id must be a non-empty string.")
    return change_id


class AsyncWorkflowContext:
    """``ctx`` of an ``async def`` workflow: the waiting methods are awaitable; the rest are
    the same as :class:`WorkflowContext`'s. Awaits complete without an event loop."""

    def __init__(self, ctx: WorkflowContext) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    async def execute_activity(
        self, fn: Callable[..., Any], input: Any = None, *options: Any
    ) -> Any:
        return self._ctx.execute_activity(fn, input, *options)

    async def sleep(self, duration: Duration) -> None:
        self._ctx.sleep(duration)

    async def wait_for_signal(self, name: str, timeout: Duration | None = None) -> Signal:
        return self._ctx.wait_for_signal(name, timeout)

    async def receive_signal(self, name: str) -> AsyncIterator[Any]:
        while True:
            yield self._ctx.wait_for_signal(name).payload

    async def gather(self, *futures: Future) -> list[Any]:
        return self._ctx.gather(*futures)

    async def wait_any(self, *futures: Future, timeout: Duration | None = None) -> Future | None:
        return self._ctx.wait_any(*futures, timeout=timeout)

    async def execute_child_workflow(
        self, workflow: Callable[..., Any] | str, options: WorkflowOptions | None = None
    ) -> Any:
        return self._ctx.execute_child_workflow(workflow, options)
