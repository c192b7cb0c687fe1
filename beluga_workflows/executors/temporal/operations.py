"""The Temporal work of a run's steps: one asyncio task per outstanding command.

:class:`Operations` is the half of :class:`~.workflow.BelugaWorkflow` that talks to Temporal's
primitives. Each command the interpreter hands out becomes a task — an activity, a timer, a
child workflow, a signal to a child — that awaits Temporal and appends the outcome event to
the run's local history when Temporal resolves it, in the order Temporal delivers outcomes
(which it replays exactly). Several tasks in flight are several Temporal commands in flight:
Temporal's history shows them running in parallel.

Like the workflow, this runs inside Temporal's sandbox: no Django here.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError
from temporalio.exceptions import WorkflowAlreadyStartedError as TemporalAlreadyStarted

from ...errors import WorkflowAlreadyStartedError, WorkflowClosedError, error_to_json
from ...history import EventType, HistoryEvent, ScheduleActivity, SignalChild, StartChild
from ...options import ParentClosePolicy
from . import convert


class Operations:
    events: list[HistoryEvent]
    #: The Temporal work of each step still in flight, and its kind.
    ops: dict[int, asyncio.Task[None]]
    op_kinds: dict[int, str]
    children: dict[int, Any]  # step -> started ChildWorkflowHandle

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

    def start_op(self, step: int, kind: str, coro: Any) -> None:
        self.op_kinds[step] = kind
        self.ops[step] = asyncio.create_task(coro)

    def done(self, step: int) -> None:
        self.ops.pop(step, None)

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
            self.done(command.step)
            self.append(
                EventType.ACTIVITY_FAILED,
                step=command.step,
                name=command.name,
                attempt=attempt,
                data={"error": error},
            )
            return
        self.done(command.step)
        self.append(
            EventType.ACTIVITY_COMPLETED,
            step=command.step,
            name=command.name,
            data={"result": result},
        )

    async def timer(self, step: int, duration: timedelta, summary: str, kind: str) -> None:
        try:
            await workflow.sleep(duration, summary=summary)
        except asyncio.CancelledError:
            return
        self.done(step)
        self.append(EventType.TIMER_FIRED, step=step, name=kind)

    async def child(self, command: StartChild) -> None:
        step = command.step
        policy = (
            workflow.ParentClosePolicy.ABANDON
            if command.parent_close_policy is ParentClosePolicy.ABANDON
            else workflow.ParentClosePolicy.REQUEST_CANCEL
        )
        try:
            handle = await workflow.start_child_workflow(
                command.name,
                command.input,
                id=command.workflow_id,
                task_queue=workflow.info().task_queue,
                execution_timeout=command.timeout,
                parent_close_policy=policy,
                memo={convert.REFERENCE_MEMO: command.reference, convert.PARENT_STEP_MEMO: step},
                static_summary=convert.child_summary(step),
            )
        except TemporalAlreadyStarted:
            self.done(step)
            error = error_to_json(WorkflowAlreadyStartedError(command.workflow_id))
            self.append(
                EventType.CHILD_WORKFLOW_START_FAILED,
                step=step,
                name=command.name,
                data={"error": error},
            )
            return
        self.children[step] = handle
        self.append(
            EventType.CHILD_WORKFLOW_STARTED,
            step=step,
            name=command.name,
            data={"id": command.workflow_id, "run_id": handle.first_execution_run_id},
        )
        try:
            result = await handle
        except ChildWorkflowError as err:
            status, error = convert.child_failure(err)
            data = {"id": command.workflow_id, "status": status.value, "error": error}
            self.done(step)
            self.append(EventType.CHILD_WORKFLOW_FAILED, step=step, name=command.name, data=data)
            return
        self.done(step)
        self.append(
            EventType.CHILD_WORKFLOW_COMPLETED,
            step=step,
            name=command.name,
            data={"id": command.workflow_id, "result": result},
        )

    async def signal_child(self, command: SignalChild) -> None:
        child_step = command.child_step
        await workflow.wait_condition(
            lambda: child_step in self.children or child_step not in self.ops
        )
        handle = self.children.get(child_step)
        try:
            if handle is None:
                raise RuntimeError("the child did not start")
            meta = {"sender": command.sender, "step": command.step}
            await handle.signal(command.name, args=[command.payload, meta])
        except Exception:  # the child is gone: closed, or never started
            action = f"signal {command.name!r} to"
            error = error_to_json(WorkflowClosedError(command.child_id, "closed", action))
            self.done(command.step)
            self.append(
                EventType.CHILD_SIGNAL_FAILED,
                step=command.step,
                name=command.name,
                data={"error": error},
            )
            return
        self.done(command.step)
        self.append(EventType.CHILD_SIGNAL_SENT, step=command.step, name=command.name)

    async def drain(self) -> None:
        """Before the run closes: children it started have started, its signals are sent."""

        def settled() -> bool:
            return all(
                step in self.children if kind == "child" else kind != "child-signal"
                for step, kind in self.op_kinds.items()
                if step in self.ops
            )

        await workflow.wait_condition(settled)
