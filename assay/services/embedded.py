"""`Services`, the entry point: the environment's URLs, or embedded servers found or started for
those unset, and stopped again; also `stop_embedded`, `default_data_dir` and `redact_url`."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import structlog
from structlog.typing import FilteringBoundLogger

from assay.services.common import Server, ServiceError
from assay.services.postgres import Postgres
from assay.services.process import alive, locked
from assay.services.signals import UnwindOnSignals, signals_deferred
from assay.services.valkey import Valkey

REDIS_URL_ENV = "REDIS_URL"
DATABASE_URL_ENV = "DATABASE_URL"
DATA_DIR_ENV = "ASSAY_DATA_DIR"
APPENDFSYNC_ENV = "ASSAY_REDIS_APPENDFSYNC"

_LOG: FilteringBoundLogger = structlog.get_logger(__name__)


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


class Services:
    """Gives assay its Redis and PostgreSQL URLs, running embedded servers for those not set.

    ``with Services(data_dir) as urls:`` - see the `assay.services` package docstring for who
    stops what.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        keep_running: bool = False,
        supervise_every_s: float | None = None,
        env: Mapping[str, str] = os.environ,
        log: FilteringBoundLogger = _LOG,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._keep_running = keep_running
        self._supervise_every_s = supervise_every_s
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0
        self._env = env
        self._log = log
        self._in_use: list[tuple[Server, EmbeddedServer]] = []
        self._signals = UnwindOnSignals()

    @property
    def embedded(self) -> tuple[EmbeddedServer, ...]:
        """The embedded servers of the last ``with`` block, in the order they were taken up."""
        return tuple(server for _, server in self._in_use)

    def __enter__(self) -> ServiceUrls:
        self._in_use = []
        try:
            urls = self._urls()
        except BaseException:
            self._stop_started()
            self._signals.restore()
            raise
        if self._supervise_every_s is not None and self._in_use:
            self._watching.set()
            self._watcher = threading.Thread(target=self._supervise, name="assay-services",
                                             daemon=True)
            self._watcher.start()
        return urls

    def _supervise(self) -> None:
        """While the ``with`` block runs: a crashed embedded server is started again on its
        port (see `on_remembered_port`), so its clients reconnect by themselves."""
        assert self._supervise_every_s is not None
        while self._watching.is_set():
            time.sleep(self._supervise_every_s)
            for index, (server, embedded) in enumerate(list(self._in_use)):
                if not self._watching.is_set() or alive(embedded.pid):
                    continue
                self._log.warning("embedded_server_died", server=embedded.name,
                                  pid=embedded.pid)
                try:
                    with locked(self.data_dir / "services.lock"):
                        running = server.find() or server.start()
                except ServiceError as exc:  # e.g. old backends still hold its memory
                    self._log.warning("embedded_server_restart_failed", server=embedded.name,
                                      error=str(exc))
                    continue
                self.restarts += 1
                self._in_use[index] = (server, EmbeddedServer(
                    embedded.name, running.pid, running.url, embedded.started))
                self._log.warning("embedded_server_restarted", server=embedded.name,
                                  pid=running.pid, port=running.port)

    def _stop_watching(self) -> None:
        self._watching.clear()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._stop_watching()
            if not self._keep_running:
                self._stop_started()
            elif self._in_use:
                self._log.debug("embedded_servers_left_running", data_dir=str(self.data_dir))
        finally:
            self._signals.restore()

    def _urls(self) -> ServiceUrls:
        redis_url = self._env.get(REDIS_URL_ENV, "")
        database_url = self._env.get(DATABASE_URL_ENV, "")
        for variable, url in ((REDIS_URL_ENV, redis_url), (DATABASE_URL_ENV, database_url)):
            if url:
                self._log.debug("service_url_from_env", variable=variable, url=redact_url(url))
        if not (redis_url and database_url):
            self._signals.install()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with locked(self.data_dir / "services.lock"):
                database_url = database_url or self._take_up(Postgres(self.data_dir, self._log))
                redis_url = redis_url or self._take_up(Valkey(
                    self.data_dir, self._log, self._env.get(APPENDFSYNC_ENV, "everysec")))
        return ServiceUrls(redis_url=redis_url, database_url=database_url)

    def _take_up(self, server: Server) -> str:
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
            signals_deferred(),
            locked(self.data_dir / "services.lock"),
            contextlib.ExitStack() as stops,
        ):
            for server in started:
                stops.callback(server.stop)


def stop_embedded(data_dir: Path, *, log: FilteringBoundLogger = _LOG) -> None:
    """Stops the embedded servers recorded in `data_dir`, whoever started them."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        return
    with locked(data_dir / "services.lock"), contextlib.ExitStack() as stops:
        for server in (Postgres(data_dir, log), Valkey(data_dir, log)):
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
