"""The system user PostgreSQL runs as when we are root (it refuses to run as root): creating it,
giving it its home, and the relocated homes for data folders it cannot enter."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from assay.services.common import ServiceError
from assay.services.process import read_pid, runs

PG_SYSTEM_USER = "assay_pg"
# Where the postgres home goes, as root, when the postgres user cannot enter the data folder.
RELOCATED_POSTGRES = Path("/var/lib/assay/postgres")


@dataclass(frozen=True)
class Account:
    """The system user PostgreSQL runs as when we are root: it refuses to run as root."""

    uid: int
    gid: int

    def subprocess_options(self) -> dict[str, Any]:
        # extra_groups=[] drops root's supplementary groups as well.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def postgres_account() -> Account | None:
    """The account PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        entry = _add_system_user(PG_SYSTEM_USER)
    return Account(uid=entry.pw_uid, gid=entry.pw_gid)


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


def first_unenterable(directory: Path, account: Account) -> Path | None:
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


def give(home: Path, account: Account) -> None:
    """Gives `home` and all it holds to `account`, unless it has it already."""
    if home.stat().st_uid == account.uid:
        return
    for folder, _, files in os.walk(home):
        os.chown(folder, account.uid, account.gid)
        for name in files:
            os.chown(Path(folder, name), account.uid, account.gid, follow_symlinks=False)


def collect_relocated(base: Path, log: FilteringBoundLogger) -> None:
    """Deletes the relocated postgres homes in `base` that no data folder links to any more (the
    folder was deleted or reset), unless their server still runs. Call with base's lock held."""
    for home in base.iterdir():
        if not home.is_dir() or _linked(home):
            continue
        pid = read_pid(home / "data" / "postmaster.pid")
        if pid is not None and runs(pid, "postgres", home / "data"):
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
