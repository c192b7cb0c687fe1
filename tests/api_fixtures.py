"""Fixtures and workflows shared by the REST API, admin and CLI tests.

Import the fixtures into a test module with
`from tests.api_fixtures import api_fixture, users_fixture  # noqa: F401`; they are named `api`
and `users` there. Users hold exactly the permissions a test is about
(`make_user("alice", "view", "signal")`).

`drive(workflow_id)` takes a run's pending workflow step *in this process*, with the engine's own
`steps.advance` — the same call a worker makes — so tests of the web layer can bring a run to
"waiting for approval" or "completed" inside pytest-django's test transaction, without a worker.
That works for workflows that only wait for signals (the ones below). Tests that need activities
run the tutorial `research` workflow against a real `runworker` (the `worker` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from beluga_workflows import workflow
from beluga_workflows.models import WorkflowRun
from beluga_workflows.permissions import Operation

PASSWORD = "correct horse battery staple"


@workflow.defn(name="api_approval")
def needs_approval(ctx: workflow.WorkflowContext, request: Any) -> Any:
    """Waits for `approval` (no activity), then answers like the tutorial."""
    signal = ctx.wait_for_signal("approval")
    return {"request": request, "approved": signal.payload is True}


@workflow.defn(name="api_expense", approval_signal="manager_decision")
def expense(ctx: workflow.WorkflowContext, request: Any) -> Any:
    """Names its own approval signal: a `details` signal first, then the manager's decision."""
    ctx.wait_for_signal("details")
    decision = ctx.wait_for_signal("manager_decision")
    return {"request": request, "approved": decision.payload is True}


@workflow.defn(name="api_echo")
def echo(ctx: workflow.WorkflowContext, value: Any) -> Any:
    ctx.set_query_handler("double", lambda: [value, value])
    return value


@workflow.defn(name="api_fail")
def fails(ctx: workflow.WorkflowContext, order: Any) -> Any:
    raise ValueError("amount must be positive")


@workflow.defn(name="api_parent")
def parent(ctx: workflow.WorkflowContext, request: Any) -> Any:
    """Starts an `api_approval` child per item and returns their results."""
    children = [
        ctx.start_child_workflow(needs_approval, workflow.WorkflowOptions(id=f"{cid}", input=cid))
        for cid in request["children"]
    ]
    return ctx.gather(*children)


@workflow.defn(name="api_ticker")
def ticker(ctx: workflow.WorkflowContext, count: int) -> Any:
    """One `tick` per run; continues as new until `count` reaches 3."""
    ctx.wait_for_signal("tick")
    if count < 3:
        ctx.continue_as_new(count + 1)
    return count


def make_user(username: str, *operations: str, staff: bool = True) -> Any:
    """A user holding the permissions of the named operations (view, start, signal, cancel)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username, password=PASSWORD, is_staff=staff)
    codenames = [Operation(op).codename for op in operations]
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="beluga_workflows", codename__in=codenames
        )
    )
    return user


def drive(workflow_id: str) -> WorkflowRun:
    """Take the run's pending workflow step in-process, as a worker would; return the run."""
    from beluga_workflows.engine import steps

    run = WorkflowRun.objects.filter(workflow_id=workflow_id).order_by("-created_at").first()
    assert run is not None, f"no run {workflow_id!r}"
    steps.advance(run.pk)
    run.refresh_from_db()
    return run


def start(name: str, workflow_id: str, input: Any = None) -> WorkflowRun:
    """Start a run through the executor and take its first step in-process."""
    workflow.get_executor().start(name, workflow.WorkflowOptions(id=workflow_id, input=input))
    return drive(workflow_id)


def event_types(run: WorkflowRun) -> list[str]:
    return list(run.events.order_by("sequence").values_list("type", flat=True))


def signals(run: WorkflowRun) -> list[dict[str, Any]]:
    return [
        {"name": e.name, **e.data}
        for e in run.events.filter(type="SignalReceived").order_by("sequence")
    ]


@pytest.fixture(name="users")
def users_fixture(db: None, settings: Any) -> dict[str, Any]:
    """viewer (view), starter (view, start), reviewer (view, signal), operator (view, cancel),
    nobody (no permission), admin (superuser)."""
    from django.contrib.auth import get_user_model

    # The default hasher is slow on purpose; these passwords protect nothing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    admin = get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
    return {
        "viewer": make_user("viewer", "view"),
        "starter": make_user("starter", "view", "start"),
        "reviewer": make_user("reviewer", "view", "signal"),
        "operator": make_user("operator", "view", "cancel"),
        "nobody": make_user("nobody"),
        "admin": admin,
    }


@pytest.fixture(name="api")
def api_fixture(users: dict[str, Any]) -> Any:
    """`api("reviewer")` → an APIClient authenticated with that user's token; `api(None)` is
    anonymous."""
    from rest_framework.authtoken.models import Token

    def client(username: str | None) -> APIClient:
        c = APIClient()
        if username is not None:
            token, _ = Token.objects.get_or_create(user=users[username])
            c.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return c

    return client
