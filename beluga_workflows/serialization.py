"""JSON-only values: inputs, results and signal payloads are checked at the call."""

from __future__ import annotations

import math
from typing import Any

from .errors import InvalidPayloadError


def ensure_json(value: Any, what: str, path: str = "$") -> Any:
    """Return ``value`` if it is plain JSON, else raise :class:`InvalidPayloadError`.

    Tuples are refused too: they would come back as lists and break equality on replay.
    """
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayloadError(what, path, value)
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            ensure_json(item, what, f"{path}[{i}]")
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayloadError(what, f"{path} (key {key!r})", key)
            ensure_json(item, what, f"{path}.{key}")
        return value
    raise InvalidPayloadError(what, path, value)
