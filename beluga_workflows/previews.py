"""Previews: how lists show a run's ``input``, ``result`` and ``error`` without loading them.

A payload may be a megabyte of JSON (``MAX_PAYLOAD_BYTES``), and a list shows hundreds of runs:
loading them whole made one page of the REST list 126 MB and four such requests took the web
process to 2.4 GB. Lists — ``GET /api/workflows/``, ``GET /api/approvals/``, the admin's runs
and approvals pages, ``manage.py workflow list`` — read instead, for each payload, the first
:data:`PREVIEW_CHARS` characters of its JSON text (``<field>_preview``) and the size of that
text in bytes (``<field>_size``), both computed by PostgreSQL: the payload columns are deferred,
so the web process never holds a whole value. Both are ``None`` for a run without the value.

A preview is the whole JSON text when ``len(preview.encode()) == size`` (:func:`is_whole`);
otherwise it is cut and does not parse. One run's detail (``describe``, ``GET
/api/workflows/{id}/``) still carries the whole values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from django.db.models import Func, IntegerField, Model, QuerySet, TextField
from django.db.models.functions import Cast, Left

from .state import WorkflowState, run_states

#: The run columns that hold user payloads, never loaded by a list.
PAYLOADS = ("input", "result", "error")

#: Characters of a payload's JSON text a list shows.
PREVIEW_CHARS = 200

M = TypeVar("M", bound=Model)


class OctetLength(Func):
    """PostgreSQL's ``octet_length(text)``: bytes, where ``Length`` counts characters."""

    function = "OCTET_LENGTH"
    output_field = IntegerField()


def with_previews(queryset: QuerySet[M], payloads: tuple[str, ...] = PAYLOADS) -> QuerySet[M]:
    """``queryset`` with ``<field>_preview`` and ``<field>_size`` for each payload field, the
    payload columns themselves deferred — of the rows and of the related runs it selects
    (``parent``, ``continued_from``), whose payloads nothing in a list reads either."""
    annotations: dict[str, Any] = {}
    for name in payloads:
        text = Cast(name, output_field=TextField())
        annotations[f"{name}_preview"] = Left(text, PREVIEW_CHARS)
        annotations[f"{name}_size"] = OctetLength(text)
    related = queryset.query.select_related
    joined = list(related) if isinstance(related, dict) else []
    deferred = [*PAYLOADS, *(f"{join}__{name}" for join in joined for name in PAYLOADS)]
    return queryset.annotate(**annotations).defer(*deferred)


def is_whole(preview: str | None, size: int | None) -> bool:
    """Whether a preview is the payload's whole JSON text (then it parses)."""
    return preview is not None and len(preview.encode()) == size


def human_size(size: int) -> str:
    """``512 B``, ``12.3 KiB``, ``1.0 MiB``."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def short(preview: str | None, size: int | None, limit: int = 80) -> str:
    """A payload in one line of about ``limit`` characters, from its preview, for a page: as
    :func:`.timeline.short_json` reads it when the preview is whole, else the preview's start
    with the whole value's size."""
    from .timeline import short_json

    if preview is None or size is None:
        return "null"
    if is_whole(preview, size):
        return short_json(json.loads(preview), limit)
    text = " ".join(preview.split())[:limit].rstrip()
    return f"{text}… ({human_size(size)})"


@dataclass(frozen=True)
class RunSummary(WorkflowState):
    """A run as lists describe it: a :class:`WorkflowState` whose ``input``, ``result`` and
    ``error`` are left out (None), with their previews and sizes instead."""

    input_preview: str | None = None
    input_size: int | None = None
    result_preview: str | None = None
    result_size: int | None = None
    error_preview: str | None = None
    error_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in super().to_json().items():
            if key in PAYLOADS:
                data[f"{key}_preview"] = getattr(self, f"{key}_preview")
                data[f"{key}_size"] = getattr(self, f"{key}_size")
            else:
                data[key] = value
        return data


_STATE_FIELDS = [f.name for f in fields(WorkflowState)]


def summaries(runs: list[Any]) -> list[RunSummary]:
    """Rows of a :func:`with_previews` queryset as :class:`RunSummary` objects (``no_worker``
    included, as :func:`.state.run_states` finds it), without reading their payloads."""
    states = run_states(runs, payloads=False)
    return [
        RunSummary(
            **{name: getattr(state, name) for name in _STATE_FIELDS},
            **{
                f"{name}_{part}": getattr(run, f"{name}_{part}")
                for name in PAYLOADS
                for part in ("preview", "size")
            },
        )
        for run, state in zip(runs, states, strict=True)
    ]
