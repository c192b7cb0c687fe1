"""The Django admin for workflow runs: inspect, approve or reject, cancel.

Runs are read-only here: rows are the engine's to write. Approve / Reject (the ``approval``
signal with ``true`` / ``false``), Retry now (a run held for a fix) and Cancel go through
``get_executor()``, are checked with the same permission rules as the REST API
(:mod:`beluga_workflows.permissions`), record the admin user as the sender, and are confirmed
with a message. They exist as buttons on a run's
page and on the pending-approvals page, and as bulk actions on the list.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Max, OuterRef, Q, QuerySet, Subquery
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from . import previews, registry, timeline
from .engine.store import to_event
from .errors import (
    InvalidPayloadError,
    WorkflowAlreadyStartedError,
    WorkflowError,
    WorkflowNameError,
)
from .executors import get_executor
from .forms import StartRunForm
from .heartbeats import status_of, unserved, with_database_time
from .history import waits_for
from .models import WorkerHeartbeat, WorkflowEvent, WorkflowRun
from .options import Signal, Status
from .permissions import Operation, allowed, require, sender_name
from .state import held_info


def _waiting_for_signal(signal: str) -> Q:
    wanted = f"signal:{signal}"
    return Q(waiting_for=wanted) | Q(waiting_for__startswith=f"{wanted}, ")


def waiting_for_approval() -> Q:
    """Runs blocked on their workflow's approval signal (``approval`` unless it chose another)."""
    custom = registry.custom_approval_signals()
    condition = _waiting_for_signal(registry.DEFAULT_APPROVAL_SIGNAL) & ~Q(
        workflow_name__in=list(custom)
    )
    for workflow, signal in custom.items():
        condition |= Q(workflow_name=workflow) & _waiting_for_signal(signal)
    return condition


class WaitingFilter(admin.SimpleListFilter):
    title = "waiting for"
    parameter_name = "waiting"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("approval", "approval"),
            ("signal", "any signal"),
            ("activity", "an activity"),
            ("timer", "a timer"),
            ("held", "a fix (held)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> Any:
        value = self.value()
        if not value:
            return queryset
        running = queryset.filter(status=Status.RUNNING.value)
        if value == "approval":
            return running.filter(waiting_for_approval())
        if value == "held":
            return running.filter(held__isnull=False)
        return running.filter(waiting_for__startswith=f"{value}:")


NO_WORKER = (
    "No live worker serves what this run waits on: start `manage.py runworker` for its executor "
    "and queue (see Live workers), or check why the worker stopped."
)

# Characters of one value (an input, a result, an event's data) shown on a run page: a large
# payload appears several times in a history, and the page must stay small.
SHOWN_CHARS = 10_000


def _shown(text: str) -> str:
    if len(text) <= SHOWN_CHARS:
        return text
    return (
        f"{text[:SHOWN_CHARS]}\n… ({len(text):,} characters in all: the REST API and "
        "`manage.py workflow describe` / `history` show the whole value)"
    )


def _json(value: Any) -> str:
    return _shown(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _when(value: Any) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def waits_for_approval(run: WorkflowRun) -> bool:
    signal = registry.approval_signal(run.workflow_name)
    return run.status == Status.RUNNING.value and waits_for(run.waiting_for, "signal", signal)


class ReadOnlyForViewers(admin.ModelAdmin):
    """Read-only pages: only the engine and the workers write these rows. Viewing needs
    `view_workflowrun` alone (Django's default would also accept `change_…`, which means
    nothing here)."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return allowed(request.user, Operation.VIEW)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WorkflowRun)
class WorkflowRunAdmin(ReadOnlyForViewers):
    list_display = (
        "workflow_id",
        "short_run_id",
        "workflow",
        "executor",
        "status_badge",
        "waiting",
        "created",
        "updated",
    )
    list_filter = ("status", WaitingFilter, "workflow_name", "created_at")
    search_fields = ("workflow_id",)
    list_per_page = 50
    actions = ["approve_selected", "reject_selected", "retry_selected", "cancel_selected"]
    change_list_template = "beluga_workflows/admin/change_list.html"

    # Named by the actions' `permissions=[...]` below.
    def has_signal_permission(self, request: HttpRequest) -> bool:
        return allowed(request.user, Operation.SIGNAL)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return allowed(request.user, Operation.CANCEL)

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: WorkflowRun) -> str:
        badge = format_html('<span class="bw-status bw-status-{0}">{0}</span>', run.status)
        if held_info(run) is None:
            return badge
        error = (run.held or {}).get("error") or {}
        return format_html(
            '{} <span class="bw-status bw-status-held" title="{}: {}">held</span>',
            badge,
            error.get("type", ""),
            error.get("message", ""),
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowRun]:
        # A run mirrored from Temporal says so in its first event (with its task queue).
        first = WorkflowEvent.objects.filter(run=OuterRef("pk"), sequence=1)
        queue = Subquery(first.values("data__temporal__task_queue")[:1])
        # Payloads stay in the database (a run's page reads its own when it shows them).
        runs = super().get_queryset(request).defer(*previews.PAYLOADS)
        return runs.annotate(temporal_queue=queue)

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        flagged = unserved(changelist.result_list)  # a few queries for the whole page
        for run in changelist.result_list:
            run.no_worker = run.pk in flagged
        return changelist

    @admin.display(description="executor")
    def executor(self, run: WorkflowRun) -> str:
        return "temporal" if getattr(run, "temporal_queue", None) else "default"

    @admin.display(description="run")
    def short_run_id(self, run: WorkflowRun) -> str:
        # Ids may be reused (a new run after the last one closed): the run id tells them apart.
        return format_html('<code title="{}">{}</code>', run.run_id, str(run.run_id)[:8])

    @admin.display(description="workflow", ordering="workflow_name")
    def workflow(self, run: WorkflowRun) -> str:
        return run.workflow_name

    @admin.display(description="created", ordering="created_at")
    def created(self, run: WorkflowRun) -> str:
        return _when(run.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, run: WorkflowRun) -> str:
        return _when(run.updated_at)

    @admin.display(description="waiting for", ordering="waiting_for")
    def waiting(self, run: WorkflowRun) -> str:
        if not run.waiting_for:
            text = "—"
        elif run.waiting_since is None:
            text = run.waiting_for
        else:
            since = timeline.format_duration((timezone.now() - run.waiting_since).total_seconds())
            text = f"{run.waiting_for} ({since})"
        if getattr(run, "no_worker", False):
            return format_html(
                '{} <span class="bw-no-worker" title="{}">no worker</span>', text, NO_WORKER
            )
        return text

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "pending_count": self._pending().count(),
            "can_start": allowed(request.user, Operation.START),
            "live_version": self._list_version(),
        }
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("approvals/", wrap(self.approvals_view), name=f"{name}_approvals"),
            path("start/", wrap(self.start_view), name=f"{name}_start"),
            path("version/", wrap(self.list_version_view), name=f"{name}_list_version"),
            path("<path:object_id>/version/", wrap(self.version_view), name=f"{name}_version"),
            path("<path:object_id>/approve/", wrap(self.approve_view), name=f"{name}_approve"),
            path("<path:object_id>/reject/", wrap(self.reject_view), name=f"{name}_reject"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name=f"{name}_cancel"),
            path("<path:object_id>/retry/", wrap(self.retry_view), name=f"{name}_retry"),
            *super().get_urls(),
        ]

    # Pages.

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        run = self.get_object(request, unquote(object_id))
        if run is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        # Read this run's own rows: an id may have been run again, and `executor.history(id)`
        # answers for the newest run of the id.
        events = [to_event(row) for row in run.events.order_by("sequence")]
        now = timezone.now()
        line = timeline.build(events)
        children = list(run.children.defer(*previews.PAYLOADS).order_by("parent_step", "id"))
        by_step = {child.parent_step: child for child in children}
        for span in line.spans:  # a child's bar links to the child's page
            child = by_step.get(span.step) if span.kind == "child" else None
            span.link = self._run_url(child) if child is not None else ""
        held = held_info(run)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Workflow run {run.workflow_id}",
            "subtitle": run.workflow_name,
            "run": run,
            "input_json": _json(run.input),
            # A text result (a report, say) reads better as text than as a JSON string.
            "result_json": _shown(run.result) if isinstance(run.result, str) else _json(run.result),
            "error_json": _json(run.error),
            "entries": [
                {
                    "event": e,
                    "text": timeline.describe(e),
                    "offset": self._offset(line, e),
                    "data": _json(e.data) if e.data else "",
                }
                for e in events
            ],
            "gantt": timeline.gantt(line, now),
            "timeout": timeline.format_duration(run.timeout_seconds),
            "duration": timeline.format_duration(
                ((run.closed_at or now) - run.created_at).total_seconds()
            ),
            "other_runs": WorkflowRun.objects.filter(workflow_id=run.workflow_id)
            .defer(*previews.PAYLOADS)
            .exclude(pk=run.pk)
            .exclude(pk=run.continued_from_id or 0)
            .exclude(continued_from=run),
            "parent": run.parent,
            "children": children,
            "continued_from": run.continued_from,
            "continued_as": run.continuations.first(),
            "can_approve": waits_for_approval(run) and allowed(request.user, Operation.SIGNAL),
            "can_cancel": run.status == Status.RUNNING.value
            and allowed(request.user, Operation.CANCEL),
            "held": _held_for_display(held),
            "can_retry": held is not None and allowed(request.user, Operation.SIGNAL),
            "live_version": self._run_version(run),
            "no_worker": run.pk in unserved([run]),
            "no_worker_help": NO_WORKER,
            "executor": self.executor(run),
        }
        return TemplateResponse(request, "beluga_workflows/admin/run.html", context)

    def _run_url(self, run: WorkflowRun) -> str:
        opts = self.opts
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(run.pk)])

    @staticmethod
    def _offset(line: timeline.Timeline, event: Any) -> str:
        if line.start is None:
            return ""
        return "+" + timeline.format_duration((event.timestamp - line.start).total_seconds())

    def _pending(self) -> QuerySet[WorkflowRun]:
        return WorkflowRun.objects.filter(
            status=Status.RUNNING.value, waiting_for__startswith="signal:"
        ).order_by("waiting_since", "id")

    def approvals_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Pending approvals",
            "runs": [
                (
                    run,
                    previews.short(run.input_preview, run.input_size, 60),
                    waits_for_approval(run),
                )
                for run in previews.with_previews(self._pending(), payloads=("input",))[:500]
            ],
            "can_signal": allowed(request.user, Operation.SIGNAL),
            "now": timezone.now(),
            "live_version": self._list_version(),
        }
        return TemplateResponse(request, "beluga_workflows/admin/approvals.html", context)

    # Live pages: each page polls a small "version" and reloads itself when it changes.

    @staticmethod
    def _run_version(run: WorkflowRun) -> str:
        return f"{run.status}:{run.last_sequence}:{run.updated_at.isoformat()}"

    @staticmethod
    def _list_version() -> str:
        latest = WorkflowRun.objects.aggregate(last_id=Max("id"), changed=Max("updated_at"))
        changed = latest["changed"].isoformat() if latest["changed"] else ""
        return f"{latest['last_id'] or 0}:{changed}"

    def version_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        require(request.user, Operation.VIEW)
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404(f"No workflow run with primary key {object_id!r}.")
        return JsonResponse({"version": self._run_version(run), "status": run.status})

    def list_version_view(self, request: HttpRequest) -> JsonResponse:
        require(request.user, Operation.VIEW)
        return JsonResponse({"version": self._list_version()})

    # Starting a run: a registered name and JSON input, for users who may start runs.

    def start_view(self, request: HttpRequest) -> HttpResponse:
        require(request.user, Operation.START)
        form = StartRunForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            started = self._start(request, form)
            if started is not None:
                return started
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Start a workflow run",
            "form": form,
        }
        return TemplateResponse(request, "beluga_workflows/admin/start.html", context)

    def _start(self, request: HttpRequest, form: StartRunForm) -> HttpResponse | None:
        name = form.cleaned_data["workflow"]
        try:
            handle = get_executor().start(name, form.options())
        except WorkflowAlreadyStartedError as exc:
            form.add_error("id", str(exc))
        except InvalidPayloadError as exc:
            form.add_error("input", str(exc))
        except WorkflowNameError as exc:
            form.add_error("workflow", str(exc))
        else:
            message = f"Started {name} as {handle.id!r} (run {handle.run_id})."
            self.message_user(request, message, messages.SUCCESS)
            run = WorkflowRun.objects.filter(run_id=handle.run_id).first()
            if run is not None:
                self.log_addition(request, run, message)
                return HttpResponseRedirect(self._run_url(run))
            # On Temporal the row is mirrored a moment later: the list finds it then.
            changelist = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
            return HttpResponseRedirect(f"{changelist}?{urlencode({'q': handle.id})}")
        return None

    # Buttons: POST only, permission-checked, through the executor.

    def approve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button(request, object_id, Operation.SIGNAL, self._approve(True))

    def reject_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button(request, object_id, Operation.SIGNAL, self._approve(False))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button(request, object_id, Operation.CANCEL, self._cancel)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button(request, object_id, Operation.SIGNAL, self._retry)

    @staticmethod
    def _retry(request: HttpRequest, run: WorkflowRun) -> str:
        # The executor checks the run is held (WorkflowNotHeldError, shown as a message).
        get_executor().retry(run.workflow_id)
        return (
            f"Asked {run.workflow_id!r} to run its code again; it stays held until a worker's "
            "code gets through."
        )

    @staticmethod
    def _approve(payload: bool) -> Callable[[HttpRequest, WorkflowRun], str]:
        def send(request: HttpRequest, run: WorkflowRun) -> str:
            if not waits_for_approval(run):
                raise WorkflowError(
                    f"Workflow {run.workflow_id!r} is not waiting for approval "
                    f"(status {run.status}, waiting for {run.waiting_for or 'nothing'}); "
                    "nothing was sent."
                )
            sender = sender_name(request.user)
            signal = registry.approval_signal(run.workflow_name)
            get_executor().signal(run.workflow_id, Signal(signal, payload, sender=sender))
            verb = "Approved" if payload else "Rejected"
            value = "true" if payload else "false"
            return f"{verb} {run.workflow_id!r}: sent the {signal!r} signal ({value}) as {sender}."

        return send

    @staticmethod
    def _cancel(request: HttpRequest, run: WorkflowRun) -> str:
        if run.status != Status.RUNNING.value:
            raise WorkflowError(
                f"Workflow {run.workflow_id!r} has already finished ({run.status}); "
                "nothing was sent."
            )
        get_executor().cancel(run.workflow_id, sender=sender_name(request.user))
        return f"Asked {run.workflow_id!r} to cancel; it stops at its current wait."

    def _button(
        self,
        request: HttpRequest,
        object_id: str,
        operation: Operation,
        act: Callable[[HttpRequest, WorkflowRun], str],
    ) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        # The buttons act on runs their user can see: `view` as well as `signal`/`cancel`.
        require(request.user, Operation.VIEW)
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404(f"No workflow run with primary key {object_id!r}.")
        require(request.user, operation)
        try:
            message = act(request, run)
        except WorkflowError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.log_change(request, run, message)
            self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(self._next_url(request, run))

    def _next_url(self, request: HttpRequest, run: WorkflowRun) -> str:
        target = request.POST.get("next", "")
        if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return target
        return self._run_url(run)

    # Bulk actions on the list.

    @admin.action(description="Approve selected runs waiting for approval", permissions=["signal"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        self._bulk(request, queryset, self._approve(True))

    @admin.action(description="Reject selected runs waiting for approval", permissions=["signal"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        self._bulk(request, queryset, self._approve(False))

    @admin.action(description="Retry selected runs held for a fix", permissions=["signal"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        self._bulk(request, queryset, self._retry)

    @admin.action(description="Cancel selected running runs", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[WorkflowRun]) -> None:
        self._bulk(request, queryset, self._cancel)

    def _bulk(
        self,
        request: HttpRequest,
        queryset: QuerySet[WorkflowRun],
        act: Callable[[HttpRequest, WorkflowRun], str],
    ) -> None:
        done, skipped = 0, []
        for run in queryset:
            try:
                self.log_change(request, run, act(request, run))
                done += 1
            except WorkflowError:
                skipped.append(run.workflow_id)
        if done:
            self.message_user(request, f"Done for {done} run(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"Skipped {len(skipped)} run(s) not in a state for this: "
                f"{', '.join(skipped[:10])}.",
                messages.WARNING,
            )


# Live workers: each `runworker`'s heartbeat row.


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyForViewers):
    """Workers, live ones first; read-only, for whoever may view runs."""

    list_display = (
        "host",
        "pid",
        "executor",
        "queue_names",
        "concurrency",
        "pool",
        "started",
        "last_beat_ago",
        "is_live",
    )
    list_filter = ("executor", "host")
    list_display_links = None
    ordering = ("-last_beat",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkerHeartbeat]:
        return with_database_time(super().get_queryset(request))  # type: ignore[no-any-return]

    @admin.display(description="queues")
    def queue_names(self, row: WorkerHeartbeat) -> str:
        return ", ".join(row.queues or [])

    @admin.display(description="started", ordering="started_at")
    def started(self, row: WorkerHeartbeat) -> str:
        return _when(row.started_at)

    @admin.display(description="last heartbeat", ordering="last_beat")
    def last_beat_ago(self, row: WorkerHeartbeat) -> str:
        age = status_of(row, row.db_now).age  # type: ignore[attr-defined]
        return f"{_when(row.last_beat)} ({timeline.format_duration(age)} ago)"

    @admin.display(description="live", boolean=True)
    def is_live(self, row: WorkerHeartbeat) -> bool:
        return status_of(row, row.db_now).live  # type: ignore[attr-defined]


def _held_for_display(held: dict[str, Any] | None) -> dict[str, Any] | None:
    """The held info with its times as datetimes, so the page shows them as it shows others."""
    if held is None:
        return None
    times = {}
    for key in ("since", "last_attempt", "next_retry"):
        try:
            times[key] = datetime.fromisoformat(held[key]) if held.get(key) else None
        except (TypeError, ValueError):  # shown as stored
            times[key] = held.get(key)
    return {**held, **times}
