"""Ports of 127.0.0.1: picking a free one for a server, and asking what listens on one."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

from assay.services.common import HOST, PortTaken, Running

PROBE_TIMEOUT = 0.2  # a local server answers in well under a millisecond; else ask again


def on_free_port(start_on: Callable[[int], Running], log: FilteringBoundLogger) -> Running:
    """Starts a server on a free port; once more on another if that one was taken meanwhile."""
    try:
        return start_on(free_port())
    except PortTaken as taken:
        log.warning("embedded_server_port_taken", port=taken.port)
        return start_on(free_port())


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
