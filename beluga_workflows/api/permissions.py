"""The REST API's DRF permission over the shared table in :mod:`beluga_workflows.permissions`."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.settings import api_settings

from ..permissions import Operation, allowed, denial_message


class WorkflowPermission(BasePermission):
    """DRF permission: the view's ``operations`` maps each action to an :class:`Operation`.

    Unlike DRF's ``DjangoModelPermissions`` it also requires ``view_workflowrun`` for reads,
    and it knows the custom ``signal`` and ``cancel`` actions. Anonymous users are refused
    here, which DRF turns into 401 (the views announce an authentication scheme).
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        operations: dict[str, Operation] = getattr(view, "operations", {})
        operation = operations.get(getattr(view, "action", None) or "", Operation.VIEW)
        if allowed(request.user, operation):
            return True
        self.message = denial_message(request.user, operation)
        return False


def with_project_defaults(*ours: BasePermission) -> list[BasePermission]:
    """Our permission, then every class in the project's ``DEFAULT_PERMISSION_CLASSES``: all must
    allow. A project that limits its whole API (e.g. ``IsAdminUser``) limits this one too;
    DRF's own default, ``AllowAny``, adds nothing. Read per request, as DRF does."""
    return [*ours, *(cls() for cls in api_settings.DEFAULT_PERMISSION_CLASSES)]
