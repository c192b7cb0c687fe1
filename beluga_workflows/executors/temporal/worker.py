"""What ``manage.py runworker`` runs with the Temporal executor.

A Temporal worker on the configured task queue hosting :class:`.workflow.BelugaWorkflow` (every
beluga workflow) and :func:`.activity.beluga_activity` (every activity, in a thread pool of
``--concurrency`` threads), plus the :class:`.mirror.MirrorLoop` thread, the heartbeat that
announces the worker on its task queue (:mod:`beluga_workflows.heartbeats`) and, with
``RETENTION`` set, the pruning of old mirror rows (:mod:`beluga_workflows.retention`). It prints
``runworker ready`` once Temporal lists it among the task queue's pollers, and shuts down
cleanly on SIGTERM/SIGINT (in-flight activities get a grace period to finish).

Workflow code runs in Temporal's sandbox with every module passed through: the registry of
workflow names and the modules that define them are the worker's own, imported once (Django
apps' ``workflows.py`` are imported at startup). With everything passed through, the sandbox
refuses some I/O (``open()``) but not the clock or ``random``: workflow code must use
``ctx.now()`` and ``ctx.random()`` itself (docs/temporal.md).

A non-determinism Temporal detects on replay (the code now schedules another activity than
the history recorded) fails the run, as the built-in engine does, instead of retrying its
workflow task forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time
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
from .activity import TRACES, beluga_activity
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
    """Hands a run's trace context (its memo) to each of its activity attempts, in a header:
    the attempt's span is then a child of the span that started the run. Installed only when
    the worker starts with tracing on."""

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
        trace = workflow.memo_value(observability.TRACE_MEMO, None)
        if trace:
            header = workflow.payload_converter().to_payload(trace)
            input.headers = {**input.headers, TRACE_HEADER: header}
        return super().start_activity(input)


class _CarriedActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
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
    return [TraceCarrier()] if observability.enabled() and observability.tracing() else []


def build_worker(client: Client, task_queue: str, concurrency: int, pool: Any) -> Worker:
    # Workflow tasks run on one thread: each run keeps its live continuation (a greenlet,
    # which only the thread that made it can resume) from one workflow task to the next.
    workflow_thread = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="beluga-workflow-tasks"
    )
    return Worker(
        client,
        workflow_task_executor=workflow_thread,
        task_queue=task_queue,
        workflows=[BelugaWorkflow],
        activities=[beluga_activity],
        activity_executor=pool,
        max_concurrent_activities=concurrency,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
        workflow_failure_exception_types=[NondeterminismError],
        interceptors=_interceptors(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # Cancellation reaches a running activity in a heartbeat's answer: heartbeat often
        # enough that ActivityContext.is_cancelled() turns true within about a second.
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )


class TemporalWorker:
    def __init__(
        self,
        executor: TemporalExecutor,
        concurrency: int = 4,
        loglevel: str = "INFO",
        mirror: bool = True,
        **ignored: Any,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.executor = executor
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
            queues=(self.executor.task_queue,),
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
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="beluga-activity"
        )
        worker = build_worker(client, executor.task_queue, self.concurrency, pool)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        running = asyncio.create_task(worker.run())
        try:
            await _wait_polling(client, executor.namespace, executor.task_queue, running)
            print("runworker ready", flush=True)
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        finally:
            if not running.done():
                await worker.shutdown()
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
    client: Client, namespace: str, task_queue: str, running: asyncio.Task[Any]
) -> None:
    """Return once Temporal lists this worker polling both kinds of tasks on the queue."""
    deadline = time.monotonic() + 60
    kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
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
