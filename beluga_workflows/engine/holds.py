"""Runs held for a fix: a bug in workflow code that leaves the run running instead of failing it.

Under ``ON_WORKFLOW_ERROR = "hold"`` (or ``@workflow.defn(on_error="hold")``) a pass of the
workflow function that ends in a bug (:func:`~beluga_workflows.errors.is_bug`) records
nothing it decided: no command, no close. The run stays running with ``held`` set — the
error and the user's traceback — and its live continuation is dropped, so the next pass is a
replay of the whole history with whatever code the worker has then. That pass comes:

* from the sweeper, with backoff (``FIRST_RETRY`` doubling up to ``MAX_RETRY``): a fix
  deployed without a restart, or a bug that depended on something outside the code;
* at once when a worker starts (:func:`retry_all`): fixed code is usually a new deploy;
* when something new reaches the run (an activity's outcome, a signal, a timer);
* on request: ``executor.retry(id)``, ``POST /api/workflows/{id}/retry/``, the admin's
  Retry now button, ``manage.py workflow retry``.

The first pass that succeeds clears ``held`` and the run goes on as if nothing happened: the
history never saw the failed passes (the same as Temporal, whose failed workflow tasks are
retried until a worker completes one). Canceling a held run closes it as canceled, since its
code cannot run to take the cancel.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from ..conf import holds_run
from ..errors import WorkflowNotHeldError, held_record
from ..history import EventType
from ..models import WorkflowRun
from ..options import Status
from . import dispatch, runners
from .store import Appender, lock_running

logger = logging.getLogger("beluga_workflows")

FIRST_RETRY = timedelta(seconds=10)
MAX_RETRY = timedelta(minutes=10)


def should_hold(run: WorkflowRun, error: BaseException | None) -> bool:
    """Whether this failure of the run's code holds the run (a bug, under ``hold``)."""
    return holds_run(run.workflow_name, error)


def cancel_requested(run: WorkflowRun, appender: Appender) -> bool:
    """A held run that was asked to cancel closes as canceled: its code cannot take the cancel."""
    if any(event.type is EventType.CANCEL_REQUESTED for event in appender.added):
        return True
    return run.events.filter(type=EventType.CANCEL_REQUESTED.value).exists()


def hold(run: WorkflowRun, error: BaseException) -> None:
    """Keep the run running, flagged with ``error``; the sweeper tries again after a backoff."""
    now = timezone.now()
    run.held = held_record(error, run.held, now.isoformat())
    attempts = run.held["attempts"]
    run.held_retry_at = now + min(FIRST_RETRY * 2 ** min(attempts - 1, 16), MAX_RETRY)
    run.waiting_for = ""
    run.waiting_since = run.waiting_deadline = None
    runners.forget(run.pk)  # the next pass replays, with whatever code the worker has then
    if attempts == 1:
        logger.error(
            "Workflow %s is held for a fix: its code failed with %s: %s",
            run.workflow_id,
            type(error).__name__,
            error,
        )


def clear(run: WorkflowRun) -> None:
    """A pass that succeeded: the run is not held any more."""
    if run.held is not None or run.held_retry_at is not None:
        if run.held:
            logger.info("Workflow %s is no longer held", run.workflow_id)
        run.held = None
        run.held_retry_at = None


def retry(workflow_id: str) -> WorkflowRun:
    """Let the held run's code try again now (``WorkflowNotHeldError`` if it is not held)."""
    with transaction.atomic():
        run = lock_running(workflow_id, "retry")
        if not run.held:
            raise WorkflowNotHeldError(workflow_id, run.status)
        _request(run)
        run.save(update_fields=["advance_requested_at", "held_retry_at"])
    return run


def retry_due(everything: bool = False, batch: int = 200) -> int:
    """Ask for a new pass of the held runs whose backoff is over (all of them: ``everything``)."""
    now = timezone.now()
    due = WorkflowRun.objects.filter(status=Status.RUNNING.value, held_retry_at__isnull=False)
    if not everything:
        due = due.filter(held_retry_at__lte=now)
    pks = list(due.values_list("pk", flat=True)[:batch])
    if not pks:
        return 0
    # The nudge is the usual one: a lost message is sent again by the sweeper like any other.
    WorkflowRun.objects.filter(pk__in=pks, held_retry_at__isnull=False).update(
        advance_requested_at=now, held_retry_at=None
    )
    for pk in pks:
        dispatch.advance(pk)
    return len(pks)


def _request(run: WorkflowRun) -> None:
    run.advance_requested_at = timezone.now()
    run.held_retry_at = None
    dispatch.advance(run.pk)
