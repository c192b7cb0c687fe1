"""Workflows of the determinism tests: one mistake each, and one that does everything right.

Public names start with `det_`. Each mistake is a function of its own, so the error names
where the workflow made it (`MISTAKES[kind]`, on the line after its `def`). The workflows take
a step first: the guard must be back in force after the run was parked.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import threading
import time
from typing import Any

from django.contrib.auth.models import User

from beluga_workflows import workflow
from tests import harness

logger = logging.getLogger(__name__)


def read_clock() -> Any:
    return time.time()


def read_datetime() -> Any:
    return datetime.datetime.now().isoformat()


def draw_random() -> Any:
    return random.random()


def open_file() -> Any:
    with open(os.devnull) as file:
        return file.read()


def start_thread() -> Any:
    threading.Thread(target=lambda: None).start()


def query_orm() -> Any:
    return User.objects.count()


#: kind -> the mistake, and the call its error names.
MISTAKES = {
    "clock": (read_clock, "time.time()"),
    "datetime": (read_datetime, "datetime.datetime.now()"),
    "random": (draw_random, "random.random()"),
    "open": (open_file, "open()"),
    "thread": (start_thread, "threading.Thread.start()"),
    "orm": (query_orm, "a database query (the Django ORM)"),
}


def echo(ctx: workflow.ActivityContext, value: Any) -> Any:
    return value


def free(ctx: workflow.ActivityContext, _: Any) -> dict[str, Any]:
    """Activities may do everything workflow code may not."""
    harness.record_run("det_free")
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    with open(os.devnull) as file:
        file.read()
    return {
        "clock": time.time() > 0,
        "now": datetime.datetime.now().year > 2000,
        "random": 0 <= random.random() < 1,
        "users": User.objects.count(),
    }


@workflow.defn(name="det_mistake")
def mistake(ctx: workflow.WorkflowContext, kind: str) -> Any:
    ctx.execute_activity(echo, kind)
    fn, _ = MISTAKES[kind]
    return fn()


@workflow.defn(name="det_lazy")
def lazy(ctx: workflow.WorkflowContext, _: Any) -> Any:
    """A module first imported by workflow code as it runs makes the same mistake."""
    ctx.execute_activity(echo, "lazy")
    from tests import workflows_determinism_lazy

    return workflows_determinism_lazy.read_clock()


@workflow.defn(name="det_caught")
def caught(ctx: workflow.WorkflowContext, _: Any) -> Any:
    """Catching the error does not save the run: it fails at its next step."""
    try:
        read_clock()
    except Exception:
        pass
    return ctx.execute_activity(echo, "after")


@workflow.defn(name="det_deterministic")
def deterministic(ctx: workflow.WorkflowContext, _: Any) -> dict[str, Any]:
    """ctx's clock and randomness, logging, and an activity that uses the real ones."""
    first = ctx.now()
    logger.info("deterministic run %s at %s", ctx.workflow_id, first)
    freely = ctx.execute_activity(free, None)
    return {
        "now": ctx.now() >= first,
        "random": 0 <= ctx.random() < 1,
        "uuid": len(str(ctx.uuid4())),
        "activity": freely,
    }
