"""The built-in engine's bookkeeping in memory: what ``testing.WorkflowEnvironment`` runs on.

The steps of :mod:`.engine.steps` and :mod:`.engine.commands` on lists instead of rows: append
what happened to a run's history, feed the new events to the run's
:class:`~beluga_workflows.continuation.Continuation` (the interpreter's Machine, as on the
built-in engine), and record the decision as the engine does — the same events with the same
fields, an activity task, a timer, a child run, a signal delivered to a child. What the
workflow does is decided by the interpreter alone; nothing here reads workflow code.

Time is :attr:`MemoryEngine.now`, moved only by the environment, and every event carries it.
Runs that want a decision queue in ``dirty``; activity attempts wait in ``tasks`` until their
``due`` time, timers in ``timers``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from . import registry
from ._replay_history import live_drift, status_of
from .conf import beluga_settings, holds_run
from .continuation import Continuation
from .errors import (
    WorkflowAlreadyStartedError,
    WorkflowCanceledError,
    WorkflowClosedError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
    error_to_json,
    held_record,
)
from .history import (
    Command,
    EventType,
    HistoryEvent,
    RecordMarker,
    ScheduleActivity,
    SignalChild,
    StartChild,
    StartTimer,
    WaitSignal,
    waiting_label,
)
from .interpreter import Decision, RunInfo
from .options import ActivityOptions, ParentClosePolicy, Signal, Status
from .serialization import ensure_json, ensure_size

E = EventType
#: Events a command records that settle a future at once (``engine.commands.IMMEDIATE``).
_IMMEDIATE = {
    E.CHILD_WORKFLOW_STARTED,
    E.CHILD_WORKFLOW_START_FAILED,
    E.CHILD_SIGNAL_SENT,
    E.CHILD_SIGNAL_FAILED,
}
#: Decisions in a row for one run when its own commands keep settling at once.
MAX_ROUNDS = 100
_CLOSING = {
    Status.COMPLETED: E.WORKFLOW_COMPLETED,
    Status.FAILED: E.WORKFLOW_FAILED,
    Status.CANCELED: E.WORKFLOW_CANCELED,
    Status.CONTINUED_AS_NEW: E.WORKFLOW_CONTINUED_AS_NEW,
}


@dataclass(eq=False)
class Run:
    """One run: what the engine keeps in its run row, plus the parked workflow."""

    workflow_id: str
    run_id: str
    name: str
    reference: str
    fn: Callable[..., Any]
    input: Any
    timeout: float | None = None  # seconds, as WorkflowStarted records it
    parent: Run | None = None
    parent_step: int | None = None
    policy: ParentClosePolicy = ParentClosePolicy.CANCEL
    continued_from: Run | None = None
    continued_as: Run | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    events: list[HistoryEvent] = field(default_factory=list)
    status: Status = Status.RUNNING
    result: Any = None
    error: dict[str, Any] | None = None
    waiting_for: str = ""
    waiting_since: datetime | None = None
    waiting_deadline: datetime | None = None
    children: list[Run] = field(default_factory=list)
    continuation: Continuation | None = None
    fed: int = 0  # events the continuation has been given
    decided_through: int | None = None
    held: dict[str, Any] | None = None  # held for a fix (ON_WORKFLOW_ERROR = "hold")

    @property
    def info(self) -> RunInfo:
        return RunInfo(self.workflow_id, self.run_id, self.name, self.input)


@dataclass(eq=False)
class Task:
    """An activity step: its current attempt runs once the clock reaches ``due``."""

    run: Run
    step: int
    name: str
    reference: str
    input: Any
    options: ActivityOptions
    due: datetime
    attempt: int = 1
    open: bool = True
    running: bool = False
    heartbeat: Any = None


@dataclass(eq=False)
class Timer:
    run: Run
    kind: str  # "sleep", "signal_timeout" or "workflow_timeout": the engine's Timer.Kind
    fire_at: datetime
    step: int | None = None


class MemoryEngine:
    """Runs, their histories and the work they wait for, in memory."""

    def __init__(
        self, now: datetime, rng: random.Random, workflows: dict[str, Callable[..., Any]]
    ) -> None:
        self.now = now
        self.rng = rng
        self.workflows = workflows  # child workflows replaced for the test
        self.check_replay = True
        self.runs: dict[str, list[Run]] = {}
        self.tasks: list[Task] = []
        self.timers: list[Timer] = []
        self.dirty: list[Run] = []

    def latest(self, workflow_id: str) -> Run:
        """The running run of an id, else its latest."""
        runs = self.runs.get(workflow_id)
        if not runs:
            raise WorkflowNotFoundError(workflow_id)
        return next((run for run in runs if run.status is Status.RUNNING), runs[-1])

    def running(self, workflow_id: str, action: str) -> Run:
        run = self.latest(workflow_id)
        if run.status is not Status.RUNNING:
            raise WorkflowClosedError(workflow_id, run.status.value, action)
        return run

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def next_due(self) -> datetime | None:
        """When the next timer fires or activity attempt is due."""
        times = [t.fire_at for t in self.timers] + [t.due for t in self.tasks if not t.running]
        return min(times, default=None)

    def mark(self, run: Run) -> None:
        if run not in self.dirty:
            self.dirty.append(run)

    def close_all(self) -> None:
        for runs in self.runs.values():
            for run in runs:
                _park_no_more(run)

    def _event(
        self, run: Run, type: EventType, step: int | None, name: str, data: Any, attempt: int = 0
    ) -> HistoryEvent:
        return HistoryEvent(len(run.events) + 1, type, self.now, step, name, attempt, data or {})

    def _add(
        self, run: Run, type: EventType, step: int | None, name: str, data: Any, attempt: int = 0
    ) -> None:
        """Append an event to the run's history, at the clock's time."""
        run.events.append(self._event(run, type, step, name, data, attempt))
        run.updated_at = self.now

    # -- runs: start, signal, cancel, close ------------------------------------------------------
    def start(
        self, run: Run, deadline: datetime | None, signals: Sequence[dict[str, Any]] = ()
    ) -> Run:
        """A new run with its ``WorkflowStarted`` (``engine.runs.create_run``)."""
        runs = self.runs.setdefault(run.workflow_id, [])
        if any(other.status is Status.RUNNING for other in runs):
            raise WorkflowAlreadyStartedError(run.workflow_id)
        runs.append(run)
        run.created_at = run.updated_at = self.now
        started: dict[str, Any] = {"input": run.input, "timeout": run.timeout}
        if run.parent is not None:
            run.parent.children.append(run)
            started["parent"] = {"id": run.parent.workflow_id, "run_id": run.parent.run_id}
        if run.continued_from is not None:
            run.continued_from.continued_as = run
            started["continued_from"] = run.continued_from.run_id
        self._add(run, E.WORKFLOW_STARTED, None, run.name, started)
        for signal in signals:
            data = {"payload": signal.get("payload"), "sender": signal.get("sender")}
            self._add(run, E.SIGNAL_RECEIVED, None, signal["name"], data)
        if deadline is not None:
            self.timers.append(Timer(run, "workflow_timeout", deadline))
        self.mark(run)
        return run

    def deliver(self, workflow_id: str, signal: Signal) -> None:
        """Record a signal in the run's history (``engine.runs.signal``)."""
        if not isinstance(signal.name, str) or not signal.name:
            raise ValueError("A signal needs a non-empty name.")
        what = f"Payload of signal {signal.name!r}"
        ensure_size(ensure_json(signal.payload, what), "The payload")
        run = self.running(workflow_id, f"signal {signal.name!r} to")
        data = {"payload": signal.payload, "sender": signal.sender}
        self._add(run, E.SIGNAL_RECEIVED, None, signal.name, data)
        self.mark(run)

    def request_cancel(self, run: Run, sender: str | None) -> None:
        """``engine.runs.request_cancel``: pending work is over, children are asked too."""
        if any(event.type is E.CANCEL_REQUESTED for event in run.events):
            return
        self._add(run, E.CANCEL_REQUESTED, None, "", {"sender": sender})
        self._drop(run, keep_timeout=True)
        self.mark(run)
        self._cancel_children(run, f"parent {run.workflow_id!r} was canceled")

    def _cancel_children(self, run: Run, reason: str) -> None:
        for child in run.children:
            if child.status is Status.RUNNING and child.policy is ParentClosePolicy.CANCEL:
                self.request_cancel(child, reason)

    def _drop(self, run: Run, keep_timeout: bool = False) -> None:
        """The run's activity attempts and timers are over; a canceled sleep is recorded."""
        for task in [t for t in self.tasks if t.run is run]:
            self.drop_task(task)
        for timer in [t for t in self.timers if t.run is run]:
            if keep_timeout and timer.kind == "workflow_timeout":
                continue
            if keep_timeout and timer.kind == "sleep":
                self._add(run, E.TIMER_CANCELED, timer.step, "timer", None)
            self.timers.remove(timer)

    def drop_task(self, task: Task) -> None:
        task.open = False
        if task in self.tasks:
            self.tasks.remove(task)

    def _close(self, run: Run, status: Status, closing: HistoryEvent) -> None:
        """``engine.steps.close``: the closing event, the run's work dropped, its running
        children canceled (by policy), and its outcome sent to its parent."""
        run.events.append(closing)
        run.status, run.updated_at = status, self.now
        run.result = closing.data.get("result")
        run.error = closing.data.get("error")
        run.waiting_for, run.waiting_since, run.waiting_deadline = "", None, None
        self._drop(run)
        _park_no_more(run)
        self._cancel_children(run, f"parent {run.workflow_id!r} closed ({status.value})")
        parent = run.parent
        if parent is None or status is Status.CONTINUED_AS_NEW or parent.status.is_closed:
            return
        data: dict[str, Any] = {"id": run.workflow_id, "run_id": run.run_id}
        kind = E.CHILD_WORKFLOW_COMPLETED if status is Status.COMPLETED else E.CHILD_WORKFLOW_FAILED
        if kind is E.CHILD_WORKFLOW_COMPLETED:
            data["result"] = run.result
        else:
            data.update(status=status.value, error=run.error)
        self._add(parent, kind, run.parent_step, run.name, data)
        self.mark(parent)

    def fire(self, timer: Timer) -> None:
        """A due timer: a sleep or a signal wait's timeout resumes the run, the workflow's
        timeout ends it (``engine.steps.fire_timer``)."""
        self.timers.remove(timer)
        run = timer.run
        if timer.kind == "workflow_timeout":
            error = error_to_json(WorkflowTimeoutError(run.workflow_id, run.timeout))
            closing = self._event(run, E.WORKFLOW_TIMED_OUT, None, "", {"error": error})
            self._close(run, Status.TIMED_OUT, closing)
            return
        self._add(run, E.TIMER_FIRED, timer.step, timer.kind, None)
        self.mark(run)

    # -- the workflow step -----------------------------------------------------------------------
    def decide(self, run: Run) -> None:
        """Give the run its new events and record what it decides (``engine.steps.decide``)."""
        for _ in range(MAX_ROUNDS):
            if run.status is not Status.RUNNING:
                return
            if run.continuation is None:  # a new run, or one whose workflow task timed out
                timeout = float(beluga_settings.WORKFLOW_TASK_TIMEOUT)
                run.continuation = Continuation(run.fn, run.info, timeout, run.decided_through)
                run.fed = 0
            new, run.fed = run.events[run.fed :], len(run.events)
            try:
                decision = run.continuation.feed(new)
            except BaseException:
                _park_no_more(run)
                raise
            if not self._apply(run, decision):
                return
        self.mark(run)

    def _apply(self, run: Run, decision: Decision) -> bool:
        """Record a decision; True when it settled something the workflow should see now."""
        if decision.done and holds_run(run.name, decision.error):  # as engine.holds does
            assert decision.error is not None
            if not any(e.type is E.CANCEL_REQUESTED for e in run.events):
                self._hold(run, decision.error)
                return False
            error = WorkflowCanceledError(run.workflow_id, "The held workflow was canceled.")
            decision = replace(decision, commands=[], error=error)
        run.held = None
        run.decided_through = decision.read_through
        first = len(run.events)
        for command in decision.commands:
            self._record(run, command)
        for timer in [t for t in self.timers if t.run is run]:
            if timer.step in decision.cancel_timers:
                self.timers.remove(timer)
                self._add(run, E.TIMER_CANCELED, timer.step, "timer", None)
            elif timer.kind == "signal_timeout" and timer.step in decision.cancel_signal_timeouts:
                self.timers.remove(timer)
        new = run.events[first:]
        if run.continuation is not None:
            run.continuation.note(new)
        run.fed = len(run.events)
        if decision.done:
            self._finish(run, decision)
            return False
        self._set_waiting(run, decision)
        return any(event.type in _IMMEDIATE for event in new)

    def _hold(self, run: Run, error: BaseException) -> None:
        """Record nothing the pass decided; keep the run running, flagged, until ``retry``."""
        # No next retry: here only env.retry(id) tries again.
        run.held = {**held_record(error, run.held, self.now.isoformat()), "next_retry": None}
        run.waiting_for, run.waiting_since, run.waiting_deadline = "", None, None
        _park_no_more(run)  # the next pass replays, with the code as it is then

    def _record(self, run: Run, command: Command) -> None:
        """Append the command's event and create what carries it out (``engine.commands``)."""
        now, name = self.now, command.name
        if isinstance(command, ScheduleActivity):
            data = {"input": command.input, "options": command.options.to_json()}
            self._add(run, E.ACTIVITY_SCHEDULED, command.step, name, data, attempt=1)
            self.tasks.append(Task(run, command.step, name, command.reference, command.input,
                                   command.options, now))  # fmt: skip
        elif isinstance(command, StartTimer):
            fire_at = now + command.duration
            data = {"duration": command.duration.total_seconds(), "fire_at": fire_at.isoformat()}
            self._add(run, E.TIMER_STARTED, command.step, name, data)
            self.timers.append(Timer(run, "sleep", fire_at, command.step))
        elif isinstance(command, WaitSignal):
            timeout = command.timeout
            deadline = now + timeout if timeout is not None else None
            data = {
                "timeout": timeout.total_seconds() if timeout else None,
                "deadline": deadline.isoformat() if deadline else None,
            }
            self._add(run, E.SIGNAL_WAIT_STARTED, command.step, name, data)
            if deadline is not None:
                self.timers.append(Timer(run, "signal_timeout", deadline, command.step))
        elif isinstance(command, StartChild):
            self._start_child(run, command)
        elif isinstance(command, SignalChild):
            self._add(run, E.CHILD_SIGNAL_SCHEDULED, command.step, name, command.to_json())
            try:
                self.deliver(command.child_id, Signal(name, command.payload, command.sender))
            except WorkflowError as exc:
                data = {"error": error_to_json(exc)}
                self._add(run, E.CHILD_SIGNAL_FAILED, command.step, name, data)
            else:
                self._add(run, E.CHILD_SIGNAL_SENT, command.step, name, None)
        elif isinstance(command, RecordMarker):
            self._add(run, E.MARKER_RECORDED, None, name, {"deprecated": command.deprecated})

    def _start_child(self, run: Run, command: StartChild) -> None:
        step, name, reference = command.step, command.name, command.reference
        fn = self.workflows.get(reference) or self.workflows.get(name)
        fn = fn or registry.resolve(name, reference)  # a name no process knows fails the test
        timeout = command.timeout
        child = Run(command.workflow_id, self.uuid(), name, reference, fn, command.input,
                    timeout.total_seconds() if timeout else None, run, step,
                    command.parent_close_policy)  # fmt: skip
        self._add(run, E.CHILD_WORKFLOW_SCHEDULED, step, name, command.to_json())
        try:
            self.start(child, self.now + timeout if timeout else None)
        except WorkflowError as exc:
            self._add(run, E.CHILD_WORKFLOW_START_FAILED, step, name, {"error": error_to_json(exc)})
            return
        started = {"id": child.workflow_id, "run_id": child.run_id}
        self._add(run, E.CHILD_WORKFLOW_STARTED, step, name, started)

    def _set_waiting(self, run: Run, decision: Decision) -> None:
        label = waiting_label(decision.waiting)
        if not label:
            run.waiting_for, run.waiting_since, run.waiting_deadline = "", None, None
        elif label != run.waiting_for or decision.commands:
            run.waiting_for, run.waiting_since = label, self.now
            timed = {w.step for w in decision.waiting if w.kind in ("signal", "timer")}
            deadlines = [t.fire_at for t in self.timers if t.run is run and t.step in timed]
            run.waiting_deadline = min(deadlines, default=None)

    def _finish(self, run: Run, decision: Decision) -> None:
        """Close the run as it decided (``engine.steps._finish``) — unless a replay of its
        history from the start decides otherwise, as a worker taking the run over would."""
        status, request, data = status_of(decision), decision.continue_as_new, {}
        if request is not None:
            data = {"input": request.input, "new_run_id": self.uuid()}
        elif status is Status.COMPLETED:
            data = {"result": decision.result}
        elif status is Status.FAILED:
            assert decision.error is not None
            data = {"error": error_to_json(decision.error)}
        closing = self._event(run, _CLOSING[status], None, "", data)
        if self.check_replay:
            drift = live_drift(run.fn, [*run.events, closing], run.info, decision)
            if drift is not None:
                status, request = Status.FAILED, None
                closing = self._event(
                    run, E.WORKFLOW_FAILED, None, "", {"error": error_to_json(drift)}
                )
        timeouts = [t for t in self.timers if t.run is run and t.kind == "workflow_timeout"]
        deadline = timeouts[0].fire_at if timeouts else None
        self._close(run, status, closing)
        if request is not None:  # the successor: same id and deadline, the signals not taken
            successor = Run(run.workflow_id, data["new_run_id"], run.name, run.reference, run.fn,
                            request.input, run.timeout, run.parent, run.parent_step, run.policy,
                            continued_from=run)  # fmt: skip
            self.start(successor, deadline, request.signals)

    # -- activities ------------------------------------------------------------------------------
    def finish_attempt(
        self, task: Task, attempt: int, result: Any, error: dict[str, Any] | None, retryable: bool
    ) -> None:
        """An attempt's outcome: done, retried after its backoff on this clock, or failed for
        good (``engine.steps.finish_activity``)."""
        run, step, name = task.run, task.step, task.name
        if error is None:
            self.drop_task(task)
            self._add(run, E.ACTIVITY_COMPLETED, step, name, {"result": result}, attempt)
            self.mark(run)
        elif retryable and may_retry(task.options, attempt, error):
            delay = task.options.retry.backoff(attempt, self.rng)
            data = {"error": error, "retry_in": delay.total_seconds()}
            self._add(run, E.ACTIVITY_ATTEMPT_FAILED, step, name, data, attempt)
            task.attempt, task.due = attempt + 1, self.now + delay
        else:
            self.drop_task(task)
            self._add(run, E.ACTIVITY_FAILED, step, name, {"error": error}, attempt)
            self.mark(run)


def may_retry(options: ActivityOptions, attempt: int, error: dict[str, Any]) -> bool:
    """The retry policy's rule, as the engine applies it."""
    if attempt >= options.retry.max_attempts:
        return False
    names = set(options.retry.error_names())
    return not names.intersection(error.get("types", [error.get("type")]))


def _park_no_more(run: Run) -> None:
    """Let the run's workflow thread go (it is parked between steps)."""
    if run.continuation is not None:
        run.continuation.close()
        run.continuation = None
