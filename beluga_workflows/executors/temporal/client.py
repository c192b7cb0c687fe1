"""Calling Temporal's async client from sync code (views, the admin, the CLI, tests).

One daemon thread per process runs an asyncio loop; :func:`call` submits a coroutine to it
and waits. Clients are connected lazily on that loop and kept per connection settings. After a
fork (prefork web servers) the child starts its own thread and connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, TypeVar

from temporalio.client import Client

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None
_clients: dict[Hashable, Client] = {}


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="beluga-temporal-client", daemon=True
            )
            thread.start()
            _loop, _pid = loop, os.getpid()
            _clients.clear()
        return _loop


def call(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the client loop and return its result (or raise its exception).

    Raises ``TimeoutError`` after ``timeout`` seconds, cancelling the coroutine.
    """
    future = asyncio.run_coroutine_threadsafe(coro, _running_loop())
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"Temporal call did not finish within {timeout}s") from None


async def shared(key: Hashable, connect: Callable[[], Awaitable[Client]]) -> Client:
    """The client for ``key``, connected once per process with ``connect`` (call on the loop)."""
    client = _clients.get(key)
    if client is None:
        client = await connect()
        _clients.setdefault(key, client)
    return _clients[key]
