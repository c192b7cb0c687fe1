"""What a run tells Temporal's tools about itself: its signals, queries and current wait.

:class:`~.workflow.BelugaWorkflow` is one dynamic Temporal workflow for every beluga
workflow, so its class declares no signal or query by name and ``temporal workflow
metadata`` (the ``__temporal_workflow_metadata`` query, also what the UI shows) would list
none. Names are declared as the run learns them, as named handlers beside the dynamic ones
(which still take everything else):

* the built-in queries ``status``, ``result`` and ``history``, and the signals and queries
  ``@workflow.defn(signals=..., queries=...)`` declared (with its own approval signal), from
  the start;
* every query handler the workflow code set (``ctx.set_query_handler``), after the step
  that set it;
* every signal the run waits for (``ctx.wait_for_signal``, ``receive_signal``,
  ``signal_future``), from the step that waits.

Declaring a handler issues no Temporal command, so replay and old histories are unaffected.
The run's current wait also goes into Temporal's *current details* (``set_current_details``:
shown by ``temporal workflow metadata`` and the UI, no history event).

Like the workflow, this runs inside Temporal's sandbox: no Django here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow

#: The queries every run answers without a handler of its own.
BUILT_IN_QUERIES = ("status", "result", "history")


class Interactions:
    """The signal and query names declared to Temporal so far, for one run."""

    def __init__(
        self,
        on_signal: Callable[[str, Any, Any], None],
        on_query: Callable[[str], Any],
    ) -> None:
        self.on_signal = on_signal
        self.on_query = on_query
        self.signals: set[str] = set()
        self.queries: set[str] = set()
        self.details = ""

    def declare(self, signals: Any, queries: Any) -> None:
        """Declare what is new among these names (the built-in queries the first time)."""
        for name in (*BUILT_IN_QUERIES, *queries):
            if name not in self.queries and not name.startswith("__"):  # Temporal's own
                self.queries.add(name)
                workflow.set_query_handler(name, self._query(name))
        for name in signals:
            if name not in self.signals:
                self.signals.add(name)
                workflow.set_signal_handler(name, self._signal(name))

    def _query(self, name: str) -> Callable[..., Any]:
        def handler(*args: Any) -> Any:
            return self.on_query(name)

        return handler

    def _signal(self, name: str) -> Callable[..., None]:
        # Sent with two arguments (payload, {"sender": ...}) or one (the Temporal CLI).
        def handler(*args: Any) -> None:
            self.on_signal(name, args[0] if args else None, args[1] if len(args) > 1 else None)

        return handler

    def describe_wait(self, waiting: dict[str, Any] | None) -> None:
        """The run's current details: what it waits for, since when, until when."""
        details = ""
        if waiting:
            details = f"Waiting for {waiting['for']} since {waiting['since']}"
            if waiting.get("deadline"):
                details += f", until {waiting['deadline']}"
        if details != self.details:
            workflow.set_current_details(details)
            self.details = details
