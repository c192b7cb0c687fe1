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

from .options import ActivityOptions, ParentClosePolicy


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
    TIMER_CANCELED = "TimerCanceled"
    CHILD_WORKFLOW_SCHEDULED = "ChildWorkflowScheduled"
    CHILD_WORKFLOW_STARTED = "ChildWorkflowStarted"
    CHILD_WORKFLOW_START_FAILED = "ChildWorkflowStartFailed"
    CHILD_WORKFLOW_COMPLETED = "ChildWorkflowCompleted"
    CHILD_WORKFLOW_FAILED = "ChildWorkflowFailed"
    CHILD_SIGNAL_SCHEDULED = "ChildSignalScheduled"
    CHILD_SIGNAL_SENT = "ChildSignalSent"
    CHILD_SIGNAL_FAILED = "ChildSignalFailed"
    MARKER_RECORDED = "MarkerRecorded"
    CANCEL_REQUESTED = "CancelRequested"
    WORKFLOW_COMPLETED = "WorkflowCompleted"
    WORKFLOW_FAILED = "WorkflowFailed"
    WORKFLOW_CANCELED = "WorkflowCanceled"
    WORKFLOW_TIMED_OUT = "WorkflowTimedOut"
    WORKFLOW_CONTINUED_AS_NEW = "WorkflowContinuedAsNew"


#: Events that record a command of the workflow function (one per step).
COMMAND_EVENTS = {
    EventType.ACTIVITY_SCHEDULED,
    EventType.TIMER_STARTED,
    EventType.SIGNAL_WAIT_STARTED,
    EventType.CHILD_WORKFLOW_SCHEDULED,
    EventType.CHILD_SIGNAL_SCHEDULED,
}

#: Events that close a run; exactly one ends every closed run's history.
CLOSING_EVENTS = {
    EventType.WORKFLOW_COMPLETED,
    EventType.WORKFLOW_FAILED,
    EventType.WORKFLOW_CANCELED,
    EventType.WORKFLOW_TIMED_OUT,
    EventType.WORKFLOW_CONTINUED_AS_NEW,
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
    #: ``sleep`` (``ctx.sleep``), ``timer`` (``ctx.timer``) or ``timeout`` (``wait_any``).
    name: str = "sleep"

    event_type = EventType.TIMER_STARTED


@dataclass(frozen=True)
class WaitSignal:
    step: int
    name: str  # the signal name
    timeout: timedelta | None

    event_type = EventType.SIGNAL_WAIT_STARTED


@dataclass(frozen=True)
class StartChild:
    step: int
    name: str  # the child's workflow name (public name or module:qualname)
    reference: str  # module:qualname of the child's function
    workflow_id: str
    input: Any
    timeout: timedelta | None
    parent_close_policy: ParentClosePolicy

    event_type = EventType.CHILD_WORKFLOW_SCHEDULED

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.workflow_id,
            "input": self.input,
            "timeout": self.timeout.total_seconds() if self.timeout else None,
            "parent_close_policy": self.parent_close_policy.value,
        }


@dataclass(frozen=True)
class SignalChild:
    step: int
    name: str  # the signal name
    child_step: int  # the step that started the child
    child_id: str
    payload: Any
    sender: str

    event_type = EventType.CHILD_SIGNAL_SCHEDULED

    def to_json(self) -> dict[str, Any]:
        return {
            "child_step": self.child_step,
            "id": self.child_id,
            "payload": self.payload,
            "sender": self.sender,
        }


@dataclass(frozen=True)
class RecordMarker:
    """``ctx.patched``: the first time new code takes a change, its id goes into the history.

    Markers take no step number, so a history recorded before the change (without the
    marker) still lines up with the code's steps on replay.
    """

    name: str  # the change id
    deprecated: bool = False

    event_type = EventType.MARKER_RECORDED
    step = None


Command = ScheduleActivity | StartTimer | WaitSignal | StartChild | SignalChild | RecordMarker


def describe(kind: EventType | str, name: str) -> str:
    """How a step reads in a non-determinism message."""
    labels = {
        EventType.ACTIVITY_SCHEDULED: "activity",
        EventType.TIMER_STARTED: "timer",
        EventType.SIGNAL_WAIT_STARTED: "signal wait",
        EventType.CHILD_WORKFLOW_SCHEDULED: "child workflow",
        EventType.CHILD_SIGNAL_SCHEDULED: "signal to a child",
    }
    return f"{labels.get(EventType(kind), str(kind))} {name!r}"


#: How a wait reads in ``waiting_for``: ``signal:approval``, ``activity:summarize``, …
WAIT_KINDS = {
    EventType.ACTIVITY_SCHEDULED: "activity",
    EventType.TIMER_STARTED: "timer",
    EventType.SIGNAL_WAIT_STARTED: "signal",
    EventType.CHILD_WORKFLOW_SCHEDULED: "child",
    EventType.CHILD_SIGNAL_SCHEDULED: "child-signal",
}
_WAIT_ORDER = ["signal", "child", "activity", "timer", "child-signal"]


@dataclass(frozen=True)
class Wait:
    """One thing a blocked workflow waits for: the step, its kind and its name."""

    kind: str  # a value of WAIT_KINDS
    name: str
    step: int
    #: How many steps of this kind and name it stands for (a fan-out's activities are one
    #: wait of many, so a wide step's waits cost O(1), not O(width)); ``step`` is one of them.
    count: int = 1


def waiting_label(waits: list[Wait]) -> str:
    """``waiting_for`` of a run blocked on ``waits``, the same on every executor.

    One wait reads ``signal:approval``; several are grouped and counted, signals first (so
    the approvals list can match a prefix): ``signal:approval, activity:summarize (3)``.
    """
    counts: dict[tuple[str, str], int] = {}
    for wait in waits:
        counts[(wait.kind, wait.name)] = counts.get((wait.kind, wait.name), 0) + wait.count
    ordered = sorted(counts, key=lambda key: _WAIT_ORDER.index(key[0]))
    parts = [
        f"{kind}:{name}" + (f" ({n})" if (n := counts[kind, name]) > 1 else "")
        for kind, name in ordered
    ]
    return ", ".join(parts)[:255]


def waits_for(label: str, kind: str, name: str) -> bool:
    """Whether a ``waiting_for`` label includes ``kind:name`` (``signal``, ``approval``)."""
    wanted = f"{kind}:{name}"
    return any(part == wanted or part.startswith(f"{wanted} (") for part in label.split(", "))
