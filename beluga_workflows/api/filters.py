"""Query-string filters of the run lists (django-filter): ``?status=``, ``?workflow=``, …

Bad values (``?status=bogus``) are refused with a 400 naming the parameter, never ignored:
a script that filters on a typo should learn about it.
"""

from __future__ import annotations

import django_filters
from django.db.models import Q

from ..models import WorkflowRun
from ..options import Status


class RunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        choices=[(s.value, s.value) for s in Status], help_text="Only runs with this status."
    )
    workflow = django_filters.CharFilter(
        field_name="workflow_name", help_text="Only runs of this workflow (its public name)."
    )
    id = django_filters.CharFilter(
        field_name="workflow_id", help_text="Only runs with this workflow id (every run of it)."
    )
    waiting_for = django_filters.CharFilter(
        help_text="Only runs blocked on this, e.g. `signal:approval` or `activity:report`."
    )
    parent = django_filters.CharFilter(
        field_name="parent__workflow_id",
        help_text="Only child workflows of the run(s) with this workflow id.",
    )

    class Meta:
        model = WorkflowRun
        fields = ["status", "workflow", "id", "waiting_for", "parent"]


class ApprovalFilter(django_filters.FilterSet):
    workflow = django_filters.CharFilter(
        field_name="workflow_name", help_text="Only runs of this workflow (its public name)."
    )
    signal = django_filters.CharFilter(
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
