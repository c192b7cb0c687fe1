"""URLs of the REST API; the demo project mounts them at ``/api/``.

``workflows/`` (list, start, detail, ``events/``, ``signal/``, ``query/<type>/``,
``cancel/``) and ``approvals/``, under a browsable API root.
"""

from rest_framework.routers import APIRootView, DefaultRouter

from .views import ApprovalViewSet, AuthenticateHeaderMixin, WorkflowViewSet


class RootView(AuthenticateHeaderMixin, APIRootView):
    """The API root, answering anonymous clients 401 like every endpoint under it."""


class Router(DefaultRouter):
    APIRootView = RootView


app_name = "beluga_workflows_api"

router = Router()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("approvals", ApprovalViewSet, basename="approval")

urlpatterns = router.urls
