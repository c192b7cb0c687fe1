"""What an activity function gets: who it runs for, its attempt, heartbeats, cancellation.

The context is the same whichever executor runs the activity; the executor hands it two
functions — how to record a heartbeat and how to learn that the attempt was cancelled — so
this module touches neither Django nor Temporal.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from .serialization import ensure_json


class ActivityContext:
    """Passed as the first argument of every activity.

    ``activity_id`` is stable across attempts of the same step: use it as an idempotency key
    for side effects (a payment, an e-mail) that must happen at most once.

    ``heartbeat_details`` holds what the previous attempt last passed to :meth:`heartbeat`
    (None on a first attempt, or when it never heartbeated): resume from there rather than
    from the start.
    """

    def __init__(
        self,
        workflow_id: str,
        run_id: str,
        activity_id: str,
        attempt: int,
        *,
        on_heartbeat: Callable[[Any], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        heartbeat_details: Any = None,
    ) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.activity_id = activity_id
        self.attempt = attempt
        self.heartbeat_details = heartbeat_details
        self._on_heartbeat = on_heartbeat
        self._cancelled = cancelled

    def heartbeat(self, details: Any = None) -> None:
        """Record progress (JSON) so operators see it; long activities call it regularly."""
        ensure_json(details, "Heartbeat details")
        if self._on_heartbeat is not None:
            self._on_heartbeat(details)

    def is_cancelled(self) -> bool:
        """True once the run was canceled or this attempt timed out: stop work then."""
        return self._cancelled() if self._cancelled is not None else False


def call_activity(fn: Callable[..., Any], ctx: ActivityContext, input: Any) -> Any:
    """Call an activity function; an ``async def`` one runs on an event loop of its own in
    this (the attempt's) thread, so async HTTP and LLM clients work as they do anywhere."""
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(ctx, input))
    result = fn(ctx, input)
    if inspect.isawaitable(result):  # a sync callable that returned a coroutine
        return asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
