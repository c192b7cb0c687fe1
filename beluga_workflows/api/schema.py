"""The OpenAPI side of the REST API, made to sit in someone else's project.

* Components carry our prefix (``BelugaRun``, ``BelugaEvent``, ``BelugaStatusEnum``, …), so
  they never collide with the host project's own ``Run`` or ``StatusEnum``.
* :class:`ApiSchema` is drf-spectacular's schema class, also readable by DRF's own
  ``manage.py generateschema`` (which would otherwise crash on drf-spectacular annotations).
* :class:`SchemaView` serves a document of this API only, whatever the host's
  ``DEFAULT_SCHEMA_CLASS`` or other views are; it and the Swagger / Redoc pages are for
  signed-in users, and :mod:`beluga_workflows.api.urls` mounts all three under the API.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.urls import NoReverseMatch, reverse
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ComponentRegistry, build_mock_request
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from .authentication import AuthenticateHeaderMixin

PREFIX = "Beluga"
APP_NAME = "beluga_workflows_api"


def component(name: str) -> Callable[[type], type]:
    """Name a serializer's schema component ``Beluga<name>``."""
    return extend_schema_serializer(component_name=PREFIX + name)


# --- DRF's own schema generator --------------------------------------------------------------


def _path_regex(path: str) -> str:
    """A URL regex for a DRF-style path (``/api/workflows/{id}/``), as drf-spectacular wants."""
    parts = re.split(r"\{(\w+)\}", path.lstrip("/"))
    regex = "".join(
        re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)"
        for index, part in enumerate(parts)
    )
    return f"^{regex}$"


def _both_generators(get_operation: Callable[..., Any]) -> Callable[..., Any]:
    """Let ``get_operation`` also answer DRF's generator, which passes only (path, method)."""

    @functools.wraps(get_operation)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, ApiSchema):
            # DRF calls a custom action's schema *class* (what drf-spectacular stores for
            # actions) as if it were bound: no view to read, so a pointer to the real document.
            path, method = self, args[0]
            return {
                "operationId": _operation_id(path, method),
                "description": "Documented in this API's own OpenAPI document (`schema/`).",
                "responses": {"default": {"description": "See `schema/`."}},
            }
        if kwargs or len(args) != 2:  # drf-spectacular's own call
            return get_operation(self, *args, **kwargs)
        path, method = args
        registry = ComponentRegistry()
        if getattr(self.view, "request", None) is None:
            self.view.request = build_mock_request(method, path, self.view, None)
        operation = get_operation(self, path, _path_regex(path), "", method, registry)
        self.drf_components = registry.build({}).get("schemas", {})
        return operation

    return wrapper


def _operation_id(path: str, method: str) -> str:
    words = re.findall(r"\w+", path)
    return "_".join([*words, method.lower()])


def operation(**kwargs: Any) -> Callable[[Any], Any]:
    """``@extend_schema`` built on :class:`ApiSchema`, not on the project's
    ``DEFAULT_SCHEMA_CLASS`` (which ``@extend_schema`` would otherwise extend: DRF's own
    ``AutoSchema`` in a project that never set it, and drf-spectacular cannot use that)."""
    annotate = extend_schema(**kwargs)

    def decorate(method: Any) -> Any:
        if getattr(method, "schema", None) is None:
            method.schema = ApiSchema
        return annotate(method)

    return decorate


class ApiSchema(AutoSchema):
    """drf-spectacular's ``AutoSchema`` for our views, whatever the project's default is.

    ``@extend_schema`` subclasses it per operation; every subclass gets a ``get_operation``
    that DRF's ``generateschema`` can call too, and :meth:`get_components` hands DRF the
    components that operation referred to.
    """

    drf_components: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "get_operation" in cls.__dict__:
            cls.get_operation = _both_generators(cls.__dict__["get_operation"])  # type: ignore[method-assign]

    get_operation = _both_generators(AutoSchema.get_operation)  # type: ignore[assignment]

    def get_components(self, *args: Any) -> dict[str, Any]:
        # Called unbound on a schema class by DRF too (see _both_generators): nothing then.
        return dict(self.drf_components) if isinstance(self, ApiSchema) else {}


# --- Serving the document --------------------------------------------------------------------


def only_this_api(endpoints: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """drf-spectacular preprocessing hook: keep the endpoints of this API, drop the host's."""
    return [e for e in endpoints if e[3].cls.__module__ == "beluga_workflows.api.views"]


def prefix_components(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook, after its enum hook: the enum components it named
    after our fields (``StatusEnum``) get our prefix too, and every reference follows."""
    schemas = result.get("components", {}).get("schemas", {})
    renamed = {name: name if name.startswith(PREFIX) else PREFIX + name for name in schemas}
    result["components"]["schemas"] = {renamed[name]: body for name, body in schemas.items()}

    def follow(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_SCHEMAS):
                node["$ref"] = _SCHEMAS + renamed.get(ref[len(_SCHEMAS) :], ref[len(_SCHEMAS) :])
            for value in node.values():
                follow(value)
        elif isinstance(node, list):
            for value in node:
                follow(value)

    follow(result)
    return result


_SCHEMAS = "#/components/schemas/"

SETTINGS = {
    "TITLE": "beluga_workflows API",
    "DESCRIPTION": "Start, signal, query and cancel durable workflow runs.",
    "VERSION": "1",
    "PREPROCESSING_HOOKS": ["beluga_workflows.api.schema.only_this_api"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "beluga_workflows.api.schema.prefix_components",
    ],
}


def document(request: Any = None, public: bool = True) -> dict[str, Any]:
    """This API's OpenAPI document, as :class:`SchemaView` serves it."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.settings import patched_settings

    with patched_settings(SETTINGS):
        schema: dict[str, Any] = SchemaGenerator().get_schema(request=request, public=public)
    return schema


class SchemaView(AuthenticateHeaderMixin, SpectacularAPIView):
    """The OpenAPI 3 document of this API (signed-in users only: it names every workflow)."""

    custom_settings = SETTINGS

    def get_permissions(self) -> list[Any]:
        from rest_framework.permissions import IsAuthenticated

        return [IsAuthenticated()]


class RedocView(SpectacularRedocView):
    # drf-spectacular's page loads web fonts from Google; ours uses the browser's own.
    template_name = "beluga_workflows/api/redoc.html"


def _login_url() -> str:
    """DRF's login page if the project mounted ``rest_framework.urls``, else Django's."""
    try:
        return reverse("rest_framework:login")
    except NoReverseMatch:
        from django.conf import settings

        return str(settings.LOGIN_URL)


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """The docs pages: anonymous visitors are sent to the login page first; without
    ``drf_spectacular`` in ``INSTALLED_APPS`` (the pages' templates) a 404 says so."""

    @functools.wraps(view)
    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        from django.apps import apps
        from django.http import HttpResponseNotFound

        if not apps.is_installed("drf_spectacular"):
            return HttpResponseNotFound(
                "The API docs pages need 'drf_spectacular' in INSTALLED_APPS. The OpenAPI "
                "document itself is served at schema/ next to this page.",
                content_type="text/plain",
            )
        return login_required(view, login_url=_login_url())(request, *args, **kwargs)

    return wrapper


def swagger_view() -> Callable[..., Any]:
    return signed_in(SpectacularSwaggerView.as_view(url_name=f"{APP_NAME}:schema"))


def redoc_view() -> Callable[..., Any]:
    return signed_in(RedocView.as_view(url_name=f"{APP_NAME}:schema"))
