"""Embedded Redis and PostgreSQL: started, reused, cleaned up, and never left behind.

Every test passes an explicit ``env`` without REDIS_URL/DATABASE_URL, so these run against
embedded servers whatever the caller set. One data folder serves the module: its cluster is
initialised once, by the fixture, and every test after that is a warm start.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from assay.services import (
    PG_SYSTEM_USER,
    RELOCATED_POSTGRES,
    ServiceError,
    Services,
    default_data_dir,
    ports,
    redact_url,
    stop_embedded,
)

pytestmark = pytest.mark.embedded

NO_URLS: dict[str, str] = {}
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs postgres as another user")


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for init to reap it does not)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"


def pids(services: Services) -> list[int]:
    return [server.pid for server in services.embedded]


def recorded_pids(data_dir: Path) -> list[int]:
    pidfiles = [data_dir / "redis" / "valkey.pid", data_dir / "postgres/data/postmaster.pid"]
    return [int(pidfile.read_text().split()[0]) for pidfile in pidfiles if pidfile.exists()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Below a 0700 folder, as pytest's own are: as root, postgres' home gets relocated.
    private = tmp_path_factory.mktemp("services")
    private.chmod(0o700)
    folder = private / "data"
    with Services(folder, env=NO_URLS):  # the one cold start: initdb
        pass
    yield folder
    leftovers = [pid for pid in recorded_pids(folder) if running(pid)]
    stop_embedded(folder)
    assert leftovers == []


async def test_embedded_servers_take_writes_and_reads(data_dir: Path) -> None:
    services = Services(data_dir, env=NO_URLS)
    with services as urls:
        client = aioredis.from_url(urls.redis_url)
        await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"
        await client.aclose()
        connection = await asyncpg.connect(urls.database_url)
        assert await connection.fetchval("SELECT current_database()") == "assay"
        await connection.execute("CREATE TEMP TABLE t (n int); INSERT INTO t VALUES (42)")
        assert await connection.fetchval("SELECT n FROM t") == 42
        await connection.close()

    assert [(s.name, s.started) for s in services.embedded] == [
        ("postgres", True),
        ("redis", True),
    ]
    assert not [pid for pid in pids(services) if running(pid)]


async def test_data_survives_a_restart(data_dir: Path) -> None:
    key = f"k{uuid.uuid4().hex}"
    with Services(data_dir, env=NO_URLS) as urls:
        client = aioredis.from_url(urls.redis_url)
        await client.set(key, "kept")
        await client.aclose()
        connection = await asyncpg.connect(urls.database_url)
        await connection.execute(f"CREATE TABLE {key} (v text); INSERT INTO {key} VALUES ('kept')")
        await connection.close()

    with Services(data_dir, env=NO_URLS) as urls:
        client = aioredis.from_url(urls.redis_url)
        assert await client.get(key) == b"kept"
        await client.aclose()
        connection = await asyncpg.connect(urls.database_url)
        assert await connection.fetchval(f"SELECT v FROM {key}") == "kept"
        await connection.close()


def test_kept_servers_are_reused_and_left_running(data_dir: Path) -> None:
    first = Services(data_dir, keep_running=True, env=NO_URLS)
    with first as first_urls:
        pass
    assert all(running(pid) for pid in pids(first))

    second = Services(data_dir, env=NO_URLS)
    with second as second_urls, redis.Redis.from_url(second_urls.redis_url) as client:
        assert client.ping()
    assert second_urls == first_urls
    assert pids(second) == pids(first)
    assert not any(server.started for server in second.embedded)
    assert all(running(pid) for pid in pids(first))  # it did not start them: left running

    stop_embedded(data_dir)
    assert not [pid for pid in pids(first) if running(pid)]


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# "reused": our own pid, alive but python, so not a server; taking it for one would kill us.
@pytest.mark.parametrize("stale_pid", [_exited_pid, os.getpid], ids=["dead", "reused"])
def test_stale_pidfiles_are_cleaned_up(data_dir: Path, stale_pid: Callable[[], int]) -> None:
    stale = stale_pid()
    (data_dir / "redis" / "valkey.pid").write_text(f"{stale}\n")
    (data_dir / "postgres" / "data" / "postmaster.pid").write_text(f"{stale}\n")

    services = Services(data_dir, env=NO_URLS)
    with services as urls, redis.Redis.from_url(urls.redis_url) as client:
        assert client.ping()
    assert all(server.started and server.pid != stale for server in services.embedded)
    assert not [pid for pid in pids(services) if running(pid)]


def forget_ports(data_dir: Path) -> None:
    """Let the next start pick a free port again (the servers remember theirs)."""
    for server in ("redis", "postgres"):
        (data_dir / server / "port").unlink(missing_ok=True)


def test_a_port_taken_meanwhile_is_retried_once(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forget_ports(data_dir)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken, free_port(), taken, free_port()])  # postgres, then redis
        monkeypatch.setattr(ports, "free_port", lambda: next(picks))
        services = Services(data_dir, env=NO_URLS)
        with services as urls, redis.Redis.from_url(urls.redis_url) as client:
            assert client.ping()
    assert all(f":{taken}/" not in server.url for server in services.embedded)
    assert not [pid for pid in pids(services) if running(pid)]


def test_a_port_taken_twice_fails_naming_the_log(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forget_ports(data_dir)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(ports, "free_port", lambda: taken)
        services = Services(data_dir, env={"DATABASE_URL": "postgresql://db.example/assay"})
        with pytest.raises(ServiceError, match=r"see .*/redis/valkey\.log"), services:
            pass
    assert not (data_dir / "redis" / "state.json").exists()


def test_servers_keep_their_port_across_restarts(data_dir: Path) -> None:
    with Services(data_dir, env=NO_URLS) as first:
        pass
    with Services(data_dir, env=NO_URLS) as second:
        pass
    assert (second.redis_url, second.database_url) == (first.redis_url, first.database_url)


def test_a_remembered_port_held_by_another_process_is_a_one_line_error(data_dir: Path) -> None:
    with Services(data_dir, env=NO_URLS) as urls:
        pass
    port = int(urls.redis_url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        services = Services(data_dir, env={"DATABASE_URL": "postgresql://db.example/assay"})
        with pytest.raises(ServiceError) as failed, services:
            pass
    message = str(failed.value)
    assert "\n" not in message
    assert f"port {port} of the embedded redis server is taken by pid {os.getpid()}" in message


def _kill_and_wait_for_restart(services: Services, name: str) -> tuple[int, int]:
    (before,) = [s for s in services.embedded if s.name == name]
    os.kill(before.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        (after,) = [s for s in services.embedded if s.name == name]
        if after.pid != before.pid and running(after.pid):
            return before.pid, after.pid
        assert time.monotonic() < deadline, f"{name} was not restarted"
        time.sleep(0.05)


async def test_supervised_servers_crashed_with_sigkill_come_back_on_their_port(
        data_dir: Path) -> None:
    services = Services(data_dir, env=NO_URLS, supervise_every_s=0.1)
    with services as urls:
        with redis.Redis.from_url(urls.redis_url) as client:
            client.set("kept", b"1")
        _kill_and_wait_for_restart(services, "redis")
        _kill_and_wait_for_restart(services, "postgres")
        with redis.Redis.from_url(urls.redis_url) as client:  # the same URL, the data kept
            assert client.get("kept") == b"1"
        connection = await asyncpg.connect(urls.database_url)
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close()
        assert services.restarts == 2
    assert not [pid for pid in pids(services) if running(pid)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_urls_from_env_start_nothing(tmp_path: Path) -> None:
    env = {
        "REDIS_URL": "redis://:s3cret@cache.example:6380/2",
        "DATABASE_URL": "postgresql://app:s3cret@db.example/assay",
    }
    services = Services(tmp_path / "data", env=env)
    with services as urls:
        assert (urls.redis_url, urls.database_url) == (env["REDIS_URL"], env["DATABASE_URL"])
    assert services.embedded == ()
    assert not (tmp_path / "data").exists()


def test_only_the_unset_url_gets_an_embedded_server(data_dir: Path) -> None:
    services = Services(data_dir, env={"REDIS_URL": "redis://cache.example:6379/0"})
    with services as urls:
        assert urls.redis_url == "redis://cache.example:6379/0"
        assert urls.database_url.startswith("postgresql://postgres@127.0.0.1:")
    assert [server.name for server in services.embedded] == ["postgres"]


def test_an_exception_in_the_block_stops_the_servers(data_dir: Path) -> None:
    services = Services(data_dir, env=NO_URLS)
    with pytest.raises(RuntimeError, match="boom"), services:
        raise RuntimeError("boom")
    assert len(services.embedded) == 2
    assert not [pid for pid in pids(services) if running(pid)]


HOLDER = """
import json, signal, sys
from pathlib import Path
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from assay.services import Services
services = Services(Path(sys.argv[1]), env={})
with services:
    print(json.dumps([server.pid for server in services.embedded]), flush=True)
    signal.pause()
"""


@pytest.mark.parametrize(("signum", "returncode"), [(signal.SIGTERM, 143), (signal.SIGINT, -2)])
def test_a_signal_to_the_parent_stops_the_servers(
    data_dir: Path, signum: signal.Signals, returncode: int
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()
    assert line, holder.communicate(timeout=60)[1]
    started = json.loads(line)
    assert len(started) == 2 and all(running(pid) for pid in started)

    holder.send_signal(signum)
    _, stderr = holder.communicate(timeout=60)
    assert holder.returncode == returncode, stderr
    assert not [pid for pid in started if running(pid)]


@as_root
def test_as_root_postgres_runs_as_its_own_user(data_dir: Path) -> None:
    services = Services(data_dir, env={"REDIS_URL": "redis://cache.example:6379/0"})
    with services:
        (postgres,) = services.embedded
        status = Path(f"/proc/{postgres.pid}/status").read_text()
    uid = pwd.getpwnam(PG_SYSTEM_USER).pw_uid
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status
    home = (data_dir / "postgres").resolve()
    assert home.parent == RELOCATED_POSTGRES.resolve()  # data_dir is below a 0700 folder
    assert home.stat().st_uid == uid


@as_root
def test_as_root_a_reachable_data_folder_keeps_postgres_inside() -> None:
    with tempfile.TemporaryDirectory(prefix="assay-services-") as scratch:
        Path(scratch).chmod(0o755)
        folder = Path(scratch) / "data"
        with Services(folder, env={"REDIS_URL": "redis://cache.example:6379/0"}):
            pass
        home = folder / "postgres"
        assert home.is_dir() and not home.is_symlink()
        assert home.stat().st_uid == pwd.getpwnam(PG_SYSTEM_USER).pw_uid


@as_root
def test_as_root_a_relocated_home_goes_with_its_data_folder(
    data_dir: Path, tmp_path: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    folder = private / "data"
    with Services(folder, env={"REDIS_URL": "redis://cache.example:6379/0"}):
        pass
    home = (folder / "postgres").resolve()
    assert home.parent == RELOCATED_POSTGRES.resolve() and home.is_dir()

    shutil.rmtree(folder)
    with Services(data_dir, env={"REDIS_URL": "redis://cache.example:6379/0"}):
        pass  # relocating data_dir's home collects homes no folder links to
    assert not home.exists()
    assert (data_dir / "postgres").resolve().is_dir()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://app:s3cret@db:5432/assay", "postgresql://app:***@db:5432/assay"),
        ("postgresql://db/assay?user=app&password=s3cret",
         "postgresql://db/assay?user=app&password=***"),
        ("postgresql://postgres@127.0.0.1/assay", "postgresql://postgres@127.0.0.1/assay"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_url_masks_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_data_dir({}) == tmp_path / ".assay"
    assert default_data_dir({"ASSAY_DATA_DIR": str(tmp_path / "x")}) == tmp_path / "x"
