"""Value types of the public API: options, retry policy, signals, statuses.

All are frozen dataclasses with documented defaults (the Beluga seed's defaults), so they can be
shared between threads and compared in tests.
"""

from __future__ import annotations

import enum
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

Duration = timedelta | float | int

#: Activity attempt timeout used when a workflow does not give one.
DEFAULT_ACTIVITY_TIMEOUT = timedelta(minutes=5)

#: The longest duration anything may take (a timeout, a sleep): past it dates overflow.
MAX_DURATION = timedelta(days=36_500)


def to_timedelta(value: Duration | None, what: str) -> timedelta | None:
    """Accept a timedelta or a number of seconds; refuse anything else, negatives, and more
    than :data:`MAX_DURATION` (100 years)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise TypeError(f"{what} must be a timedelta or a number of seconds, not {value!r}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, not {value!r}.")
    try:
        delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    except OverflowError:
        delta = timedelta.max
    if delta < timedelta(0):
        raise ValueError(f"{what} must not be negative (got {delta}).")
    if delta > MAX_DURATION:
        raise ValueError(f"{what} must be at most 100 years ({MAX_DURATION.total_seconds():.0f}s).")
    return delta


class Status(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    #: The run handed over to a fresh run with the same id (``ctx.continue_as_new``).
    CONTINUED_AS_NEW = "continued_as_new"

    @property
    def is_closed(self) -> bool:
        return self is not Status.RUNNING


@dataclass(frozen=True)
class RetryPolicy:
    """How an activity is retried. Defaults follow the Beluga seed."""

    max_attempts: int = 3
    initial_interval: timedelta = timedelta(milliseconds=100)
    backoff_coefficient: float = 2.0
    max_interval: timedelta = timedelta(seconds=10)
    #: Exception classes or class names that fail the activity at once.
    non_retryable_errors: tuple[type[BaseException] | str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1.")
        if self.backoff_coefficient < 1:
            raise ValueError("RetryPolicy.backoff_coefficient must be at least 1.0.")
        object.__setattr__(
            self, "initial_interval", to_timedelta(self.initial_interval, "initial_interval")
        )
        object.__setattr__(self, "max_interval", to_timedelta(self.max_interval, "max_interval"))

    def backoff(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """Delay before attempt ``attempt + 1``, with ±20% jitter so retries do not stampede."""
        base = self.initial_interval.total_seconds() * self.backoff_coefficient ** (attempt - 1)
        base = min(base, self.max_interval.total_seconds())
        jitter = (rng or random).uniform(0.8, 1.2)
        return timedelta(seconds=base * jitter)

    def error_names(self) -> list[str]:
        return [e if isinstance(e, str) else e.__name__ for e in self.non_retryable_errors]

    def to_json(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "initial_interval": self.initial_interval.total_seconds(),
            "backoff_coefficient": self.backoff_coefficient,
            "max_interval": self.max_interval.total_seconds(),
            "non_retryable_errors": self.error_names(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetryPolicy:
        return cls(
            max_attempts=data["max_attempts"],
            initial_interval=timedelta(seconds=data["initial_interval"]),
            backoff_coefficient=data["backoff_coefficient"],
            max_interval=timedelta(seconds=data["max_interval"]),
            non_retryable_errors=tuple(data.get("non_retryable_errors", ())),
        )


#: Characters a queue name may use (Celery queues and Temporal task queues both accept them).
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]*")

#: What ``with_activity_queue`` and ``runworker --queues`` call the executor's default queue.
DEFAULT_QUEUE = "default"


def check_queue_name(name: Any, what: str = "An activity queue") -> str:
    """A queue name every broker and Temporal accept: letters, digits, ``_ . : @ -``."""
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a string, not {name!r}.")
    if not name:
        raise ValueError(f"{what} name must not be empty.")
    if len(name) > 200 or not _QUEUE_NAME.fullmatch(name):
        raise ValueError(
            f"{what} name must be at most 200 characters, start with a letter or digit and use "
            f"only letters, digits and '_ . : @ -': {name[:60]!r}."
        )
    return name


@dataclass(frozen=True)
class ActivityOptions:
    """Per-call options of ``ctx.execute_activity``; build them with ``with_activity_*``.

    ``timeout`` bounds one attempt from its start (a worker took it) to its end;
    ``schedule_to_start_timeout`` fails an attempt that no worker started that long after it
    was scheduled (or its retry became due); ``heartbeat_timeout`` fails an attempt that has
    not heartbeated (or started) for that long, even when its worker died;
    ``schedule_to_close_timeout`` bounds all attempts together, retries' back-off included;
    ``queue`` is the Celery queue / Temporal task queue the activity runs on (None: the
    executor's default). Start-to-close and heartbeat timeouts are retried per ``retry``;
    schedule-to-start and schedule-to-close are not (as on Temporal).
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: timedelta = DEFAULT_ACTIVITY_TIMEOUT
    heartbeat_timeout: timedelta | None = None
    schedule_to_close_timeout: timedelta | None = None
    queue: str | None = None
    schedule_to_start_timeout: timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("heartbeat_timeout", "schedule_to_close_timeout", "schedule_to_start_timeout"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _positive(value, f"ActivityOptions.{name}"))
        if self.queue is not None:
            queue = check_queue_name(self.queue, "ActivityOptions.queue")
            object.__setattr__(self, "queue", None if queue == DEFAULT_QUEUE else queue)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "retry": self.retry.to_json(),
            "timeout": self.timeout.total_seconds(),
        }
        # Only options that are set, so histories of calls without them read as before.
        if self.heartbeat_timeout is not None:
            data["heartbeat_timeout"] = self.heartbeat_timeout.total_seconds()
        if self.schedule_to_close_timeout is not None:
            data["schedule_to_close_timeout"] = self.schedule_to_close_timeout.total_seconds()
        if self.schedule_to_start_timeout is not None:
            data["schedule_to_start_timeout"] = self.schedule_to_start_timeout.total_seconds()
        if self.queue is not None:
            data["queue"] = self.queue
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActivityOptions:
        def seconds(key: str) -> timedelta | None:
            value = data.get(key)
            return None if value is None else timedelta(seconds=value)

        return cls(
            retry=RetryPolicy.from_json(data["retry"]),
            timeout=timedelta(seconds=data["timeout"]),
            heartbeat_timeout=seconds("heartbeat_timeout"),
            schedule_to_close_timeout=seconds("schedule_to_close_timeout"),
            queue=data.get("queue"),
            schedule_to_start_timeout=seconds("schedule_to_start_timeout"),
        )


ActivityOption = Callable[[ActivityOptions], ActivityOptions]


def _positive(value: Duration, what: str) -> timedelta:
    delta = to_timedelta(value, what)
    if not delta:
        raise ValueError(f"{what} must be greater than zero.")
    return delta


def with_activity_retry(policy: RetryPolicy) -> ActivityOption:
    if not isinstance(policy, RetryPolicy):
        raise TypeError(f"with_activity_retry expects a RetryPolicy, not {policy!r}.")
    return lambda opts: replace(opts, retry=policy)


def with_activity_timeout(timeout: Duration) -> ActivityOption:
    """How long one attempt may take, start to close (default 5 minutes): counted from when a
    worker starts it, so an attempt waiting in line for a free worker is not running late."""
    delta = _positive(timeout, "An activity timeout")
    return lambda opts: replace(opts, timeout=delta)


def with_activity_heartbeat_timeout(timeout: Duration) -> ActivityOption:
    """Fail an attempt that has not called ``ctx.heartbeat()`` (or started) for this long, and
    retry it per the retry policy: a dead worker is noticed this soon (default: no limit)."""
    delta = _positive(timeout, "An activity heartbeat timeout")
    return lambda opts: replace(opts, heartbeat_timeout=delta)


def with_activity_schedule_to_close_timeout(timeout: Duration) -> ActivityOption:
    """How long the activity may take in all, from being scheduled to its last attempt's end,
    retries and their back-off included; past it no attempt is retried (default: no limit)."""
    delta = _positive(timeout, "An activity schedule-to-close timeout")
    return lambda opts: replace(opts, schedule_to_close_timeout=delta)


def with_activity_schedule_to_start_timeout(timeout: Duration) -> ActivityOption:
    """How long an attempt may wait for a worker to start it, from being scheduled (or from
    its retry becoming due); past it the activity fails with an ``ActivityTimeoutError``,
    not retried, as on Temporal (default: no limit)."""
    delta = _positive(timeout, "An activity schedule-to-start timeout")
    return lambda opts: replace(opts, schedule_to_start_timeout=delta)


def with_activity_queue(name: str) -> ActivityOption:
    """Run the activity on the queue ``name`` (a Celery queue on the built-in engine, a task
    queue on Temporal), served by ``runworker --queues name``. ``"default"`` is the default."""
    queue = check_queue_name(name)
    chosen = None if queue == DEFAULT_QUEUE else queue
    return lambda opts: replace(opts, queue=chosen)


#: The option functions, for error messages.
OPTION_FUNCTIONS = (
    "with_activity_retry",
    "with_activity_timeout",
    "with_activity_heartbeat_timeout",
    "with_activity_schedule_to_close_timeout",
    "with_activity_schedule_to_start_timeout",
    "with_activity_queue",
)


def build_activity_options(options: tuple[Any, ...]) -> ActivityOptions:
    opts = ActivityOptions()
    for option in options:
        if not callable(option):
            known = ", ".join(f"workflow.{name}()" for name in OPTION_FUNCTIONS)
            raise TypeError(f"execute_activity options must come from {known}; got {option!r}.")
        opts = option(opts)
    return opts


def check_workflow_id(workflow_id: str) -> str:
    """A workflow id every entry point can address: REST paths, the admin, the CLI."""
    if len(workflow_id) > 255:
        raise ValueError("A workflow id must be at most 255 characters.")
    if "/" in workflow_id or "\x00" in workflow_id:
        raise ValueError(
            f"A workflow id must not contain '/' or a NUL character: {workflow_id[:60]!r}."
        )
    if workflow_id != workflow_id.strip() or not workflow_id.isprintable():
        raise ValueError(
            "A workflow id must be printable, without leading or trailing spaces: "
            f"{workflow_id[:60]!r}."
        )
    try:
        workflow_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("A workflow id must be valid Unicode.") from None
    return workflow_id


class ParentClosePolicy(enum.StrEnum):
    """What happens to a running child workflow when its parent is canceled or closes."""

    #: The child is asked to cancel (its workflow sees WorkflowCanceledError and may clean up).
    CANCEL = "cancel"
    #: The child runs on, on its own.
    ABANDON = "abandon"


@dataclass(frozen=True)
class WorkflowOptions:
    """How to start a run. An empty ``id`` gets a UUID; ``timeout`` bounds the whole run
    (across ``continue_as_new``): without one, a run started through an executor gets
    ``BELUGA_WORKFLOWS["DEFAULT_TIMEOUT"]`` (none by default), a child workflow none; ``0``
    means no limit. ``parent_close_policy`` applies to child workflows only."""

    id: str | None = None
    input: Any = None
    timeout: Duration | None = None
    parent_close_policy: ParentClosePolicy | str = ParentClosePolicy.CANCEL

    def __post_init__(self) -> None:
        if self.id is not None and not isinstance(self.id, str):
            raise TypeError(f"WorkflowOptions.id must be a string, not {self.id!r}.")
        if self.id is not None:
            check_workflow_id(self.id)
        object.__setattr__(self, "timeout", to_timedelta(self.timeout, "WorkflowOptions.timeout"))
        try:
            policy = ParentClosePolicy(self.parent_close_policy)
        except ValueError:
            known = ", ".join(repr(p.value) for p in ParentClosePolicy)
            raise ValueError(
                f"WorkflowOptions.parent_close_policy must be one of {known}, "
                f"not {self.parent_close_policy!r}."
            ) from None
        object.__setattr__(self, "parent_close_policy", policy)


@dataclass(frozen=True)
class Signal:
    """A named message to a run. ``sender`` records who sent it (the approval audit trail)."""

    name: str
    payload: Any = None
    sender: str | None = None


@dataclass(frozen=True)
class Config:
    """Executor configuration for ``workflow.new(name, config)``; ``extra`` is per executor."""

    extra: dict[str, Any] = field(default_factory=dict)
