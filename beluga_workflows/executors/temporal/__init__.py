"""The Temporal executor: the same workflow and activity functions, run by a Temporal cluster.

Select it with ``BELUGA_WORKFLOWS["EXECUTOR"] = "temporal"`` or
``workflow.new("temporal", workflow.Config(extra={...}))``. One module per role:

* :mod:`.executor` — the client side (``TemporalExecutor``, its handles);
* :mod:`.workflow` / :mod:`.activity` — the one dynamic Temporal workflow and activity that run
  every beluga workflow (through the shared replay interpreter) and activity;
* :mod:`.worker` — what ``manage.py runworker`` runs;
* :mod:`.translate` — a Temporal history read back as our events and run state;
* :mod:`.mirror` — keeps the Django models (admin, REST, CLI) in step with Temporal;
* :mod:`.store` — ``TemporalWorkflowStore``, runs listed through Temporal visibility;
* :mod:`.visibility` / :mod:`.interactions` — the ``BelugaWaitingFor`` search attribute; the
  signals, queries and details Temporal's tools show;
* :mod:`.payloads` — the data converter (codec) from the settings, and history decoding;
* :mod:`.convert` — the conventions all of them share; :mod:`.client` — sync calls.
"""

from __future__ import annotations

from typing import Any

from ...errors import MissingDependencyError

try:
    import temporalio  # noqa: F401
except ImportError as exc:  # the package was installed without its `temporal` extra
    raise MissingDependencyError(
        "The Temporal executor needs the temporalio package, which is not installed: "
        "pip install 'beluga-workflows[temporal]' (or pip install temporalio)."
    ) from exc

from .executor import TemporalExecutor, TemporalHandle  # noqa: E402

__all__ = ["TemporalExecutor", "TemporalHandle", "TemporalWorkflowStore"]


def __getattr__(name: str) -> Any:
    if name == "TemporalWorkflowStore":  # it needs Django's models; import on use
        from .store import TemporalWorkflowStore

        return TemporalWorkflowStore
    raise AttributeError(name)
