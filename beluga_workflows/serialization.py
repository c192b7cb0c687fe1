"""JSON-only values: inputs, results and signal payloads are checked at the call.

What is refused, with the path to the offending value: anything that is not plain JSON
(tuples too: they would come back as lists and break equality on replay), non-finite floats,
strings with a NUL character or a lone surrogate (PostgreSQL cannot store them), and nesting
deeper than :data:`MAX_DEPTH`. :func:`ensure_size` caps what enters at the edges (a run's
input, a signal's payload, an activity's result) at ``MAX_PAYLOAD_BYTES``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import InvalidPayloadError, PayloadTooLargeError

#: Levels of lists and objects inside one another that a payload may have.
MAX_DEPTH = 100


def ensure_json(value: Any, what: str, path: str = "$") -> Any:
    """Return ``value`` if it is plain, storable JSON, else raise :class:`InvalidPayloadError`."""
    _check(value, what, path, 0)
    return value


def _check(value: Any, what: str, path: str, depth: int) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        _check_text(value, what, path)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayloadError(what, path, value)
        return
    if depth >= MAX_DEPTH and isinstance(value, list | dict):
        raise InvalidPayloadError(what, path, value, f"is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, what, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPayloadError(what, f"{path} (key {key!r})", key)
            _check_text(key, what, f"{path} (key {key[:40]!r})")
            _check(item, what, f"{path}.{key}", depth + 1)
        return
    raise InvalidPayloadError(what, path, value)


def _check_text(text: str, what: str, path: str) -> None:
    if "\x00" in text:
        raise InvalidPayloadError(
            what, path, text, "contains a NUL character (\\u0000), which cannot be stored"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPayloadError(
            what, path, text, "is not valid Unicode (it contains a lone surrogate)"
        ) from None


def ensure_size(value: Any, what: str) -> Any:
    """Refuse ``value`` if its JSON is larger than ``BELUGA_WORKFLOWS["MAX_PAYLOAD_BYTES"]``."""
    from .conf import beluga_settings

    limit = beluga_settings.MAX_PAYLOAD_BYTES
    if limit:
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        if size > limit:
            raise PayloadTooLargeError(what, size, limit)
    return value
