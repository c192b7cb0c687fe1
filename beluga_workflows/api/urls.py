"""URLs of the REST API; the demo project mounts them at ``/api/``.

``workflows/`` (list, start, detail, ``events/``, ``signal/``, ``query/<type>/``,
``cancel/``) and ``approvals/``, under a browsable API root.
"""

from rest_framework.routers import DefaultRouter

from .views import ApprovalViewSet, WorkflowViewSet

app_name = "beluga_workflows_api"

router = DefaultRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("approvals", ApprovalViewSet, basename="approval")

urlpatterns = router.urls
