"""The chaos test, small: 40 runs through five kill -9s, a PostgreSQL and a Redis restart and
terminated connections (`make chaos` runs 300; `tests/chaos.py` says what it breaks and checks).

It runs as a subprocess with services of its own under `tmp_path`, so restarting them never
disturbs the database and broker this test session uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import harness

pytestmark = pytest.mark.slow

RUNS = 40


def test_every_run_survives_kills_restarts_and_dropped_connections(tmp_path: Path) -> None:
    # The program configures itself; none of this session's services may leak into it.
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    command = [sys.executable, "-m", "tests.chaos", "--runs", str(RUNS), "--kills", "5"]
    command += ["--data-dir", str(tmp_path / "chaos"), "--json"]
    done = subprocess.run(
        command, cwd=harness.REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    *report, last = done.stdout.splitlines() or [""]
    output = f"{done.stdout}\n--- stderr ---\n{done.stderr[-6000:]}"
    assert last.startswith("{"), f"no figures (exit {done.returncode}):\n{output}"
    figures = json.loads(last)

    assert figures["violations"] == [], "\n".join(report)
    assert done.returncode == 0, output
    assert figures["runs"] == figures["runs_correct"] == RUNS
    faults = figures["faults"]
    assert faults["kill"] >= 5
    assert faults["postgres_restart"] == faults["redis_restart"] == 1
    assert faults["terminate_connections"] == 1
    assert figures["activity_executions"] >= figures["activity_attempts"] > RUNS
    assert figures["re_executions_explained"] == figures["re_executions"]
