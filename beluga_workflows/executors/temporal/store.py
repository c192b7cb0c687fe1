"""``TemporalWorkflowStore``: the ``WorkflowStore`` interface over Temporal itself.

``list`` is a Temporal visibility query on the executor's task queue (newest first), so it
sees every run Temporal has, including ones started with the Temporal CLI, and filters there:
``status`` on Temporal's ``ExecutionStatus``, ``workflow`` on the workflow type and
``waiting_for`` (a wait involving a signal, ``signal:approval``) on the ``BelugaWaitingFor``
search attribute (:mod:`.visibility`). Visibility holds summaries: listed states carry ids,
workflow, status, times and a signal wait in progress (the search attribute, or the memo of
a run that does not publish it), but not input, result or error — ``load`` reads the full
run from history.
``save`` is refused, always, with a :class:`~beluga_workflows.errors.WorkflowError` saying why:
a Temporal run's status, result and error are what its Temporal history says, and only the
run appends to that history (its workflow code, or Temporal itself on a timeout or a
terminate). There is nowhere to write a state to: a row written into the mirror would be
overwritten at its next copy, and the built-in store's ``save`` (a summary update) has no
Temporal counterpart. Change a run through the executor (``signal``, ``cancel``); ``delete``
removes a finished one.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from ...errors import WorkflowError, WorkflowNotFoundError
from ...options import Config, Status
from ...state import WorkflowState
from ...stores import WorkflowStore
from . import convert, visibility
from .executor import TemporalExecutor


class TemporalWorkflowStore(WorkflowStore):
    def __init__(self, executor: TemporalExecutor | None = None, config: Config | None = None):
        self.executor = executor or TemporalExecutor(config)

    def save(self, state: WorkflowState) -> None:
        """Refused: see the module docstring."""
        raise WorkflowError(
            f"TemporalWorkflowStore cannot save the state of {state.workflow_id!r}: on "
            "Temporal a run's status, result and error come from its Temporal history, which "
            "only the run itself appends to (its workflow code, or Temporal on a timeout or "
            "terminate). Change the run through the executor instead: signal() or cancel(); "
            "delete() removes a finished run."
        )

    def load(self, workflow_id: str) -> WorkflowState:
        return self.executor.describe(workflow_id)

    def list(
        self,
        status: Status | str | None = None,
        limit: int | None = None,
        *,
        workflow: str | None = None,
        waiting_for: str | None = None,
    ) -> list[WorkflowState]:
        """Newest first. ``waiting_for`` lists running runs only, and only those that publish
        the search attribute (started while the namespace declared it)."""
        query = f"TaskQueue = {convert.literal(self.executor.task_queue)}"
        if status is not None:
            query += f" AND {convert.STATUS_TO_QUERY[Status(status)]}"
        if workflow is not None:
            query += f" AND WorkflowType = {convert.literal(workflow)}"
        if waiting_for is not None:
            query += f" AND {convert.STATUS_TO_QUERY[Status.RUNNING]}"
            query += f" AND {visibility.WAITING_FOR.name} = {convert.literal(waiting_for)}"

        async def fetch(client: Client) -> list[WorkflowState]:
            return [
                await _state(execution)
                async for execution in client.list_workflows(query, limit=limit)
            ]

        states: list[WorkflowState] = self.executor.call(fetch)
        return sorted(states, key=lambda s: (s.created_at is not None, s.created_at), reverse=True)

    def delete(self, workflow_id: str) -> None:
        """Delete the finished runs with this id from Temporal, and their mirrored rows."""
        from temporalio.api.common.v1 import WorkflowExecution as Execution
        from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

        from . import mirror

        query = f"WorkflowId = {convert.literal(workflow_id)}"

        async def delete(client: Client) -> int:
            executions = [e async for e in client.list_workflows(query)]
            if not executions:
                raise WorkflowNotFoundError(workflow_id)
            if any(convert.status_from_temporal(e.status) is Status.RUNNING for e in executions):
                raise WorkflowError(
                    f"Workflow {workflow_id!r} is still running; cancel it before deleting it."
                )
            for execution in executions:
                await client.workflow_service.delete_workflow_execution(
                    DeleteWorkflowExecutionRequest(
                        namespace=client.namespace,
                        workflow_execution=Execution(
                            workflow_id=workflow_id, run_id=execution.run_id
                        ),
                    )
                )
            return len(executions)

        try:
            self.executor.call(delete)
        except RPCError as exc:
            raise WorkflowError(f"Temporal refused to delete {workflow_id!r}: {exc}") from exc
        mirror.forget(workflow_id)


async def _state(execution: WorkflowExecution) -> WorkflowState:
    status = convert.status_from_temporal(execution.status)
    label = execution.typed_search_attributes.get(visibility.WAITING_FOR)
    if label is not None:  # a run that publishes its wait: no memo to decode
        waiting = {"for": label} if label and status is Status.RUNNING else None
    else:
        memo: dict[str, Any] = dict(await execution.memo())
        wait = memo.get(convert.WAIT_MEMO)
        waiting = wait.get("waiting") if isinstance(wait, dict) else None
        if not isinstance(waiting, dict) or status is not Status.RUNNING:
            waiting = None
    return WorkflowState(
        workflow_id=execution.id,
        run_id=execution.run_id,
        workflow=execution.workflow_type,
        status=status,
        created_at=execution.start_time,
        updated_at=execution.close_time or execution.start_time,
        waiting_for=str(waiting.get("for", "")) if waiting else "",
    )
