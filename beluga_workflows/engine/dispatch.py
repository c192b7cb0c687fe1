"""Sending work to Celery, only after the transaction that created it commits.

A message that cannot be sent (broker down) is not an error for the caller: the rows are
committed and the sweeper in ``runworker`` sends it again (``REDISPATCH_AFTER``). An activity
scheduled by a worker's own step may run in that worker without a message (:mod:`.eager`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from ..conf import beluga_settings
from . import eager, locks

logger = logging.getLogger("beluga_workflows")


#: The Celery task names (:mod:`beluga_workflows.tasks` defines the tasks; the engine sends
#: them by name, so it never imports the layer above it).
ADVANCE_TASK = "beluga_workflows.advance_workflow"
ACTIVITY_TASK = "beluga_workflows.run_activity"


def _send(task_name: str, args: tuple[Any, ...], queue: str, countdown: float | None) -> None:
    from celery import current_app

    try:
        current_app.send_task(task_name, args, queue=queue, countdown=countdown)
    except Exception:  # the broker is down: the sweeper will send it later
        logger.warning(
            "Could not send %s%r to the broker; will retry", task_name, args, exc_info=True
        )


def advance(run_pk: int) -> None:
    queue = beluga_settings.WORKFLOW_QUEUE
    transaction.on_commit(lambda: _send(ADVANCE_TASK, (run_pk,), queue, None))


def activity_queue(name: str | None) -> str:
    """The Celery queue of an activity whose ``ActivityOptions.queue`` is ``name``."""
    return name or beluga_settings.ACTIVITY_QUEUE


def activity(
    task_pk: int,
    attempt: int,
    countdown: float | None = None,
    claimed: Any = None,
    queue: str | None = None,
) -> None:
    """After commit: run the attempt in this worker thread (``claimed``: its step already took
    its lock) if this worker serves its ``queue`` (``ActivityOptions.queue``), or send it to
    the broker, on that queue."""
    celery_queue = activity_queue(queue)

    def send() -> None:
        if not countdown and eager.take(task_pk, attempt, claimed, celery_queue):
            return
        send_activity(task_pk, attempt, claimed, countdown, celery_queue)

    transaction.on_commit(send)


def send_activity(
    task_pk: int,
    attempt: int,
    claimed: Any = None,
    countdown: float | None = None,
    queue: str | None = None,
) -> None:
    if claimed is not None:  # claimed here but not run here: the broker's worker needs the lock
        try:
            locks.release(locks.key(task_pk))
        except Exception:  # the connection is gone, and the lock with it
            logger.warning("Could not release the lock of attempt %s", task_pk, exc_info=True)
    _send(ACTIVITY_TASK, (task_pk, attempt), activity_queue(queue), countdown or None)


def queued(queue: str) -> int | None:
    """How many messages wait in a broker queue (0 for a queue the broker has not made yet),
    or None when the broker cannot be asked."""
    from celery import current_app
    from kombu.exceptions import ChannelError, OperationalError

    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            with conn.channel() as channel:
                try:
                    return int(channel.queue_declare(queue=queue, passive=True).message_count)
                except ChannelError:  # Redis: no list yet, i.e. empty
                    return 0
    except OperationalError:
        return None
    except Exception as exc:
        if type(exc).__name__ == "NotFound":  # AMQP: the queue was never declared
            return 0
        logger.warning("Could not ask the broker how long %r is", queue, exc_info=True)
        return None
