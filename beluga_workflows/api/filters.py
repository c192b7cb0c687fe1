"""Query-string filters of the run lists (django-filter): ``?status=``, ``?workflow=``, …

Bad values (``?status=bogus``) are refused with a 400 naming the parameter, never ignored:
a script that filters on a typo should learn about it. An empty value (``?status=``) is no
filter, as django-filter has it.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field

from ..models import WorkflowRun
from ..options import Status


def _documented(query_filter: django_filters.Filter, schema: dict[str, Any]) -> None:
    """Give the schema what drf-spectacular cannot infer; it then needs the description too."""
    description = query_filter.extra.get("help_text", "")
    extend_schema_field({**schema, "description": description})(query_filter)


class TextFilter(django_filters.CharFilter):
    """Free text without NUL characters: those are refused with a 400, never stored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _documented(self, {"type": "string", "pattern": "^[^\\u0000]*$"})


STATUSES = [s.value for s in Status]


class StatusFilter(django_filters.ChoiceFilter):
    """One of the statuses, or empty: an empty value means no filter, as for the other
    parameters (the browsable API's filter form sends `?status=` when left blank)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _documented(self, {"type": "string", "enum": [*STATUSES, ""]})


class RunFilter(django_filters.FilterSet):
    status = StatusFilter(
        choices=[(value, value) for value in STATUSES],
        help_text=f"Only runs with this status: {', '.join(STATUSES)}; empty for any.",
    )
    workflow = TextFilter(
        field_name="workflow_name", help_text="Only runs of this workflow (its public name)."
    )
    id = TextFilter(
        field_name="workflow_id", help_text="Only runs with this workflow id (every run of it)."
    )
    waiting_for = TextFilter(
        help_text="Only runs blocked on this, e.g. `signal:approval` or `activity:report`."
    )
    parent = TextFilter(
        field_name="parent__workflow_id",
        help_text="Only child workflows of the run(s) with this workflow id.",
    )

    class Meta:
        model = WorkflowRun
        fields = ["status", "workflow", "id", "waiting_for", "parent"]


class ApprovalFilter(django_filters.FilterSet):
    workflow = TextFilter(
        field_name="workflow_name", help_text="Only runs of this workflow (its public name)."
    )
    signal = TextFilter(
        method="filter_signal", help_text="Only runs waiting for this signal, e.g. `approval`."
    )

    class Meta:
        model = WorkflowRun
        fields = ["workflow", "signal"]

    def filter_signal(self, queryset, name, value):  # type: ignore[no-untyped-def]
        # A run racing the signal against other work lists the signal first.
        wanted = f"signal:{value}"
        return queryset.filter(
            Q(waiting_for=wanted)
            | Q(waiting_for__startswith=f"{wanted}, ")
            | Q(waiting_for__startswith=f"{wanted} (")
        )


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, set on our views so the filters work whatever the project's
    ``DEFAULT_FILTER_BACKENDS`` say; its form in the browsable API uses our template, so
    ``django_filters`` need not be in ``INSTALLED_APPS``."""

    template = "beluga_workflows/api/filter_form.html"
