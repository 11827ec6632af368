"""What the embedded servers share: their address and timeouts, their errors, the record of a
running server, the interface `Services` drives them by, and where their binaries are installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import msgspec

HOST = "127.0.0.1"

START_TIMEOUT = 30.0  # seconds for a launched server to answer
STOP_TIMEOUT = 15.0  # seconds a stopping server gets before the next, harder signal


class ServiceError(RuntimeError):
    """An embedded server could not be prepared, started, reached or stopped."""


class PortTaken(ServiceError):
    """The free port picked for a server was taken before the server could bind it."""

    def __init__(self, port: int, logfile: Path) -> None:
        super().__init__(f"port {port} was taken before the server could bind it; see {logfile}")
        self.port = port


class Running(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A running embedded server; also the content of its state file."""

    pid: int
    port: int
    url: str


class Server(Protocol):
    name: str

    def find(self) -> Running | None: ...

    def start(self) -> Running: ...

    def stop(self) -> None: ...


def package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"the {package} package, which ships a server, is not installed")
    return Path(next(iter(spec.submodule_search_locations)))
