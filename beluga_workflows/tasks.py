"""Celery tasks: thin shells over the engine (found by Celery's ``autodiscover_tasks``)."""

from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections


@shared_task(name="beluga_workflows.advance_workflow", ignore_result=True, acks_late=True)
def advance_workflow(run_pk: int) -> None:
    from .engine import steps

    close_old_connections()
    try:
        steps.advance(run_pk)
    finally:
        close_old_connections()


@shared_task(name="beluga_workflows.run_activity", ignore_result=True, acks_late=True)
def run_activity(task_pk: int, attempt: int) -> None:
    from .engine import activities

    close_old_connections()
    try:
        activities.run_attempt(task_pk, attempt)
    finally:
        close_old_connections()
