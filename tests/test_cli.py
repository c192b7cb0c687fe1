"""`manage.py workflow`: every action, JSON in and out, `--user` permissions and exit codes.

Most tests call the command in-process (`call_command`) inside the test transaction; the exit
codes are also checked on real `manage.py` processes, and the tutorial runs on a worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from beluga_workflows.models import WorkflowRun
from tests import harness
from tests.api_fixtures import drive, event_types, signals, start, users_fixture  # noqa: F401

pytestmark = pytest.mark.django_db


def cli(*args: str) -> str:
    out = StringIO()
    call_command("workflow", *args, stdout=out)
    return out.getvalue()


def cli_json(*args: str):
    return json.loads(cli(*args, "--json"))


def exit_code(*args: str) -> int:
    with pytest.raises(CommandError) as failure:
        cli(*args)
    return failure.value.returncode


@pytest.mark.core
def test_start_describe_list_and_history_as_json(users):
    started = cli_json("start", "api_approval", "--id", "order-1", "--input", '{"amount": 3}')
    assert (started["id"], started["status"], started["input"]) == (
        "order-1",
        "running",
        {"amount": 3},
    )
    drive("order-1")

    described = cli_json("describe", "order-1")
    assert (
        described["waiting_for"] == "signal:approval" and described["run_id"] == started["run_id"]
    )
    listed = cli_json("list", "--approvals")
    assert [r["id"] for r in listed] == ["order-1"]
    assert cli_json("list", "--status", "completed") == []
    assert [e["type"] for e in cli_json("history", "order-1")] == [
        "WorkflowStarted",
        "SignalWaitStarted",
    ]
    assert {"api_approval", "api_echo", "research"} <= set(cli_json("names"))


def test_human_output_is_readable(users):
    start("api_approval", "order-1", "laptop")
    assert "waiting_for:      signal:approval" in cli("describe", "order-1")
    assert "Waiting for signal 'approval'." in cli("history", "order-1")
    listing = cli("list")
    assert listing.splitlines()[0].startswith("ID") and "order-1" in listing


@pytest.mark.core
def test_signal_as_a_user_with_permission_records_them_as_sender(users):
    start("api_approval", "order-1", "laptop")
    output = cli("signal", "order-1", "approval", "true", "--user", "reviewer")
    assert output.strip() == "Sent signal 'approval' = true to 'order-1' as reviewer."
    run = WorkflowRun.objects.get(workflow_id="order-1")
    assert signals(run) == [{"name": "approval", "payload": True, "sender": "reviewer"}]
    assert drive("order-1").result == {"request": "laptop", "approved": True}


def test_without_user_the_shell_is_trusted_and_recorded(users):
    start("api_approval", "order-1")
    cli("signal", "order-1", "approval", "false")
    sender = signals(WorkflowRun.objects.get(workflow_id="order-1"))[0]["sender"]
    assert sender.startswith("cli")


@pytest.mark.core
@pytest.mark.parametrize(
    "args",
    [
        ("signal", "order-1", "approval", "true", "--user", "viewer"),
        ("cancel", "order-1", "--user", "reviewer"),
        ("start", "api_echo", "--user", "reviewer"),
        ("describe", "order-1", "--user", "nobody"),
    ],
)
def test_user_without_permission_gets_exit_code_5_and_nothing_happens(users, args):
    run = start("api_approval", "order-1")
    before = event_types(run)
    assert exit_code(*args) == 5
    assert event_types(run) == before
    assert WorkflowRun.objects.count() == 1


def test_cancel_and_query(users):
    start("api_echo", "echo-1", [1, 2])
    assert cli_json("query", "echo-1", "result") == {"result": [1, 2]}
    assert json.loads(cli("query", "echo-1", "double")) == [[1, 2], [1, 2]]
    assert exit_code("query", "echo-1", "bogus") == 1

    start("api_approval", "order-1")
    assert "Asked 'order-1' to cancel (as operator)" in cli(
        "cancel", "order-1", "--user", "operator"
    )
    assert drive("order-1").status == "canceled"


@pytest.mark.parametrize(
    "args, code",
    [
        (("start", "nope"), 2),
        (("start", "tests.api_fixtures:echo"), 2),  # never an import path
        (("start", "api_echo", "--input", "not json"), 2),
        (("start", "api_echo", "--timeout", "-1"), 2),
        (("signal", "order-1", "approval", "{bad"), 2),
        (("describe", "order-1", "--user", "ghost"), 2),
        (("list", "--limit", "0"), 2),
        (("describe", "no-such-run"), 3),
        (("history", "no-such-run"), 3),
        (("signal", "no-such-run", "approval", "true"), 3),
        (("cancel", "no-such-run"), 3),
        (("start", "api_approval", "--id", "order-1"), 4),
        (("signal", "echo-1", "approval", "true"), 4),
        (("cancel", "echo-1"), 4),
    ],
)
def test_exit_codes(users, args, code):
    start("api_approval", "order-1")
    start("api_echo", "echo-1", 1)
    assert exit_code(*args) == code


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_exit_codes_of_a_real_process(users):
    from django.db import connection

    start("api_echo", "echo-1", 1)
    env = {
        **os.environ,
        "DATABASE_URL": harness.database_url(connection.settings_dict),
        "PYTHONPATH": str(harness.REPO_ROOT),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(harness.REPO_ROOT / "manage.py"), "workflow", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    help_text = run("--help")
    assert help_text.returncode == 0 and "exit codes:" in help_text.stdout
    described = run("describe", "echo-1", "--json")
    assert described.returncode == 0 and json.loads(described.stdout)["status"] == "completed"
    assert run("start").returncode == 2  # argparse: missing workflow name
    assert run("start", "research", "--input", "{").returncode == 2
    missing = run("describe", "nope")
    assert missing.returncode == 3 and "No workflow run with id 'nope'" in missing.stderr
    assert run("cancel", "echo-1").returncode == 4


@pytest.mark.slow
@pytest.mark.core
@pytest.mark.django_db(transaction=True)
def test_tutorial_from_the_shell_with_a_worker(worker, users):
    cli("start", "research", "--id", "research-q4-2025", "--input", '"Q4 revenue analysis"')
    harness.wait_until(
        lambda: cli_json("list", "--waiting-for", "signal:approval"), 30, message="approval wait"
    )
    cli("signal", "research-q4-2025", "approval", "true", "--user", "reviewer")
    done = harness.wait_until(
        lambda: (d := cli_json("describe", "research-q4-2025"))["status"] == "completed" and d,
        30,
        message="completed",
    )
    assert done["result"].startswith("Final Report")

    # --wait gives up after its limit with exit code 1, having printed the run as it stands.
    out = StringIO()
    with pytest.raises(CommandError) as gave_up:
        call_command("workflow", "start", "research", "--id", "research-q4-2025", "--input",
                     '"Q1"', "--wait", "0.5", "--json", stdout=out)  # fmt: skip
    assert gave_up.value.returncode == 1 and "still running" in str(gave_up.value)
    assert json.loads(out.getvalue())["status"] == "running"
