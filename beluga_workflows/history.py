"""Events and commands: the vocabulary shared by the engine, replay and every executor.

A run's history is an append-only list of :class:`HistoryEvent`. Replay reads it; the
interpreter answers with :class:`Command` objects (what the workflow wants next), which an
executor turns into events and work (an activity task, a timer, a signal wait).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .options import ActivityOptions


class EventType(enum.StrEnum):
    WORKFLOW_STARTED = "WorkflowStarted"
    ACTIVITY_SCHEDULED = "ActivityScheduled"
    ACTIVITY_COMPLETED = "ActivityCompleted"
    ACTIVITY_ATTEMPT_FAILED = "ActivityAttemptFailed"
    ACTIVITY_FAILED = "ActivityFailed"
    TIMER_STARTED = "TimerStarted"
    TIMER_FIRED = "TimerFired"
    SIGNAL_WAIT_STARTED = "SignalWaitStarted"
    SIGNAL_RECEIVED = "SignalReceived"
    CANCEL_REQUESTED = "CancelRequested"
    WORKFLOW_COMPLETED = "WorkflowCompleted"
    WORKFLOW_FAILED = "WorkflowFailed"
    WORKFLOW_CANCELED = "WorkflowCanceled"
    WORKFLOW_TIMED_OUT = "WorkflowTimedOut"


#: Events that record a command of the workflow function (one per step).
COMMAND_EVENTS = {
    EventType.ACTIVITY_SCHEDULED,
    EventType.TIMER_STARTED,
    EventType.SIGNAL_WAIT_STARTED,
}


@dataclass(frozen=True)
class HistoryEvent:
    sequence: int
    type: EventType
    timestamp: datetime
    step: int | None = None
    name: str = ""
    attempt: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "type": self.type.value,
            "timestamp": self.timestamp.isoformat(),
            "step": self.step,
            "name": self.name,
            "attempt": self.attempt,
            "details": self.data,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistoryEvent:
        return cls(
            sequence=data["sequence"],
            type=EventType(data["type"]),
            timestamp=datetime.fromisoformat(data["timestamp"]),
            step=data.get("step"),
            name=data.get("name", ""),
            attempt=data.get("attempt", 0),
            data=data.get("details") or {},
        )


@dataclass(frozen=True)
class ScheduleActivity:
    step: int
    name: str  # display name (the function's name); recorded and checked on replay
    reference: str  # module:qualname, to import it in the worker
    input: Any
    options: ActivityOptions

    event_type = EventType.ACTIVITY_SCHEDULED


@dataclass(frozen=True)
class StartTimer:
    step: int
    duration: timedelta
    name: str = "sleep"

    event_type = EventType.TIMER_STARTED


@dataclass(frozen=True)
class WaitSignal:
    step: int
    name: str  # the signal name
    timeout: timedelta | None

    event_type = EventType.SIGNAL_WAIT_STARTED


Command = ScheduleActivity | StartTimer | WaitSignal


def describe(kind: EventType | str, name: str) -> str:
    """How a step reads in a non-determinism message."""
    labels = {
        EventType.ACTIVITY_SCHEDULED: "activity",
        EventType.TIMER_STARTED: "timer",
        EventType.SIGNAL_WAIT_STARTED: "signal wait",
    }
    return f"{labels.get(EventType(kind), str(kind))} {name!r}"
