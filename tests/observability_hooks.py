"""Hooks of tests/test_observability.py: each records what it saw, in order, with
`harness.record_run("hooks", ...)` (so a worker subprocess and the test share the record).

`Inner` also sets `TENANT` around each activity: the activity reads it, which shows that an
activity hook runs in the attempt's own thread.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable
from typing import Any

from beluga_workflows.hooks import ActivityInfo, Hook, RunClosedInfo, StepInfo, StepResult
from tests import harness

TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")


class _Recording(Hook):
    label = ""

    def step(self, info: StepInfo, call_next: Callable[[], StepResult]) -> StepResult:
        harness.record_run("hooks", f"{self.label} step> {info.workflow_id} {info.executor}")
        result = call_next()
        harness.record_run(
            "hooks", f"{self.label} step< {info.workflow_id} {result.status} [{result.waiting_for}]"
        )
        return result

    def activity(self, info: ActivityInfo, call_next: Callable[[], Any]) -> Any:
        what = f"{info.workflow_id} {info.activity_name} {info.attempt} {info.executor}"
        harness.record_run("hooks", f"{self.label} activity> {what}")
        try:
            result = call_next()
        except Exception as exc:
            harness.record_run("hooks", f"{self.label} activity< {what} raised {exc}")
            raise
        harness.record_run("hooks", f"{self.label} activity< {what} returned")
        return result


class Outer(_Recording):
    label = "outer"

    def on_run_closed(self, info: RunClosedInfo) -> None:
        result = json.dumps(info.result, sort_keys=True)
        harness.record_run(
            "hooks", f"closed {info.workflow_id} {info.workflow_name} {info.status} {result}"
        )


class Inner(_Recording):
    label = "inner"

    def activity(self, info: ActivityInfo, call_next: Callable[[], Any]) -> Any:
        token = TENANT.set("acme")
        try:
            return super().activity(info, call_next)
        finally:
            TENANT.reset(token)


class NotAHook:
    """Has none of the hook methods: `manage.py check` says so."""
