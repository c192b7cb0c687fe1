"""Settings: one object over the ``BELUGA_WORKFLOWS`` dict, defaults in one place.

``beluga_settings.POLL_INTERVAL`` reads the user's value or the default; the cache is reset
when tests override ``BELUGA_WORKFLOWS``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.signals import setting_changed

from .options import to_timedelta

DEFAULTS: dict[str, Any] = {
    # "default" (built-in engine on Celery + PostgreSQL) or "temporal".
    "EXECUTOR": "default",
    "TEMPORAL": {
        "HOST": "localhost:7233",
        "NAMESPACE": "default",
        "TASK_QUEUE": "beluga-workflows",
        # A temporalio DataConverter and/or PayloadCodec (encryption), or dotted paths to
        # them: every client and worker uses it (docs/temporal.md, "Data converter").
        "DATA_CONVERTER": None,
        "PAYLOAD_CODEC": None,
        # False: the mirror copies runs without their values (input, result, payloads).
        "MIRROR_PAYLOADS": True,
        # Modules Temporal's sandbox hands to workflow code as the worker imported them, besides
        # beluga_workflows, Django and the installed apps (docs/determinism.md).
        "PASSTHROUGH_MODULES": [],
        # The cluster's per-run limit of pending activities (Temporal's default, set on the
        # server as limit.numPendingActivities.error): MAX_PENDING_STEPS stops below it, since
        # past it Temporal refuses the workflow task and retries it for ever.
        "MAX_PENDING_ACTIVITIES": 2000,
    },
    # Celery queues used by the built-in engine.
    "WORKFLOW_QUEUE": "beluga_workflows",
    "ACTIVITY_QUEUE": "beluga_activities",
    # Seconds between sweeps for due timers, expired activity attempts and lost messages.
    "POLL_INTERVAL": 1.0,
    # Seconds after which work whose broker message seems lost is sent again.
    "REDISPATCH_AFTER": 30.0,
    # Live workflow continuations kept per worker process (LRU), each a parked thread; 0
    # replays every step. Built-in engine only (Temporal keeps runs in its sticky cache).
    "CACHE_SIZE": 256,
    # Seconds the built-in engine's worker lets workflow code run without reaching a step
    # before it gives up on the step (a runaway loop) and leaves it to the sweeper.
    "WORKFLOW_TASK_TIMEOUT": 30.0,
    # Seconds a run may take when it is started without WorkflowOptions.timeout (None: no
    # limit). Applies on both executors, to runs started through one; not to child workflows.
    "DEFAULT_TIMEOUT": None,
    # Seconds of activities a worker thread runs in a row, without the broker, for the runs
    # its own steps advanced (eager activities); 0 sends every activity through the broker.
    "EAGER_BUDGET": 2.0,
    # Seconds ``runworker`` keeps a database connection across tasks (None: as the project's
    # CONN_MAX_AGE says). Celery would otherwise open a new one for every task.
    "WORKER_CONN_MAX_AGE": 300,
    # Largest run input, signal payload or activity result accepted, in bytes of JSON (None:
    # no limit). Every value is stored in the history, often more than once.
    "MAX_PAYLOAD_BYTES": 1_048_576,
    # Limits per run (None: no limit), refused with a WorkflowLimitError naming the limit:
    # steps started and not finished (both executors), events in the history and bytes of
    # their details (built-in engine; Temporal has its own). See beluga_workflows.limits.
    "MAX_PENDING_STEPS": 20_000,
    "MAX_HISTORY_EVENTS": 100_000,
    "MAX_HISTORY_BYTES": 1 << 30,
    # Hooks around every workflow step and activity attempt and on each run's close: dotted
    # paths to classes (made once per process) or objects; the first is the outermost. See
    # beluga_workflows.hooks and docs/observability.md.
    "HOOKS": [],
    # How long closed runs are kept (a timedelta or seconds; None: for ever). With a value,
    # ``runworker`` deletes older ones on its own, a batch at a time (``workflow prune``).
    "RETENTION": None,
    # Seconds between a worker's heartbeats; one silent for 3 intervals is not live.
    "HEARTBEAT_INTERVAL": 5.0,
    # What a bug in workflow code (an exception that is not a WorkflowError, non-determinism)
    # does to its run: "fail" it, or "hold" it running, flagged with the error, until a worker
    # with fixed code replays it. @workflow.defn(on_error=...) chooses per workflow.
    "ON_WORKFLOW_ERROR": "fail",
}


class BelugaSettings:
    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        from django.conf import settings

        return getattr(settings, "BELUGA_WORKFLOWS", None) or {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown beluga_workflows setting {name!r}.")
        if name not in self._cache:
            value = self.user_settings.get(name, DEFAULTS[name])
            if isinstance(DEFAULTS[name], dict) and isinstance(value, dict):
                value = {**DEFAULTS[name], **value}
            self._cache[name] = value
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


beluga_settings = BelugaSettings()


def default_timeout() -> timedelta | None:
    """``DEFAULT_TIMEOUT`` as a duration: the timeout of a run started without one."""
    return to_timedelta(beluga_settings.DEFAULT_TIMEOUT, "BELUGA_WORKFLOWS['DEFAULT_TIMEOUT']")


def retention() -> timedelta | None:
    """``RETENTION`` as a duration: how long closed runs are kept (None: for ever)."""
    return to_timedelta(beluga_settings.RETENTION, "BELUGA_WORKFLOWS['RETENTION']")


def holds_run(workflow_name: str, error: BaseException | None) -> bool:
    """Whether this failure of the workflow's code holds its run (else it fails the run)."""
    from . import registry

    return registry.holds_run(workflow_name, error, beluga_settings.ON_WORKFLOW_ERROR)


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "BELUGA_WORKFLOWS":
        beluga_settings.reload()


setting_changed.connect(_reload)
