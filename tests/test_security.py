"""Safe defaults of the demo project: no debug pages, no made-up secret key, no passwords shown.

Settings are read in fresh `manage.py` processes where the environment matters (a deployment
sets `DATABASE_URL` and no `DJANGO_DEBUG`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.test import Client

from tests import harness
from tests.api_fixtures import users_fixture  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.core]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    from django.db import connection

    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    base["DATABASE_URL"] = harness.database_url(connection.settings_dict)
    base["PYTHONPATH"] = str(harness.REPO_ROOT)
    command = [sys.executable, str(harness.REPO_ROOT / "manage.py"), *args]
    return subprocess.run(
        command, env={**base, **env}, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_deployment_without_a_secret_key_refuses_to_start() -> None:
    refused = manage("check")
    assert refused.returncode != 0
    assert "Set DJANGO_SECRET_KEY" in refused.stderr
    key = "k" * 60
    started = manage("shell", "-c", "from django.conf import settings; print(settings.DEBUG)",
                     DJANGO_SECRET_KEY=key)  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().splitlines()[-1] == "False"  # off unless DJANGO_DEBUG says


def test_production_settings_example_passes_check_deploy() -> None:
    done = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SETTINGS_MODULE="project.settings_production",
        DJANGO_SECRET_KEY="p" * 20 + "Q7#x" * 10 + "z" * 10,
        DJANGO_ALLOWED_HOSTS="workflows.example.com",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_error_pages_never_show_connection_urls() -> None:
    from project.security import ExceptionReporterFilter

    safe = ExceptionReporterFilter().get_safe_settings()
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY"):
        assert set(str(safe[name])) == {"*"}, name


def test_oversized_forms_and_unknown_urls_answer_without_details() -> None:
    client = Client()
    big = client.post("/admin/login/", {"username": "x" * 3_000_000, "password": "y"})
    assert big.status_code == 400
    assert b"DATABASE" not in big.content and b"Traceback" not in big.content
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404
    assert b"URLconf" not in missing.content and b"api/" not in missing.content


def test_schema_and_docs_are_for_signed_in_users_and_load_nothing_from_elsewhere(
    users: dict[str, Any],
) -> None:
    anonymous = Client()
    schema = anonymous.get("/api/schema/")
    assert schema.status_code == 401 and schema["WWW-Authenticate"] == "Token"
    assert b"api_echo" not in schema.content
    for page in ("/api/docs/", "/api/redoc/"):
        refused = anonymous.get(page)
        assert refused.status_code == 302 and refused["Location"].startswith("/api-auth/login/")

    viewer = Client()
    viewer.force_login(users["viewer"])
    assert b"api_echo" in viewer.get("/api/schema/").content
    for page in ("/api/docs/", "/api/redoc/"):
        html = viewer.get(page).content.decode()
        assert "http://" not in html and "https://" not in html, page


def test_api_root_answers_anonymous_clients_401(users: dict[str, Any]) -> None:
    root = Client().get("/api/")
    assert root.status_code == 401 and root["WWW-Authenticate"] == "Token"
    viewer = Client()
    viewer.force_login(users["viewer"])
    assert (
        viewer.get("/api/", HTTP_ACCEPT="application/json")
        .json()["workflows"]
        .endswith("/api/workflows/")
    )


def test_a_run_page_stays_small_with_a_large_input(users: dict[str, Any]) -> None:
    from tests.api_fixtures import start

    run = start("api_echo", "big-1", {"blob": "x" * 900_000})
    admin = Client()
    admin.force_login(users["admin"])
    page = admin.get(f"/admin/beluga_workflows/workflowrun/{run.pk}/change/")
    assert page.status_code == 200
    # The value appears four times in the history (input, started, completed, result).
    assert len(page.content) < 200_000
    assert "characters in all" in page.content.decode()
