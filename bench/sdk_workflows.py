"""The step-cost workflow written directly against the Temporal Python SDK (no beluga).

A diagnostic peer for ``step_cost --variants temporal-sdk``: the same shape as
``bench.workflows.chain`` (N activities one after the other, each adding one), hosted by
``python -m bench.temporal_worker --sdk`` with the settings our Temporal worker uses (sandbox,
thread-pool activities). It tells what Temporal itself costs per step on this machine, apart
from what our Temporal executor adds. No Django here: the module runs in Temporal's sandbox.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_sdk_increment")
def increment(value: int) -> int:
    return value + 1


@workflow.defn(name="bench_sdk_chain")
class SdkChain:
    @workflow.run
    async def run(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = await workflow.execute_activity(
                increment, value, start_to_close_timeout=timedelta(minutes=5)
            )
        return value
