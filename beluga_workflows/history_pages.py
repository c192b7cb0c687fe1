"""A run's history read a page at a time: what the REST events endpoint and ``manage.py
workflow history`` read, so neither holds a long history whole.

A page is the events of one run after a sequence number (``after``), oldest first, at most
``limit`` of them; ``more`` says whether the run has events past the page. A page also stops
early, after at least one event, once its events' details pass :data:`PAGE_BYTES`: an event may
carry a 1 MiB payload, and a hundred of them would make a 100 MB page. Pages name their
run (``run_id``): an id can be run again (``continue_as_new``, or a new start after the last
run closed), and the pages that follow must read the same run, not the id's newest.

On the built-in engine a page is one indexed query on ``(run, sequence)``. Other executors
(Temporal) answer ``history(id)`` whole, from their own store; their pages are cut from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from django.db.models import TextField
from django.db.models.functions import Cast

from .errors import WorkflowError, WorkflowNotFoundError
from .executors import get_executor
from .executors.default import DefaultExecutor
from .history import HistoryEvent
from .previews import OctetLength

#: Events per page of the REST endpoint unless the request says otherwise, and at most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

#: Bytes of event details (as JSON text) past which a page stops, after at least one event.
PAGE_BYTES = 4 * 1024 * 1024

#: Events the CLI reads per query: at most ``MAX_PAYLOAD_BYTES`` each, so a batch stays small.
STREAM_BATCH = 100


@dataclass(frozen=True)
class HistoryPage:
    workflow_id: str
    run_id: str
    events: list[HistoryEvent]
    #: Whether the run has events after this page's last one.
    more: bool

    @property
    def last_sequence(self) -> int | None:
        return self.events[-1].sequence if self.events else None


class RunChangedError(WorkflowError):
    """The run a page was asked of is no longer the one the executor reads for this id."""

    def __init__(self, workflow_id: str, run_id: str, current: str) -> None:
        self.workflow_id, self.run_id, self.current = workflow_id, run_id, current
        super().__init__(
            f"Run {run_id} of {workflow_id!r} is no longer its current run ({current}); this "
            "executor reads only the current run's history. Read it from its first page "
            "(without run_id and after)."
        )


def read_page(
    workflow_id: str, after: int = 0, limit: int = DEFAULT_LIMIT, run_id: str | None = None
) -> HistoryPage:
    """Events of the run with sequence above ``after``, at most ``limit``; of run ``run_id``
    if given (else the running run of the id, else its latest). ``WorkflowNotFoundError``
    when the id (or that run of it) does not exist."""
    executor = get_executor()
    if isinstance(executor, DefaultExecutor):
        from .engine.store import latest_run, to_event
        from .models import WorkflowEvent, WorkflowRun

        if run_id is None:
            run = latest_run(workflow_id)
        else:
            found = WorkflowRun.objects.filter(workflow_id=workflow_id, run_id=run_id).first()
            if found is None:
                raise WorkflowNotFoundError(workflow_id)
            run = found
        rows = WorkflowEvent.objects.filter(run=run, sequence__gt=after).order_by("sequence")
        # First the sizes (PostgreSQL computes them), then only the events that fit.
        sized = rows.annotate(size=OctetLength(Cast("data", output_field=TextField())))
        sizes = list(sized.values_list("sequence", "size")[: limit + 1])
        take = fitting([size for _, size in sizes[:limit]])
        last = sizes[take - 1][0] if take else after
        events = [to_event(row) for row in rows.filter(sequence__lte=last)] if take else []
        return HistoryPage(run.workflow_id, str(run.run_id), events, len(sizes) > take)
    current = executor.get_handle(workflow_id).run_id
    if run_id is not None and run_id != current:
        raise RunChangedError(workflow_id, run_id, current)
    history = [event for event in executor.history(workflow_id) if event.sequence > after]
    take = fitting([len(json.dumps(event.data, default=str)) for event in history[:limit]])
    return HistoryPage(workflow_id, current, history[:take], len(history) > take)


def fitting(sizes: list[int | None], budget: int = PAGE_BYTES) -> int:
    """How many of the events of these sizes a page holds: all, or as many as fit in
    ``budget`` bytes, and at least one (an event larger than the budget is a page alone)."""
    total = 0
    for number, size in enumerate(sizes):
        total += size or 0
        if number and total > budget:
            return number
    return len(sizes)


def stream(workflow_id: str, batch: int = STREAM_BATCH) -> Iterator[HistoryEvent]:
    """Every event of the run (the running one of the id, else its latest), oldest first,
    read ``batch`` events at a time from one run on the built-in engine (other executors
    answer the history whole)."""
    executor = get_executor()
    if not isinstance(executor, DefaultExecutor):
        yield from executor.history(workflow_id)
        return
    page = read_page(workflow_id, limit=batch)
    yield from page.events
    while page.more and page.last_sequence is not None:
        page = read_page(workflow_id, page.last_sequence, batch, run_id=page.run_id)
        yield from page.events
