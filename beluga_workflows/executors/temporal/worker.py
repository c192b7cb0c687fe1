"""What ``manage.py runworker`` runs with the Temporal executor.

A Temporal worker on the configured task queue hosting :class:`.workflow.BelugaWorkflow` (every
beluga workflow) and :func:`.activity.beluga_activity` (every activity, in a thread pool of
``--concurrency`` threads), plus the :class:`.mirror.MirrorLoop` thread, the heartbeat that
announces the worker on its task queue (:mod:`beluga_workflows.heartbeats`) and, with
``RETENTION`` set, the pruning of old mirror rows (:mod:`beluga_workflows.retention`). It prints
``runworker ready`` once Temporal lists it among the task queue's pollers, and shuts down
cleanly on SIGTERM/SIGINT (in-flight activities get a grace period to finish). ``--queues``
chooses the task queues: ``default`` is the configured one, any other name gets a Temporal
worker of its own for the activities sent there (``with_activity_queue``), and a worker
without ``default`` runs no workflows.

Workflow code runs in Temporal's sandbox (:func:`sandbox_restrictions`). Our package, Django,
the installed apps, the declared ``TEMPORAL["PASSTHROUGH_MODULES"]`` and the workflow modules
themselves are passed through: the registry of workflow names and the modules that define
them are the worker's own, imported once. Workflow code in them runs under the determinism
guard (:mod:`beluga_workflows.determinism`), exactly as on the built-in engine: the wall clock,
``random``, I/O, threads and the ORM raise ``DeterminismViolationError``. Modules workflow code
first imports while it runs are imported anew by the sandbox and restricted by it; what it
refuses there is reported as the same error (docs/determinism.md).

A non-determinism Temporal detects on replay (the code now schedules another activity than
the history recorded) fails the run, as the built-in engine does, unless ``ON_WORKFLOW_ERROR``
is ``"hold"``: then its workflow task fails and Temporal retries it until fixed code gets
through (docs/errors.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import signal
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio import activity, workflow
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.workflow import NondeterminismError

from ... import heartbeats, observability, retention
from ...options import DEFAULT_QUEUE
from . import visibility
from .activity import TRACES, beluga_activity, carried_spec
from .convert import ACTIVITY_HEADER
from .mirror import MirrorLoop
from .workflow import BelugaWorkflow

if TYPE_CHECKING:
    from .executor import TemporalExecutor

logger = logging.getLogger("beluga_workflows")

#: How long in-flight activities may run on after SIGTERM before they are abandoned.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)
#: Heartbeats of an activity reach Temporal at most this often.
HEARTBEAT_THROTTLE = timedelta(seconds=1)


#: The header that carries a run's trace context to its activities.
TRACE_HEADER = "beluga-trace"


class TraceCarrier(Interceptor):
    """Hands each activity attempt, in headers, what its workflow knows and the activity
    function does not take: where the function is (:data:`.convert.ACTIVITY_HEADER`, which
    ``workflow.execute_activity`` cannot set) and, with tracing on, the run's trace context
    (its memo), so the attempt's span is a child of the span that started the run."""

    #: Whether the worker started with tracing on.
    tracing = False

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _CarryingWorkflow

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CarriedActivity(next)


class _CarryingWorkflow(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_CarryingOutbound(outbound))


class _CarryingOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> Any:
        headers = getattr(workflow.instance(), "activity_headers", {})
        spec = headers.pop(input.activity_id or "", None)
        if spec is not None:
            header = workflow.payload_converter().to_payload(spec)
            input.headers = {**input.headers, ACTIVITY_HEADER: header}
        trace = TraceCarrier.tracing and workflow.memo_value(observability.TRACE_MEMO, None)
        if trace:
            header = workflow.payload_converter().to_payload(trace)
            input.headers = {**input.headers, TRACE_HEADER: header}
        return super().start_activity(input)


class _CarriedActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        with carried_spec(input.headers):
            header = input.headers.get(TRACE_HEADER)
            if header is None:
                return await super().execute_activity(input)
            token = activity.info().task_token  # the attempt's thread finds it by its token
            TRACES[token] = activity.payload_converter().from_payload(header)
            try:
                return await super().execute_activity(input)
            finally:
                TRACES.pop(token, None)


def _interceptors() -> list[Interceptor]:
    # The first look at what observes imports the hooks now, outside the sandbox.
    TraceCarrier.tracing = observability.enabled() and observability.tracing()
    return [TraceCarrier()]


def _failing_exceptions() -> list[type[BaseException]]:
    """Under ``ON_WORKFLOW_ERROR = "fail"`` a non-determinism Temporal detects fails the run;
    under ``"hold"`` it fails the workflow task, which Temporal retries until fixed code gets
    through it (per-workflow ``on_error`` cannot reach Temporal's own detection)."""
    from ...conf import beluga_settings
    from . import holds

    holds.ON_ERROR = beluga_settings.ON_WORKFLOW_ERROR
    return [] if beluga_settings.ON_WORKFLOW_ERROR == "hold" else [NondeterminismError]


#: Passed through Temporal's sandbox besides its own list (the standard library, temporalio):
#: our package (the registry of workflow names must be the worker's own), greenlet (a run's
#: continuation), OpenTelemetry (the worker's tracer), Django and every installed app (Django
#: registers an app's models once per process; a copy imported in a sandbox would clash).
PASSTHROUGH = ("beluga_workflows", "greenlet", "opentelemetry", "django")


def sandbox_restrictions() -> SandboxRestrictions:
    """Temporal's default restrictions, passing through only :data:`PASSTHROUGH`, the
    installed apps and ``TEMPORAL["PASSTHROUGH_MODULES"]``; the workflow modules themselves are
    imported passed through (``BelugaWorkflow.function``). Workflow code in them runs under
    the determinism guard, as on the built-in engine (docs/determinism.md); the sandbox
    restricts what it imports anew: modules first imported by workflow code as it runs."""
    from django.apps import apps

    from ... import determinism
    from ...conf import beluga_settings

    determinism.install()  # here, outside the sandbox: it wraps the real modules
    declared = beluga_settings.TEMPORAL.get("PASSTHROUGH_MODULES") or ()
    installed = {config.name.partition(".")[0] for config in apps.get_app_configs()}
    default = SandboxRestrictions.default
    members = default.invalid_module_members
    builtins = members.children["__builtins__"]
    # open() is the guard's to refuse, with the error the built-in engine gives.
    builtins = dataclasses.replace(builtins, use=builtins.use - {"open"})
    members = dataclasses.replace(members, children={**members.children, "__builtins__": builtins})
    return dataclasses.replace(default, invalid_module_members=members).with_passthrough_modules(
        *PASSTHROUGH, *sorted(installed), *declared
    )


def build_worker(
    client: Client, task_queue: str, concurrency: int, pool: Any, workflows: bool = True
) -> Worker:
    """A Temporal worker for ``task_queue``: its activities, and (unless ``workflows`` is
    False: a task queue of activities only, `runworker --queues gpu`) every beluga workflow."""
    hosted: dict[str, Any] = {}
    if workflows:
        hosted = {
            # Workflow tasks run on one thread: each run keeps its live continuation (a
            # greenlet, which only the thread that made it can resume) from task to task.
            "workflow_task_executor": concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="beluga-workflow-tasks"
            ),
            "workflows": [BelugaWorkflow],
            "workflow_runner": SandboxedWorkflowRunner(restrictions=sandbox_restrictions()),
            "workflow_failure_exception_types": _failing_exceptions(),
        }
    return Worker(
        client,
        task_queue=task_queue,
        activities=[beluga_activity],
        activity_executor=pool,
        max_concurrent_activities=concurrency,
        interceptors=_interceptors(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # Cancellation reaches a running activity in a heartbeat's answer: heartbeat often
        # enough that ActivityContext.is_cancelled() turns true within about a second.
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        **hosted,
    )


class TemporalWorker:
    def __init__(
        self,
        executor: TemporalExecutor,
        concurrency: int = 4,
        loglevel: str = "INFO",
        mirror: bool = True,
        queues: Sequence[str] | None = None,
        **ignored: Any,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.executor = executor
        #: The task queues polled: workflows and activities on the executor's own (``default``
        #: in ``--queues``), activities only on the others (``with_activity_queue``).
        named = [executor.task_queue if q == DEFAULT_QUEUE else q for q in queues or ()]
        self.queues = list(dict.fromkeys(named)) or [executor.task_queue]
        self.concurrency = concurrency
        self.loglevel = loglevel
        self.mirror = mirror and executor.mirror

    def run(self) -> None:
        from ...conf import beluga_settings

        logging.getLogger("temporalio").setLevel(self.loglevel.upper())
        mirror = None
        if self.mirror:
            mirror = MirrorLoop(self.executor, interval=float(beluga_settings.POLL_INTERVAL))
            mirror.start()
        info = heartbeats.WorkerInfo(
            executor=self.executor.name,
            queues=tuple(self.queues),
            concurrency=self.concurrency,
            pool="threads",
        )
        try:
            with heartbeats.announced(info), retention.pruning():
                asyncio.run(self._main())
        finally:
            if mirror is not None:
                mirror.stop()
                mirror.join(timeout=10)

    async def _main(self) -> None:
        executor = self.executor
        client = await _connect(executor)
        await visibility.declared(client, create=True)  # runs started from now on publish
        pools, workers = [], []
        for queue in self.queues:  # --concurrency activity threads for each task queue
            pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="beluga-activity"
            )
            main = queue == executor.task_queue
            pools.append(pool)
            workers.append(build_worker(client, queue, self.concurrency, pool, workflows=main))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        running: asyncio.Future[Any] = asyncio.gather(*(worker.run() for worker in workers))
        try:
            for queue in self.queues:
                main = queue == executor.task_queue
                await _wait_polling(client, executor.namespace, queue, running, workflows=main)
            print("runworker ready", flush=True)
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        finally:
            if not running.done():
                await asyncio.gather(*(worker.shutdown() for worker in workers))
            for pool in pools:
                pool.shutdown(wait=False, cancel_futures=True)
        running.result()  # a worker that died on its own is an error exit


async def _connect(executor: TemporalExecutor) -> Client:
    """Connect, waiting up to a minute for a Temporal server that is still starting."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await executor.connect()
        except RuntimeError:  # the SDK's "failed client connect"
            if time.monotonic() > deadline:
                raise
            logger.warning("Temporal at %s is not reachable yet; retrying", executor.host)
            await asyncio.sleep(1)


async def _wait_polling(
    client: Client,
    namespace: str,
    task_queue: str,
    running: asyncio.Future[Any],
    workflows: bool = True,
) -> None:
    """Return once Temporal lists this worker polling the queue's kinds of tasks."""
    deadline = time.monotonic() + 60
    kinds: tuple[Any, ...] = (TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,)
    if workflows:
        kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, *kinds)
    while True:
        if running.done():
            running.result()
            raise RuntimeError("The Temporal worker stopped before it was ready.")
        seen = 0
        for kind in kinds:
            request = DescribeTaskQueueRequest(
                namespace=namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
            )
            try:
                response = await client.workflow_service.describe_task_queue(request)
            except RPCError:  # a server still starting up: ask again
                continue
            seen += any(p.identity == client.identity for p in response.pollers)
        if seen == len(kinds):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"The Temporal worker is not polling {task_queue!r} after 60s.")
        await asyncio.sleep(0.1)
