"""The embedded servers as processes: spawning them detached, polling, recognising and stopping
them, their pid and state files, the lock on their data folder, and their logs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import msgspec
from structlog.typing import FilteringBoundLogger

from assay.services.common import START_TIMEOUT, STOP_TIMEOUT, Running, ServiceError


def spawn_detached(argv: Sequence[str], logfile: Path) -> int:
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


def poll(done: Callable[[], bool], timeout: float) -> bool:
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


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by init) does not."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] not in ("Z", "X")


def runs(pid: int, program: str, marker: Path) -> bool:
    """Whether `pid` is `program` started on `marker` (its config file or data folder).

    The pid of a stale pidfile may have been reused since by an unrelated process.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return Path(os.fsdecode(argv[0])).name == program and os.fsencode(marker) in argv[1:]


def terminate(pid: int, signals: Sequence[signal.Signals], log: FilteringBoundLogger) -> None:
    """Sends `signals` to `pid` in turn, each once the last had STOP_TIMEOUT, until it is gone."""
    for signum in signals:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        if poll(lambda: not alive(pid), STOP_TIMEOUT):
            return
        log.warning("embedded_server_slow_to_stop", pid=pid, signal=signum.name)
    raise ServiceError(f"process {pid} outlived {', '.join(s.name for s in signals)}")


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def read_state(statefile: Path) -> Running | None:
    try:
        return msgspec.json.decode(statefile.read_bytes(), type=Running)
    except (OSError, msgspec.DecodeError):
        return None


def write_state(statefile: Path, running: Running) -> None:
    staging = statefile.with_suffix(".tmp")
    staging.write_bytes(msgspec.json.encode(running))
    staging.replace(statefile)


def log_tail(logfile: Path, offset: int, lines: int = 20) -> str:
    """The last `lines` lines `logfile` got after `offset`: a start-up story for an error."""
    try:
        with logfile.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def since(began: float) -> float:
    return round(time.monotonic() - began, 3)


@contextlib.contextmanager
def locked(lockfile: Path) -> Iterator[None]:
    """Holds an exclusive lock on `lockfile` (made if missing), across processes."""
    with lockfile.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class Recorded:
    """A server found again through the pid and state files it left in its folder.

    Subclasses say where those files are, how to recognise their process, how to wait for it
    to answer, and how to stop or forget it; `find` is the same for every server.
    """

    name: str
    home: Path
    _log: FilteringBoundLogger

    @property
    def pidfile(self) -> Path:
        raise NotImplementedError

    @property
    def statefile(self) -> Path:
        return self.home / "state.json"

    @property
    def logfile(self) -> Path:
        raise NotImplementedError

    def find(self) -> Running | None:
        """The server this folder records, if it still runs; a stale record is cleaned up."""
        pid = self._recorded_pid()
        if pid is None:
            return None
        event = f"embedded_{self.name}"
        if not self._is_ours(pid):
            self._log.warning(f"{event}_stale_pidfile", pid=pid, pidfile=str(self.pidfile))
            self._forget()
            return None
        running = read_state(self.statefile)
        if running is None or running.pid != pid:
            self._log.warning(f"{event}_state_lost", pid=pid, state=str(self.statefile))
            self.stop()
            return None
        self._await_ready(running, size(self.logfile))
        self._log.debug(f"{event}_reused", pid=pid, port=running.port, data_dir=str(self.home))
        return running

    def _recorded_pid(self) -> int | None:
        return read_pid(self.pidfile)

    def _is_ours(self, pid: int) -> bool:
        raise NotImplementedError

    def _await_ready(self, running: Running, offset: int) -> None:
        raise NotImplementedError

    def _forget(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError
