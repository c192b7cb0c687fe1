"""A workflow's failure as its author reads it: the traceback without our frames.

Workflow code runs under the interpreter, in a thread (built-in engine) or a greenlet inside
Temporal's SDK, so a raw traceback is mostly ours — ``replay.py``, ``continuation.py``,
``temporalio``, ``threading`` — with the user's line buried in it. :func:`user_traceback`
keeps the user's frames only (their modules, and whatever library they called), and
:func:`user_stack` does the same to a stack trace that arrives as text (Temporal's failures).
Both are bounded: the innermost frames, which say where it broke, are the ones kept.
"""

from __future__ import annotations

import os
import re
import sysconfig
import traceback
from pathlib import Path

#: Characters of traceback kept (the innermost ones).
MAX_CHARS = 8_000
HEADER = "Traceback (most recent call last):"

_PACKAGE = str(Path(__file__).resolve().parent) + os.sep
_LIBRARIES = (f"{os.sep}temporalio{os.sep}", f"{os.sep}greenlet{os.sep}")
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve()) + os.sep
#: Standard library modules that only carry the workflow to its code (threads, event loops).
_CARRIERS = ("threading.py", "asyncio", "concurrent", "contextlib.py", "queue.py")
_ENTRY = re.compile(r'^  File "(?P<file>[^"]*)", line \d+', re.MULTILINE)


def ours(filename: str) -> bool:
    """Whether a frame of this file is beluga_workflows' (or the machinery running it)."""
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):
        path = filename
    if path.startswith(_PACKAGE) or any(part in path for part in _LIBRARIES):
        return True
    return path.startswith(_STDLIB) and path[len(_STDLIB) :].startswith(_CARRIERS)


def user_traceback(error: BaseException) -> str:
    """``error`` with the user's frames of its traceback, as Python prints it (bounded)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not ours(f.filename)]
    entries = traceback.format_list(frames)
    last = "".join(traceback.format_exception_only(type(error), error))
    return _bounded(entries, last)


def user_stack(stack: str, last: str = "") -> str:
    """A stack trace as text (``traceback.format_tb``'s entries), without our frames."""
    starts = [m.start() for m in _ENTRY.finditer(stack)]
    ends = [*starts[1:], len(stack)] if starts else []
    entries = [stack[a:b].strip("\n") + "\n" for a, b in zip(starts, ends, strict=True)]
    kept = [entry for entry in entries if not ours(_file(entry))]
    return _bounded(kept, last + "\n" if last and not last.endswith("\n") else last)


def _file(entry: str) -> str:
    match = _ENTRY.match(entry)
    return match["file"] if match else ""


def _bounded(entries: list[str], last: str) -> str:
    body = "".join(entries)
    if len(body) + len(last) > MAX_CHARS:
        keep = max(MAX_CHARS - len(last), 0)
        body = "  …\n" + body[-keep:].split("\n", 1)[-1] if keep else ""
        last = last[:MAX_CHARS]
    if not body:  # nothing of the user's (a finding of the interpreter's own)
        return last.rstrip("\n")
    return f"{HEADER}\n{body}{last}".rstrip("\n")
