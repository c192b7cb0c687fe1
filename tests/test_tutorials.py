"""The README's tutorials run as written: its code blocks are read from README.md and run.

The shell lines run as `manage.py` subprocesses (with `.venv/bin/python` replaced by this
interpreter) and the Python block in `manage.py shell`, against a real `runworker`, each
pointed at the test database. Between lines the test waits for what a person would see before
typing the next one.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from typing import Any

import pytest

from beluga_workflows import workflow
from tests import harness
from tests.conftest import worker_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.core, pytest.mark.slow]

README = harness.REPO_ROOT / "README.md"


def block(marker: str) -> str:
    """The fenced code block that follows `<!-- tutorial:<marker> -->` in the README."""
    text = README.read_text()
    found = re.search(rf"<!-- tutorial:{re.escape(marker)} -->\n```\w*\n(.*?)```", text, re.S)
    assert found, f"README has no tutorial block {marker!r}"
    return found.group(1)


def shell_lines(code: str) -> list[list[str]]:
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split("  # ")[0].strip()
        if line:
            argv = shlex.split(line)
            assert argv[0] == ".venv/bin/python", line
            commands.append([sys.executable, *argv[1:]])
    return commands


def run(argv: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(
        argv,
        cwd=harness.REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def state(workflow_id: str) -> Any:
    return workflow.get_executor().describe(workflow_id)


def test_fan_out_approve_report_from_the_shell(worker: Any, counter_dir: Any) -> None:
    env = worker_env(counter_dir)
    start, history, approvals, signal, children, result = shell_lines(block("fan-out"))

    run(start, env)
    harness.wait_until(
        lambda: state("batch-q4").waiting_for == "signal:approval", 30, message="the approval wait"
    )
    shown = run(history, env)
    assert shown.count("ActivityScheduled") == 3 and shown.count("ActivityCompleted") == 3
    assert shown.index("ActivityCompleted") > shown.rindex("ActivityScheduled")
    assert "batch-q4" in run(approvals, env)

    run(signal, env)
    harness.wait_until(
        lambda: state("batch-q4").status is workflow.Status.COMPLETED, 30, message="completed"
    )
    listed = run(children, env)
    assert "batch-q4-report" in listed and "batch_report" in listed and "completed" in listed
    answer = run(result, env)
    assert '"approved": true' in answer and "Batch Report" in answer
    assert "q4-hiring.pdf: revenue up, costs flat." in answer

    # The admin draws the three summaries as parallel lanes and links the report's run.
    from django.contrib.auth import get_user_model
    from django.test import Client

    from beluga_workflows.models import WorkflowRun

    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("root", "r@example.com", "pw"))
    parent = WorkflowRun.objects.get(workflow_id="batch-q4")
    html = admin.get(f"/admin/beluga_workflows/workflowrun/{parent.pk}/change/").content.decode()
    assert "up to 3 in parallel" in html
    report = WorkflowRun.objects.get(workflow_id="batch-q4-report")
    assert f"/admin/beluga_workflows/workflowrun/{report.pk}/change/" in html


def test_fan_out_approve_report_from_python(worker: Any, counter_dir: Any) -> None:
    code = block("fan-out-python")
    # The last line is an expression the interactive shell would echo; print it instead.
    *body, last = code.strip().splitlines()
    script = "\n".join([*body, f"print({last.split('  # ')[0].strip()})"])
    out = run([sys.executable, "manage.py", "shell", "-c", script], worker_env(counter_dir))
    assert "Batch Report" in out and "q1-costs.pdf: revenue up" in out
    assert "['batch-q1-report']" in out
