"""The determinism guard: what workflow code may not do, refused where it does it.

A workflow function is run again from its history whenever a worker lost it (a restart, an
eviction, another worker), and must then take the same steps. Code that reads the wall clock,
draws random numbers, does I/O, starts threads or queries the database decides differently
on the next pass, so while workflow code runs those calls raise
:class:`~beluga_workflows.errors.DeterminismViolationError` at the call, naming it and what to
use instead (``ctx.now()``, ``ctx.random()``, ``ctx.uuid4()``, an activity).

What is refused (docs/determinism.md lists it for users):

* the wall clock: ``time.time()``, ``time.time_ns()``, ``datetime.datetime.now()``,
  ``.utcnow()``, ``.today()`` and ``datetime.date.today()`` (so ``django.utils.timezone.now()``);
* randomness: the ``random`` module's functions (its shared generator), ``uuid.uuid1()``,
  ``uuid.uuid4()``, ``os.urandom()`` (so ``secrets``); ``random.Random(seed)`` objects are fine;
* file I/O, sockets and processes, seen through Python's audit events (``open``,
  ``socket.connect``, ``subprocess.Popen``...), and threads (``threading.Thread.start``);
* the database: any Django cursor (the ORM, raw SQL).

**When.** :class:`Guard` is on where the function runs (its thread on the built-in engine, its
greenlet on Temporal) from the moment :func:`~beluga_workflows.replay.call_workflow` calls it
until it returns or fails; :func:`lifted` turns it off while the run is parked at a step
(Temporal's code and ours then run on the same thread). Activities, hooks, query handlers and
everything else never run under it. The wrappers and the audit hook first read one global,
the number of guards on in the process, so code elsewhere pays next to nothing.

**Whose call.** A refused call is allowed when it is made for the machinery rather than by the
workflow: when the first frame outside the standard library is beluga_workflows' or
Temporal's own code, or when the call comes from inside logging, imports, tracebacks,
warnings, ``gettext`` or ``zoneinfo`` (their clock reads and file reads do not change what the
workflow decides). Everything else — the user's code, Django, other libraries it calls — is
workflow code.

**Caught does not mean forgiven.** The guard keeps the first violation: a workflow that
catches the error still fails with it, at its next step or when it returns.

:func:`install` puts the wrappers and the audit hook in place, once per process (audit hooks
cannot be removed, hence the cheap check). Names bound before it ran (``from time import
time`` in a module imported earlier) keep the original function: ``time.time()`` and
``datetime.now()`` through their module or class are always seen.
"""

from __future__ import annotations

import _thread
import ctypes
import datetime as _datetime
import gc
import logging
import os
import random as _random
import sys
import threading
import time as _time
import uuid as _uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import FrameType, TracebackType
from typing import Any

from .errors import DeterminismViolationError

logger = logging.getLogger("beluga_workflows")

#: What a refused call does, and what to use instead, by kind.
KINDS: dict[str, tuple[str, str]] = {
    "clock": ("reads the wall clock", "ctx.now() (the run's own time, the same on replay)"),
    "random": ("is random", "ctx.random() or ctx.uuid4() (seeded by the run, the same on replay)"),
    "file": ("does file I/O", "an activity"),
    "network": ("does network I/O", "an activity"),
    "process": ("starts a process", "an activity"),
    "thread": (
        "starts a thread",
        "an activity (ctx.start_activity() and ctx.gather() run activities in parallel)",
    ),
    "database": ("queries the database", "an activity (activities may use the ORM freely)"),
    "other": ("is not deterministic", "an activity"),
}

#: Audit events refused in workflow code: the call they name, and its kind.
AUDIT_EVENTS: dict[str, tuple[str, str]] = {
    "open": ("open()", "file"),
    "os.listdir": ("os.listdir()", "file"),
    "os.scandir": ("os.scandir()", "file"),
    "os.remove": ("os.remove()", "file"),
    "os.rename": ("os.rename()", "file"),
    "os.mkdir": ("os.mkdir()", "file"),
    "os.rmdir": ("os.rmdir()", "file"),
    "shutil.copyfile": ("shutil.copyfile()", "file"),
    "shutil.rmtree": ("shutil.rmtree()", "file"),
    "socket.connect": ("socket.connect()", "network"),
    "socket.bind": ("socket.bind()", "network"),
    "socket.getaddrinfo": ("socket.getaddrinfo()", "network"),
    "socket.gethostbyname": ("socket.gethostbyname()", "network"),
    "urllib.Request": ("urllib.request.urlopen()", "network"),
    "subprocess.Popen": ("subprocess.Popen()", "process"),
    "os.system": ("os.system()", "process"),
    "os.exec": ("os.exec*()", "process"),
    "os.posix_spawn": ("os.posix_spawn()", "process"),
    "os.spawn": ("os.spawn*()", "process"),
    "os.fork": ("os.fork()", "process"),
    "_thread.start_new_thread": ("threading.Thread.start()", "thread"),
    "_thread.start_joinable_thread": ("threading.Thread.start()", "thread"),
}

#: Top-level modules whose frames mean "the machinery asked", when met before any other
#: code outside the standard library.
MACHINERY = frozenset({"beluga_workflows", "temporalio"})
#: Standard-library modules that read the clock or files for their own bookkeeping: a call
#: made under one of them never changes what the workflow decides.
BOOKKEEPING = frozenset(
    {"logging", "importlib", "_frozen_importlib", "_frozen_importlib_external", "zipimport"}
    | {"linecache", "traceback", "warnings", "gettext", "zoneinfo", "mimetypes", "encodings"}
)
_STDLIB = frozenset(sys.stdlib_module_names) | BOOKKEEPING


class Guard:
    """On while workflow code runs; keeps the first violation it saw."""

    def __init__(self) -> None:
        self.violation: DeterminismViolationError | None = None
        #: The frame that turned the guard on: frames beyond it are not workflow code.
        self.base: FrameType | None = None
        self._outer: Guard | None = None

    def __enter__(self) -> Guard:
        install()
        self.base = sys._getframe(1)
        self._outer = _switch(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _switch(self._outer)
        self.base = None

    def refuse(self, error: DeterminismViolationError) -> DeterminismViolationError:
        if self.violation is None:
            self.violation = error
        return error


#: The guard on where code runs now. A context variable, not a thread-local: each greenlet has
#: a context of its own, so a run's greenlet never turns the guard off (or on) for another one
#: on the same thread, even when the garbage collector unwinds it in the middle of another.
_GUARD: ContextVar[Guard | None] = ContextVar("beluga_determinism_guard", default=None)
#: How many guards are on in the process: the wrappers read this global first, so code in a
#: process where no workflow code runs at the moment pays one global read.
_active = 0
_active_lock = threading.RLock()  # re-entrant: a greenlet unwound by the GC may switch too


def _switch(guard: Guard | None) -> Guard | None:
    """Make ``guard`` the one on here (None: none); return the one it replaces."""
    global _active
    before = _GUARD.get()
    _GUARD.set(guard)
    if (before is None) != (guard is None):
        with _active_lock:
            _active += 1 if guard is not None else -1
    return before


class lifted:  # lower case: used like a function, ``with lifted():``
    """No guard inside: the run is parked (other code runs on its thread meanwhile), or code
    known to be harmless runs on purpose. Whatever was on before is back afterwards."""

    __slots__ = ("_saved",)

    def __enter__(self) -> None:
        self._saved = _switch(None)

    def __exit__(self, *exc: object) -> None:
        _switch(self._saved)


def violation() -> DeterminismViolationError | None:
    """The violation the guard on here has kept (a workflow may have caught it)."""
    guard = _GUARD.get()
    return guard.violation if guard is not None else None


def translate(error: BaseException) -> DeterminismViolationError | None:
    """Temporal's sandbox refusing a call (``RestrictedWorkflowAccessError``, raised in modules
    it imported itself) as the error the guard raises for the same mistake."""
    name = getattr(error, "qualified_name", None)
    if type(error).__name__ != "RestrictedWorkflowAccessError" or not isinstance(name, str):
        return None
    name = name.removeprefix("__builtins__.").removesuffix(".__call__")
    call = f"{name}()"
    kind = _CALL_KINDS.get(call) or _MODULE_KINDS.get(name.partition(".")[0], "other")
    frames = _traceback_frames(error.__traceback__)
    return _error(call, kind, _blamed(frames)).with_traceback(error.__traceback__)


# -- deciding and reporting -------------------------------------------------------------------
def _check(call: str, kind: str, frame: FrameType | None) -> None:
    """A refused call was made with the guard on: raise unless the machinery made it."""
    guard = _GUARD.get()
    if guard is None or _machinery(_outward(frame, guard.base)):
        return
    raise guard.refuse(_error(_named(frame, call), kind, _blamed(_outward(frame, guard.base))))


def _error(call: str, kind: str, location: str) -> DeterminismViolationError:
    reason, replacement = KINDS[kind]
    return DeterminismViolationError(call, reason, replacement, location)


def _module(frame: FrameType) -> str:
    name = frame.f_globals.get("__name__")
    return name if isinstance(name, str) else ""


def _outward(frame: FrameType | None, base: FrameType | None = None) -> Iterator[FrameType]:
    """``frame`` and its callers, up to (not including) ``base``."""
    while frame is not None and frame is not base:
        yield frame
        frame = frame.f_back


def _traceback_frames(tb: TracebackType | None) -> list[FrameType]:
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames[::-1]  # innermost first, as _outward walks


def _machinery(frames: Iterator[FrameType]) -> bool:
    outside = False  # met code outside the standard library yet?
    for f in frames:
        top = _module(f).partition(".")[0]
        if top in BOOKKEEPING:
            return True
        if not outside:
            if top in MACHINERY:
                return True
            outside = top not in _STDLIB
    return False


def _named(frame: FrameType | None, call: str) -> str:
    """The call as workflow code made it, when the standard library made the refused one for
    it: ``uuid.uuid4()`` or ``secrets.token_hex()`` rather than the ``os.urandom()`` they read,
    ``random.choice()``, ``subprocess.run()``, ``pathlib.Path.read_text()``."""
    outermost = None
    for f in _outward(frame):
        if _module(f).partition(".")[0] not in sys.stdlib_module_names:
            break
        outermost = f
    if outermost is None:
        return call
    module, code = _module(outermost), outermost.f_code
    # The random module's functions are methods of its shared generator: name the function.
    return f"{module}.{code.co_name if module == 'random' else code.co_qualname}()"


def _blamed(frames: Iterator[FrameType] | list[FrameType]) -> str:
    """Where the workflow made the call: the innermost frame of the project's own code (not
    the standard library, not an installed package, not the machinery)."""
    fallback = ""
    for f in frames:
        module = _module(f)
        top = module.partition(".")[0]
        if top in _STDLIB or top in MACHINERY:
            continue
        where = f"{module}.{f.f_code.co_name}, line {f.f_lineno}"
        filename = f.f_code.co_filename
        if "site-packages" not in filename and "dist-packages" not in filename:
            return where
        fallback = fallback or where
    return fallback


# -- installing -------------------------------------------------------------------------------
_CALL_KINDS: dict[str, str] = {call: kind for call, kind in AUDIT_EVENTS.values()}
#: What Temporal's sandbox refuses in a module, by the kind of the mistake (``translate``).
_MODULE_KINDS = {
    module: kind
    for kind, modules in {
        "clock": ("time", "datetime"),
        "random": ("random", "secrets", "uuid"),
        "file": ("os", "pathlib", "shutil", "tempfile", "glob", "io"),
        "network": ("socket", "http", "urllib", "select", "selectors"),
        "process": ("subprocess", "multiprocessing"),
        "thread": ("threading", "concurrent"),
    }.items()
    for module in modules
}
#: Wrapped functions that take no arguments.
NO_ARGUMENTS = frozenset({"time", "time_ns", "uuid4"})
_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Put the guard's wrappers and audit hook in place (once per process; cheap after)."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        _wrap_module(_time, "time", "clock")
        _wrap_module(_time, "time_ns", "clock")
        _wrap_module(_uuid, "uuid1", "random")
        _wrap_module(_uuid, "uuid4", "random")
        _wrap_module(os, "urandom", "random")
        _wrap_module(_random, "_urandom", "random")  # SystemRandom's, so secrets' too
        _wrap_module(_thread, "start_new_thread", "thread")
        _guard_threads()
        for cls, name in (
            (_datetime.datetime, "now"),
            (_datetime.datetime, "utcnow"),
            (_datetime.date, "today"),  # datetime.datetime.today too
        ):
            try:
                _wrap_classmethod(cls, name)
            except Exception:  # a Python whose C types cannot be patched: guard the rest
                logger.warning(
                    "Cannot guard datetime.%s.%s() on this Python; workflow code calling it "
                    "is not refused",
                    cls.__name__,
                    name,
                    exc_info=True,
                )
        _guard_random()
        _guard_database()
        sys.addaudithook(_audit)
        _installed = True


def _wrap_module(module: Any, name: str, kind: str) -> None:
    original = getattr(module, name)
    if getattr(original, "__wrapped_by_beluga__", False):
        return
    call = f"{module.__name__}.{name}()"

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _active and _GUARD.get() is not None:
            _check(call, kind, sys._getframe(1))
        return original(*args, **kwargs)

    def guarded_no_args() -> Any:  # time.time(): the hottest, a third cheaper this way
        if _active and _GUARD.get() is not None:
            _check(call, kind, sys._getframe(1))
        return original()

    if name in NO_ARGUMENTS:
        guarded = guarded_no_args  # type: ignore[assignment]
    guarded.__name__ = guarded.__qualname__ = name
    guarded.__doc__ = original.__doc__
    guarded.__wrapped__ = original  # type: ignore[attr-defined]
    guarded.__wrapped_by_beluga__ = True  # type: ignore[attr-defined]
    setattr(module, name, guarded)


def _wrap_classmethod(cls: type, name: str) -> None:
    """``datetime.now`` and friends live on C types, whose attributes cannot be set: the
    wrapper goes into the type's dict directly, and the type's caches are told."""
    namespace = gc.get_referents(cls.__dict__)[0]
    original = namespace[name]

    def guarded(klass: type, *args: Any, **kwargs: Any) -> Any:
        if _active and _GUARD.get() is not None:
            call = f"{klass.__module__}.{klass.__qualname__}.{name}()"
            _check(call, "clock", sys._getframe(1))
        return original.__get__(None, klass)(*args, **kwargs)

    guarded.__name__ = guarded.__qualname__ = name
    guarded.__doc__ = original.__doc__
    namespace[name] = classmethod(guarded)
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(cls))


class _GuardedRandom(_random.Random):
    """The ``random`` module's shared generator, refusing draws in workflow code: every
    method of ``Random`` draws through ``random()`` or ``getrandbits()``, so functions
    imported by name before the guard was installed are refused too."""

    def random(self) -> float:
        if _active and _GUARD.get() is not None:
            _check("random.random()", "random", sys._getframe(1))
        return _RANDOM(self)

    def getrandbits(self, k: int, /) -> int:
        if _active and _GUARD.get() is not None:
            _check("random.getrandbits()", "random", sys._getframe(1))
        return _GETRANDBITS(self, k)


_RANDOM = _random.Random.random
_GETRANDBITS = _random.Random.getrandbits


def _guard_random() -> None:
    shared = _random._inst  # type: ignore[attr-defined]
    if type(shared) is _random.Random:
        shared.__class__ = _GuardedRandom
    for name in _random.__all__:
        bound = getattr(_random, name)
        if getattr(bound, "__self__", None) is shared:
            _wrap_module(_random, name, "random")


def _guard_threads() -> None:
    """``Thread.start`` (thread pools and timers start threads through it too)."""
    original: Callable[..., Any] = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if _active and _GUARD.get() is not None:
            _check("threading.Thread.start()", "thread", sys._getframe(1))
        original(self)

    start.__doc__ = original.__doc__
    threading.Thread.start = start  # type: ignore[method-assign]


def _guard_database() -> None:
    """Every query of the ORM (and raw SQL) opens a cursor first."""
    try:
        from django.db.backends.base.base import BaseDatabaseWrapper
    except ImportError:  # pragma: no cover - Django is a dependency
        return
    original: Callable[..., Any] = BaseDatabaseWrapper.cursor

    def cursor(self: Any) -> Any:
        if _active and _GUARD.get() is not None:
            _check("a database query (the Django ORM)", "database", sys._getframe(1))
        return original(self)

    cursor.__doc__ = original.__doc__
    BaseDatabaseWrapper.cursor = cursor  # type: ignore[method-assign]


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _active and event in AUDIT_EVENTS and _GUARD.get() is not None:
        call, kind = AUDIT_EVENTS[event]
        _check(call, kind, sys._getframe(1))
