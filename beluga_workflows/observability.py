"""Observability: OpenTelemetry spans and metrics for runs, steps, activity attempts and signals,
and the project's hooks (:mod:`.hooks`), run at the same places on both executors.

Spans (tracer ``beluga_workflows``):

==========================  ===================================================================
``beluga.workflow.start``   the caller's ``execute``/``start`` (kind PRODUCER)
``beluga.workflow.signal``  the caller's ``signal`` (PRODUCER)
``beluga.workflow.step``    one workflow step on a worker (CONSUMER): a child of the span that
                            started the run, linked to the signal spans whose signals it takes
``beluga.activity``         one activity attempt (CONSUMER): a child of the span that started
                            the run, current while the activity runs; error status on failure
==========================  ===================================================================

A run carries the W3C trace context of the span current when it was created (the caller's
``beluga.workflow.start``; for a child run on the built-in engine, its parent's step): in its
``WorkflowStarted`` event's data under :data:`TRACE_KEY` on the built-in engine, in its memo
(:data:`TRACE_MEMO`) and in each activity's headers on Temporal. A signal carries its span's the
same way (the ``SignalReceived`` event's data; the signal's metadata on Temporal).

Metrics (meter ``beluga_workflows``), all recorded by workers: ``beluga.workflow.runs.started``
(a run's first step), ``beluga.workflow.runs.closed`` (by ``beluga.workflow.status``),
``beluga.activity.attempts`` (by ``beluga.activity.outcome``: completed, failed, timed_out),
``beluga.workflow.step.duration`` and ``beluga.activity.duration`` (histograms, seconds).

Nothing here costs anything unless it is used: without the ``otel`` extra, with no tracer or
meter provider configured and with no ``HOOKS``, :func:`enabled` is false and the engine never
calls the rest. A provider configured later (Celery's ``worker_process_init``, after a fork) is
noticed within a second; :func:`reset` forgets the providers seen (tests that replace them).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any, TypeVar

from . import __version__, hooks
from .hooks import ActivityInfo, RunClosedInfo, StepInfo, StepResult

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `otel` extra is not installed: spans and metrics are off
    otel_trace = None  # type: ignore[assignment]

T = TypeVar("T")
Carrier = dict[str, str]

#: Where a run and a signal keep their trace context: a key of the event's data (built-in
#: engine) or of the signal's metadata (Temporal), and the memo key of a Temporal run.
TRACE_KEY = "trace"
TRACE_MEMO = "beluga_trace"
#: Name of the tracer and the meter.
SCOPE = "beluga_workflows"
#: Trace contexts of runs kept per process (a step or an attempt reads its run's once).
RUN_TRACES = 4096

_NOTHING: ContextManager[Any] = contextlib.nullcontext()

if otel_trace is not None:
    _W3C = TraceContextTextMapPropagator()
    _NO_TRACER = (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider)
    _NO_METER: tuple[type, ...] = (otel_metrics.NoOpMeterProvider,)
    try:
        from opentelemetry.metrics._internal import _ProxyMeterProvider

        _NO_METER += (_ProxyMeterProvider,)
    except ImportError:  # pragma: no cover - another API version
        _NO_METER += (type(otel_metrics.get_meter_provider()),)
    # The context implementation is chosen at first use, by reading entry points; do it now,
    # outside Temporal's sandbox (which refuses file access while a workflow runs).
    otel_context.get_current()


class _Telemetry:
    """The tracer and instruments, once the process has a provider for them."""

    def __init__(self, tracing: bool, metering: bool) -> None:
        self.tracing, self.metering = tracing, metering
        self.complete = tracing and metering  # nothing left to notice
        self.tracer = otel_trace.get_tracer(SCOPE, __version__) if tracing else None
        if not metering:
            return
        meter = otel_metrics.get_meter(SCOPE, __version__)
        self.runs_started = meter.create_counter(
            "beluga.workflow.runs.started", "{run}", "Runs that took their first step."
        )
        self.runs_closed = meter.create_counter(
            "beluga.workflow.runs.closed", "{run}", "Runs closed, by beluga.workflow.status."
        )
        self.attempts = meter.create_counter(
            "beluga.activity.attempts", "{attempt}", "Activity attempts, by outcome."
        )
        self.step_duration = meter.create_histogram(
            "beluga.workflow.step.duration", "s", "Time a worker took for one workflow step."
        )
        self.activity_duration = meter.create_histogram(
            "beluga.activity.duration", "s", "Time one activity attempt took."
        )


_state: _Telemetry | None = None
_lock = threading.Lock()
#: Seconds between looks for a provider while one is missing: asking the API costs a few
#: microseconds (an environment lookup that fails), too much for every step.
LOOK_EVERY = 1.0
_next_look = 0.0


def _telemetry() -> _Telemetry | None:
    global _next_look
    state = _state
    if state is not None and state.complete:
        return state
    if otel_trace is None:
        return None
    now = time.monotonic()
    if now < _next_look:
        return state
    _next_look = now + LOOK_EVERY
    return _notice(state)


def _notice(state: _Telemetry | None) -> _Telemetry | None:
    """Look for providers (each is set once per process, so one found stays)."""
    global _state
    tracing = not isinstance(otel_trace.get_tracer_provider(), _NO_TRACER)
    metering = not isinstance(otel_metrics.get_meter_provider(), _NO_METER)
    if not (tracing or metering):
        return None
    if state is None or (state.tracing, state.metering) != (tracing, metering):
        with _lock:
            state = _state = _Telemetry(tracing, metering)
    return state


def enabled() -> bool:
    """Whether anything observes steps and attempts: hooks, or an OpenTelemetry provider."""
    return hooks.installed().any or _telemetry() is not None


def tracing() -> bool:
    state = _telemetry()
    return state is not None and state.tracing


def reset() -> None:
    """Forget the providers and run trace contexts seen (after replacing the providers)."""
    global _state, _next_look
    with _lock:
        _state, _next_look = None, 0.0
        _traces.clear()


# Trace context --------------------------------------------------------------------------------


def carrier() -> Carrier | None:
    """The current span's W3C trace context, for a run or a signal to carry (None: no span)."""
    state = _telemetry()
    if state is None or not state.tracing:
        return None
    if not otel_trace.get_current_span().get_span_context().is_valid:
        return None
    out: Carrier = {}
    _W3C.inject(out)
    return out or None


def _carried(value: Any) -> Carrier | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("traceparent"), str):
        return None
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _context(value: Any) -> Any:
    """The context a carrier names; an empty one (a new trace) for none."""
    found = _carried(value)
    return _W3C.extract(found) if found else otel_context.Context()


def _links(values: Sequence[Any]) -> list[Any]:
    links = []
    for value in values:
        found = _carried(value)
        if found:
            span_context = otel_trace.get_current_span(_W3C.extract(found)).get_span_context()
            if span_context.is_valid:
                links.append(otel_trace.Link(span_context))
    return links


_traces: OrderedDict[Any, Carrier | None] = OrderedDict()


def run_trace(key: Any, load: Callable[[], Any]) -> Carrier | None:
    """The trace context run ``key`` carries, read with ``load`` once per process."""
    with _lock:
        if key in _traces:
            _traces.move_to_end(key)
            return _traces[key]
    found = _carried(load())
    with _lock:
        _traces[key] = found
        while len(_traces) > RUN_TRACES:
            _traces.popitem(last=False)
    return found


def client_span(name: str, attributes: Mapping[str, Any]) -> ContextManager[Any]:
    """``with client_span(...) as span``: the caller's span (None when tracing is off)."""
    state = _telemetry()
    if state is None or state.tracer is None:
        return _NOTHING
    kind = otel_trace.SpanKind.PRODUCER
    return state.tracer.start_as_current_span(name, kind=kind, attributes=attributes)


# Steps, attempts, closes ------------------------------------------------------------------------


def _run_attributes(info: StepInfo | ActivityInfo | RunClosedInfo) -> dict[str, Any]:
    return {
        "beluga.workflow.id": info.workflow_id,
        "beluga.workflow.run_id": info.run_id,
        "beluga.executor": info.executor,
    }


def step(
    info: StepInfo,
    call: Callable[[], T],
    outcome: Callable[[T], StepResult],
    *,
    parent: Callable[[], Any] | None = None,
    links: Callable[[], Sequence[Any]] | None = None,
    first: bool = False,
    attach: bool = True,
    guard: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    hooks_guarded: bool = False,
    inside: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
) -> T:
    """Take one workflow step (``call``; ``outcome`` says where it left the run) inside the
    ``step`` hooks and a ``beluga.workflow.step`` span. ``parent`` and ``links`` give the
    carried trace contexts (asked only when tracing); ``first`` counts the run as started;
    ``attach`` makes the span current here.

    On Temporal the step runs in a sandbox: ``guard`` lifts it around our own telemetry and,
    with ``hooks_guarded``, around the hooks too, and ``inside`` puts the step itself back
    in — the workflow's code never runs with the sandbox lifted."""
    chain = hooks.installed().step
    kept: list[T] = []

    def inner() -> StepResult:
        with inside():
            kept.append(call())
        return outcome(kept[0])

    span = token = None
    with guard():
        state = _telemetry()
        if state is not None and state.tracer is not None:
            attributes = {**_run_attributes(info), "beluga.workflow.name": info.workflow_name}
            span = state.tracer.start_span(
                "beluga.workflow.step",
                context=_context(parent() if parent else None),
                kind=otel_trace.SpanKind.CONSUMER,
                attributes=attributes,
                links=_links(links()) if links else None,
            )
            if attach:
                token = otel_context.attach(otel_trace.set_span_in_context(span))
        began = time.perf_counter()
    error: BaseException | None = None
    try:
        if not chain:
            result = inner()
        else:
            with guard() if hooks_guarded else _NOTHING:
                result = hooks.around_step(chain, info, inner)
    except BaseException as exc:
        error = exc
        raise
    finally:
        with guard():
            elapsed = time.perf_counter() - began
            if span is not None:
                if token is not None:
                    otel_context.detach(token)
                if error is not None:
                    _fail(span, error)
                else:
                    span.set_attribute("beluga.workflow.status", result.status.value)
                    span.set_attribute("beluga.workflow.waiting_for", result.waiting_for)
                span.end()
            if state is not None and state.metering:
                counted = {
                    "beluga.workflow.name": info.workflow_name,
                    "beluga.executor": info.executor,
                }
                state.step_duration.record(elapsed, counted)
                if first:
                    state.runs_started.add(1, counted)
    return kept[0]


class Attempt:
    """One observed activity attempt: made when it starts, :meth:`call` runs the activity
    (in the attempt's thread), :meth:`end` records its outcome (wherever it is known)."""

    def __init__(
        self,
        info: ActivityInfo,
        state: _Telemetry | None,
        chain: Sequence[Callable[..., Any]],
        parent: Any,
    ) -> None:
        self.info, self.state, self.chain = info, state, chain
        self.span: Any = None
        if state is not None and state.tracer is not None:
            self.span = state.tracer.start_span(
                "beluga.activity",
                context=_context(parent),
                kind=otel_trace.SpanKind.CONSUMER,
                attributes={
                    **_run_attributes(info),
                    "beluga.activity.name": info.activity_name,
                    "beluga.activity.id": info.activity_id,
                    "beluga.activity.attempt": info.attempt,
                },
            )
        self.began = time.perf_counter()

    def call(self, fn: Callable[[], Any]) -> Any:
        token = None
        if self.span is not None:
            token = otel_context.attach(otel_trace.set_span_in_context(self.span))
        try:
            return hooks.around_activity(self.chain, self.info, fn) if self.chain else fn()
        finally:
            if token is not None:
                otel_context.detach(token)

    def end(self, error: BaseException | Mapping[str, Any] | None = None) -> None:
        """``error``: the exception, or the error as the history records it (a dict)."""
        elapsed = time.perf_counter() - self.began
        kind = _error_type(error)
        outcome = "completed" if error is None else "failed"
        if kind == "ActivityTimeoutError":
            outcome = "timed_out"
        if self.span is not None:
            self.span.set_attribute("beluga.activity.outcome", outcome)
            if error is not None:
                _fail(self.span, error)
            self.span.end()
        state = self.state
        if state is not None and state.metering:
            counted = {
                "beluga.activity.name": self.info.activity_name,
                "beluga.activity.outcome": outcome,
                "beluga.executor": self.info.executor,
            }
            state.attempts.add(1, counted)
            state.activity_duration.record(elapsed, counted)


def attempt(info: ActivityInfo, parent: Callable[[], Any] | None = None) -> Attempt | None:
    """An activity attempt to observe, or None when nothing observes attempts."""
    chain = hooks.installed().activity
    state = _telemetry()
    if state is None and not chain:
        return None
    carried = parent() if parent is not None and state is not None and state.tracing else None
    return Attempt(info, state, chain, carried)


def run_closed(info: RunClosedInfo) -> None:
    state = _telemetry()
    if state is not None and state.metering:
        state.runs_closed.add(
            1,
            {
                "beluga.workflow.name": info.workflow_name,
                "beluga.workflow.status": info.status.value,
                "beluga.executor": info.executor,
            },
        )
    chain = hooks.installed().on_run_closed
    if chain:
        hooks.notify_closed(chain, info)


def _error_type(error: BaseException | Mapping[str, Any] | None) -> str:
    if error is None:
        return ""
    if isinstance(error, BaseException):
        return type(error).__name__
    return str(error.get("type") or "")


def _fail(span: Any, error: BaseException | Mapping[str, Any]) -> None:
    if isinstance(error, BaseException):
        span.record_exception(error)
        message = str(error)
    else:  # the engine's record of it: the semantic conventions' exception event, by hand
        message = str(error.get("message") or "")
        span.add_event(
            "exception",
            {
                "exception.type": _error_type(error),
                "exception.message": message,
                "exception.stacktrace": str(error.get("traceback") or ""),
            },
        )
    span.set_status(
        otel_trace.Status(otel_trace.StatusCode.ERROR, f"{_error_type(error)}: {message}")
    )
