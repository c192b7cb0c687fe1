"""The hot path's SQL: a workflow step's reads and writes in as few round trips as it takes.

A step of the built-in engine is a handful of statements on a locked run; what makes it slow
is not PostgreSQL's work but waiting for each statement's answer (and the ORM building each
one). Here the statements of the common path are written out and sent with psycopg's pipeline
mode, so PostgreSQL receives them together:

* :func:`claim_attempt` — release the previous attempt's advisory lock, try this attempt's,
  and read the attempt with its run's ids: one statement;
* :func:`lock_run_and_complete` — lock the run row and mark the attempt's task completed if
  that attempt is still the one awaited: one round trip (the lock is taken first, as always);
* :func:`write` — a step's new events, new activity tasks and the run row: one round trip.

Semantics are unchanged — the same rows, the same locks taken in the same order, inside the
same transaction; the ORM paths elsewhere read and write the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connection
from django.utils import timezone
from psycopg.types.json import Jsonb

from ..history import EventType, HistoryEvent
from ..models import ActivityTask, Timer, WorkflowEvent, WorkflowRun
from . import notify

_RUN = WorkflowRun._meta.db_table
_EVENT = WorkflowEvent._meta.db_table
_TASK = ActivityTask._meta.db_table


@contextmanager
def _pipeline() -> Iterator[Any]:
    connection.ensure_connection()
    raw = connection.connection
    with raw.pipeline():
        yield raw


def claim_attempt(lock_key: int, task_pk: int, release: int | None) -> ActivityTask | None:
    """Try the attempt's advisory lock and read its task (with the run's ids), releasing the
    lock of the attempt this thread ran before, if any. None if the task does not exist; the
    task's ``locked`` attribute says whether the lock was taken."""
    release_sql = "pg_advisory_unlock(%s)" if release is not None else "NULL"
    query = (
        f"SELECT {release_sql}, pg_try_advisory_lock(%s) AS locked, t.*, "
        "r.workflow_id AS run_workflow_id, r.run_id AS run_run_id "
        f"FROM {_TASK} t JOIN {_RUN} r ON r.id = t.run_id WHERE t.id = %s"
    )
    params = [release, lock_key, task_pk] if release is not None else [lock_key, task_pk]
    rows = list(ActivityTask.objects.raw(query, params))
    if not rows and release is not None:
        with connection.cursor() as cursor:  # the join found nothing: release it anyway
            cursor.execute("SELECT pg_advisory_unlock(%s)", [release])
    if not rows:
        return None
    task = rows[0]
    task.run = WorkflowRun(
        pk=task.run_id,
        workflow_id=task.run_workflow_id,  # type: ignore[attr-defined]
        run_id=task.run_run_id,  # type: ignore[attr-defined]
    )
    return task


_LOCK_RUN = f"SELECT * FROM {_RUN} WHERE id = %s FOR UPDATE"
_COMPLETE = (
    f"UPDATE {_TASK} SET state = 'completed' "
    "WHERE id = %s AND state = 'scheduled' AND attempt = %s RETURNING step, name"
)


def lock_run(pk: int, skip_locked: bool = False) -> WorkflowRun | None:
    query = _LOCK_RUN + (" SKIP LOCKED" if skip_locked else "")
    rows = list(WorkflowRun.objects.raw(query, [pk]))
    return rows[0] if rows else None


_COLUMNS = [f.column for f in WorkflowRun._meta.concrete_fields]
_ATTNAMES = [f.attname for f in WorkflowRun._meta.concrete_fields]
_LOCK_RUN_COLUMNS = f"SELECT {', '.join(_COLUMNS)} FROM {_RUN} WHERE id = %s FOR UPDATE"
_HISTORY = (
    f"SELECT sequence, type, timestamp, step, name, attempt, data FROM {_EVENT} "
    "WHERE run_id = %s AND sequence > %s ORDER BY sequence"
)

#: ``(after, events)``: the run's events above sequence ``after``, read under its lock.
Prefetched = tuple[int, list[HistoryEvent]]


def lock_run_for_step(
    run_pk: int,
    history_after: int,
    complete: tuple[int, int] | None = None,
    release: int | None = None,
) -> tuple[WorkflowRun | None, Prefetched | None, tuple[int, str] | None]:
    """Lock the run, read its events after ``history_after`` (what a cached continuation has
    not seen; everything when none is cached) and, with ``complete=(task, attempt)``, mark
    that attempt completed if it is still the one awaited — all in one round trip, in that
    order (the run's lock first, as everywhere). ``release`` is an advisory lock key to
    release in the same trip."""
    with _pipeline() as raw:
        if release is not None:
            raw.cursor().execute("SELECT pg_advisory_unlock(%s)", [release])
        run_cursor = raw.cursor()
        run_cursor.execute(_LOCK_RUN_COLUMNS, [run_pk])
        task_cursor = raw.cursor()
        if complete is not None:
            task_cursor.execute(_COMPLETE, list(complete))
        history_cursor = raw.cursor()
        history_cursor.execute(_HISTORY, [run_pk, history_after])
    row = run_cursor.fetchone()
    done = task_cursor.fetchone() if complete is not None else None
    events = [_event(r) for r in history_cursor.fetchall()]
    if row is None:
        return None, None, None
    run = WorkflowRun.from_db(connection.alias, _ATTNAMES, _loaded(row))
    return run, (history_after, events), ((done[0], done[1]) if done else None)


def _event(row: Sequence[Any]) -> HistoryEvent:
    sequence, type, timestamp, step, name, attempt, data = row
    if isinstance(data, str):
        data = json.loads(data)
    return HistoryEvent(sequence, EventType(type), timestamp, step, name, attempt, data or {})


_JSON_AT = [
    i
    for i, f in enumerate(WorkflowRun._meta.concrete_fields)
    if f.get_internal_type() == "JSONField"
]


def _loaded(row: Sequence[Any]) -> list[Any]:
    """Raw values as the ORM loads them: Django has psycopg hand JSON over as text."""
    values = list(row)
    for i in _JSON_AT:
        if isinstance(values[i], str):
            values[i] = json.loads(values[i])
    return values


def _json(value: Any, null: bool = True) -> Any:
    """A JSON column's value; None is SQL NULL in a nullable column, as the ORM stores it."""
    return None if value is None and null else Jsonb(value)


_EVENT_COLUMNS = ("run_id", "sequence", "type", "step", "name", "attempt", "data", "timestamp")
_TASK_COLUMNS = (
    "run_id", "step", "name", "reference", "input", "options", "attempt", "state",
    "not_before", "deadline", "dispatched_at", "heartbeat", "heartbeat_at",
)  # fmt: skip


_CLOSE = (
    f"UPDATE {_TASK} SET state = 'canceled' WHERE run_id = %s AND state = 'scheduled'",
    f"UPDATE {Timer._meta.db_table} SET state = 'canceled' WHERE run_id = %s AND state = 'pending'",
)
_CHILDREN = (
    f"SELECT EXISTS (SELECT 1 FROM {_RUN} WHERE parent_id = %s AND status = 'running' "
    "AND parent_close_policy = 'cancel')"
)


def write(
    events: Sequence[WorkflowEvent],
    tasks: Sequence[ActivityTask],
    run: WorkflowRun | None = None,
    fields: Sequence[str] = (),
    closing: bool = False,
    claim: int | None = None,
) -> bool:
    """Insert events and activity tasks (setting the tasks' primary keys) and update the run's
    ``fields``, in one round trip. With ``closing``, the same round trip cancels the run's
    open tasks and timers, wakes whoever waits for its result (:mod:`.notify`, on commit), and
    answers whether it has running children its close must cancel. With ``claim`` (a lock
    key space), the first task also gets its advisory lock (``task.locked``): this thread
    runs it next (eager), and the lock is taken before anyone else can see the task."""
    if not (events or tasks or fields or closing):
        return False
    children = None
    with _pipeline() as raw:
        if events:
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(events))
            params: list[Any] = []
            for e in events:
                params += [e.run_id, e.sequence, e.type, e.step, e.name, e.attempt,
                           _json(e.data, null=False), e.timestamp]  # fmt: skip
            raw.cursor().execute(
                f"INSERT INTO {_EVENT} ({', '.join(_EVENT_COLUMNS)}) VALUES {values}", params
            )
        task_cursor = raw.cursor()
        if tasks:
            one = "(" + ", ".join(["%s"] * len(_TASK_COLUMNS)) + ")"
            params = []
            for t in tasks:
                params += [
                    t.run_id, t.step, t.name, t.reference, _json(t.input),
                    _json(t.options, null=False), t.attempt, t.state, t.not_before,
                    t.deadline, t.dispatched_at, _json(t.heartbeat), t.heartbeat_at,
                ]  # fmt: skip
            locking = "NULL"
            if claim is not None:
                locking = "CASE WHEN step = %s THEN pg_try_advisory_lock(%s::bigint | id) END"
                params += [tasks[0].step, claim]
            task_cursor.execute(
                f"WITH new_tasks AS (INSERT INTO {_TASK} ({', '.join(_TASK_COLUMNS)}) "
                f"VALUES {', '.join([one] * len(tasks))} RETURNING id, step) "
                f"SELECT id, step, {locking} FROM new_tasks",
                params,
            )
        if run is not None and fields:
            run.updated_at = timezone.now()
            names = [*fields, "updated_at"]
            sets, params = [], []
            for name in names:
                field = WorkflowRun._meta.get_field(name)
                sets.append(f"{field.column} = %s")  # type: ignore[union-attr]
                value = getattr(run, field.attname)  # type: ignore[union-attr]
                is_json = field.get_internal_type() == "JSONField"
                params.append(_json(value) if is_json else value)
            raw.cursor().execute(
                f"UPDATE {_RUN} SET {', '.join(sets)} WHERE id = %s", [*params, run.pk]
            )
        if closing and run is not None:
            for statement in _CLOSE:
                raw.cursor().execute(statement, [run.pk])
            raw.cursor().execute("SELECT pg_notify(%s, %s)", [notify.CHANNEL, str(run.run_id)])
            children = raw.cursor()
            children.execute(_CHILDREN, [run.pk])
    if tasks:
        by_step = {step: (pk, locked) for pk, step, locked in task_cursor.fetchall()}
        for task in tasks:
            task.pk, task.locked = by_step[task.step]  # type: ignore[attr-defined]
    return bool(children.fetchone()[0]) if children is not None else False


_RUN_INSERT = [f for f in WorkflowRun._meta.concrete_fields if not f.primary_key]


def insert_run(
    run: WorkflowRun,
    events: Sequence[tuple[EventType, str, dict[str, Any]]],
    at: Any,
    deadline: Any,
) -> int:
    """Insert a run, its first events (``(type, name, data)``, from sequence 1) and its
    workflow-timeout timer (when ``deadline``) in one statement; return its primary key."""
    columns = ", ".join(f.column for f in _RUN_INSERT)
    values = ", ".join(["%s"] * len(_RUN_INSERT))
    params: list[Any] = []
    for field in _RUN_INSERT:
        value = getattr(run, field.attname)
        is_json = field.get_internal_type() == "JSONField"
        params.append(_json(value) if is_json else value)
    rows = ", ".join(["(%s, %s, %s, %s::jsonb)"] * len(events))
    params.append(at)  # the events' timestamp comes first in the text below
    for sequence, (type, name, data) in enumerate(events, 1):
        params += [sequence, type.value, name, _json(data, null=False)]
    query = (
        f"WITH new_run AS (INSERT INTO {_RUN} ({columns}) VALUES ({values}) RETURNING id), "
        f"first_events AS (INSERT INTO {_EVENT} (run_id, sequence, type, step, name, attempt, "
        f"data, timestamp) SELECT new_run.id, e.seq, e.type, NULL, e.name, 0, e.data, %s "
        f"FROM new_run, (VALUES {rows}) AS e (seq, type, name, data))"
    )
    if deadline is not None:
        query += (
            f", timeout AS (INSERT INTO {Timer._meta.db_table} (run_id, step, kind, fire_at, "
            "state) SELECT id, NULL, 'workflow_timeout', %s, 'pending' FROM new_run)"
        )
        params.append(deadline)
    query += " SELECT id FROM new_run"
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return int(cursor.fetchone()[0])
