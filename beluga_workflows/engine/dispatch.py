"""Sending work to Celery, only after the transaction that created it commits.

A message that cannot be sent (broker down) is not an error for the caller: the rows are
committed and the sweeper in ``runworker`` sends it again (``REDISPATCH_AFTER``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from ..conf import beluga_settings

logger = logging.getLogger("beluga_workflows")


def _send(task_name: str, args: tuple[Any, ...], queue: str, countdown: float | None) -> None:
    from .. import tasks

    task = getattr(tasks, task_name)
    try:
        task.apply_async(args, queue=queue, countdown=countdown)
    except Exception:  # the broker is down: the sweeper will send it later
        logger.warning(
            "Could not send %s%r to the broker; will retry", task_name, args, exc_info=True
        )


def advance(run_pk: int) -> None:
    queue = beluga_settings.WORKFLOW_QUEUE
    transaction.on_commit(lambda: _send("advance_workflow", (run_pk,), queue, None))


def activity(task_pk: int, attempt: int, countdown: float | None = None) -> None:
    queue = beluga_settings.ACTIVITY_QUEUE
    transaction.on_commit(
        lambda: _send("run_activity", (task_pk, attempt), queue, countdown or None)
    )
