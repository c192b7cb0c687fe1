"""A Django project that is not the demo, made from the README's install section alone.

`django-admin startproject mysite` and `startapp expenses`, then every block the README marks
`<!-- install:<file> -->` goes into that file as a developer would paste it (appended to the
files startproject wrote, a new file otherwise). Only what differs per machine is added after
the README's settings: the test's PostgreSQL server and broker, queues of its own, and the new
app in INSTALLED_APPS (the step `startapp` always needs). The package itself is the one
installed in this virtualenv, as `pip install` would have put it.

Then the project is used as its developer would: `migrate`, `runworker`, `runserver`, the
README's commands, and the approval through the REST API (filters included), the admin's
Approve button and the CLI.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection

from tests import harness

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

README = harness.REPO_ROOT / "README.md"
PASSWORD = secrets.token_urlsafe(12)


def install_blocks() -> dict[str, str]:
    """`<!-- install:<target> -->` → the code block that follows it, in README order."""
    found = re.findall(r"<!-- install:(\S+) -->\n```\w*\n(.*?)```", README.read_text(), re.S)
    return dict(found)


class Project:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert done.returncode == 0, (
                f"manage.py {shlex.join(args)}:\n{done.stdout}{done.stderr}"
            )
        return done

    def state(self, workflow_id: str) -> dict[str, Any]:
        return json.loads(self.manage("workflow", "describe", workflow_id, "--json").stdout)


@pytest.fixture
def host_database() -> Iterator[dict[str, Any]]:
    """A database of its own on the test's PostgreSQL server, dropped afterwards."""
    connection.ensure_connection()
    params = connection.get_connection_params()
    keep = {k: params[k] for k in ("user", "password", "host", "port") if params.get(k)}
    name = f"beluga_host_{secrets.token_hex(4)}"
    with psycopg.connect(dbname="postgres", autocommit=True, **keep) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {**connection.settings_dict, "NAME": name, "TEST": {}}
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **keep) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def project(tmp_path: Path, host_database: dict[str, Any]) -> Project:
    root = tmp_path / "site"
    root.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mysite.settings",
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        "PYTHONUNBUFFERED": "1",
    }
    for command in (["startproject", "mysite", "."], ["startapp", "expenses"]):
        subprocess.run([sys.executable, "-m", "django", *command], cwd=root, env=env, check=True)

    blocks = install_blocks()
    assert {"mysite/settings.py", "mysite/urls.py", "expenses/workflows.py"} <= set(blocks)
    for target, code in blocks.items():
        if target == "commands":
            continue
        path = root / target
        with open(path, "a") as file:  # startproject's files are extended, others created
            file.write("\n" + code)

    queue = f"host-{secrets.token_hex(3)}"
    machine = {
        "DATABASES": {"default": host_database},
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "WORKFLOW_QUEUE": f"{queue}-steps",
        "ACTIVITY_QUEUE": f"{queue}-activities",
    }
    with open(root / "mysite/settings.py", "a") as file:
        file.write(
            "\n# This machine: the test's PostgreSQL server and broker, queues of its own.\n"
            f"INSTALLED_APPS += ['expenses']\n"
            f"DATABASES = {machine['DATABASES']!r}\n"
            f"CELERY_BROKER_URL = {machine['CELERY_BROKER_URL']!r}\n"
            "BELUGA_WORKFLOWS = {**BELUGA_WORKFLOWS, 'POLL_INTERVAL': 0.2, "
            f"'WORKFLOW_QUEUE': {machine['WORKFLOW_QUEUE']!r}, "
            f"'ACTIVITY_QUEUE': {machine['ACTIVITY_QUEUE']!r}}}\n"
        )
    return Project(root, env)


def readme_commands() -> list[list[str]]:
    lines = install_blocks()["commands"].splitlines()
    commands = [shlex.split(line.split("  # ")[0]) for line in lines if line.strip()]
    for argv in commands:
        assert argv[:2] == ["python", "manage.py"], argv
    return [argv[2:] for argv in commands]


def test_a_new_project_from_the_readme_approves_through_rest_admin_and_cli(
    project: Project, tmp_path: Path
) -> None:
    migrate, runworker, start = readme_commands()
    assert project.manage(*migrate).returncode == 0
    check = project.manage("check")
    assert "no issues" in check.stdout + check.stderr
    project.manage("createsuperuser", "--noinput", "--username", "boss", "--email", "b@x.io")
    token = project.manage("drf_create_token", "boss").stdout.split()[2]

    assert runworker[:2] == ["runworker", "--concurrency"], runworker
    worker = harness.WorkerProcess(
        project.env,
        tmp_path / "worker.log",
        concurrency=int(runworker[2]),
        manage_py=project.root / "manage.py",
    )
    port = harness.free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        worker.start().wait_ready()
        harness.wait_until(lambda: harness.port_open(port), 30, message="runserver")

        # The README's start command (CLI): claim-1 waits for its manager.
        project.manage(*start)
        waiting = "signal:manager_approval"
        harness.wait_until(
            lambda: project.state("claim-1")["waiting_for"] == waiting, 30, message="claim-1 waits"
        )

        # REST: start a second claim, then the filters really filter.
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"
        created = api.post(
            f"{base}/api/workflows/",
            json={"workflow": "expense", "id": "claim-2", "input": {"who": "bo", "amount": 7}},
        )
        assert created.status_code == 201, created.text
        harness.wait_until(
            lambda: project.state("claim-2")["waiting_for"] == waiting, 30, message="claim-2 waits"
        )

        def ids(path: str, **query: str) -> list[str]:
            answer = api.get(f"{base}{path}", params=query)
            assert answer.status_code == 200, answer.text
            return sorted(row["id"] for row in answer.json()["results"])

        assert ids("/api/workflows/", status="running") == ["claim-1", "claim-2"]
        assert ids("/api/workflows/", status="completed") == []
        assert api.get(f"{base}/api/workflows/", params={"status": "bogus"}).status_code == 400
        assert ids("/api/approvals/", signal="nope") == []
        assert ids("/api/approvals/", signal="manager_approval") == ["claim-1", "claim-2"]
        assert api.get(f"{base}/api/workflows/", headers={"Accept": "text/html"}).status_code == 200

        schema = api.get(f"{base}/api/schema/", headers={"Accept": "application/json"})
        assert schema.status_code == 200
        assert "BelugaRun" in schema.json()["components"]["schemas"]
        assert requests.get(f"{base}/api/workflows/").status_code == 401

        # REST approves claim-2.
        approval = {"name": "manager_approval", "payload": True}
        assert api.post(f"{base}/api/workflows/claim-2/signal/", json=approval).status_code == 202

        # The admin's Approve button approves claim-1.
        admin = requests.Session()
        login = f"{base}/admin/login/"
        admin.get(login)
        signed_in = admin.post(
            login,
            data={
                "username": "boss",
                "password": PASSWORD,
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": login},
        )
        assert signed_in.url.endswith("/admin/"), signed_in.url
        listing = admin.get(f"{base}/admin/beluga_workflows/workflowrun/", params={"q": "claim-1"})
        (pk,) = set(re.findall(r"/admin/beluga_workflows/workflowrun/(\d+)/change/", listing.text))
        run_page = f"{base}/admin/beluga_workflows/workflowrun/{pk}/change/"
        assert ">Approve</button>" in admin.get(run_page).text
        approved = admin.post(
            f"{base}/admin/beluga_workflows/workflowrun/{pk}/approve/",
            data={"csrfmiddlewaretoken": admin.cookies["csrftoken"]},
            headers={"Referer": run_page},
        )
        assert approved.status_code == 200 and "manager_approval" in approved.text

        for claim, result in (("claim-1", "Paid 42 EUR to ana."), ("claim-2", "Paid 7 EUR to bo.")):
            harness.wait_until(
                lambda c=claim: project.state(c)["status"] == "completed", 30, message=claim
            )
            assert project.state(claim)["result"] == result
        assert ids("/api/workflows/", status="completed") == ["claim-1", "claim-2"]

        # The CLI sees who approved what.
        history = project.manage("workflow", "history", "claim-1").stdout
        assert "manager_approval" in history and "boss" in history

        # DRF's own schema generator reads the API too.
        assert "/api/workflows/" in project.manage("generateschema").stdout
    finally:
        worker.stop()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
