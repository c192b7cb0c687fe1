"""``manage.py workflow history``: a run's events written as they are read.

The events come from :func:`beluga_workflows.history_pages.stream` a batch at a time, and each
is written before the next batch is read, so a long history with large payloads is never held
whole. ``--json`` still prints one JSON list, the same text ``json.dumps(events, indent=2)``
would give, written an event at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import chain
from typing import Any

from .. import timeline
from ..history import HistoryEvent


def write_history(stdout: Any, events: Iterable[HistoryEvent], as_json: bool) -> None:
    """Write ``events`` to a command's ``stdout`` (an ``OutputWrapper``)."""
    events = iter(events)
    first = next(events, None)  # an unknown id raises here, before anything is written
    if as_json:
        if first is None:
            stdout.write("[]")
            return
        stdout.write("[", ending="")
        for number, event in enumerate(chain([first], events)):
            text = json.dumps(event.to_json(), indent=2, ensure_ascii=False, default=str)
            # Raw line breaks in json.dumps output are its own (a string's are escaped), so
            # indenting after each one nests the event in the list as dumps(list) would.
            stdout.write(("," if number else "") + "\n  " + text.replace("\n", "\n  "), ending="")
        stdout.write("\n]")
        return
    if first is None:
        return
    for event in chain([first], events):
        since_start = (event.timestamp - first.timestamp).total_seconds()
        offset = timeline.format_duration(since_start)
        stdout.write(
            f"{event.sequence:>4}  {event.timestamp:%Y-%m-%d %H:%M:%S}  +{offset:<10} "
            f"{event.type.value:<22} {timeline.describe(event)}"
        )
