"""Workflow code that would decide differently on replay fails with DeterminismViolationError.

In this process, on the interpreter (the guard itself: what it refuses, where it is off, why a
caught violation still fails the run), then on both executors against a real `runworker`
with the workflows of `tests/workflows_determinism.py`: each mistake fails its run with the
same error, naming the call, while ctx.now()/ctx.random() and activities keep working.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from random import choice  # bound before any workflow ran in this process
from typing import Any
from uuid import uuid4 as imported_uuid4  # the same

import pytest
from django.utils import timezone

from beluga_workflows import determinism, workflow
from beluga_workflows.continuation import Continuation, GreenletContinuation
from beluga_workflows.errors import error_from_json, error_to_json
from beluga_workflows.history import EventType, HistoryEvent
from beluga_workflows.interpreter import RunInfo
from beluga_workflows.replay import Replayer
from tests import workflows_determinism as wf
from tests import workflows_determinism_lazy
from tests.conformance import Engine
from tests.harness import run_count

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INFO = RunInfo("det-1", "00000000-0000-0000-0000-0000000000d1", "det", None)


def started() -> list[HistoryEvent]:
    return [HistoryEvent(1, EventType.WORKFLOW_STARTED, T0, None, "det", 0, {})]


def activity_done(events: list[HistoryEvent], result: Any) -> list[HistoryEvent]:
    """The events of step 0's activity, scheduled and completed, after ``events``."""
    seq = len(events)
    return [
        HistoryEvent(seq + 1, EventType.ACTIVITY_SCHEDULED, T0, 0, "echo", 1, {}),
        HistoryEvent(seq + 2, EventType.ACTIVITY_COMPLETED, T0, 0, "echo", 1, {"result": result}),
    ]


def doing(mistake: Any) -> Any:
    def fn(ctx: workflow.WorkflowContext, _: Any) -> Any:
        return mistake()

    return fn


def refused(fn: Any) -> workflow.DeterminismViolationError:
    decision = Replayer(fn, INFO).run(started())
    assert decision.done
    assert isinstance(decision.error, workflow.DeterminismViolationError), decision.error
    return decision.error


def where(fn: Any) -> str:
    """The location an error names for a mistake made on the line after ``def fn``."""
    return f"{fn.__module__}.{fn.__name__}, line {fn.__code__.co_firstlineno + 1}"


# What the guard refuses --------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(wf.MISTAKES))
def test_each_mistake_fails_the_run_naming_the_call_and_its_replacement(kind: str) -> None:
    mistake, call = wf.MISTAKES[kind]
    error = refused(doing(mistake))
    assert error.call == call
    assert error.location == where(mistake)
    assert f"called {call} (in {where(mistake)})" in str(error)
    replacement = {"clock": "ctx.now()", "datetime": "ctx.now()", "random": "ctx.random()"}
    assert replacement.get(kind, "an activity") in error.replacement
    assert str(error).endswith(f"Use {error.replacement} instead.")


def uuid4() -> Any:
    return uuid.uuid4()


def early_uuid4() -> Any:
    return imported_uuid4()


def token() -> Any:
    return secrets.token_hex()


def read_path() -> Any:
    return Path(os.devnull).read_text()


def choose() -> Any:
    return choice([1, 2, 3])


def today() -> Any:
    return date.today()


def django_now() -> Any:
    return timezone.now()


def connect() -> Any:
    with socket.create_connection(("127.0.0.1", 9), timeout=1):
        pass


def run_process() -> Any:
    return subprocess.run(["true"], check=False)


def pool() -> Any:
    return ThreadPoolExecutor(1).submit(int).result()


@pytest.mark.parametrize(
    ("mistake", "call", "replacement"),
    [
        (uuid4, "uuid.uuid4()", "ctx.uuid4()"),
        (choose, "random.choice()", "ctx.random()"),
        (today, "datetime.date.today()", "ctx.now()"),
        (django_now, "datetime.datetime.now()", "ctx.now()"),
        (early_uuid4, "uuid.uuid4()", "ctx.uuid4()"),
        (token, "secrets.token_hex()", "ctx.uuid4()"),
        (connect, "socket.create_connection()", "an activity"),
        (run_process, "subprocess.run()", "an activity"),
        (pool, "concurrent.futures.thread.ThreadPoolExecutor.submit()", "ctx.start_activity()"),
        (read_path, "pathlib.Path.read_text()", "an activity"),
    ],
)
def test_more_mistakes_and_where_they_were_made(mistake: Any, call: str, replacement: str) -> None:
    error = refused(doing(mistake))
    assert (error.call, error.location) == (call, where(mistake))
    assert replacement in error.replacement


def test_workflow_code_may_log_import_and_use_ctx(caplog: pytest.LogCaptureFixture) -> None:
    def fine(ctx: workflow.WorkflowContext, _: Any) -> Any:
        logging.getLogger("tests.determinism").warning("at %s", ctx.now())
        import tabnanny  # noqa: F401  (importing reads files: not the workflow's doing)

        return [ctx.now().isoformat(), ctx.random(), str(ctx.uuid4()), random.Random(7).random()]

    with caplog.at_level(logging.WARNING):
        decision = Replayer(fine, INFO).run(started())
    assert decision.error is None
    assert decision.result[0] == T0.isoformat() and decision.result[3] == random.Random(7).random()
    assert "at 2026-01-01" in caplog.text


def test_the_guard_is_on_only_while_workflow_code_runs() -> None:
    """Parked at a step, the run's thread runs other code (Temporal's, on a greenlet), freely;
    resumed, the workflow is refused again. The guard proves itself: lifted, the same call
    passes."""

    def steps(ctx: workflow.WorkflowContext, _: Any) -> Any:
        with determinism.lifted():
            allowed = time.time() > 0
        ctx.execute_activity(wf.echo, 1)
        return allowed, time.time()

    live = GreenletContinuation(steps, INFO)
    events = started()
    assert not live.feed(events).done  # parked at the activity, on this thread
    assert time.time() > 0 and datetime.now().year > 2000  # not workflow code
    decision = live.feed(activity_done(events, 1))
    assert isinstance(decision.error, workflow.DeterminismViolationError)
    assert decision.error.call == "time.time()"


@pytest.mark.parametrize("kind", ["replay", "thread", "greenlet"])
def test_a_caught_violation_still_fails_the_run(kind: str) -> None:
    """Without the guard's memory, `det_caught` would go on to its activity."""
    if kind == "replay":
        decision = Replayer(wf.caught, INFO).run(started())
    elif kind == "thread":
        decision = Continuation(wf.caught, INFO, timeout=10).feed(started())
    else:
        decision = GreenletContinuation(wf.caught, INFO).feed(started())
    assert decision.done and decision.commands == []
    assert isinstance(decision.error, workflow.DeterminismViolationError)
    assert decision.error.location == where(wf.read_clock)


def test_other_threads_are_never_guarded() -> None:
    """While workflow code runs on one thread, another reads the clock freely."""
    go, done, seen = threading.Event(), threading.Event(), []

    def other() -> None:
        go.wait(10)
        seen.append(time.time())
        done.set()

    def waits(ctx: workflow.WorkflowContext, _: Any) -> Any:
        go.set()
        return done.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    decision = Continuation(waits, INFO, timeout=10).feed(started())
    thread.join()
    assert decision.result is True and len(seen) == 1


def test_the_error_survives_the_history() -> None:
    error = refused(doing(wf.read_clock))
    again = error_from_json(error_to_json(error))
    assert isinstance(again, workflow.DeterminismViolationError)
    assert (str(again), again.call, again.location) == (str(error), error.call, error.location)


def restricted_now() -> Any:
    from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

    raise RestrictedWorkflowAccessError("datetime.datetime.now")


def test_temporals_own_refusal_reads_as_the_same_error() -> None:
    """In a module Temporal's sandbox imported itself, its refusal is the same mistake."""
    error = refused(doing(restricted_now))
    assert error.call == "datetime.datetime.now()"
    line = restricted_now.__code__.co_firstlineno + 3  # the raise
    assert error.location == f"{__name__}.restricted_now, line {line}"
    assert "ctx.now()" in error.replacement


# On both executors --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_every_mistake_fails_its_run_with_the_same_error_on_both_executors(
    engine: Engine, counter_dir: Any
) -> None:
    handles = {kind: engine.start(wf.mistake, kind) for kind in sorted(wf.MISTAKES)}
    caught = engine.start(wf.caught)
    lazy = engine.start(wf.lazy)
    fine = engine.start(wf.deterministic)
    for kind, handle in handles.items():
        with pytest.raises(workflow.WorkflowFailedError) as raised:
            handle.result(timeout=60)
        cause = raised.value.cause
        assert isinstance(cause, workflow.DeterminismViolationError), (kind, cause)
        mistake, _ = wf.MISTAKES[kind]
        # The very error the guard raises in this process, message and all.
        assert str(cause) == str(refused(doing(mistake))), kind
    # Imported anew by Temporal's sandbox, refused by it: the same error all the same.
    with pytest.raises(workflow.WorkflowFailedError) as raised:
        lazy.result(timeout=60)
    assert str(raised.value.cause) == str(refused(doing(workflows_determinism_lazy.read_clock)))
    with pytest.raises(workflow.WorkflowFailedError) as raised:
        caught.result(timeout=60)
    assert isinstance(raised.value.cause, workflow.DeterminismViolationError)
    assert "ActivityScheduled" not in engine.event_types(caught.id)
    assert fine.result(timeout=60) == {
        "now": True,
        "random": True,
        "uuid": 36,
        "activity": {"clock": True, "now": True, "random": True, "users": 0},
    }
    assert run_count(counter_dir, "det_free") == 1


# Temporal's sandbox, as the worker builds it ---------------------------------------------------


def test_the_sandbox_passes_through_only_ours_django_the_apps_and_what_is_declared(
    settings: Any,
) -> None:
    from beluga_workflows.executors.temporal.worker import sandbox_restrictions

    temporal = {**settings.BELUGA_WORKFLOWS.get("TEMPORAL", {}), "PASSTHROUGH_MODULES": ["pricing"]}
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "TEMPORAL": temporal}
    restrictions = sandbox_restrictions()
    assert not restrictions.passthrough_all_modules
    passed = restrictions.passthrough_modules
    assert {"beluga_workflows", "django", "greenlet", "project", "pricing"} <= passed
    assert "tests" not in passed  # a workflow module is passed through on its own, once used
    # open() is the guard's: refused with the same error as on the built-in engine.
    assert "open" not in restrictions.invalid_module_members.children["__builtins__"].use


@pytest.mark.parametrize("value", ["pricing", [""], [3]])
def test_check_refuses_passthrough_modules_that_are_not_module_names(
    settings: Any, value: Any
) -> None:
    from django.core.checks import run_checks

    temporal = {**settings.BELUGA_WORKFLOWS.get("TEMPORAL", {}), "PASSTHROUGH_MODULES": value}
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "TEMPORAL": temporal}
    errors = [e for e in run_checks() if e.id == "beluga_workflows.E005"]
    assert any("PASSTHROUGH_MODULES" in e.msg for e in errors), errors
