"""An in-memory driver for the replay interpreter, for unit tests of pure workflow logic.

`Sim` plays the executor's part the way the built-in engine does — it records each decision's
commands as events, feeds a live `Continuation` only the new events, and lets the test append
outcomes (an activity completes, a signal arrives, a timer fires) in any order. After every
decision it also replays the whole history from scratch with a `Replayer` and asserts that both
decided the same: the property that lets any worker take over any run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from beluga_workflows.continuation import Continuation
from beluga_workflows.history import (
    EventType,
    HistoryEvent,
    RecordMarker,
    ScheduleActivity,
    SignalChild,
    StartChild,
    StartTimer,
    WaitSignal,
)
from beluga_workflows.interpreter import Decision, RunInfo
from beluga_workflows.replay import Replayer

E = EventType
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def history(*extra: tuple[EventType, dict[str, Any]]) -> list[HistoryEvent]:
    """A history that starts the run, then ``extra`` events: ``(type, {"name": ..., ...})``."""
    events = [HistoryEvent(1, E.WORKFLOW_STARTED, T0, None, "sim", 0, {})]
    for type, fields in extra:
        fields = dict(fields)
        seq = len(events) + 1
        step, name = fields.pop("step", None), fields.pop("name", "")
        events.append(HistoryEvent(seq, type, T0 + timedelta(seconds=seq), step, name, 0, fields))
    return events


class Sim:
    def __init__(
        self,
        fn: Callable[..., Any],
        input: Any = None,
        events: list[HistoryEvent] | None = None,
        horizon: int | None = None,
    ) -> None:
        self.fn = fn
        self.info = RunInfo("wf-1", "00000000-0000-0000-0000-000000000001", "sim", input)
        self.events: list[HistoryEvent] = list(events or [])
        if not self.events:
            self.add(E.WORKFLOW_STARTED, name="sim", input=input)
        self.horizon = horizon
        self.cont = Continuation(fn, self.info, timeout=5, horizon=horizon)
        self.fed = 0
        self.decisions: list[Decision] = []
        self.advance()

    # -- building history -----------------------------------------------------------------
    def add(self, type: EventType, *, step=None, name="", attempt=0, **data) -> HistoryEvent:
        seq = len(self.events) + 1
        event = HistoryEvent(seq, type, T0 + timedelta(seconds=seq), step, name, attempt, data)
        self.events.append(event)
        return event

    @property
    def decision(self) -> Decision:
        return self.decisions[-1]

    def advance(self) -> Decision:
        new = self.events[self.fed :]
        decision = self.cont.feed(new)
        replayed = Replayer(self.fn, self.info, self.horizon).run(list(self.events))
        assert summary(decision) == summary(replayed), "continuation and replay disagree"
        self.horizon = decision.read_through
        self.decisions.append(decision)
        if self._record(decision) and not decision.done:
            return self.advance()  # a command that settles at once (a child started)
        return decision

    def _record(self, decision: Decision) -> bool:
        first = len(self.events)
        immediate = False
        for c in decision.commands:
            if isinstance(c, ScheduleActivity):
                self.add(E.ACTIVITY_SCHEDULED, step=c.step, name=c.name, attempt=1, input=c.input)
            elif isinstance(c, StartTimer):
                self.add(E.TIMER_STARTED, step=c.step, name=c.name)
            elif isinstance(c, WaitSignal):
                self.add(E.SIGNAL_WAIT_STARTED, step=c.step, name=c.name)
            elif isinstance(c, StartChild):
                self.add(E.CHILD_WORKFLOW_SCHEDULED, step=c.step, name=c.name, id=c.workflow_id)
                if c.workflow_id == "taken":
                    self.add(E.CHILD_WORKFLOW_START_FAILED, step=c.step, name=c.name)
                else:
                    self.add(E.CHILD_WORKFLOW_STARTED, step=c.step, name=c.name, run_id="r1")
                immediate = True
            elif isinstance(c, SignalChild):
                self.add(E.CHILD_SIGNAL_SCHEDULED, step=c.step, name=c.name, payload=c.payload)
                self.add(E.CHILD_SIGNAL_SENT, step=c.step, name=c.name)
                immediate = True
            elif isinstance(c, RecordMarker):
                self.add(E.MARKER_RECORDED, name=c.name)
        for step in decision.cancel_timers:
            self.add(E.TIMER_CANCELED, step=step, name="timer")
        self.cont.note(self.events[first:])
        self.fed = len(self.events)
        return immediate

    # -- what happens in the world --------------------------------------------------------
    def complete(self, step: int, result: Any = None) -> Decision:
        self.add(E.ACTIVITY_COMPLETED, step=step, name=self._name(step), attempt=1, result=result)
        return self.advance()

    def fail(self, step: int, kind: str = "ValueError", message: str = "boom") -> Decision:
        error = {"type": kind, "message": message}
        self.add(E.ACTIVITY_FAILED, step=step, name=self._name(step), attempt=1, error=error)
        return self.advance()

    def fire(self, step: int) -> Decision:
        self.add(E.TIMER_FIRED, step=step, name="sleep")
        return self.advance()

    def signal(self, name: str, payload: Any = None, sender: str | None = None) -> Decision:
        self.add(E.SIGNAL_RECEIVED, name=name, payload=payload, sender=sender)
        return self.advance()

    def cancel(self) -> Decision:
        self.add(E.CANCEL_REQUESTED, sender="ops")
        return self.advance()

    def child_completed(self, step: int, result: Any) -> Decision:
        self.add(E.CHILD_WORKFLOW_COMPLETED, step=step, name=self._name(step), result=result)
        return self.advance()

    def child_failed(self, step: int, status: str, error: dict[str, Any]) -> Decision:
        name = self._name(step)
        self.add(E.CHILD_WORKFLOW_FAILED, step=step, name=name, status=status, error=error)
        return self.advance()

    def _name(self, step: int) -> str:
        return next(e.name for e in self.events if e.step == step)

    def types(self) -> list[str]:
        return [e.type.value for e in self.events]


def summary(decision: Decision) -> tuple[Any, ...]:
    error = decision.error
    return (
        decision.commands,
        decision.waiting,
        decision.cancel_timers,
        decision.done,
        decision.result,
        (type(error).__name__, str(error)) if error is not None else None,
        decision.continue_as_new,
    )
