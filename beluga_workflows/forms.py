"""The admin's "Start a run" form: a registered workflow name, an optional id, JSON input.

Everything that can be checked before the executor is called is checked here and reported
beside its field; what only the executor can judge (a payload too large, an id already
running) is put back on the field by the view.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django import forms

from . import registry
from .options import MAX_DURATION, WorkflowOptions, check_workflow_id


class StartRunForm(forms.Form):
    workflow = forms.ChoiceField(
        help_text="A workflow registered with @workflow.defn(name=...).",
    )
    id = forms.CharField(
        label="Workflow id",
        required=False,
        max_length=255,
        help_text="Printable text without '/'; a UUID is chosen when empty.",
    )
    input = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60, "class": "bw-json-input"}),
        initial="null",
        help_text='Any JSON value: "Q4 revenue analysis", {"amount": 42}, null…',
    )
    timeout = forms.FloatField(
        label="Timeout (seconds)",
        required=False,
        help_text="How long the whole run may take; none (or the DEFAULT_TIMEOUT setting) "
        "when empty.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = registry.public_names()  # per form: workflow modules may register late
        self.fields["workflow"].choices = [(name, name) for name in names]

    def clean_id(self) -> str | None:
        value = self.cleaned_data["id"].strip()
        if not value:
            return None
        try:
            return check_workflow_id(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_input(self) -> Any:
        try:
            return json.loads(self.cleaned_data["input"])
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); text goes "
                'in double quotes: "like this".'
            ) from None

    def clean_timeout(self) -> float | None:
        value = self.cleaned_data["timeout"]
        if value is None:
            return None
        limit = MAX_DURATION.total_seconds()
        if not math.isfinite(value) or value <= 0 or value > limit:
            raise forms.ValidationError(
                f"A number of seconds, more than 0 and at most {limit:.0f}."
            )
        return value

    def options(self) -> WorkflowOptions:
        data = self.cleaned_data
        return WorkflowOptions(id=data["id"], input=data["input"], timeout=data["timeout"])
