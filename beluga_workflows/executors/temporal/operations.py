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
from . import convert, visibility


class Operations:
    events: list[HistoryEvent]
    #: The Temporal work of each step still in flight, and its kind.
    ops: dict[int, asyncio.Task[None]]
    op_kinds: dict[int, str]
    children: dict[int, Any]  # step -> started ChildWorkflowHandle
    publishes: bool  # the run publishes its wait as a search attribute
    #: The header of each activity about to be scheduled, by activity id (the worker's
    #: interceptor takes it from here: ``workflow.execute_activity`` has no headers).
    activity_headers: dict[str, dict[str, Any]]
    legacy: bool | None = None

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
            result = await self.execute_activity(command)
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

    def execute_activity(self, command: ScheduleActivity) -> Any:
        """Temporal's activity, as the plain SDK would schedule it: its type the activity's
        name, its one argument the input. Where the function is, for our worker, and the
        step's options as our history records them travel in a header (see
        :data:`~.convert.ACTIVITY_HEADER`, set by the worker's interceptor)."""
        options = command.options
        step, name = command.step, command.name
        if self.legacy_activities():  # a run an earlier version started: as it scheduled them
            spec = {"name": name, "input": command.input, "options": options.to_json()}
            kind, arg, activity_id, summary = command.reference, spec, str(step), name
        else:
            activity_id = convert.activity_id(step, name)
            kind, arg, summary = name, command.input, None
            self.activity_headers[activity_id] = {
                "reference": command.reference,
                "step": step,
                "options": options.to_json(),
            }
        return workflow.execute_activity(
            kind,
            arg,
            activity_id=activity_id,
            task_queue=options.queue,  # None: the run's own task queue
            start_to_close_timeout=options.timeout,
            schedule_to_start_timeout=options.schedule_to_start_timeout,
            heartbeat_timeout=options.heartbeat_timeout,
            schedule_to_close_timeout=options.schedule_to_close_timeout,
            retry_policy=convert.retry_policy(options),
            summary=summary,
        )

    def legacy_activities(self) -> bool:
        """Whether an earlier version started this run (see :data:`~.convert.ACTIVITIES_MEMO`)."""
        if self.legacy is None:
            self.legacy = (
                workflow.memo_value(convert.REFERENCE_MEMO, None) is not None
                and workflow.memo_value(convert.ACTIVITIES_MEMO, None) is None
            )
        return self.legacy

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
                memo={
                    convert.REFERENCE_MEMO: command.reference,
                    convert.PARENT_STEP_MEMO: step,
                    convert.ACTIVITIES_MEMO: convert.ACTIVITIES_NAMED,
                },
                static_summary=convert.child_summary(step),
                # A child publishes its wait as its parent does (see visibility.py).
                search_attributes=visibility.at_start() if self.publishes else None,
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
