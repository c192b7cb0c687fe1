"""Pagination of the REST API: numbered pages of runs, and a sequence cursor over a history.

* :class:`RunPagination` — the run lists (``workflows/``, ``approvals/``): ``?page=`` and
  ``?page_size=`` up to 500.
* :class:`EventPagination` — ``workflows/{id}/events/``: ``?limit=`` events (100 by default, at
  most 1,000) with a sequence above ``?after=``, oldest first; the answer's ``next`` link asks
  for the following page of the same run (``?run_id=``), and is ``null`` on the last page.
  A history is read a page at a time (:mod:`beluga_workflows.history_pages`), never whole.

A bad value of any of these parameters is a 400 naming the parameter, like a bad filter
value: DRF would answer 404 for a page past the last one and silently use the default for a
bad size.
"""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import BasePagination, PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import replace_query_param

from ..history_pages import DEFAULT_LIMIT, MAX_LIMIT, HistoryPage, read_page

#: The largest event sequence PostgreSQL's integer column holds.
MAX_SEQUENCE = 2**31 - 1


def _whole_number(request: Request, name: str, low: int, high: int, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise exceptions.ValidationError({name: [f"Must be a whole number from {low} to {high}."]})
    return value


class RunPagination(PageNumberPagination):
    """The project's ``PAGE_SIZE`` by default; scripts may ask for up to 500 per page."""

    page_size_query_param = "page_size"
    page_size_query_description = "Runs per page, from 1 to 500; the project's PAGE_SIZE if absent."
    max_page_size = 500

    def get_page_size(self, request: Request) -> int | None:
        # Read per request: the class attribute froze PAGE_SIZE at import time.
        self.page_size = api_settings.PAGE_SIZE or 50
        return _whole_number(
            request, self.page_size_query_param, 1, self.max_page_size, self.page_size
        )

    # Django's paginator says why: not an integer, less than 1, or past the last page.
    invalid_page_message = "{message}."

    def get_page_number(self, request: Request, paginator: Any) -> Any:
        # DRF reads an empty ``?page=`` as page 1; the schema says a whole number.
        if request.query_params.get(self.page_query_param, None) == "":
            message = "Must be a whole number from 1 (or left out for the first page)."
            raise exceptions.ValidationError({self.page_query_param: [message]})
        return super().get_page_number(request, paginator)

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound as exc:
            raise exceptions.ValidationError({self.page_query_param: [str(exc.detail)]}) from None

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_page_size,
                }
        return parameters


class EventPagination(BasePagination):
    """A run's history, a page at a time, by sequence: see the module docstring."""

    limit_query_param = "limit"
    after_query_param = "after"
    run_query_param = "run_id"

    def read(self, request: Request, workflow_id: str) -> HistoryPage:
        """The page the request asks for; a 400 naming each bad parameter."""
        self.request = request
        errors: dict[str, Any] = {}

        def number(name: str, low: int, high: int, default: int) -> int:
            try:
                return _whole_number(request, name, low, high, default)
            except exceptions.ValidationError as exc:
                errors.update(exc.detail)  # type: ignore[arg-type]
                return default

        limit = number(self.limit_query_param, 1, MAX_LIMIT, DEFAULT_LIMIT)
        after = number(self.after_query_param, 0, MAX_SEQUENCE, 0)
        run_id = request.query_params.get(self.run_query_param) or None
        if run_id is not None:
            try:
                run_id = str(uuid.UUID(run_id))
            except ValueError:
                errors[self.run_query_param] = ["Must be a run id (a UUID)."]
        if errors:
            raise exceptions.ValidationError(errors)
        self.page = read_page(workflow_id, after, limit, run_id)
        return self.page

    def get_next_link(self) -> str | None:
        if not self.page.more or self.page.last_sequence is None:
            return None
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, self.after_query_param, self.page.last_sequence)
        return replace_query_param(url, self.run_query_param, self.page.run_id)  # type: ignore[no-any-return]

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "id": self.page.workflow_id,
                "run_id": self.page.run_id,
                "next": self.get_next_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["id", "run_id", "next", "results"],
            "properties": {
                "id": {"type": "string", "description": "The workflow id."},
                "run_id": {
                    "type": "string",
                    "format": "uuid",
                    "description": "The run these events belong to.",
                },
                "next": {
                    "type": "string",
                    "format": "uri",
                    "nullable": True,
                    "description": "The next page of the same run; null on the last page.",
                    "example": "http://api.example.org/workflows/research-q4/events/"
                    "?after=100&run_id=4759afcf-c6f4-4f42-9460-1e18cbc952c3",
                },
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": name,
                "required": False,
                "in": "query",
                "description": description,
                "schema": schema,
            }

        return [
            query(
                self.limit_query_param,
                f"Events per page, from 1 to {MAX_LIMIT}; {DEFAULT_LIMIT} if absent.",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            ),
            query(
                self.after_query_param,
                "Only events with a sequence above this one (the last one of the page before).",
                {"type": "integer", "minimum": 0, "maximum": MAX_SEQUENCE},
            ),
            query(
                self.run_query_param,
                "The run to read (the `next` link sets it): an id run again later still "
                "answers for this run. Default: the running run of the id, else its latest.",
                {"type": "string", "format": "uuid"},
            ),
        ]
