"""Replaying a recorded history against today's code: what ``testing.replay`` does.

A history comes as it was exported. ``manage.py workflow history <id> --json`` gives a JSON
list of events with the fields of :meth:`~beluga_workflows.history.HistoryEvent.to_json`;
``GET /api/workflows/{id}/events/`` gives them a page at a time, in ``results`` (the API writes
UTC as ``Z``): the joined ``results`` of its pages, or its last page when it is also the first
(``next`` is null), are a history. A file holding either, an object with ``events`` (and
optionally the run's ``workflow_id`` and ``run_id``, as the golden histories keep them) and a
list of :class:`HistoryEvent` are read too.

The function runs on the interpreter's :class:`~beluga_workflows.replay.Replayer`, exactly as a
worker taking the run over would. Drift is a :class:`NonDeterminismError`:

* the interpreter's own: a step asks for something other than what the history recorded, or
  the function returns while the history holds more steps;
* the ending's: a history the workflow closed itself (completed, canceled, continued as new)
  must close the same way again, with no new step. A change that makes a finished run do more
  would make a running one do it too. A failed history is not held to its failure (fixing the
  bug behind it is what a deploy is for), nor a timed-out one (the engine's clock ended it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import registry
from .errors import NonDeterminismError
from .history import (
    CLOSING_EVENTS,
    COMMAND_EVENTS,
    Command,
    EventType,
    HistoryEvent,
    RecordMarker,
    describe,
    waiting_label,
)
from .interpreter import Decision, RunInfo
from .options import Status
from .replay import Replayer

E = EventType

#: What ``replay`` reads: see the module docstring.
History = Sequence[HistoryEvent | Mapping[str, Any]] | Mapping[str, Any] | str | os.PathLike[str]

#: The run id replay uses when the history does not say (the REST and CLI lists do not).
UNKNOWN_RUN_ID = "00000000-0000-0000-0000-000000000000"

#: Events that a decision of the workflow writes: its commands and what settles them at once.
_DECIDED = (
    COMMAND_EVENTS
    | CLOSING_EVENTS
    | {
        E.MARKER_RECORDED,
        E.TIMER_CANCELED,
        E.CHILD_WORKFLOW_STARTED,
        E.CHILD_WORKFLOW_START_FAILED,
        E.CHILD_SIGNAL_SENT,
        E.CHILD_SIGNAL_FAILED,
    }
)

#: Endings the workflow code chose itself, which replay must reach again.
_CLOSED_BY_CODE = {
    E.WORKFLOW_COMPLETED: Status.COMPLETED,
    E.WORKFLOW_CANCELED: Status.CANCELED,
    E.WORKFLOW_CONTINUED_AS_NEW: Status.CONTINUED_AS_NEW,
}

_ENDINGS = {
    Status.RUNNING: "waiting",
    Status.COMPLETED: "completing",
    Status.FAILED: "failing",
    Status.CANCELED: "closing as canceled",
    Status.CONTINUED_AS_NEW: "continuing as new",
}


@dataclass(frozen=True)
class ReplayResult:
    """What today's code decides from a recorded history.

    ``status`` is ``running`` when the history is not closed and the code waits for more;
    ``waiting_for`` then says for what (``signal:approval``) and ``next_steps`` lists the steps
    the code would take next that the history does not hold yet (``activity 'report'``).
    ``result`` is the workflow's return value, ``error`` the exception it ended with.
    """

    status: Status
    result: Any = None
    error: BaseException | None = None
    waiting_for: str = ""
    next_steps: tuple[str, ...] = ()


def load(history: History) -> tuple[list[HistoryEvent], dict[str, Any]]:
    """The events of an exported history, and what it says about its run."""
    data: Any = history
    if isinstance(data, str) and not data.lstrip().startswith(("[", "{")):
        data = Path(data)
    if isinstance(data, os.PathLike):
        data = json.loads(Path(data).read_text())
    elif isinstance(data, str):
        data = json.loads(data)
    about: dict[str, Any] = {}
    if isinstance(data, Mapping):
        if "events" not in data and "results" in data:  # a page of GET .../events/
            if data.get("next"):
                raise ValueError(
                    "This is one page of a history: follow its `next` link and join the pages' "
                    "'results', or export it with manage.py workflow history <id> --json."
                )
            data = {**data, "events": data["results"]}
        if "events" not in data:
            raise ValueError(
                "A history is a list of events (manage.py workflow history <id> --json, or "
                "the joined 'results' of GET /api/workflows/<id>/events/), or an object with "
                "an 'events' list."
            )
        about = {**data, "workflow_id": data.get("workflow_id") or data.get("id")}
        data = data["events"]
    events = []
    for number, item in enumerate(data, 1):
        if isinstance(item, HistoryEvent):
            events.append(item)
            continue
        try:
            events.append(HistoryEvent.from_json(dict(item)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"Event {number} of the history is not a workflow event: {exc}"
            ) from exc
    events.sort(key=lambda event: event.sequence)
    if not events or events[0].type is not E.WORKFLOW_STARTED:
        raise ValueError("A history starts with its WorkflowStarted event; this one does not.")
    return events, about


def decided_through(events: Sequence[HistoryEvent]) -> int | None:
    """How far the recorded run's last decision had read (the run row's ``decided_through``),
    told from the history alone: code the replay reaches before then ran before, which is what
    ``ctx.patched`` and ``ctx.is_replaying`` go by. A closed run decided everything."""
    if events and events[-1].type in CLOSING_EVENTS:
        return len(events)
    return max((n for n, event in enumerate(events, 1) if event.type in _DECIDED), default=None)


def status_of(decision: Decision) -> Status:
    if not decision.done:
        return Status.RUNNING
    if decision.continue_as_new is not None:
        return Status.CONTINUED_AS_NEW
    if decision.error is None:
        return Status.COMPLETED
    return Status.CANCELED if decision.canceled else Status.FAILED


def ending(decision: Decision) -> str:
    """How a decision ends the run, in a NonDeterminismError's words."""
    status = status_of(decision)
    if status is Status.RUNNING:
        return f"the workflow waiting for {waiting_label(decision.waiting) or 'nothing'}"
    text = f"the workflow {_ENDINGS[status]}"
    if status is Status.COMPLETED:
        return f"{text} with {json.dumps(decision.result)[:80]}"
    if status is Status.FAILED:
        return f"{text} with {type(decision.error).__name__}"
    return text


def run(
    fn: Callable[..., Any], events: Sequence[HistoryEvent], info: RunInfo
) -> tuple[Decision, int, NonDeterminismError | None]:
    """Replay ``events``: the decision, the step the code stands at, and the interpreter's
    NonDeterminismError if it found one."""
    replayer = Replayer(fn, info, decided_through(events))
    decision = replayer.run(events)
    machine = replayer.machine
    assert machine is not None
    return decision, machine.next_step, machine.failure


def ending_drift(
    events: Sequence[HistoryEvent], decision: Decision, step: int
) -> NonDeterminismError | None:
    """A history the code closed itself must close the same way, with nothing new."""
    recorded = _CLOSED_BY_CODE.get(events[-1].type)
    if recorded is None:
        return None
    expected = f"the workflow {_ENDINGS[recorded]}"
    if decision.commands:
        command = decision.commands[0]
        number = command.step if command.step is not None else step
        return NonDeterminismError(number, expected, _step(command))
    if status_of(decision) is not recorded:
        return NonDeterminismError(step, expected, ending(decision))
    return None


def live_drift(
    fn: Callable[..., Any], events: Sequence[HistoryEvent], info: RunInfo, live: Decision
) -> NonDeterminismError | None:
    """What a worker replaying a just-closed run from the start (``events`` end with its
    closing) would decide differently from the live run's last ``decision``: how the test
    environment catches workflow code that reads the clock, ``random`` or a global."""
    if isinstance(live.error, NonDeterminismError):
        return None  # the live run failed on drift already
    replayed, step, failure = run(fn, events, info)
    if failure is not None:
        return failure
    if replayed.commands:
        command = replayed.commands[0]
        number = command.step if command.step is not None else step
        return NonDeterminismError(number, ending(live), _step(command))
    if _outcome(replayed) != _outcome(live):
        return NonDeterminismError(step, ending(live), ending(replayed))
    return None


def _step(command: Command) -> str:
    """A command as a NonDeterminismError names it: ``activity 'report'``."""
    if isinstance(command, RecordMarker):
        return f"patch marker {command.name!r}"
    return describe(command.event_type, command.name)


def _outcome(decision: Decision) -> tuple[Any, ...]:
    status = status_of(decision)
    if status is Status.FAILED:
        return status, type(decision.error).__name__
    if status is Status.CONTINUED_AS_NEW:
        assert decision.continue_as_new is not None
        return status, decision.continue_as_new.input
    return status, decision.result


def replay(
    fn: Callable[..., Any] | str,
    history: History,
    *,
    workflow_id: str | None = None,
    run_id: str | None = None,
) -> ReplayResult:
    """Replay a recorded ``history`` against ``fn`` (a workflow function or its public name);
    raise :class:`NonDeterminismError` where today's code drifts from it.

    ``run_id`` (and ``workflow_id``) are the recorded run's: the exported event lists do not
    carry them, and ``ctx.random()``, ``ctx.uuid4()`` and default child ids derive from the run
    id — pass it when the workflow's steps depend on those.
    """
    function = registry.resolve_public(fn) if isinstance(fn, str) else fn
    events, about = load(history)
    started = events[0]
    info = RunInfo(
        workflow_id or about.get("workflow_id") or "replay",
        run_id or about.get("run_id") or UNKNOWN_RUN_ID,
        started.name or registry.workflow_name(function),
        started.data.get("input"),
    )
    decision, step, failure = run(function, events, info)
    drift = failure or ending_drift(events, decision, step)
    if drift is not None:
        raise drift
    return ReplayResult(
        status=status_of(decision),
        result=decision.result,
        error=decision.error,
        waiting_for=waiting_label(decision.waiting),
        next_steps=tuple(_step(command) for command in decision.commands),
    )
