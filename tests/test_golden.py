"""Golden histories: histories recorded from real runs (`python -m tests.golden.record`),
checked in under tests/golden/histories/, replayed on every change of the interpreter.

A history that no longer replays — a NonDeterminismError, a new command, a different outcome —
means runs in production would break on upgrade: fix the interpreter, never the history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from beluga_workflows import registry
from beluga_workflows.continuation import Continuation
from beluga_workflows.errors import NonDeterminismError
from beluga_workflows.history import EventType, HistoryEvent
from beluga_workflows.interpreter import Decision, RunInfo
from beluga_workflows.replay import Replayer
from tests.golden import workflows  # noqa: F401  (registers the golden workflows)
from tests.sim import summary

HISTORIES = sorted((Path(__file__).parent / "golden" / "histories").glob("*.json"))

pytestmark = pytest.mark.core


def load(path: Path) -> tuple[dict[str, Any], list[HistoryEvent], RunInfo]:
    record = json.loads(path.read_text())
    events = [HistoryEvent.from_json(e) for e in record["events"]]
    info = RunInfo(record["workflow_id"], record["run_id"], record["workflow"], record["input"])
    return record, events, info


def replay(record: dict[str, Any], events: list[HistoryEvent], info: RunInfo) -> Decision:
    fn = registry.resolve(record["workflow"])
    return Replayer(fn, info, record["decided_through"]).run(events)


def test_every_feature_has_a_golden_history():
    kinds = {json.loads(p.read_text())["status"] for p in HISTORIES}
    assert kinds == {"completed", "failed", "canceled", "continued_as_new"}
    types = {e["type"] for p in HISTORIES for e in json.loads(p.read_text())["events"]}
    for needed in ("ActivityAttemptFailed", "TimerFired", "TimerCanceled", "SignalReceived",
                   "ChildWorkflowCompleted", "MarkerRecorded", "WorkflowContinuedAsNew",
                   "CancelRequested"):  # fmt: skip
        assert needed in types, needed


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_a_golden_history_replays_to_its_recorded_outcome(path: Path):
    record, events, info = load(path)
    decision = replay(record, events, info)
    assert not isinstance(decision.error, NonDeterminismError), decision.error
    assert decision.commands == [], "replay asked for work the recorded run never did"
    closing = events[-1]
    assert decision.done
    if closing.type is EventType.WORKFLOW_COMPLETED:
        assert decision.error is None and decision.result == closing.data["result"]
    elif closing.type is EventType.WORKFLOW_FAILED:
        assert type(decision.error).__name__ == closing.data["error"]["type"]
    elif closing.type is EventType.WORKFLOW_CANCELED:
        assert decision.canceled
    else:
        assert closing.type is EventType.WORKFLOW_CONTINUED_AS_NEW
        assert decision.continue_as_new is not None
        assert decision.continue_as_new.input == closing.data["input"]

    # A worker that had the run live (a continuation fed the history) decides the same.
    fn = registry.resolve(record["workflow"])
    live = Continuation(fn, info, timeout=5, horizon=record["decided_through"])
    try:
        assert summary(live.feed(events)) == summary(decision)
    finally:
        live.close()


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_every_prefix_of_a_golden_history_replays(path: Path):
    """What a worker taking the run over mid-way replays: no prefix may raise."""
    record, events, info = load(path)
    fn = registry.resolve(record["workflow"])
    for end in range(1, len(events)):
        decision = Replayer(fn, info).run(events[:end])
        assert not isinstance(decision.error, NonDeterminismError), (end, decision.error)
