"""System checks: bad settings are caught by ``manage.py check`` with an id and a hint."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register
from django.db import connections

from .conf import DEFAULTS, beluga_settings


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from . import executors

    errors: list[Error] = []
    user = beluga_settings.user_settings
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        errors.append(
            Error(
                f"Unknown BELUGA_WORKFLOWS keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="beluga_workflows.E001",
            )
        )
    executor = beluga_settings.EXECUTOR
    if executor not in executors.list_executors():
        errors.append(
            Error(
                f"BELUGA_WORKFLOWS['EXECUTOR'] is {executor!r}, not a registered executor.",
                hint=f"Use one of: {', '.join(executors.list_executors())}.",
                id="beluga_workflows.E002",
            )
        )
    for key in ("POLL_INTERVAL", "REDISPATCH_AFTER", "WORKFLOW_TASK_TIMEOUT"):
        value = getattr(beluga_settings, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            errors.append(
                Error(
                    f"BELUGA_WORKFLOWS['{key}'] must be a positive number of seconds, "
                    f"not {value!r}.",
                    hint=f"The default is {DEFAULTS[key]}.",
                    id="beluga_workflows.E003",
                )
            )
    cache = beluga_settings.CACHE_SIZE
    if isinstance(cache, bool) or not isinstance(cache, int) or cache < 0:
        errors.append(
            Error(
                f"BELUGA_WORKFLOWS['CACHE_SIZE'] must be a whole number >= 0, not {cache!r}.",
                hint="0 turns the cache of live workflows off.",
                id="beluga_workflows.E004",
            )
        )
    limit = beluga_settings.MAX_PAYLOAD_BYTES
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        errors.append(
            Error(
                f"BELUGA_WORKFLOWS['MAX_PAYLOAD_BYTES'] must be a positive whole number of "
                f"bytes or None, not {limit!r}.",
                hint=f"The default is {DEFAULTS['MAX_PAYLOAD_BYTES']} (1 MiB); None: no limit.",
                id="beluga_workflows.E007",
            )
        )
    temporal = beluga_settings.TEMPORAL
    if not isinstance(temporal, dict) or not all(
        isinstance(temporal.get(k), str) and temporal.get(k)
        for k in ("HOST", "NAMESPACE", "TASK_QUEUE")
    ):
        errors.append(
            Error(
                "BELUGA_WORKFLOWS['TEMPORAL'] needs non-empty strings HOST, NAMESPACE, TASK_QUEUE.",
                hint='For example {"HOST": "localhost:7233", "NAMESPACE": "default", '
                '"TASK_QUEUE": "beluga-workflows"}.',
                id="beluga_workflows.E005",
            )
        )
    if executor == "default" and connections["default"].vendor != "postgresql":
        errors.append(
            Error(
                "The built-in workflow engine needs PostgreSQL (row locks with SKIP LOCKED and "
                f"advisory locks); the default database is {connections['default'].vendor}.",
                hint="Point DATABASES['default'] at PostgreSQL, or use the Temporal executor.",
                id="beluga_workflows.E006",
            )
        )
    return errors
