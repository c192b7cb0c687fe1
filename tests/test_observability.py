"""Observability: OpenTelemetry spans and metrics, and HOOKS, against real workers.

The worker subprocesses run `tests/settings_otel.py`: the OpenTelemetry SDK exporting their
spans and metrics to files, and the hooks of `tests/observability_hooks.py` when a test asks.
This process, the client, records its own spans in memory (`client_otel`), then puts the API's
globals back so the rest of the session runs with no provider at all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from opentelemetry import trace

from beluga_workflows import observability, workflow
from beluga_workflows.history import EventType
from beluga_workflows.hooks import ActivityInfo, Hook, StepInfo, StepResult
from beluga_workflows.options import Status
from tests import harness, otel_support
from tests.conformance import Engine
from tests.harness import wait_until
from tests.otel_support import span_dict, total
from tests.workflows_conformance import waits_forever
from tests.workflows_observability import fails, held, sandboxed, traced

EXECUTORS = ["default", pytest.param("temporal", marks=pytest.mark.temporal)]
HOOKS = "tests.observability_hooks.Outer,tests.observability_hooks.Inner"


@dataclasses.dataclass
class Observed:
    """An executor, its worker (exporting to `directory`) and a way to read what it exported."""

    engine: Engine
    directory: Path

    @property
    def kind(self) -> str:
        return self.engine.kind

    def spans(self, workflow_id: str) -> list[dict[str, Any]]:
        return [
            span
            for span in otel_support.read_spans(self.directory)
            if span["attributes"].get("beluga.workflow.id") == workflow_id
        ]

    def run_traced(self) -> tuple[workflow.WorkflowHandle, Any]:
        """`obs_traced` from start to result, its signal sent once it waits."""
        handle = self.engine.start(traced)
        self.engine.wait_for(handle.id, "signal:go")
        self.engine.executor.signal(handle.id, workflow.Signal("go", True))
        return handle, handle.result(timeout=60)


def observed_worker(request: pytest.FixtureRequest, hooks: str = "") -> Observed:
    if request.param == "temporal":
        request.getfixturevalue("use_temporal")
    directory = request.getfixturevalue("tmp_path") / "otel"
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings_otel",
        otel_support.OTEL_DIR_ENV: str(directory),
        otel_support.HOOKS_ENV: hooks,
    }
    worker = request.getfixturevalue("worker_factory")(env=env)
    return Observed(Engine(request.param, workflow.new(request.param), worker), directory)


@pytest.fixture(params=EXECUTORS)
def observed(request: pytest.FixtureRequest) -> Observed:
    """Like `engine`: each executor with a ready `runworker`, here exporting to files."""
    return observed_worker(request)


@pytest.fixture(params=EXECUTORS)
def hooked(request: pytest.FixtureRequest) -> Observed:
    """`observed`, with HOOKS = [Outer, Inner] in the worker."""
    return observed_worker(request, HOOKS)


@pytest.fixture
def client_otel() -> Iterator[Any]:
    with otel_support.in_memory() as exporters:
        yield exporters


def finished(exporter: Any) -> list[dict[str, Any]]:
    return [span_dict(span) for span in exporter.get_finished_spans()]


# Against a worker --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_runs_steps_and_attempts_are_children_of_the_span_that_started_it(
    observed: Observed, client_otel: Any
) -> None:
    client_spans, _ = client_otel
    tracer = trace.get_tracer("tests")
    engine = observed.engine
    with tracer.start_as_current_span("request") as request:
        handle = engine.start(traced)
    engine.wait_for(handle.id, "signal:go")
    with tracer.start_as_current_span("approve"):  # another trace: the step links to it
        engine.executor.signal(handle.id, workflow.Signal("go", True))
    result = handle.result(timeout=60)

    ours = finished(client_spans)
    (start,) = [s for s in ours if s["name"] == "beluga.workflow.start"]
    (sent,) = [s for s in ours if s["name"] == "beluga.workflow.signal"]
    trace_id = start["trace_id"]
    assert trace_id == f"{request.get_span_context().trace_id:032x}"
    assert start["parent_id"] == f"{request.get_span_context().span_id:016x}"
    assert start["attributes"] == {
        "beluga.workflow.name": "obs_traced",
        "beluga.workflow.id": handle.id,
        "beluga.workflow.run_id": handle.run_id,
        "beluga.executor": observed.kind,
    }
    assert sent["attributes"]["beluga.signal.name"] == "go"
    assert sent["trace_id"] != trace_id

    def closed() -> list[dict[str, Any]]:
        spans = observed.spans(handle.id)
        done = [s for s in spans if s["attributes"].get("beluga.workflow.status") == "completed"]
        return spans if done else []

    theirs = wait_until(closed, 30, message="the closing step's span")
    steps = [s for s in theirs if s["name"] == "beluga.workflow.step"]
    attempts = [s for s in theirs if s["name"] == "beluga.activity"]
    assert len(steps) >= 3 and len(attempts) == 3
    for span in steps + attempts:  # one trace, from the caller's request to the last attempt
        assert (span["trace_id"], span["parent_id"]) == (trace_id, start["span_id"]), span
        assert span["attributes"]["beluga.workflow.run_id"] == handle.run_id
        assert span["attributes"]["beluga.executor"] == observed.kind
        assert span["pid"] == observed.engine.worker.pid
    assert steps[0]["attributes"]["beluga.workflow.name"] == "obs_traced"
    assert steps[-1]["attributes"]["beluga.workflow.status"] == "completed"

    by_attempt = {
        (s["attributes"]["beluga.activity.name"], s["attributes"]["beluga.activity.attempt"]): s
        for s in attempts
    }
    failed = by_attempt["fails_once", 1]
    assert failed["status"] == "ERROR"
    assert failed["description"] == "ConnectionError: the first attempt fails"
    assert failed["attributes"]["beluga.activity.outcome"] == "failed"
    (exception,) = [e for e in failed["events"] if e["name"] == "exception"]
    assert exception["attributes"]["exception.type"] == "ConnectionError"
    assert by_attempt["fails_once", 2]["status"] == "UNSET"
    assert by_attempt["fails_once", 2]["attributes"]["beluga.activity.outcome"] == "completed"
    assert by_attempt["inside", 1]["attributes"]["beluga.activity.id"].startswith(handle.run_id)
    # The attempt's span is current in the activity's thread: its own spans join the trace.
    assert result["inside"]["trace_id"] == trace_id

    # The signal's span -> the step that took it (a link: the signal is another trace).
    linked = [s for s in steps if [sent["trace_id"], sent["span_id"]] in s["links"]]
    assert len(linked) == 1 and linked[0] is steps[-1]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_metrics_count_runs_attempts_and_steps(observed: Observed) -> None:
    handle, _ = observed.run_traced()
    failing = observed.engine.start(fails)
    with pytest.raises(workflow.WorkflowFailedError):
        failing.result(timeout=60)

    name, status = "beluga.workflow.name", "beluga.workflow.status"
    activity, outcome = "beluga.activity.name", "beluga.activity.outcome"

    def exported() -> dict[str, Any]:
        found = otel_support.read_metrics(observed.directory)
        closed = total(found, "beluga.workflow.runs.closed", **{name: "obs_fails"})
        return found if closed else {}

    found = wait_until(exported, 30, message="the failed run in the worker's metrics")
    assert total(found, "beluga.workflow.runs.started", **{name: "obs_traced"}) == 1
    assert total(found, "beluga.workflow.runs.started", **{name: "obs_fails"}) == 1
    assert total(found, "beluga.workflow.runs.closed", **{name: "obs_traced", status: "completed"})
    assert total(found, "beluga.workflow.runs.closed", **{name: "obs_fails", status: "failed"}) == 1
    assert total(found, "beluga.workflow.runs.closed") == 2
    assert total(found, "beluga.activity.attempts", **{activity: "fails_once", outcome: "failed"})
    assert total(found, "beluga.activity.attempts", **{activity: "fails_once"}) == 2
    assert total(found, "beluga.activity.attempts", **{activity: "inside", outcome: "completed"})
    assert total(found, "beluga.activity.attempts", **{activity: "always_fails"}) == 1
    assert total(found, "beluga.activity.duration", **{activity: "fails_once"}) == 2
    assert total(found, "beluga.workflow.step.duration", **{name: "obs_traced"}) >= 3
    for point in found["beluga.workflow.runs.started"]:
        assert point["attributes"]["beluga.executor"] == observed.kind


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_hooks_wrap_steps_and_attempts_in_order(hooked: Observed, counter_dir: Path) -> None:
    handle, result = hooked.run_traced()
    assert result["inside"]["tenant"] == "acme"  # set by a hook, read by the activity

    def records() -> list[str]:
        lines = (counter_dir / "hooks").read_text().splitlines()
        return [line.split(" ", 1)[1] for line in lines]

    wait_until(lambda: any(r.startswith("closed") for r in records()), 30, message="the close")
    seen = records()
    kind, wid = hooked.kind, handle.id

    def order(*expected: str) -> None:
        positions = [seen.index(line) for line in expected]
        assert positions == sorted(positions), (expected, seen)

    inside = f"{wid} inside 1 {kind}"
    order(
        f"outer activity> {inside}",
        f"inner activity> {inside}",
        f"inner activity< {inside} returned",
        f"outer activity< {inside} returned",
    )
    first = f"{wid} fails_once 1 {kind}"
    order(
        f"outer activity> {first}",
        f"inner activity< {first} raised the first attempt fails",
        f"outer activity< {first} raised the first attempt fails",
        f"outer activity> {wid} fails_once 2 {kind}",
    )
    steps = [line for line in seen if " step" in line]
    assert steps[:2] == [f"outer step> {wid} {kind}", f"inner step> {wid} {kind}"]
    assert steps[-2:] == [f"inner step< {wid} completed []", f"outer step< {wid} completed []"]
    assert f"outer step< {wid} running [signal:go]" in steps
    assert len(steps) % 4 == 0  # every step inside both hooks
    closed = [line for line in seen if line.startswith("closed")]
    assert closed == [f"closed {wid} obs_traced completed {json.dumps(result, sort_keys=True)}"]

    # A step hook runs outside the determinism guard (on Temporal, with the sandbox lifted);
    # the step itself never does: its open() fails the run even though the workflow catches it.
    with pytest.raises(workflow.WorkflowFailedError) as refused:
        hooked.engine.start(sandboxed).result(timeout=60)
    assert isinstance(refused.value.cause, workflow.DeterminismViolationError)
    assert "open(" in str(refused.value.cause)

    # A pass held for a fix leaves the run running: the hooks see no failure and no close.
    stuck = hooked.engine.start(held)
    executor = hooked.engine.executor
    wait_until(lambda: executor.describe(stuck.id).held is not None, 30, message="held")
    wait_until(lambda: f"outer step< {stuck.id} running []" in records(), 10, message="hook")
    assert not [line for line in records() if line.startswith(f"closed {stuck.id}")]
    executor.cancel(stuck.id)


# In this process ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_and_a_signal_carry_the_callers_trace_context(client_otel: Any) -> None:
    client_spans, _ = client_otel
    executor = workflow.new("default")
    handle = executor.execute(waits_forever)  # no worker: only what the caller wrote
    executor.signal(handle.id, workflow.Signal("finish", 1))
    ours = finished(client_spans)
    (start,) = [s for s in ours if s["name"] == "beluga.workflow.start"]
    (sent,) = [s for s in ours if s["name"] == "beluga.workflow.signal"]
    started, received = executor.history(handle.id)
    assert started.type is EventType.WORKFLOW_STARTED
    assert received.type is EventType.SIGNAL_RECEIVED
    for event, span in ((started, start), (received, sent)):  # W3C: version-trace-span-flags
        version, trace_id, span_id, _ = event.data["trace"]["traceparent"].split("-")
        assert (version, trace_id, span_id) == ("00", span["trace_id"], span["span_id"])
    assert received.data["payload"] == 1


def test_trace_contexts_in_a_history_change_nothing_on_replay() -> None:
    from tests.test_golden import HISTORIES, load, replay

    carried = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    for path in HISTORIES:
        record, events, info = load(path)
        expected = replay(record, events, info)
        with_traces = [
            dataclasses.replace(event, data={**event.data, "trace": carried})
            if event.type in (EventType.WORKFLOW_STARTED, EventType.SIGNAL_RECEIVED)
            else event
            for event in events
        ]
        got = replay(record, with_traces, info)
        assert (got.done, got.result, repr(got.error), got.commands) == (
            expected.done,
            expected.result,
            repr(expected.error),
            expected.commands,
        ), path.name


def test_nothing_observes_without_a_provider_or_hooks() -> None:
    assert not observability.enabled()
    info = ActivityInfo("wf", "run", "charge", "run:1", 1, "default")
    assert observability.attempt(info) is None
    assert observability.carrier() is None
    with observability.client_span("beluga.workflow.start", {}) as span:
        assert span is None


WITHOUT_OPENTELEMETRY = """
import sys
sys.modules["opentelemetry"] = None  # as if the `otel` extra were not installed
import django
django.setup()
from beluga_workflows import observability, workflow
print(observability.enabled(), observability.carrier(), observability.tracing())
"""


def test_without_the_otel_extra_nothing_is_traced() -> None:
    done = harness.run_python(WITHOUT_OPENTELEMETRY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "None", "False"]


class Recorder(Hook):
    """Appends to `log` around each step and attempt (`log` is set per test)."""

    log: list[str] = []

    def __init__(self, label: str = "recorder") -> None:
        self.label = label

    def step(self, info: StepInfo, call_next: Callable[[], StepResult]) -> StepResult:
        self.log.append(f"{self.label}>")
        result = call_next()
        self.log.append(f"{self.label}< {result.status}")
        return result

    def activity(self, info: ActivityInfo, call_next: Callable[[], Any]) -> Any:
        self.log.append(f"{self.label}>")
        return f"{self.label}({call_next()})"


class Careless(Hook):
    """Breaks every rule a step hook can: fails before, skips the step, fails after."""

    def __init__(self, how: str) -> None:
        self.how = how

    def step(self, info: StepInfo, call_next: Callable[[], StepResult]) -> StepResult:
        if self.how == "before":
            raise RuntimeError("before")
        if self.how == "skip":
            return StepResult(Status.FAILED, "")
        call_next()
        raise RuntimeError("after")


class Refusing(Hook):
    def activity(self, info: ActivityInfo, call_next: Callable[[], Any]) -> Any:
        raise PermissionError(f"{info.activity_name} is not allowed")


def test_step_hooks_observe_a_step_they_cannot_change(
    settings: Any, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    Recorder.log = []
    hooks = [Recorder("a"), Careless("before"), Careless("skip"), Careless("after"), Recorder("b")]
    logger = logging.getLogger("beluga_workflows")  # it does not propagate to caplog's root
    logger.addHandler(caplog.handler)
    request.addfinalizer(lambda: logger.removeHandler(caplog.handler))
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "HOOKS": hooks}
    assert observability.enabled()
    taken: list[str] = []

    def step() -> str:
        taken.append("step")
        Recorder.log.append("step")
        return "decision"

    info = StepInfo("wf", "run", "flow", "default")
    outcome = StepResult(Status.RUNNING, "signal:go")
    assert observability.step(info, step, lambda _: outcome) == "decision"
    assert taken == ["step"]  # once, whatever the hooks did
    assert Recorder.log == ["a>", "b>", "step", "b< running", "a< running"]
    assert [r.getMessage() for r in caplog.records if "Hook" in r.getMessage()] == [
        f"Hook {hooks[1].step!r} failed around a step of wf",
        f"Hook {hooks[3].step!r} failed around a step of wf",
    ]


def test_activity_hooks_are_middleware(settings: Any) -> None:
    Recorder.log = []
    info = ActivityInfo("wf", "run", "charge", "run:1", 2, "default")
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "HOOKS": [Recorder("a"), Recorder("b")],
    }
    attempt = observability.attempt(info)
    assert attempt is not None and attempt.call(lambda: "paid") == "a(b(paid))"
    assert Recorder.log == ["a>", "b>"]
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "HOOKS": [Refusing]}
    attempt = observability.attempt(info)
    assert attempt is not None
    with pytest.raises(PermissionError, match="charge is not allowed"):
        attempt.call(lambda: "paid")


def test_check_names_the_hook_it_cannot_load(settings: Any) -> None:
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "HOOKS": [
            "tests.observability_hooks.Outer",
            "tests.nowhere.Hook",
            "tests.observability_hooks.NotAHook",
        ],
    }
    errors = [e for e in run_checks() if e.id == "beluga_workflows.E011"]
    assert [e.msg.split(" ", 2)[1] for e in errors] == [
        "('tests.nowhere.Hook')",
        "('tests.observability_hooks.NotAHook')",
    ]
    assert "could not be loaded: ModuleNotFoundError" in errors[0].msg
    assert "has none of the hook methods step, activity, on_run_closed" in errors[1].msg
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "HOOKS": "tests.hooks.Outer"}
    (error,) = [e for e in run_checks() if e.id == "beluga_workflows.E011"]
    assert error.msg == "BELUGA_WORKFLOWS['HOOKS'] must be a list, not 'tests.hooks.Outer'."
