"""Testing workflows: an in-process executor with a clock you skip, and replay of histories.

``testing.WorkflowEnvironment()`` is an executor like ``workflow.new("default")`` — ``execute``,
``start``, ``signal``, ``query``, ``cancel``, ``describe``, ``history`` and handles — that runs
workflows and their activities in the calling process, at once: no database rows, no broker,
no worker. Its clock is virtual: ``env.sleep(timedelta(days=2))`` moves it and fires on the way
every timer, retry, signal-wait timeout and workflow timeout that falls due, and
``handle.result()`` moves it as far as the run needs. The workflow runs on the interpreter's
:class:`~beluga_workflows.continuation.Continuation`, as on the built-in engine, and the
environment records each decision the way the engine does (``engine.steps``/``engine.commands``),
so histories, outcomes and errors are the engine's. When a run closes, its whole history is
replayed once more from the start: workflow code that would decide differently on a worker's
replay (it read the clock, ``random``, a global) fails the run with ``NonDeterminismError``.

``testing.replay(fn, history)`` replays a history exported from a real run (see
:mod:`._replay_history`) for a replay test in CI before a deploy.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from . import registry
from ._memory_engine import MemoryEngine, Run, Task
from ._replay_history import ReplayResult, replay
from .activity import ActivityContext, call_activity
from .conf import default_timeout
from .engine.activities import error_info
from .errors import (
    ActivityTimeoutError,
    InvalidPayloadError,
    ResultTimeoutError,
    UntrustedReferenceError,
    WorkflowError,
    WorkflowNotHeldError,
)
from .executors.base import DurableExecutor, WorkflowHandle, raise_for_outcome
from .history import HistoryEvent
from .options import MAX_DURATION, Duration, Signal, Status, WorkflowOptions, to_timedelta
from .replay import Replayer, run_query
from .serialization import ensure_json, ensure_size
from .state import WorkflowState

__all__ = [
    "EnvironmentHandle",
    "ReplayResult",
    "WorkflowBlockedError",
    "WorkflowEnvironment",
    "replay",
]


class WorkflowBlockedError(ResultTimeoutError):
    """``result()`` on a run that nothing in the environment can move on: it waits for a
    signal (or a child that does) and no timer is left to fire."""

    def __init__(self, workflow_id: str, waiting_for: str) -> None:
        self.workflow_id = workflow_id
        self.timeout = None
        self.waiting_for = waiting_for
        WorkflowError.__init__(
            self,
            f"Workflow {workflow_id!r} waits for {waiting_for or 'nothing'} and nothing in the "
            "test environment will bring it: send what it waits for (env.signal) first.",
        )


class EnvironmentHandle(WorkflowHandle):
    """A run of a :class:`WorkflowEnvironment`; ``result(timeout)`` counts virtual seconds."""

    def __init__(self, env: WorkflowEnvironment, run: Run) -> None:
        super().__init__(run.workflow_id, run.run_id)
        self._env = env
        self._record = run

    def status(self) -> Status:
        return self._record.status

    def result(self, timeout: float | None = None) -> Any:
        """Run the environment until this run (or the last of its continue-as-new chain)
        closes, moving the clock to each next timer or retry as needed; return its result or
        raise as every executor does. With ``timeout``, give up after that many seconds of the
        environment's clock (``ResultTimeoutError``); without, raise
        :class:`WorkflowBlockedError` when only a signal could move the run on."""
        return self._env._result(self._record, timeout)


class WorkflowEnvironment(DurableExecutor):
    """An executor for tests: everything in-process and synchronous, on a virtual clock.

    ``activities`` replaces activities for this environment: ``{real_fn: fake_fn}`` (a key may
    also be an activity's name or ``module:qualname``); the fake is called as the activity
    would be, ``fake(activity_ctx, input)``. ``workflows`` does the same for child workflows.
    ``start_time`` is where the clock starts (default: now, in UTC); ``seed`` makes run ids and
    retry jitter repeatable; ``check_replay=False`` skips the replay of each closed run.
    """

    name = "testing"

    def __init__(
        self,
        *,
        activities: Mapping[Callable[..., Any] | str, Callable[..., Any]] | None = None,
        workflows: Mapping[Callable[..., Any] | str, Callable[..., Any]] | None = None,
        start_time: datetime | None = None,
        seed: int | None = 0,
        check_replay: bool = True,
    ) -> None:
        if start_time is not None and start_time.tzinfo is None:
            raise ValueError("start_time must be timezone-aware (the engine records UTC).")
        self._activities = _by_key(activities, "activities")
        self._engine = MemoryEngine(
            start_time or datetime.now(UTC), random.Random(seed), _by_key(workflows, "workflows")
        )
        self._engine.check_replay = check_replay
        self._busy = False
        self._lock = threading.RLock()

    # -- the clock -----------------------------------------------------------------------------
    def now(self) -> datetime:
        """The environment's time: what ``ctx.now()`` reads in its workflows."""
        return self._engine.now

    def sleep(self, duration: Duration) -> None:
        """Move the clock forward by ``duration``, firing what falls due on the way, in order."""
        delta = to_timedelta(duration, "sleep duration") or timedelta(0)
        with self._lock:
            self._not_inside("env.sleep()")
            self._advance_to(self._engine.now + delta)

    def close(self) -> None:
        """Let go of the runs' parked workflow threads (the context manager does this)."""
        with self._lock:
            self._engine.close_all()

    def __enter__(self) -> WorkflowEnvironment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the executor interface ------------------------------------------------------------------
    def _start(self, fn: Callable[..., Any], options: WorkflowOptions) -> WorkflowHandle:
        name, reference = registry.workflow_name(fn), registry.reference(fn)
        ensure_size(ensure_json(options.input, f"Input of workflow {name!r}"), "The input")
        given = options.timeout if options.timeout is not None else default_timeout()
        timeout = to_timedelta(given, "WorkflowOptions.timeout")
        with self._lock:
            engine = self._engine
            seconds = timeout.total_seconds() if timeout else None
            run = Run(options.id or engine.uuid(), engine.uuid(), name, reference, fn,
                      options.input, seconds)  # fmt: skip
            engine.start(run, engine.now + timeout if timeout else None)
            self._pump()
            return EnvironmentHandle(self, run)

    def signal(self, workflow_id: str, signal: Signal) -> None:
        with self._lock:
            self._engine.deliver(workflow_id, signal)
            self._pump()

    def cancel(self, workflow_id: str, sender: str | None = None) -> None:
        with self._lock:
            self._engine.request_cancel(self._engine.running(workflow_id, "cancel"), sender)
            self._pump()

    def retry(self, workflow_id: str) -> None:
        """A run held for a fix replays now, with the code as it is now (say, after the test
        patched the bug away); ``WorkflowNotHeldError`` if it is not held."""
        with self._lock:
            run = self._engine.running(workflow_id, "retry")
            if not run.held:
                raise WorkflowNotHeldError(workflow_id, run.status.value)
            self._engine.mark(run)
            self._pump()

    def query(self, workflow_id: str, query_type: str) -> Any:
        with self._lock:
            run = self._engine.latest(workflow_id)
            if query_type == "status":
                return run.status.value
            if query_type == "result":
                return run.result
            if query_type == "history":
                return [event.to_json() for event in run.events]
            replayer = Replayer(run.fn, run.info, horizon=run.decided_through)
            replayer.run(list(run.events))
            return run_query(replayer.machine, query_type)

    def get_handle(self, workflow_id: str) -> WorkflowHandle:
        with self._lock:
            return EnvironmentHandle(self, self._engine.latest(workflow_id))

    def describe(self, workflow_id: str) -> WorkflowState:
        with self._lock:
            run = self._engine.latest(workflow_id)
            children = tuple(
                {
                    "id": c.workflow_id,
                    "run_id": c.run_id,
                    "workflow": c.name,
                    "status": c.status.value,
                }
                for c in sorted(run.children, key=lambda child: child.parent_step or 0)
            )
            return WorkflowState(
                workflow_id=run.workflow_id,
                run_id=run.run_id,
                workflow=run.name,
                status=run.status,
                input=run.input,
                result=run.result,
                error=run.error,
                created_at=run.created_at,
                updated_at=run.updated_at,
                waiting_for=run.waiting_for,
                waiting_since=run.waiting_since,
                waiting_deadline=run.waiting_deadline,
                parent_id=run.parent.workflow_id if run.parent else None,
                parent_run_id=run.parent.run_id if run.parent else None,
                children=children,
                continued_from=run.continued_from.run_id if run.continued_from else None,
                continued_as=run.continued_as.run_id if run.continued_as else None,
                held=run.held if run.status is Status.RUNNING else None,
            )

    def history(self, workflow_id: str) -> list[HistoryEvent]:
        with self._lock:
            return list(self._engine.latest(workflow_id).events)

    def worker(self, concurrency: int = 4, **options: Any) -> Any:
        raise NotImplementedError("The test environment runs everything in-process: no worker.")

    def _not_inside(self, what: str) -> None:
        if self._busy:
            raise RuntimeError(f"{what} cannot be called from inside an activity.")

    # -- running ---------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Take every step that is due now: decisions first, then activity attempts."""
        if self._busy:
            return  # called back from an activity: the outer loop goes on
        self._busy = True
        try:
            while True:
                if self._engine.dirty:
                    self._engine.decide(self._engine.dirty.pop(0))
                    continue
                due = [t for t in self._engine.tasks if t.due <= self._engine.now and not t.running]
                if not due:
                    return
                self._run_activity(min(due, key=lambda task: task.due))
        finally:
            self._busy = False

    def _advance_to(self, target: datetime) -> None:
        while True:
            self._pump()
            due = self._engine.next_due()
            if due is None or due > target:
                break
            self._engine.now = max(self._engine.now, due)
            fired = [timer for timer in self._engine.timers if timer.fire_at <= self._engine.now]
            if fired:
                self._engine.fire(min(fired, key=lambda timer: timer.fire_at))
        self._engine.now = max(self._engine.now, target)

    def _result(self, run: Run, timeout: float | None) -> Any:
        with self._lock:
            self._not_inside("handle.result()")
            self._pump()
            limit = None if timeout is None else self._engine.now + timedelta(seconds=timeout)
            furthest = limit if limit is not None else self._engine.now + MAX_DURATION
            while True:
                while run.status is Status.CONTINUED_AS_NEW and run.continued_as is not None:
                    run = run.continued_as
                if run.status.is_closed:
                    raise_for_outcome(run.workflow_id, run.status, run.error)
                    return run.result
                due = self._engine.next_due()
                if due is None or due > furthest:
                    if limit is None:
                        raise WorkflowBlockedError(run.workflow_id, run.waiting_for)
                    self._advance_to(limit)
                    raise ResultTimeoutError(run.workflow_id, timeout)
                self._advance_to(due)

    # -- activities ------------------------------------------------------------------------------
    def _run_activity(self, task: Task) -> None:
        """One attempt, in this thread (an activity that uses the ORM sees the test's
        transaction). Its timeout is checked when it returns: nothing interrupts a slow one.
        It counts from the attempt's start, as on both executors; and an attempt starts the
        moment the clock reaches its due time, so a schedule-to-start timeout never expires
        here (it needs a worker that is busy or missing)."""
        run, attempt = task.run, task.attempt
        ctx = ActivityContext(
            run.workflow_id,
            run.run_id,
            f"{run.run_id}:{task.step}",
            attempt,
            on_heartbeat=lambda details: setattr(task, "heartbeat", details),
            cancelled=lambda: not task.open or task.attempt != attempt,
            # The last heartbeat of an earlier attempt, as on both executors.
            heartbeat_details=task.heartbeat if attempt > 1 else None,
        )
        result, error, retryable = None, None, True
        began = time.monotonic()
        task.running = True
        try:
            fn = self._activities.get(task.reference) or self._activities.get(task.name)
            fn = fn or registry.resolve(task.reference)
            what = f"Result of activity {task.name!r}"
            result = ensure_size(ensure_json(_call(fn, ctx, task.input), what), what)
        except (InvalidPayloadError, UntrustedReferenceError) as exc:  # no retry helps
            error, retryable = error_info(exc), False
        except Exception as exc:  # the activity failed
            error = error_info(exc)
        finally:
            task.running = False
        if not task.open or task.attempt != attempt:
            return  # the run was canceled or closed meanwhile: a stale outcome
        limit = task.options.timeout.total_seconds()
        if time.monotonic() - began > limit:
            timeout = ActivityTimeoutError(
                f"Attempt {attempt} of {task.name!r} did not finish within its {limit:g}s timeout."
            )
            error, retryable = error_info(timeout, "start_to_close"), True
        self._engine.finish_attempt(task, attempt, result, error, retryable)


def _call(fn: Callable[..., Any], ctx: ActivityContext, input: Any) -> Any:
    """Call an activity here; an ``async def`` one on a thread of its own when this thread
    already runs an event loop (an async test), since ``asyncio.run`` cannot nest."""
    if not inspect.iscoroutinefunction(fn):
        return call_activity(fn, ctx, input)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call_activity(fn, ctx, input)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call_activity(fn, ctx, input)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="activity")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _by_key(
    replacements: Mapping[Callable[..., Any] | str, Callable[..., Any]] | None, what: str
) -> dict[str, Callable[..., Any]]:
    """Replacements by reference (``module:qualname``), or by the name the test gave."""
    found = {}
    for key, fake in (replacements or {}).items():
        if not callable(fake):
            raise TypeError(f"{what}: the replacement for {key!r} is not callable.")
        found[key if isinstance(key, str) else registry.reference(key)] = fake
    return found
