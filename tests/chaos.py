"""The chaos test: many runs through kill -9s, a PostgreSQL and a Redis restart and dropped
connections — and still every result right, every history clean, nothing re-run without cause.

    python -m tests.chaos [--runs N] [--kills K] [--seed S] [--data-dir DIR] [--json]

It owns everything it breaks: an embedded PostgreSQL and Redis (`project.embedded`) in a data
directory of its own (default `.data/chaos`; never the demo's `.data` nor the tests'
`.data/test`) and two `manage.py runworker` subprocesses. It starts N runs of the workflows in
`tests/workflows_chaos.py`, spread over a chaos window, and sends their signals as they go;
meanwhile, at seeded random moments, it kill -9s a worker K times (and starts it again),
restarts PostgreSQL once and Redis once, and terminates the workers' database connections once.
Then it checks what a user relies on:

- the workers stay up: one that exits by itself is a violation (it is started again, so the
  other checks still mean something);
- every run completed, with the result its input determines;
- every history is gapless, records no step's command, outcome or timer firing twice, and ends
  with its one closing event; no closed run keeps an open activity task or timer;
- an activity attempt ran again only if the execution before it was disturbed by a fault: it
  ran on the worker that was killed, or ran (or was recording its outcome) between the start
  of another fault and REDISPATCH_AFTER + 2 s after its end.

It prints the figures (`--json`: also as one JSON line at the end) and exits 1 on any
violation, naming the runs; the worker logs stay in `<data dir>/logs`. A fault's recovery time
runs from its start until every activity attempt in flight at it (on the killed worker, for a
kill) has its outcome recorded and an outcome was recorded after the fault ended.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from project import embedded
from tests import harness
from tests import workflows_chaos as wf

POLL_INTERVAL = 0.2
REDISPATCH_AFTER = 2.0
#: How long after a fault an execution it disturbed may have started (see the docstring).
GRACE = REDISPATCH_AFTER + 2.0
#: An outcome is recorded just after the end marker: an execution is in flight that much longer.
RECORDING = 1.0
CONCURRENCY = 4
#: Seconds of chaos window per fault at least, so each is recovered from before the next.
FAULT_SPACING = 6.0
#: This program's database connections, which the connection fault spares.
APPLICATION_NAME = "beluga-chaos"
#: Events a step records at most once (an attempt's failure: once per attempt).
ONCE_PER_STEP = {
    "ActivityScheduled",
    "ActivityCompleted",
    "ActivityFailed",
    "TimerStarted",
    "TimerFired",
    "SignalWaitStarted",
}
OUTCOMES = {"ActivityCompleted", "ActivityAttemptFailed", "ActivityFailed"}
#: Faults that end a worker process, and the attempts running in it.
ENDS_A_WORKER = {"kill", "worker_crash"}


@dataclass
class Run:
    workflow_id: str
    name: str
    spec: dict[str, Any]
    start_at: float  # seconds into the chaos window
    signals: list[tuple[float, int]]  # (seconds after the start, payload), sent in this order
    started_at: float | None = None
    unsure: bool = False  # its last start or signal failed, yet may have been recorded


@dataclass
class Fault:
    kind: str
    start: float
    end: float
    detail: dict[str, Any] = field(default_factory=dict)
    recovery: float | None = None


@dataclass
class Execution:
    pid: int
    key: tuple[str, int]  # (activity_id, attempt)
    start: float
    end: float | None = None  # None: it never ended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", default=str(harness.REPO_ROOT / ".data" / "chaos"))
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    if data_dir in {(harness.REPO_ROOT / d).resolve() for d in (".data", ".data/test")}:
        parser.error(f"{data_dir} holds services others use; the chaos test restarts its own")

    began = time.time()
    workers: list[harness.WorkerProcess] = []
    try:
        database_url, broker_url = embedded.ensure_services(data_dir)
        for name in ("counters", "logs"):
            shutil.rmtree(data_dir / name, ignore_errors=True)
            (data_dir / name).mkdir()
        setup_django(data_dir, database_url, broker_url)
        env = worker_env(database_url, broker_url, data_dir / "counters")
        for number in (1, 2):
            log_path = data_dir / "logs" / f"worker-{number}.log"
            workers.append(harness.WorkerProcess(env, log_path, concurrency=CONCURRENCY).start())
        for worker in workers:
            worker.wait_ready(120)

        rng = random.Random(args.seed)
        window = max(FAULT_SPACING * (args.kills + 3), 0.3 * args.runs)
        runs = plan_runs(rng, args.runs, window)
        faults = Faults(rng, data_dir, workers, args.kills, window)
        still_open = Driver(runs, faults).drive(deadline=window + max(180.0, 0.5 * args.runs))
        figures, violations = verify(runs, faults, data_dir / "counters")
        if faults.error:
            violations.insert(0, f"fault injection failed: {faults.error}")
        violations[:0] = [
            f"worker-{crash.detail['worker']} (pid {crash.detail['pid']}) exited by itself with "
            f"code {crash.detail['exit_code']}, noticed at {clock(crash.start)}: "
            + crash.detail["why"]
            for crash in faults.done
            if crash.kind == "worker_crash"
        ]
        if still_open:
            violations.insert(0, f"runs still open at the deadline: {still_open}")
        figures.update(seed=args.seed, window_s=round(window, 1))
        figures.update(wall_s=round(time.time() - began, 1), violations=violations)
        report(figures, data_dir)
        if args.json:
            print(json.dumps(figures))
        return 1 if violations else 0
    finally:
        for worker in workers:
            worker.kill9()
        embedded.stop_services(data_dir)


def setup_django(data_dir: Path, database_url: str, broker_url: str) -> None:
    """This process: Django on the chaos services only, migrated, with no earlier runs left."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        BELUGA_DATA_DIR=str(data_dir),  # nothing may fall back on the shared .data
        DATABASE_URL=f"{database_url}?application_name={APPLICATION_NAME}",
        CELERY_BROKER_URL=broker_url,
        BELUGA_EXECUTOR="default",
        BELUGA_POLL_INTERVAL=str(POLL_INTERVAL),
        BELUGA_REDISPATCH_AFTER=str(REDISPATCH_AFTER),
    )
    # The settings want a real key when DEBUG is off and DATABASE_URL is set; this is throwaway.
    os.environ.setdefault("DJANGO_SECRET_KEY", "chaos-" + secrets.token_urlsafe(48))
    # The faults make this process's engine calls log warnings (broker down, ...) by design.
    os.environ["DJANGO_LOG_LEVEL"] = "ERROR"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from project.celery import app

    call_command("migrate", verbosity=0)
    tables = ("workflowevent", "activitytask", "timer", "workflowrun")
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE " + ", ".join(f"beluga_workflows_{t}" for t in tables))
    harness.purge_broker(app)


def worker_env(database_url: str, broker_url: str, counters: Path) -> dict[str, str]:
    """What a `runworker` needs: the chaos services, fast engine settings, the counter dir."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "DJANGO_LOG_LEVEL": "INFO",
        "BELUGA_POLL_INTERVAL": str(POLL_INTERVAL),
        "BELUGA_REDISPATCH_AFTER": str(REDISPATCH_AFTER),
        harness.COUNTER_DIR_ENV: str(counters),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(harness.REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }


def plan_runs(rng: random.Random, count: int, window: float) -> list[Run]:
    """Runs started evenly over the window, so work is in flight at every fault."""
    runs = []
    for i in range(count):
        name, spec = wf.random_run(rng)
        payloads = spec.get("signals", [])
        offsets = sorted(rng.uniform(0.2, 8.0) for _ in payloads)
        signals = list(zip(offsets, payloads, strict=True))
        runs.append(Run(f"chaos-{i:04d}", name, spec, window * i / count, signals))
    return runs


class Faults(threading.Thread):
    """Injects the faults one at a time, each at a random moment of its own slice of the
    window's first 85% (runs still start after the last one), and records when each began and
    ended. Between faults it watches the workers: one that exits by itself is a violation (a
    "worker_crash"), and is started again so the rest of the test still means something."""

    def __init__(
        self,
        rng: random.Random,
        data_dir: Path,
        workers: list[harness.WorkerProcess],
        kills: int,
        window: float,
    ) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.rng, self.data_dir, self.workers = rng, data_dir, workers
        kinds = ["kill"] * kills + ["postgres_restart", "redis_restart", "terminate_connections"]
        rng.shuffle(kinds)
        slot = 0.85 * window / len(kinds)
        self.schedule = [(slot * (n + rng.uniform(0.2, 0.8)), kind) for n, kind in enumerate(kinds)]
        self.origin = 0.0  # when the window opened: set by start()
        self.done: list[Fault] = []
        self.error: str | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        self.origin = time.time()
        super().start()

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def run(self) -> None:
        try:
            for at, kind in self.schedule:
                self._watch(until=lambda at=at: time.time() >= self.origin + at)
                start = time.time()
                detail = getattr(self, kind)()
                self.done.append(Fault(kind, start, time.time(), detail))
                log(f"{kind} {detail or ''} took {time.time() - start:.1f} s")
            self._watch(until=self.stopping.is_set)
        except Exception as exc:  # reported by main() as a violation
            self.error = f"{type(exc).__name__}: {exc}"

    def _watch(self, until: Callable[[], bool]) -> None:
        while not until():
            for number, worker in enumerate(self.workers, 1):
                if not worker.running:
                    self.done.append(self._restart_crashed(number, worker))
            time.sleep(0.2)

    def _restart_crashed(self, number: int, worker: harness.WorkerProcess) -> Fault:
        start = time.time()
        assert worker.process is not None
        lines = worker.log_since_start().splitlines()
        why = next((line for line in lines if "CRITICAL" in line), lines[-1] if lines else "")
        detail = {"worker": number, "pid": worker.pid, "exit_code": worker.process.returncode}
        log(f"worker-{number} (pid {worker.pid}) exited by itself: {why[:300]}")
        worker.start().wait_ready(120)
        return Fault("worker_crash", start, time.time(), {**detail, "why": why[:300]})

    def kill(self) -> dict[str, Any]:
        number = self.rng.randrange(len(self.workers))
        worker = self.workers[number]
        pid = worker.pid
        worker.kill9()
        time.sleep(self.rng.uniform(0.2, 2.0))  # down a while: the other worker's sweeper acts
        worker.start().wait_ready(120)
        return {"worker": number + 1, "pid": pid}

    def postgres_restart(self) -> dict[str, Any]:
        embedded.stop_database(self.data_dir)
        time.sleep(self.rng.uniform(0.5, 2.0))
        embedded.ensure_database(self.data_dir)
        return {}

    def redis_restart(self) -> dict[str, Any]:
        embedded.stop_broker(self.data_dir)
        time.sleep(self.rng.uniform(0.5, 2.0))
        embedded.ensure_broker(self.data_dir)
        return {}

    def terminate_connections(self) -> dict[str, Any]:
        from django.db import connection

        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name <> %s",
                    [APPLICATION_NAME],
                )
                return {"terminated": cursor.fetchone()[0]}
        finally:
            connection.close()


class Driver:
    """Starts the runs and sends their signals on schedule while the faults happen, trying
    again whatever a fault interrupted, until every run has closed."""

    def __init__(self, runs: list[Run], faults: Faults) -> None:
        from beluga_workflows import workflow

        self.executor = workflow.new("default")
        self.faults = faults
        self.unstarted = list(runs)
        self.open = {run.workflow_id: run for run in runs}

    def drive(self, deadline: float) -> list[str]:
        """Returns the runs still open `deadline` seconds into the window."""
        from django.db import DatabaseError, connection

        from beluga_workflows import workflow

        self.faults.start()
        origin, next_poll = self.faults.origin, 0.0
        while self.open and time.time() < origin + deadline and not self.faults.error:
            now = time.time()
            try:
                while self.unstarted and self.unstarted[0].start_at <= now - origin:
                    self._attempt(self.unstarted[0], self._start)
                    self.unstarted.pop(0).started_at = time.time()
                for run in self.open.values():
                    while (
                        run.started_at and run.signals and run.signals[0][0] <= now - run.started_at
                    ):
                        self._attempt(run, self._signal)
                        run.signals.pop(0)
                if now >= next_poll:
                    next_poll = now + 1.0
                    self._forget_closed()
            except DatabaseError:
                connection.close()  # a fault: try again in a moment
                time.sleep(0.5)
            except workflow.WorkflowClosedError as exc:  # closed too early: verify() says how
                log(f"signal refused: {exc}")
                self.open[exc.workflow_id].signals.clear()
            time.sleep(0.05)
        self.faults.stop()
        return sorted(self.open)

    def _attempt(self, run: Run, action: Callable[[Run], None]) -> None:
        """After a database error the next try first looks whether the last one committed."""
        from django.db import DatabaseError

        try:
            action(run)
        except DatabaseError:
            run.unsure = True
            raise
        run.unsure = False

    def _start(self, run: Run) -> None:
        from beluga_workflows import workflow
        from beluga_workflows.models import WorkflowRun

        if run.unsure and WorkflowRun.objects.filter(workflow_id=run.workflow_id).exists():
            return  # starting it again could run it twice, had it finished meanwhile
        options = workflow.WorkflowOptions(id=run.workflow_id, input=run.spec)
        with contextlib.suppress(workflow.WorkflowAlreadyStartedError):
            self.executor.start(run.name, options)

    def _signal(self, run: Run) -> None:
        from beluga_workflows import workflow
        from beluga_workflows.models import WorkflowEvent

        payload = run.signals[0][1]
        received = WorkflowEvent.objects.filter(
            run__workflow_id=run.workflow_id, type="SignalReceived", data__payload=payload
        )
        if run.unsure and received.exists():
            return  # payloads are distinct within a run: this one arrived
        self.executor.signal(run.workflow_id, workflow.Signal(wf.SIGNAL, payload, sender="chaos"))

    def _forget_closed(self) -> None:
        from beluga_workflows.models import WorkflowRun

        closed = WorkflowRun.objects.filter(workflow_id__in=list(self.open)).exclude(
            status="running"
        )
        for workflow_id in closed.values_list("workflow_id", flat=True):
            del self.open[workflow_id]


def verify(runs: list[Run], faults: Faults, counters: Path) -> tuple[dict[str, Any], list[str]]:
    """Check results, histories and executions; return the figures and the violations."""
    from beluga_workflows.history import CLOSING_EVENTS
    from beluga_workflows.models import ActivityTask, Timer, WorkflowEvent, WorkflowRun

    planned = {run.workflow_id: run for run in runs}
    rows = list(
        WorkflowRun.objects.filter(workflow_id__in=planned).values(
            "pk", "workflow_id", "run_id", "status", "result", "closed_at", "waiting_for"
        )
    )
    histories: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for pk, *event in (
        WorkflowEvent.objects.filter(run__workflow_id__in=planned)
        .order_by("run_id", "sequence")
        .values_list("run_id", "sequence", "type", "step", "attempt", "timestamp")
    ):
        histories[pk].append(tuple(event))

    starts = Counter(row["workflow_id"] for row in rows)
    violations = [f"{wid}: started {n} times" for wid, n in starts.items() if n > 1]
    violations += [f"{wid}: never started" for wid in sorted(set(planned) - set(starts))]
    correct = 0
    for row in rows:
        run, history = planned[row["workflow_id"]], histories[row["pk"]]
        problems = history_problems(history, {str(event) for event in CLOSING_EVENTS})
        want = json.loads(json.dumps(wf.expected(run.name, run.spec)))
        if row["status"] != "completed":
            problems.insert(0, f"{row['status']}, waiting for {row['waiting_for'] or 'nothing'}")
        elif row["result"] != want:
            problems.insert(0, f"result {row['result']!r}, expected {want!r}")
        if problems:
            events = ", ".join(f"{event[1]}[{event[2]}]" for event in history)
            violations.append(f"{row['workflow_id']} ({run.name}): {'; '.join(problems)}: {events}")
        else:
            correct += 1
    closed = {"run__workflow_id__in": planned, "run__closed_at__isnull": False}
    left_open = ActivityTask.objects.filter(state="scheduled", **closed).count()
    left_open += Timer.objects.filter(state="pending", **closed).count()
    if left_open:
        violations.append(f"{left_open} activity tasks or timers left open in closed runs")

    run_ids = {row["pk"]: str(row["run_id"]) for row in rows}
    outcomes = {
        (f"{run_ids[pk]}:{step}", attempt): at.timestamp()
        for pk, history in histories.items()
        for _, kind, step, attempt, at in history
        if kind in OUTCOMES
    }
    executions = read_executions(counters)
    causes = explain(executions, faults.done, violations)
    for fault in faults.done:
        fault.recovery = recovery(fault, executions, outcomes)
    last_closed = max((row["closed_at"].timestamp() for row in rows if row["closed_at"]), default=0)
    figures = {
        "runs": len(runs),
        "runs_correct": correct,
        "workflows": dict(sorted(Counter(run.name for run in runs).items())),
        **fault_figures(faults),
        "activity_executions": len(executions),
        "activity_attempts": len({execution.key for execution in executions}),
        "re_executions": sum(causes.values()),
        "re_executions_explained": sum(n for kind, n in causes.items() if kind),
        "re_executions_by_fault": {kind: n for kind, n in sorted(causes.items()) if kind},
        "last_run_closed_after_last_fault_s": round(
            last_closed - max((f.end for f in faults.done), default=faults.origin), 1
        ),
    }
    return figures, violations


def history_problems(history: list[tuple[Any, ...]], closing: set[str]) -> list[str]:
    """A gap in the sequence numbers, something recorded twice, or not exactly one closing
    event, at the end."""
    problems = []
    sequences = [event[0] for event in history]
    if sequences != list(range(1, len(history) + 1)):
        problems.append(f"sequence numbers {sequences}")
    once: Counter[tuple[Any, ...]] = Counter()
    for _, kind, step, attempt, _ in history:
        if kind in ONCE_PER_STEP:
            once[(kind, step)] += 1
        elif kind == "ActivityAttemptFailed":
            once[(kind, step, attempt)] += 1
    twice = sorted(key for key, n in once.items() if n > 1)
    if twice:
        problems.append(f"recorded more than once: {twice}")
    ends = [n for n, event in enumerate(history) if event[1] in closing]
    if history and ends != [len(history) - 1]:
        problems.append(f"closing events at positions {ends} of {len(history)}")
    return problems


def read_executions(counters: Path) -> list[Execution]:
    """The executions `workflows_chaos.work` marked, in the order they started."""
    path = counters / wf.EXECUTIONS
    executions: list[Execution] = []
    running: dict[tuple[int, tuple[str, int]], list[Execution]] = defaultdict(list)
    for line in path.read_text().splitlines() if path.exists() else []:
        pid, what, activity_id, attempt, at = line.split()
        key = (activity_id, int(attempt))
        if what == "start":
            execution = Execution(int(pid), key, float(at))
            executions.append(execution)
            running[(int(pid), key)].append(execution)
        else:
            running[(int(pid), key)].pop(0).end = float(at)
    return executions


def explain(
    executions: list[Execution], faults: list[Fault], violations: list[str]
) -> Counter[str]:
    """Count the re-executions by the kind of fault that caused them ("": none, a violation),
    and flag executions that never ended although no kill stopped them."""
    by_key: dict[tuple[str, int], list[Execution]] = defaultdict(list)
    for execution in executions:
        by_key[execution.key].append(execution)
        if execution.end is None and not any(
            fault.kind in ENDS_A_WORKER and disturbed(execution, fault) for fault in faults
        ):
            violations.append(
                f"activity {execution.key} started at {clock(execution.start)} in pid "
                f"{execution.pid} and never ended, and no kill stopped it"
            )
    causes: Counter[str] = Counter()
    for key, runs in by_key.items():
        for before, again in zip(runs, runs[1:], strict=False):
            cause = next(iter(suspects(before, faults)), None)
            causes[cause.kind if cause else ""] += 1
            if cause is None:
                how = "after" if before.end is not None and before.end <= again.start else "while"
                violations.append(
                    f"activity {key} ran again {how} it ran in pid {before.pid} (from "
                    f"{clock(before.start)}; again from {clock(again.start)} in pid "
                    f"{again.pid}), and no fault disturbed it"
                )
    return causes


def disturbed(execution: Execution, fault: Fault, grace: float = GRACE) -> bool:
    """Whether `fault` can have made `execution` run again (see the module docstring)."""
    ended = execution.end is None or execution.end + RECORDING >= fault.start
    if fault.kind in ENDS_A_WORKER:
        return execution.pid == fault.detail["pid"] and execution.start <= fault.start and ended
    return execution.start <= fault.end + grace and ended


def suspects(execution: Execution, faults: list[Fault]) -> list[Fault]:
    """The faults that disturbed `execution`, surest first: a kill of its own worker, a fault
    it ran through, then one that had just ended when it started."""
    found = [fault for fault in faults if disturbed(execution, fault)]
    return sorted(
        found, key=lambda f: (f.kind not in ENDS_A_WORKER, not disturbed(execution, f, grace=0))
    )


def recovery(
    fault: Fault, executions: list[Execution], outcomes: dict[tuple[str, int], float]
) -> float | None:
    """Seconds from the fault's start until the attempts in flight at it had their outcomes
    and an outcome had been recorded after it ended; None if that never happened."""
    times = sorted(outcomes.values())
    after = bisect.bisect_right(times, fault.end)
    if after == len(times):
        return None
    ends = [times[after]]
    for execution in executions:
        running = execution.start <= fault.end and (
            execution.end is None or execution.end >= fault.start
        )
        if running and (fault.kind not in ENDS_A_WORKER or execution.pid == fault.detail["pid"]):
            if execution.key not in outcomes:
                return None
            ends.append(outcomes[execution.key])
    return max(ends) - fault.start


def fault_figures(faults: Faults) -> dict[str, Any]:
    times: dict[str, list[float]] = defaultdict(list)
    for fault in faults.done:
        if fault.recovery is not None:
            times[fault.kind].append(fault.recovery)
    return {
        "faults": dict(sorted(Counter(fault.kind for fault in faults.done).items())),
        "fault_log": [
            {
                "kind": fault.kind,
                "at_s": round(fault.start - faults.origin, 1),
                "took_s": round(fault.end - fault.start, 1),
                "clock": clock(fault.start),  # as the worker logs show it
                "recovery_s": None if fault.recovery is None else round(fault.recovery, 2),
                **fault.detail,
            }
            for fault in faults.done
        ],
        "recovery_s": {
            kind: {"max": round(max(seconds), 2), "median": round(statistics.median(seconds), 2)}
            for kind, seconds in sorted(times.items())
        },
    }


def report(figures: dict[str, Any], data_dir: Path) -> None:
    workflows = ", ".join(f"{name} {n}" for name, n in figures["workflows"].items())
    print(f"runs: {figures['runs']} ({workflows}), seed {figures['seed']}")
    print(f"  {figures['runs_correct']} completed with the right result and a clean history")
    kinds = ", ".join(f"{kind} x{n}" for kind, n in figures["faults"].items())
    print(f"faults: {kinds}, in a {figures['window_s']} s window")
    for fault in figures["fault_log"]:
        detail = {k: v for k, v in fault.items() if k not in ("kind", "at_s", "took_s", "clock")}
        recovered = detail.pop("recovery_s")
        print(
            f"  at {fault['at_s']:5.1f} s  {fault['kind']:<21} took {fault['took_s']:3.1f} s, "
            f"recovered in {recovered} s  {detail or ''}"
        )
    print(
        f"activity executions: {figures['activity_executions']} "
        f"({figures['activity_attempts']} attempts); re-executions: {figures['re_executions']}, "
        f"explained by a fault: {figures['re_executions_explained']} "
        f"{figures['re_executions_by_fault'] or ''}"
    )
    for kind, seconds in figures["recovery_s"].items():
        print(f"recovery after {kind}: max {seconds['max']} s, median {seconds['median']} s")
    print(
        f"the last run closed {figures['last_run_closed_after_last_fault_s']} s after the last "
        f"fault ended; wall time {figures['wall_s']} s"
    )
    if figures["violations"]:
        print(f"FAILED: {len(figures['violations'])} violations (logs in {data_dir / 'logs'}):")
        for violation in figures["violations"]:
            print(f"  {violation}")
    else:
        print("OK: no violation")


def clock(seconds: float) -> str:
    """A moment as the worker logs show it."""
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{int(seconds % 1 * 1000):03d}"


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
