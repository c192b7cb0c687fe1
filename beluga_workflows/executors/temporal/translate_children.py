"""Translating the Temporal history of a run that composes: children, signals to them, patches.

:class:`CompositionFold` is the part of :class:`~.translate._Reader` (a pure left fold over
Temporal's history events) that reads child workflows (``StartChildWorkflowExecution…`` and
``ChildWorkflowExecution…`` events; our step comes from the child's memo), the signals a
parent sends them (``SignalExternalWorkflowExecution…``; the step rides in the signal's second
argument) and ``workflow.patched`` markers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...errors import WorkflowAlreadyStartedError, error_to_json
from ...history import EventType, HistoryEvent
from ...options import Status
from . import convert


class CompositionFold:
    events: list[HistoryEvent]
    child_steps: dict[int, tuple[int, str, str]]  # initiated event id -> step, name, child id
    children: dict[int, dict[str, Any]]  # step -> {"id", "run_id", "workflow", "status"}
    open_children: dict[int, str]  # initiated event id -> name
    signal_steps: dict[int, tuple[int, str]]  # initiated event id -> step, signal name
    payloads: Any

    def add(self, kind: EventType, at: datetime, **fields: Any) -> None:
        raise NotImplementedError

    def values(self, payloads: Any) -> list[Any]:
        raise NotImplementedError

    def value(self, payload: Any) -> Any:
        raise NotImplementedError

    def failure(self, failure: Any) -> BaseException:
        raise NotImplementedError

    def on_start_child_workflow_execution_initiated_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        memo = a.memo.fields
        if convert.PARENT_STEP_MEMO not in memo:
            return
        step = int(self.value(memo[convert.PARENT_STEP_MEMO]))
        name = a.workflow_type.name
        self.child_steps[event.event_id] = (step, name, a.workflow_id)
        self.open_children[event.event_id] = name
        args = self.values(a.input)
        timeout = a.workflow_execution_timeout.ToTimedelta().total_seconds() or None
        policy = "abandon" if a.parent_close_policy == 2 else "cancel"
        data = {
            "id": a.workflow_id,
            "input": args[0] if args else None,
            "timeout": timeout,
            "parent_close_policy": policy,
        }
        self.add(EventType.CHILD_WORKFLOW_SCHEDULED, at, step=step, name=name, data=data)

    def _child(self, initiated: int) -> tuple[int, str, str] | None:
        return self.child_steps.get(initiated)

    def on_child_workflow_execution_started_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        found = self._child(a.initiated_event_id)
        if found is None:
            return
        step, name, child_id = found
        run_id = a.workflow_execution.run_id
        self.children[step] = {"id": child_id, "run_id": run_id, "workflow": name}
        self.children[step]["status"] = Status.RUNNING.value
        data = {"id": child_id, "run_id": run_id}
        self.add(EventType.CHILD_WORKFLOW_STARTED, at, step=step, name=name, data=data)

    def on_start_child_workflow_execution_failed_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        found = self._child(a.initiated_event_id)
        if found is None:
            return
        step, name, child_id = found
        self.open_children.pop(a.initiated_event_id, None)
        error = error_to_json(WorkflowAlreadyStartedError(child_id))
        self.add(
            EventType.CHILD_WORKFLOW_START_FAILED, at, step=step, name=name, data={"error": error}
        )

    def _child_closed(self, a: Any, at: datetime, status: Status, error: Any = None) -> None:
        found = self._child(a.initiated_event_id)
        if found is None:
            return
        step, name, child_id = found
        self.open_children.pop(a.initiated_event_id, None)
        self.children.get(step, {})["status"] = status.value
        data: dict[str, Any] = {"id": child_id, "run_id": a.workflow_execution.run_id}
        if status is Status.COMPLETED:
            values = self.values(a.result)
            data["result"] = values[0] if values else None
            self.add(EventType.CHILD_WORKFLOW_COMPLETED, at, step=step, name=name, data=data)
            return
        data.update(status=status.value, error=error)
        self.add(EventType.CHILD_WORKFLOW_FAILED, at, step=step, name=name, data=data)

    def on_child_workflow_execution_completed_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        self._child_closed(a, at, Status.COMPLETED)

    def on_child_workflow_execution_failed_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        error = convert.error_json_from_failure(self.failure(a.failure))
        self._child_closed(a, at, Status.FAILED, error)

    def on_child_workflow_execution_canceled_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        error = {"type": "WorkflowCanceledError", "message": "The child workflow was canceled."}
        self._child_closed(a, at, Status.CANCELED, error)

    def on_child_workflow_execution_timed_out_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        error = {"type": "WorkflowTimeoutError", "message": "The child workflow timed out."}
        self._child_closed(a, at, Status.TIMED_OUT, error)

    def on_child_workflow_execution_terminated_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        error = {"type": "WorkflowTerminated", "message": "The child workflow was terminated."}
        self._child_closed(a, at, Status.FAILED, error)

    def on_signal_external_workflow_execution_initiated_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        args = self.values(a.input)
        meta = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        if "step" not in meta:
            return
        step = int(meta["step"])
        self.signal_steps[event.event_id] = (step, a.signal_name)
        child_step = next(
            (
                s
                for s, child in self.children.items()
                if child["id"] == a.workflow_execution.workflow_id
            ),
            None,
        )
        data = {
            "child_step": child_step,
            "id": a.workflow_execution.workflow_id,
            "payload": args[0] if args else None,
            "sender": meta.get("sender"),
        }
        self.add(EventType.CHILD_SIGNAL_SCHEDULED, at, step=step, name=a.signal_name, data=data)

    def on_external_workflow_execution_signaled_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        if a.initiated_event_id in self.signal_steps:
            step, name = self.signal_steps[a.initiated_event_id]
            self.add(EventType.CHILD_SIGNAL_SENT, at, step=step, name=name)

    def on_signal_external_workflow_execution_failed_event_attributes(
        self, event: Any, a: Any, at: datetime
    ) -> None:
        if a.initiated_event_id in self.signal_steps:
            step, name = self.signal_steps[a.initiated_event_id]
            error = {"type": "WorkflowClosedError", "message": f"Cannot signal {name!r}."}
            self.add(EventType.CHILD_SIGNAL_FAILED, at, step=step, name=name, data={"error": error})

    def on_marker_recorded_event_attributes(self, event: Any, a: Any, at: datetime) -> None:
        patch = convert.patch_marker(a, self.payloads)
        if patch is not None:
            change_id, deprecated = patch
            data = {"deprecated": deprecated}
            self.add(EventType.MARKER_RECORDED, at, name=change_id, data=data)
