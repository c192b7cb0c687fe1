"""Reading a run back from Temporal: its history in our event vocabulary, and its state.

:func:`translate` is a pure left fold over Temporal's history events, so translating a longer
history of the same run yields the same first events with the same sequence numbers — which
lets the mirror append only what is new. It relies on the conventions in :mod:`.convert`:

========================================  ==========================================
Temporal event                             beluga event
========================================  ==========================================
WorkflowExecutionStarted                   WorkflowStarted (input, timeout)
ActivityTaskScheduled (type = name)        ActivityScheduled (step, name, input, options)
ActivityTaskCompleted                      ActivityCompleted (result, attempt)
ActivityTaskFailed / TimedOut              ActivityFailed (error, attempt)
TimerStarted ("step N: sleep")             TimerStarted
TimerFired                                 TimerFired (sleep or signal_timeout)
WorkflowPropertiesModified (wait memo)     SignalWaitStarted
UpsertWorkflowSearchAttributes             (what the run waits for: its state)
WorkflowExecutionSignaled                  SignalReceived (payload, sender)
WorkflowExecutionCancelRequested           CancelRequested
WorkflowExecution{Completed,Failed,...}    Workflow{Completed,Failed,Canceled,TimedOut}
========================================  ==========================================

Activity retries happen inside Temporal, so there are no ``ActivityAttemptFailed`` events;
the final failure carries its attempt number. A terminated run reads as failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.history.v1 import HistoryEvent as TemporalEvent
from temporalio.converter import DataConverter, decode_typed_search_attributes

from ...errors import (
    NonDeterminismError,
    WorkflowTimeoutError,
    error_to_json,
)
from ...history import EventType, HistoryEvent, Wait, describe, waiting_label
from ...options import Status
from ...registry import display_name
from ...state import WorkflowState
from . import convert, visibility
from .holds import RETRY_SIGNAL, HeldFold
from .translate_children import CompositionFold


@dataclass
class RunRecord:
    """One Temporal run as our models describe it."""

    state: WorkflowState
    events: list[HistoryEvent]
    reference: str
    task_queue: str
    timeout_seconds: float | None
    closed_at: datetime | None
    #: The parent's ``(workflow_id, run_id)`` and step, for a child workflow.
    parent: tuple[str, str] | None = None
    parent_step: int | None = None
    continued_from: str | None = None
    #: The task queues of the activities in flight sent elsewhere (``with_activity_queue``).
    activity_queues: tuple[str, ...] = ()


def _time(event: TemporalEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


class _Reader(CompositionFold, HeldFold):
    def __init__(self, workflow_id: str, run_id: str, converter: DataConverter) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.payloads = converter.payload_converter
        self.failures = converter.failure_converter
        self.events: list[HistoryEvent] = []
        self.name = ""
        self.reference = ""
        self.task_queue = ""
        self.input: Any = None
        self.timeout: float | None = None
        self.status = Status.RUNNING
        self.result: Any = None
        self.error: dict[str, Any] | None = None
        self.created_at: datetime | None = None
        self.updated_at: datetime | None = None
        self.closed_at: datetime | None = None
        self.activities: dict[int, tuple[int, str]] = {}  # scheduled event id -> step, name
        self.attempts: dict[int, int] = {}  # scheduled event id -> attempt that started
        self.open_activities: dict[int, datetime] = {}
        self.activity_queues: dict[int, str] = {}  # scheduled event id -> another task queue
        self.timers: dict[str, tuple[int, str]] = {}  # timer id -> step, kind
        self.open_sleeps: dict[str, tuple[int, str, datetime, datetime]] = {}
        self.wait: dict[str, Any] | None = None
        #: A run that publishes its wait as a search attribute: the label, and since when.
        self.publishes = False
        self.label: tuple[str, datetime] | None = None
        self.parent: tuple[str, str] | None = None
        self.parent_step: int | None = None
        self.continued_from: str | None = None
        self.continued_as: str | None = None
        self.child_steps: dict[int, tuple[int, str, str]] = {}  # initiated id -> step, name, id
        self.children: dict[int, dict[str, Any]] = {}  # step -> {"id", "run_id", ...}
        self.open_children: dict[int, str] = {}  # initiated event id -> name
        self.signal_steps: dict[int, tuple[int, str]] = {}  # initiated id -> step, signal

    # -- helpers ---------------------------------------------------------------------------
    def values(self, payloads: Payloads) -> list[Any]:
        return (
            list(self.payloads.from_payloads(list(payloads.payloads))) if payloads.payloads else []
        )

    def value(self, payload: Payload) -> Any:
        return self.payloads.from_payload(payload) if payload.data or payload.metadata else None

    def add(self, kind: EventType, at: datetime, **fields: Any) -> None:
        fields.setdefault("data", {})
        self.events.append(HistoryEvent(len(self.events) + 1, kind, at, **fields))

    def failure(self, failure: Any) -> BaseException:
        return self.failures.from_failure(failure, self.payloads)

    # -- the fold --------------------------------------------------------------------------
    def read(self, event: TemporalEvent) -> None:
        kind = event.WhichOneof("attributes")
        at = _time(event)
        self.updated_at = at
        if kind is None:
            return
        handler = getattr(self, f"on_{kind}", None)
        if handler is not None:
            handler(event, getattr(event, kind), at)

    def on_workflow_execution_started_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        self.name = a.workflow_type.name
        self.task_queue = a.task_queue.name
        args = self.values(a.input)
        self.input = args[0] if args else None
        if a.HasField("workflow_execution_timeout") and a.workflow_execution_timeout.ToTimedelta():
            self.timeout = a.workflow_execution_timeout.ToTimedelta().total_seconds()
        self.created_at = at
        self.publishes = visibility.WAITING_FOR.name in a.search_attributes.indexed_fields
        if convert.REFERENCE_MEMO in a.memo.fields:
            self.reference = str(self.value(a.memo.fields[convert.REFERENCE_MEMO]) or "")
        if convert.PARENT_STEP_MEMO in a.memo.fields:
            self.parent_step = self.value(a.memo.fields[convert.PARENT_STEP_MEMO])
        data: dict[str, Any] = {
            "input": self.input,
            "timeout": self.timeout,
            "temporal": {"task_queue": self.task_queue},
        }
        if a.HasField("parent_workflow_execution"):
            parent = a.parent_workflow_execution
            self.parent = (parent.workflow_id, parent.run_id)
            data["parent"] = {"id": parent.workflow_id, "run_id": parent.run_id}
        if a.continued_execution_run_id:
            self.continued_from = a.continued_execution_run_id
            data["continued_from"] = a.continued_execution_run_id
        self.add(EventType.WORKFLOW_STARTED, at, name=self.name, data=data)
        carried = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        for signal in carried.get("signals", []):
            data = {"payload": signal.get("payload"), "sender": signal.get("sender")}
            self.add(EventType.SIGNAL_RECEIVED, at, name=signal.get("name", ""), data=data)

    def on_activity_task_scheduled_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        args = self.values(a.input)
        header = a.header.fields.get(convert.ACTIVITY_HEADER)
        spec = self.value(header) if header is not None else None
        legacy = convert.legacy_activity(a.activity_type.name, args) if spec is None else None
        if legacy is not None:  # scheduled by an earlier version
            name = legacy.get("name") or display_name(a.activity_type.name)
            data = {"input": legacy.get("input"), "options": legacy.get("options")}
        else:  # the activity's name, its input, our options in the header
            spec = spec if isinstance(spec, dict) else {}
            name = a.activity_type.name
            data = {"input": args[0] if args else None, "options": spec.get("options")}
        step = spec.get("step") if isinstance(spec, dict) else None
        step = step if isinstance(step, int) else convert.activity_step(a.activity_id)
        self.activities[event.event_id] = (step if step is not None else -1, name)
        self.open_activities[event.event_id] = at
        if a.task_queue.name and a.task_queue.name != self.task_queue:
            self.activity_queues[event.event_id] = a.task_queue.name
        self.add(EventType.ACTIVITY_SCHEDULED, at, step=step, name=name, attempt=1, data=data)

    def on_activity_task_started_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        self.attempts[a.scheduled_event_id] = a.attempt

    def on_activity_task_completed_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        step, name = self.activities.get(a.scheduled_event_id, (-1, ""))
        self.open_activities.pop(a.scheduled_event_id, None)
        values = self.values(a.result)
        self.add(
            EventType.ACTIVITY_COMPLETED,
            at,
            step=step,
            name=name,
            attempt=self.attempts.get(a.scheduled_event_id, 1),
            data={"result": values[0] if values else None},
        )

    def _activity_failed(self, a: Any, at: datetime, error: dict[str, Any]) -> None:
        step, name = self.activities.get(a.scheduled_event_id, (-1, ""))
        self.open_activities.pop(a.scheduled_event_id, None)
        attempt = self.attempts.get(a.scheduled_event_id, 1)
        self.add(
            EventType.ACTIVITY_FAILED,
            at,
            step=step,
            name=name,
            attempt=attempt,
            data={"error": error},
        )

    def on_activity_task_failed_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        cause = self.failure(a.failure)
        error = {
            "type": getattr(cause, "type", None) or type(cause).__name__,
            "message": getattr(cause, "message", str(cause)),
        }
        self._activity_failed(a, at, error)

    def on_activity_task_timed_out_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        _, name = self.activities.get(a.scheduled_event_id, (-1, ""))
        error = {"type": "ActivityTimeoutError", "message": f"{name!r} ran past its timeout."}
        kind = a.failure.timeout_failure_info.timeout_type if a.HasField("failure") else 0
        if kind in convert.TIMEOUT_KINDS:
            error["timeout"] = convert.TIMEOUT_KINDS[kind]
            if error["timeout"] == "schedule_to_start":
                error["message"] = f"{name!r} was not started within its timeout."
        self._activity_failed(a, at, error)

    def on_activity_task_cancel_requested_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        self.open_activities.pop(a.scheduled_event_id, None)

    def on_timer_started_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        summary = (
            self.value(event.user_metadata.summary) if event.HasField("user_metadata") else None
        )
        parsed = convert.parse_timer_summary(summary if isinstance(summary, str) else None)
        if parsed is None:
            return
        step, kind = parsed
        self.timers[a.timer_id] = parsed
        if kind != "signal_timeout":
            duration = a.start_to_fire_timeout.ToTimedelta()
            self.open_sleeps[a.timer_id] = (step, kind, at, at + duration)
            data = {"duration": duration.total_seconds(), "fire_at": (at + duration).isoformat()}
            self.add(EventType.TIMER_STARTED, at, step=step, name=kind, data=data)

    def on_timer_fired_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        self.open_sleeps.pop(a.timer_id, None)
        if a.timer_id in self.timers:
            step, kind = self.timers[a.timer_id]
            name = "signal_timeout" if kind == "signal_timeout" else "sleep"
            self.add(EventType.TIMER_FIRED, at, step=step, name=name)

    def on_timer_canceled_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        if self.open_sleeps.pop(a.timer_id, None) is not None:
            step, _ = self.timers[a.timer_id]
            self.add(EventType.TIMER_CANCELED, at, step=step, name="timer")

    def on_workflow_properties_modified_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        if convert.WAIT_MEMO not in a.upserted_memo.fields:
            return
        memo = self.value(a.upserted_memo.fields[convert.WAIT_MEMO])
        memo = memo if isinstance(memo, dict) else {}
        for wait in memo.get("started", []):
            data = {"timeout": wait.get("timeout"), "deadline": wait.get("deadline")}
            self.add(
                EventType.SIGNAL_WAIT_STARTED,
                at,
                step=wait.get("step"),
                name=wait.get("signal", ""),
                data=data,
            )
        waiting = memo.get("waiting")
        self.wait = waiting if isinstance(waiting, dict) else None

    def on_upsert_workflow_search_attributes_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        if visibility.WAITING_FOR.name in a.search_attributes.indexed_fields:
            attributes = decode_typed_search_attributes(a.search_attributes)
            self.label = (attributes.get(visibility.WAITING_FOR) or "", at)

    def on_workflow_execution_signaled_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        if a.signal_name == RETRY_SIGNAL:
            return  # executor.retry's nudge, not a signal to the workflow
        args = self.values(a.input)
        meta = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        sender = meta.get("sender") if meta else (a.identity or None)
        data = {"payload": args[0] if args else None, "sender": sender}
        self.add(EventType.SIGNAL_RECEIVED, at, name=a.signal_name, data=data)

    def on_workflow_execution_cancel_requested_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        self.add(EventType.CANCEL_REQUESTED, at, data={"sender": a.cause or a.identity or None})

    def _close(self, status: Status, at: datetime) -> None:
        self.status, self.closed_at, self.wait, self.label = status, at, None, None
        self.open_activities.clear()
        self.open_sleeps.clear()
        self.open_children.clear()

    def on_workflow_execution_completed_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        values = self.values(a.result)
        self.result = values[0] if values else None
        self._close(Status.COMPLETED, at)
        self.add(EventType.WORKFLOW_COMPLETED, at, data={"result": self.result})

    def on_workflow_execution_continued_as_new_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        args = self.values(a.input)
        self.continued_as = a.new_execution_run_id
        self._close(Status.CONTINUED_AS_NEW, at)
        data = {"input": args[0] if args else None, "new_run_id": a.new_execution_run_id}
        self.add(EventType.WORKFLOW_CONTINUED_AS_NEW, at, data=data)

    def _failed(self, error: dict[str, Any], at: datetime) -> None:
        self.error = error
        self._close(Status.FAILED, at)
        self.add(EventType.WORKFLOW_FAILED, at, data={"error": error})

    def on_workflow_execution_failed_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        error = convert.error_json_from_failure(self.failure(a.failure))
        if error.get("type") == "NonDeterminismError" and error.get("step") == -1:
            error = self.locate(error)
        self._failed(error, at)

    def locate(self, error: dict[str, Any]) -> dict[str, Any]:
        """Temporal's non-determinism message names the recorded activity, not its step."""
        steps = {
            e.step
            for e in self.events
            if e.type is EventType.ACTIVITY_SCHEDULED
            and e.step is not None
            and describe(e.type, e.name) == error["expected"]
        }
        if len(steps) != 1:
            return error
        return error_to_json(NonDeterminismError(steps.pop(), error["expected"], error["got"]))

    def on_workflow_execution_terminated_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        self._failed({"type": "WorkflowTerminated", "message": a.reason or "Terminated."}, at)

    def on_workflow_execution_canceled_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        self._close(Status.CANCELED, at)
        self.add(EventType.WORKFLOW_CANCELED, at)

    def on_workflow_execution_timed_out_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        self.error = error_to_json(WorkflowTimeoutError(self.workflow_id, self.timeout))
        self._close(Status.TIMED_OUT, at)
        self.add(EventType.WORKFLOW_TIMED_OUT, at, data={"error": self.error})

    # -- the result ------------------------------------------------------------------------
    def waiting(self) -> tuple[str, datetime | None, datetime | None]:
        """What the run is blocked on, labelled as the built-in engine labels it.

        A wait involving signals is what the workflow published — in its search attribute,
        with since and deadline from its memo when they are about the same wait, or in its
        memo alone; otherwise the run waits on its open children, activities and timers.
        """
        wait = self.wait
        if self.publishes and self.label is not None:
            label, at = self.label
            if not label:
                wait = None
            elif not wait or wait.get("for") != label:
                return label, at, None
        if wait:
            since, deadline = wait.get("since"), wait.get("deadline")
            return (
                wait.get("for", ""),
                datetime.fromisoformat(since) if since else None,
                datetime.fromisoformat(deadline) if deadline else None,
            )
        waits = [Wait("child", name, 0) for name in self.open_children.values()]
        waits += [Wait("activity", self.activities[i][1], 0) for i in self.open_activities]
        waits += [Wait("timer", kind, 0) for _, kind, _, _ in self.open_sleeps.values()]
        starts = list(self.open_activities.values())
        starts += [since for _, _, since, _ in self.open_sleeps.values()]
        deadlines = [fire_at for _, _, _, fire_at in self.open_sleeps.values()]
        return (
            waiting_label(waits),
            max(starts) if starts else None,
            min(deadlines) if deadlines else None,
        )

    def record(self) -> RunRecord:
        waiting_for, since, deadline = self.waiting()
        state = WorkflowState(
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            workflow=self.name,
            status=self.status,
            input=self.input,
            result=self.result,
            error=self.error,
            created_at=self.created_at,
            updated_at=self.updated_at,
            waiting_for=waiting_for,
            waiting_since=since,
            waiting_deadline=deadline,
            parent_id=self.parent[0] if self.parent else None,
            parent_run_id=self.parent[1] if self.parent else None,
            children=tuple(self.children[step] for step in sorted(self.children)),
            continued_from=self.continued_from,
            continued_as=self.continued_as,
            held={**self.held, "next_retry": None}
            if self.held and self.status is Status.RUNNING
            else None,
        )
        return RunRecord(
            state,
            self.events,
            self.reference,
            self.task_queue,
            self.timeout,
            self.closed_at,
            self.parent,
            self.parent_step,
            self.continued_from,
            tuple(sorted({self.activity_queues.get(i, "") for i in self.open_activities} - {""})),
        )


def translate(
    workflow_id: str,
    run_id: str,
    events: list[TemporalEvent],
    converter: DataConverter | None = None,
) -> RunRecord:
    reader = _Reader(workflow_id, run_id, converter or DataConverter.default)
    for event in events:
        reader.read(event)
    return reader.record()


class Tail:
    """Where a reader of one run's Temporal history stopped, to read on from there.

    Temporal's history API hands a page token back when asked to wait for new events; kept
    with the fold's state, the next read returns only the events appended since, so a mirror
    keeping a run up to date reads each event once instead of the whole history each time.
    """

    def __init__(self, workflow_id: str, run_id: str, converter: DataConverter) -> None:
        self.reader = _Reader(workflow_id, run_id, converter)
        self.token = b""
        self.read = 0  # Temporal events folded so far
        self.record: RunRecord | None = None

    def fold(self, events: list[TemporalEvent]) -> RunRecord:
        for event in events:
            self.reader.read(event)
        self.read += len(events)
        self.record = self.reader.record()
        return self.record
