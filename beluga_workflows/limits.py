"""Limits per run: how many steps may be outstanding at once, how long and how large its
history may grow.

A run is one row and one history: past some size every step of it is slow to write and to
read, and a fan-out or a loop that never ends would take the database with it. So, as
Temporal does (2,000 pending activities, 51,200 events and 50 MB per history there), each
limit is refused at once with a :class:`~beluga_workflows.errors.WorkflowLimitError` naming
it — never a hang:

* ``MAX_PENDING_STEPS`` (default 20,000): futures a run has started and not seen settle
  (activities, timers, signal waits, children). ``ctx.start_activity`` & co. raise the error
  in the workflow code, on both executors (the interpreter checks it); on Temporal at most
  ``TEMPORAL["MAX_PENDING_ACTIVITIES"]`` (2,000, the cluster's own limit by default).
* ``MAX_HISTORY_EVENTS`` (default 100,000) and ``MAX_HISTORY_BYTES`` (default 1 GiB, the
  JSON of the events' details): checked by the built-in engine at each step, which fails the
  run with the error instead of recording what the step decided; a signal to a run past them
  is refused. On Temporal, Temporal's own history limits apply.

The defaults let a 10,000-wide fan-out through (20,002 events); ``None`` lifts a limit.
"""

from __future__ import annotations

import json
from typing import Any

from .conf import DEFAULTS, beluga_settings
from .errors import WorkflowLimitError


def _setting(name: str) -> Any:
    """The setting, or its default (``conf.DEFAULTS``) outside a configured Django project."""
    try:
        return getattr(beluga_settings, name)
    except Exception:  # noqa: BLE001 - settings not configured: the default
        return DEFAULTS[name]


def _limit(name: str) -> int | None:
    value = _setting(name)
    return None if value is None else int(value)


#: A pending-steps limit: the setting that sets it and its value (None: no limit).
PendingLimit = tuple[str, int | None]


def max_pending_steps(temporal: bool = False) -> PendingLimit:
    """``MAX_PENDING_STEPS``; on Temporal no more than its cluster's pending-activity limit
    (``TEMPORAL["MAX_PENDING_ACTIVITIES"]``, 2,000 as Temporal's default), past which Temporal
    would refuse the workflow task and retry it for ever — a hang, not an error."""
    maximum = _limit("MAX_PENDING_STEPS")
    if not temporal:
        return "MAX_PENDING_STEPS", maximum
    cluster = int(_setting("TEMPORAL")["MAX_PENDING_ACTIVITIES"])
    if maximum is not None and maximum <= cluster:
        return "MAX_PENDING_STEPS", maximum
    return "TEMPORAL['MAX_PENDING_ACTIVITIES']", cluster


def check_pending(workflow_id: str, pending: int, limit: PendingLimit) -> None:
    """Refuse a new step when ``pending`` steps are outstanding already."""
    name, maximum = limit
    if maximum is not None and pending >= maximum:
        raise WorkflowLimitError(
            workflow_id, name, pending, maximum, "steps started and not finished"
        )


def event_size(data: dict[str, Any]) -> int:
    """Bytes an event's details add to its run's history (their JSON, as stored)."""
    if not data:
        return 0
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


def history_exceeded(workflow_id: str, events: int, size: int) -> WorkflowLimitError | None:
    """The limit a history of ``events`` events and ``size`` bytes is past, if any."""
    maximum = _limit("MAX_HISTORY_EVENTS")
    if maximum is not None and events > maximum:
        return WorkflowLimitError(
            workflow_id, "MAX_HISTORY_EVENTS", events, maximum, "events in its history"
        )
    maximum = _limit("MAX_HISTORY_BYTES")
    if maximum is not None and size > maximum:
        return WorkflowLimitError(
            workflow_id, "MAX_HISTORY_BYTES", size, maximum, "bytes of history"
        )
    return None
