"""URLs of the REST API (filled in by the API module)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
