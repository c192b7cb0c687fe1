"""Finding workflow and activity functions by name, in any process.

A run stores the name of its workflow: the public name given by ``@workflow.defn(name=...)``
or, for a plain function, its import reference ``module:qualname``. Activities are stored by
reference. Only public names may be started from REST or the admin; references are for
Python callers, who already hold the function.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from .errors import WorkflowNameError

_lock = threading.Lock()
_by_name: dict[str, Callable[..., Any]] = {}
_ATTR = "__beluga_workflow_name__"


def defn(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Register a workflow function under a public name (default: the function's name)."""

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        public = name or f.__name__
        with _lock:
            known = _by_name.get(public)
            if known is not None and reference(known) != reference(f):
                raise WorkflowNameError(
                    f"Workflow name {public!r} is already used by {reference(known)}."
                )
            _by_name[public] = f
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
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise WorkflowNameError(f"Cannot import {name!r}: {exc}") from exc
    return obj  # type: ignore[no-any-return]


def display_name(ref: str) -> str:
    """``pkg.mod:func`` -> ``func`` for humans."""
    return ref.rpartition(":")[2] or ref


def _known() -> str:
    return ", ".join(public_names()) or "none"
