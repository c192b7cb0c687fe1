"""The DBOS peer: the same workloads as ours, written with DBOS Transact, on the same PostgreSQL.

Run by ``bench.versus`` in a subprocess of its own (DBOS keeps process-wide state), it prints
one JSON object with its figures. DBOS runs workflows in the process that starts them, so this
one process is both client and worker — as DBOS is meant to be deployed.

Workloads (see ``bench/versus.py`` for ours):

* ``w3`` — R runs of a workflow with three trivial steps, started at once; runs/s from the
  first start to the last result.
* ``latency`` — a workflow parked on ``DBOS.recv("approval")`` gets the message and runs one
  step; the time from ``DBOS.send`` to ``get_result()`` returning, per run.
* ``steps`` — one workflow of N trivial steps in a row; ms per step.
* ``fanout`` (``bench.fanout``, ``--only fanout --fanout N``) — one workflow enqueuing N trivial
  steps on a DBOS queue (``queue.enqueue(step, i)``, the idiomatic DBOS fan-out) and waiting for
  every handle's ``get_result()``; the queue has DBOS's defaults (no concurrency limit, polled
  every second). A warm-up fan-out of 10 runs first; the figures come from one run of N.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

from dbos import DBOS, DBOSConfig


@DBOS.step()
def add_one(value: int) -> int:
    return value + 1


@DBOS.workflow()
def three_steps(value: int) -> int:
    for _ in range(3):
        value = add_one(value)
    return value


@DBOS.workflow()
def chain(steps: int) -> int:
    value = 0
    for _ in range(steps):
        value = add_one(value)
    return value


@DBOS.workflow()
def approval(value: int) -> int:
    approved = DBOS.recv("approval", timeout_seconds=120)
    return add_one(value if approved else -1)


#: The fan-out queue, registered after launch (``DBOS.register_queue``).
_fanout_queue: Any = None


@DBOS.workflow()
def fanout(count: int) -> int:
    handles = [_fanout_queue.enqueue(add_one, i) for i in range(count)]
    return sum(handle.get_result() for handle in handles)


def w3(runs: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    began = time.perf_counter()
    handles = []
    for i in range(runs):
        with _id(f"w3-{tag}-{i}"):
            handles.append(DBOS.start_workflow(three_steps, i))
    results = [handle.get_result() for handle in handles]
    elapsed = time.perf_counter() - began
    assert results == [i + 3 for i in range(runs)]
    return {"runs": runs, "seconds": elapsed, "runs_per_s": runs / elapsed}


def latency(samples: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    times = []
    for i in range(samples):
        workflow_id = f"lat-{tag}-{i}"
        with _id(workflow_id):
            handle = DBOS.start_workflow(approval, i)
        time.sleep(0.05)  # parked on recv
        began = time.perf_counter()
        DBOS.send(workflow_id, True, "approval")
        assert handle.get_result() == i + 1
        times.append((time.perf_counter() - began) * 1000)
    return {"samples": samples, "p50_ms": statistics.median(times), "p90_ms": _p90(times)}


def steps(count: int) -> dict[str, Any]:
    began = time.perf_counter()
    with _id(f"steps-{uuid.uuid4().hex[:8]}"):
        assert DBOS.start_workflow(chain, count).get_result() == count
    elapsed = time.perf_counter() - began
    return {"steps": count, "seconds": elapsed, "ms_per_step": elapsed * 1000 / count}


def fanout_run(count: int) -> dict[str, Any]:
    """One fan-out of ``count`` queued steps: seconds from start to result."""
    began = time.perf_counter()
    with _id(f"fanout-{uuid.uuid4().hex[:8]}"):
        result = DBOS.start_workflow(fanout, count).get_result()
    elapsed = time.perf_counter() - began
    assert result == count * (count + 1) // 2, result
    return {"activities": count, "seconds": elapsed, "ms_per_activity": elapsed * 1000 / count}


def _peak_rss_mib() -> float:
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _id(workflow_id: str) -> Any:
    from dbos import SetWorkflowID

    return SetWorkflowID(workflow_id)


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True, help="system database URL (postgresql://)")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=100, help="steps of the fan-out")
    parser.add_argument("--only", default="w3,latency,steps", help="of w3,latency,steps,fanout")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    config: DBOSConfig = {
        "name": "beluga-bench",
        "system_database_url": args.database,
        "log_level": "WARNING",
    }
    if wanted == {"fanout"}:
        # An application and a version of its own for every fan-out process: DBOS only runs
        # queued workflows and recovers pending ones of its own version, so neither a killed
        # earlier run's steps nor a fan-out running beside this one (the tests) take its place.
        config["name"] = "beluga-bench-fanout"
        config["application_version"] = f"fanout-{uuid.uuid4().hex}"
    DBOS(config=config)
    DBOS.launch()
    out: dict[str, Any] = {"dbos_version": _version()}
    try:
        if "w3" in wanted:
            w3(min(20, args.runs))  # warm up the pool and the tables
            out["w3"] = w3(args.runs)
        if "latency" in wanted:
            latency(3)
            out["latency"] = latency(args.samples)
        if "steps" in wanted:
            out["steps_short"] = steps(10)
            out["steps_long"] = steps(args.steps)
        if "fanout" in wanted:
            global _fanout_queue
            _fanout_queue = DBOS.register_queue("bench_fanout", on_conflict="always_update")
            fanout_run(10)  # warm up
            out["fanout"] = fanout_run(args.fanout)
            out["fanout"]["peak_rss_mib"] = _peak_rss_mib()
    finally:
        DBOS.destroy()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    os._exit(0)  # DBOS's background threads must not hold the benchmark up


def _version() -> str:
    from importlib.metadata import version

    return version("dbos")


if __name__ == "__main__":
    main()
