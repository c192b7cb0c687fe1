"""The replay interpreter: runs a workflow function against its history.

This is the only place that decides what a workflow does; every executor (the built-in
engine, the Temporal one) drives it. Given the events recorded so far it:

* returns the recorded outcome of each step the function has already taken (activity
  results, fired timers, received signals, children's results) — a finished activity is
  never run again;
* checks that each step still asks for what the history recorded, and fails the run with
  :class:`NonDeterminismError` otherwise;
* reports the steps the history does not hold yet as :class:`Command` objects, and stops
  where the function waits for something the history cannot answer.

A workflow may start several steps and wait for them later (:mod:`.futures`). The machine
reads the history with a cursor, one event at a time, only while the function waits, and
checks the wait's condition after every event: the event that settles a future is applied
the moment it is read, and a wait ends at the first event that satisfies it. Every race is
therefore settled by history order alone — ``wait_any`` returns the future whose event comes
first, a signal wait is won by the signal or by its timer firing, whichever was recorded
first — so a replay on any machine reaches the same answer as the live run did. Signals that
arrive before anyone waits for them are kept in arrival order for the next wait of their name;
a cancel request settles the pending activities, timers and signal waits as canceled and
raises ``WorkflowCanceledError`` from the wait in progress.

Commands are emitted lazily, in the order the function created them, when it blocks (or
finishes): a signal wait that the history satisfies before the function blocks leaves no
command, exactly as before futures existed, so older histories replay unchanged.

Two ways to stop at an unanswered wait share this code (:mod:`.replay` calls the function):
:class:`~beluga_workflows.replay.Replayer` raises :class:`Suspend` (a ``BaseException``, so
user ``except Exception`` cannot swallow it) and re-runs from the start next time;
:mod:`~beluga_workflows.continuation` parks the function (in a thread on the built-in engine,
in a greenlet on Temporal) and resumes it when new events arrive, so a long run costs O(1) per
step.
"""

from __future__ import annotations

import random as _random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import limits
from .errors import NonDeterminismError, WorkflowCanceledError
from .futures import Future, SignalFuture, TimerFuture
from .history import (
    COMMAND_EVENTS,
    Command,
    EventType,
    HistoryEvent,
    RecordMarker,
    Wait,
    describe,
)

if TYPE_CHECKING:
    from .context import WorkflowContext

E = EventType


class Suspend(BaseException):
    """Internal: the workflow needs something the history does not hold yet."""


class Abort(BaseException):
    """Internal: replay found a non-determinism; stop the function whatever it catches."""


class ContinueAsNew(BaseException):  # noqa: N818 - a control-flow signal, like StopIteration
    """Raised by ``ctx.continue_as_new``: close this run and start a fresh one with ``input``.

    A ``BaseException`` so that a workflow's ``except Exception`` cannot swallow it.
    """

    def __init__(self, input: Any) -> None:
        super().__init__("continue as new")
        self.input = input


@dataclass(frozen=True)
class RunInfo:
    workflow_id: str
    run_id: str
    workflow_name: str
    input: Any


@dataclass(frozen=True)
class ContinueAsNewRequest:
    input: Any
    #: Signals this run received but never consumed; the next run gets them, in order.
    signals: list[dict[str, Any]]


@dataclass
class Decision:
    """What one pass of the workflow function produced."""

    commands: list[Command] = field(default_factory=list)
    #: What the function is blocked on, when it is not done.
    waiting: list[Wait] = field(default_factory=list)
    #: Steps of ``TimerStarted`` timers the function no longer needs (record TimerCanceled).
    cancel_timers: list[int] = field(default_factory=list)
    #: Steps of signal waits whose signal came: their timeout timers have nothing left to do.
    cancel_signal_timeouts: list[int] = field(default_factory=list)
    #: How many history events the function had read when it stopped.
    read_through: int = 0
    done: bool = False
    result: Any = None
    #: A failure (any error) or ``WorkflowCanceledError`` for a canceled run.
    error: BaseException | None = None
    continue_as_new: ContinueAsNewRequest | None = None

    @property
    def canceled(self) -> bool:
        return isinstance(self.error, WorkflowCanceledError)


#: ``patches(change_id, deprecated) -> bool`` — an executor's own versioning (Temporal's).
PatchPolicy = Callable[[str, bool], bool]


class Machine:
    """The cursor over one run's history, shared by both ways of running the function.

    ``horizon`` is how many events the run's previous pass had read (None for a run that
    never took a step): code reached before the cursor passes it was run before, which is
    what ``is_replaying`` and ``patched()`` need to know.
    """

    def __init__(
        self,
        info: RunInfo,
        events: Sequence[HistoryEvent],
        block: Callable[[], None],
        horizon: int | None = None,
        patches: PatchPolicy | None = None,
    ) -> None:
        self.info = info
        self.events: list[HistoryEvent] = list(events)
        self.block = block
        self.horizon = horizon
        self.patch_policy = patches
        self.pos = 0
        self.next_step = 0
        self.stopped = False  # set once suspended/aborted: later calls must not emit commands
        self.failure: NonDeterminismError | None = None
        self.cancel_pending = False
        self.query_handlers: dict[str, Callable[[], Any]] = {}
        self.current_time = events[0].timestamp if events else datetime.min
        self.rng = _random.Random(f"beluga:{info.run_id}")
        self.context: WorkflowContext  # set by the context itself
        #: Futures not settled yet, by step: the events of their step reach them.
        self.open: dict[int, Future] = {}
        #: Commands created but not handed out yet, in creation order (see ``flush``).
        self.pending: list[Future | RecordMarker] = []
        self.signals: dict[str, deque[HistoryEvent]] = {}  # arrived, not taken by a wait
        self.waiters: dict[str, deque[SignalFuture]] = {}  # waiting, in creation order
        self.patch_memo: dict[str, bool] = {}
        self.max_pending = limits.max_pending_steps()
        self.begin_pass()
        self._commands_by_step: dict[int, HistoryEvent] = {}
        self._markers: set[str] = set()
        self._timers_over: set[int] = set()  # timer steps already fired or canceled
        self._indexed = 0

    def begin_pass(self) -> None:
        self.commands: list[Command] = []
        self.waiting: list[Wait] = []
        self.cancel_timers: list[int] = []
        self.cancel_signal_timeouts: list[int] = []

    # -- history access -------------------------------------------------------------------
    def extend(self, events: Sequence[HistoryEvent]) -> None:
        self.events.extend(events)

    def _index(self) -> None:
        while self._indexed < len(self.events):
            event = self.events[self._indexed]
            if event.type in COMMAND_EVENTS and event.step is not None:
                self._commands_by_step.setdefault(event.step, event)
            elif event.type is E.MARKER_RECORDED:
                self._markers.add(event.name)
            elif event.type in (E.TIMER_FIRED, E.TIMER_CANCELED) and event.step is not None:
                self._timers_over.add(event.step)
            self._indexed += 1

    def recorded_command(self, step: int) -> HistoryEvent | None:
        self._index()
        return self._commands_by_step.get(step)

    def last_recorded_step(self) -> int | None:
        self._index()
        return max(self._commands_by_step, default=None)

    @property
    def is_replaying(self) -> bool:
        """Whether the code running now was run before, by an earlier pass of this run."""
        return self.horizon is not None and self.pos <= self.horizon

    # -- commands -------------------------------------------------------------------------
    def take_step(self) -> int:
        step = self.next_step
        self.next_step += 1
        return step

    def add(self, future: Future) -> Future:
        """Register a new step's future; check it against what the history recorded."""
        if self.stopped:
            raise Suspend()
        command = future.command
        recorded = self.recorded_command(command.step)
        if recorded is None:  # what the history holds already was allowed when it was new
            limits.check_pending(self.info.workflow_id, len(self.open), self.max_pending)
        if recorded is not None and (
            recorded.type != command.event_type or recorded.name != command.name
        ):
            self.abort(
                NonDeterminismError(
                    command.step,
                    describe(recorded.type, recorded.name),
                    describe(command.event_type, command.name),
                )
            )
        future.emitted = recorded is not None
        self.open[future.step] = future
        if not future.emitted:
            self.pending.append(future)
        return future

    def settled(self, future: Future) -> None:
        self.open.pop(future.step, None)

    def flush(self, finishing: bool = False) -> None:
        """Hand out the commands created since the last flush, in creation order.

        At a block every unsettled command is needed. When the function finishes, only what
        outlives the run is: markers, children and signals to them (a child may be left to run
        on its own); activities, timers and signal waits of a closing run are moot.
        """
        for item in self.pending:
            if isinstance(item, RecordMarker):
                self.commands.append(item)
            elif not item.done() and (not finishing or item.kind in ("child", "child-signal")):
                item.emitted = True
                self.commands.append(item.command)
        self.pending = []

    def cancel_timer(self, timer: TimerFuture) -> None:
        if not timer.emitted:
            self.pending = [item for item in self.pending if item is not timer]
            return
        self._index()
        if timer.step not in self._timers_over:
            self.cancel_timers.append(timer.step)

    def cancel_signal_timeout(self, future: SignalFuture) -> None:
        self.cancel_signal_timeouts.append(future.step)

    # -- signals ----------------------------------------------------------------------------
    def claim_signal(self, future: SignalFuture) -> None:
        """A new signal wait takes the oldest unclaimed signal of its name, or queues up."""
        arrived = self.signals.get(future.name)
        if arrived:
            future.deliver(arrived.popleft())
        else:
            self.waiters.setdefault(future.name, deque()).append(future)

    def _signal_arrived(self, event: HistoryEvent) -> None:
        waiters = self.waiters.get(event.name)
        while waiters:
            future = waiters.popleft()
            if not future.done():  # skip waits that timed out or were given up
                future.deliver(event)
                return
        self.signals.setdefault(event.name, deque()).append(event)

    def unclaimed_signals(self) -> list[dict[str, Any]]:
        """Signals received and never taken, including ones the cursor has not reached."""
        arrived = [event for queue in self.signals.values() for event in queue]
        arrived += [e for e in self.events[self.pos :] if e.type is E.SIGNAL_RECEIVED]
        arrived.sort(key=lambda event: event.sequence)
        return [
            {"name": e.name, "payload": e.data.get("payload"), "sender": e.data.get("sender")}
            for e in arrived
        ]

    # -- versioning -------------------------------------------------------------------------
    def patched(self, change_id: str, deprecated: bool = False) -> bool:
        if self.stopped:
            raise Suspend()
        if change_id in self.patch_memo:
            return self.patch_memo[change_id]
        self._index()
        if self.patch_policy is not None:
            value = self.patch_policy(change_id, deprecated)
        elif change_id in self._markers:
            value = True
        elif self.is_replaying:
            value = False  # this run passed here before the change: keep the old path
        else:
            self.pending.append(RecordMarker(change_id, deprecated))
            self._markers.add(change_id)
            value = True
        self.patch_memo[change_id] = value
        return value

    # -- waiting ------------------------------------------------------------------------------
    def wait(self, ready: Callable[[], bool], waits: Callable[[], list[Wait]]) -> None:
        """Read history until ``ready()`` holds; block where the history ends."""
        if self.stopped:
            raise Suspend()
        while True:
            if self.cancel_pending:
                self.cancel_pending = False
                raise WorkflowCanceledError(self.info.workflow_id, "The workflow was canceled.")
            if ready():
                return
            if self.pos >= len(self.events):
                self.waiting = waits()
                self.flush()
                self.block()
                if self.stopped:
                    raise Suspend()
                continue
            self._read(self.events[self.pos])

    def _read(self, event: HistoryEvent) -> None:
        self.pos += 1
        self.current_time = event.timestamp
        if event.type is E.SIGNAL_RECEIVED:
            self._signal_arrived(event)
        elif event.type is E.CANCEL_REQUESTED:
            self.cancel_pending = True
            error = WorkflowCanceledError(self.info.workflow_id, "The workflow was canceled.")
            for pending in list(self.open.values()):
                if pending.cancel_on_workflow_cancel():
                    pending.settle(event.sequence, error=error)
        elif event.step is not None and event.type not in COMMAND_EVENTS:
            future = self.open.get(event.step)
            if future is not None:
                future.apply(event)

    # -- ending -------------------------------------------------------------------------------
    def abort(self, error: NonDeterminismError) -> None:
        self.failure = error
        self.stopped = True
        raise Abort()

    def finish_check(self) -> None:
        """The function returned: history must not hold steps it no longer takes."""
        last = self.last_recorded_step()
        if last is not None and last >= self.next_step:
            recorded = self._commands_by_step[self.next_step]
            self.abort(
                NonDeterminismError(
                    self.next_step, describe(recorded.type, recorded.name), "the workflow returning"
                )
            )

    def decision(self, **outcome: Any) -> Decision:
        if outcome.get("done"):
            self.flush(finishing=True)
        return Decision(
            commands=self.commands,
            waiting=[] if outcome.get("done") else self.waiting,
            cancel_timers=self.cancel_timers,
            cancel_signal_timeouts=self.cancel_signal_timeouts,
            read_through=self.pos,
            **outcome,
        )
