"""The built-in engine's worker: a Celery worker for workflow steps and activities, plus the
sweeper (timers, expired attempts, lost messages). ``manage.py runworker`` is a thin shell
over :class:`Worker`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import current_app
from celery.signals import worker_ready
from django.db import close_old_connections

from .conf import beluga_settings

logger = logging.getLogger("beluga_workflows")


class Sweeper(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(name="beluga-sweeper", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        from .engine import sweeper

        while not self.stopping.is_set():
            try:
                close_old_connections()
                sweeper.sweep()
            except Exception:  # a database restart must not kill the sweeper
                logger.exception("Sweep failed; retrying")
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
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.pool = pool
        self.loglevel = loglevel
        self.sweep = sweep
        self.app = app or current_app

    def run(self) -> None:
        sweeper = Sweeper(float(beluga_settings.POLL_INTERVAL)) if self.sweep else None
        worker_ready.connect(_announce, weak=False)
        if sweeper:
            sweeper.start()
        try:
            worker = self.app.Worker(
                pool=self.pool,
                concurrency=self.concurrency,
                queues=[beluga_settings.WORKFLOW_QUEUE, beluga_settings.ACTIVITY_QUEUE],
                loglevel=self.loglevel,
                hostname=f"beluga-{os.getpid()}@{socket.gethostname()}",
                without_gossip=True,
                without_mingle=True,
                optimization="fair",
            )
            worker.start()
        finally:
            if sweeper:
                sweeper.stop()
                sweeper.join(timeout=10)
        code = getattr(worker, "exitcode", 0) or 0
        if code:
            raise SystemExit(code)


def _announce(**kwargs: Any) -> None:
    print("runworker ready", flush=True)
