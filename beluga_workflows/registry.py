"""Finding workflow and activity functions by name, in any process.

A run stores the name of its workflow: the public name given by ``@workflow.defn(name=...)``
or, for a plain function, its import reference ``module:qualname``. Activities are stored by
reference. Only public names may be started from REST or the admin; references are for
Python callers, who already hold the function.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import sysconfig
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from .errors import UntrustedReferenceError, WorkflowNameError

_lock = threading.Lock()
_by_name: dict[str, Callable[..., Any]] = {}
_approval_signals: dict[str, str] = {}
_ATTR = "__beluga_workflow_name__"

#: The signal the admin's Approve / Reject buttons send (``true`` / ``false``) unless a workflow
#: names its own with ``@workflow.defn(approval_signal=...)``.
DEFAULT_APPROVAL_SIGNAL = "approval"


def defn(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    approval_signal: str = DEFAULT_APPROVAL_SIGNAL,
) -> Any:
    """Register a workflow function under a public name (default: the function's name).

    ``approval_signal`` names the signal the workflow waits on for a human decision: the
    admin shows Approve / Reject for a run waiting on it, and sends it ``true`` / ``false``.
    """
    if not isinstance(approval_signal, str) or not approval_signal.strip():
        raise ValueError(f"approval_signal must be a signal name, not {approval_signal!r}.")

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        public = name or f.__name__
        with _lock:
            known = _by_name.get(public)
            if known is not None and reference(known) != reference(f):
                raise WorkflowNameError(
                    f"Workflow name {public!r} is already used by {reference(known)}."
                )
            _by_name[public] = f
            if approval_signal == DEFAULT_APPROVAL_SIGNAL:
                _approval_signals.pop(public, None)
            else:
                _approval_signals[public] = approval_signal
        setattr(f, _ATTR, public)
        return f

    return register(fn) if fn is not None else register


def reference(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or "<locals>" in qualname or "<lambda>" in qualname:
        raise WorkflowNameError(
            f"{fn!r} is not a module-level function; workflows and activities must be "
            "importable by other processes."
        )
    return f"{module}:{qualname}"


def workflow_name(fn: Callable[..., Any]) -> str:
    """The name a run records: the public name if registered, else the import reference."""
    return getattr(fn, _ATTR, None) or reference(fn)


def approval_signal(workflow: str) -> str:
    """The approval signal of the workflow with this public name (or reference)."""
    with _lock:
        return _approval_signals.get(workflow, DEFAULT_APPROVAL_SIGNAL)


def custom_approval_signals() -> dict[str, str]:
    """Public name → approval signal, for the workflows that chose their own."""
    with _lock:
        return dict(_approval_signals)


def public_names() -> list[str]:
    with _lock:
        return sorted(_by_name)


def is_public(name: str) -> bool:
    with _lock:
        return name in _by_name


def resolve_public(name: str) -> Callable[..., Any]:
    with _lock:
        fn = _by_name.get(name)
    if fn is None:
        raise WorkflowNameError(f"Unknown workflow {name!r}. Registered workflows: {_known()}.")
    return fn


def resolve(name: str, reference: str = "") -> Callable[..., Any]:
    """A public name or a ``module:qualname`` reference, imported if needed.

    ``reference`` is where a named workflow was defined: a worker that has not imported that
    module yet (it is not an app's ``workflows.py``) finds the function there.
    """
    with _lock:
        fn = _by_name.get(name)
    if fn is not None:
        return fn
    if reference and reference != name:
        return resolve(reference)
    if ":" not in name:
        raise WorkflowNameError(f"Unknown workflow {name!r}. Registered workflows: {_known()}.")
    module_name, _, qualname = name.partition(":")
    try:
        if not _project_module(module_name):
            raise UntrustedReferenceError(
                f"{name!r} is not part of this project: workers run only functions of its own "
                "modules (under settings.BASE_DIR, or in an installed app with a workflows module)."
            )
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise WorkflowNameError(f"Cannot import {name!r}: {exc}") from exc
    if not inspect.isfunction(obj) or obj.__module__ != module_name:
        raise UntrustedReferenceError(
            f"{name!r} is not a function defined in {module_name!r}; workers run only the "
            "project's own workflow and activity functions."
        )
    return obj  # type: ignore[no-any-return]


@cache
def _project_module(module_name: str) -> bool:
    """Whether ``module_name`` is this project's code, checked package by package before
    anything is imported (finding ``a.b`` imports ``a``, which must pass first)."""
    parts = module_name.split(".")
    if not all(part.isidentifier() for part in parts):
        return False
    for depth in range(1, len(parts) + 1):
        spec = importlib.util.find_spec(".".join(parts[:depth]))
        if spec is None or not spec.has_location or not spec.origin:
            return False  # built in, frozen, or a namespace package
        if not _in_project(Path(spec.origin)):
            return False
    return True


def _in_project(origin: Path) -> bool:
    from django.apps import apps
    from django.conf import settings

    path = origin.resolve()
    for app in apps.get_app_configs():
        if path.is_relative_to(Path(app.path).resolve()) and _has_workflows(app.name):
            return True
    base = getattr(settings, "BASE_DIR", None)
    if base is None or not path.is_relative_to(Path(base).resolve()):
        return False
    python = {sys.prefix, sys.base_prefix, *sysconfig.get_paths().values()}
    return not any(path.is_relative_to(Path(p).resolve()) for p in python)


def display_name(ref: str) -> str:
    """``pkg.mod:func`` -> ``func`` for humans."""
    return ref.rpartition(":")[2] or ref


def _known() -> str:
    return ", ".join(public_names()) or "none"


def _has_workflows(app_name: str) -> bool:
    """An installed app that contributes workflows: it has a ``workflows`` module."""
    return importlib.util.find_spec(f"{app_name}.workflows") is not None
