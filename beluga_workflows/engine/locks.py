"""Advisory locks of running activity attempts: keys, and what each thread holds.

A worker running an attempt holds a session-level PostgreSQL advisory lock on its task; the
lock dies with the worker's connection, which is how the sweeper tells "running somewhere"
from "its worker died". Each thread counts the locks it holds, so a connection kept for the
next unit of work never carries one along (``tasks.py`` closes the connection otherwise).

To save a round trip, a thread that goes on to another attempt does not release the last
one's lock at once: the release is *deferred* and rides on the next statement (see
:mod:`.sql`), or on the end of the unit of work.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.db import connection

#: "BE": keeps our advisory lock keys apart from other users' of the same database.
SPACE = 0x4245 << 48


def key(task_pk: int) -> int:
    return SPACE | task_pk


class _Held(threading.local):
    count = 0
    pending: int | None = None
    epoch = 0  # connections lost so far


_held = _Held()


def held() -> int:
    """Advisory locks this thread took and has not released (0 between units of work)."""
    return _held.count


def taken() -> None:
    _held.count += 1


def released() -> None:
    _held.count -= 1


def release(lock_key: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_key])
    _held.count -= 1


def defer(lock_key: int) -> None:
    """Keep ``lock_key`` until this thread's next statement that can release it."""
    _held.pending = lock_key


def take_pending() -> int | None:
    """The deferred lock key, for a statement that releases it (then call :func:`released`)."""
    pending, _held.pending = _held.pending, None
    return pending


def release_pending() -> None:
    """End of a unit of work: release the deferred lock, if any."""
    pending = take_pending()
    if pending is not None:
        release(pending)


def forget() -> None:
    """The connection was closed, and with it every advisory lock this thread held."""
    _held.count, _held.pending = 0, None
    _held.epoch += 1


def epoch() -> int:
    """Changes whenever :func:`forget` is called: locks taken before are gone."""
    return _held.epoch


@contextlib.contextmanager
def advisory_lock(task_pk: int) -> Iterator[bool]:
    """Hold the task's lock while checking it, if nobody else does (the sweeper)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key(task_pk)])
        got = bool(cursor.fetchone()[0])
    if got:
        taken()
    try:
        yield got
    finally:
        if got:
            release(key(task_pk))
