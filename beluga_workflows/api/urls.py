"""URLs of the REST API, with its OpenAPI document and docs pages; mount them anywhere::

    path("api/", include("beluga_workflows.api.urls")),

``workflows/`` (list, start, detail, ``events/``, ``signal/``, ``query/<type>/``,
``cancel/``, ``retry/``), ``approvals/`` and ``workers/`` under a browsable API root; ``schema/``
(OpenAPI 3 of this API only), ``docs/`` (Swagger UI) and ``redoc/``, all for signed-in
users. The two pages need ``drf_spectacular`` in ``INSTALLED_APPS`` (their templates); the
schema does not.
"""

from typing import Any

from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import APIRootView, DefaultRouter

from .authentication import AuthenticateHeaderMixin
from .permissions import with_project_defaults
from .schema import APP_NAME, SchemaView, redoc_view, swagger_view
from .views import ApprovalViewSet, WorkerViewSet, WorkflowViewSet


class RootView(AuthenticateHeaderMixin, APIRootView):
    """The API root, answering anonymous clients 401 like every endpoint under it."""

    def get_permissions(self) -> list[Any]:
        return with_project_defaults(IsAuthenticated())


class Router(DefaultRouter):
    APIRootView = RootView


app_name = APP_NAME

router = Router()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("approvals", ApprovalViewSet, basename="approval")
router.register("workers", WorkerViewSet, basename="worker")

urlpatterns = [
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", swagger_view(), name="docs"),
    path("redoc/", redoc_view(), name="redoc"),
    *router.urls,
]
