"""The one Temporal workflow that runs every beluga workflow function.

:class:`BelugaWorkflow` is a *dynamic* Temporal workflow: its type is the beluga workflow name,
so Temporal's UI and CLI show ``research``, not a generic wrapper. It drives the shared replay
interpreter exactly like the built-in engine does, in Temporal's async, deterministic style:

1. keep a local list of :class:`~beluga_workflows.history.HistoryEvent` (our vocabulary);
2. a :class:`~beluga_workflows.continuation.GreenletContinuation` runs the sync workflow
   function until it finishes or blocks on something the events cannot answer, and stays
   parked there, in Temporal's sticky cache, for the next workflow task (a worker that lost
   it — an eviction, another worker — replays the history into a fresh one);
3. turn each new command into Temporal's own primitive — an activity, a timer, a child
   workflow, a signal to a child, or (for a signal wait) a memo entry, the search attribute
   and a timer for its timeout — started as its own task that appends the outcome event
   when it resolves, so Temporal runs and shows parallel steps in parallel; ``ctx.patched``
   is Temporal's ``workflow.patched`` and ``ctx.continue_as_new`` Temporal's
   continue-as-new;
4. wait until any event is appended (an outcome, a signal from the dynamic signal handler, a
   cancel request) and go to 2.

Races are settled the way the interpreter settles them: by the order of the local events,
which is the order Temporal delivered them, and Temporal replays that order exactly. A
cancel request (``asyncio.CancelledError`` from Temporal) becomes ``CANCEL_REQUESTED``; the
pending activities and timers are cancelled, children (but abandoned ones) are asked to
cancel, and the loop goes on so the function can catch ``WorkflowCanceledError`` and clean up.
The function itself runs in a few milliseconds per pass and never blocks, so Temporal's
deadlock detector stays quiet.

This module runs inside Temporal's sandbox (passed through, since the registry of workflow
names must be the worker's own; see ``worker.sandbox_restrictions``): it must not touch Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from ... import limits, observability, registry
from ...continuation import GreenletContinuation
from ...errors import UntrustedReferenceError, error_to_json
from ...history import (
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
from ...hooks import RunClosedInfo, StepInfo, StepResult
from ...interpreter import Decision, RunInfo
from ...options import ParentClosePolicy, Status
from ...replay import Replayer
from . import changes, convert, holds, visibility
from .interactions import Interactions
from .operations import Operations

#: The sandbox's switch (``workflow.unsafe.sandbox_unrestricted`` turns it on): a step hook
#: runs with the sandbox lifted, like our telemetry, and the step inside it with the sandbox
#: back in place. Without it (a Temporal SDK that moved it) hooks stay in the sandbox.
_SANDBOX = getattr(sys.modules[workflow.unsafe.__module__], "_sandbox_unrestricted", None)


@contextlib.contextmanager
def _sandboxed() -> Iterator[None]:
    """The sandbox's restrictions back in place, inside a hook that runs with them lifted."""
    if _SANDBOX is None:
        yield
        return
    lifted = getattr(_SANDBOX, "value", False)
    _SANDBOX.value = False
    try:
        yield
    finally:
        _SANDBOX.value = lifted


def _pass_through(reference: str) -> None:
    """Import the module of a ``module:function`` reference passed through: the worker's own
    module, imported once. The registry imports with ``importlib``, which the sandbox does not
    pass through: it would run the module anew inside this run's sandbox, with restricted
    copies of ``time`` and ``datetime``, and register that copy's functions. Only the
    project's own modules are imported (the registry refuses the rest, importing nothing)."""
    module, colon, _ = reference.partition(":")
    if colon and registry._project_module(module):
        with contextlib.suppress(ImportError):  # the registry reports it
            __import__(module)


def _decode(args: Sequence[RawValue], index: int) -> Any:
    if len(args) <= index:
        return None
    return workflow.payload_converter().from_payload(args[index].payload)


@workflow.defn(dynamic=True)
class BelugaWorkflow(Operations):
    @workflow.init
    def __init__(self, args: Sequence[RawValue]) -> None:
        info = workflow.info()
        self.input = _decode(args, 0)
        self.run_info = RunInfo(info.workflow_id, info.run_id, info.workflow_type, self.input)
        self.events: list[HistoryEvent] = []
        #: The Temporal work (activity, timer, child, signal) of each step still in flight.
        self.ops: dict[int, asyncio.Task[None]] = {}
        self.op_kinds: dict[int, str] = {}
        self.children: dict[int, Any] = {}  # step -> started ChildWorkflowHandle
        self.activity_headers: dict[str, dict[str, Any]] = {}
        self.child_policies: dict[int, ParentClosePolicy] = {}
        self.published_wait: dict[str, Any] | None = None
        #: Whether the run publishes its wait as a search attribute (decided at its start).
        self.publishes = visibility.published(info.typed_search_attributes)
        self.published_label = ""
        self.interactions = Interactions(self.received, lambda name: self.query(name, ()))
        self.wait_deadlines: dict[int, str] = {}  # signal wait step -> its deadline
        self.cancel_recorded = False
        self.horizon: int | None = None
        self.live: GreenletContinuation | None = None
        self.patches: dict[str, bool] = {}
        self.status = Status.RUNNING
        self.result: Any = None
        self.stepped = False  # a decision was taken (new, or replayed)
        self.signal_traces: list[Any] = []  # of signals since the last observed step
        timeout = info.execution_timeout
        self.append(
            EventType.WORKFLOW_STARTED,
            name=info.workflow_type,
            data={"input": self.input, "timeout": timeout.total_seconds() if timeout else None},
        )
        carried = _decode(args, 1)
        for signal in carried.get("signals", []) if isinstance(carried, dict) else []:
            data = {"payload": signal.get("payload"), "sender": signal.get("sender")}
            self.append(EventType.SIGNAL_RECEIVED, name=signal.get("name", ""), data=data)

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> Any:
        # An unknown name is a deployment problem, not the run's: the exception fails this
        # workflow task, which Temporal retries until a worker that knows the name takes it.
        # A name that is not the project's code at all (`os:getpid`) fails the run instead.
        try:
            fn = self.function()
        except UntrustedReferenceError as exc:
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
        # What @workflow.defn declared is in Temporal's metadata from the start.
        self.interactions.declare(*registry.declared(self.run_info.workflow_name))
        while True:
            decision = self.step(fn)
            if decision.done and self.is_held(decision.error):
                raise holds.held_for_fix(decision.error)  # type: ignore[arg-type]
            self.settle(decision)
            if self.live is not None:
                self.live.note(self.events[self.live.seen :])  # the commands' events
            if decision.done:
                await self.drain()
                return self.finish(decision)
            self.note_change()
            try:
                await workflow.wait_condition(self.grown(len(self.events)))
            except asyncio.CancelledError:
                self.cancel_requested()

    def step(self, fn: Any) -> Decision:
        """:meth:`decide`, inside the hooks and a span when it is a new step — never while
        Temporal replays the history into a worker that lost the run. Our telemetry and the
        hooks run with the sandbox lifted, the decision (the workflow's code) never does."""
        first, self.stepped = not self.stepped, True
        if not observability.enabled() or workflow.unsafe.is_replaying():
            return self.decide(fn)
        info = self.run_info
        links, self.signal_traces = self.signal_traces, []
        return observability.step(
            StepInfo(info.workflow_id, info.run_id, info.workflow_name, "temporal"),
            lambda: self.decide(fn),
            lambda decision: StepResult(
                self.closing_status(decision)
                if decision.done and not self.is_held(decision.error)
                else Status.RUNNING,  # a held pass leaves the run running, as on the engine
                "" if decision.done else waiting_label(decision.waiting),
            ),
            parent=lambda: workflow.memo_value(observability.TRACE_MEMO, None),
            links=lambda: links,
            first=first,
            attach=False,
            guard=workflow.unsafe.sandbox_unrestricted,
            hooks_guarded=_SANDBOX is not None,
            inside=_sandboxed,
        )

    def decide(self, fn: Any) -> Decision:
        """Feed the live continuation what it has not seen; rebuild it by replay if needed.

        Temporal's sticky cache keeps this object between workflow tasks, so a step costs the
        new events only; after an eviction Temporal replays the run into a new object, one
        workflow task at a time, which costs the same again — never a replay per step.
        """
        live = self.live
        if live is None or not live.usable():
            live = self.live = GreenletContinuation(fn, self.run_info, None, self.patched)
            live.machine.max_pending = limits.max_pending_steps(temporal=True)
            return live.feed(self.events)
        return live.feed(self.events[live.seen :])

    # -- signals, cancel and queries -------------------------------------------------------
    @workflow.signal(dynamic=True)
    def signal(self, name: str, args: Sequence[RawValue]) -> None:
        if name == holds.RETRY_SIGNAL:
            return  # only there to make Temporal try a held run's workflow task again now
        self.received(name, _decode(args, 0), _decode(args, 1))

    def received(self, name: str, payload: Any, meta: Any) -> None:
        """A signal, from the dynamic handler or a declared one (see :mod:`.interactions`)."""
        sender = meta.get("sender") if isinstance(meta, dict) else None
        if isinstance(meta, dict) and meta.get(observability.TRACE_KEY):  # a traced caller
            if not workflow.unsafe.is_replaying():  # the next step links to the signal's span
                self.signal_traces.append(meta[observability.TRACE_KEY])
        self.append(
            EventType.SIGNAL_RECEIVED, name=name, data={"payload": payload, "sender": sender}
        )

    def cancel_requested(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the cancel is now an event; later awaits must not see it again
        if self.cancel_recorded:
            return
        self.cancel_recorded = True
        self.append(
            EventType.CANCEL_REQUESTED, data={"sender": workflow.cancellation_reason() or None}
        )
        # As on the built-in engine: pending activities and timers stop, children are asked
        # to stop (unless abandoned), signals to children are still delivered.
        for step in list(self.ops):
            kind = self.op_kinds.get(step)
            if kind in ("activity", "timer", "signal_timeout"):
                self.ops.pop(step).cancel()
                if kind == "timer":
                    self.append(EventType.TIMER_CANCELED, step=step, name="timer")
        for step, handle in self.children.items():
            if self.child_policies.get(step) is ParentClosePolicy.CANCEL and not handle.done():
                handle.cancel()

    @workflow.query(dynamic=True)
    def query(self, name: str, args: Sequence[RawValue]) -> Any:
        if name == "status":
            return self.status.value
        if name == "result":
            return self.result
        if name == "history":
            return [event.to_json() for event in self.events]
        replayer = Replayer(
            self.function(), self.run_info, self.horizon, lambda cid, _: self.patches.get(cid, True)
        )
        replayer.run(list(self.events))
        return replayer.query(name)

    # -- the step loop ---------------------------------------------------------------------
    def function(self) -> Any:
        reference = workflow.memo_value(convert.REFERENCE_MEMO, "")
        # Importing the workflow's module is deployment, not workflow logic: it may touch the
        # file system or Django at import time, which the sandbox refuses at run time.
        with workflow.unsafe.sandbox_unrestricted(), workflow.unsafe.imports_passed_through():
            _pass_through(reference or self.run_info.workflow_name)
            return registry.resolve_workflow(self.run_info.workflow_name, reference)

    def is_held(self, error: BaseException | None) -> bool:
        """Whether a failure of the code holds the run: a bug, under ``hold`` (docs/errors.md)."""
        return registry.holds_run(self.run_info.workflow_name, error, holds.ON_ERROR)

    def patched(self, change_id: str, deprecated: bool) -> bool:
        """``ctx.patched`` is Temporal's own: its marker is in Temporal's history."""
        if deprecated:
            workflow.deprecate_patch(change_id)
            value = True
        else:
            value = workflow.patched(change_id)
        self.patches[change_id] = value
        return value

    def grown(self, seen: int) -> Callable[[], bool]:
        """A condition: something was appended since the history had ``seen`` events."""
        return lambda: len(self.events) > seen

    def settle(self, decision: Decision) -> None:
        """Stop the Temporal work the function dropped; start work for its new commands."""
        for step in decision.cancel_timers + decision.cancel_signal_timeouts:
            op = self.ops.pop(step, None)
            if op is not None and not op.done():
                op.cancel()
                if step in decision.cancel_timers:
                    self.append(EventType.TIMER_CANCELED, step=step, name="timer")
        started = [self.issue(command) for command in decision.commands]
        self.publish_wait([wait for wait in started if wait], decision)
        queries = self.live.machine.query_handlers if self.live is not None else ()
        self.interactions.declare([w["signal"] for w in started if w], queries)

    def publish_wait(self, started: list[dict[str, Any]], decision: Decision) -> None:
        """Signal waits have no Temporal event: the memo records them for the mirror, and the
        ``BelugaWaitingFor`` search attribute what the run waits for (:mod:`.visibility`)."""
        for wait in started:
            if wait["deadline"]:
                self.wait_deadlines[wait["step"]] = wait["deadline"]
        waiting: dict[str, Any] | None = None
        if any(wait.kind == "signal" for wait in decision.waiting):
            label = waiting_label(decision.waiting)
            if self.published_wait and self.published_wait.get("for") == label:
                waiting = self.published_wait
            else:
                deadlines = [
                    self.wait_deadlines[w.step]
                    for w in decision.waiting
                    if w.step in self.wait_deadlines
                ]
                waiting = {
                    "for": label,
                    "since": workflow.now().isoformat(),
                    "deadline": min(deadlines) if deadlines else None,
                }
        self.interactions.describe_wait(waiting)
        if self.publishes:
            # The wait is the search attribute (one upsert per change); the memo records the
            # waits started, for the history read back (see visibility.py).
            if started:
                memo = {"started": started, "waiting": waiting}
                workflow.upsert_memo({convert.WAIT_MEMO: memo})
            label = waiting["for"] if waiting else ""
            if label != self.published_label:
                workflow.upsert_search_attributes([visibility.WAITING_FOR.value_set(label)])
                self.published_label = label
            self.published_wait = waiting
        elif started or waiting != self.published_wait:
            workflow.upsert_memo({convert.WAIT_MEMO: {"started": started, "waiting": waiting}})
            self.published_wait = waiting

    def issue(self, command: Command) -> dict[str, Any] | None:
        """Start the Temporal work of one command; a signal wait returns its memo entry."""
        now = workflow.now()
        if isinstance(command, ScheduleActivity):
            data = {"input": command.input, "options": command.options.to_json()}
            self.append(
                EventType.ACTIVITY_SCHEDULED,
                step=command.step,
                name=command.name,
                attempt=1,
                data=data,
            )
            self.start_op(command.step, "activity", self.activity(command))
        elif isinstance(command, StartTimer):
            self.append(
                EventType.TIMER_STARTED,
                step=command.step,
                name=command.name,
                data={
                    "duration": command.duration.total_seconds(),
                    "fire_at": (now + command.duration).isoformat(),
                },
            )
            summary = convert.timer_summary(command.step, command.name)
            self.start_op(
                command.step, "timer", self.timer(command.step, command.duration, summary, "sleep")
            )
        elif isinstance(command, WaitSignal):
            deadline = now + command.timeout if command.timeout is not None else None
            wait = {
                "signal": command.name,
                "step": command.step,
                "timeout": command.timeout.total_seconds() if command.timeout else None,
                "deadline": deadline.isoformat() if deadline else None,
            }
            self.append(
                EventType.SIGNAL_WAIT_STARTED,
                step=command.step,
                name=command.name,
                data={"timeout": wait["timeout"], "deadline": wait["deadline"]},
            )
            if command.timeout is not None:
                summary = convert.signal_timeout_summary(command.step, command.name)
                timer = self.timer(command.step, command.timeout, summary, "signal_timeout")
                self.start_op(command.step, "signal_timeout", timer)
            return wait
        elif isinstance(command, StartChild):
            self.append(
                EventType.CHILD_WORKFLOW_SCHEDULED,
                step=command.step,
                name=command.name,
                data=command.to_json(),
            )
            self.child_policies[command.step] = command.parent_close_policy
            self.start_op(command.step, "child", self.child(command))
        elif isinstance(command, SignalChild):
            self.append(
                EventType.CHILD_SIGNAL_SCHEDULED,
                step=command.step,
                name=command.name,
                data=command.to_json(),
            )
            self.start_op(command.step, "child-signal", self.signal_child(command))
        elif isinstance(command, RecordMarker):  # only without a patch policy: never here
            self.append(EventType.MARKER_RECORDED, name=command.name)
        return None

    def closing_status(self, decision: Decision) -> Status:
        """The status :meth:`finish` closes the run with."""
        if decision.continue_as_new is not None:
            return Status.CONTINUED_AS_NEW
        if decision.error is None:
            return Status.COMPLETED
        return Status.CANCELED if decision.canceled and self.cancel_recorded else Status.FAILED

    def report_close(self, decision: Decision) -> None:
        """Tell the hooks and the metrics, once (not on replay), that the run closes."""
        if not observability.enabled() or workflow.unsafe.is_replaying():
            return
        info, status = self.run_info, self.closing_status(decision)
        failed = status is Status.FAILED and decision.error is not None
        closed = RunClosedInfo(
            info.workflow_id,
            info.run_id,
            info.workflow_name,
            status,
            decision.result if status is Status.COMPLETED else None,
            error_to_json(decision.error) if failed else None,  # type: ignore[arg-type]
            "temporal",
        )
        with workflow.unsafe.sandbox_unrestricted():
            observability.run_closed(closed)

    def finish(self, decision: Decision) -> Any:
        self.report_close(decision)
        if self.published_label:  # a run that ends while waiting waits no more
            workflow.upsert_search_attributes([visibility.WAITING_FOR.value_set("")])
            self.published_label = ""
        elif self.published_wait is not None and not self.publishes:
            workflow.upsert_memo({convert.WAIT_MEMO: {"started": [], "waiting": None}})
        self.published_wait = None
        self.note_change()
        if decision.continue_as_new is not None:
            self.status = Status.CONTINUED_AS_NEW
            carried = {"signals": decision.continue_as_new.signals}
            workflow.continue_as_new(args=[decision.continue_as_new.input, carried])
        if decision.error is None:
            self.status, self.result = Status.COMPLETED, decision.result
            return decision.result
        if decision.canceled and self.cancel_recorded:
            self.status = Status.CANCELED
            raise asyncio.CancelledError()  # Temporal records the run as canceled
        self.status = Status.FAILED
        raise convert.to_temporal_failure(decision.error)

    def note_change(self) -> None:
        if not workflow.unsafe.is_replaying():
            changes.note(self.run_info.workflow_id, self.run_info.run_id)
