"""Pidfiles of running layers in the data folder, so ``assay reload`` can signal them.

Each layer process writes ``<data>/pids/<key prefix>/<layer>-<pid>.json`` holding its
pid and (on Linux) its start time, and removes it when it stops. ``signal_layers``
signals every live one; a file whose process is gone, or whose pid now belongs to
another process (its start time differs), is removed instead of signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def pid_dir(data_dir: Path, key_prefix: str) -> Path:
    return data_dir / "pids" / key_prefix


def started_at(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


@contextlib.contextmanager
def pidfile(directory: Path, layer: str) -> Iterator[Path]:
    """Announce this process as ``layer`` while the block runs."""
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    path = directory / f"{layer}-{pid}.json"
    path.write_text(json.dumps({"layer": layer, "pid": pid, "started": started_at(pid)}))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Signalled:
    layer: str
    pid: int


def signal_layers(directory: Path, sig: signal.Signals = signal.SIGHUP) -> list[Signalled]:
    """Send ``sig`` to every live layer announced in ``directory``; drop stale files."""
    done = []
    for path in sorted(directory.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            pid, layer = int(entry["pid"]), str(entry["layer"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written or removed right now
        if entry.get("started") != started_at(pid) or not _alive(pid):
            path.unlink(missing_ok=True)
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            continue
        done.append(Signalled(layer, pid))
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
