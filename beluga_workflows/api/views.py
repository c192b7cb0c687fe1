"""REST views: thin adapters over the configured executor.

Every action (start, signal, query, cancel) and every read of one run goes through
``get_executor()``, so the API behaves the same on the built-in engine and on Temporal. Lists
read the run table, which both executors keep current, because only a table can be filtered
and paginated; ``workers/`` reads the workers' heartbeats (:mod:`beluga_workflows.heartbeats`).

Engine errors become HTTP answers in one place (:meth:`WorkflowViewSet.handle_exception`):
unknown id → 404, finished or already running → 409, bad value → 400.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from .. import heartbeats, previews
from ..errors import (
    InvalidPayloadError,
    PayloadTooLargeError,
    QueryError,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
    WorkflowLimitError,
    WorkflowNameError,
    WorkflowNotFoundError,
    WorkflowNotHeldError,
)
from ..executors import get_executor
from ..history_pages import RunChangedError as RunChanged
from ..models import WorkerHeartbeat, WorkflowRun
from ..options import Signal, Status, WorkflowOptions
from ..permissions import Operation, allowed, sender_name
from . import serializers as s
from .authentication import AuthenticateHeaderMixin
from .filters import ApprovalFilter, FilterBackend, RunFilter
from .paging import EventPagination, RunPagination
from .permissions import WorkflowPermission, with_project_defaults
from .schema import ApiSchema, operation


class SafeJSONParser(JSONParser):
    """JSON bodies; a body nested too deep for the parser is a 400, not a server error."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deep.") from None


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The payload is too large."
    default_code = "payload_too_large"


def _payload_error(field: str, exc: InvalidPayloadError) -> exceptions.APIException:
    """A value the engine refused: 413 when too large, else a 400 naming the field."""
    if isinstance(exc, PayloadTooLargeError):
        return PayloadTooLarge({field: [str(exc)]})
    return exceptions.ValidationError({field: [str(exc)]})


def _addressable(value: str) -> bool:
    """Whether an id or query name taken from a URL can exist at all (no NUL, valid text)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value and len(value) <= 255


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The run is not in a state that allows this."
    default_code = "conflict"


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(s.ErrorSerializer, description=description)


def _field_errors(description: str = "", **examples: dict[str, list[str]]) -> OpenApiResponse:
    return OpenApiResponse(
        OpenApiTypes.OBJECT,
        description=(description + " " if description else "")
        + "Invalid request: an object mapping each offending field (or query "
        "parameter) to its messages.",
        examples=[OpenApiExample(name, value=value) for name, value in examples.items()],
    )


UNKNOWN_WORKFLOW = {
    "workflow": ['"nope" is not a registered workflow. Registered workflows: research.']
}
FILTER_ERRORS = _field_errors(
    bad_filter={"status": ["Select a valid choice. bogus is not one of the available choices."]},
    bad_page={"page": ["That page contains no results."]},
)
TOO_LARGE = _field_errors(
    "Larger than `MAX_PAYLOAD_BYTES` (1 MiB by default); nothing was stored.",
    too_large={"input": ["Input of workflow 'research' is 2,097,152 bytes as JSON; the limit "
                         "is 1,048,576 (BELUGA_WORKFLOWS['MAX_PAYLOAD_BYTES']). Store large "
                         "data elsewhere and pass a reference."]},
)  # fmt: skip
MINIMAL_WITHOUT_VIEW = (
    "The run. A user without the `view` permission gets only its `id`, `run_id` and `status`."
)
UNAUTHENTICATED = _error("No credentials: log in (session) or send `Authorization: Token …`.")
FORBIDDEN = _error("Authenticated, but without the model permission this operation needs.")
NOT_FOUND = _error("No run with this workflow id.")
READ_ERRORS = {401: UNAUTHENTICATED, 403: FORBIDDEN}
NOT_JSON = _error("The body is not JSON (`Content-Type: application/json`).")
ID_PARAMETER = OpenApiParameter(
    "id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The workflow id. When several runs used it, the running one (else the latest).",
)


@extend_schema_view(
    list=operation(
        summary="List runs",
        description="Newest first, paginated. Every run is listed, including earlier runs "
        "of a reused workflow id. Inputs, results and errors are previews with their sizes; "
        "a run's detail has them whole.",
        responses={200: s.RunSummarySerializer(many=True), 400: FILTER_ERRORS, **READ_ERRORS},
    ),
)
class WorkflowViewSet(AuthenticateHeaderMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Workflow runs: list, start, inspect, signal, query and cancel."""

    queryset = WorkflowRun.objects.select_related("parent", "continued_from")
    serializer_class = s.RunSerializer
    filterset_class = RunFilter
    filter_backends = [FilterBackend]
    pagination_class = RunPagination
    permission_classes = [WorkflowPermission]
    schema = ApiSchema()
    # JSON only: a form-encoded `payload=true` would arrive as the string "true", and the
    # tutorial workflow would read that as a rejection.
    parser_classes = [SafeJSONParser]
    lookup_field = "workflow_id"
    lookup_url_kwarg = "id"
    # Workflow ids are free text: allow dots (``report.v2``), anything but a slash.
    lookup_value_regex = "[^/]+"
    operations = {
        "list": Operation.VIEW,
        "retrieve": Operation.VIEW,
        "events": Operation.VIEW,
        "query": Operation.VIEW,
        "create": Operation.START,
        "signal": Operation.SIGNAL,
        "cancel": Operation.CANCEL,
        # Retrying only runs the workflow's code again, like the step a signal causes.
        "retry": Operation.SIGNAL,
    }

    def get_permissions(self) -> list[Any]:
        return with_project_defaults(WorkflowPermission())

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if "id" in kwargs and not _addressable(kwargs["id"]):
            raise exceptions.NotFound("No workflow run has such an id.")
        if "query_type" in kwargs and not _addressable(kwargs["query_type"]):
            raise exceptions.ValidationError({"query_type": ["Not a valid query name."]})

    def outcome(self, state: Any) -> dict[str, Any]:
        """The run after a start, signal or cancel: all of it for users who may view runs;
        only its id, run id and status for the others (a write permission reads nothing)."""
        data = s.RunSerializer(state).data
        if allowed(self.request.user, Operation.VIEW):
            return dict(data)
        return {key: data[key] for key in ("id", "run_id", "status")}

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, WorkflowClosedError) and not allowed(self.request.user, Operation.VIEW):
            # Without `view`, a finished run and an unknown id look the same.
            exc = WorkflowNotFoundError(exc.workflow_id)
        if isinstance(exc, WorkflowNotFoundError):
            exc = exceptions.NotFound(str(exc))
        elif isinstance(
            exc,
            WorkflowAlreadyStartedError
            | WorkflowClosedError
            | WorkflowNotHeldError
            | WorkflowLimitError
            | RunChanged,
        ):
            exc = Conflict(str(exc))
        elif isinstance(exc, QueryError):
            exc = exceptions.ValidationError({"query_type": [str(exc)]})
        return super().handle_exception(exc)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Payloads stay in the database: a page of runs carries their previews.
        queryset = previews.with_previews(self.filter_queryset(self.get_queryset()))
        page = self.paginate_queryset(queryset)
        rows = page if page is not None else list(queryset)
        data = s.RunSummarySerializer(previews.summaries(list(rows)), many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    @operation(
        summary="Start a run",
        request=s.StartSerializer,
        responses={
            201: OpenApiResponse(s.RunSerializer, description=MINIMAL_WITHOUT_VIEW),
            400: _field_errors(
                unknown_workflow=UNKNOWN_WORKFLOW,
                bad_timeout={"timeout": ["Must be a positive number of seconds."]},
            ),
            **READ_ERRORS,
            409: _error("A run with this id is already running."),
            413: TOO_LARGE,
            415: NOT_JSON,
        },
        examples=[
            OpenApiExample(
                "Tutorial",
                request_only=True,
                value={
                    "workflow": "research",
                    "id": "research-q4-2025",
                    "input": "Q4 revenue analysis",
                    "timeout": 172800,
                },
            )
        ],
    )
    def create(self, request: Request) -> Response:
        body = s.StartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        options = WorkflowOptions(
            id=data.get("id") or None, input=data["input"], timeout=data.get("timeout")
        )
        executor = get_executor()
        try:
            handle = executor.start(data["workflow"], options)
        except InvalidPayloadError as exc:
            raise _payload_error("input", exc) from exc
        except WorkflowNameError as exc:  # unregistered between validation and start
            raise exceptions.ValidationError({"workflow": [str(exc)]}) from exc
        state = executor.describe(handle.id)
        return Response(self.outcome(state), status=status.HTTP_201_CREATED)

    @operation(
        summary="Describe a run",
        parameters=[ID_PARAMETER],
        responses={200: s.RunSerializer, **READ_ERRORS, 404: NOT_FOUND},
    )
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(s.RunSerializer(get_executor().describe(id)).data)

    @operation(
        summary="Event history",
        description="The run's history, oldest first, a page at a time: `limit` events (100 "
        "by default, at most 1,000) after sequence `after`. Follow `next` to the end (it is "
        "null on the last page) for the whole history, or export it with `manage.py workflow "
        "history <id> --json`; `testing.replay` reads the joined `results`.",
        parameters=[ID_PARAMETER],
        responses={
            200: s.EventSerializer(many=True),
            400: _field_errors(bad_limit={"limit": ["Must be a whole number from 1 to 1000."]}),
            **READ_ERRORS,
            404: _error("No run with this workflow id (or no such `run_id` of it)."),
            409: _error("On Temporal: `run_id` is no longer the id's current run."),
        },
    )
    @action(detail=True, methods=["get"], pagination_class=EventPagination, filterset_class=None)
    def events(self, request: Request, id: str) -> Response:
        pages = EventPagination()
        page = pages.read(request, id)
        return pages.get_paginated_response(s.EventSerializer(page.events, many=True).data)

    @operation(
        summary="Send a signal",
        description="Records the signal in the run's history with the requesting user as "
        "sender, and returns at once (202): the workflow reacts on a worker. Send "
        '`{"name": "approval", "payload": true}` to approve the tutorial run.',
        parameters=[ID_PARAMETER],
        request=s.SignalSerializer,
        responses={
            202: OpenApiResponse(s.RunSerializer, description=MINIMAL_WITHOUT_VIEW),
            400: _field_errors(missing_name={"name": ["This field is required."]}),
            **READ_ERRORS,
            404: NOT_FOUND,
            409: _error("The run has already finished; the signal was not recorded."),
            413: TOO_LARGE,
            415: NOT_JSON,
        },
        examples=[
            OpenApiExample(
                "Approve", request_only=True, value={"name": "approval", "payload": True}
            ),
            OpenApiExample(
                "Reject", request_only=True, value={"name": "approval", "payload": False}
            ),
        ],
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def signal(self, request: Request, id: str) -> Response:
        body = s.SignalSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sig = Signal(
            body.validated_data["name"],
            body.validated_data["payload"],
            sender=sender_name(request.user),
        )
        executor = get_executor()
        try:
            executor.signal(id, sig)
        except InvalidPayloadError as exc:
            raise _payload_error("payload", exc) from exc
        state = executor.describe(id)
        return Response(self.outcome(state), status=status.HTTP_202_ACCEPTED)

    @operation(
        summary="Query a run",
        description="Built-in query types: `status`, `result`, `history`; plus the handlers "
        "the workflow set with `ctx.set_query_handler`.",
        parameters=[
            ID_PARAMETER,
            OpenApiParameter("query_type", OpenApiTypes.STR, OpenApiParameter.PATH),
        ],
        responses={
            200: s.QueryResultSerializer,
            400: _field_errors(
                "No handler for this query type, or the handler failed.",
                no_handler={
                    "query_type": [
                        "No query handler named 'bogus'; this run answers: status, result, history."
                    ]
                },
            ),
            **READ_ERRORS,
            404: NOT_FOUND,
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"query/(?P<query_type>[^/]+)",
        pagination_class=None,
        filterset_class=None,
    )
    def query(self, request: Request, id: str, query_type: str) -> Response:
        return Response({"result": get_executor().query(id, query_type)})

    @operation(
        summary="Cancel a run",
        description="Asks the run to stop: its current wait raises WorkflowCanceledError in "
        "the workflow, which may clean up. Asking again while it stops is harmless.",
        parameters=[ID_PARAMETER],
        request=None,
        responses={
            202: OpenApiResponse(s.RunSerializer, description=MINIMAL_WITHOUT_VIEW),
            **READ_ERRORS,
            404: NOT_FOUND,
            409: _error("The run has already finished."),
        },
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def cancel(self, request: Request, id: str) -> Response:
        executor = get_executor()
        executor.cancel(id, sender=sender_name(request.user))
        state = executor.describe(id)
        return Response(self.outcome(state), status=status.HTTP_202_ACCEPTED)

    @operation(
        summary="Retry a held run",
        description='A run held for a fix (`ON_WORKFLOW_ERROR = "hold"`: its workflow code '
        "failed with a bug, see `held`) runs its code again now, on whatever code the workers "
        "have, instead of at its next scheduled retry. Returns at once (202); `held` clears "
        "when a worker's code gets through. Needs the `signal` permission.",
        parameters=[ID_PARAMETER],
        request=None,
        responses={
            202: OpenApiResponse(s.RunSerializer, description=MINIMAL_WITHOUT_VIEW),
            **READ_ERRORS,
            404: NOT_FOUND,
            409: _error("The run is not held (it is fine, or it has finished)."),
        },
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def retry(self, request: Request, id: str) -> Response:
        executor = get_executor()
        executor.retry(id)
        state = executor.describe(id)
        return Response(self.outcome(state), status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    list=operation(
        summary="Pending approvals",
        description="Running runs that are waiting for a signal (oldest wait first): what a "
        "reviewer should act on.",
        responses={200: s.ApprovalSerializer(many=True), 400: FILTER_ERRORS, **READ_ERRORS},
    )
)
class ApprovalViewSet(AuthenticateHeaderMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = s.ApprovalSerializer
    filterset_class = ApprovalFilter
    filter_backends = [FilterBackend]
    pagination_class = RunPagination
    permission_classes = [WorkflowPermission]
    schema = ApiSchema()
    operations = {"list": Operation.VIEW}

    def get_permissions(self) -> list[Any]:
        return with_project_defaults(WorkflowPermission())

    def get_queryset(self) -> QuerySet[WorkflowRun]:
        waiting = WorkflowRun.objects.filter(
            status=Status.RUNNING.value, waiting_for__startswith="signal:"
        ).order_by("waiting_since", "id")
        return previews.with_previews(waiting, payloads=("input",))


@extend_schema_view(
    list=operation(
        summary="Workers",
        description="Every `manage.py runworker` that announced itself with its heartbeat, live "
        "ones first: host, pid, executor, the queues it serves, concurrency, last beat. A worker "
        "that stopped cleanly is gone; one that died is listed with `live: false` until the "
        "live workers forget it (15 minutes). A short list, not paginated.",
        responses={200: s.WorkerSerializer(many=True), **READ_ERRORS},
    )
)
class WorkerViewSet(AuthenticateHeaderMixin, viewsets.GenericViewSet):
    queryset = WorkerHeartbeat.objects.all()
    serializer_class = s.WorkerSerializer
    pagination_class = None
    filter_backends: list[Any] = []
    permission_classes = [WorkflowPermission]
    schema = ApiSchema()
    operations = {"list": Operation.VIEW}

    def get_permissions(self) -> list[Any]:
        return with_project_defaults(WorkflowPermission())

    def list(self, request: Request) -> Response:
        return Response(s.WorkerSerializer(heartbeats.workers(fresh=True), many=True).data)
