"""`scripts/test.sh`, the pytest part of `make test`: which passes run, and when it fails.

The script's own logic is tested with a stand-in for Python (it answers the services probe and
plays pytest with a chosen exit status), so no pass really runs here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT

FAKE_PYTHON = """#!/bin/bash
if [ "$1" = "-" ]; then cat >/dev/null; exit 1; fi   # the services probe: unreachable
echo "pytest $*"; exit ${FAKE_PYTEST_STATUS:-0}
"""


def run_script(tmp_path: Path, *args: str, status: int = 0, require: str = "") -> tuple[int, str]:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "PY": str(fake),
        "FAKE_PYTEST_STATUS": str(status),
        "BELUGA_TEST_REQUIRE": require,
    }
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "test.sh"), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


@pytest.mark.core
def test_a_pass_that_cannot_run_says_skipped_loudly(tmp_path):
    code, output = run_script(tmp_path)
    assert code == 0
    assert "!!! SKIPPED the services pass" in output
    assert "rabbitmq: SKIPPED" in output


@pytest.mark.core
def test_a_required_pass_that_is_skipped_fails_the_run(tmp_path):
    code, output = run_script(tmp_path, require="embedded services rabbitmq")
    assert code == 1
    assert "services: FAILED (required but skipped" in output


@pytest.mark.core
def test_a_pass_that_collects_nothing_fails_unless_arguments_select(tmp_path):
    code, output = run_script(tmp_path, status=5)
    assert code == 1 and "embedded: FAILED (no test collected)" in output
    code, output = run_script(tmp_path, "-k", "nothing-matches", status=5)
    assert "no test collected by the selection" in output
    assert code == 1  # still: no pass ran a test at all


@pytest.mark.core
def test_a_failing_pass_fails_the_run(tmp_path):
    code, output = run_script(tmp_path, status=1)
    assert code == 1 and "embedded: FAILED (pytest exit 1)" in output
