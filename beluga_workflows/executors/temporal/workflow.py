"""The one Temporal workflow that runs every beluga workflow function.

:class:`BelugaWorkflow` is a *dynamic* Temporal workflow: its type is the beluga workflow name,
so Temporal's UI and CLI show ``research``, not a generic wrapper. It drives the shared replay
interpreter exactly like the built-in engine does, in Temporal's async, deterministic style:

1. keep a local list of :class:`~beluga_workflows.history.HistoryEvent` (our vocabulary);
2. ``Replayer.run(events)`` runs the sync workflow function from the start until it finishes
   or reaches a step the events cannot answer;
3. turn the new command into a Temporal primitive — an activity, a timer, or nothing but a
   memo entry for a signal wait (plus a timer for its timeout) — as a task that appends the
   outcome event when it resolves;
4. wait until any event is appended (an outcome, a signal from the dynamic signal handler, a
   cancel request) and go to 2.

Races are settled the way the interpreter settles them: by the order of the local events,
which is the order Temporal delivered them, and Temporal replays that order exactly. A
cancel request (``asyncio.CancelledError`` from Temporal) becomes ``CANCEL_REQUESTED``, the
pending step's Temporal work is cancelled, and the loop goes on so the function can catch
``WorkflowCanceledError`` and run cleanup activities. The function itself runs in a few
milliseconds per pass and never blocks, so Temporal's deadlock detector stays quiet.

This module runs inside Temporal's sandbox (with every module passed through, since the
registry of workflow names must be the worker's own): it must not touch Django.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError

from ... import registry
from ...history import EventType, HistoryEvent, ScheduleActivity, StartTimer, WaitSignal
from ...interpreter import Decision, Replayer, RunInfo
from ...options import Status
from . import changes, convert


def _decode(args: Sequence[RawValue], index: int) -> Any:
    if len(args) <= index:
        return None
    return workflow.payload_converter().from_payload(args[index].payload)


@workflow.defn(dynamic=True)
class BelugaWorkflow:
    @workflow.init
    def __init__(self, args: Sequence[RawValue]) -> None:
        info = workflow.info()
        self.input = _decode(args, 0)
        self.run_info = RunInfo(info.workflow_id, info.run_id, info.workflow_type, self.input)
        self.events: list[HistoryEvent] = []
        #: The Temporal work (activity or timer task) of the pending step, by step.
        self.ops: dict[int, asyncio.Task[None]] = {}
        #: The step of the signal wait published in the memo, if any.
        self.memo_step: int | None = None
        self.cancel_recorded = False
        self.status = Status.RUNNING
        self.result: Any = None
        timeout = info.execution_timeout
        self.append(
            EventType.WORKFLOW_STARTED,
            name=info.workflow_type,
            data={"input": self.input, "timeout": timeout.total_seconds() if timeout else None},
        )

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> Any:
        # An unknown name is a deployment problem, not the run's: the exception fails this
        # workflow task, which Temporal retries until a worker that knows the name takes it.
        fn = self.function()
        while True:
            decision = Replayer(fn, self.run_info).run(self.events)
            self.settle(decision)
            if decision.done:
                return self.finish(decision)
            self.note_change()
            try:
                await workflow.wait_condition(self.grown(len(self.events)))
            except asyncio.CancelledError:
                self.cancel_requested()

    # -- signals, cancel and queries -------------------------------------------------------
    @workflow.signal(dynamic=True)
    def signal(self, name: str, args: Sequence[RawValue]) -> None:
        meta = _decode(args, 1)
        sender = meta.get("sender") if isinstance(meta, dict) else None
        payload = _decode(args, 0)
        self.append(
            EventType.SIGNAL_RECEIVED, name=name, data={"payload": payload, "sender": sender}
        )

    def cancel_requested(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the cancel is now an event; later awaits must not see it again
        if not self.cancel_recorded:
            self.cancel_recorded = True
            self.append(
                EventType.CANCEL_REQUESTED, data={"sender": workflow.cancellation_reason() or None}
            )

    @workflow.query(dynamic=True)
    def query(self, name: str, args: Sequence[RawValue]) -> Any:
        if name == "status":
            return self.status.value
        if name == "result":
            return self.result
        if name == "history":
            return [event.to_json() for event in self.events]
        replayer = Replayer(self.function(), self.run_info)
        replayer.run(list(self.events))
        return replayer.query(name)

    # -- the step loop ---------------------------------------------------------------------
    def function(self) -> Any:
        reference = workflow.memo_value(convert.REFERENCE_MEMO, "")
        # Importing the workflow's module is deployment, not workflow logic: it may touch the
        # file system or Django at import time, which the sandbox refuses at run time.
        with workflow.unsafe.sandbox_unrestricted(), workflow.unsafe.imports_passed_through():
            return registry.resolve(self.run_info.workflow_name, reference)

    def append(
        self,
        type: EventType,
        *,
        step: int | None = None,
        name: str = "",
        attempt: int = 0,
        data: dict[str, Any] | None = None,
    ) -> None:
        event = HistoryEvent(
            sequence=len(self.events) + 1,
            type=type,
            timestamp=workflow.now(),
            step=step,
            name=name,
            attempt=attempt,
            data=data or {},
        )
        self.events.append(event)

    def grown(self, seen: int) -> Callable[[], bool]:
        """A condition: something was appended since the history had ``seen`` events."""
        return lambda: len(self.events) > seen

    def settle(self, decision: Decision) -> None:
        """Stop Temporal work of steps the function left; start work for its new command."""
        waiting_step = decision.waiting[2] if decision.waiting else None
        for step in [s for s in self.ops if s != waiting_step]:
            self.ops.pop(step).cancel()
        new_wait = any(isinstance(c, WaitSignal) for c in decision.commands)
        if self.memo_step is not None and self.memo_step != waiting_step and not new_wait:
            workflow.upsert_memo({convert.WAIT_MEMO: None})
            self.memo_step = None
        for command in decision.commands:
            self.issue(command)

    def issue(self, command: ScheduleActivity | StartTimer | WaitSignal) -> None:
        now = workflow.now()
        if isinstance(command, ScheduleActivity):
            self.append(
                EventType.ACTIVITY_SCHEDULED,
                step=command.step,
                name=command.name,
                attempt=1,
                data={"input": command.input, "options": command.options.to_json()},
            )
            self.ops[command.step] = asyncio.create_task(self.activity(command))
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
            self.start_timer(command.step, command.duration, "sleep")
        else:
            deadline = now + command.timeout if command.timeout is not None else None
            wait = {
                "signal": command.name,
                "step": command.step,
                "since": now.isoformat(),
                "timeout": command.timeout.total_seconds() if command.timeout else None,
                "deadline": deadline.isoformat() if deadline else None,
            }
            self.append(
                EventType.SIGNAL_WAIT_STARTED,
                step=command.step,
                name=command.name,
                data={"timeout": wait["timeout"], "deadline": wait["deadline"]},
            )
            workflow.upsert_memo({convert.WAIT_MEMO: wait})
            self.memo_step = command.step
            if command.timeout is not None:
                self.start_timer(command.step, command.timeout, "signal_timeout", command.name)

    async def activity(self, command: ScheduleActivity) -> None:
        options = command.options
        try:
            result = await workflow.execute_activity(
                command.reference,
                {"name": command.name, "input": command.input, "options": options.to_json()},
                activity_id=str(command.step),
                start_to_close_timeout=options.timeout,
                retry_policy=convert.retry_policy(options),
                summary=command.name,
            )
        except asyncio.CancelledError:
            return  # the step is over for the workflow (canceled): its outcome no longer counts
        except ActivityError as err:
            attempt, error = convert.activity_failure(err, command.name, options)
            self.append(
                EventType.ACTIVITY_FAILED,
                step=command.step,
                name=command.name,
                attempt=attempt,
                data={"error": error},
            )
            return
        self.append(
            EventType.ACTIVITY_COMPLETED,
            step=command.step,
            name=command.name,
            data={"result": result},
        )

    def start_timer(self, step: int, duration: timedelta, kind: str, signal: str = "") -> None:
        summary = (
            convert.sleep_summary(step)
            if kind == "sleep"
            else convert.signal_timeout_summary(step, signal)
        )
        self.ops[step] = asyncio.create_task(self.timer(step, duration, summary, kind))

    async def timer(self, step: int, duration: timedelta, summary: str, kind: str) -> None:
        try:
            await workflow.sleep(duration, summary=summary)
        except asyncio.CancelledError:
            return
        self.append(EventType.TIMER_FIRED, step=step, name=kind)

    def finish(self, decision: Decision) -> Any:
        if self.memo_step is not None:
            workflow.upsert_memo({convert.WAIT_MEMO: None})
            self.memo_step = None
        self.note_change()
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
