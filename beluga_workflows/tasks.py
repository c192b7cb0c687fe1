"""Celery tasks: thin shells over the engine (found by Celery's ``autodiscover_tasks``).

Both tasks run the activities their steps schedule in the same thread afterwards (eager
activities, see :mod:`beluga_workflows.engine.eager`), so a run moves on without a broker hop
per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from celery import shared_task
from django.db import close_old_connections, connection

from .engine.dispatch import ACTIVITY_TASK, ADVANCE_TASK


@contextlib.contextmanager
def _unit_of_work() -> Iterator[None]:
    from .conf import beluga_settings
    from .engine import activities, dispatch, eager, locks

    close_old_connections()
    try:
        with eager.draining(
            activities.run_attempt, dispatch.send_activity, float(beluga_settings.EAGER_BUDGET)
        ):
            yield
    finally:
        try:
            locks.release_pending()
        except Exception:  # the connection is broken: closing it releases the lock
            connection.close()
            locks.forget()
        # A connection kept for the next task must come back clean: no transaction left open,
        # no attempt's advisory lock left held (both would outlive this task otherwise).
        if connection.in_atomic_block or locks.held():
            connection.close()
            locks.forget()
        close_old_connections()


@shared_task(name=ADVANCE_TASK, ignore_result=True, acks_late=True)
def advance_workflow(run_pk: int) -> None:
    from .engine import failures, steps

    with _unit_of_work():
        failures.guarded(run_pk, steps.advance, run_pk)


@shared_task(name=ACTIVITY_TASK, ignore_result=True, acks_late=True)
def run_activity(task_pk: int, attempt: int) -> None:
    from .engine import activities

    with _unit_of_work():
        activities.run_attempt(task_pk, attempt)
