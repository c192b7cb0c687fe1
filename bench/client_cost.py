"""Client cost: how long do ``execute()`` and ``signal()`` take for the caller?

What a web request pays to start a run or deliver a signal, one client thread, no worker
running (so nothing else competes for the machine and the runs just wait): N starts of
``bench_parked``, then one ``go`` signal to each (default N = 200), mean milliseconds per call.

* ``default``           — the built-in engine: one transaction plus a broker message on commit;
* ``temporal``          — our Temporal executor: the Temporal RPC; the refresh of our mirror of
                          the run (read its history back, write our rows) happens in a
                          background thread, not on the caller's time;
* ``temporal-nomirror`` — the same executor with ``Config(extra={"mirror": False})``;
* ``temporal-sdk``      — the plain temporalio client doing the same (``start_workflow`` and
                          ``signal`` on a handle), on the same client loop: the peer.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/beluga \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
    .venv/bin/python -m bench.client_cost [--calls 200]
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from bench import common


def measure(name: str, executor: Any, calls: int) -> dict[str, Any]:
    from beluga_workflows import workflow
    from bench.workflows import parked

    tag = uuid.uuid4().hex[:8]
    executor.execute(parked, workflow.WorkflowOptions(id=f"bench-cc-{tag}-warm"))  # connect
    began = time.perf_counter()
    ids = [
        executor.execute(parked, workflow.WorkflowOptions(id=f"bench-cc-{tag}-{i}")).id
        for i in range(calls)
    ]
    start_ms = (time.perf_counter() - began) * 1000 / calls
    began = time.perf_counter()
    for workflow_id in ids:
        executor.signal(workflow_id, workflow.Signal("go", True))
    signal_ms = (time.perf_counter() - began) * 1000 / calls
    return {"executor": name, "calls": calls, "start_ms": start_ms, "signal_ms": signal_ms}


def measure_sdk(executor: Any, calls: int) -> dict[str, Any]:
    """The same calls through the plain temporalio client, on the executor's client loop."""
    task_queue = executor.task_queue
    tag = uuid.uuid4().hex[:8]

    async def start(client: Any, i: int) -> str:
        handle = await client.start_workflow(
            "bench_parked", None, id=f"bench-cc-sdk-{tag}-{i}", task_queue=task_queue
        )
        return str(handle.id)

    async def signal(client: Any, workflow_id: str) -> None:
        await client.get_workflow_handle(workflow_id).signal("go", True)

    executor.call(lambda client: start(client, -1))  # connect
    began = time.perf_counter()
    ids = [executor.call(lambda client, i=i: start(client, i)) for i in range(calls)]
    start_ms = (time.perf_counter() - began) * 1000 / calls
    began = time.perf_counter()
    for workflow_id in ids:
        executor.call(lambda client, w=workflow_id: signal(client, w))
    signal_ms = (time.perf_counter() - began) * 1000 / calls
    return {"executor": "temporal-sdk", "calls": calls, "start_ms": start_ms,
            "signal_ms": signal_ms}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    common.setup_django()
    common.clean()
    from beluga_workflows import workflow

    rows = [measure("default", workflow.new("default"), args.calls)]
    with common.temporal_server("client_cost") as server:
        for name, mirror in (("temporal", True), ("temporal-nomirror", False)):
            extra = {
                "host": server.address,
                "namespace": "default",
                "task_queue": f"bench-client-cost-{uuid.uuid4().hex[:8]}",
                "mirror": mirror,
            }
            executor = workflow.new("temporal", workflow.Config(extra=extra))
            rows.append(measure(name, executor, args.calls))
        rows.append(measure_sdk(executor, args.calls))
    common.clean()  # the default engine's runs never ran: drop them and their queued messages
    base = rows[0]
    print(f"{args.calls} starts, then {args.calls} signals, one client thread, no worker running\n")
    print(
        common.table(
            [
                "executor",
                "start ms/call",
                "signal ms/call",
                "start vs default",
                "signal vs default",
                "start vs temporal-sdk",
                "signal vs temporal-sdk",
            ],
            [
                [
                    r["executor"],
                    r["start_ms"],
                    r["signal_ms"],
                    common.ratio(r["start_ms"], base["start_ms"]),
                    common.ratio(r["signal_ms"], base["signal_ms"]),
                    common.ratio(r["start_ms"], rows[-1]["start_ms"]),
                    common.ratio(r["signal_ms"], rows[-1]["signal_ms"]),
                ]
                for r in rows
            ],
        )
    )
    common.save(args.json, rows)


if __name__ == "__main__":
    main()
