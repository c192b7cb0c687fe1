"""Eager activities: a worker runs the activity its own step just scheduled, with no broker hop.

When a workflow step (or an activity's completion, which decides the next step) schedules an
activity and the thread doing it is a worker's task thread, the attempt is queued in that
thread and run right after the step's transaction commits — the way Temporal runs eager and
local activities. A run of N activities in a row therefore costs one broker message, not N+1.

Only the broker hop is saved, nothing else: the attempt has its ``ActivityTask`` row, its
deadline, its advisory lock, its retries (with back-off, through the broker) and its recovery
after a ``kill -9`` exactly as before — the sweeper cannot tell an eager attempt from one that
came through the broker.

What stays on the broker:

* all but one of the activities a step schedules at once (a fan-out), so other worker threads
  and processes run them in parallel;
* retries (they wait for their back-off) and everything the sweeper or a web process sends;
* an activity on a queue this worker does not consume (``with_activity_queue``, ``runworker
  --queues``): it must run on the workers meant for it (a GPU, a rate-limited API);
* work past a thread's budget (``EAGER_BUDGET`` seconds of chained steps): then the next
  attempt goes through the broker, so one long run cannot keep a worker thread to itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..conf import beluga_settings

logger = logging.getLogger("beluga_workflows")


class _State(threading.local):
    def __init__(self) -> None:
        self.active = False
        self.began = 0.0
        self.budget = 0.0
        self.reserved = False
        self.queue: deque[tuple[int, int, Any, str | None]] = deque()


_state = _State()
#: The activity queues this process's worker consumes (:func:`serve`); None: not known (a
#: Celery worker started by hand), then only the default activity queue runs eagerly.
_served: frozenset[str] | None = None


def serve(queues: Iterable[str] | None) -> None:
    """Tell eager execution which Celery queues this process's worker consumes."""
    global _served
    _served = None if queues is None else frozenset(queues)


def serves(queue: str) -> bool:
    """Whether an attempt sent to ``queue`` would reach this worker anyway."""
    if _served is not None:
        return queue in _served
    return queue == beluga_settings.ACTIVITY_QUEUE


@contextlib.contextmanager
def draining(
    run_attempt: Callable[[int, int, Any], None],
    send: Callable[..., None],
    budget: float,
) -> Iterator[None]:
    """Around a worker task: afterwards, run the attempts queued by its steps, one by one.

    ``run_attempt(task_pk, attempt, claimed)`` runs one; ``send(task_pk, attempt, claimed,
    queue=queue)`` hands one to the broker, on its queue (what is left when something goes
    wrong). ``claimed`` is the attempt's task when the step that created it also took its
    advisory lock (see :func:`reserve`), else None.
    """
    if _state.active or budget <= 0:
        yield
        return
    _state.active, _state.began, _state.budget = True, time.monotonic(), budget
    try:
        yield
        while _state.queue:
            task_pk, attempt, claimed, _ = _state.queue.popleft()
            run_attempt(task_pk, attempt, claimed)
    finally:
        _state.active = _state.reserved = False
        leftover = list(_state.queue)
        _state.queue.clear()
        for task_pk, attempt, claimed, queue in leftover:
            send(task_pk, attempt, claimed, queue=queue)


def draining_now() -> bool:
    """Whether this thread is a worker task thread that runs eager attempts."""
    return _state.active


def _open() -> bool:
    state = _state
    return (
        state.active
        and not state.queue
        and not state.reserved
        and time.monotonic() - state.began <= state.budget
    )


def reserve() -> bool:
    """Before a step's transaction commits: will this thread run the first activity the step
    schedules? If so the step takes that attempt's advisory lock with its own writes (one
    round trip less) and :func:`take` gets the claimed task after the commit."""
    if not _open():
        return False
    _state.reserved = True
    return True


def take(task_pk: int, attempt: int, claimed: Any = None, queue: str | None = None) -> bool:
    """Queue the attempt in this thread if it is draining, idle, and within budget (or if
    this thread reserved it: ``claimed``), and this worker consumes its Celery ``queue``."""
    if claimed is not None:
        _state.reserved = False
    elif not _open():
        return False
    if queue is not None and not serves(queue):
        return False
    _state.queue.append((task_pk, attempt, claimed, queue))
    return True
