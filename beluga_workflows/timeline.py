"""A run's history as people read it: one sentence per event, and spans for a Gantt chart.

The history records *points* (scheduled, attempt failed, completed, signal received…). People
want *spans*: how long each activity took and over how many attempts, how long the run waited
for its approval and who gave it. :func:`build` pairs the points into :class:`Span` objects;
:func:`describe` says what one event means. The admin's run page draws both; the CLI prints the
sentences.

This only reads a history; it never decides anything about the run.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .history import CLOSING_EVENTS, EventType, HistoryEvent

E = EventType
CLOSING = CLOSING_EVENTS
_CHILD_CLOSED = {E.CHILD_WORKFLOW_COMPLETED, E.CHILD_WORKFLOW_FAILED, E.CHILD_WORKFLOW_START_FAILED}


def format_duration(seconds: float | None) -> str:
    """``0.0123`` → ``12 ms``, ``75`` → ``1 min 15 s``, ``90000`` → ``1 d 1 h``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{value} {unit}" for value, unit in parts if value][:2]
    return " ".join(shown)


def _one_line(value: Any) -> Any:
    """The value with every text in it on one line (line breaks and space runs as one space)."""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list):
        return [_one_line(item) for item in value]
    if isinstance(value, dict):
        return {key: _one_line(item) for key, item in value.items()}
    return value


def short_json(value: Any, limit: int = 80) -> str:
    """A value in one line of at most about ``limit`` characters, for a sentence.

    Text reads as text: in quotes, its line breaks and runs of spaces shown as one space (not
    as ``\\n``); other values as compact JSON. What is too long is cut at the last word or
    item boundary before the limit, never inside a word, and ends with an ellipsis.
    """
    if isinstance(value, str):
        text = "“" + " ".join(value.split()) + "”"
    else:
        text = json.dumps(
            _one_line(value), ensure_ascii=False, default=str, separators=(", ", ": ")
        )
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    boundary = max(cut.rfind(" "), cut.rfind(","))
    if boundary > limit // 2:  # a word or item boundary not too far back
        cut = cut[:boundary]
    return cut.rstrip(" ,") + "…"


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    kind = error.get("cause_type") or error.get("type") or "Error"
    message = error.get("cause_message") or error.get("message") or ""
    return f"{kind}: {message}" if message else str(kind)


def describe(event: HistoryEvent) -> str:
    """One sentence for one event, e.g. ``Signal 'approval' = true from 'alice'.``"""
    data, name = event.data or {}, event.name
    match event.type:
        case E.WORKFLOW_STARTED:
            limit = data.get("timeout")
            timeout = f", timeout {format_duration(limit)}" if limit else ""
            return f"Started {name} with input {short_json(data.get('input'))}{timeout}."
        case E.ACTIVITY_SCHEDULED:
            options = data.get("options") or {}
            tries = (options.get("retry") or {}).get("max_attempts")
            limits = f" (up to {tries} attempts" if tries else " ("
            limits += f", {format_duration(options.get('timeout'))} each)"
            return f"Scheduled activity {name}{limits}."
        case E.ACTIVITY_ATTEMPT_FAILED:
            retry = format_duration(data.get("retry_in"))
            return (
                f"Attempt {event.attempt} of {name} failed: {_error_text(data.get('error'))}; "
                f"retrying in {retry}."
            )
        case E.ACTIVITY_COMPLETED:
            return (
                f"Activity {name} completed on attempt {event.attempt}: "
                f"{short_json(data.get('result'))}."
            )
        case E.ACTIVITY_FAILED:
            return (
                f"Activity {name} failed for good on attempt {event.attempt}: "
                f"{_error_text(data.get('error'))}."
            )
        case E.TIMER_STARTED:
            duration = format_duration(data.get("duration"))
            if name == "timer":
                return f"Started a timer of {duration}."
            if name == "timeout":
                return f"Waiting for the first of several, for at most {duration}."
            return f"Sleeping for {duration}."
        case E.TIMER_FIRED:
            if name == "signal_timeout":
                return "The signal wait timed out."
            return "Timer fired."
        case E.TIMER_CANCELED:
            return "Timer canceled: no longer needed."
        case E.CHILD_WORKFLOW_SCHEDULED:
            return (
                f"Starting child workflow {name} as {data.get('id')!r} with input "
                f"{short_json(data.get('input'))}."
            )
        case E.CHILD_WORKFLOW_STARTED:
            return f"Child workflow {data.get('id')!r} started."
        case E.CHILD_WORKFLOW_START_FAILED:
            return f"Child workflow {name} could not start: {_error_text(data.get('error'))}."
        case E.CHILD_WORKFLOW_COMPLETED:
            return (
                f"Child workflow {data.get('id')!r} completed with result "
                f"{short_json(data.get('result'))}."
            )
        case E.CHILD_WORKFLOW_FAILED:
            status = str(data.get("status") or "failed").replace("_", " ")
            return f"Child workflow {data.get('id')!r} {status}: {_error_text(data.get('error'))}."
        case E.CHILD_SIGNAL_SCHEDULED:
            return (
                f"Sending signal {name!r} = {short_json(data.get('payload'))} to child "
                f"{data.get('id')!r}."
            )
        case E.CHILD_SIGNAL_SENT:
            return f"Signal {name!r} delivered to the child."
        case E.CHILD_SIGNAL_FAILED:
            return f"Signal {name!r} not delivered: {_error_text(data.get('error'))}."
        case E.MARKER_RECORDED:
            return f"Took the new code of change {name!r} (ctx.patched)."
        case E.WORKFLOW_CONTINUED_AS_NEW:
            return f"Continued as a new run with input {short_json(data.get('input'))}."
        case E.SIGNAL_WAIT_STARTED:
            deadline = data.get("timeout")
            until = f" for at most {format_duration(deadline)}" if deadline else ""
            return f"Waiting for signal {name!r}{until}."
        case E.SIGNAL_RECEIVED:
            sender = data.get("sender")
            by = f" from {sender!r}" if sender else ""
            return f"Signal {name!r} = {short_json(data.get('payload'))}{by}."
        case E.CANCEL_REQUESTED:
            sender = data.get("sender")
            return f"Cancel requested{f' by {sender!r}' if sender else ''}."
        case E.WORKFLOW_COMPLETED:
            return f"Completed with result {short_json(data.get('result'))}."
        case E.WORKFLOW_FAILED:
            return f"Failed: {_error_text(data.get('error'))}."
        case E.WORKFLOW_CANCELED:
            return "Canceled."
        case E.WORKFLOW_TIMED_OUT:
            return f"Timed out: {_error_text(data.get('error'))}."
    return f"{event.type} {name}".strip()


@dataclass
class Segment:
    """A stretch of a span: one activity attempt, or the backoff before the next one."""

    start: datetime
    end: datetime | None
    kind: str  # "attempt-ok", "attempt-failed", "backoff", "wait", "running"
    title: str = ""


@dataclass(eq=False)  # spans are compared by identity: two waits may look alike
class Span:
    kind: str  # "activity", "timer", "signal", "child"
    name: str  # the activity, timer or signal name
    label: str
    start: datetime
    step: int | None = None
    end: datetime | None = None
    outcome: str = "running"  # completed, failed, received, timed_out, fired, canceled, running
    attempts: int = 0
    detail: str = ""
    segments: list[Segment] = field(default_factory=list)
    #: The child's workflow id, for a child workflow's span, and where its page is.
    child_id: str = ""
    link: str = ""

    @property
    def duration(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.end else None


@dataclass
class Marker:
    at: datetime
    kind: str  # "signal" or "cancel"
    label: str


@dataclass
class Timeline:
    start: datetime | None
    end: datetime | None  # None while the run is open
    spans: list[Span]
    markers: list[Marker]

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()


def build(events: Iterable[HistoryEvent]) -> Timeline:
    """Pair a history's events into spans (open spans have ``end=None``)."""
    spans: list[Span] = []
    markers: list[Marker] = []
    by_step: dict[int, Span] = {}
    # The k-th wait for a signal name takes the k-th signal of that name (the history is the
    # inbox and the interpreter consumes it in order); signals may arrive before the wait.
    open_waits: dict[str, deque[Span]] = defaultdict(deque)
    unread: dict[str, deque[HistoryEvent]] = defaultdict(deque)
    start = end = None

    for event in events:
        data, name, step = event.data or {}, event.name, event.step
        if event.type is E.WORKFLOW_STARTED:
            start = event.timestamp
        elif event.type in CLOSING:
            end = event.timestamp
        elif event.type is E.ACTIVITY_SCHEDULED and step is not None:
            span = Span("activity", name, name, event.timestamp, step, attempts=1)
            span.segments.append(Segment(event.timestamp, None, "running", "attempt 1"))
            by_step[step] = span
            spans.append(span)
        elif event.type in (E.ACTIVITY_ATTEMPT_FAILED, E.ACTIVITY_COMPLETED, E.ACTIVITY_FAILED):
            found = by_step.get(step) if step is not None else None
            if found is None:
                continue
            span = found
            failed = event.type is not E.ACTIVITY_COMPLETED
            current = span.segments[-1]
            current.end = event.timestamp
            current.kind = "attempt-failed" if failed else "attempt-ok"
            current.title = f"attempt {event.attempt}: " + (
                _error_text(data.get("error")) if failed else "completed"
            )
            if event.type is E.ACTIVITY_ATTEMPT_FAILED:
                resume = event.timestamp + timedelta(seconds=data.get("retry_in") or 0)
                span.segments.append(Segment(event.timestamp, resume, "backoff", "backoff"))
                span.segments.append(
                    Segment(resume, None, "running", f"attempt {event.attempt + 1}")
                )
                span.attempts = event.attempt + 1
            else:
                span.end, span.attempts = event.timestamp, event.attempt
                span.outcome = "failed" if failed else "completed"
                span.detail = _error_text(data.get("error")) if failed else ""
        elif event.type is E.TIMER_STARTED and step is not None:
            label = f"{name or 'sleep'} {format_duration(data.get('duration'))}"
            by_step[step] = Span("timer", name, label, event.timestamp, step)
            spans.append(by_step[step])
        elif event.type is E.TIMER_CANCELED:
            canceled = by_step.get(step) if step is not None else None
            if canceled is not None and canceled.end is None:
                canceled.end, canceled.outcome = event.timestamp, "canceled"
        elif event.type is E.CHILD_WORKFLOW_SCHEDULED and step is not None:
            child_id = str(data.get("id", ""))
            span = Span("child", name, f"child {child_id}", event.timestamp, step)
            span.child_id = child_id
            by_step[step] = span
            spans.append(span)
        elif event.type in _CHILD_CLOSED:
            found = by_step.get(step) if step is not None else None
            if found is not None and found.end is None:
                found.end = event.timestamp
                if event.type is E.CHILD_WORKFLOW_COMPLETED:
                    found.outcome = "completed"
                else:
                    found.outcome = str(data.get("status") or "failed")
                    found.detail = _error_text(data.get("error"))
        elif event.type is E.TIMER_FIRED:
            fired = by_step.get(step) if step is not None else None
            if fired is not None and fired.end is None:
                fired.end = event.timestamp
                fired.outcome = "timed_out" if fired.kind == "signal" else "fired"
                if fired in open_waits[fired.name]:  # a timed-out wait takes no signal
                    open_waits[fired.name].remove(fired)
        elif event.type is E.SIGNAL_WAIT_STARTED and step is not None:
            span = Span("signal", name, f"signal {name}", event.timestamp, step)
            by_step[step] = span
            spans.append(span)
            if unread[name]:
                _receive(span, unread[name].popleft(), at=event.timestamp)
            else:
                open_waits[name].append(span)
        elif event.type is E.SIGNAL_RECEIVED:
            sender = data.get("sender")
            label = f"{name} = {short_json(data.get('payload'), 30)}"
            label += f" ({sender})" if sender else ""
            markers.append(Marker(event.timestamp, "signal", label))
            if open_waits[name]:
                _receive(open_waits[name].popleft(), event, at=event.timestamp)
            else:
                unread[name].append(event)
        elif event.type is E.CANCEL_REQUESTED:
            sender = data.get("sender")
            label = f"cancel ({sender})" if sender else "cancel"
            markers.append(Marker(event.timestamp, "cancel", label))

    if end is not None:  # whatever was still open ended with the run
        for span in spans:
            if span.end is None:
                span.end, span.outcome = end, "canceled"
            for segment in span.segments:
                segment.end = segment.end or end
    for span in spans:
        if span.kind != "activity":
            kind = "running" if span.end is None else span.kind
            span.segments = [Segment(span.start, span.end, kind, span.outcome)]
    return Timeline(start, end, spans, markers)


def _receive(span: Span, event: HistoryEvent, at: datetime) -> None:
    data = event.data or {}
    sender = data.get("sender")
    span.end, span.outcome = at, "received"
    span.detail = f"{short_json(data.get('payload'), 30)}" + (f" from {sender}" if sender else "")


def gantt(timeline: Timeline, now: datetime) -> dict[str, Any]:
    """Positions in percent of the run's duration, as strings ready for a CSS ``style``."""
    origin = timeline.start
    if origin is None:
        return {"rows": [], "markers": [], "total": "—"}
    finish = timeline.end or now
    total = max((finish - origin).total_seconds(), 0.001)

    def pos(at: datetime | None) -> float:
        at = at or finish
        return min(max((at - origin).total_seconds() / total * 100, 0.0), 100.0)

    def place(start: datetime, end: datetime | None) -> dict[str, str]:
        left = pos(start)
        width = max(pos(end) - left, 0.4)  # an 8 ms activity in a day-long run stays visible
        return {"left": f"{min(left, 99.6):.3f}", "width": f"{width:.3f}"}

    rows = []
    for span in timeline.spans:
        duration = span.duration if span.end else (now - span.start).total_seconds()
        meta = format_duration(duration)
        if span.kind == "activity" and span.attempts > 1:
            meta = f"{span.attempts} attempts · {meta}"
        rows.append(
            {
                "span": span,
                "meta": meta,
                "segments": [
                    {**place(seg.start, seg.end), "kind": seg.kind, "title": seg.title}
                    for seg in span.segments
                ],
            }
        )
    markers = [
        {"left": place(m.at, m.at)["left"], "kind": m.kind, "label": m.label}
        for m in timeline.markers
    ]
    return {
        "rows": rows,
        "markers": markers,
        "total": format_duration(total),
        "parallel": max_parallel(timeline.spans, now),
    }


def max_parallel(spans: list[Span], now: datetime) -> int:
    """The most activities and child workflows that were in progress at the same moment."""
    edges: list[tuple[datetime, int]] = []
    for span in spans:
        if span.kind in ("activity", "child"):
            edges += [(span.start, 1), (span.end or now, -1)]
    most = current = 0
    for _, change in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        current += change
        most = max(most, current)
    return most
