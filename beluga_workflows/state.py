"""A run as every executor, store, the CLI and the API describe it (:class:`WorkflowState`),
and how rows of the run table become one (:func:`run_state`, :func:`run_states`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .options import Status

if TYPE_CHECKING:  # the models need Django set up; `workflow` must import without it
    from .models import WorkflowRun


@dataclass(frozen=True)
class WorkflowState:
    """A run as executors, stores, the CLI and the API describe it."""

    workflow_id: str
    run_id: str
    workflow: str
    status: Status
    input: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    waiting_for: str = ""
    waiting_since: datetime | None = None
    waiting_deadline: datetime | None = None
    #: The parent run's workflow id and run id, for a child workflow.
    parent_id: str | None = None
    parent_run_id: str | None = None
    #: Child workflows this run started: ``{"id", "run_id", "workflow", "status"}`` each.
    children: tuple[dict[str, Any], ...] = ()
    #: The run this one continues, and the run that continues it (``continue_as_new``).
    continued_from: str | None = None
    continued_as: str | None = None
    #: Running, and what it waits on has no live worker to serve it (:mod:`.heartbeats`).
    no_worker: bool = False
    #: Running, but held for a fix (``ON_WORKFLOW_ERROR = "hold"``): ``{"error": {"type",
    #: "message", ...}, "traceback": the user's frames, "since", "attempts", "next_retry"}``;
    #: None when the run's code is fine (docs/errors.md).
    held: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.workflow_id,
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.status.value,
            "input": self.input,
            "result": self.result,
            "error": self.error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "waiting_for": self.waiting_for,
            "waiting_since": iso(self.waiting_since),
            "waiting_deadline": iso(self.waiting_deadline),
            "parent_id": self.parent_id,
            "parent_run_id": self.parent_run_id,
            "children": list(self.children),
            "continued_from": self.continued_from,
            "continued_as": self.continued_as,
            "no_worker": self.no_worker,
            "held": self.held,
        }


def run_states(
    runs: list[WorkflowRun], children: bool = False, payloads: bool = True
) -> list[WorkflowState]:
    """Rows as every executor describes them, ``no_worker`` included (a few queries for the
    whole list, see :func:`.heartbeats.unserved`)."""
    from . import heartbeats

    unserved = heartbeats.unserved(runs)
    return [
        run_state(run, children, no_worker=run.pk in unserved, payloads=payloads) for run in runs
    ]


def run_state(
    run: WorkflowRun, children: bool = False, no_worker: bool = False, payloads: bool = True
) -> WorkflowState:
    """A run as every executor describes it; ``children`` lists them (one more query).
    ``no_worker`` is the caller's to find out (:func:`run_states` does). ``payloads=False``
    leaves ``input``, ``result`` and ``error`` out (None) without reading them: the rows of a
    list, whose payloads stay in the database (:mod:`.previews`)."""
    parent = run.parent
    kids: tuple[dict[str, Any], ...] = ()
    if children:
        kids = tuple(
            {"id": wid, "run_id": str(rid), "workflow": name, "status": status}
            for wid, rid, name, status in run.children.order_by("parent_step", "id").values_list(
                "workflow_id", "run_id", "workflow_name", "status"
            )
        )
    successor = (
        run.continuations.values_list("run_id", flat=True).first()
        if run.status == Status.CONTINUED_AS_NEW.value
        else None
    )
    return WorkflowState(
        workflow_id=run.workflow_id,
        run_id=str(run.run_id),
        workflow=run.workflow_name,
        status=Status(run.status),
        input=run.input if payloads else None,
        result=run.result if payloads else None,
        error=run.error if payloads else None,
        created_at=run.created_at,
        updated_at=run.updated_at,
        waiting_for=run.waiting_for,
        waiting_since=run.waiting_since,
        waiting_deadline=run.waiting_deadline,
        parent_id=parent.workflow_id if parent else None,
        parent_run_id=str(parent.run_id) if parent else None,
        children=kids,
        continued_from=str(run.continued_from.run_id) if run.continued_from else None,
        continued_as=str(successor) if successor else None,
        no_worker=no_worker,
        held=held_info(run),
    )


def held_info(run: WorkflowRun) -> dict[str, Any] | None:
    """What ``describe()`` says of a held run: the stored hold and when it is tried again."""
    if not run.held or run.status != Status.RUNNING.value:
        return None
    retry = run.held_retry_at
    return {**run.held, "next_retry": retry.isoformat() if retry else None}
