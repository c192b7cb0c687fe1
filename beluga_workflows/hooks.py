"""Hooks: the project's own code around every workflow step and activity attempt, and when a
run closes, on either executor.

``BELUGA_WORKFLOWS["HOOKS"]`` lists them, as dotted paths (or the objects themselves); a path to
a class is instantiated once per process, without arguments. A hook implements any of three
methods, all optional (subclass :class:`Hook` for the signatures, or write a plain class)::

    class Timing(Hook):
        def step(self, info: StepInfo, call_next):          # around each workflow step
            began = time.monotonic()
            result = call_next()                            # a StepResult
            log.info("%s took %.3fs", info.workflow_id, time.monotonic() - began)
            return result

        def activity(self, info: ActivityInfo, call_next):  # around each activity attempt
            with sentry_sdk.new_scope() as scope:
                scope.set_tag("workflow_id", info.workflow_id)
                return call_next()                          # the activity's result

        def on_run_closed(self, info: RunClosedInfo):       # once a run has closed
            metrics.incr(f"runs.{info.status}")

The first hook listed is the outermost, as in Django's ``MIDDLEWARE``.

What a hook may do differs by kind, because of what it wraps:

* ``activity`` is middleware: it runs in the attempt's own thread, around the activity call
  (so context variables it sets reach the activity), and what it returns or raises is the
  attempt's outcome — a hook may refuse an attempt by raising, and that attempt is retried
  like any failure.
* ``step`` only observes. A step is workflow code, which must do the same thing again on
  replay, so the step's outcome is the step's own whatever the hook does: an exception from
  the hook is logged and ignored, and a hook that never calls ``call_next`` does not stop the
  step (it runs anyway, once). On Temporal the hook runs with the workflow sandbox lifted and
  the step itself inside it, and only for new steps (not while Temporal replays a run's
  history into a worker that lost it).
* ``on_run_closed`` is told after the fact — after the close committed on the built-in
  engine, after the close was decided on Temporal (where it may be repeated if the worker dies
  before Temporal records it, and where a run that Temporal itself times out or terminates is
  not reported). An exception is logged and ignored.

All of them run on the worker, in the thread doing the work: keep them quick.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed

from .conf import beluga_settings
from .options import Status

logger = logging.getLogger("beluga_workflows")

#: The methods a hook may implement.
METHODS = ("step", "activity", "on_run_closed")


@dataclass(frozen=True)
class StepInfo:
    """The run a workflow step advances."""

    workflow_id: str
    run_id: str
    workflow_name: str
    #: ``"default"`` or ``"temporal"``.
    executor: str


@dataclass(frozen=True)
class StepResult:
    """Where the step left the run: still running (and what it waits for), or closed."""

    status: Status
    #: e.g. ``"activity:charge"`` or ``"signal:approval"``; empty once the run closed.
    waiting_for: str


@dataclass(frozen=True)
class ActivityInfo:
    """One attempt of one activity."""

    workflow_id: str
    run_id: str
    activity_name: str
    #: Stable across the attempts of one step (``ActivityContext.activity_id``).
    activity_id: str
    attempt: int
    executor: str


@dataclass(frozen=True)
class RunClosedInfo:
    workflow_id: str
    run_id: str
    workflow_name: str
    status: Status
    result: Any
    #: The error as the history records it (``type``, ``message``, ...), or None.
    error: dict[str, Any] | None
    executor: str


class Hook:
    """Optional base class: override the methods you need; the others cost nothing."""

    def step(self, info: StepInfo, call_next: Callable[[], StepResult]) -> StepResult:
        return call_next()

    def activity(self, info: ActivityInfo, call_next: Callable[[], Any]) -> Any:
        return call_next()

    def on_run_closed(self, info: RunClosedInfo) -> None:
        return None


def load(entry: Any) -> Any:
    """A ``HOOKS`` entry as a hook object: a dotted path is imported, a class instantiated."""
    from django.utils.module_loading import import_string

    hook = import_string(entry) if isinstance(entry, str) else entry
    return hook() if isinstance(hook, type) else hook


def implements(hook: Any, method: str) -> bool:
    """Whether ``hook`` has ``method`` of its own (not :class:`Hook`'s pass-through one)."""
    if not callable(getattr(hook, method, None)):
        return False
    return getattr(type(hook), method, None) is not getattr(Hook, method)


@dataclass(frozen=True)
class Installed:
    """The ``HOOKS`` of this process, by method, outermost first."""

    step: tuple[Callable[..., Any], ...] = ()
    activity: tuple[Callable[..., Any], ...] = ()
    on_run_closed: tuple[Callable[..., Any], ...] = ()

    @functools.cached_property
    def any(self) -> bool:
        return bool(self.step or self.activity or self.on_run_closed)


_installed: Installed | None = None


def installed() -> Installed:
    """The configured hooks, loaded once per process (again after the settings change)."""
    global _installed
    if _installed is None:
        entries = beluga_settings.HOOKS or ()
        loaded = [load(entry) for entry in entries]
        _installed = Installed(
            **{m: tuple(getattr(h, m) for h in loaded if implements(h, m)) for m in METHODS}
        )
    return _installed


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _installed
    if setting == "BELUGA_WORKFLOWS":
        _installed = None


setting_changed.connect(_reset)


# Running them ---------------------------------------------------------------------------------


def around_activity(
    chain: Sequence[Callable[..., Any]], info: ActivityInfo, call: Callable[[], Any]
) -> Any:
    """``call`` (the activity) inside the ``activity`` hooks: what they return is the result."""
    for hook in reversed(chain):
        call = functools.partial(hook, info, call)
    return call()


def around_step(
    chain: Sequence[Callable[..., Any]], info: StepInfo, call: Callable[[], StepResult]
) -> StepResult:
    """``call`` (the step) inside the ``step`` hooks, which observe it: it runs exactly once,
    and its result or exception is the outcome whatever a hook does."""
    for hook in reversed(chain):
        call = functools.partial(_observe, hook, info, call)
    return call()


def _observe(hook: Callable[..., Any], info: StepInfo, call: Callable[[], StepResult]) -> Any:
    ran: list[StepResult] = []
    failed: list[BaseException] = []

    def call_next() -> StepResult:
        if not ran and not failed:
            try:
                ran.append(call())
            except BaseException as exc:
                failed.append(exc)
        if failed:
            raise failed[0]
        return ran[0]

    try:
        hook(info, call_next)
    except Exception as exc:
        if not failed or exc is not failed[0]:
            logger.exception("Hook %r failed around a step of %s", hook, info.workflow_id)
    return call_next()  # the step's own outcome (run now if the hook never asked for it)


def notify_closed(chain: Sequence[Callable[..., Any]], info: RunClosedInfo) -> None:
    for hook in chain:
        try:
            hook(info)
        except Exception:
            logger.exception("Hook %r failed on the close of %s", hook, info.workflow_id)
