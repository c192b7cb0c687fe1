"""`manage.py check` validates every BELUGA_WORKFLOWS key, on both executors.

Each bad value is reported with its own id and a message naming the key; good values, the
documented special ones (0, None) included, raise nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.db import connections
from django.test import override_settings

from beluga_workflows.conf import DEFAULTS

pytestmark = pytest.mark.core

EXECUTORS = ["default", "temporal"]

#: For every key: a bad value, the id reporting it, and what its message must say.
BAD: list[tuple[str, Any, str, str]] = [
    ("EXECUTOR", "nope", "E002", "BELUGA_WORKFLOWS['EXECUTOR'] is 'nope'"),
    ("EXECUTOR", ["default"], "E002", "not a registered executor"),
    ("TEMPORAL", "localhost:7233", "E005", "BELUGA_WORKFLOWS['TEMPORAL'] must be a dict"),
    ("TEMPORAL", {"HOST": ""}, "E005", "['TEMPORAL']['HOST'] must be a non-empty string"),
    ("TEMPORAL", {"NAMESPACE": 7}, "E005", "['TEMPORAL']['NAMESPACE'] must be a non-empty"),
    ("TEMPORAL", {"TASK_QUEUE": None}, "E005", "['TEMPORAL']['TASK_QUEUE'] must be a non-empty"),
    ("TEMPORAL", {"TLS": "yes"}, "E005", "['TEMPORAL']['TLS'] must be True, False or a"),
    ("TEMPORAL", {"API_KEY": 12345}, "E005", "['TEMPORAL']['API_KEY'] must be a string or None"),
    ("TEMPORAL", {"PORT": 7233}, "E005", "Unknown BELUGA_WORKFLOWS['TEMPORAL'] keys: PORT"),
    ("WORKFLOW_QUEUE", "", "E008", "BELUGA_WORKFLOWS['WORKFLOW_QUEUE'] must be a non-empty"),
    ("ACTIVITY_QUEUE", 3, "E008", "BELUGA_WORKFLOWS['ACTIVITY_QUEUE'] must be a non-empty"),
    ("POLL_INTERVAL", 0, "E003", "['POLL_INTERVAL'] must be a positive number of seconds"),
    ("POLL_INTERVAL", "1", "E003", "['POLL_INTERVAL'] must be a positive number of seconds"),
    ("REDISPATCH_AFTER", -5, "E003", "['REDISPATCH_AFTER'] must be a positive number"),
    ("REDISPATCH_AFTER", float("inf"), "E003", "['REDISPATCH_AFTER'] must be at most 100 years"),
    ("CACHE_SIZE", -1, "E004", "BELUGA_WORKFLOWS['CACHE_SIZE'] must be a whole number >= 0"),
    ("CACHE_SIZE", 2.5, "E004", "BELUGA_WORKFLOWS['CACHE_SIZE'] must be a whole number >= 0"),
    ("WORKFLOW_TASK_TIMEOUT", None, "E003", "['WORKFLOW_TASK_TIMEOUT'] must be a positive"),
    ("WORKFLOW_TASK_TIMEOUT", True, "E003", "['WORKFLOW_TASK_TIMEOUT'] must be a positive"),
    ("DEFAULT_TIMEOUT", 0, "E003", "['DEFAULT_TIMEOUT'] must be a positive number of seconds"),
    ("DEFAULT_TIMEOUT", "10m", "E003", "['DEFAULT_TIMEOUT'] must be a positive number"),
    ("DEFAULT_TIMEOUT", 10**10, "E003", "['DEFAULT_TIMEOUT'] must be at most 100 years"),
    ("EAGER_BUDGET", -1, "E003", "['EAGER_BUDGET'] must be a number of seconds >= 0"),
    ("EAGER_BUDGET", None, "E003", "['EAGER_BUDGET'] must be a number of seconds >= 0"),
    ("WORKER_CONN_MAX_AGE", -1, "E003", "['WORKER_CONN_MAX_AGE'] must be a number of seconds"),
    ("MAX_PAYLOAD_BYTES", "1MB", "E007", "['MAX_PAYLOAD_BYTES'] must be a positive whole"),
    ("MAX_PAYLOAD_BYTES", 0, "E007", "['MAX_PAYLOAD_BYTES'] must be a positive whole"),
    ("MAX_PENDING_STEPS", 0, "E007", "['MAX_PENDING_STEPS'] must be a positive whole number of"),
    ("MAX_HISTORY_EVENTS", "100k", "E007", "['MAX_HISTORY_EVENTS'] must be a positive whole"),
    ("MAX_HISTORY_BYTES", -1, "E007", "['MAX_HISTORY_BYTES'] must be a positive whole"),
    ("RETENTION", "30d", "E010", "BELUGA_WORKFLOWS['RETENTION'] must be a positive timedelta"),
    (
        "HEARTBEAT_INTERVAL",
        0,
        "E003",
        "['HEARTBEAT_INTERVAL'] must be a positive number of seconds",
    ),
    ("HOOKS", "myproject.hooks.X", "E011", "BELUGA_WORKFLOWS['HOOKS'] must be a list"),
    ("HOOKS", ["tests.nowhere.Hook"], "E011", "could not be loaded"),
    ("ON_WORKFLOW_ERROR", "retry", "E012", "['ON_WORKFLOW_ERROR'] is 'retry', not 'fail' or"),
]

#: Values that look odd but are documented as valid.
GOOD: list[tuple[str, Any]] = [
    ("EXECUTOR", "temporal"),
    ("TEMPORAL", {"HOST": "temporal.internal:7233", "TLS": True, "API_KEY": "secret"}),
    ("TEMPORAL", {"API_KEY": None, "TLS": False}),
    ("CACHE_SIZE", 0),
    ("EAGER_BUDGET", 0),
    ("WORKER_CONN_MAX_AGE", None),
    ("WORKER_CONN_MAX_AGE", 0),
    ("DEFAULT_TIMEOUT", None),
    ("DEFAULT_TIMEOUT", 7 * 24 * 3600),
    ("DEFAULT_TIMEOUT", 0.5),
    ("MAX_PAYLOAD_BYTES", None),
    ("MAX_PENDING_STEPS", None),
    ("MAX_HISTORY_BYTES", None),
    ("POLL_INTERVAL", 0.05),
]


def beluga_messages(**overrides: Any) -> list[Any]:
    with override_settings(BELUGA_WORKFLOWS={**settings.BELUGA_WORKFLOWS, **overrides}):
        return [m for m in run_checks() if m.id.startswith("beluga_workflows.")]


def test_every_setting_has_a_check() -> None:
    assert {key for key, *_ in BAD} == set(DEFAULTS)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_the_demo_settings_pass(executor: str) -> None:
    assert beluga_messages(EXECUTOR=executor) == []


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("key, value, check_id, says", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_a_bad_value_is_reported_naming_its_key(
    executor: str, key: str, value: Any, check_id: str, says: str
) -> None:
    overrides = {"EXECUTOR": executor, key: value}
    messages = beluga_messages(**overrides)
    reported = [m for m in messages if m.id == f"beluga_workflows.{check_id}"]
    assert reported, f"{check_id} not reported for {key}={value!r}: {messages}"
    assert any(says in m.msg for m in reported), [m.msg for m in reported]
    assert all(m.hint for m in reported)
    # Nothing else is blamed: one bad key, one message (EXECUTOR is the key under test there).
    assert len(messages) == len(reported) == 1


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("key, value", GOOD, ids=[f"{g[0]}={g[1]!r}" for g in GOOD])
def test_a_documented_value_passes(executor: str, key: str, value: Any) -> None:
    overrides = {"EXECUTOR": executor, key: value} if key != "EXECUTOR" else {key: value}
    assert beluga_messages(**overrides) == []


def test_unknown_keys_are_reported_with_the_known_ones() -> None:
    [message] = beluga_messages(POLL_INTERVALL=1, DEFAULT_TIMEOUTS=60)
    assert message.id == "beluga_workflows.E001"
    assert message.msg == "Unknown BELUGA_WORKFLOWS keys: DEFAULT_TIMEOUTS, POLL_INTERVALL."
    assert message.hint == f"Known keys: {', '.join(sorted(DEFAULTS))}."
    assert "DEFAULT_TIMEOUT" in message.hint and "WORKER_CONN_MAX_AGE" in message.hint


def test_unknown_temporal_keys_are_reported_with_the_known_ones() -> None:
    [message] = beluga_messages(TEMPORAL={"HOST": "h:7233", "NAMESPCE": "orders"})
    assert message.id == "beluga_workflows.E005"
    assert "NAMESPCE" in message.msg
    from beluga_workflows.checks import TEMPORAL_KEYS

    assert message.hint == f"Known keys: {', '.join(TEMPORAL_KEYS)}."
    assert message.hint.startswith("Known keys: HOST, NAMESPACE, TASK_QUEUE, TLS, API_KEY, ")


def test_several_bad_values_are_all_reported() -> None:
    messages = beluga_messages(POLL_INTERVAL=-1, CACHE_SIZE="many", DEFAULT_TIMEOUT=-60)
    assert sorted(m.id for m in messages) == [
        "beluga_workflows.E003",
        "beluga_workflows.E003",
        "beluga_workflows.E004",
    ]


def test_settings_that_are_not_a_dict_are_reported_alone() -> None:
    with override_settings(BELUGA_WORKFLOWS=[("EXECUTOR", "default")]):
        messages = [m for m in run_checks() if m.id.startswith("beluga_workflows.")]
    assert [m.id for m in messages] == ["beluga_workflows.E001"]
    assert messages[0].msg == "BELUGA_WORKFLOWS must be a dict, not list."


def test_the_api_key_is_not_printed() -> None:
    [message] = beluga_messages(TEMPORAL={"API_KEY": b"s3cr3t-key"})
    assert "s3cr3t" not in message.msg and "bytes" in message.msg


@pytest.mark.parametrize("executor, reported", [("default", True), ("temporal", False)])
def test_postgresql_is_required_by_the_built_in_engine_only(
    executor: str, reported: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connections["default"], "vendor", "sqlite")
    ids = [m.id for m in beluga_messages(EXECUTOR=executor)]
    assert ids == (["beluga_workflows.E006"] if reported else [])
