"""Request and response bodies of the REST API.

Runs are serialized from :class:`~beluga_workflows.executors.base.WorkflowState`, the shape
every executor describes a run in, so the built-in engine and Temporal answer alike. Request
bodies validate everything that can be checked before the executor is called and name the
offending field; what only the engine can judge (a non-JSON value deep inside ``input``) is
mapped back to its field by the views.
"""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import registry
from ..history import EventType
from ..options import MAX_DURATION, Status, check_workflow_id
from ..previews import PREVIEW_CHARS
from .schema import component

STATUS_CHOICES = [s.value for s in Status]


class JSONStringField(serializers.CharField):
    """A JSON string and nothing else, at most ``max_length`` characters as sent.

    DRF's ``CharField`` would turn ``0`` into ``"0"`` and check the length only after trimming
    surrounding whitespace; the schema promises a string of at most ``maxLength``.
    """

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if data is not serializers.empty and data is not None:
            if not isinstance(data, str):
                self.fail("invalid")
            if self.max_length is not None and len(data) > self.max_length:
                self.fail("max_length", max_length=self.max_length)
        return super().run_validation(data)


class JSONNumberField(serializers.FloatField):
    """A JSON number and nothing else: DRF's ``FloatField`` also takes ``"12"`` and ``true``."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return float(super().to_internal_value(data))


@component("Child")
class ChildSerializer(serializers.Serializer):
    """A child workflow, as its parent's detail lists it."""

    id = serializers.CharField(read_only=True)
    run_id = serializers.CharField(read_only=True, allow_null=True)
    workflow = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True, allow_null=True)


@component("Held")
class HeldSerializer(serializers.Serializer):
    """Why a run is held for a fix, and since when (docs/errors.md)."""

    error = serializers.JSONField(
        read_only=True, help_text="The bug: an object with `type` and `message`."
    )
    traceback = serializers.CharField(
        read_only=True,
        help_text="The user's frames (beluga's own and Temporal's left out), innermost last.",
    )
    since = serializers.DateTimeField(read_only=True, help_text="When it was first held.")
    attempts = serializers.IntegerField(
        read_only=True, help_text="Passes of the code that failed so far."
    )
    last_attempt = serializers.DateTimeField(read_only=True, allow_null=True)
    next_retry = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the built-in engine tries again on its own (null on Temporal, which "
        "retries on its own schedule).",
    )


@component("Run")
class RunSerializer(serializers.Serializer):
    """A run; ``id`` is the workflow id, ``run_id`` tells apart runs that reused it."""

    id = serializers.CharField(source="workflow_id", read_only=True)
    run_id = serializers.UUIDField(read_only=True)
    workflow = serializers.CharField(read_only=True, help_text="The workflow's public name.")
    status = serializers.ChoiceField(choices=STATUS_CHOICES, read_only=True)
    input = serializers.JSONField(read_only=True, allow_null=True)
    result = serializers.JSONField(
        read_only=True, allow_null=True, help_text="The return value once completed."
    )
    error = serializers.JSONField(
        read_only=True,
        allow_null=True,
        help_text="Why the run failed or timed out: an object with at least `type` and `message`.",
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    waiting_for = serializers.CharField(
        read_only=True,
        help_text="What a running run is blocked on: `signal:<name>`, `activity:<name>`, "
        "`child:<workflow>` or `timer:<name>`; several are joined by `, ` (signals first) and "
        "counted, e.g. `activity:summarize (3)`; empty when not waiting.",
    )
    waiting_since = serializers.DateTimeField(read_only=True, allow_null=True)
    waiting_deadline = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When the current wait times out, if ever."
    )
    parent_id = serializers.CharField(
        read_only=True, allow_null=True, help_text="The parent run's workflow id, for a child."
    )
    parent_run_id = serializers.UUIDField(read_only=True, allow_null=True)
    children = ChildSerializer(
        many=True,
        read_only=True,
        help_text="Child workflows this run started (in the run detail; empty in lists).",
    )
    continued_from = serializers.UUIDField(
        read_only=True,
        allow_null=True,
        help_text="The run id this run continues (`ctx.continue_as_new`).",
    )
    continued_as = serializers.UUIDField(
        read_only=True,
        allow_null=True,
        help_text="The run id that continues this one, once it has continued as new.",
    )
    no_worker = serializers.BooleanField(
        read_only=True,
        help_text="True when the run is running and what it waits on has no live worker to "
        "serve it: on the built-in engine a workflow step, an activity attempt or a due timer "
        "with no live `default` worker on its queue (or running the sweeper); on Temporal, no "
        "live `temporal` worker on its task queue. See `GET /workers/`.",
    )
    held = HeldSerializer(
        read_only=True,
        allow_null=True,
        help_text="Set while the run is held for a fix: its workflow code failed with a bug "
        'under `ON_WORKFLOW_ERROR = "hold"`, so the run stays running until a worker with '
        "fixed code gets through (or `POST .../retry/`). Null otherwise.",
    )


def _preview_fields(name: str, what: str) -> tuple[serializers.Field, serializers.Field]:
    preview = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text=f"The first {PREVIEW_CHARS} characters of the {what}'s JSON text (null when "
        "there is none): the whole text when its UTF-8 length equals "
        f"`{name}_size`, else cut (and not valid JSON). The run's detail has the whole value.",
    )
    size = serializers.IntegerField(
        read_only=True, allow_null=True, help_text=f"The size of the {what}'s JSON text, in bytes."
    )
    return preview, size


@component("RunSummary")
class RunSummarySerializer(RunSerializer):
    """A run in a list: as in its detail, but ``input``, ``result`` and ``error`` are previews
    with their sizes (:mod:`beluga_workflows.previews`), so a page stays small whatever the
    payloads; ``GET /workflows/{id}/`` has the whole values."""

    input = None  # type: ignore[assignment]
    result = None  # type: ignore[assignment]
    error = None  # type: ignore[assignment]
    input_preview, input_size = _preview_fields("input", "input")
    result_preview, result_size = _preview_fields("result", "return value")
    error_preview, error_size = _preview_fields("error", "error")


MAX_TIMEOUT_SECONDS = MAX_DURATION.total_seconds()


@extend_schema_field(
    {
        "type": "number",
        "format": "double",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": MAX_TIMEOUT_SECONDS,
    }
)
class TimeoutField(JSONNumberField):
    """Seconds: more than 0, at most :data:`~beluga_workflows.options.MAX_DURATION`."""


@component("Start")
class StartSerializer(serializers.Serializer):
    """Body of ``POST /workflows/``. Only registered public names can be started."""

    workflow = serializers.ChoiceField(
        choices=[],
        help_text="The public name given with `@workflow.defn(name=...)`; never an import path.",
    )
    id = JSONStringField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=255,
        help_text="The workflow id: printable text without `/`; a UUID is chosen when empty. "
        "Must not be running already.",
    )
    input = serializers.JSONField(
        required=False, allow_null=True, default=None, help_text="Any JSON value."
    )
    timeout = TimeoutField(
        required=False,
        allow_null=True,
        error_messages={"invalid": "Must be a number of seconds."},
        help_text="Seconds the whole run may take before it times out; when absent, the "
        "`DEFAULT_TIMEOUT` setting, which is none unless the project sets one.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read the registry per request: workflow modules may register after import time.
        names = registry.public_names()
        field = self.fields["workflow"]
        field.choices = names
        field.error_messages["invalid_choice"] = (
            f'"{{input}}" is not a registered workflow. Registered workflows: '
            f"{', '.join(names) or 'none'}."
        )

    def validate_id(self, value: str | None) -> str | None:
        if value:
            try:
                check_workflow_id(value)
            except ValueError as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value

    def validate_timeout(self, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise serializers.ValidationError("Must be a positive number of seconds.")
        if value is not None and value > MAX_TIMEOUT_SECONDS:
            raise serializers.ValidationError(
                f"Must be at most {MAX_TIMEOUT_SECONDS:.0f} seconds (100 years)."
            )
        return value


#: Some character other than whitespace, and no NUL (PostgreSQL cannot store one).
NAME_PATTERN = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 255, "pattern": NAME_PATTERN})
class SignalNameField(JSONStringField):
    """Surrounding whitespace is trimmed; what is left must not be empty."""


@component("Signal")
class SignalSerializer(serializers.Serializer):
    """Body of ``POST /workflows/{id}/signal/``; the sender is the authenticated user."""

    name = SignalNameField(max_length=255, help_text="The signal name, e.g. `approval`.")
    payload = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Any JSON value; `approval` takes `true` (approve) or `false` (reject).",
    )


@component("Event")
class EventSerializer(serializers.Serializer):
    """One history event, from :class:`~beluga_workflows.history.HistoryEvent`."""

    sequence = serializers.IntegerField(read_only=True, help_text="1, 2, 3… in order.")
    type = serializers.ChoiceField(choices=[t.value for t in EventType], read_only=True)
    timestamp = serializers.DateTimeField(read_only=True)
    step = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="The workflow step (activity, timer or signal wait) the event belongs to.",
    )
    name = serializers.CharField(
        read_only=True, help_text="Activity, timer, signal or workflow name."
    )
    attempt = serializers.IntegerField(read_only=True, help_text="Activity attempt, from 1.")
    details = serializers.JSONField(
        source="data",
        read_only=True,
        help_text="Per type: `input`/`result`/`error` of activities, `payload` and `sender` of "
        "signals, `duration`/`deadline` of waits.",
    )


@component("QueryResult")
class QueryResultSerializer(serializers.Serializer):
    result = serializers.JSONField(allow_null=True, help_text="The query handler's answer.")


@component("Approval")
class ApprovalSerializer(serializers.Serializer):
    """A run that is waiting for a signal, read from the run table."""

    id = serializers.CharField(source="workflow_id", read_only=True)
    run_id = serializers.UUIDField(read_only=True)
    workflow = serializers.CharField(source="workflow_name", read_only=True)
    signal = serializers.SerializerMethodField(help_text="The signal name the run waits for.")
    since = serializers.DateTimeField(source="waiting_since", read_only=True, allow_null=True)
    deadline = serializers.DateTimeField(
        source="waiting_deadline",
        read_only=True,
        allow_null=True,
        help_text="When the wait times out (the workflow then gets a SignalTimeoutError).",
    )
    input_preview, input_size = _preview_fields("input", "input")

    def get_signal(self, run: Any) -> str:
        first = str(run.waiting_for).split(", ")[0]
        return first.removeprefix("signal:").split(" (")[0]


@component("Worker")
class WorkerSerializer(serializers.Serializer):
    """A `runworker` process, as its last heartbeat announced it."""

    host = serializers.CharField(read_only=True)
    pid = serializers.IntegerField(read_only=True)
    executor = serializers.CharField(read_only=True, help_text="`default` or `temporal`.")
    queues = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="The Celery queues (built-in engine) or the Temporal task queue it serves.",
    )
    concurrency = serializers.IntegerField(read_only=True)
    pool = serializers.CharField(read_only=True, help_text="The Celery pool, or `threads`.")
    sweeper = serializers.BooleanField(
        read_only=True,
        help_text="Whether it fires due timers and recovers lost work (built-in engine).",
    )
    interval = serializers.FloatField(read_only=True, help_text="Seconds between its beats.")
    started_at = serializers.DateTimeField(read_only=True)
    last_beat = serializers.DateTimeField(read_only=True)
    live = serializers.BooleanField(
        read_only=True,
        help_text="Whether its last beat is at most 3 intervals old; a worker that stopped "
        "cleanly has no row, one that died is listed as not live for a while.",
    )


@component("Error")
class ErrorSerializer(serializers.Serializer):
    """The body of 401, 403, 404 and 409 answers."""

    detail = serializers.CharField(help_text="What went wrong and what to do about it.")
