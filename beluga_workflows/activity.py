"""What an activity function gets: who it runs for, its attempt, heartbeats, cancellation."""

from __future__ import annotations

import threading
from typing import Any


class ActivityContext:
    """Passed as the first argument of every activity.

    ``activity_id`` is stable across attempts of the same step: use it as an idempotency key
    for side effects (a payment, an e-mail) that must happen at most once.
    """

    def __init__(
        self,
        workflow_id: str,
        run_id: str,
        activity_id: str,
        attempt: int,
        task_pk: int | None = None,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.activity_id = activity_id
        self.attempt = attempt
        self._task_pk = task_pk
        self._cancelled = cancelled or threading.Event()
        self._heartbeat_hook: Any = None

    def heartbeat(self, details: Any = None) -> None:
        """Record progress (JSON) so operators see it; also how a long activity notices cancel."""
        if self._heartbeat_hook is not None:
            self._heartbeat_hook(details)
            return
        if self._task_pk is None:
            return
        from django.utils import timezone

        from .models import ActivityTask
        from .serialization import ensure_json

        ensure_json(details, "Heartbeat details")
        ActivityTask.objects.filter(pk=self._task_pk).update(
            heartbeat=details, heartbeat_at=timezone.now()
        )

    def is_cancelled(self) -> bool:
        """True once the run was canceled or this attempt timed out; stop work then."""
        if self._cancelled.is_set():
            return True
        if self._task_pk is None:
            return False
        from .models import ActivityTask

        state = (
            ActivityTask.objects.filter(pk=self._task_pk).values_list("state", "attempt").first()
        )
        if state is None or state[0] != ActivityTask.State.SCHEDULED or state[1] != self.attempt:
            self._cancelled.set()
        return self._cancelled.is_set()
