"""Record the golden histories from real runs on the built-in engine.

    python -m tests.golden.record            # DATABASE_URL / CELERY_BROKER_URL, or embedded

Starts a ``runworker``, runs every scenario of :mod:`tests.golden.workflows` through the public
API (signals and a cancel included), and writes each run's history — children and the runs of
a continue-as-new chain too — to ``tests/golden/histories/``. Check the files in; the suite
(`tests/test_golden.py`) replays them on every change. Recording again replaces them: do it
only for new scenarios, and review the diff.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HISTORIES = HERE / "histories"


def scenarios(executor: Any, prefix: str) -> None:
    from beluga_workflows import workflow
    from tests.golden import workflows as g

    def start(fn: Any, name: str, input: Any) -> Any:
        return executor.execute(fn, workflow.WorkflowOptions(id=f"{prefix}{name}", input=input))

    def wait_for(handle: Any, what: str) -> None:
        deadline = time.monotonic() + 30
        while executor.describe(handle.id).waiting_for != what:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{handle.id} never waited for {what}")
            time.sleep(0.05)

    finished = [
        start(g.chain, "chain", 1),
        start(g.retry, "retry", 2),
        start(g.signal_timeout, "signal-timeout", None),
        start(g.fan_out, "fan-out", [1, 2, 3]),
        start(g.parent, "parent", ["a", "b"]),
        start(g.patched, "patched", 5),
    ]
    failing = start(g.failure, "failure", "no entry")
    approved = start(g.approval, "approval", "laptop")
    rejected = start(g.approval, "rejection", "yacht")
    race = start(g.race, "race", None)
    loop = start(g.loop, "loop", 0)
    canceled = start(g.cancel, "cancel", None)

    for handle, payload in ((approved, True), (rejected, False)):
        wait_for(handle, "signal:approval")
        executor.signal(handle.id, workflow.Signal("approval", payload, sender="reviewer"))
    time.sleep(0.3)
    executor.signal(race.id, workflow.Signal("hurry", None))
    for _ in range(3):
        wait_for(loop, "signal:tick")
        executor.signal(loop.id, workflow.Signal("tick", None))
        time.sleep(0.5)  # the next run of the chain starts
    wait_for(canceled, "signal:never")
    executor.cancel(canceled.id, sender="ops")

    for handle in [*finished, approved, rejected, race, loop]:
        handle.result(timeout=60)
    for handle in (failing, canceled):
        try:
            handle.result(timeout=60)
        except workflow.WorkflowError:
            pass


def dump(prefix: str) -> list[Path]:
    from beluga_workflows.engine.store import to_event
    from beluga_workflows.models import WorkflowRun

    written = []
    HISTORIES.mkdir(exist_ok=True)
    runs = WorkflowRun.objects.filter(workflow_id__startswith=prefix).order_by("created_at", "id")
    for number, run in enumerate(runs, 1):
        scenario = run.workflow_id.removeprefix(prefix)
        path = HISTORIES / f"{scenario}-{number:02d}.json"
        record = {
            "workflow": run.workflow_name,
            "workflow_id": run.workflow_id,
            "run_id": str(run.run_id),
            "input": run.input,
            "status": run.status,
            "decided_through": run.decided_through,
            "events": [to_event(e).to_json() for e in run.events.order_by("sequence")],
        }
        path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "golden-" + secrets.token_urlsafe(48))
    os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    from beluga_workflows import workflow
    from tests.harness import REPO_ROOT, WorkerProcess

    call_command("migrate", verbosity=0)
    env = {
        **os.environ,
        "BELUGA_POLL_INTERVAL": "0.2",
        "BELUGA_REDISPATCH_AFTER": "2",
        "PYTHONPATH": str(REPO_ROOT),
    }
    log = Path(tempfile.mkdtemp()) / "worker.log"
    worker = WorkerProcess(env, log, concurrency=4).start().wait_ready()
    prefix = f"golden-{secrets.token_hex(3)}-"
    try:
        for old in HISTORIES.glob("*.json"):
            old.unlink()
        scenarios(workflow.new("default"), prefix)
        for path in dump(prefix):
            print(path.relative_to(REPO_ROOT))
    finally:
        worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
