"""`beluga_workflows.testing`: the in-process WorkflowEnvironment and `testing.replay`.

The unit tests of docs/testing.md are this module's own tests: the page's `testing:unit` block
is executed here, at import, so pytest collects its fixture and tests as they are printed. Its
`testing:replay` block runs against histories exported for real — with the CLI's
`workflow history --json` and from the REST API — from runs of the built-in engine on a
`runworker` subprocess.

The environment tests need no database: none is marked `django_db`, so pytest-django would
fail any of them that touched one.
"""

from __future__ import annotations

import ast
import json
import re
import time
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from beluga_workflows import testing, workflow
from beluga_workflows.history import EventType, HistoryEvent
from project.demo import workflows as demo
from tests import harness
from tests.api_fixtures import api_fixture, users_fixture  # noqa: F401
from tests.golden import workflows as golden

E = EventType
DOC = harness.REPO_ROOT / "docs" / "testing.md"
GOLDEN = sorted((Path(__file__).parent / "golden" / "histories").glob("*.json"))
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def doc_blocks() -> dict[str, str]:
    """The page's python blocks by marker (`<!-- testing:unit -->` on the line before)."""
    text = DOC.read_text()
    found = re.findall(r"(?:<!-- (testing:\w+) -->\n)?```python\n(.*?)```", text, re.S)
    return {marker: code for marker, code in found}


# The docs' unit tests, collected by pytest as tests of this module (see the docstring).
exec(compile(doc_blocks()["testing:unit"], f"{DOC}#testing:unit", "exec"), globals())


def test_every_python_block_of_the_page_is_run_here() -> None:
    blocks = doc_blocks()
    assert set(blocks) == {"testing:unit", "testing:replay"}, "an unmarked block is not run"
    defined = [
        node.name
        for node in ast.parse(blocks["testing:unit"]).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]
    assert len(defined) >= 4
    assert all(globals()[name].__code__.co_filename.endswith("#testing:unit") for name in defined)


# Workflows and activities of these tests (module level: children are found by reference).


def double(ctx: workflow.ActivityContext, n: int) -> int:
    return n * 2


def shout(ctx: workflow.ActivityContext, text: str) -> str:
    return text.upper()


async def fetch(ctx: workflow.ActivityContext, url: str) -> str:
    import asyncio

    await asyncio.sleep(0)
    return f"fetched {url}"


def flaky(ctx: workflow.ActivityContext, failures: int) -> int:
    if ctx.attempt <= failures:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return ctx.attempt


def resumable(ctx: workflow.ActivityContext, total: int) -> dict[str, Any]:
    """Heartbeats its progress; the first attempt dies at 3, the next resumes from there."""
    done = ctx.heartbeat_details or 0
    for item in range(done, total):
        if ctx.attempt == 1 and item == 3:
            raise ConnectionError("lost the connection at item 3")
        ctx.heartbeat(item + 1)
    return {"attempt": ctx.attempt, "resumed_from": ctx.heartbeat_details}


def forbidden(ctx: workflow.ActivityContext, _: Any) -> None:
    raise PermissionError("no")


def fan_out(ctx: workflow.WorkflowContext, numbers: list[int]) -> list[int]:
    return ctx.gather(*[ctx.start_activity(double, n) for n in numbers])


def clock(ctx: workflow.WorkflowContext, _: Any) -> list[str]:
    seen = [ctx.now().isoformat()]
    for hours in (1, 2):
        ctx.sleep(timedelta(hours=hours))
        seen.append(ctx.now().isoformat())
    return seen


def race(ctx: workflow.WorkflowContext, _: Any) -> str:
    approval = ctx.signal_future("approval")
    first = ctx.wait_any(approval, timeout=timedelta(hours=1))
    return "approved" if first is approval else "too late"


def child(ctx: workflow.WorkflowContext, text: str) -> str:
    return ctx.execute_activity(shout, text)


def waits(ctx: workflow.WorkflowContext, _: Any) -> str:
    try:
        return ctx.wait_for_signal("go").payload
    except workflow.WorkflowCanceledError:
        ctx.execute_activity(shout, "cleaning up")
        raise


def parent(ctx: workflow.WorkflowContext, texts: list[str]) -> list[str]:
    kids = [
        ctx.start_child_workflow(child, workflow.WorkflowOptions(id=f"{ctx.workflow_id}-{i}",
                                                                 input=text))
        for i, text in enumerate(texts)
    ]  # fmt: skip
    return ctx.gather(*kids)


def waiting_parent(ctx: workflow.WorkflowContext, _: Any) -> Any:
    kid = ctx.start_child_workflow(waits, workflow.WorkflowOptions(id=f"{ctx.workflow_id}-kid"))
    return kid.result()


def counter(ctx: workflow.WorkflowContext, count: int) -> int:
    ctx.set_query_handler("count", lambda: count)
    ctx.sleep(timedelta(minutes=1))
    ctx.wait_for_signal("tick")
    if count < 3:
        ctx.continue_as_new(count + 1)
    return count


def retrying(ctx: workflow.WorkflowContext, failures: int) -> int:
    return ctx.execute_activity(flaky, failures, workflow.with_activity_retry(
        workflow.RetryPolicy(max_attempts=4, initial_interval=timedelta(minutes=1),
                            max_interval=timedelta(hours=1))))  # fmt: skip


def resuming(ctx: workflow.WorkflowContext, total: int) -> Any:
    return ctx.execute_activity(resumable, total)


BUGGY = {"divisor": 0}


@workflow.defn(name="harness_held", on_error="hold")
def held_until_fixed(ctx: workflow.WorkflowContext, n: int) -> float:
    doubled = ctx.execute_activity(double, n)
    return doubled / BUGGY["divisor"]


def refusing(ctx: workflow.WorkflowContext, _: Any) -> None:
    ctx.execute_activity(forbidden, None, workflow.with_activity_retry(
        workflow.RetryPolicy(max_attempts=5, non_retryable_errors=(PermissionError,))))  # fmt: skip


def quick(ctx: workflow.WorkflowContext, seconds: float) -> Any:
    once = workflow.with_activity_retry(workflow.RetryPolicy(max_attempts=1))
    try:
        return ctx.execute_activity(slow, seconds, workflow.with_activity_timeout(0.05), once)
    except workflow.ActivityError as exc:
        return {"cause_type": exc.cause_type, "attempts": exc.attempts}


def slow(ctx: workflow.ActivityContext, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def progress(ctx: workflow.WorkflowContext, steps: int) -> int:
    done = 0
    ctx.set_query_handler("done", lambda: done)
    for _ in range(steps):
        ctx.wait_for_signal("step")
        done += 1
    return done


def versioned(ctx: workflow.WorkflowContext, n: int) -> int:
    if ctx.patched("double-first"):
        n = ctx.execute_activity(double, n)
    return n


async def async_flow(ctx: Any, url: str) -> str:
    page = await ctx.execute_activity(fetch, url)
    await ctx.sleep(timedelta(minutes=5))
    return page


def dawdles(ctx: workflow.WorkflowContext, seconds: float) -> float:
    time.sleep(seconds)  # stands for a loop that never reaches a step
    return seconds


LOOKUPS: list[int] = []


def reads_a_global(ctx: workflow.WorkflowContext, _: Any) -> Any:
    """Decides on a global that changes between runs: a replay takes another path."""
    LOOKUPS.append(1)
    if len(LOOKUPS) % 2:
        ctx.execute_activity(double, 1)
    return "done"


# The environment ---------------------------------------------------------------------------


def test_parallel_activities_are_recorded_in_one_decision_and_gathered_in_order(env):
    calls: list[int] = []

    def counted(ctx, n):
        calls.append(n)
        return n * 10

    with testing.WorkflowEnvironment(activities={double: counted}) as fake:
        handle = fake.execute(fan_out, workflow.WorkflowOptions(input=[3, 1, 2]))
        assert handle.status() is workflow.Status.COMPLETED  # all ran inside execute()
        assert handle.result() == [30, 10, 20]
        types = [e.type for e in fake.history(handle.id)]
    assert calls == [3, 1, 2]
    assert types[:4] == [E.WORKFLOW_STARTED] + [E.ACTIVITY_SCHEDULED] * 3
    assert types[4:] == [E.ACTIVITY_COMPLETED] * 3 + [E.WORKFLOW_COMPLETED]
    assert env.execute(fan_out, workflow.WorkflowOptions(input=[4])).result() == [8]


def test_sleep_fires_each_timer_at_its_own_time_and_ctx_now_follows(env):
    handle = env.execute(clock, workflow.WorkflowOptions(id="clock"))
    start = env.now()
    env.sleep(timedelta(minutes=90))
    assert env.now() == start + timedelta(minutes=90)
    assert handle.status() is workflow.Status.RUNNING
    assert env.describe("clock").waiting_deadline == start + timedelta(hours=3)
    fired = [e.timestamp for e in env.history("clock") if e.type is E.TIMER_FIRED]
    assert fired == [start + timedelta(hours=1)]

    assert handle.result() == [
        start.isoformat(),
        (start + timedelta(hours=1)).isoformat(),
        (start + timedelta(hours=3)).isoformat(),
    ]
    assert env.now() == start + timedelta(hours=3)  # result() moved the clock only as needed


def test_start_time_fixes_the_clock():
    with testing.WorkflowEnvironment(start_time=T0) as env:
        assert env.execute(clock, workflow.WorkflowOptions()).result()[0] == T0.isoformat()
    with pytest.raises(ValueError, match="timezone-aware"):
        testing.WorkflowEnvironment(start_time=datetime(2030, 1, 1))


def test_result_timeout_counts_the_environments_seconds(env):
    handle = env.execute(clock, workflow.WorkflowOptions())
    start = env.now()
    with pytest.raises(workflow.ResultTimeoutError):
        handle.result(timeout=1800)
    assert env.now() == start + timedelta(seconds=1800)
    assert handle.result(timeout=3 * 3600)[2] == (start + timedelta(hours=3)).isoformat()


def test_a_run_only_a_signal_can_move_raises_blocked_instead_of_hanging(env):
    handle = env.execute(waits, workflow.WorkflowOptions(id="blocked"))
    with pytest.raises(testing.WorkflowBlockedError, match="signal:go") as blocked:
        handle.result()
    assert isinstance(blocked.value, workflow.ResultTimeoutError)
    env.signal("blocked", workflow.Signal("go", "now"))
    assert handle.result() == "now"


def test_wait_any_settles_a_race_on_the_virtual_clock(env):
    late = env.execute(race, workflow.WorkflowOptions(id="late"))
    on_time = env.execute(race, workflow.WorkflowOptions(id="on-time"))
    env.sleep(timedelta(minutes=30))
    env.signal("on-time", workflow.Signal("approval", True))
    assert on_time.result() == "approved"
    assert late.result() == "too late"
    assert E.TIMER_CANCELED in [e.type for e in env.history("on-time")]


def test_child_workflows_run_and_report_to_their_parent(env):
    handle = env.execute(parent, workflow.WorkflowOptions(id="family", input=["a", "b"]))
    assert handle.result() == ["A", "B"]
    state = env.describe("family")
    assert [(c["id"], c["status"]) for c in state.children] == [
        ("family-0", "completed"),
        ("family-1", "completed"),
    ]
    assert env.describe("family-1").parent_id == "family"
    types = [e.type for e in env.history("family")]
    assert types.count(E.CHILD_WORKFLOW_STARTED) == types.count(E.CHILD_WORKFLOW_COMPLETED) == 2


def test_a_child_workflow_can_be_replaced_and_its_failure_reaches_the_parent():
    def failing_child(ctx, text):
        raise ValueError(f"cannot shout {text}")

    with testing.WorkflowEnvironment(workflows={child: failing_child}) as env:
        handle = env.execute(parent, workflow.WorkflowOptions(id="sad", input=["a"]))
        with pytest.raises(workflow.WorkflowFailedError) as failed:
            handle.result()
    cause = failed.value.cause  # the parent failed on the child's failure, which has its own
    assert isinstance(cause, workflow.WorkflowFailedError) and cause.workflow_id == "sad-0"
    assert (cause.cause.type_name, cause.cause.message) == ("ValueError", "cannot shout a")
    assert env.describe("sad-0").status is workflow.Status.FAILED


def test_cancel_reaches_the_wait_runs_cleanup_and_cancels_children(env):
    handle = env.execute(waiting_parent, workflow.WorkflowOptions(id="boss"))
    assert env.describe("boss-kid").waiting_for == "signal:go"

    env.cancel("boss", sender="ops")

    with pytest.raises(workflow.WorkflowCanceledError):
        handle.result()
    assert handle.status() is workflow.Status.CANCELED
    kid = [e.type for e in env.history("boss-kid")]
    assert kid[-4:] == [E.CANCEL_REQUESTED, E.ACTIVITY_SCHEDULED, E.ACTIVITY_COMPLETED,
                        E.WORKFLOW_CANCELED]  # fmt: skip
    with pytest.raises(workflow.WorkflowClosedError):
        env.cancel("boss")
    with pytest.raises(workflow.WorkflowClosedError):
        env.signal("boss-kid", workflow.Signal("go"))


def test_continue_as_new_chains_runs_and_carries_signals(env):
    handle = env.execute(counter, workflow.WorkflowOptions(id="ticker", input=1))
    first_run = handle.run_id
    for n in range(3):  # all to the first run, which takes one and hands the others on
        env.signal("ticker", workflow.Signal("tick", n))
    env.sleep(timedelta(minutes=1))
    assert handle.status() is workflow.Status.CONTINUED_AS_NEW
    assert handle.result() == 3
    latest = env.get_handle("ticker")
    assert latest.run_id != first_run and latest.status() is workflow.Status.COMPLETED
    assert env.query("ticker", "count") == 3
    history = env.history("ticker")
    second = env.describe("ticker").continued_from
    assert second == history[0].data["continued_from"] and second != first_run
    assert [(e.type, e.data.get("payload")) for e in history][:3] == [
        (E.WORKFLOW_STARTED, None), (E.SIGNAL_RECEIVED, 2), (E.TIMER_STARTED, None)]  # fmt: skip


def test_retries_wait_for_their_backoff_on_the_clock(env):
    handle = env.execute(retrying, workflow.WorkflowOptions(id="retry", input=2))
    start = env.now()
    assert handle.status() is workflow.Status.RUNNING  # the retry is due in about a minute
    assert env.describe("retry").waiting_for == "activity:flaky"
    assert handle.result() == 3
    failed = [e for e in env.history("retry") if e.type is E.ACTIVITY_ATTEMPT_FAILED]
    assert [e.attempt for e in failed] == [1, 2]
    assert 48 <= failed[0].data["retry_in"] <= 72  # 1 minute ± 20%
    waited = sum(e.data["retry_in"] for e in failed)
    assert env.now() - start == timedelta(seconds=waited)


def test_a_retry_reads_the_last_heartbeat_of_the_attempt_before(env):
    assert env.execute(resuming, workflow.WorkflowOptions(input=6)).result() == {
        "attempt": 2,
        "resumed_from": 3,
    }


def test_a_bug_holds_the_run_until_the_fixed_code_is_retried(env, monkeypatch):
    handle = env.execute(held_until_fixed, workflow.WorkflowOptions(id="held", input=4))
    state = env.describe("held")
    assert state.status is workflow.Status.RUNNING
    assert state.held["error"]["type"] == "ZeroDivisionError"
    assert "return doubled / BUGGY" in state.held["traceback"]
    with pytest.raises(testing.WorkflowBlockedError):
        handle.result()
    env.retry("held")  # the same bug: still held, one more failed pass
    assert env.describe("held").held["attempts"] == 2

    monkeypatch.setitem(BUGGY, "divisor", 2)  # "deploy the fix"
    env.retry("held")
    assert handle.result() == 4
    assert env.describe("held").held is None
    types = [e.type for e in env.history("held")]
    assert types.count(E.ACTIVITY_SCHEDULED) == 1  # the held passes recorded nothing
    with pytest.raises(workflow.WorkflowClosedError):
        env.retry("held")
    env.execute(waits, workflow.WorkflowOptions(id="not-held"))
    with pytest.raises(workflow.WorkflowNotHeldError):
        env.retry("not-held")


def test_exhausted_and_non_retryable_errors_fail_the_run_as_executors_do(env):
    with pytest.raises(workflow.WorkflowFailedError) as exhausted:
        env.execute(retrying, workflow.WorkflowOptions(input=9)).result()
    cause = exhausted.value.cause
    assert isinstance(cause, workflow.ActivityError)
    assert (cause.activity, cause.attempts, cause.cause_type) == ("flaky", 4, "ConnectionError")

    with pytest.raises(workflow.WorkflowFailedError) as refused:
        env.execute(refusing, workflow.WorkflowOptions()).result()
    assert (refused.value.cause.attempts, refused.value.cause.cause_type) == (1, "PermissionError")


def test_an_attempt_longer_than_its_timeout_fails_with_activity_timeout(env):
    handle = env.execute(quick, workflow.WorkflowOptions(input=0.2))
    assert handle.result() == {"cause_type": "ActivityTimeoutError", "attempts": 1}


def test_the_workflow_timeout_closes_the_run(env):
    handle = env.execute(waits, workflow.WorkflowOptions(timeout=timedelta(days=2)))
    env.sleep(timedelta(days=2))
    assert handle.status() is workflow.Status.TIMED_OUT
    with pytest.raises(workflow.WorkflowTimeoutError) as timed_out:
        handle.result()
    assert timed_out.value.timeout_seconds == 2 * 86400
    assert env.history(handle.id)[-1].type is E.WORKFLOW_TIMED_OUT


def test_queries_answer_from_the_run_as_it_stands(env):
    handle = env.execute(progress, workflow.WorkflowOptions(id="progress", input=2))
    assert env.query("progress", "done") == 0
    env.signal("progress", workflow.Signal("step"))
    assert env.query("progress", "done") == 1
    assert env.query("progress", "status") == "running"
    env.signal("progress", workflow.Signal("step"))
    assert handle.result() == 2
    assert env.query("progress", "result") == 2
    assert env.query("progress", "history")[-1]["type"] == "WorkflowCompleted"
    with pytest.raises(workflow.QueryError):
        env.query("progress", "nope")


def test_patched_async_and_errors_at_the_call(env):
    assert env.execute(versioned, workflow.WorkflowOptions(id="v", input=2)).result() == 4
    assert [e.name for e in env.history("v") if e.type is E.MARKER_RECORDED] == ["double-first"]

    handle = env.execute(async_flow, workflow.WorkflowOptions(input="https://example.com"))
    assert handle.result() == "fetched https://example.com"

    env.execute(waits, workflow.WorkflowOptions(id="twice"))
    with pytest.raises(workflow.WorkflowAlreadyStartedError):
        env.execute(waits, workflow.WorkflowOptions(id="twice"))
    with pytest.raises(workflow.WorkflowNotFoundError):
        env.describe("nobody")
    with pytest.raises(workflow.InvalidPayloadError):
        env.execute(waits, workflow.WorkflowOptions(input={1, 2}))
    with pytest.raises(workflow.WorkflowNameError):
        env.start("no-such-workflow")
    assert env.start("research", workflow.WorkflowOptions(input="x")).status() == "running"


def test_an_activity_may_signal_through_the_environment_but_not_move_its_clock():
    def approving_research(ctx, topic):  # the reviewer answers while the research runs
        env.signal(ctx.workflow_id, workflow.Signal("approval", True, sender="bot"))
        return "findings"

    def sleeping_report(ctx, findings):
        env.sleep(timedelta(hours=1))

    fakes = {demo.research_activity: approving_research, demo.report_activity: sleeping_report}
    with testing.WorkflowEnvironment(activities=fakes) as env:
        handle = env.execute(demo.research_workflow, workflow.WorkflowOptions(input="x"))
        with pytest.raises(workflow.WorkflowFailedError) as failed:
            handle.result()
    assert failed.value.cause.cause_message.startswith("env.sleep() cannot be called")
    received = [e for e in env.history(handle.id) if e.type is E.SIGNAL_RECEIVED]
    assert [e.data["sender"] for e in received] == ["bot"]


def test_workflow_code_that_never_reaches_a_step_is_stopped(env, settings):
    from beluga_workflows.continuation import WorkflowTaskTimeout

    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "WORKFLOW_TASK_TIMEOUT": 0.1}
    with pytest.raises(WorkflowTaskTimeout):
        env.execute(dawdles, workflow.WorkflowOptions(input=0.5))


def test_a_run_that_decides_differently_on_replay_fails_with_non_determinism(env):
    handle = env.execute(reads_a_global, workflow.WorkflowOptions())
    with pytest.raises(workflow.WorkflowFailedError) as failed:
        handle.result()
    assert isinstance(failed.value.cause, workflow.NonDeterminismError)

    with testing.WorkflowEnvironment(check_replay=False) as unchecked:
        assert unchecked.execute(reads_a_global, workflow.WorkflowOptions()).result() == "done"


GOLDEN_SCENARIOS = ["approval", "cancel", "chain", "failure", "fan-out", "loop", "parent",
                    "patched", "rejection", "retry", "signal-timeout"]  # fmt: skip


def shape(events: list[HistoryEvent]) -> list[tuple[Any, ...]]:
    return [(e.type.value, e.step, e.name, e.attempt, sorted(e.data)) for e in events]


@pytest.mark.parametrize("scenario", GOLDEN_SCENARIOS)
def test_the_environment_writes_the_histories_the_built_in_engine_wrote(scenario: str):
    """The golden histories were recorded from real runs (tests/golden/record.py); the same
    scenarios in the environment give the same events, step for step, with the same fields."""
    recorded, inputs = {}, {}
    for path in GOLDEN:
        record = json.loads(path.read_text())
        suffix = record["workflow_id"].split("-", 2)[2]
        if suffix == scenario or suffix.startswith(f"{scenario}-"):
            inputs.setdefault(suffix, record["input"])  # a chain's first run
            recorded[suffix] = record  # and its last
    fn = {"approval": golden.approval, "rejection": golden.approval, "loop": golden.loop,
          "fan-out": golden.fan_out, "signal-timeout": golden.signal_timeout}.get(
        scenario, getattr(golden, scenario, None))  # fmt: skip
    with testing.WorkflowEnvironment() as env:
        handle = env.execute(fn, workflow.WorkflowOptions(id=scenario, input=inputs[scenario]))
        if scenario == "loop":  # one tick for each run of the chain before the last
            env.signal(scenario, workflow.Signal("tick"))
            env.signal(scenario, workflow.Signal("tick"))
        for event in recorded[scenario]["events"]:
            if event["type"] == "SignalReceived":
                env.sleep(timedelta(seconds=1))  # the recording waited for the approval wait
                details = event["details"]
                signal = workflow.Signal(event["name"], details["payload"], details["sender"])
                env.signal(scenario, signal)
            elif event["type"] == "CancelRequested":
                env.cancel(scenario, sender="ops")
        try:
            handle.result()
        except workflow.WorkflowError:
            pass
        for suffix, record in recorded.items():
            mine = shape(env.history(suffix))
            theirs = shape([HistoryEvent.from_json(e) for e in record["events"]])
            assert mine == theirs, suffix


# testing.replay ----------------------------------------------------------------------------


def load_golden(name: str) -> dict[str, Any]:
    return json.loads((Path(__file__).parent / "golden" / "histories" / f"{name}.json").read_text())


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_every_golden_history_replays_clean_to_its_recorded_outcome(path: Path):
    record = json.loads(path.read_text())
    result = testing.replay(record["workflow"], record)  # by public name; ids from the record
    assert result.status == record["status"]
    assert result.next_steps == () and result.waiting_for == ""
    closing = record["events"][-1]
    if closing["type"] == "WorkflowCompleted":
        assert result.result == closing["details"]["result"]
    # The same from the bare event list, as the CLI and the REST API export it.
    assert testing.replay(record["workflow"], record["events"]).status == result.status


def test_replay_reads_every_export_shape(tmp_path: Path):
    record = load_golden("approval-08")
    events = record["events"]
    rest = [{**e, "timestamp": e["timestamp"].replace("+00:00", "Z")} for e in events]
    path = tmp_path / "approval.json"
    path.write_text(json.dumps(events))
    for history in (events, rest, json.dumps(events), path, str(path),
                    [HistoryEvent.from_json(e) for e in events]):  # fmt: skip
        assert testing.replay(golden.approval, history).result["approved"] is True
    with pytest.raises(ValueError, match="WorkflowStarted"):
        testing.replay(golden.approval, events[1:])
    # A page of GET .../events/: whole when it is the only one, refused when `next` follows.
    page = {"id": "approval-08", "next": None, "results": events}
    assert testing.replay(golden.approval, page).result["approved"] is True
    with pytest.raises(ValueError, match="next"):
        testing.replay(golden.approval, {**page, "next": "http://testserver/…?after=4"})
    with pytest.raises(ValueError, match="events"):
        testing.replay(golden.approval, {"items": events})


def approval_v2(ctx: workflow.WorkflowContext, request: str) -> Any:
    """The golden approval with its sleep replaced by an activity: drift at step 0."""
    ctx.execute_activity(golden.shout, request)
    decision = ctx.wait_for_signal("approval", timedelta(minutes=5))
    return {"request": request, "approved": bool(decision.payload)}


def approval_audited(ctx: workflow.WorkflowContext, request: str) -> Any:
    """A new last step, without ctx.patched: finished runs would not have taken it."""
    result = golden.approval(ctx, request)
    ctx.execute_activity(golden.shout, "audit")
    return result


def approval_patched(ctx: workflow.WorkflowContext, request: str) -> Any:
    result = golden.approval(ctx, request)
    if ctx.patched("audit"):
        ctx.execute_activity(golden.shout, "audit")
    return result


def test_a_changed_workflow_raises_non_determinism_naming_the_step():
    record = load_golden("approval-08")
    with pytest.raises(workflow.NonDeterminismError) as drift:
        testing.replay(approval_v2, record)
    assert (drift.value.step, drift.value.expected, drift.value.got) == (
        0, "timer 'sleep'", "activity 'shout'")  # fmt: skip

    with pytest.raises(workflow.NonDeterminismError) as extra:
        testing.replay(approval_audited, record)
    assert (extra.value.step, extra.value.got) == (3, "activity 'shout'")
    assert testing.replay(approval_patched, record).status is workflow.Status.COMPLETED


def test_a_running_history_tells_what_the_code_does_next():
    events = load_golden("approval-08")["events"]
    waiting = testing.replay(golden.approval, events[:4])  # waiting for the approval
    assert (waiting.status, waiting.waiting_for) == ("running", "signal:approval")
    approved = testing.replay(golden.approval, events[:5])  # the signal came, not decided yet
    assert approved.next_steps == ("activity 'shout'",)
    # A new step behind ctx.patched is taken by a run that has not passed that point yet.
    assert testing.replay(approval_patched, events[:7]).next_steps == (
        "patch marker 'audit'", "activity 'shout'")  # fmt: skip


# The real engine: export with the CLI and the REST API, replay, and the docs' replay test.


def research_v2(ctx: workflow.WorkflowContext, topic: str) -> Any:
    """The research workflow with the approval asked before the research: drift at step 0."""
    ctx.wait_for_signal("approval", timedelta(hours=24))
    return ctx.execute_activity(demo.research_activity, topic)


@pytest.mark.django_db(transaction=True)
def test_histories_exported_from_the_built_in_engine_replay(worker, api, tmp_path: Path):
    executor = workflow.new("default")
    for workflow_id, approve in (("research-approved", True), ("research-rejected", False)):
        handle = executor.execute(
            demo.research_workflow, workflow.WorkflowOptions(id=workflow_id, input="Q4")
        )
        harness.wait_until(
            lambda h=handle: executor.describe(h.id).waiting_for == "signal:approval",
            30,
            message="waiting for approval",
        )
        executor.signal(workflow_id, workflow.Signal("approval", approve, sender="alice"))
        handle.result(timeout=30)

    out = StringIO()
    call_command("workflow", "history", "research-approved", "--json", stdout=out)
    from_cli = json.loads(out.getvalue())
    response = api("viewer").get("/api/workflows/research-rejected/events/")
    assert response.status_code == 200 and response.json()["next"] is None
    from_rest = response.json()["results"]
    assert from_rest[0]["timestamp"].endswith("Z")  # DRF's UTC; the CLI writes +00:00

    approved = testing.replay(demo.research_workflow, from_cli)
    assert approved.status is workflow.Status.COMPLETED
    assert approved.result.startswith("Final Report")
    rejected = testing.replay(demo.research_workflow, from_rest)
    assert rejected.result == "Workflow rejected by reviewer."
    for history in (from_cli, from_rest):
        with pytest.raises(workflow.NonDeterminismError):
            testing.replay(research_v2, history)

    # The docs' replay test, on these files as a project would commit them.
    histories = tmp_path / "histories"
    histories.mkdir()
    (histories / "research-approved.json").write_text(json.dumps(from_cli))
    (histories / "research-rejected.json").write_text(response.content.decode())  # curl > file
    namespace: dict[str, Any] = {"__file__": str(tmp_path / "test_replay.py")}
    exec(compile(doc_blocks()["testing:replay"], f"{DOC}#testing:replay", "exec"), namespace)
    test = namespace["test_recorded_research_runs_still_replay"]
    paths = test.pytestmark[0].args[1]
    assert [p.name for p in paths] == ["research-approved.json", "research-rejected.json"]
    for path in paths:
        test(path)
    namespace["research_workflow"] = research_v2  # the same test fails on a drifted workflow
    for path in paths:
        with pytest.raises(workflow.NonDeterminismError):
            test(path)
