"""The developer's first hour: `make run` keeps its worker up, `make stop` ends everything it
started, other terminals follow the executor it serves, and `make test` stops what it starts.

Real processes throughout: `python -m project.dev` (what `make run` runs) with its `runworker`
and `runserver` children, `make stop`, `manage.py` in a "second terminal", and `scripts/test.sh`
with its embedded PostgreSQL and Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dj_database_url
import psycopg
import pytest
from django.conf import settings as django_settings

from project import dev, embedded
from tests.harness import REPO_ROOT, database_url, free_port, wait_until
from tests.test_embedded import processes_mentioning

MANAGE = [sys.executable, str(REPO_ROOT / "manage.py")]
# What the demo's settings would otherwise pick up from the test run's environment.
NOT_INHERITED = ("DJANGO_SETTINGS_MODULE", "DJANGO_SECRET_KEY", "BELUGA_EXECUTOR", "PORT")


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MANAGE, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def process_tree(pid: int) -> dict[int, str]:
    """`pid` and all its descendants that are alive, with their command lines."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = [pid]
    for parent in tree:
        tree.extend(child for child, of in parents.items() if of == parent)
    return {p: command for p in tree if (command := dev._command_line(p))}


@pytest.fixture
def demo_database_url() -> Iterator[str]:
    """A new database on the test suite's PostgreSQL server for the demo, dropped afterwards."""
    from django.db import connection

    name = f"beluga_dev_demo_{os.getpid()}"
    params = connection.get_connection_params()
    server = {k: params[k] for k in ("user", "password", "host", "port") if params.get(k)}
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield database_url({**connection.settings_dict, "NAME": name})
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class DemoRun:
    """`python -m project.dev` (what `make run` runs) in its own session, on a database of its
    own, a free port and a data directory in `tmp_path`, its output in a file. Remembers every
    process of the demo it has seen, so that none outlives the test."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.data_dir = tmp_path / "data"
        self.data_dir.mkdir()
        self.database_url = database_url
        self.port = free_port()
        self.env = demo_env(
            BELUGA_DATA_DIR=str(self.data_dir),
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=django_settings.CELERY_BROKER_URL,
            BELUGA_EXECUTOR="default",
            PORT=str(self.port),
            DJANGO_DEBUG="1",  # as `make run` sets for its children, and for the manage.py calls
        )
        self.log_path = tmp_path / "make-run.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, str] = {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "project.dev"],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    def wait_until_serving(self) -> None:
        wait_until(self.serves, 120, 0.5, f"the web server:\n{self.output()}")

    def serves(self) -> bool:
        url = f"http://127.0.0.1:{self.port}/admin/login/"
        try:
            with urllib.request.urlopen(url, timeout=5) as page:
                return page.status == 200
        except OSError:
            return False

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self, text: str) -> list[int]:
        """The live processes of the demo whose command line contains `text`."""
        tree = process_tree(self.pid)
        self.seen.update(tree)
        return [pid for pid, command in tree.items() if text in command]

    def still_running(self) -> dict[int, str]:
        """The processes seen earlier that still run (the same pid with the same command)."""
        return {p: c for p, c in self.seen.items() if dev._command_line(p) == c}

    def demo_run(self) -> tuple[str, str] | None:
        """(status, waiting_for) of the tutorial run, from the database."""
        config = dj_database_url.parse(self.database_url)
        with psycopg.connect(
            host=config["HOST"], port=config["PORT"] or None, user=config["USER"],
            password=config["PASSWORD"] or None, dbname=config["NAME"],
        ) as conn:  # fmt: skip
            return conn.execute(
                "SELECT status, waiting_for FROM beluga_workflows_workflowrun "
                "WHERE workflow_id = %s",
                [dev.DEMO_RUN_ID],
            ).fetchone()

    def kill_all(self) -> None:
        if self.process is None:
            return
        self.children("")
        for pid in self.still_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def demo(tmp_path: Path, demo_database_url: str) -> Iterator[DemoRun]:
    run = DemoRun(tmp_path, demo_database_url)
    yield run
    run.kill_all()


def make_stop(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "stop"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_make_run_restarts_a_killed_worker_and_make_stop_stops_everything(
    demo: DemoRun,
) -> None:
    # A terminal that had run `BELUGA_EXECUTOR=temporal make run` earlier.
    (demo.data_dir / "executor").write_text("temporal\n")
    demo.start()
    demo.wait_until_serving()
    assert (demo.data_dir / "run.pid").read_text() == f"{demo.pid}\n"
    assert (demo.data_dir / "executor").read_text() == "default\n"
    second = subprocess.run(
        [sys.executable, "-m", "project.dev"],
        cwd=REPO_ROOT, env=demo.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1
    assert f"make run is already running for {demo.data_dir} (pid {demo.pid})" in second.stderr
    wait_until(
        lambda: demo.demo_run() == ("running", "signal:approval"),
        60, 0.5, f"the demo run to wait for approval:\n{demo.output()}",
    )  # fmt: skip
    [worker] = demo.children("runworker")

    os.kill(worker, signal.SIGKILL)  # the README's demo: kill -9 the runworker process

    wait_until(
        lambda: f"The worker (pid {worker}) was killed by signal SIGKILL." in demo.output(),
        30, message=f"make run to report the dead worker:\n{demo.output()}",
    )  # fmt: skip
    [restarted] = wait_until(lambda: demo.children("runworker"), 30, message="a new runworker")
    assert restarted != worker
    wait_until(
        lambda: demo.output().count("runworker ready") == 2,
        60, message=f"the new worker to be ready:\n{demo.output()}",
    )  # fmt: skip

    approve = manage(demo.env, "workflow", "signal", dev.DEMO_RUN_ID, "approval", "true")
    assert approve.returncode == 0, approve.stderr
    wait_until(
        lambda: demo.demo_run() == ("completed", ""),
        60, 0.5, f"the demo run to complete:\n{demo.output()}",
    )  # fmt: skip
    described = manage(demo.env, "workflow", "describe", dev.DEMO_RUN_ID, "--json")
    assert described.returncode == 0, described.stderr
    state = json.loads(described.stdout)
    assert state["status"] == "completed"
    assert state["result"].startswith("Final Report")

    assert demo.children("runserver") and demo.children("runworker")
    stop = make_stop(demo.env)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"Stopping make run (pid {demo.pid})" in stop.stdout
    assert demo.process is not None and demo.process.wait(10) == 0
    assert demo.still_running() == {}
    assert not demo.serves()
    assert not (demo.data_dir / "run.pid").exists()
    output = demo.output()
    assert "Stopping the worker..." in output and "did not stop in time" not in output


@pytest.mark.slow
def test_make_run_gives_up_on_a_worker_that_keeps_dying(demo: DemoRun) -> None:
    demo.start()
    demo.wait_until_serving()
    killed: list[int] = []
    for _ in range(dev.QUICK_DEATHS):
        [worker] = wait_until(
            lambda: [p for p in demo.children("runworker") if p not in killed],
            30, message=f"a runworker:\n{demo.output()}",
        )  # fmt: skip
        os.kill(worker, signal.SIGKILL)
        killed.append(worker)

    assert demo.process is not None and demo.process.wait(60) == 1
    output = demo.output()
    assert output.count("was killed by signal SIGKILL") == dev.QUICK_DEATHS
    assert output.count("The worker is running again") == dev.QUICK_DEATHS - 1
    assert "The worker died 5 times within 60 s: not starting it again" in output
    assert "Stopping the web server..." in output
    assert demo.still_running() == {}
    assert not (demo.data_dir / "run.pid").exists()


@pytest.mark.slow
def test_make_stop_stops_the_embedded_services_and_leaves_a_stranger_alone(
    tmp_path: Path,
) -> None:
    # Short: the Redis socket path then holds it, for the process check below.
    data_dir = Path(tempfile.mkdtemp(prefix="beluga-s-"))
    # The pid file of a `make run` that was killed with kill -9, its pid taken since by another
    # program: that program is not ours to stop.
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        embedded.ensure_services(data_dir)
        (data_dir / "run.pid").write_text(f"{stranger.pid}\n")

        stop = make_stop(demo_env(BELUGA_DATA_DIR=str(data_dir)))

        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "make run is not running." in stop.stdout
        assert "Stopping the embedded PostgreSQL and Redis" in stop.stdout
        assert stranger.poll() is None
        assert embedded.status(data_dir) == {"database": None, "broker": None}
        assert processes_mentioning(str(data_dir)) == []
    finally:
        stranger.kill()
        stranger.wait()
        embedded.stop_services(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.parametrize(
    ("remembered", "environment", "expected"),
    [
        ("temporal", None, "temporal"),  # the choice `BELUGA_EXECUTOR=temporal make run` left
        ("temporal", "default", "default"),  # BELUGA_EXECUTOR in the shell wins
        (None, None, "default"),
    ],
)
def test_manage_py_in_another_terminal_uses_the_executor_make_run_remembered(
    tmp_path: Path, remembered: str | None, environment: str | None, expected: str
) -> None:
    if remembered is not None:
        (tmp_path / "executor").write_text(remembered + "\n")
    env = demo_env(
        BELUGA_DATA_DIR=str(tmp_path),
        DJANGO_DEBUG="1",
        DATABASE_URL=database_url(django_settings.DATABASES["default"]),
        CELERY_BROKER_URL=django_settings.CELERY_BROKER_URL,
    )
    if environment is not None:
        env["BELUGA_EXECUTOR"] = environment
    shell = manage(
        env, "shell", "-c", "from beluga_workflows import workflow; print(workflow.new().name)"
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip().splitlines()[-1] == expected


# scripts/test.sh

# Loaded into the pytest that scripts/test.sh starts (`-p`): once the settings have started the
# embedded services, it writes down their pids and, if asked, waits there for a Ctrl-C.
PROBE_PLUGIN = """
import os
import time
from pathlib import Path

from project import embedded


def pytest_sessionstart(session):
    data_dir = Path(os.environ["BELUGA_DATA_DIR"])
    pids = [embedded._postmaster_pid(data_dir), embedded.read_pid(data_dir / "redis/redis.pid")]
    Path(os.environ["PROBE_REPORT"]).write_text(" ".join(str(pid) for pid in pids))
    if os.environ.get("PROBE_WAIT"):
        time.sleep(120)
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ScriptRun:
    """scripts/test.sh on embedded services in a data directory of its own; the machine's
    PostgreSQL is made unreachable, so no other pass runs."""

    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "beluga_probe_plugin.py").write_text(PROBE_PLUGIN)
        # Short: the Redis socket path then holds it, for the process check in `assert_stopped`.
        self.data_dir = Path(tempfile.mkdtemp(prefix="beluga-t-"))
        self.report = tmp_path / "pids"
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")
        }
        self.env.update(
            BELUGA_TEST_DATA_DIR=str(self.data_dir),
            BELUGA_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:1/none",
            BELUGA_TEST_REQUIRE="",
            PYTHONPATH=str(tmp_path),
            PROBE_REPORT=str(self.report),
        )
        self.process: subprocess.Popen[str] | None = None

    def start(self, wait_for_ctrl_c: bool = False) -> subprocess.Popen[str]:
        args = ["-p", "beluga_probe_plugin", "-p", "no:cacheprovider"]
        args += ["tests/test_scripts.py", "-k", "a_failing_pass"]
        env = {**self.env, "PROBE_WAIT": "1"} if wait_for_ctrl_c else self.env
        self.process = subprocess.Popen(
            ["bash", "scripts/test.sh", *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as in a terminal
            # Ctrl-C in a terminal finds SIGINT at its default; a suite started in the
            # background (`cmd &`, nohup) would hand this script an ignored SIGINT instead.
            preexec_fn=_default_sigint,
        )
        return self.process

    def assert_stopped(self) -> None:
        pids = [int(pid) for pid in self.report.read_text().split() if pid != "None"]
        assert len(pids) == 2, "the embedded services did not start"
        assert [pid for pid in pids if embedded._alive(pid)] == [], "PostgreSQL or Redis runs"
        assert processes_mentioning(str(self.data_dir)) == []
        assert embedded.status(self.data_dir) == {"database": None, "broker": None}

    def clean_up(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        embedded.stop_services(self.data_dir)  # if the script did not
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture
def test_script(tmp_path: Path) -> Iterator[ScriptRun]:
    script = ScriptRun(tmp_path)
    yield script
    script.clean_up()


@pytest.mark.slow
def test_test_sh_stops_the_embedded_services_it_started(test_script: ScriptRun) -> None:
    process = test_script.start()
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output
    assert "embedded: passed" in output
    test_script.assert_stopped()


@pytest.mark.slow
def test_test_sh_stops_the_embedded_services_on_ctrl_c(test_script: ScriptRun) -> None:
    process = test_script.start(wait_for_ctrl_c=True)
    wait_until(test_script.report.exists, 120, message="the embedded services to start")

    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does

    output, _ = process.communicate(timeout=180)  # a loaded machine stops services slowly
    assert process.returncode == 130, output
    test_script.assert_stopped()
