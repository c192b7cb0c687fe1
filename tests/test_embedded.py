"""The embedded default really starts PostgreSQL and Redis, once, and keeps their data."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dj_database_url
import psycopg
import pytest
import redis
from kombu import Connection

from project import embedded

pytestmark = pytest.mark.core


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "data"
    yield directory
    embedded.stop_services(directory)


def connect_db(database_url: str) -> psycopg.Connection:
    config = dj_database_url.parse(database_url)
    return psycopg.connect(
        host=config["HOST"], user=config["USER"], dbname=config["NAME"], autocommit=True
    )


def connect_redis(broker_url: str) -> redis.Redis:
    assert broker_url.startswith("redis+socket://")
    return redis.Redis(unix_socket_path=broker_url.removeprefix("redis+socket://"))


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (PostgreSQL children rename themselves)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and "project.embedded" not in cmdline:
            pids.append(int(entry.name))
    return pids


def test_starts_a_real_postgres_and_redis_and_reuses_them(data_dir: Path) -> None:
    database_url, broker_url = embedded.ensure_services(data_dir)

    with connect_db(database_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("beluga",)
        conn.execute("CREATE TABLE greeting (text varchar(20))")
        conn.execute("INSERT INTO greeting VALUES ('hello')")
    client = connect_redis(broker_url)
    assert client.ping()
    client.set("greeting", "hello")
    postmaster = embedded._postmaster_pid(data_dir)

    assert embedded.ensure_services(data_dir) == (database_url, broker_url)
    assert embedded._postmaster_pid(data_dir) == postmaster
    with connect_db(database_url) as conn:
        assert conn.execute("SELECT text FROM greeting").fetchall() == [("hello",)]
    assert client.get("greeting") == b"hello"


def test_data_survives_stop_and_start(data_dir: Path) -> None:
    database_url, broker_url = embedded.ensure_services(data_dir)
    with connect_db(database_url) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    connect_redis(broker_url).rpush("queue", "message")

    embedded.stop_services(data_dir)
    assert embedded.status(data_dir) == {"database": None, "broker": None}

    assert embedded.ensure_services(data_dir) == (database_url, broker_url)
    with connect_db(database_url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(42,)]
    assert connect_redis(broker_url).lrange("queue", 0, -1) == [b"message"]


def test_celery_reaches_the_embedded_broker(data_dir: Path) -> None:
    _, broker_url = embedded.ensure_services(data_dir)
    with Connection(broker_url) as conn:
        queue = conn.SimpleQueue("beluga-smoke")
        queue.put({"hello": "world"})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    assert message.payload == {"hello": "world"}


def test_concurrent_first_calls_start_each_server_once(data_dir: Path) -> None:
    command = [sys.executable, "-m", "project.embedded", "start", "--data-dir", str(data_dir)]
    starters = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = {starter.communicate(timeout=120)[0] for starter in starters}
    assert all(starter.returncode == 0 for starter in starters)
    assert len(outputs) == 1, outputs

    assert len(processes_mentioning(f"-D {data_dir / 'pg'}")) == 1
    status = embedded.status(data_dir)
    assert status["broker"] is not None
    assert len(processes_mentioning(status["broker"].removeprefix("redis+socket://"))) == 1
