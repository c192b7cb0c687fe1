"""The Temporal mirror: keeps ``WorkflowRun``/``WorkflowEvent`` rows in step with Temporal.

With the Temporal executor, Temporal is the system of record; the admin, the REST API and the
CLI read our Django models. This module copies each run into them: the run row (status,
input, result or error, ``waiting_for`` such as ``signal:approval`` with its deadline) and its
history translated to our event vocabulary (:mod:`.translate`). It never decides anything:
every write is a copy of what Temporal says, so what the admin shows was true when copied.
Lists lag when runs change faster than a worker's mirror thread copies them (see
``docs/temporal.md``); reads of one run ask Temporal and are never late. Besides it, only
``TemporalWorkflowStore.delete`` touches those rows.

Who calls it:

* the executor, right after start, signal and cancel (:meth:`TemporalExecutor.refresh_mirror`);
* :class:`MirrorLoop`, a thread of ``manage.py runworker``, for everything else: runs whose
  workflow tasks this worker just ran (:mod:`.changes`), runs Temporal visibility lists as
  started or closed lately (timeouts and terminations have no workflow task), and at start and
  every few minutes every running run, both ways and including its state, to repair what a
  stopped worker missed (a few hundred runs per pass, between the other work). A copy that
  fails (the database away) is tried again on the next passes until it succeeds. It
  creates rows for running runs, and for finished ones only when a mirrored parent lists them
  as its children (a finished run without a row may be one deleted on purpose), so a run
  started outside beluga that finishes within one poll interval is not listed.

What it stores is decoded: with a payload codec (``BELUGA_WORKFLOWS["TEMPORAL"]
["PAYLOAD_CODEC"]``, encryption) Temporal holds encoded payloads only, and the rows hold the
values the codec decoded — inputs, results, errors, signal payloads — as readable in the
project's database as the built-in engine's rows (``docs/temporal.md``, "What the mirror
stores"). With ``MIRROR_PAYLOADS`` off the rows hold no values (:func:`write`); without the
mirror (``mirror=False``, ``runworker --no-mirror``) nothing is copied.

Writes are idempotent and monotonic: events are numbered by the translation (a pure fold, so a
longer history never renumbers older events) and inserted with ``ignore_conflicts``; a copy
older than what is stored is ignored. Mirrored runs carry ``{"temporal": {...}}`` in their
``WorkflowStarted`` event, which tells them from the built-in engine's runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, close_old_connections, connections, transaction

from ...errors import WorkflowNotFoundError
from ...models import WorkflowEvent, WorkflowRun
from ...options import Status
from . import changes
from .convert import literal, status_from_temporal
from .translate import RunRecord, Tail

if TYPE_CHECKING:
    from .executor import TemporalExecutor

logger = logging.getLogger("beluga_workflows")


def _mirrored(queryset: Any) -> Any:
    return queryset.filter(events__sequence=1, events__data__has_key="temporal")


#: The keys of event data that hold the run's values (not copied with ``values=False``).
VALUE_KEYS = ("input", "result", "payload")


def write(record: RunRecord, create_closed: bool = True, values: bool = True) -> None:
    """Store ``record`` (a run as Temporal has it now) unless a newer copy is stored.

    With ``create_closed=False`` a finished run gets no row if it has none yet: it may be one
    just deleted on purpose (``forget``), which Temporal still shows for a while. With
    ``values=False`` (``MIRROR_PAYLOADS``) the rows hold no input, result or payload: None
    instead, and ``"values": false`` in the run's first event says why.
    """
    if not values:
        record = _without_values(record)
    state = record.state
    fields = {
        "workflow_id": state.workflow_id,
        "workflow_name": state.workflow,
        "workflow_reference": record.reference,
        "status": state.status.value,
        "input": state.input,
        "result": state.result,
        "error": state.error,
        "waiting_for": state.waiting_for,
        "waiting_since": state.waiting_since,
        "waiting_deadline": state.waiting_deadline,
        "held": state.held,
        "timeout_seconds": record.timeout_seconds,
        "closed_at": record.closed_at,
        "last_sequence": len(record.events),
        "advance_requested_at": None,
        "parent": _row(record.parent[1]) if record.parent else None,
        "parent_step": record.parent_step,
        "continued_from": _row(record.continued_from) if record.continued_from else None,
    }
    for attempt in range(2):
        try:
            with transaction.atomic():
                row = WorkflowRun.objects.select_for_update().filter(run_id=state.run_id).first()
                if row is None and not create_closed and state.status is not Status.RUNNING:
                    return
                if row is None:
                    row = WorkflowRun.objects.create(run_id=state.run_id, **fields)
                    stored = 0
                else:
                    stored = row.last_sequence
                if len(record.events) < stored:
                    return  # an older copy than the one stored: keep the newer
                WorkflowEvent.objects.bulk_create(
                    [
                        WorkflowEvent(
                            run=row,
                            sequence=event.sequence,
                            type=event.type.value,
                            step=event.step,
                            name=event.name[:255],
                            attempt=event.attempt,
                            data=event.data,
                            timestamp=event.timestamp,
                        )
                        for event in record.events
                        if event.sequence > stored
                    ],
                    ignore_conflicts=True,
                )
                WorkflowRun.objects.filter(pk=row.pk).update(
                    **fields, created_at=state.created_at, updated_at=state.updated_at
                )
                return
        except IntegrityError:
            if attempt:  # another process created the row first; the retry updates it
                raise


def _without_values(record: RunRecord) -> RunRecord:
    events = []
    for event in record.events:
        data: dict[str, Any] = {k: None if k in VALUE_KEYS else v for k, v in event.data.items()}
        temporal = data.get("temporal")
        if isinstance(temporal, dict):
            data["temporal"] = {**temporal, "values": False}
        events.append(dataclasses.replace(event, data=data))
    state = dataclasses.replace(record.state, input=None, result=None)
    return dataclasses.replace(record, state=state, events=events)


def sync(
    executor: TemporalExecutor,
    workflow_id: str,
    run_id: str | None = None,
    create_closed: bool = True,
    tails: Tails | None = None,
    length: int = 0,
) -> RunRecord | None:
    """Copy one run (the latest with this id by default) from Temporal into the models.

    With ``tails`` (the mirror loop's) and the run's history ``length``, a run read before is
    read on from where it stopped — only the events Temporal appended since — and one with
    nothing new is not read at all (None).
    """
    if tails is not None and run_id is not None:
        tail = tails.get(workflow_id, run_id, executor)
        if tail.read >= length and tail.record is not None:
            return None  # nothing new since the last read
        record = executor.fetch_tail(workflow_id, tail, length)
        if record.state.status is not Status.RUNNING:
            tails.drop(workflow_id, run_id)
    else:
        record = executor.fetch_record(workflow_id, run_id)
    try:
        if record.state.status is Status.RUNNING:
            _close_stale(executor, workflow_id, record.state.run_id)
        write(record, create_closed, executor.mirror_payloads)
    except Exception:
        if tails is not None and run_id is not None:
            tails.drop(workflow_id, run_id)  # read again next time: it was not stored
        raise
    return record


class Tails:
    """The history tails the mirror loop has read, per running run (bounded, LRU)."""

    SIZE = 10_000

    def __init__(self) -> None:
        self.tails: OrderedDict[tuple[str, str], Tail] = OrderedDict()

    def get(self, workflow_id: str, run_id: str, executor: TemporalExecutor) -> Tail:
        key = (workflow_id, run_id)
        tail = self.tails.pop(key, None)
        if tail is None:
            converter = executor.call(_converter)
            tail = Tail(workflow_id, run_id, converter)
        self.tails[key] = tail
        while len(self.tails) > self.SIZE:
            self.tails.popitem(last=False)
        return tail

    def drop(self, workflow_id: str, run_id: str) -> None:
        self.tails.pop((workflow_id, run_id), None)


async def _converter(client: Any) -> Any:
    return client.data_converter


class _Refresher(threading.Thread):
    """A daemon thread copying runs into the models after a client started, signalled or
    canceled them (a process exiting does not wait for it: the worker's mirror catches up)."""

    def __init__(self) -> None:
        super().__init__(name="beluga-mirror-refresh", daemon=True)
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.queued: set[tuple[str, str | None]] = set()
        self.lock = threading.Lock()

    def add(self, executor: TemporalExecutor, key: tuple[str, str | None]) -> None:
        with self.lock:
            if key in self.queued:
                return
            self.queued.add(key)
        self.jobs.put((executor, key))

    def run(self) -> None:
        while True:
            executor, key = self.jobs.get()
            if executor is None:
                key.set()  # a barrier: see wait_for_refreshes
                continue
            with self.lock:
                self.queued.discard(key)
            try:
                sync(executor, *key)
            except Exception:
                logger.warning("Could not mirror Temporal run %s yet", key[0], exc_info=True)
            finally:
                connections.close_all()  # this thread's own


_refresher: _Refresher | None = None
_refresher_pid = 0
_refresher_lock = threading.Lock()


def refresh_soon(executor: TemporalExecutor, workflow_id: str, run_id: str | None) -> None:
    """:func:`sync` in this process's background thread; a run already waiting its turn is
    not queued twice."""
    global _refresher, _refresher_pid
    with _refresher_lock:
        if _refresher is None or _refresher_pid != os.getpid():
            _refresher = _Refresher()
            _refresher.start()
            _refresher_pid = os.getpid()
        refresher = _refresher
    refresher.add(executor, (workflow_id, run_id))


def wait_for_refreshes(timeout: float = 10.0) -> None:
    """Block until the background refreshes queued so far are done (tests, deleting runs)."""
    with _refresher_lock:
        refresher = _refresher if _refresher_pid == os.getpid() else None
    if refresher is not None:
        done = threading.Event()
        refresher.jobs.put((None, done))
        done.wait(timeout)


def _close_stale(executor: TemporalExecutor, workflow_id: str, run_id: str) -> None:
    """Temporal runs one run per id at a time: rows still running for older runs are stale."""
    stale = WorkflowRun.objects.filter(workflow_id=workflow_id, status=Status.RUNNING.value)
    for row in stale.exclude(run_id=run_id):
        if not _mirrored(WorkflowRun.objects.filter(pk=row.pk)).exists():
            logger.error(
                "Run %s of %r is running on the built-in engine; its Temporal run %s cannot "
                "be mirrored until it ends.",
                row.run_id,
                workflow_id,
                run_id,
            )
            continue
        try:
            write(
                executor.fetch_record(workflow_id, str(row.run_id)), True, executor.mirror_payloads
            )
        except WorkflowNotFoundError:
            row.delete()  # gone from Temporal (retention): so is its copy


def forget(workflow_id: str) -> int:
    """Delete the mirrored rows of finished runs with this id (after deleting them in Temporal)."""
    wait_for_refreshes()  # a refresh still queued must not bring them back
    rows = _mirrored(WorkflowRun.objects.filter(workflow_id=workflow_id)).exclude(
        status=Status.RUNNING.value
    )
    return rows.distinct().delete()[0]


class MirrorLoop(threading.Thread):
    """The mirror's thread in ``runworker``: copies changed runs every ``interval`` seconds."""

    #: Seconds of overlap between visibility scans (visibility is eventually consistent).
    OVERLAP = 10.0
    #: How many ticks a run with a workflow task in flight is looked at again.
    RECHECKS = 100
    #: Running runs whose state the full check compares per tick.
    AUDIT_BATCH = 200

    def __init__(
        self, executor: TemporalExecutor, interval: float = 1.0, full_every: float = 300.0
    ) -> None:
        super().__init__(name="beluga-temporal-mirror", daemon=True)
        self.executor = executor
        self.interval = interval
        self.full_every = full_every
        self.stopping = threading.Event()
        self.recheck: dict[tuple[str, str], int] = {}
        #: Runs whose copy failed, tried again every tick until it succeeds.
        self.retry: dict[tuple[str, str], None] = {}
        #: Running runs the full check has still to compare with Temporal.
        self.audit: list[tuple[str, str]] = []
        self.tails = Tails()

    def stop(self) -> None:
        self.stopping.set()
        changes.note("", "")  # wake the loop

    def run(self) -> None:
        next_full = 0.0
        since = datetime.now(UTC)
        while not self.stopping.is_set():
            close_old_connections()
            started = datetime.now(UTC)
            if time.monotonic() >= next_full:
                try:
                    self.reconcile()
                    next_full = time.monotonic() + self.full_every
                except Exception:  # Temporal or the database away: try again next tick
                    logger.warning("Full check of the Temporal mirror failed; retrying")
            if self.tick(since - timedelta(seconds=self.OVERLAP)):
                since = started
            changes.wait(self.interval)
        connections.close_all()

    def tick(self, since: datetime) -> bool:
        """Copy every run that changed; False if Temporal's list of recent runs could not be
        read (the next tick reads from the same moment again)."""
        runs = dict.fromkeys(changes.take())
        runs.update(self.retry)
        runs.update(dict.fromkeys(self.recheck))
        runs.update(dict.fromkeys(self.audit[: self.AUDIT_BATCH]))
        del self.audit[: self.AUDIT_BATCH]
        listed = True
        try:
            runs.update(dict.fromkeys(self.recent(since)))
        except Exception:
            logger.warning("Could not list recent Temporal runs; retrying", exc_info=True)
            listed = False
        for key in runs:
            if not key[0]:
                continue  # the wake-up note of stop()
            try:
                self.sync_one(*key)
            except Exception:  # the database or Temporal away: keep it for the next tick
                if key not in self.retry:
                    logger.warning("Could not mirror Temporal run %s yet; will retry", key[0],
                                   exc_info=True)  # fmt: skip
                self.retry[key] = None
                close_old_connections()
            else:
                self.retry.pop(key, None)
        return listed

    def sync_one(self, workflow_id: str, run_id: str) -> None:
        key = (workflow_id, run_id)
        try:
            busy, length = self.executor.progress(workflow_id, run_id)
            record = sync(self.executor, workflow_id, run_id, False, self.tails, length)
            if record is not None:
                self.sync_children(record)
        except WorkflowNotFoundError:
            # Left as it is: a worker pointed at the wrong cluster must not wipe the mirror.
            logger.warning("Temporal has no run %s of %r; its rows are kept", run_id, workflow_id)
            self.recheck.pop(key, None)
            return
        tries = self.recheck.pop(key, 0)
        if busy and tries < self.RECHECKS:
            self.recheck[key] = tries + 1  # its history is about to grow: look again

    def sync_children(self, record: RunRecord) -> None:
        """A parent's children get rows even if they finished between two ticks (a run that
        is not running gets a row only when something points at it)."""
        run_ids = {c["run_id"]: c["id"] for c in record.state.children if c.get("run_id")}
        if not run_ids:
            return
        known = {
            str(r)
            for r in WorkflowRun.objects.filter(run_id__in=[_uuid(r) for r in run_ids]).values_list(
                "run_id", flat=True
            )
        }
        for run_id, child_id in run_ids.items():
            if run_id not in known:
                with contextlib.suppress(WorkflowNotFoundError):
                    sync(self.executor, child_id, run_id, create_closed=True)

    def recent(self, since: datetime) -> list[tuple[str, str]]:
        """Runs on our task queue that visibility shows started or closed since ``since``."""
        stamp = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        query = (
            f"TaskQueue = {literal(self.executor.task_queue)} AND "
            f"(StartTime > '{stamp}' OR CloseTime > '{stamp}')"
        )
        found = self.executor.call(lambda client: _list(client, query))
        stored = dict(
            WorkflowRun.objects.filter(run_id__in=[_uuid(r) for _, r, _ in found]).values_list(
                "run_id", "status"
            )
        )
        wanted = []
        for workflow_id, run_id, status in found:
            row_status = stored.get(_uuid(run_id))
            # A new run needs its row, a closed one its outcome (see ``write`` for runs that
            # closed before they had a row).
            if (row_status is None and status is Status.RUNNING) or (
                row_status == Status.RUNNING.value and status is not Status.RUNNING
            ):
                wanted.append((workflow_id, run_id))
        return wanted

    def reconcile(self) -> None:
        """Every running run, both ways: rows Temporal closed, runs without a row, and (over
        the next ticks) rows behind their run."""
        query = f"TaskQueue = {literal(self.executor.task_queue)} AND ExecutionStatus = 'Running'"
        running = {run_id: wid for wid, run_id, _ in self.executor.call(lambda c: _list(c, query))}
        rows = WorkflowRun.objects.filter(
            status=Status.RUNNING.value,
            events__sequence=1,
            events__data__temporal__task_queue=self.executor.task_queue,
        )
        stored = {str(run_id): wid for run_id, wid in rows.values_list("run_id", "workflow_id")}
        for run_id, workflow_id in {**running, **stored}.items():
            if run_id not in stored or run_id not in running:
                self.sync_one(workflow_id, run_id)
        # Running on both sides: the copy may still be behind (a worker died between a
        # workflow task and its mirror pass). Compared a batch per tick, reading only what is
        # new since the last read.
        self.audit = [(wid, run_id) for run_id, wid in running.items() if run_id in stored]


async def _list(client: Any, query: str) -> list[tuple[str, str, Status]]:
    return [
        (execution.id, execution.run_id, status_from_temporal(execution.status))
        async for execution in client.list_workflows(query)
    ]


def _row(run_id: str) -> WorkflowRun | None:
    """The mirrored row of a related run (a parent, a predecessor), if it has one yet."""
    return WorkflowRun.objects.filter(run_id=_uuid(run_id)).first()


def _uuid(value: str) -> Any:
    try:
        return uuid.UUID(value)
    except ValueError:
        return value
