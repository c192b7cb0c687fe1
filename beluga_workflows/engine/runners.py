"""Choosing how to run a workflow function for one step: a cached live continuation, or replay.

A worker process keeps the runs it advanced recently as live continuations (an LRU of
``CACHE_SIZE``, each a parked thread), so the next step feeds them only the new events: O(1)
per step, however long the history. A run that is not cached here (another worker took its
last step, the process restarted, or it was evicted) is replayed from its full history into a
new continuation, which is always correct. With ``CACHE_SIZE = 0`` every step is such a replay,
in a continuation dropped after the step.

Either way the function runs in the continuation's thread, so ``WORKFLOW_TASK_TIMEOUT`` bounds
every step: past it :class:`~beluga_workflows.continuation.WorkflowTaskTimeout` is raised here
and the step is left for the sweeper to try again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from django.db import transaction

from ..conf import beluga_settings
from ..continuation import Continuation
from ..history import HistoryEvent
from ..interpreter import Decision, RunInfo
from ..models import WorkflowRun
from .sql import Prefetched
from .store import Appender, load_history

_lock = threading.Lock()
_cache: OrderedDict[int, Continuation] = OrderedDict()
#: Continuations advanced in a transaction that has not committed yet. They go back into the
#: cache only on commit: after a rollback they are ahead of the database and must not be used.
_pending: dict[int, tuple[Continuation, Appender]] = {}


def cached_seen(run_pk: int) -> int:
    """How much of the run's history a continuation cached here has seen (0: none cached)."""
    with _lock:
        cont = _cache.get(run_pk)
    return cont.seen if cont is not None else 0


def decide(
    run: WorkflowRun,
    fn: Callable[..., Any],
    info: RunInfo,
    appender: Appender,
    prefetched: Prefetched | None = None,
) -> Decision:
    """One pass of the workflow over its history (the events ``appender`` added included).

    A continuation cached here is fed only what it has not seen: events other workers or
    clients (a signal) appended since, then this transaction's. Otherwise the run is replayed
    from its whole history into a new continuation.
    """
    size = beluga_settings.CACHE_SIZE
    timeout = float(beluga_settings.WORKFLOW_TASK_TIMEOUT)
    if not size:
        # A replay, in a thread of its own like any step, so that the timeout holds here too.
        once = Continuation(fn, info, timeout, run.decided_through)
        try:
            return once.feed(_since(run, appender, 0, prefetched))
        finally:
            once.close()
    with _lock:
        # Within a transaction the continuation of an earlier round is still pending. One
        # left pending by another transaction is that transaction's, which has ended since
        # (we hold the run's lock now) but may not have handed it back to the cache yet: it
        # is as good as a cached one, and the check below finds it ahead of the database if
        # that transaction rolled back. Replaying instead would make every step of a wide
        # fan-out, whose completions commit back to back in several threads, a full replay.
        cont, owner = _pending.pop(run.pk, (None, None))
        first_round = owner is not appender
        if cont is None:
            cont = _cache.pop(run.pk, None)
    if cont is not None and (
        cont.fn is not fn or cont.seen > _committed(run, appender) and first_round
    ):
        cont.close()
        cont = None
    if cont is None:
        cont = Continuation(fn, info, timeout, run.decided_through)
        decision = cont.feed(_since(run, appender, 0, prefetched))
    else:
        decision = cont.feed(_since(run, appender, cont.seen, prefetched))
    if decision.done:
        cont.close()
        return decision
    with _lock:
        _pending[run.pk] = (cont, appender)
    if first_round:
        transaction.on_commit(lambda: _remember(run.pk, size, appender))
    return decision


def _committed(run: WorkflowRun, appender: Appender) -> int:
    """The run's last sequence before this transaction appended anything."""
    return run.last_sequence - len(appender.added)


def _since(
    run: WorkflowRun, appender: Appender, after: int, prefetched: Prefetched | None
) -> list[HistoryEvent]:
    """The run's events after ``after``: committed ones, then this transaction's."""
    base = _committed(run, appender)
    stored: list[HistoryEvent] = []
    if after < base:
        if prefetched is not None and prefetched[0] <= after:
            stored = [e for e in prefetched[1] if e.sequence > after]
        else:
            stored = load_history(run.pk, after=after)
        stored = [e for e in stored if e.sequence <= base]
    return stored + [e for e in appender.added if e.sequence > after]


def note(run_pk: int, events: list[HistoryEvent]) -> None:
    """Events the engine appended after the decision (the commands) are history too."""
    with _lock:
        cont, _ = _pending.get(run_pk, (None, None))
    if cont is not None:
        cont.note(events)


def forget(run_pk: int) -> None:
    with _lock:
        pending, _ = _pending.pop(run_pk, (None, None))
        conts = [c for c in (_cache.pop(run_pk, None), pending) if c]
    for cont in conts:
        cont.close()


def _remember(run_pk: int, size: int, appender: Appender) -> None:
    """On commit: the continuation this transaction left pending goes back into the cache —
    unless the next transaction of the run took it already (see :func:`decide`)."""
    evicted: list[Continuation] = []
    with _lock:
        cont, owner = _pending.get(run_pk, (None, None))
        if cont is None or owner is not appender:
            return
        del _pending[run_pk]
        _cache[run_pk] = cont
        while len(_cache) > size:
            evicted.append(_cache.popitem(last=False)[1])
    for old in evicted:
        old.close()


def cached_runs() -> int:
    with _lock:
        return len(_cache)
