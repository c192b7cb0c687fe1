"""URLs of the demo project: the admin, and the workflows REST API with its OpenAPI schema and
docs pages (``/api/schema/``, ``/api/docs/``, ``/api/redoc/``, shipped by the package)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("beluga_workflows.api.urls")),
    # Login/logout links for DRF's browsable API (and the docs pages' login).
    path("api-auth/", include("rest_framework.urls")),
]
