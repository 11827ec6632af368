"""Ports of 127.0.0.1: picking a free one for a server, and asking what listens on one."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from assay.services.common import HOST, PortTaken, Running, ServiceError

PROBE_TIMEOUT = 0.2  # a local server answers in well under a millisecond; else ask again


def on_free_port(start_on: Callable[[int], Running], log: FilteringBoundLogger) -> Running:
    """Starts a server on a free port; once more on another if that one was taken meanwhile."""
    try:
        return start_on(free_port())
    except PortTaken as taken:
        log.warning("embedded_server_port_taken", port=taken.port)
        return start_on(free_port())


def on_remembered_port(remembered: Path, name: str, start_on: Callable[[int], Running],
                       log: FilteringBoundLogger) -> Running:
    """Starts a server on the port it had before (kept in `remembered`, which outlives stops
    and crashes), so clients keep their URL; the first time on a free port, then remembered.

    A remembered port someone else holds is a one-line `ServiceError` naming the port and,
    when /proc tells, the process.
    """
    try:
        port: int | None = int(remembered.read_text().strip())
    except (OSError, ValueError):
        port = None
    if port is None:
        running = on_free_port(start_on, log)
        remembered.write_text(f"{running.port}\n")
        return running
    if accepts(port):
        raise _held(name, port, remembered)
    try:
        return start_on(port)
    except PortTaken:
        raise _held(name, port, remembered) from None


def _held(name: str, port: int, remembered: Path) -> ServiceError:
    holder = listener(port)
    by = f" by {holder}" if holder else ""
    return ServiceError(f"port {port} of the embedded {name} server is taken{by}; stop it, or"
                        f" delete {remembered} to start on another port")


def listener(port: int) -> str | None:
    """The process listening on 127.0.0.1:`port` ("pid 123 (python3)"), if /proc tells."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    command = (proc / "comm").read_text().strip()
                    return f"pid {proc.name} ({command})"
        except OSError:
            continue
    return None


def free_port() -> int:
    """A port of 127.0.0.1 free right now: the kernel's pick for a socket bound to port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def answers_ping(port: int) -> bool:
    """Whether a Redis-protocol server on `port` answers PING with PONG (and not LOADING)."""
    try:
        with socket.create_connection((HOST, port), timeout=PROBE_TIMEOUT) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def send_shutdown(port: int) -> None:
    """Asks the Redis-protocol server on `port` to SHUTDOWN; it answers by closing the line."""
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0) as line:
        line.sendall(b"*1\r\n$8\r\nSHUTDOWN\r\n")
        line.recv(64)


def accepts(port: int) -> bool:
    """Whether something on `port` accepts a TCP connection."""
    try:
        with socket.create_connection((HOST, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False
