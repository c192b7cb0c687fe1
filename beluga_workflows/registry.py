"""Finding workflow and activity functions by name, in any process.

A run stores the name of its workflow: the public name given by ``@workflow.defn(name=...)``
or, for a plain function, its import reference ``module:qualname``. Activities are known by a
stable name (``@workflow.activity(name=...)``, else the function's name; see below). Only
public names may be started from REST or the admin; references are for Python callers, who
already hold the function.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import sysconfig
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from .errors import UntrustedReferenceError, WorkflowNameError, is_bug

_lock = threading.Lock()
_by_name: dict[str, Callable[..., Any]] = {}
_approval_signals: dict[str, str] = {}
_on_error: dict[str, str] = {}
_declared: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
_ATTR = "__beluga_workflow_name__"

#: The signal the admin's Approve / Reject buttons send (``true`` / ``false``) unless a workflow
#: names its own with ``@workflow.defn(approval_signal=...)``.
DEFAULT_APPROVAL_SIGNAL = "approval"

#: What a bug in workflow code does to the run (``BELUGA_WORKFLOWS["ON_WORKFLOW_ERROR"]``, or
#: ``@workflow.defn(on_error=...)``): ``fail`` it, or ``hold`` it running until fixed code
#: replays it (docs/errors.md).
ON_ERROR_CHOICES = ("fail", "hold")


def defn(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    approval_signal: str = DEFAULT_APPROVAL_SIGNAL,
    on_error: str | None = None,
    signals: Sequence[str] = (),
    queries: Sequence[str] = (),
) -> Any:
    """Register a workflow function under a public name (default: the function's name).

    ``approval_signal`` names the signal the workflow waits on for a human decision: the
    admin shows Approve / Reject for a run waiting on it, and sends it ``true`` / ``false``.
    ``on_error`` (``"fail"`` or ``"hold"``) overrides ``ON_WORKFLOW_ERROR`` for this workflow.
    ``signals`` and ``queries`` declare the names the workflow answers, so Temporal's tools
    (``temporal workflow metadata``, the UI) list them from the run's start.
    """
    if not isinstance(approval_signal, str) or not approval_signal.strip():
        raise ValueError(f"approval_signal must be a signal name, not {approval_signal!r}.")
    declared = (_names(signals, "signals"), _names(queries, "queries"))
    if on_error is not None and on_error not in ON_ERROR_CHOICES:
        raise ValueError(
            f"on_error must be 'fail' or 'hold' (or None for ON_WORKFLOW_ERROR), not {on_error!r}."
        )

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
            if on_error is None:
                _on_error.pop(public, None)
            else:
                _on_error[public] = on_error
            _declared[public] = declared
        setattr(f, _ATTR, public)
        return f

    return register(fn) if fn is not None else register


def _names(names: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"{what} must be a list of names, not {names!r}.")
    return tuple(names)


def declared(workflow: str) -> tuple[list[str], list[str]]:
    """The signal and query names the workflow with this public name declared (its own
    approval signal among the signals)."""
    with _lock:
        signals, queries = _declared.get(workflow, ((), ()))
        approval = _approval_signals.get(workflow)
    return [*signals, *([approval] if approval and approval not in signals else [])], [*queries]


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


def on_error(workflow: str) -> str | None:
    """The workflow's own ``on_error`` choice (by public name or reference), if it made one."""
    with _lock:
        return _on_error.get(workflow)


def holds_run(workflow: str, error: BaseException | None, default: str) -> bool:
    """Whether this failure of the workflow's code holds its run for a fix: a bug
    (:func:`~beluga_workflows.errors.is_bug`) under ``hold`` — the workflow's own ``on_error``,
    else ``default`` (``ON_WORKFLOW_ERROR``)."""
    return error is not None and is_bug(error) and (on_error(workflow) or default) == "hold"


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


# Activities ------------------------------------------------------------------------------
#
# An activity is known by a stable name: the name ``@workflow.activity(name=...)`` gave it, else
# its function's name. Runs record it in their history, and on Temporal it is the activity
# type, so moving a module does not change it. A worker finds the function by that name; the
# import reference is only a hint it may follow, to a function of a workflow module or imported
# into one, or declared with ``@workflow.activity``.

_activities: dict[str, Callable[..., Any]] = {}
#: (name, reference) -> the function a worker checked for it (scanning modules costs).
_trusted_activities: dict[tuple[str, str], Callable[..., Any]] = {}
_ACTIVITY_ATTR = "__beluga_activity_name__"


def activity(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Register an activity under a stable name (default: the function's name)."""
    if name is not None and (not isinstance(name, str) or not name.strip() or ":" in name):
        raise ValueError(f"An activity name must be a non-empty string without ':', not {name!r}.")

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        public = name or f.__name__
        with _lock:
            known = _activities.get(public)
            if known is not None and reference(known) != reference(f):
                raise WorkflowNameError(
                    f"Activity name {public!r} is already used by {reference(known)}."
                )
            _activities[public] = f
        setattr(f, _ACTIVITY_ATTR, public)
        return f

    return register(fn) if fn is not None else register


def activity_name(fn: Callable[..., Any]) -> str:
    """The name a step records and Temporal's activity type: the registered name, else
    the function's name."""
    return getattr(fn, _ACTIVITY_ATTR, None) or fn.__name__


def resolve_activity(name: str, reference: str = "") -> Callable[..., Any]:
    """The function a worker runs for the activity ``name``.

    ``reference`` (``module:qualname``, where the function was when the step was scheduled)
    is followed first, only to a function of that name that is an activity of the project's
    workflows (declared, or a function of a workflow module or imported into one);
    if it does not import (the module moved since), or without one, the name decides: the
    function registered under it, else the one function of that name in the project's
    workflow modules.
    """
    with _lock:
        trusted = _trusted_activities.get((name, reference))
    if trusted is not None:
        return trusted  # found and checked before: a module once imported stays
    problem: WorkflowNameError | None = None
    if reference:
        try:
            fn = resolve(reference)
        except WorkflowNameError as exc:
            problem = exc  # moved or renamed since, or never the project's: go by the name
        else:
            if activity_name(fn) != name:
                raise UntrustedReferenceError(
                    f"{reference!r} is not the activity {name!r} (it is {activity_name(fn)!r})."
                )
            if not _workflows_activity(fn):
                raise UntrustedReferenceError(
                    f"{reference!r} is no activity of the project's workflows: declare it with "
                    "@workflow.activity, or import it into a workflows module."
                )
            with _lock:
                _trusted_activities[(name, reference)] = fn
            return fn
    with _lock:
        registered = _activities.get(name)
    if registered is not None:
        return registered
    found = _workflow_module_activities().get(name, {})
    if len(found) == 1:
        return next(iter(found.values()))
    if found:
        raise WorkflowNameError(_ambiguous(name, sorted(found)))
    if problem is not None:
        raise problem
    raise WorkflowNameError(
        f"Unknown activity {name!r}: no @workflow.activity has that name and no function of "
        "that name is in the project's workflow modules. Workers run only the project's "
        "workflows and the activities they call."
    )


def check_activity_name(name: str, ref: str) -> None:
    """Refuse to schedule the function ``ref`` as ``name`` when ``@workflow.activity`` gave
    that name to another function: a step's name (Temporal's activity type) means one
    function."""
    with _lock:
        registered = _activities.get(name)
    if registered is not None and reference(registered) != ref:
        raise WorkflowNameError(
            f"Activity {ref} would be known as {name!r}, a name @workflow.activity gave to "
            f"{reference(registered)}: give it a name of its own with "
            '@workflow.activity(name="...").'
        )


def _ambiguous(name: str, refs: list[str]) -> str:
    return (
        f"Several activities are named {name!r} ({', '.join(refs)}), and an activity is known "
        f'by its name: give all but one a name of their own with @workflow.activity(name="...").'
    )


def is_workflow_module(module_name: str) -> bool:
    """A module meant to hold workflows: ``workflows`` (an app's ``workflows.py``), a
    ``workflows_*`` module or a module of a ``workflows`` package, or one that defines a
    registered workflow or activity."""
    return _named_for_workflows(module_name) or module_name in _registered_modules()


def _named_for_workflows(module_name: str) -> bool:
    parts = module_name.split(".")
    return "workflows" in parts or parts[-1].startswith("workflows_")


def _registered_modules() -> set[str]:
    with _lock:
        registered = [*_by_name.values(), *_activities.values()]
    return {getattr(fn, "__module__", "") for fn in registered}


def resolve_workflow(name: str, reference: str = "") -> Callable[..., Any]:
    """What a worker runs for a workflow type it was handed (a Temporal client may start any):
    a registered workflow, or a function of one of the project's workflow modules."""
    fn = resolve(name, reference)
    if getattr(fn, _ATTR, None) is None and not is_workflow_module(fn.__module__):
        raise UntrustedReferenceError(
            f"{name!r} is not a workflow: workers run only registered workflows "
            "(@workflow.defn) and the functions of workflow modules (an app's workflows.py)."
        )
    return fn


def _workflows_activity(fn: Callable[..., Any]) -> bool:
    """Declared with ``@workflow.activity``, or a function of a workflow module (defined
    there, or imported into one)."""
    if getattr(fn, _ACTIVITY_ATTR, None) is not None or is_workflow_module(fn.__module__):
        return True
    return any(fn in found.values() for found in _workflow_module_activities().values())


def _workflow_module_activities() -> dict[str, dict[str, Callable[..., Any]]]:
    """Activity name -> {reference: function} of the project's functions found in the
    workflow modules imported so far (defined there or imported into them)."""
    found: dict[str, dict[str, Callable[..., Any]]] = {}
    registered = _registered_modules()
    for module_name, module in list(sys.modules.items()):
        if module is None or not (_named_for_workflows(module_name) or module_name in registered):
            continue
        if not _project_module(module_name):
            continue
        for value in list(vars(module).values()):
            if not inspect.isfunction(value) or getattr(value, _ATTR, None) is not None:
                continue
            try:
                ref = reference(value)
            except WorkflowNameError:
                continue
            if _project_module(value.__module__):
                found.setdefault(activity_name(value), {})[ref] = value
    return found
