"""Hostile and odd input gets a 4xx naming what was wrong — never a 500 — and stores nothing.

Each case here made the API answer 500 (or store a run no URL could reach) before it was
guarded: NUL characters and lone surrogates PostgreSQL cannot store, timeouts that overflow a
date, JSON nested deeper than the parser goes, ids that cannot be in a URL, huge payloads.
"""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from beluga_workflows import workflow
from beluga_workflows.models import WorkflowEvent, WorkflowRun
from tests.api_fixtures import api_fixture, start, users_fixture  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.core]

API = "/api/workflows/"


def post_raw(client, path: str, body: str):  # type: ignore[no-untyped-def]
    return client.generic("POST", path, body.encode(), content_type="application/json")


@pytest.mark.parametrize(
    "body, field",
    [
        ('{"workflow": "api_echo", "input": "a\\u0000b"}', "input"),
        ('{"workflow": "api_echo", "input": {"k\\u0000": 1}}', "input"),
        ('{"workflow": "api_echo", "input": "\\ud800"}', "input"),
        ('{"workflow": "api_echo", "input": {"\\udc00": 1}}', "input"),
        ('{"workflow": "api_echo", "timeout": 1e12}', "timeout"),
        ('{"workflow": "api_echo", "timeout": 1e308}', "timeout"),
        ('{"workflow": "api_echo", "timeout": true}', "timeout"),
        ('{"workflow": "api_echo", "id": "a/b"}', "id"),
        ('{"workflow": "api_echo", "id": "a\\u0000b"}', "id"),
    ],
    ids=[
        "nul-in-input",
        "nul-in-key",
        "surrogate-in-input",
        "surrogate-in-key",
        "timeout-1e12",
        "timeout-1e308",
        "timeout-bool",
        "id-slash",
        "id-nul",
    ],
)
def test_start_refuses_what_cannot_be_stored_or_addressed(api, body: str, field: str) -> None:
    response = post_raw(api("starter"), API, body)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not WorkflowRun.objects.exists() and not WorkflowEvent.objects.exists()


def test_deeply_nested_json_is_a_400(api) -> None:
    deep = "[" * 950 + "]" * 950
    response = post_raw(api("starter"), API, f'{{"workflow": "api_echo", "input": {deep}}}')
    assert response.status_code == 400
    fine_but_too_deep = "[" * 150 + "]" * 150
    response = post_raw(
        api("starter"), API, f'{{"workflow": "api_echo", "input": {fine_but_too_deep}}}'
    )
    assert response.status_code == 400 and "nested deeper" in response.json()["input"][0]
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize(
    "payload", ['"a\\u0000b"', '"\\ud800"', '{"x": "\\u0000"}'], ids=["nul", "surrogate", "key"]
)
def test_signal_refuses_unstorable_payloads(api, payload: str) -> None:
    start("api_approval", "wants-approval", {"amount": 1})
    before = WorkflowEvent.objects.count()
    response = post_raw(
        api("reviewer"),
        f"{API}wants-approval/signal/",
        f'{{"name": "approval", "payload": {payload}}}',
    )
    assert response.status_code == 400 and "payload" in response.json()
    assert WorkflowEvent.objects.count() == before


@pytest.mark.parametrize("action", ["", "events/", "query/status/", "signal/", "cancel/"])
def test_an_id_that_cannot_exist_is_a_404(api, action: str) -> None:
    client = api("admin")
    path = f"{API}a%00b/{action}"
    if action in ("signal/", "cancel/"):
        response = client.post(path, {"name": "approval"}, format="json")
    else:
        response = client.get(path)
    assert response.status_code == 404


def test_payloads_over_the_limit_are_413_and_refused_by_the_python_api(api, settings) -> None:
    settings.BELUGA_WORKFLOWS = {**settings.BELUGA_WORKFLOWS, "MAX_PAYLOAD_BYTES": 1000}
    big = "x" * 2000
    response = api("starter").post(API, {"workflow": "api_echo", "input": big}, format="json")
    assert response.status_code == 413 and "MAX_PAYLOAD_BYTES" in response.json()["input"][0]
    with pytest.raises(workflow.InvalidPayloadError, match="1,000"):
        workflow.get_executor().start("api_echo", workflow.WorkflowOptions(input=big))
    start("api_approval", "small", {"amount": 1})
    response = api("reviewer").post(
        f"{API}small/signal/", {"name": "approval", "payload": big}, format="json"
    )
    assert response.status_code == 413
    assert WorkflowRun.objects.count() == 1


def test_the_python_api_and_the_cli_refuse_bad_ids_and_durations() -> None:
    for bad in ("a/b", "a\x00b", "tab\there"):
        with pytest.raises(ValueError):
            workflow.WorkflowOptions(id=bad)
    for bad_timeout in (1e12, float("inf")):
        with pytest.raises(ValueError):
            workflow.WorkflowOptions(timeout=bad_timeout)
    with pytest.raises(CommandError) as refused:
        call_command("workflow", "start", "api_echo", "--id", "a/b", stdout=StringIO())
    assert refused.value.returncode == 2 and "'/'" in str(refused.value)
    assert not WorkflowRun.objects.exists()


def test_good_unicode_still_round_trips(api) -> None:
    value = {"naïve": "日本語 ✓", "emoji": "🙂", "empty": ""}
    response = api("starter").post(
        API, {"workflow": "api_echo", "id": "unicode-ok", "input": value}, format="json"
    )
    assert response.status_code == 201
    assert json.loads(json.dumps(response.json()["input"])) == value


def test_a_body_larger_than_djangos_upload_limit_is_refused_cleanly(api) -> None:
    """Bodies beyond DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) never reach the engine."""
    body = {"workflow": "api_echo", "id": "huge", "input": "x" * 3_000_000}
    response = api("starter").post(API, body, format="json")
    assert 400 <= response.status_code < 500
    assert b"Traceback" not in response.content
    assert not WorkflowRun.objects.filter(workflow_id="huge").exists()
