"""The Temporal executor: start, signal, query and cancel beluga runs on a Temporal cluster.

Everything a caller reads comes from Temporal itself — ``status()`` from describe, results and
errors from the close event, ``describe``/``history`` from the run's history translated by
:mod:`.translate` — so it is true whether or not a worker or the mirror is running. After
start, signal and cancel the executor also refreshes the run's mirrored rows (see
:mod:`.mirror`) in a background thread, so the admin and the REST API show the change moments
later while the call itself costs what Temporal's client call costs.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError as TemporalAlreadyStarted
from temporalio.service import RPCError, RPCStatusCode

from ... import heartbeats, observability, registry
from ...errors import (
    QueryError,
    ResultTimeoutError,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowNotHeldError,
)
from ...history import HistoryEvent
from ...options import Config, Signal, Status, WorkflowOptions, to_timedelta
from ...serialization import ensure_json, ensure_size
from ...state import WorkflowState
from ..base import DurableExecutor, WorkflowHandle, raise_for_outcome
from . import client as temporal_client
from . import convert, holds, payloads, visibility
from .translate import RunRecord, Tail, translate

logger = logging.getLogger("beluga_workflows")


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND


class TemporalHandle(WorkflowHandle):
    def __init__(self, executor: TemporalExecutor, workflow_id: str, run_id: str) -> None:
        super().__init__(workflow_id, run_id)
        self._executor = executor

    def status(self) -> Status:
        return self._executor.run_status(self._id, self._run_id)

    def result(self, timeout: float | None = None) -> Any:
        return self._executor.run_result(self._id, self._run_id, timeout)


class TemporalExecutor(DurableExecutor):
    """Runs beluga workflows on Temporal.

    ``Config(extra={...})`` keys, each defaulting to ``BELUGA_WORKFLOWS["TEMPORAL"]``: ``host``,
    ``namespace``, ``task_queue``, and optionally ``tls`` (True, or a
    ``temporalio.service.TLSConfig``) and ``api_key`` (``TLS``/``API_KEY`` in the settings, for
    Temporal Cloud), ``data_converter`` and ``payload_codec`` (``DATA_CONVERTER`` and
    ``PAYLOAD_CODEC``: objects or dotted paths, see :mod:`.payloads`). Also ``client`` (a
    connected ``temporalio.client.Client``, used as is, its data converter included),
    ``mirror`` (keep the Django models in step, default True), ``mirror_payloads``
    (``MIRROR_PAYLOADS``: copy values too, default True) and ``query_timeout`` (seconds a
    custom query waits for a worker, default 10).
    """

    name = "temporal"

    def __init__(self, config: Config | None = None) -> None:
        extra = dict((config or Config()).extra)
        self._client: Client | None = extra.get("client")
        needed = {"host", "namespace", "task_queue"} - set(extra)
        if self._client is not None:
            needed -= {"host", "namespace"}
        # Settings fill what ``extra`` lacks; without Django settings, ``extra`` must say it all.
        settings = _settings() if needed else _settings(required=False)
        self.host: str = extra.get("host") or (
            self._client.service_client.config.target_host if self._client else settings["HOST"]
        )
        self.namespace: str = extra.get("namespace") or (
            self._client.namespace if self._client else settings["NAMESPACE"]
        )
        self.task_queue: str = extra.get("task_queue") or settings["TASK_QUEUE"]
        # The connection's own settings only with its address from the settings too.
        connection = settings if needed else {}
        self.tls: Any = extra.get("tls", connection.get("TLS", False))
        self.api_key: str | None = extra.get("api_key", connection.get("API_KEY"))
        converter = extra.get("data_converter", settings.get("DATA_CONVERTER"))
        codec = extra.get("payload_codec", settings.get("PAYLOAD_CODEC"))
        #: Tells shared connections apart: the same settings share one, whatever the objects.
        self._converter_key = tuple(
            v if v is None or isinstance(v, str) else id(v) for v in (converter, codec)
        )
        if self._client is not None:
            self.data_converter = self._client.data_converter
        else:
            self.data_converter = payloads.data_converter(converter, codec)
        self.mirror: bool = bool(extra.get("mirror", True))
        #: False: mirrored rows hold no values (input, result, payloads): see mirror.py.
        self.mirror_payloads = bool(
            extra.get("mirror_payloads", settings.get("MIRROR_PAYLOADS", True))
        )
        self.query_timeout = float(extra.get("query_timeout", 10.0))

    # -- plumbing --------------------------------------------------------------------------
    async def connect(self) -> Client:
        """A new connection (the worker's own), or the ready client this executor was given."""
        if self._client is not None:
            return self._client
        return await Client.connect(
            self.host,
            namespace=self.namespace,
            tls=self.tls,
            api_key=self.api_key,
            data_converter=self.data_converter,
        )

    async def client(self) -> Client:
        """The process-wide connection for calls from sync code (see :mod:`.client`)."""
        if self._client is not None:
            return self._client
        return await temporal_client.shared(
            (self.host, self.namespace, repr(self.tls), self.api_key, self._converter_key),
            self.connect,
        )

    def call(self, fn: Callable[[Client], Any], timeout: float | None = None) -> Any:
        """Run ``await fn(client)`` on the client loop, from sync code."""

        async def run() -> Any:
            return await fn(await self.client())

        return temporal_client.call(run(), timeout)

    def _missing_or_closed(self, workflow_id: str, action: str) -> WorkflowError:
        try:
            status = self.run_status(workflow_id, None)
        except WorkflowNotFoundError as exc:
            return exc
        return WorkflowClosedError(workflow_id, status.value, action)

    def refresh_mirror(self, workflow_id: str, run_id: str | None = None) -> None:
        """Copy the run into the Django models in the background, moments from now (the
        caller does not wait for it: best effort, the worker's mirror does the rest)."""
        if self.mirror:
            from . import mirror

            mirror.refresh_soon(self, workflow_id, run_id)

    # -- starting --------------------------------------------------------------------------
    def _start(self, fn: Callable[..., Any], options: WorkflowOptions) -> WorkflowHandle:
        name, reference = registry.workflow_name(fn), registry.reference(fn)
        ensure_size(ensure_json(options.input, f"Input of workflow {name!r}"), "The input")
        workflow_id = options.id or str(uuid.uuid4())
        timeout = to_timedelta(options.timeout, "WorkflowOptions.timeout")
        if timeout is None:  # BELUGA_WORKFLOWS["DEFAULT_TIMEOUT"], or none
            from ...conf import default_timeout

            timeout = default_timeout()
        memo: dict[str, Any] = {
            convert.REFERENCE_MEMO: reference,
            convert.ACTIVITIES_MEMO: convert.ACTIVITIES_NAMED,
        }

        async def start(client: Client) -> str:
            declared = await visibility.declared(client)
            handle = await client.start_workflow(
                name,
                options.input,
                id=workflow_id,
                task_queue=self.task_queue,
                execution_timeout=timeout or None,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo=memo,
                search_attributes=visibility.at_start() if declared else None,
            )
            return handle.result_run_id or handle.first_execution_run_id or ""

        attributes = {
            "beluga.workflow.name": name,
            "beluga.workflow.id": workflow_id,
            "beluga.executor": self.name,
        }
        with observability.client_span("beluga.workflow.start", attributes) as span:
            trace = observability.carrier()  # the run's steps and attempts are its children
            if trace is not None:
                memo[observability.TRACE_MEMO] = trace
            try:
                run_id = self.call(start)
            except TemporalAlreadyStarted as exc:
                raise WorkflowAlreadyStartedError(workflow_id) from exc
            if span is not None:
                span.set_attribute("beluga.workflow.run_id", run_id)
        self.refresh_mirror(workflow_id, run_id)
        return TemporalHandle(self, workflow_id, run_id)

    # -- signals and cancel ----------------------------------------------------------------
    def signal(self, workflow_id: str, signal: Signal) -> None:
        if not isinstance(signal.name, str) or not signal.name:
            raise ValueError("A signal needs a non-empty name.")
        ensure_size(
            ensure_json(signal.payload, f"Payload of signal {signal.name!r}"), "The payload"
        )

        meta: dict[str, Any] = {"sender": signal.sender}

        async def send(client: Client) -> None:
            handle = client.get_workflow_handle(workflow_id)
            await handle.signal(signal.name, args=[signal.payload, meta])

        attributes = {
            "beluga.workflow.id": workflow_id,
            "beluga.signal.name": signal.name,
            "beluga.executor": self.name,
        }
        with observability.client_span("beluga.workflow.signal", attributes):
            trace = observability.carrier()  # the step that takes the signal links to it
            if trace is not None:
                meta[observability.TRACE_KEY] = trace
            try:
                self.call(send)
            except RPCError as exc:
                if _not_found(exc):
                    action = f"signal {signal.name!r} to"
                    raise self._missing_or_closed(workflow_id, action) from exc
                raise
        self.refresh_mirror(workflow_id)

    def cancel(self, workflow_id: str, sender: str | None = None) -> None:
        """Ask the run to stop; asking twice is harmless. A finished run is refused (Temporal
        itself accepts a cancel request for a run that is already canceled)."""
        status = self.run_status(workflow_id, None)
        if status.is_closed:
            raise WorkflowClosedError(workflow_id, status.value, "cancel")

        async def cancel(client: Client) -> None:
            await client.get_workflow_handle(workflow_id).cancel(reason=sender or "")

        try:
            self.call(cancel)
        except RPCError as exc:
            if _not_found(exc):
                raise self._missing_or_closed(workflow_id, "cancel") from exc
            raise
        self.refresh_mirror(workflow_id)

    def retry(self, workflow_id: str) -> None:
        """Ask again for a held run's workflow task: a no-op signal (ignored by the workflow).
        Temporal keeps its own schedule of attempts (docs/errors.md, "Retry now on Temporal")."""
        state = self.fetch_record(workflow_id).state
        if state.status is not Status.RUNNING:
            raise WorkflowClosedError(workflow_id, state.status.value, "retry")
        if not state.held:
            raise WorkflowNotHeldError(workflow_id, state.status.value)

        async def nudge(client: Client) -> None:
            await client.get_workflow_handle(workflow_id).signal(holds.RETRY_SIGNAL)

        self.call(nudge)
        self.refresh_mirror(workflow_id)

    # -- reading ---------------------------------------------------------------------------
    def _describe(self, workflow_id: str, run_id: str | None) -> Any:
        async def describe(client: Client) -> Any:
            return await client.get_workflow_handle(workflow_id, run_id=run_id).describe()

        try:
            return self.call(describe)
        except RPCError as exc:
            if _not_found(exc):
                raise WorkflowNotFoundError(workflow_id) from exc
            raise

    def run_status(self, workflow_id: str, run_id: str | None) -> Status:
        return convert.status_from_temporal(self._describe(workflow_id, run_id).status)

    def progress(self, workflow_id: str, run_id: str) -> tuple[bool, int]:
        """Whether a workflow task is scheduled or running (the history is about to grow),
        and the run's history length."""
        raw = self._describe(workflow_id, run_id).raw_description
        return raw.HasField("pending_workflow_task"), raw.workflow_execution_info.history_length

    def fetch_record(self, workflow_id: str, run_id: str | None = None) -> RunRecord:
        """The run (the latest one with this id by default), read from its Temporal history."""
        try:
            return self.call(lambda client: read_record(client, workflow_id, run_id))  # type: ignore[no-any-return]
        except RPCError as exc:
            if _not_found(exc):
                raise WorkflowNotFoundError(workflow_id) from exc
            raise

    def fetch_tail(self, workflow_id: str, tail: Tail, length: int) -> RunRecord:
        """What Temporal appended to the run since ``tail`` was last read, folded into it."""
        try:
            return self.call(lambda client: read_tail(client, workflow_id, tail, length))  # type: ignore[no-any-return]
        except RPCError as exc:
            if _not_found(exc):
                raise WorkflowNotFoundError(workflow_id) from exc
            raise

    def run_result(self, workflow_id: str, run_id: str, timeout: float | None) -> Any:
        """The result of the run, following ``continue_as_new`` to the chain's last run."""

        async def result(client: Client) -> Any:
            handle = client.get_workflow_handle(workflow_id, run_id=run_id)
            try:
                return await handle.result(follow_runs=True)
            except WorkflowFailureError:
                # Read the outcome as describe() and the mirror do, from the translated history.
                record = await read_record(client, workflow_id, run_id)
                while record.state.status is Status.CONTINUED_AS_NEW and record.state.continued_as:
                    record = await read_record(client, workflow_id, record.state.continued_as)
            raise_for_outcome(
                workflow_id, record.state.status, record.state.error, record.timeout_seconds
            )

        try:
            return self.call(result, timeout)
        except TimeoutError:
            raise ResultTimeoutError(workflow_id, timeout) from None
        except RPCError as exc:
            if _not_found(exc):
                raise WorkflowNotFoundError(workflow_id) from exc
            raise

    def query(self, workflow_id: str, query_type: str) -> Any:
        if query_type == "status":
            return self.run_status(workflow_id, None).value
        if query_type in ("result", "history"):
            record = self.fetch_record(workflow_id)
            if query_type == "result":
                return record.state.result
            return [event.to_json() for event in record.events]

        async def query(client: Client) -> Any:
            return await client.get_workflow_handle(workflow_id).query(query_type)

        try:
            return self.call(query, self.query_timeout)
        except WorkflowQueryFailedError as exc:
            raise QueryError(str(exc)) from None
        except TimeoutError:
            raise QueryError(
                f"No Temporal worker answered query {query_type!r} on {workflow_id!r} within "
                f"{self.query_timeout:g}s; custom queries need `manage.py runworker` running."
            ) from None
        except RPCError as exc:
            if _not_found(exc):
                raise WorkflowNotFoundError(workflow_id) from exc
            raise QueryError(str(exc)) from exc

    def get_handle(self, workflow_id: str) -> WorkflowHandle:
        return TemporalHandle(self, workflow_id, self._describe(workflow_id, None).run_id)

    def describe(self, workflow_id: str) -> WorkflowState:
        """The run as Temporal has it; ``no_worker`` when it is running and no live worker
        (by the heartbeats in our database) polls its task queue, or the task queue of an
        activity it waits on."""
        record = self.fetch_record(workflow_id)
        state = record.state
        queues = (record.task_queue, *record.activity_queues)  # and its activities' queues
        if state.status is Status.RUNNING and not all(map(heartbeats.serves_task_queue, queues)):
            state = dataclasses.replace(state, no_worker=True)
        if state.held:  # the history keeps a streak's first failures only: Temporal counts on
            raw = self._describe(workflow_id, state.run_id).raw_description
            if raw.HasField("pending_workflow_task"):
                failed = max(state.held["attempts"], raw.pending_workflow_task.attempt - 1)
                state = dataclasses.replace(state, held={**state.held, "attempts": failed})
        return state

    def history(self, workflow_id: str) -> list[HistoryEvent]:
        return self.fetch_record(workflow_id).events

    def worker(self, concurrency: int = 4, **options: Any) -> Any:
        from .worker import TemporalWorker

        return TemporalWorker(self, concurrency=concurrency, **options)


async def read_tail(client: Client, workflow_id: str, tail: Tail, length: int) -> RunRecord:
    """Fold the run's Temporal events appended since ``tail`` was last read into it, up to
    ``length`` events in all (its history length, from describe: asking for events past the
    end of a running run's history would wait for new ones)."""
    execution = WorkflowExecution(workflow_id=workflow_id, run_id=tail.reader.run_id)
    events: list[Any] = []
    while tail.read + len(events) < length:
        request = GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace,
            execution=execution,
            next_page_token=tail.token,
            wait_new_event=True,  # hands back a token even at the end, to read on from there
            maximum_page_size=1000,
        )
        response = await client.workflow_service.get_workflow_execution_history(
            request, retry=True, timeout=timedelta(seconds=10)
        )
        await payloads.decode_events(response.history.events, client.data_converter)
        events += response.history.events
        tail.token = response.next_page_token
        if not response.history.events or not tail.token:
            break
    return tail.fold(events) if events or tail.record is None else tail.record


async def read_record(client: Client, workflow_id: str, run_id: str | None) -> RunRecord:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    if run_id is None:
        run_id = (await handle.describe()).run_id
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    events = [event async for event in handle.fetch_history_events()]
    await payloads.decode_events(events, client.data_converter)
    return translate(workflow_id, run_id or "", events, client.data_converter)


def _settings(required: bool = True) -> dict[str, Any]:
    from django.conf import settings

    from ...conf import beluga_settings

    if not required and not settings.configured:
        return {}
    return dict(beluga_settings.TEMPORAL)
