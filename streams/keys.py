"""Every Redis key name, stream and consumer group of assay, in one place.

Keys of one division share a Redis Cluster hash tag (``{division}``), so every
multi-key command and script issued for a division maps to one cluster slot. Keys that
belong to no division carry the tag ``{_global}`` (no division name starts with ``_``)
and are never used in one command with a division's keys.
"""

from __future__ import annotations

from dataclasses import dataclass

INGEST = "ingest"
"""Producers write records and table-ends here; Bronze reads it."""
BRONZE = "bronze"
"""Bronze forwards landed records here; Silver reads it."""
ACCOUNTED = "accounted"
"""Rows that reached their final place (Silver, quarantine); the barrier reads it."""
DEAD = "dead"
"""Dead letters of every layer of the division; the barrier reads it too."""
WINDOWS = "windows"
"""Window outcomes from the barrier; Gold reads it."""

CHANNELS = (INGEST, BRONZE, ACCOUNTED, DEAD, WINDOWS)

GLOBAL_TAG = "_global"
"""The hash tag of keys that belong to no division."""


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix; tests use their own prefix to stay isolated."""

    prefix: str = "assay"

    def stream(self, division: str, channel: str) -> str:
        return f"{self.prefix}:{{{division}}}:{channel}"

    def group(self, layer: str) -> str:
        return f"{self.prefix}:{layer}"

    def state(self, division: str, name: str) -> str:
        """A state key of a division (window barrier hashes and bitmaps)."""
        return f"{self.prefix}:{{{division}}}:state:{name}"

    def alive(self, layer: str, consumer: str) -> str:
        """A consumer's heartbeat (a string with a TTL). A global key: only ever used
        alone in a command, never beside a division's keys."""
        return f"{self.prefix}:alive:{layer}:{consumer}"

    def alerts(self) -> str:
        """The monitor's active alerts (a hash), kept across its restarts."""
        return f"{self.prefix}:{{{GLOBAL_TAG}}}:alerts"

    def division_of(self, stream: str) -> str:
        return stream[stream.index("{") + 1 : stream.index("}")]
