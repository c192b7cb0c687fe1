"""The executor registry: ``workflow.new(name)`` builds executors registered by name."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.core.signals import setting_changed

from ..conf import beluga_settings
from ..errors import ExecutorNotFoundError
from ..options import Config
from .base import DurableExecutor

Factory = Callable[[Config], DurableExecutor]

_lock = threading.Lock()
_factories: dict[str, Factory] = {}
_configured: DurableExecutor | None = None


def register(name: str, factory: Factory) -> None:
    if not name or not callable(factory):
        raise ValueError("register() needs a name and a factory taking a workflow.Config.")
    with _lock:
        _factories[name] = factory


def list_executors() -> list[str]:
    with _lock:
        return sorted(_factories)


def new(name: str | None = None, config: Config | None = None) -> DurableExecutor:
    """Build the executor registered as ``name`` (default: the one the settings choose)."""
    if name is None:
        return get_executor()
    with _lock:
        factory = _factories.get(name)
    if factory is None:
        raise ExecutorNotFoundError(name, list_executors())
    return factory(config or Config())


def get_executor() -> DurableExecutor:
    """The executor chosen by ``BELUGA_WORKFLOWS["EXECUTOR"]``, built once per process."""
    global _configured
    with _lock:
        current = _configured
    if current is None or current.name != beluga_settings.EXECUTOR:
        current = new(beluga_settings.EXECUTOR)
        with _lock:
            _configured = current
    return current


def reset_configured(**kwargs: Any) -> None:
    """Forget the configured executor (connected to ``setting_changed`` for tests)."""
    global _configured
    if kwargs.get("setting", "BELUGA_WORKFLOWS") != "BELUGA_WORKFLOWS":
        return
    with _lock:
        _configured = None


setting_changed.connect(reset_configured)


def _default(config: Config) -> DurableExecutor:
    from .default import DefaultExecutor

    return DefaultExecutor(config)


def _temporal(config: Config) -> DurableExecutor:
    from .temporal import TemporalExecutor

    return TemporalExecutor(config)


register("default", _default)
register("temporal", _temporal)
