"""URLs of the demo project: the admin, the workflows REST API and its OpenAPI schema/docs.

The schema and its two browsable pages are for signed-in users only: the schema lists the
registered workflow names. Anonymous requests for the schema get 401, for the pages the login.
"""

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path, reverse_lazy
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from beluga_workflows.api.views import AuthenticateHeaderMixin


class SchemaView(AuthenticateHeaderMixin, SpectacularAPIView):
    pass


class RedocView(SpectacularRedocView):
    # drf-spectacular's page loads web fonts from Google; ours uses the browser's own.
    template_name = "api/redoc.html"


def _signed_in(view: object) -> object:
    return login_required(view, login_url=reverse_lazy("rest_framework:login"))


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    # Schema and docs come before the API include so its router can never shadow them.
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path(
        "api/docs/",
        _signed_in(SpectacularSwaggerView.as_view(url_name="schema")),
        name="swagger-ui",
    ),
    path("api/redoc/", _signed_in(RedocView.as_view(url_name="schema")), name="redoc"),
    path("api/", include("beluga_workflows.api.urls")),
    # Login/logout links for DRF's browsable API.
    path("api-auth/", include("rest_framework.urls")),
]
