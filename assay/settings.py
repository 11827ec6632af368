"""Connection settings: one typed object built from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from assay.streams.client import CLUSTER_ENV, cluster_override


class Unreachable(ConnectionError):
    """A server did not answer within the connection attempts; the message names its URL
    without the password."""


@dataclass(frozen=True)
class Settings:
    """Where the servers are and how this process names things.

    ``REDIS_URL`` and ``DATABASE_URL`` select the servers; when unset, the face starts
    embedded ones (``assay.services``) and fills them in.
    """

    redis_url: str | None
    database_url: str | None
    key_prefix: str = "assay"
    environment: str | None = None
    config_dir: Path = Path("config")
    connect_attempts: int | None = None
    """``ASSAY_CONNECT_ATTEMPTS``: tries (capped backoff, about two minutes for 30) before an
    unreachable server is an error. Unset: 30 for commands; a layer waits however long."""
    redis_cluster: bool | None = None
    """``ASSAY_REDIS_CLUSTER``: True/False force a cluster or plain client; None asks Redis."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        return cls(
            redis_url=env.get("REDIS_URL") or None,
            database_url=env.get("DATABASE_URL") or None,
            key_prefix=env.get("ASSAY_KEY_PREFIX", "assay"),
            environment=env.get("ASSAY_ENV") or None,
            config_dir=Path(env.get("ASSAY_CONFIG", "config")),
            connect_attempts=(max(1, int(env["ASSAY_CONNECT_ATTEMPTS"]))
                              if env.get("ASSAY_CONNECT_ATTEMPTS") else None),
            redis_cluster=cluster_override(env.get(CLUSTER_ENV)),
        )
