"""User-facing errors: one clear line on stderr and a non-zero exit, never a traceback.

``Face`` is the ``assay`` command group: it runs a subcommand and turns the errors a user can
fix (a config problem, a missing or malformed data file, an unreachable server, a file that
cannot be opened) into ``error: …`` lines. With ``--log-level DEBUG`` or
``ASSAY_LOG_LEVEL=DEBUG`` the traceback follows the line.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click
import redis.exceptions

from assay.contracts.config import ConfigError
from assay.demo.simulator import SourceError
from assay.logs import redact
from assay.settings import Settings, Unreachable

USER_ERRORS = (ConfigError, SourceError, Unreachable, redis.exceptions.ConnectionError, OSError)
"""What a user fixes outside the code; anything else is a bug and keeps its traceback."""


def lines(exc: BaseException) -> list[str]:
    """The ``error: …`` lines of a user error (one per config problem, else one)."""
    if isinstance(exc, ConfigError):
        return [f"error: {problem}" for problem in exc.problems]
    if isinstance(exc, redis.exceptions.ConnectionError) and not isinstance(exc, Unreachable):
        url = Settings.from_env().redis_url
        return [f"error: cannot reach Redis{f' at {redact(url)}' if url else ''}: {exc}"]
    if isinstance(exc, FileNotFoundError) and exc.filename:
        hint = (" (the config folder: --config DIR or ASSAY_CONFIG; `assay init DIR` writes one)"
                if str(exc.filename) == str(Settings.from_env().config_dir) else "")
        return [f"error: {exc.filename}: no such file or folder{hint}"]
    return [redact(f"error: {' '.join(str(exc).split()) or type(exc).__name__}")]


class Face(click.Group):
    """The ``assay`` group: user errors end as one line each and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            for line in lines(exc):
                click.echo(line, err=True)
            level = ctx.params.get("log_level") or os.environ.get("ASSAY_LOG_LEVEL", "")
            if level.upper() == "DEBUG":
                traceback.print_exception(exc, file=sys.stderr)
            sys.exit(1)
