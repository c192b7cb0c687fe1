"""The hot path's SQL: a workflow step's reads and writes in as few round trips as it takes.

A step of the built-in engine is a handful of statements on a locked run; what makes it slow
is not PostgreSQL's work on each but waiting for each one's answer, planning each one anew,
and the ORM building each one. Here the statements of the common path are written out, bound
server-side and prepared once per connection (worker connections only: they cannot sit
behind a transaction-pooling PgBouncer anyway, see the README), and sent with psycopg's
pipeline mode so PostgreSQL receives a step's statements together:

* :func:`claim_attempt` — release the previous attempt's advisory lock, try this attempt's,
  start the attempt (its start-to-close deadline) and read it with its run's ids: one
  statement;
* :func:`lock_run_for_step` — lock the run row, mark the attempt's task completed if that
  attempt is still the one awaited, and read the history a cached continuation has not seen:
  one round trip (the run's lock first, as always);
* :func:`write` — a step's new events, its new activity tasks (taking the advisory lock of
  the one this thread runs next) and the run row: one statement; a closing run adds one more;
* :func:`insert_run` — a new run, its first events and its timeout timer: one statement.

Semantics are unchanged — the same rows, the same locks taken in the same order, inside the
same transaction; the ORM paths elsewhere read and write the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from django.db import connection
from django.utils import timezone
from psycopg.types.json import Jsonb

from ..history import EventType, HistoryEvent
from ..models import ActivityTask, Timer, WorkflowEvent, WorkflowRun
from . import notify

_RUN = WorkflowRun._meta.db_table
_EVENT = WorkflowEvent._meta.db_table
_TASK = ActivityTask._meta.db_table
_TIMER = Timer._meta.db_table


def _raw() -> Any:
    connection.ensure_connection()
    return connection.connection


@contextmanager
def _pipeline() -> Iterator[Any]:
    """Statements sent together; errors become Django's (and mark the connection)."""
    raw = _raw()
    with connection.wrap_database_errors, raw.pipeline():
        yield raw


def _cursor(raw: Any) -> psycopg.Cursor[Any]:
    """A cursor binding parameters server-side (Django's bind them in Python)."""
    return psycopg.Cursor(raw)


def _json(value: Any, null: bool = True) -> Any:
    """A JSON column's value; None is SQL NULL in a nullable column, as the ORM stores it."""
    return None if value is None and null else Jsonb(value)


def _columns(model: Any) -> tuple[list[str], list[str], list[int]]:
    """A model's column names, attribute names, and the positions of its JSON columns."""
    fields = model._meta.concrete_fields
    json_at = [i for i, f in enumerate(fields) if f.get_internal_type() == "JSONField"]
    return [f.column for f in fields], [f.attname for f in fields], json_at


def _loaded(row: Sequence[Any], json_at: list[int]) -> list[Any]:
    """Raw values as the ORM loads them: Django has psycopg hand JSON over as text."""
    values = list(row)
    for i in json_at:
        if isinstance(values[i], str):
            values[i] = json.loads(values[i])
    return values


_RUN_COLUMNS, _RUN_ATTNAMES, _RUN_JSON = _columns(WorkflowRun)
_TASK_COLUMNS_ALL, _TASK_ATTNAMES, _TASK_JSON = _columns(ActivityTask)


# Claiming an attempt ------------------------------------------------------------------------

_CLAIM = (
    "WITH claim AS (SELECT pg_try_advisory_lock(%(key)s) AS locked), "
    # The attempt starts: its start-to-close clock runs from now (see .timeouts). Only the
    # lock's holder starts it, once, and not past the deadline it had while it waited.
    f"started AS (UPDATE {_TASK} SET started_at = %(now)s, deadline = LEAST(%(now)s + "
    "make_interval(secs => (options ->> 'timeout')::float8), "
    "(options ->> 'close_by')::timestamptz) "
    "WHERE id = %(task)s AND attempt = %(attempt)s AND state = 'scheduled' "
    "AND started_at IS NULL AND (deadline IS NULL OR deadline > %(now)s) "
    "AND (SELECT locked FROM claim) RETURNING started_at, deadline) "
    "SELECT (SELECT locked FROM claim), r.workflow_id, r.run_id, "
    "(SELECT started_at FROM started), (SELECT deadline FROM started), "
    f"{', '.join('t.' + c for c in _TASK_COLUMNS_ALL)} "
    f"FROM {_TASK} t JOIN {_RUN} r ON r.id = t.run_id WHERE t.id = %(task)s"
)


def claim_attempt(
    lock_key: int, task_pk: int, release: int | None, attempt: int, now: datetime
) -> ActivityTask | None:
    """Try the attempt's advisory lock and read its task (with the run's ids), releasing the
    lock of the attempt this thread ran before, if any. None if the task does not exist; the
    task's ``locked`` attribute says whether the lock was taken.

    With the lock taken, the same statement starts ``attempt`` if it is the task's current
    one and has not started yet: ``started_at`` becomes ``now`` and ``deadline`` its
    start-to-close end — the write the sweeper needs to notice a killed worker, without a
    round trip of its own. An attempt whose waiting deadline passed is not started."""
    with _pipeline() as raw:
        if release is not None:
            _cursor(raw).execute("SELECT pg_advisory_unlock(%s)", [release], prepare=True)
        cursor = _cursor(raw)
        params = {"key": lock_key, "task": task_pk, "attempt": attempt, "now": now}
        cursor.execute(_CLAIM, params, prepare=True)
    row = cursor.fetchone()
    if row is None:
        return None
    locked, workflow_id, run_id, started_at, deadline, *values = row
    task = ActivityTask.from_db(connection.alias, _TASK_ATTNAMES, _loaded(values, _TASK_JSON))
    if started_at is not None:  # the statement's snapshot read the row before it started
        task.started_at, task.deadline = started_at, deadline
    task.locked = bool(locked)  # type: ignore[attr-defined]
    task.run = WorkflowRun(pk=task.run_id, workflow_id=workflow_id, run_id=run_id)
    return task


# Locking a run for a step ---------------------------------------------------------------------

_LOCK_RUN = f"SELECT {', '.join(_RUN_COLUMNS)} FROM {_RUN} WHERE id = %s FOR UPDATE"
_LOCK_RUN_RELEASING = (
    f"SELECT {', '.join(_RUN_COLUMNS)}, pg_advisory_unlock(%s) FROM {_RUN} WHERE id = %s FOR UPDATE"
)
_COMPLETE = (
    f"UPDATE {_TASK} SET state = 'completed' "
    "WHERE id = %s AND state = 'scheduled' AND attempt = %s RETURNING step, name"
)
_HISTORY = (
    f"SELECT sequence, type, timestamp, step, name, attempt, data FROM {_EVENT} "
    "WHERE run_id = %s AND sequence > %s ORDER BY sequence"
)

#: ``(after, events)``: the run's events above sequence ``after``, read under its lock.
Prefetched = tuple[int, list[HistoryEvent]]


def _run(row: Sequence[Any] | None) -> WorkflowRun | None:
    if row is None:
        return None
    return WorkflowRun.from_db(connection.alias, _RUN_ATTNAMES, _loaded(row, _RUN_JSON))


def lock_run(pk: int, skip_locked: bool = False) -> WorkflowRun | None:
    """Lock a run's row; with ``skip_locked`` return None if someone else holds it."""
    cursor = _cursor(_raw())
    with connection.wrap_database_errors:
        cursor.execute(_LOCK_RUN + (" SKIP LOCKED" if skip_locked else ""), [pk], prepare=True)
        return _run(cursor.fetchone())


def lock_run_for_step(
    run_pk: int,
    history_after: int | None,
    complete: tuple[int, int] | None = None,
    release: int | None = None,
) -> tuple[WorkflowRun | None, Prefetched | None, tuple[int, str] | None]:
    """Lock the run (releasing the advisory lock key ``release`` with the same statement),
    mark the attempt ``complete=(task, attempt)`` completed if it is still the one awaited,
    and read the events after ``history_after`` (what a cached continuation has not seen) —
    one round trip, in that order: the run's lock first, as everywhere, and the history read
    by a statement of its own after it, so it sees whatever the lock's previous holder
    committed. ``history_after=None`` skips the history (read later only if needed)."""
    with _pipeline() as raw:
        run_cursor = _cursor(raw)
        if release is not None:
            run_cursor.execute(_LOCK_RUN_RELEASING, [release, run_pk], prepare=True)
        else:
            run_cursor.execute(_LOCK_RUN, [run_pk], prepare=True)
        task_cursor = _cursor(raw)
        if complete is not None:
            task_cursor.execute(_COMPLETE, list(complete), prepare=True)
        history_cursor = _cursor(raw)
        if history_after is not None:
            history_cursor.execute(_HISTORY, [run_pk, history_after], prepare=True)
    row = run_cursor.fetchone()
    done = task_cursor.fetchone() if complete is not None else None
    history = None
    if history_after is not None:
        history = (history_after, [_event(r) for r in history_cursor.fetchall()])
    if row is None:
        if release is not None:  # no run row: the statement released nothing
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [release])
        return None, None, None
    run = _run(row[: len(_RUN_COLUMNS)])
    return run, history, ((done[0], done[1]) if done else None)


def _event(row: Sequence[Any]) -> HistoryEvent:
    sequence, type, timestamp, step, name, attempt, data = row
    if isinstance(data, str):
        data = json.loads(data)
    return HistoryEvent(sequence, EventType(type), timestamp, step, name, attempt, data or {})


# Writing a step --------------------------------------------------------------------------------

_EVENT_COLUMNS = ("run_id", "sequence", "type", "step", "name", "attempt", "data", "timestamp")
_TASK_COLUMNS = (
    "run_id", "step", "name", "reference", "input", "options", "attempt", "state",
    "not_before", "deadline", "dispatched_at", "heartbeat", "heartbeat_at",
)  # fmt: skip
_CLOSE = (
    f"WITH tasks AS (UPDATE {_TASK} SET state = 'canceled' "
    "WHERE run_id = %s AND state = 'scheduled'), "
    f"timers AS (UPDATE {_TIMER} SET state = 'canceled' "
    "WHERE run_id = %s AND state = 'pending') "
    "SELECT pg_notify(%s, %s), "
    f"EXISTS (SELECT 1 FROM {_RUN} WHERE parent_id = %s AND status = 'running' "
    "AND parent_close_policy = 'cancel')"
)


#: Rows per ``INSERT`` of a step's events or tasks: a wide step (a fan-out of thousands of
#: activities) is written in several statements of one round trip, each far below
#: PostgreSQL's 65,535 bind parameters per statement (13 a task, 8 an event).
CHUNK = 1000


def _chunks(rows: Sequence[Any]) -> list[Sequence[Any]]:
    return [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]


def _insert_events(run: WorkflowRun, events: Sequence[HistoryEvent]) -> tuple[str, list[Any]]:
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(events))
    params: list[Any] = []
    for e in events:
        params += [run.pk, e.sequence, e.type.value, e.step, e.name, e.attempt,
                   _json(e.data, null=False), e.timestamp]  # fmt: skip
    return f"INSERT INTO {_EVENT} ({', '.join(_EVENT_COLUMNS)}) VALUES {values}", params


def _insert_tasks(tasks: Sequence[ActivityTask]) -> tuple[str, list[Any]]:
    one = "(" + ", ".join(["%s"] * len(_TASK_COLUMNS)) + ")"
    params: list[Any] = []
    for t in tasks:
        params += [
            t.run_id, t.step, t.name, t.reference, _json(t.input),
            _json(t.options, null=False), t.attempt, t.state, t.not_before,
            t.deadline, t.dispatched_at, _json(t.heartbeat), t.heartbeat_at,
        ]  # fmt: skip
    query = (f"INSERT INTO {_TASK} ({', '.join(_TASK_COLUMNS)}) "
             f"VALUES {', '.join([one] * len(tasks))} RETURNING id, step")  # fmt: skip
    return query, params


def write(
    run: WorkflowRun,
    events: Sequence[HistoryEvent],
    tasks: Sequence[ActivityTask],
    fields: Sequence[str] = (),
    closing: bool = False,
    claim: int | None = None,
) -> bool:
    """Insert events and activity tasks (setting the tasks' primary keys) and update the run's
    ``fields``: one statement, or for a wide step one more per :data:`CHUNK` rows, all in one
    round trip. With ``closing``, a further statement cancels the run's open tasks and timers,
    wakes whoever waits for its result (:mod:`.notify`, on commit), and answers whether it has
    running children its close must cancel. With ``claim`` (a lock key space), the first task
    also gets its advisory lock (``task.locked``): this thread runs it next (eager), and the
    lock is taken before anyone else can see the task."""
    if not (events or tasks or fields or closing):
        return False
    event_chunks, task_chunks = _chunks(events), _chunks(tasks)
    parts: list[str] = []
    params: list[Any] = []
    if event_chunks:
        query, values = _insert_events(run, event_chunks.pop(0))
        parts.append(f"new_events AS ({query})")
        params += values
    if fields:
        run.updated_at = timezone.now()
        sets = []
        for name in [*fields, "updated_at"]:
            field = WorkflowRun._meta.get_field(name)
            sets.append(f"{field.column} = %s")  # type: ignore[union-attr]
            value = getattr(run, field.attname)  # type: ignore[union-attr]
            is_json = field.get_internal_type() == "JSONField"
            params.append(_json(value) if is_json else value)
        parts.append(f"run_row AS (UPDATE {_RUN} SET {', '.join(sets)} WHERE id = %s)")
        params.append(run.pk)
    final = "SELECT NULL, NULL, NULL WHERE false"
    if task_chunks:
        query, values = _insert_tasks(task_chunks.pop(0))
        parts.append(f"new_tasks AS ({query})")
        params += values
        locking = "NULL::boolean"
        if claim is not None:
            locking = "CASE WHEN step = %s THEN pg_try_advisory_lock(%s::bigint | id) END"
            params += [tasks[0].step, claim]
        final = f"SELECT id, step, {locking} FROM new_tasks"
    query = (f"WITH {', '.join(parts)} " if parts else "") + final
    children = None
    written: list[psycopg.Cursor[Any]] = []
    with _pipeline() as raw:
        first = _cursor(raw)
        first.execute(query, params, prepare=True)
        written.append(first)
        for chunk in event_chunks:
            _cursor(raw).execute(*_insert_events(run, chunk), prepare=True)
        for chunk in task_chunks:
            more = _cursor(raw)
            more.execute(*_insert_tasks(chunk), prepare=True)
            written.append(more)
        if closing:
            children = _cursor(raw)
            pk = run.pk
            children.execute(_CLOSE, [pk, pk, notify.CHANNEL, str(run.run_id), pk], prepare=True)
    if tasks:
        by_step: dict[int, tuple[int, Any]] = {}
        for cursor in written:
            for row in cursor.fetchall():
                by_step[row[1]] = (row[0], row[2] if len(row) > 2 else None)
        for task in tasks:
            task.pk, task.locked = by_step[task.step]  # type: ignore[attr-defined]
    if children is None:
        return False
    answer = children.fetchone()
    return bool(answer and answer[1])


# Starting a run ---------------------------------------------------------------------------------

_RUN_INSERT = [f for f in WorkflowRun._meta.concrete_fields if not f.primary_key]


def insert_run(
    run: WorkflowRun,
    events: Sequence[tuple[EventType, str, dict[str, Any]]],
    at: Any,
    deadline: Any,
) -> int:
    """Insert a run, its first events (``(type, name, data)``, from sequence 1) and its
    workflow-timeout timer (when ``deadline``) in one statement; return its primary key.

    Not prepared: this runs in web processes too, which may sit behind a pooler."""
    columns = ", ".join(f.column for f in _RUN_INSERT)
    values = ", ".join(["%s"] * len(_RUN_INSERT))
    params: list[Any] = []
    for field in _RUN_INSERT:
        value = getattr(run, field.attname)
        is_json = field.get_internal_type() == "JSONField"
        params.append(_json(value) if is_json else value)
    rows = ", ".join(["(%s::int, %s::text, %s::text, %s::jsonb)"] * len(events))
    params.append(at)  # the events' timestamp comes first in the text below
    for sequence, (type, name, data) in enumerate(events, 1):
        params += [sequence, type.value, name, _json(data, null=False)]
    query = (
        f"WITH new_run AS (INSERT INTO {_RUN} ({columns}) VALUES ({values}) RETURNING id), "
        f"first_events AS (INSERT INTO {_EVENT} (run_id, sequence, type, step, name, attempt, "
        f"data, timestamp) SELECT new_run.id, e.seq, e.type, NULL, e.name, 0, e.data, "
        f"%s::timestamptz FROM new_run, (VALUES {rows}) AS e (seq, type, name, data))"
    )
    if deadline is not None:
        query += (
            f", timeout AS (INSERT INTO {_TIMER} (run_id, step, kind, fire_at, state) "
            "SELECT id, NULL, 'workflow_timeout', %s, 'pending' FROM new_run)"
        )
        params.append(deadline)
    query += " SELECT id FROM new_run"
    cursor = _cursor(_raw())
    with connection.wrap_database_errors:
        cursor.execute(query, params)
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])
