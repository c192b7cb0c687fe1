"""Waking waiters the moment a run closes: PostgreSQL ``LISTEN``/``NOTIFY``.

The transaction that closes a run sends ``pg_notify('beluga_runs', '<run id>')`` (see
:func:`.sql.write`; PostgreSQL delivers it when that transaction commits, never before). In
each process that waits for results, one daemon thread holds a connection of its own, outside
any transaction, listening on the channel, and wakes the ``handle.result()`` calls waiting for
that run — instead of polling with a back-off. A lost connection is reopened; meanwhile
waiters fall back to checking the run every second, so a notification that never comes only
costs latency.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from typing import Any

from django.db import connection

logger = logging.getLogger("beluga_workflows")

CHANNEL = "beluga_runs"
#: How long a waiter sleeps without a notification before it looks at the run itself.
FALLBACK = 1.0


class Listener(threading.Thread):
    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(name="beluga-notify", daemon=True)
        self.params = params
        self.lock = threading.Lock()
        self.waiters: dict[str, set[threading.Event]] = defaultdict(set)
        self.listening = threading.Event()
        self.stopping = threading.Event()
        self.conn: Any = None

    def watch(self, run_id: str) -> threading.Event:
        event = threading.Event()
        with self.lock:
            self.waiters[run_id].add(event)
        return event

    def unwatch(self, run_id: str, event: threading.Event) -> None:
        with self.lock:
            waiting = self.waiters.get(run_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self.waiters[run_id]

    def run(self) -> None:
        import psycopg

        while not self.stopping.is_set():
            try:
                with psycopg.connect(**self.params, autocommit=True) as conn:
                    self.conn = conn
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self.stopping.is_set():
                        for note in conn.notifies(timeout=FALLBACK):
                            self.wake(note.payload)
                        conn.execute("SELECT 1")  # a dead connection raises here
            except Exception:  # the database went away: waiters poll meanwhile
                if not self.stopping.is_set():
                    logger.debug("Notification listener lost its connection", exc_info=True)
            self.listening.clear()
            self.stopping.wait(FALLBACK)

    def stop(self) -> None:
        self.stopping.set()
        self.join(FALLBACK * 3)

    def wake(self, run_id: str) -> None:
        with self.lock:
            events = list(self.waiters.get(run_id, ()))
        for event in events:
            event.set()


_lock = threading.Lock()
_listener: Listener | None = None
_pid = 0


def listener() -> Listener:
    """This process's listener, started on first use (again after a fork)."""
    global _listener, _pid
    with _lock:
        if _listener is None or _pid != os.getpid():
            _listener = Listener(_params())
            _listener.start()
            _pid = os.getpid()
            _listener.listening.wait(2.0)  # started listening before the caller looks
        return _listener


def _params() -> dict[str, Any]:
    """psycopg connection parameters of the default database, without Django's extras."""
    params = connection.get_connection_params()
    for extra in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
        params.pop(extra, None)
    return params


def shutdown() -> None:
    """Stop this process's listener and close its connection (before dropping a database)."""
    global _listener
    with _lock:
        listening, _listener = _listener, None
    if listening is not None and _pid == os.getpid():
        listening.stop()
