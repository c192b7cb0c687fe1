"""Calling Temporal's async client from sync code (views, the admin, the CLI, tests).

One daemon thread per process runs an asyncio loop; :func:`call` submits a coroutine to it
and waits. Clients are connected lazily on that loop and kept per connection settings. After a
fork (prefork web servers) the child starts its own thread and connections.

At exit the clients are dropped and the loop stopped while the interpreter still runs: left to
the interpreter's finalization, the SDK's native threads could call back into a Python that is
shutting down and abort the process ("PyGILState_Release ... finalizing", exit 134) after a
command such as ``manage.py workflow start`` had succeeded.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import gc
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
_thread: threading.Thread | None = None


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid, _thread
    with _lock:
        if _loop is None or _pid != os.getpid():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="beluga-temporal-client", daemon=True
            )
            thread.start()
            _loop, _pid, _thread = loop, os.getpid(), thread
            _clients.clear()
        return _loop


@atexit.register
def close() -> None:
    """Drop the clients and stop the loop thread (at exit; safe to call more than once)."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        if loop is None or thread is None or _pid != os.getpid():
            return
        _loop = _thread = None

    async def drop() -> None:
        _clients.clear()
        gc.collect()  # the native clients go while their loop still runs
        await asyncio.sleep(0.05)

    try:
        asyncio.run_coroutine_threadsafe(drop(), loop).result(5)
    except Exception:  # noqa: S110 - exiting anyway
        pass
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    if not thread.is_alive():
        loop.close()


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
