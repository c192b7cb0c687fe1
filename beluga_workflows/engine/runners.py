"""Choosing how to run a workflow function for one step: a cached live continuation, or replay.

A worker keeps the runs it advanced recently as live continuations (an LRU of
``CACHE_SIZE``), so the next step feeds them only the new events: O(1) per step, however long
the history. A run that is not cached here (another worker took its last step, the process
restarted, or it was evicted) is replayed from its full history, which is always correct.
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
from ..interpreter import Decision, Replayer, RunInfo
from ..models import WorkflowRun
from .store import Appender, load_history

_lock = threading.Lock()
_cache: OrderedDict[int, Continuation] = OrderedDict()
#: Continuations advanced in a transaction that has not committed yet. They go back into the
#: cache only on commit: after a rollback they are ahead of the database and must not be used.
_pending: dict[int, Continuation] = {}


def decide(run: WorkflowRun, fn: Callable[..., Any], info: RunInfo, appender: Appender) -> Decision:
    size = beluga_settings.CACHE_SIZE
    if not size:
        return Replayer(fn, info).run(load_history(run.pk))
    with _lock:
        cont = _cache.pop(run.pk, None)
    # The history may have grown elsewhere (another worker) since this process saw it.
    expected_seen = run.last_sequence - len(appender.added)
    if cont is not None and (cont.fn is not fn or cont.seen != expected_seen):
        cont.close()
        cont = None
    if cont is None:
        cont = Continuation(fn, info, timeout=beluga_settings.WORKFLOW_TASK_TIMEOUT)
        decision = cont.feed(load_history(run.pk))
    else:
        decision = cont.feed(appender.added)
    if decision.done:
        cont.close()
        return decision
    with _lock:
        _pending[run.pk] = cont
    transaction.on_commit(lambda: _remember(run.pk, size))
    return decision


def note(run_pk: int, events: list[HistoryEvent]) -> None:
    """Events the engine appended after the decision (the commands) are history too."""
    with _lock:
        cont = _pending.get(run_pk)
    if cont is not None:
        cont.note(events)


def forget(run_pk: int) -> None:
    with _lock:
        conts = [c for c in (_cache.pop(run_pk, None), _pending.pop(run_pk, None)) if c]
    for cont in conts:
        cont.close()


def _remember(run_pk: int, size: int) -> None:
    evicted: list[Continuation] = []
    with _lock:
        cont = _pending.pop(run_pk, None)
        if cont is None:
            return
        _cache[run_pk] = cont
        while len(_cache) > size:
            evicted.append(_cache.popitem(last=False)[1])
    for old in evicted:
        old.close()


def cached_runs() -> int:
    with _lock:
        return len(_cache)
