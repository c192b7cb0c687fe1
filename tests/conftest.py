"""Shared fixtures: fast engine settings, a clean broker, counters and `runworker` subprocesses.

Tests that start a worker need the database committed for real, so the worker fixtures request
pytest-django's `transactional_db` themselves; mark such tests
`@pytest.mark.django_db(transaction=True)` anyway, for the reader.

    @pytest.mark.django_db(transaction=True)
    def test_survives_kill9(worker, counter_dir):
        handle = executor.execute(...)            # activities call harness.record_run("step")
        wait_until(lambda: run_count(counter_dir, "step") == 1)
        worker.kill9()
        worker.restart()
        assert handle.result(timeout=30) == ...

Temporal: request `use_temporal` (it starts the session's `temporal_server` and switches the
settings, hence the workers, to the Temporal executor) and mark the test `temporal`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test.utils import override_settings

from beluga_workflows import workflow
from tests import harness
from tests.conformance import Engine

# Fast polling so tests finish in seconds; the worker subprocess gets the same values.
TEST_POLL_INTERVAL = 0.2
TEST_REDISPATCH_AFTER = 2.0


@pytest.fixture(scope="session", autouse=True)
def _fast_engine_settings() -> Iterator[None]:
    fast = {
        **django_settings.BELUGA_WORKFLOWS,
        "POLL_INTERVAL": TEST_POLL_INTERVAL,
        "REDISPATCH_AFTER": TEST_REDISPATCH_AFTER,
    }
    with override_settings(BELUGA_WORKFLOWS=fast):
        yield


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any) -> Iterator[None]:
    """pytest-django's test database, with our result listener closed before it is dropped."""
    yield
    from beluga_workflows.engine import notify

    notify.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _clean_broker() -> None:
    """Start the session with empty queues: stale messages from earlier runs must not leak in."""
    from project.celery import app

    harness.purge_broker(app)


@pytest.fixture
def counter_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory where `harness.record_run(name)` counts runs; read with `harness.run_count`.

    Exported as `BELUGA_TEST_COUNTER_DIR` to this process and to every worker subprocess.
    """
    directory = tmp_path / "counters"
    directory.mkdir()
    monkeypatch.setenv(harness.COUNTER_DIR_ENV, str(directory))
    return directory


def worker_env(counter_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker subprocess: this test's database, broker and settings."""
    from django.db import connection

    engine_settings = django_settings.BELUGA_WORKFLOWS
    temporal = engine_settings.get("TEMPORAL", {})
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        # The test database pytest-django created, not the one DATABASE_URL names.
        "DATABASE_URL": harness.database_url(connection.settings_dict),
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        # Follow this test's settings, including any it changed with the `settings` fixture.
        "BELUGA_EXECUTOR": str(engine_settings.get("EXECUTOR", "default")),
        "BELUGA_TEMPORAL_HOST": str(temporal.get("HOST", "localhost:7233")),
        "BELUGA_TEMPORAL_NAMESPACE": str(temporal.get("NAMESPACE", "default")),
        "BELUGA_TEMPORAL_TASK_QUEUE": str(temporal.get("TASK_QUEUE", "beluga-workflows")),
        "BELUGA_POLL_INTERVAL": str(engine_settings.get("POLL_INTERVAL", TEST_POLL_INTERVAL)),
        "BELUGA_REDISPATCH_AFTER": str(
            engine_settings.get("REDISPATCH_AFTER", TEST_REDISPATCH_AFTER)
        ),
        harness.COUNTER_DIR_ENV: str(counter_dir),
        "PYTHONUNBUFFERED": "1",
        # Workflows and activities defined in test modules import as `tests.<module>` there too.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(harness.REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Temporal dev server for the whole session, started on first use; its `host:port`."""
    server = harness.TemporalDevServer(tmp_path_factory.mktemp("temporal") / "server.log")
    server.start()
    yield server.address
    server.stop()


@pytest.fixture
def use_temporal(
    temporal_server: str, settings: Any, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """Switch this test (and the workers it starts) to the Temporal executor.

    Each test gets its own task queue, so nothing left over from another test reaches it.
    """
    task_queue = f"beluga-test-{request.node.name}"[:200]
    settings.BELUGA_WORKFLOWS = {
        **settings.BELUGA_WORKFLOWS,
        "EXECUTOR": "temporal",
        "TEMPORAL": {"HOST": temporal_server, "NAMESPACE": "default", "TASK_QUEUE": task_queue},
    }
    return settings.BELUGA_WORKFLOWS


@pytest.fixture
def worker_factory(
    request: pytest.FixtureRequest,
    transactional_db: None,
    counter_dir: Path,
    tmp_path: Path,
) -> Iterator[Callable[..., harness.WorkerProcess]]:
    """Make `runworker` subprocesses: `worker_factory(concurrency=2, env=None, args=(),
    start=True)`. Started ones are ready when returned. All are SIGKILLed at teardown, before
    pytest-django flushes the database."""
    if "use_temporal" in request.fixturenames:
        # Whatever the argument order, the settings switch first, so the worker follows it.
        request.getfixturevalue("use_temporal")
    workers: list[harness.WorkerProcess] = []
    request.node._beluga_workers = workers

    def make(
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        start: bool = True,
    ) -> harness.WorkerProcess:
        process = harness.WorkerProcess(
            worker_env(counter_dir, env),
            tmp_path / f"worker-{len(workers) + 1}.log",
            concurrency=concurrency,
            args=args,
        )
        workers.append(process)
        if start:
            process.start().wait_ready()
        return process

    yield make

    for process in workers:
        process.kill9()
    from project.celery import app

    harness.purge_broker(app)


@pytest.fixture
def worker(worker_factory: Callable[..., harness.WorkerProcess]) -> harness.WorkerProcess:
    """One running, ready `runworker --concurrency 2` for this test."""
    return worker_factory()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Attach each worker's log tail to a failing test's report, where pytest prints it.
    report = yield
    workers = getattr(item, "_beluga_workers", None)
    if report.failed and workers:
        for number, process in enumerate(workers, 1):
            report.sections.append(
                (f"worker {number} log ({process.log_path})", process.log_tail(120))
            )
    return report


@pytest.fixture(params=["default", pytest.param("temporal", marks=pytest.mark.temporal)])
def engine(request: pytest.FixtureRequest, worker_factory: Any) -> Engine:
    """The built-in engine, then Temporal, each with a ready `runworker` (conformance tests)."""
    if request.param == "temporal":
        request.getfixturevalue("use_temporal")
    return Engine(request.param, workflow.new(request.param), worker_factory())
