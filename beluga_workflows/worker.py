"""The built-in engine's worker: a Celery worker for workflow steps and activities, plus the
sweeper (timers, expired attempts, lost messages), the heartbeat that announces the worker
(:mod:`.heartbeats`) and, with ``RETENTION`` set, the pruning of old runs (:mod:`.retention`).
``manage.py runworker`` is a thin shell over :class:`Worker`.

``queues`` chooses what the worker consumes (``runworker --queues``): by default the engine's
own queues (``WORKFLOW_QUEUE`` for workflow steps, ``ACTIVITY_QUEUE`` for activities), which
the name ``default`` stands for; any other name is an activity queue of
``workflow.with_activity_queue(name)``. ``--queues gpu`` alone runs only the activities sent to
``gpu``; ``--queues default,gpu`` runs everything.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from celery import current_app
from celery.signals import worker_ready
from django.db import close_old_connections

from . import heartbeats, retention
from .conf import beluga_settings
from .engine import eager
from .options import DEFAULT_QUEUE, check_queue_name

logger = logging.getLogger("beluga_workflows")


class Sweeper(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(name="beluga-sweeper", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        from .engine import sweeper

        failing = False
        # After a database outage the workers running attempts lost their locks with their
        # connections; they take them back within REDISPATCH_AFTER (their leases), so only
        # then may a free lock mean a dead worker.
        attempts_after = 0.0
        while not self.stopping.is_set():
            try:
                close_old_connections()
                if failing:
                    attempts_after = time.monotonic() + float(beluga_settings.REDISPATCH_AFTER)
                sweeper.sweep(attempts=time.monotonic() >= attempts_after)
                if failing:
                    logger.warning("Sweeping again")
                failing = False
            except Exception:  # a database restart must not kill the sweeper
                # The whole story once; then quiet until it works again.
                if not failing:
                    logger.exception("Sweep failed; retrying every %ss", self.interval)
                failing = True
            finally:
                close_old_connections()
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()


class Worker:
    def __init__(
        self,
        concurrency: int = 4,
        pool: str = "threads",
        loglevel: str = "INFO",
        sweep: bool = True,
        app: Any = None,
        queues: Iterable[str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.queues = celery_queues(queues)
        self.concurrency = concurrency
        self.pool = pool
        self.loglevel = loglevel
        self.sweep = sweep
        self.app = app or current_app

    def run(self) -> None:
        keep_connections(self.app)
        survive_broker_restarts(self.app)
        sweeper = Sweeper(float(beluga_settings.POLL_INTERVAL)) if self.sweep else None
        worker_ready.connect(_announce, weak=False)
        queues = self.queues
        eager.serve(queues)  # an activity of another queue never runs here, not even eagerly
        info = heartbeats.WorkerInfo(
            executor="default",
            queues=tuple(queues),
            concurrency=self.concurrency,
            pool=self.pool,
            sweeper=self.sweep,
        )
        if sweeper:
            sweeper.start()
        try:
            with heartbeats.announced(info), retention.pruning():
                worker = self._celery_worker(queues)
                worker.start()
        finally:
            if sweeper:
                sweeper.stop()
                sweeper.join(timeout=10)
        code = getattr(worker, "exitcode", 0) or 0
        if code:
            raise SystemExit(code)

    def _celery_worker(self, queues: list[str]) -> Any:
        return self.app.Worker(
            pool=self.pool,
            concurrency=self.concurrency,
            queues=queues,
            loglevel=self.loglevel,
            hostname=f"beluga-{os.getpid()}@{socket.gethostname()}",
            without_gossip=True,
            without_mingle=True,
            optimization="fair",
        )


def celery_queues(names: Iterable[str] | None) -> list[str]:
    """The Celery queues a worker consumes for ``runworker --queues`` names (None: default)."""
    chosen: list[str] = []
    for name in [DEFAULT_QUEUE] if names is None else names:
        check_queue_name(name, "A worker queue")
        if name == DEFAULT_QUEUE:
            chosen += [beluga_settings.WORKFLOW_QUEUE, beluga_settings.ACTIVITY_QUEUE]
        else:
            chosen.append(name)
    if not chosen:
        raise ValueError("A worker needs at least one queue.")
    return list(dict.fromkeys(chosen))


def keep_connections(app: Any) -> None:
    """Keep database connections across tasks (``WORKER_CONN_MAX_AGE``).

    Celery's Django fix-up closes every connection before and after each task unless
    ``CELERY_DB_REUSE_MAX`` is set, and Django closes it after each unit of work unless
    ``CONN_MAX_AGE`` allows more: without both, every workflow step pays for a new PostgreSQL
    backend. A kept connection that died is replaced and the step retried
    (:func:`~beluga_workflows.engine.store.with_reconnect`); it never carries a transaction or
    an advisory lock into the next task (see ``tasks.py``).
    """
    from django.db import connections

    max_age = beluga_settings.WORKER_CONN_MAX_AGE
    if max_age is None:
        return
    for alias in connections:
        settings_dict = connections.settings[alias]
        if not settings_dict.get("CONN_MAX_AGE"):
            settings_dict["CONN_MAX_AGE"] = max_age
    if app.conf.get("CELERY_DB_REUSE_MAX") is None:
        app.conf["CELERY_DB_REUSE_MAX"] = 1_000_000


def survive_broker_restarts(app: Any) -> None:
    """On Redis, turn kombu's acknowledgement emulation off (unless the project set it).

    With it on, a worker whose Redis restarts while a task runs tries to put the unacknowledged
    message back on a connection Celery 5.7 has already discarded, and exits
    (``AttributeError: 'NoneType' object has no attribute 'hostname'``). The engine never needs
    the broker to deliver a message again: the sweeper re-sends lost work from the database.
    """
    url = str(app.conf.broker_url or "")
    if not url.startswith(("redis", "rediss", "sentinel")):
        return
    options = dict(app.conf.broker_transport_options or {})
    options.setdefault("ack_emulation", False)
    app.conf.broker_transport_options = options


def _announce(**kwargs: Any) -> None:
    print("runworker ready", flush=True)
