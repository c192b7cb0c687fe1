"""Workflows for tests/test_hold.py, whose code is partly "deployed" by the test.

`beluga_hold_deployed` is a module the test writes into a directory on the worker's
PYTHONPATH: first a version with a bug, then the fix, between two worker starts. A real code
change, as a deploy (or a rollback) makes one. The test process never runs workflow code, so
it does without the module.
"""

from __future__ import annotations

import importlib
import time
from datetime import timedelta
from typing import Any

from beluga_workflows import workflow

try:
    deployed: Any = importlib.import_module("beluga_hold_deployed")
except ImportError:  # the test process
    deployed = None


def double(ctx: workflow.ActivityContext, n: int) -> int:
    return n * 2


def triple(ctx: workflow.ActivityContext, n: int) -> int:
    return n * 3


@workflow.defn(name="hold_drift")
def drift_flow(ctx: workflow.WorkflowContext, n: int) -> int:
    """Which activity comes first is deployed code: changing it under a running run is drift."""
    first = {"double": double, "triple": triple}[deployed.FIRST_STEP]
    result = ctx.execute_activity(first, n, workflow.with_activity_timeout(timedelta(seconds=30)))
    ctx.wait_for_signal("go")
    return result  # type: ignore[no-any-return]


@workflow.defn(name="hold_deploy", on_error="hold")
def deploy_flow(ctx: workflow.WorkflowContext, n: int) -> str:
    """Held on a bug whatever ON_WORKFLOW_ERROR says."""
    doubled = ctx.execute_activity(double, n, workflow.with_activity_timeout(timedelta(seconds=30)))
    return deployed.total(doubled)  # type: ignore[no-any-return]


@workflow.defn(name="hold_default")
def default_flow(ctx: workflow.WorkflowContext, n: int) -> str:
    """Follows ON_WORKFLOW_ERROR."""
    return deployed.total(n)  # type: ignore[no-any-return]


@workflow.defn(name="hold_fail", on_error="fail")
def fail_flow(ctx: workflow.WorkflowContext, n: int) -> str:
    """Fails on a bug whatever ON_WORKFLOW_ERROR says."""
    return deployed.total(n)  # type: ignore[no-any-return]


@workflow.defn(name="hold_deliberate", on_error="hold")
def deliberate_flow(ctx: workflow.WorkflowContext, n: int) -> str:
    """A failure on purpose fails the run even under hold."""
    raise workflow.ApplicationError("PaymentDeclined", f"card declined for {n}")


@workflow.defn(name="hold_clock", on_error="hold")
def clock_flow(ctx: workflow.WorkflowContext, n: int) -> float:
    """Reads the wall clock: a determinism violation, a bug like any other."""
    return time.time() + n
