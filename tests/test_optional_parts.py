"""What the extras add, and what happens without them: a clear error, never a crash later.

The built-in executor needs none of them; `temporalio` comes with the `temporal` extra,
drf-spectacular-sidecar with `docs`, dj-database-url and the embedded services with `demo`.
"""

from __future__ import annotations

import sys
import tomllib
from typing import Any

import pytest
from django.core.checks import run_checks

from tests import harness

PYPROJECT = tomllib.loads((harness.REPO_ROOT / "pyproject.toml").read_text())


def requirement_names(requirements: list[str]) -> set[str]:
    return {r.split(">")[0].split("<")[0].split("[")[0].split("=")[0].strip() for r in requirements}


def test_the_built_in_executor_installs_without_the_extras() -> None:
    core = requirement_names(PYPROJECT["project"]["dependencies"])
    assert {"Django", "djangorestframework", "celery", "psycopg"} <= core
    assert not core & {"temporalio", "greenlet", "dj-database-url", "drf-spectacular-sidecar"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"temporalio", "greenlet"} <= requirement_names(extras["temporal"])
    assert "drf-spectacular-sidecar" in requirement_names(extras["docs"])


WITHOUT_TEMPORALIO = """
import sys
sys.modules["temporalio"] = None  # as if `pip install beluga-workflows` had not installed it
import django
django.setup()
from beluga_workflows import workflow
print("default:", workflow.new("default").name)
try:
    workflow.new("temporal")
except workflow.MissingDependencyError as exc:
    print("temporal:", exc)
"""


def test_without_temporalio_the_default_works_and_temporal_says_what_to_install() -> None:
    done = harness.run_python(WITHOUT_TEMPORALIO)
    assert done.returncode == 0, done.stderr
    assert "default: default" in done.stdout
    assert "pip install 'beluga-workflows[temporal]'" in done.stdout


def test_manage_py_check_names_the_missing_extra(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "EXECUTOR": "temporal"}
    assert not [e for e in run_checks() if e.id == "beluga_workflows.E009"]
    monkeypatch.setitem(sys.modules, "temporalio", None)
    (error,) = [e for e in run_checks() if e.id == "beluga_workflows.E009"]
    assert "temporalio" in error.msg and "beluga-workflows[temporal]" in error.hint


@pytest.mark.django_db
def test_docs_pages_without_drf_spectacular_say_what_is_missing(settings: Any) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.create_user("reader"))
    assert client.get("/api/docs/").status_code == 200
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "drf_spectacular"]
    page = client.get("/api/docs/")
    assert page.status_code == 404
    assert b"'drf_spectacular' in INSTALLED_APPS" in page.content
