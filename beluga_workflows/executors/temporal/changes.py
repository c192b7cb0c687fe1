"""Runs whose Temporal history this process just extended, for the mirror to copy soon.

The Temporal workflow notes its run here after each workflow task it runs for real (never
while Temporal replays it); the mirror thread of the same ``runworker`` takes the notes. A
note is a hint to look now, not the data: the mirror always reads Temporal itself. Runs
that change without a workflow task (timed out, terminated) are found through visibility.

No Django here: the workflow calls :func:`note` from inside Temporal's sandbox.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_changed: dict[tuple[str, str], None] = {}
_wake = threading.Event()


def note(workflow_id: str, run_id: str) -> None:
    with _lock:
        _changed[(workflow_id, run_id)] = None
    _wake.set()


def take() -> list[tuple[str, str]]:
    """The runs noted since the last call, oldest first."""
    with _lock:
        runs = list(_changed)
        _changed.clear()
        _wake.clear()
    return runs


def wait(timeout: float) -> None:
    """Block until something is noted or ``timeout`` seconds pass."""
    _wake.wait(timeout)
