"""System checks: bad settings are caught by ``manage.py check`` with an id and a hint.

Every ``BELUGA_WORKFLOWS`` key is checked whichever executor is chosen, so switching
``EXECUTOR`` never uncovers a bad value late. Only E006 depends on the executor: the built-in
engine needs PostgreSQL.

=====  ==========================================================================
E001   ``BELUGA_WORKFLOWS`` is not a dict, or has keys we do not know
E002   ``EXECUTOR`` is not a registered executor
E003   a setting in seconds is not a number, is out of range, or is not finite
E004   ``CACHE_SIZE`` is not a whole number >= 0
E005   ``TEMPORAL`` is not a dict, lacks a string ``HOST``/``NAMESPACE``/``TASK_QUEUE``,
       has a bad ``TLS``, ``API_KEY``, ``DATA_CONVERTER`` or ``PAYLOAD_CODEC``, or has keys
       we do not know
E006   the built-in engine on a database other than PostgreSQL
E007   ``MAX_PAYLOAD_BYTES``, ``MAX_PENDING_STEPS``, ``MAX_HISTORY_EVENTS`` or
       ``MAX_HISTORY_BYTES`` is not a positive whole number or None
E008   ``WORKFLOW_QUEUE`` or ``ACTIVITY_QUEUE`` is not a non-empty string
E009   the Temporal executor without the packages it needs (the ``temporal`` extra)
E010   ``RETENTION`` is not a positive timedelta, a positive number of seconds, or None
E011   ``HOOKS`` is not a list, or an entry cannot be imported or made, or is no hook
E012   ``ON_WORKFLOW_ERROR`` is not ``"fail"`` or ``"hold"``
=====  ==========================================================================
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.core.checks import Error, register
from django.db import connections

from .conf import DEFAULTS, beluga_settings
from .options import MAX_DURATION

#: Settings in seconds: key -> (None allowed, 0 allowed, what the special value means).
SECONDS: dict[str, tuple[bool, bool, str]] = {
    "POLL_INTERVAL": (False, False, ""),
    "REDISPATCH_AFTER": (False, False, ""),
    "WORKFLOW_TASK_TIMEOUT": (False, False, ""),
    "EAGER_BUDGET": (False, True, "0 sends every activity through the broker"),
    "WORKER_CONN_MAX_AGE": (True, True, "None leaves CONN_MAX_AGE as the project sets it"),
    "DEFAULT_TIMEOUT": (True, False, "None: runs started without a timeout have none"),
    "HEARTBEAT_INTERVAL": (False, False, "a worker silent for 3 intervals is not live"),
}

#: The ``TEMPORAL`` keys that must be non-empty strings, and every key it may hold.
TEMPORAL_REQUIRED = ("HOST", "NAMESPACE", "TASK_QUEUE")
TEMPORAL_KEYS = (
    *TEMPORAL_REQUIRED,
    "TLS",
    "API_KEY",
    "DATA_CONVERTER",
    "PAYLOAD_CODEC",
    "MIRROR_PAYLOADS",
    "MAX_PENDING_ACTIVITIES",
    "PASSTHROUGH_MODULES",
)
TEMPORAL_EXAMPLE = (
    'For example {"HOST": "localhost:7233", "NAMESPACE": "default", '
    '"TASK_QUEUE": "beluga-workflows"}; optional "TLS" (True or a '
    'temporalio.service.TLSConfig) and "API_KEY" (a string).'
)


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from django.conf import settings

    user = getattr(settings, "BELUGA_WORKFLOWS", None)
    if user is not None and not isinstance(user, dict):
        return [
            Error(
                f"BELUGA_WORKFLOWS must be a dict, not {type(user).__name__}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="beluga_workflows.E001",
            )
        ]
    errors: list[Error] = []
    unknown = sorted(set(user or {}) - set(DEFAULTS), key=str)
    if unknown:
        errors.append(
            Error(
                f"Unknown BELUGA_WORKFLOWS keys: {', '.join(map(str, unknown))}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="beluga_workflows.E001",
            )
        )
    errors += _executor()
    for key, (none_ok, zero_ok, special) in SECONDS.items():
        errors += _seconds(key, getattr(beluga_settings, key), none_ok, zero_ok, special)
    errors += _cache_size()
    errors += _temporal((user or {}).get("TEMPORAL", {}))
    errors += _database()
    errors += _payload_limit()
    errors += _queues()
    errors += _retention()
    errors += _hooks()
    errors += _on_workflow_error()
    return errors


def _on_workflow_error() -> list[Error]:
    value = beluga_settings.ON_WORKFLOW_ERROR
    if value in ("fail", "hold"):
        return []
    return [
        Error(
            f"BELUGA_WORKFLOWS['ON_WORKFLOW_ERROR'] is {value!r}, not 'fail' or 'hold'.",
            hint='"fail" (the default) fails a run whose workflow code raises a bug; "hold" '
            "keeps it running, flagged, until a worker with fixed code replays it "
            "(docs/errors.md).",
            id="beluga_workflows.E012",
        )
    ]


def _executor() -> list[Error]:
    from . import executors

    executor = beluga_settings.EXECUTOR
    known = executors.list_executors()
    if executor == "temporal":
        missing = [name for name in ("temporalio", "greenlet") if not _importable(name)]
        if missing:
            return [
                Error(
                    f"The Temporal executor needs {' and '.join(missing)}, not installed here.",
                    hint="pip install 'beluga-workflows[temporal]'",
                    id="beluga_workflows.E009",
                )
            ]
    if isinstance(executor, str) and executor in known:
        return []
    return [
        Error(
            f"BELUGA_WORKFLOWS['EXECUTOR'] is {executor!r}, not a registered executor.",
            hint=f"Use one of: {', '.join(known)}.",
            id="beluga_workflows.E002",
        )
    ]


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # e.g. sys.modules[module] = None
        return False


def _seconds(key: str, value: Any, none_ok: bool, zero_ok: bool, special: str) -> list[Error]:
    if value is None and none_ok:
        return []
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if number and (value > 0 or (zero_ok and value == 0)):
        if math.isfinite(value) and value <= MAX_DURATION.total_seconds():
            return []
        problem = "at most 100 years (3153600000 seconds)"
    else:
        problem = "a positive number of seconds" if not zero_ok else "a number of seconds >= 0"
        problem += " or None" if none_ok else ""
    hint = f"The default is {DEFAULTS[key]!r}" + (f"; {special}." if special else ".")
    return [
        Error(
            f"BELUGA_WORKFLOWS['{key}'] must be {problem}, not {value!r}.",
            hint=hint,
            id="beluga_workflows.E003",
        )
    ]


def _cache_size() -> list[Error]:
    cache = beluga_settings.CACHE_SIZE
    if not isinstance(cache, bool) and isinstance(cache, int) and cache >= 0:
        return []
    return [
        Error(
            f"BELUGA_WORKFLOWS['CACHE_SIZE'] must be a whole number >= 0, not {cache!r}.",
            hint=f"The default is {DEFAULTS['CACHE_SIZE']}; 0 turns the cache of live "
            "workflows off.",
            id="beluga_workflows.E004",
        )
    ]


def _temporal(given: Any) -> list[Error]:
    """``given`` is the project's own ``TEMPORAL`` dict: what it lacks comes from DEFAULTS."""

    def error(message: str) -> Error:
        return Error(message, hint=TEMPORAL_EXAMPLE, id="beluga_workflows.E005")

    if not isinstance(given, dict):
        return [error(f"BELUGA_WORKFLOWS['TEMPORAL'] must be a dict, not {given!r}.")]
    errors: list[Error] = []
    unknown = sorted(set(given) - set(TEMPORAL_KEYS), key=str)
    if unknown:
        errors.append(
            Error(
                f"Unknown BELUGA_WORKFLOWS['TEMPORAL'] keys: {', '.join(map(str, unknown))}.",
                hint=f"Known keys: {', '.join(TEMPORAL_KEYS)}.",
                id="beluga_workflows.E005",
            )
        )
    temporal = {**DEFAULTS["TEMPORAL"], **given}
    for key in TEMPORAL_REQUIRED:
        value = temporal[key]
        if not isinstance(value, str) or not value.strip():
            errors.append(
                error(
                    f"BELUGA_WORKFLOWS['TEMPORAL']['{key}'] must be a non-empty string, "
                    f"not {value!r}."
                )
            )
    passthrough = temporal.get("PASSTHROUGH_MODULES")
    if not isinstance(passthrough, list | tuple) or not all(
        isinstance(name, str) and name for name in passthrough
    ):
        errors.append(
            error(
                "BELUGA_WORKFLOWS['TEMPORAL']['PASSTHROUGH_MODULES'] must be a list of module "
                f"names, not {passthrough!r}."
            )
        )
    tls = temporal.get("TLS", False)
    if not isinstance(tls, bool):
        from temporalio.service import TLSConfig

        if not isinstance(tls, TLSConfig):
            errors.append(
                error(
                    "BELUGA_WORKFLOWS['TEMPORAL']['TLS'] must be True, False or a "
                    f"temporalio.service.TLSConfig, not {tls!r}."
                )
            )
    api_key = temporal.get("API_KEY")
    if api_key is not None and not isinstance(api_key, str):
        errors.append(
            # The value is a secret: name its type only.
            error(
                "BELUGA_WORKFLOWS['TEMPORAL']['API_KEY'] must be a string or None, "
                f"not {type(api_key).__name__}."
            )
        )
    if not isinstance(temporal.get("MIRROR_PAYLOADS", True), bool):
        errors.append(
            error(
                "BELUGA_WORKFLOWS['TEMPORAL']['MIRROR_PAYLOADS'] must be True or False, not "
                f"{temporal['MIRROR_PAYLOADS']!r}."
            )
        )
    pending = temporal.get("MAX_PENDING_ACTIVITIES")
    if isinstance(pending, bool) or not isinstance(pending, int) or pending < 1:
        errors.append(
            error(
                "BELUGA_WORKFLOWS['TEMPORAL']['MAX_PENDING_ACTIVITIES'] must be a positive whole "
                f"number (the cluster's limit.numPendingActivities.error), not {pending!r}."
            )
        )
    return errors + _data_converter(temporal)


def _data_converter(temporal: dict[str, Any]) -> list[Error]:
    """``DATA_CONVERTER`` / ``PAYLOAD_CODEC`` import and are what they should be: a typo must
    fail ``check``, not the first run (or, worse, a worker decoding nothing)."""
    if temporal.get("DATA_CONVERTER") is None and temporal.get("PAYLOAD_CODEC") is None:
        return []
    if not _importable("temporalio"):
        return []  # E009 says so
    from .executors.temporal.payloads import data_converter

    try:
        data_converter(temporal.get("DATA_CONVERTER"), temporal.get("PAYLOAD_CODEC"))
    except Exception as exc:
        return [
            Error(
                f"{exc}" if isinstance(exc, TypeError | ImportError) else f"{exc!r}",
                hint="DATA_CONVERTER is a temporalio.converter.DataConverter and PAYLOAD_CODEC a "
                "temporalio.converter.PayloadCodec (e.g. an encryption codec), each an object or "
                'a dotted path to one, e.g. "myproject.temporal.codec".',
                id="beluga_workflows.E005",
            )
        ]
    return []


def _database() -> list[Error]:
    """The built-in engine locks rows and attempts in ways only PostgreSQL offers; the
    Temporal executor keeps only its mirror in the database."""
    vendor = connections["default"].vendor
    if beluga_settings.EXECUTOR != "default" or vendor == "postgresql":
        return []
    return [
        Error(
            "The built-in workflow engine needs PostgreSQL (row locks with SKIP LOCKED and "
            f"advisory locks); the default database is {vendor}.",
            hint="Point DATABASES['default'] at PostgreSQL, or use the Temporal executor.",
            id="beluga_workflows.E006",
        )
    ]


#: Settings that are a positive whole number or None, and what they count.
LIMITS = {
    "MAX_PAYLOAD_BYTES": "bytes",
    "MAX_PENDING_STEPS": "steps",
    "MAX_HISTORY_EVENTS": "events",
    "MAX_HISTORY_BYTES": "bytes",
}


def _payload_limit() -> list[Error]:
    errors = []
    for key, unit in LIMITS.items():
        limit = getattr(beluga_settings, key)
        if limit is None or (not isinstance(limit, bool) and isinstance(limit, int) and limit >= 1):
            continue
        errors.append(
            Error(
                f"BELUGA_WORKFLOWS['{key}'] must be a positive whole number of {unit} or None, "
                f"not {limit!r}.",
                hint=f"The default is {DEFAULTS[key]:,}; None: no limit.",
                id="beluga_workflows.E007",
            )
        )
    return errors


def _queues() -> list[Error]:
    errors: list[Error] = []
    for key in ("WORKFLOW_QUEUE", "ACTIVITY_QUEUE"):
        value = getattr(beluga_settings, key)
        if not isinstance(value, str) or not value.strip():
            errors.append(
                Error(
                    f"BELUGA_WORKFLOWS['{key}'] must be a non-empty Celery queue name, "
                    f"not {value!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="beluga_workflows.E008",
                )
            )
    return errors


def _retention() -> list[Error]:
    value = beluga_settings.RETENTION
    if value is None:
        return []
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif not isinstance(value, bool) and isinstance(value, int | float):
        seconds = float(value)
    else:
        seconds = math.nan
    if 0 < seconds <= MAX_DURATION.total_seconds():
        return []
    return [
        Error(
            "BELUGA_WORKFLOWS['RETENTION'] must be a positive timedelta, a positive number of "
            f"seconds (at most 100 years) or None, not {value!r}.",
            hint="For example timedelta(days=30): closed runs older than that are deleted by "
            "runworker, a batch at a time. None (the default) keeps every run.",
            id="beluga_workflows.E010",
        )
    ]


def _hooks() -> list[Error]:
    """Each entry imports (a dotted path), can be made (a class, without arguments) and
    implements at least one hook method: a typo fails ``check``, not the first step."""
    from .hooks import METHODS, implements, load

    entries = beluga_settings.HOOKS
    hint = (
        'A list of dotted paths, e.g. ["myproject.hooks.Timing"], to classes or objects with '
        f"any of the methods {', '.join(METHODS)} (see beluga_workflows.hooks)."
    )
    if not isinstance(entries, list | tuple):
        return [
            Error(
                f"BELUGA_WORKFLOWS['HOOKS'] must be a list, not {entries!r}.",
                hint=hint,
                id="beluga_workflows.E011",
            )
        ]
    errors: list[Error] = []
    for index, entry in enumerate(entries):
        where = f"BELUGA_WORKFLOWS['HOOKS'][{index}] ({entry!r})"
        try:
            hook = load(entry)
        except Exception as exc:
            errors.append(
                Error(
                    f"{where} could not be loaded: {type(exc).__name__}: {exc}",
                    hint=hint,
                    id="beluga_workflows.E011",
                )
            )
            continue
        if not any(implements(hook, method) for method in METHODS):
            errors.append(
                Error(
                    f"{where} has none of the hook methods {', '.join(METHODS)}.",
                    hint=hint,
                    id="beluga_workflows.E011",
                )
            )
    return errors
