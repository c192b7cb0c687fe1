"""Raw Celery, the ceiling of the broker path: chains of three trivial tasks, no durability.

``bench.versus`` starts ``celery -A bench.celery_peer worker`` on the benchmark's broker
(``BENCH_BROKER_URL``) and calls :func:`run_chains` from its own process. The last task of
each chain counts itself in a Redis key, so completion needs no result backend; a broker that
is not Redis is refused.
"""

from __future__ import annotations

import os
import time
import uuid

from celery import Celery, chain

BROKER = os.environ.get("BENCH_BROKER_URL") or os.environ.get("CELERY_BROKER_URL", "")
QUEUE = "bench_celery_peer"

app = Celery("bench_celery_peer", broker=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
)


def _redis():  # type: ignore[no-untyped-def]
    import redis

    if not BROKER.startswith(("redis://", "redis+socket://", "unix://")):
        raise RuntimeError(f"the raw Celery peer needs a Redis broker, not {BROKER!r}")
    return redis.Redis.from_url(BROKER.replace("redis+socket://", "unix://"))


@app.task(name="bench.increment")
def increment(value: int) -> int:
    return value + 1


@app.task(name="bench.done")
def done(value: int, key: str) -> None:
    _redis().incr(key)


def wait_ready(timeout: float = 60) -> None:
    key = f"bench-celery-ready-{uuid.uuid4().hex}"
    done.apply_async((0, key), queue=QUEUE)
    deadline = time.monotonic() + timeout
    client = _redis()
    while not client.get(key):
        if time.monotonic() > deadline:
            raise TimeoutError("the raw Celery worker did not answer")
        time.sleep(0.05)
    client.delete(key)


def run_chains(runs: int) -> float:
    """Seconds from sending ``runs`` chains of three tasks to the last one finishing."""
    key = f"bench-celery-{uuid.uuid4().hex}"
    client = _redis()
    began = time.perf_counter()
    for i in range(runs):
        chain(increment.s(i), increment.s(), increment.s(), done.s(key)).apply_async(queue=QUEUE)
    while int(client.get(key) or 0) < runs:
        time.sleep(0.005)
    elapsed = time.perf_counter() - began
    client.delete(key)
    return elapsed
