"""Temporal workers for benchmark diagnostics, in place of ``manage.py runworker``.

* default: our Temporal worker (``BELUGA_EXECUTOR=temporal``) without the mirror thread that
  copies runs into our Django tables (``step_cost --variants temporal-nomirror``): separates
  what Temporal costs from what the mirror adds. Not something to deploy: without a mirror
  the admin and REST API go stale.
* ``--sdk``: a plain Temporal SDK worker for ``bench.sdk_workflows`` — the same workflow shape
  written directly against the SDK, no beluga at all (``step_cost --variants temporal-sdk``),
  with the worker settings our executor uses (sandbox, thread-pool activities).

Both print ``runworker ready`` once Temporal lists them polling, like ``runworker``.

    BELUGA_EXECUTOR=temporal BELUGA_TEMPORAL_HOST=127.0.0.1:7233 \\
    BELUGA_TEMPORAL_TASK_QUEUE=q .venv/bin/python -m bench.temporal_worker [--sdk] --concurrency 1
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import secrets
import signal
from typing import Any


async def run_sdk_worker(host: str, task_queue: str, concurrency: int) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from bench.sdk_workflows import SdkChain, increment

    client = await Client.connect(host)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[SdkChain],
        activities=[increment],
        activity_executor=pool,
        max_concurrent_activities=concurrency,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    running = asyncio.create_task(worker.run())
    await wait_polling(client, task_queue)
    print("runworker ready", flush=True)
    await stop.wait()
    await worker.shutdown()
    await running
    pool.shutdown(wait=False, cancel_futures=True)


async def wait_polling(client: Any, task_queue: str) -> None:
    """Return once Temporal lists this client's worker polling both kinds of tasks."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    for _ in range(600):
        seen = 0
        for kind in kinds:
            request = DescribeTaskQueueRequest(
                namespace="default", task_queue=TaskQueue(name=task_queue), task_queue_type=kind
            )
            response = await client.workflow_service.describe_task_queue(request)
            seen += any(p.identity == client.identity for p in response.pollers)
        if seen == len(kinds):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the worker is not polling {task_queue!r} after 60s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--loglevel", "-l", default="WARNING")
    parser.add_argument("--sdk", action="store_true", help="host bench.sdk_workflows instead")
    args = parser.parse_args()
    if args.sdk:
        host = os.environ.get("BELUGA_TEMPORAL_HOST") or "localhost:7233"
        task_queue = os.environ.get("BELUGA_TEMPORAL_TASK_QUEUE") or "beluga-workflows"
        asyncio.run(run_sdk_worker(host, task_queue, args.concurrency))
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + secrets.token_urlsafe(48))
    import django

    django.setup()
    from beluga_workflows.executors import get_executor
    from beluga_workflows.executors.temporal.worker import TemporalWorker

    executor = get_executor()
    if executor.name != "temporal":
        parser.error("set BELUGA_EXECUTOR=temporal")
    TemporalWorker(
        executor,  # type: ignore[arg-type]
        concurrency=args.concurrency,
        loglevel=args.loglevel,
        mirror=False,
    ).run()


if __name__ == "__main__":
    main()
