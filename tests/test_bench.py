"""The benchmark scripts keep working: `make bench` at a smoke size, against real processes.

The figures of a smoke run mean nothing and nothing here asserts on speed; what is checked is
that every comparison ran and produced its table (ours, DBOS, raw Celery, Temporal, parked,
fan-out).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests import harness

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.temporal]


def _bench_env() -> dict[str, str]:
    from django.db import connection

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": harness.database_url(connection.settings_dict),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PYTHONPATH": str(harness.REPO_ROOT),
    }


def test_make_bench_runs_every_comparison_at_a_smoke_size(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-chart", "--out", str(out)],
        cwd=harness.REPO_ROOT,
        env=_bench_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    text = out.read_text()
    for heading in (
        "## Ours against DBOS and raw Celery",
        "## Our Temporal executor beside plain Temporal SDK code",
        "### What starting and signalling cost the caller",
        "## Runs parked on a signal",
        "## Fan-out",
    ):
        assert heading in text
    versus: list[Any] = [line for line in text.splitlines() if line.startswith("| W3")]
    assert len(versus) == 1 and versus[0].count("|") == 7  # ours ×2, DBOS, raw Celery, ratio
    assert "temporal-sdk" in text and "resuming one of 60 parked runs" in text
    # The fan-out ran both systems at both smoke sizes, to the end.
    fanout = text.split("## Fan-out", 1)[1]
    for size in (5, 10):
        row = next(line for line in fanout.splitlines() if line.startswith(f"| {size} |"))
        assert "stuck" not in row and "failed" not in row and "–" not in row.split("|")[2]
    assert "ours: per-activity growth 5 → 10" in fanout
    assert "DBOS: per-activity growth 5 → 10" in fanout
