"""A step that cannot be taken: fail or hold the run with the error, never retry in silence.

The engine's steps (:mod:`.steps`) run inside :func:`.store.with_reconnect`, which takes a
step again when the database connection is gone — and only then. Any other failure of a step
(the database refusing a statement: a timeout, a limit, a trigger; a bug of ours) would fail
the same way each time it is tried: :func:`guarded` hands it to :func:`step_failed`, which
fails the run with the error, or holds it under ``ON_WORKFLOW_ERROR = "hold"`` (tried again
with backoff, shown in the admin and ``describe()``). Nothing the failed step decided is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError, connection, transaction

from ..errors import error_to_json
from ..history import EventType
from ..options import Status
from . import holds, runners, steps
from .store import Appender, connection_lost, lock_run, with_reconnect

logger = logging.getLogger("beluga_workflows")
T = TypeVar("T")


def guarded(run_pk: int, step: Callable[..., T], /, *args: Any, **kwargs: Any) -> T | None:
    """Run one of the run's steps (with :func:`.store.with_reconnect`); a failure that is not
    a lost connection is recorded on the run by :func:`step_failed` and None returned."""
    before = connection.connection
    try:
        return with_reconnect(step, *args, **kwargs)
    except Exception as exc:
        if transaction.get_connection().in_atomic_block:
            raise  # inside the caller's transaction: the caller decides
        if isinstance(exc, DatabaseError) and connection_lost(exc, before):
            raise  # the database is away (for longer than with_reconnect waits): later
        step_failed(run_pk, exc)
        return None


def step_failed(run_pk: int, error: BaseException) -> bool:
    """A step of the run that failed for a reason other than a lost connection — the database
    refused a write (a statement timeout, a limit, a trigger), or the engine hit a bug —
    would fail the same way each time it is tried. It fails the run with the error, or holds
    the run under ``ON_WORKFLOW_ERROR = "hold"`` (tried again with backoff, visible in the
    admin); nothing the failed step decided is recorded."""
    logger.error(
        "A step of run %s failed: %s: %s", run_pk, type(error).__name__, error, exc_info=error
    )
    try:
        with transaction.atomic():
            run = lock_run(run_pk)
            if run is None or run.status != Status.RUNNING.value:
                return False
            runners.forget(run.pk)
            appender = Appender(run)
            if holds.should_hold(run, error):
                holds.hold(run, error)
                run.advance_requested_at = None
                appender.save(steps.RUN_FIELDS)
                return True
            failure = error_to_json(error)
            steps.close(run, appender, Status.FAILED, EventType.WORKFLOW_FAILED, error=failure)
            steps.save(appender)
            return True
    except Exception:
        logger.exception("Could not record the failed step of run %s either", run_pk)
        return False
