"""Futures: the steps a workflow has started and may wait for later.

``ctx.start_activity`` returns an :class:`ActivityFuture` at once; ``ctx.timer``,
``ctx.signal_future`` and ``ctx.start_child_workflow`` likewise return futures, so a workflow
can have several steps outstanding and wait for all of them (``ctx.gather``) or for the first
(``ctx.wait_any``). A future is *settled* by one event of the history — its activity's
completion, its timer firing, the signal it took, its child's close — when replay reads that
event. Every future records the sequence number of that event, so "which finished first" is
decided by history order alone and any worker replaying the history gets the same answer.

Futures only read the history; :class:`~beluga_workflows.interpreter.Machine` decides when
they are emitted as commands and which event reaches which future.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import (
    ActivityError,
    SignalTimeoutError,
    WorkflowAlreadyStartedError,
    WorkflowCanceledError,
    WorkflowFailedError,
    WorkflowTimeoutError,
    error_from_json,
)
from .history import (
    EventType,
    HistoryEvent,
    ScheduleActivity,
    SignalChild,
    StartChild,
    StartTimer,
    Wait,
    WaitSignal,
)
from .options import Signal

if TYPE_CHECKING:
    from .interpreter import Machine

E = EventType


class Future:
    """A step that finishes later. ``result()`` waits for it (durably); ``done()`` does not."""

    kind: ClassVar[str] = ""

    def __init__(self, machine: Machine, command: Any) -> None:
        self._m = machine
        self.command = command
        self.step: int = command.step
        self.name: str = command.name
        self.emitted = False  # recorded in the history, or handed to the executor this pass
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        #: Sequence number of the event that settled this future (its place in history).
        self.settled_at = 0
        #: Called with this future when it settles (a :class:`Group` waiting on it).
        self._listeners: list[Callable[[Future], None]] = []

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"<{type(self).__name__} step={self.step} {self.name!r} {state}>"

    def done(self) -> bool:
        """Whether the outcome is known at this point of the workflow (never blocks)."""
        return self._done

    def result(self) -> Any:
        """Wait for the outcome; return it, or raise the step's failure."""
        self._m.wait(lambda: self._done, lambda: [self.wait])
        return self.outcome()

    def __await__(self) -> Generator[Any, None, Any]:
        # For ``async def`` workflows: the wait happens inside result(), synchronously, so
        # awaiting a future never hands control to an event loop.
        return self.result()
        yield  # pragma: no cover - makes this a generator

    def outcome(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    @property
    def failed(self) -> bool:
        return self._done and self._error is not None

    @property
    def wait(self) -> Wait:
        return Wait(self.kind, self.name, self.step)

    # -- the machine's side ----------------------------------------------------------------
    def settle(self, sequence: int, value: Any = None, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done, self._value, self._error = True, value, error
        self.settled_at = sequence
        self._m.settled(self)
        for listener in self._listeners:
            listener(self)

    def apply(self, event: HistoryEvent) -> None:
        """An event of this future's step was read (the command events are not passed)."""

    def cancel_on_workflow_cancel(self) -> bool:
        """Whether a cancel request of the workflow settles this future as canceled."""
        return True


class ActivityFuture(Future):
    """Returned by ``ctx.start_activity``; ``result()`` raises :class:`ActivityError`."""

    kind = "activity"
    command: ScheduleActivity

    def apply(self, event: HistoryEvent) -> None:
        if event.type is E.ACTIVITY_COMPLETED:
            self.settle(event.sequence, event.data.get("result"))
        elif event.type is E.ACTIVITY_FAILED:
            error = event.data.get("error") or {}
            failure = ActivityError(
                self.name,
                event.attempt,
                error.get("type", "Error"),
                error.get("message", ""),
                self.step,
            )
            self.settle(event.sequence, error=failure)


class TimerFuture(Future):
    """Returned by ``ctx.timer``: done when the durable timer fires."""

    kind = "timer"
    command: StartTimer

    def apply(self, event: HistoryEvent) -> None:
        if event.type is E.TIMER_FIRED:
            self.settle(event.sequence)

    def cancel(self) -> None:
        """Stop the timer; a later ``result()`` raises ``WorkflowCanceledError``."""
        if not self._done:
            self._m.cancel_timer(self)
            self.settle(self._m.pos, error=WorkflowCanceledError(self._m.info.workflow_id))


class SignalFuture(Future):
    """Returned by ``ctx.signal_future``: takes the next signal of its name that no earlier
    future took. ``result()`` returns the :class:`Signal`, or raises ``SignalTimeoutError``
    when the future has a timeout that passes first."""

    kind = "signal"
    command: WaitSignal

    def apply(self, event: HistoryEvent) -> None:
        if event.type is E.TIMER_FIRED:  # this wait's timeout
            timeout = self.command.timeout
            seconds = timeout.total_seconds() if timeout is not None else None
            self.settle(event.sequence, error=SignalTimeoutError(self.name, seconds))

    def deliver(self, event: HistoryEvent) -> None:
        data = event.data
        self.settle(event.sequence, Signal(self.name, data.get("payload"), data.get("sender")))
        if self.emitted and self.command.timeout is not None:
            self._m.cancel_signal_timeout(self)

    def cancel(self) -> None:
        """Give up the claim: the next signal of this name goes to a later wait instead."""
        if not self._done:
            if self.emitted and self.command.timeout is not None:
                self._m.cancel_signal_timeout(self)
            self.settle(self._m.pos, error=WorkflowCanceledError(self._m.info.workflow_id))


class ChildWorkflowFuture(Future):
    """Returned by ``ctx.start_child_workflow``. ``id`` is the child's workflow id;
    ``result()`` returns its result or raises :class:`WorkflowFailedError` with the cause
    (its failure, ``WorkflowCanceledError`` or ``WorkflowTimeoutError``)."""

    kind = "child"
    command: StartChild

    def __init__(self, machine: Machine, command: StartChild) -> None:
        super().__init__(machine, command)
        #: The child's run id once it has started (None before, and on replay until then).
        self.run_id: str | None = None

    @property
    def id(self) -> str:
        return self.command.workflow_id

    def signal(self, signal: Signal | str, payload: Any = None) -> ChildSignalFuture:
        """Send a signal to the child; the future is done once it was delivered."""
        if isinstance(signal, str):
            signal = Signal(signal, payload)
        return self._m.context.signal_child(self, signal)

    def apply(self, event: HistoryEvent) -> None:
        data = event.data
        if event.type is E.CHILD_WORKFLOW_STARTED:
            self.run_id = data.get("run_id")
        elif event.type is E.CHILD_WORKFLOW_START_FAILED:
            self.settle(event.sequence, error=WorkflowAlreadyStartedError(self.id))
        elif event.type is E.CHILD_WORKFLOW_COMPLETED:
            self.settle(event.sequence, data.get("result"))
        elif event.type is E.CHILD_WORKFLOW_FAILED:
            status = data.get("status")
            cause = (
                WorkflowCanceledError(self.id)
                if status == "canceled"
                else WorkflowTimeoutError(self.id, (data.get("error") or {}).get("timeout"))
                if status == "timed_out"
                else error_from_json(data.get("error") or {})
            )
            self.settle(event.sequence, error=WorkflowFailedError(self.id, cause))

    def cancel_on_workflow_cancel(self) -> bool:
        # The child is canceled by its parent close policy; this future settles when it closes.
        return False


class ChildSignalFuture(Future):
    """Returned by ``ChildWorkflowFuture.signal``: done once the child has the signal."""

    kind = "child-signal"
    command: SignalChild

    def apply(self, event: HistoryEvent) -> None:
        if event.type is E.CHILD_SIGNAL_SENT:
            self.settle(event.sequence)
        elif event.type is E.CHILD_SIGNAL_FAILED:
            self.settle(event.sequence, error=error_from_json(event.data.get("error") or {}))

    def cancel_on_workflow_cancel(self) -> bool:
        return False


def first_settled(futures: list[Future]) -> Future | None:
    """The future whose settling event comes first in the history (argument order on ties)."""
    done = [f for f in futures if f.done()]
    return min(done, key=lambda f: f.settled_at) if done else None


#: Kinds whose waits are listed one by one: each has its own deadline (a timer's, a signal
#: wait's timeout) that the run's ``waiting_deadline`` is taken from.
_TIMED = ("signal", "timer")


class Group:
    """Futures waited on together (``gather``, ``wait_any``), kept up to date as each one
    settles, so that reading one event costs O(1) however many are outstanding: a
    10,000-wide fan-out must not rescan 10,000 futures after every completion."""

    def __init__(self, futures: Sequence[Future]) -> None:
        self._left: dict[int, Future] = {}
        self._timed: dict[int, Future] = {}
        self._counts: dict[tuple[str, str], list[int]] = {}  # (kind, name) -> [count, a step]
        self._order: list[Any] = []  # timed futures' ids and (kind, name) groups, in order
        #: Whether any of the futures is done (wait_any's condition).
        self.any_done = False
        for future in futures:
            if future.done():
                self.any_done = True
                continue
            key = id(future)
            if key in self._left:
                continue
            self._left[key] = future
            if future.kind in _TIMED:
                self._timed[key] = future
                self._order.append(key)
            else:
                group = (future.kind, future.name)
                if group not in self._counts:
                    self._counts[group] = [0, future.step]
                    self._order.append(group)
                self._counts[group][0] += 1
            future._listeners.append(self._settled)

    def _settled(self, future: Future) -> None:
        if self._left.pop(id(future), None) is None:
            return
        self.any_done = True
        if self._timed.pop(id(future), None) is None:
            self._counts[(future.kind, future.name)][0] -= 1

    def all_done(self) -> bool:
        return not self._left

    def waits(self) -> list[Wait]:
        """What is still outstanding: one wait per kind and name (with its count), and each
        timed wait on its own."""
        waits = []
        for key in self._order:
            if isinstance(key, tuple):
                count, step = self._counts[key]
                if count:
                    waits.append(Wait(key[0], key[1], step, count))
            elif key in self._timed:
                waits.append(self._timed[key].wait)
        return waits

    def close(self) -> None:
        """Stop listening to the futures still outstanding (the wait is over)."""
        for future in self._left.values():
            if self._settled in future._listeners:
                future._listeners.remove(self._settled)
        self._left.clear()
        self._timed.clear()
