"""A workflow module whose first import in a worker fails (a deploy caught half-way, a
dependency not there yet), and whose next import succeeds.

The failure happens only where `BELUGA_TEST_FAIL_IMPORT_ONCE` names a flag file that does not
exist yet: the import creates it, then raises.
"""

import os
from pathlib import Path

from beluga_workflows import workflow
from tests import harness

_flag = os.environ.get("BELUGA_TEST_FAIL_IMPORT_ONCE")
if _flag and not Path(_flag).exists():
    Path(_flag).write_text("failed once\n")
    harness.record_run("import-failed")
    raise ImportError("tests.workflows_flaky_import is not ready yet")


def double(ctx: workflow.ActivityContext, value: int) -> int:
    return value * 2


def flaky_import(ctx: workflow.WorkflowContext, value: int) -> int:
    return ctx.execute_activity(double, value)
