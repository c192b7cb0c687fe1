"""A live workflow run parked between steps, so a step costs O(1) instead of a replay.

The workflow function runs on a stack of its own. When it reaches a step the history cannot
answer, it parks and hands a :class:`~beluga_workflows.interpreter.Decision` to the caller;
``feed`` wakes it with the new events. The decision logic is the interpreter's
:class:`~beluga_workflows.interpreter.Machine`, exactly as in replay, so a continuation and a
replay of the same history always agree.

Two kinds, one per executor:

* :class:`Continuation` (the built-in engine) parks in a thread. The worker process keeps at
  most ``CACHE_SIZE`` of them (see ``engine.runners``), so a worker process holds at most that
  many parked threads; a run that is not cached holds no thread at all, only its rows. Because
  the caller waits on a queue, it can give up after ``WORKFLOW_TASK_TIMEOUT``.
* :class:`GreenletContinuation` (the Temporal executor) parks in a greenlet, kept by Temporal's
  sticky cache with the workflow object. Temporal's own deadlock detector bounds a workflow
  task there; ``WORKFLOW_TASK_TIMEOUT`` does not apply.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import determinism
from .history import HistoryEvent
from .interpreter import Decision, Machine, RunInfo, Suspend
from .replay import call_workflow

_CLOSE = object()


def _stop_if_violated(machine: Machine) -> None:
    """The workflow caught a determinism violation and went on to a step: it fails here."""
    if determinism.violation() is not None:
        machine.stopped = True
        raise Suspend()


class WorkflowTaskTimeout(RuntimeError):
    """The workflow function ran longer than WORKFLOW_TASK_TIMEOUT without reaching a step.

    The engine records nothing the code decided and lets the sweeper take the step again.
    The thread still running the function cannot be stopped: it is left behind (a daemon
    thread), and if it reaches a step later it stays parked there, its decision never read.
    """


class Continuation:
    def __init__(
        self,
        fn: Callable[..., Any],
        info: RunInfo,
        timeout: float = 30.0,
        horizon: int | None = None,
    ) -> None:
        self.fn = fn
        self.info = info
        self.timeout = timeout
        self.seen = 0
        self.machine = Machine(info, [], self._park, horizon)
        self._to_workflow: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._to_driver: queue.SimpleQueue[Decision] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def feed(self, events: Sequence[HistoryEvent]) -> Decision:
        """Give the run its new events and wait until it blocks again or finishes."""
        if self._closed:
            raise RuntimeError("feed() on a closed continuation")
        self.machine.begin_pass()
        if events:
            self.seen = events[-1].sequence
        if self._thread is None:
            self.machine.extend(events)
            if events:
                self.machine.current_time = events[0].timestamp
            self._thread = threading.Thread(
                target=self._main, name=f"workflow-{self.info.workflow_id}", daemon=True
            )
            self._thread.start()
        else:
            self._to_workflow.put(list(events))
        try:
            return self._to_driver.get(timeout=self.timeout)
        except queue.Empty:
            self._closed = True
            raise WorkflowTaskTimeout(
                f"Workflow {self.info.workflow_id!r} ran {self.timeout:g}s without reaching a "
                "step; workflow code must not block or loop forever."
            ) from None

    def note(self, events: Sequence[HistoryEvent]) -> None:
        """Events appended after the decision (the commands it asked for)."""
        self.machine.extend(events)
        if events:
            self.seen = events[-1].sequence

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive() and not self._closed:
            self._to_workflow.put(_CLOSE)
        self._closed = True

    # -- the workflow thread ---------------------------------------------------------------
    def _main(self) -> None:
        decision = call_workflow(self.fn, self.machine)
        if not self._closed:
            self._to_driver.put(decision)

    def _park(self) -> None:
        _stop_if_violated(self.machine)
        with determinism.lifted():
            self._to_driver.put(self.machine.decision())
            item = self._to_workflow.get()
        if item is _CLOSE:
            self.machine.stopped = True
            raise Suspend()
        self.machine.extend(item)


class GreenletContinuation:
    """A live run parked in a greenlet instead of a thread: what the Temporal workflow keeps
    across its workflow tasks (Temporal's sandbox has no use for threads, and its sticky cache
    keeps the workflow object — and so this — between tasks), so each task feeds only its new
    events instead of replaying the whole history.

    A greenlet can only be resumed on the thread that created it: :meth:`usable` tells, and a
    caller on another thread replays into a new one instead.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        info: RunInfo,
        horizon: int | None = None,
        patches: Any = None,
    ) -> None:
        import greenlet

        self.fn = fn
        self.info = info
        self.seen = 0
        self.machine = Machine(info, [], self._park, horizon, patches)
        self._thread = threading.get_ident()
        self._glet = greenlet.greenlet(self._main)
        self._started = False

    def usable(self) -> bool:
        return threading.get_ident() == self._thread and not self._glet.dead

    def feed(self, events: Sequence[HistoryEvent]) -> Decision:
        """Give the run its new events and run it until it blocks again or finishes."""
        self.machine.begin_pass()
        if events:
            self.seen = events[-1].sequence
        if not self._started:
            self._started = True
            self.machine.extend(events)
            if events:
                self.machine.current_time = events[0].timestamp
            decision = self._glet.switch()
        else:
            decision = self._glet.switch(list(events))
        assert isinstance(decision, Decision)
        return decision

    def note(self, events: Sequence[HistoryEvent]) -> None:
        self.machine.extend(events)
        if events:
            self.seen = events[-1].sequence

    def _main(self) -> Decision:
        return call_workflow(self.fn, self.machine)

    def _park(self) -> None:
        parent = self._glet.parent
        assert parent is not None
        _stop_if_violated(self.machine)
        with determinism.lifted():  # Temporal's code and ours run on this thread meanwhile
            events = parent.switch(self.machine.decision())
        self.machine.extend(events)
