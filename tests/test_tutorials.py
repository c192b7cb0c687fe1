"""The README's tutorials run as written: its code blocks are read from README.md and run.

The shell lines run as `manage.py` subprocesses (with `.venv/bin/python` replaced by this
interpreter) and the Python block in `manage.py shell`, against a real `runworker`, each
pointed at the test database. Between lines the test waits for what a person would see before
typing the next one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
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


def shell_lines(code: str, program: str = ".venv/bin/python") -> list[list[str]]:
    """The block's commands as argv lists; `.venv/bin/X` runs from this interpreter's venv."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split("  # ")[0].strip()
        if line:
            argv = shlex.split(line)
            assert argv[0] == program, line
            name = Path(program).name
            local = sys.executable if name == "python" else str(Path(sys.executable).parent / name)
            commands.append([local, *argv[1:]])
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


def reviewer_admin() -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")


def test_the_cli_lines_of_the_readme(worker: Any, counter_dir: Any) -> None:
    reviewer_admin()
    env = worker_env(counter_dir)
    start, listing, signal, describe, history = shell_lines(block("cli"))

    run(start, env)
    harness.wait_until(
        lambda: state("q2").waiting_for == "signal:approval", 30, message="q2 waits for approval"
    )
    assert "q2" in run(listing, env)
    run(signal, env)
    harness.wait_until(lambda: state("q2").status is workflow.Status.COMPLETED, 30, message="done")
    described = json.loads(run(describe, env))
    assert described["status"] == "completed" and "Final Report" in described["result"]
    shown = run(history, env)
    assert "SignalReceived" in shown and "admin" in shown


def test_the_rest_lines_of_the_readme(worker: Any, counter_dir: Any, live_server: Any) -> None:
    reviewer_admin()
    from project.demo.workflows import research_workflow

    executor = workflow.get_executor()
    executor.execute(research_workflow, workflow.WorkflowOptions(id="research-demo", input="Q4"))
    harness.wait_until(
        lambda: state("research-demo").waiting_for == "signal:approval", 30, message="waiting"
    )
    script = block("rest").replace(".venv/bin/python", shlex.quote(sys.executable))
    script = script.replace("http://127.0.0.1:8000", live_server.url)
    out = run(["bash", "-euo", "pipefail", "-c", script], worker_env(counter_dir))
    assert '"id":"research-demo"' in out  # the approvals list
    assert '"id":"q1"' in out and '"status":"running"' in out  # the start's answer
    harness.wait_until(
        lambda: state("research-demo").status is workflow.Status.COMPLETED, 30, message="approved"
    )
    assert executor.history("research-demo")[-1].type.value == "WorkflowCompleted"
    assert state("q1").workflow == "research"


@pytest.mark.temporal
def test_the_temporal_cli_lines_of_the_readme(
    use_temporal: Any, worker: Any, temporal_server: str
) -> None:
    from project.demo.workflows import research_workflow

    executor = workflow.get_executor()
    executor.execute(research_workflow, workflow.WorkflowOptions(id="research-demo", input="Q4"))
    harness.wait_until(
        lambda: state("research-demo").waiting_for == "signal:approval", 30, message="waiting"
    )
    address = ["--address", temporal_server]  # the README's lines use the default address
    listing, describe, signal = shell_lines(block("temporal-cli"), ".venv/bin/temporal")
    assert "research-demo" in run([*listing, *address], dict(os.environ))
    assert "research-demo" in run([*describe, *address], dict(os.environ))
    run([*signal, *address], dict(os.environ))
    harness.wait_until(
        lambda: state("research-demo").status is workflow.Status.COMPLETED, 60, message="approved"
    )


def expecting(code: str) -> str:
    """The tutorial's Python as a script that checks what the README says it shows.

    An expression followed by a `# value` comment (on its line or on the comment lines after it)
    is evaluated until its repr — its str for `print(...)` — matches the comment (`...` matches
    anything), as a person would look again a moment later; other lines run as written.
    """
    lines = code.strip().splitlines()
    script = [
        "import re, time",
        "def _expect(fn, expected, printed):",
        "    pattern = '.*'.join(re.escape(part.strip()) for part in expected.split('...'))",
        "    deadline = time.monotonic() + 30",
        "    while True:",
        "        value = fn()",
        "        shown = str(value) if printed else repr(value)",
        "        if re.fullmatch(pattern, shown, re.S):",
        "            print('as shown:', shown); return",
        "        if time.monotonic() > deadline:",
        "            raise AssertionError(f'README shows {expected!r}, got {shown!r}')",
        "        time.sleep(0.2)",
    ]
    index = 0
    while index < len(lines):
        line = lines[index]
        code_part, _, comment = line.partition("  # ")
        expected = [comment.strip()] if comment.strip() else []
        while index + 1 < len(lines) and lines[index + 1].startswith("# "):
            index += 1
            expected.append(lines[index][2:].strip())
        index += 1
        statement = code_part.strip()
        is_expression = statement and not statement.startswith(("#", "from ", "import "))
        if is_expression and expected and "=" not in statement.split("(")[0]:
            printed = statement.startswith("print(") and statement.endswith(")")
            inner = statement[len("print(") : -1] if printed else statement
            script.append(f"_expect(lambda: {inner}, {' '.join(expected)!r}, {printed})")
        else:
            script.append(code_part.rstrip())
    return "\n".join(script)


def test_the_research_tutorial_runs_as_written(worker: Any, counter_dir: Any) -> None:
    script = expecting(block("research-python"))
    assert script.count("_expect(") >= 6  # every shown value is checked
    out = run([sys.executable, "manage.py", "shell", "-c", script], worker_env(counter_dir))
    assert out.count("as shown:") == script.count("_expect(lambda")
    assert "Final Report" in out
