"""The replay interpreter: runs a workflow function against its history.

This is the only place that decides what a workflow does; every executor (the built-in
engine, the Temporal one) drives it. Given the events recorded so far it:

* returns the recorded outcome of each step the function has already taken (activity
  results, fired timers, received signals) — a finished activity is never run again;
* checks that each step still asks for what the history recorded, and fails the run with
  :class:`NonDeterminismError` otherwise;
* stops at the first step the history cannot answer and reports it as a :class:`Command`.

A sync workflow function takes one step at a time, so at most one step is pending. Replay
walks the history with a cursor and settles every race by history order alone: a signal wait
is won by whichever comes first, a matching signal or the wait's timer firing; signals that
arrived before the wait are buffered and consumed in arrival order; a cancel request is
delivered to the step pending when it arrives.

Two ways to stop at an unanswered step share this code: :class:`Replayer` raises
:class:`Suspend` (a ``BaseException``, so user ``except Exception`` cannot swallow it) and
re-runs from the start next time; :class:`~beluga_workflows.continuation.Continuation` parks
the function's thread and resumes it when new events arrive, so a long run costs O(1) per step.
"""

from __future__ import annotations

import random as _random
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import registry
from .errors import (
    ActivityError,
    ApplicationError,
    NonDeterminismError,
    QueryError,
    SignalTimeoutError,
    WorkflowCanceledError,
    WorkflowError,
    WorkflowTimeoutError,
)
from .history import (
    COMMAND_EVENTS,
    Command,
    EventType,
    HistoryEvent,
    ScheduleActivity,
    StartTimer,
    WaitSignal,
    describe,
)
from .options import Duration, Signal, build_activity_options, to_timedelta
from .serialization import ensure_json


class Suspend(BaseException):
    """Internal: the workflow needs something the history does not hold yet."""


class Abort(BaseException):
    """Internal: replay found a non-determinism; stop the function whatever it catches."""


@dataclass(frozen=True)
class RunInfo:
    workflow_id: str
    run_id: str
    workflow_name: str
    input: Any


@dataclass
class Decision:
    """What one pass of the workflow function produced."""

    commands: list[Command] = field(default_factory=list)
    #: The step the function is blocked on, when it is not done.
    waiting: tuple[EventType, str, int] | None = None
    done: bool = False
    result: Any = None
    #: A failure (any error) or ``WorkflowCanceledError`` for a canceled run.
    error: BaseException | None = None

    @property
    def canceled(self) -> bool:
        return isinstance(self.error, WorkflowCanceledError)


def error_to_json(error: BaseException) -> dict[str, Any]:
    data: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, ActivityError):
        data.update(
            activity=error.activity,
            attempts=error.attempts,
            cause_type=error.cause_type,
            cause_message=error.cause_message,
            step=error.step,
        )
    elif isinstance(error, NonDeterminismError):
        data.update(step=error.step, expected=error.expected, got=error.got)
    elif isinstance(error, WorkflowTimeoutError):
        data.update(timeout=error.timeout_seconds)
    elif isinstance(error, ApplicationError):
        data.update(type=error.type_name, message=error.message)
    return data


def error_from_json(data: dict[str, Any]) -> WorkflowError:
    kind = data.get("type", "Error")
    if kind == "ActivityError":
        return ActivityError(
            data["activity"],
            data["attempts"],
            data["cause_type"],
            data["cause_message"],
            data.get("step", -1),
        )
    if kind == "NonDeterminismError":
        return NonDeterminismError(data["step"], data["expected"], data["got"])
    return ApplicationError(kind, data.get("message", ""))


class Machine:
    """The cursor over one run's history, shared by both ways of running the function."""

    def __init__(
        self, info: RunInfo, events: Sequence[HistoryEvent], block: Callable[[], None]
    ) -> None:
        self.info = info
        self.events: list[HistoryEvent] = list(events)
        self.block = block
        self.pos = 0
        self.next_step = 0
        self.commands: list[Command] = []
        self.waiting: tuple[EventType, str, int] | None = None
        self.buffered: dict[str, deque[HistoryEvent]] = {}
        self.cancel_pending = False
        self.stopped = False  # set once suspended/aborted: later calls must not emit commands
        self.failure: NonDeterminismError | None = None
        self.query_handlers: dict[str, Callable[[], Any]] = {}
        self.current_time = events[0].timestamp if events else datetime.min
        self.rng = _random.Random(f"beluga:{info.run_id}")
        self._commands_by_step: dict[int, HistoryEvent] = {}
        self._indexed = 0

    # -- history access -------------------------------------------------------------------
    def extend(self, events: Sequence[HistoryEvent]) -> None:
        self.events.extend(events)

    def recorded_command(self, step: int) -> HistoryEvent | None:
        while self._indexed < len(self.events):
            event = self.events[self._indexed]
            if event.type in COMMAND_EVENTS and event.step is not None:
                self._commands_by_step.setdefault(event.step, event)
            self._indexed += 1
        return self._commands_by_step.get(step)

    def last_recorded_step(self) -> int | None:
        self.recorded_command(-1)
        return max(self._commands_by_step, default=None)

    @property
    def is_replaying(self) -> bool:
        return self.pos < len(self.events)

    # -- the step loop --------------------------------------------------------------------
    def step(
        self,
        command: Command,
        resolve: Callable[[HistoryEvent], tuple[bool, Any]],
        from_buffer: Callable[[], tuple[bool, Any]] | None = None,
    ) -> Any:
        """Run one step: match it against history, then wait for what resolves it."""
        if self.stopped:
            raise Suspend()
        recorded = self.recorded_command(command.step)
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
        self.waiting = (command.event_type, command.name, command.step)
        emitted = recorded is not None
        while True:
            if self.cancel_pending:
                self.cancel_pending = False
                self.waiting = None
                raise WorkflowCanceledError(self.info.workflow_id, "The workflow was canceled.")
            if from_buffer is not None:
                found, value = from_buffer()
                if found:
                    self.waiting = None
                    return value
            if self.pos >= len(self.events):
                if not emitted:
                    self.commands.append(command)
                    emitted = True
                self.block()
                if self.stopped:
                    raise Suspend()
                continue
            event = self.events[self.pos]
            self.pos += 1
            self.current_time = event.timestamp
            if event.type is EventType.SIGNAL_RECEIVED:
                self.buffered.setdefault(event.name, deque()).append(event)
            elif event.type is EventType.CANCEL_REQUESTED:
                self.cancel_pending = True
            elif event.step == command.step:
                done, value = resolve(event)
                if done:
                    self.waiting = None
                    return value

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

    def take_step(self) -> int:
        step = self.next_step
        self.next_step += 1
        return step


class WorkflowContext:
    """What a workflow function gets: deterministic, durable operations only."""

    def __init__(self, machine: Machine) -> None:
        self._m = machine

    @property
    def workflow_id(self) -> str:
        return self._m.info.workflow_id

    @property
    def run_id(self) -> str:
        return self._m.info.run_id

    @property
    def is_replaying(self) -> bool:
        return self._m.is_replaying

    def execute_activity(self, fn: Callable[..., Any], input: Any = None, *options: Any) -> Any:
        """Run ``fn(activity_ctx, input)`` once, durably; return its JSON result."""
        ensure_json(input, f"Input of activity {getattr(fn, '__name__', fn)!r}")
        command = ScheduleActivity(
            step=self._m.take_step(),
            name=fn.__name__,
            reference=registry.reference(fn),
            input=input,
            options=build_activity_options(options),
        )

        def resolve(event: HistoryEvent) -> tuple[bool, Any]:
            if event.type is EventType.ACTIVITY_COMPLETED:
                return True, event.data.get("result")
            if event.type is EventType.ACTIVITY_FAILED:
                error = event.data.get("error", {})
                raise ActivityError(
                    command.name,
                    event.attempt,
                    error.get("type", "Error"),
                    error.get("message", ""),
                    command.step,
                )
            return False, None

        return self._m.step(command, resolve)

    def wait_for_signal(self, name: str, timeout: Duration | None = None) -> Signal:
        """Wait for the next ``name`` signal; raise ``SignalTimeoutError`` after ``timeout``."""
        if not isinstance(name, str) or not name:
            raise ValueError("wait_for_signal needs a non-empty signal name.")
        delta = to_timedelta(timeout, "wait_for_signal timeout")
        command = WaitSignal(step=self._m.take_step(), name=name, timeout=delta)

        def from_buffer() -> tuple[bool, Any]:
            queue = self._m.buffered.get(name)
            if not queue:
                return False, None
            event = queue.popleft()
            return True, Signal(name, event.data.get("payload"), event.data.get("sender"))

        def resolve(event: HistoryEvent) -> tuple[bool, Any]:
            if event.type is EventType.TIMER_FIRED:
                raise SignalTimeoutError(name, delta.total_seconds() if delta is not None else None)
            return False, None

        return self._m.step(command, resolve, from_buffer)  # type: ignore[no-any-return]

    def receive_signal(self, name: str) -> Iterator[Any]:
        """Payloads of ``name`` signals, in arrival order; each item is one durable wait."""
        while True:
            yield self.wait_for_signal(name).payload

    def sleep(self, duration: Duration) -> None:
        """A durable timer: survives restarts and is not re-slept on replay."""
        delta = to_timedelta(duration, "sleep duration") or timedelta(0)
        command = StartTimer(step=self._m.take_step(), duration=delta)

        def resolve(event: HistoryEvent) -> tuple[bool, Any]:
            return (event.type is EventType.TIMER_FIRED), None

        self._m.step(command, resolve)

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


def call_workflow(fn: Callable[..., Any], machine: Machine) -> Decision:
    """Run ``fn`` on ``machine`` until it returns, fails, or blocks (via Suspend)."""
    ctx = WorkflowContext(machine)
    try:
        result = fn(ctx, machine.info.input)
        machine.finish_check()
        ensure_json(result, f"Result of workflow {machine.info.workflow_name!r}")
    except Suspend:
        if machine.failure is not None:
            return Decision(commands=machine.commands, done=True, error=machine.failure)
        return Decision(commands=machine.commands, waiting=machine.waiting)
    except Abort:
        return Decision(commands=[], done=True, error=machine.failure)
    except Exception as exc:  # the user's workflow failed, or was canceled
        if machine.failure is not None:
            return Decision(commands=[], done=True, error=machine.failure)
        return Decision(commands=machine.commands, done=True, error=exc)
    if machine.failure is not None:
        return Decision(commands=[], done=True, error=machine.failure)
    return Decision(commands=machine.commands, done=True, result=result)


class Replayer:
    """Runs the function from the start on every pass (what the Temporal executor uses)."""

    def __init__(self, fn: Callable[..., Any], info: RunInfo) -> None:
        self.fn = fn
        self.info = info
        self.machine: Machine | None = None

    def run(self, events: Sequence[HistoryEvent]) -> Decision:
        def block() -> None:
            assert self.machine is not None
            self.machine.stopped = True
            raise Suspend()

        self.machine = Machine(self.info, events, block)
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
