"""Config of the operator-facing side: where notifications go and which alerts fire.

``NotificationsConfig`` and ``AlertsConfig`` are the values of the optional
``notifications`` and ``alerts`` sections of a config file. Like every config
Struct they are frozen and refuse unknown keys.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Severity = Literal["warning", "error"]


class Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of these config Structs (``contracts.config`` imports this module, not vice versa)."""


class EmailConfig(Strict, frozen=True):
    """An SMTP sink; a burst of events within ``batch_seconds`` is sent as one mail.

    The password is read from the environment variable named by ``password_env``;
    ``password`` inline is accepted for local set-ups only.
    """

    host: str
    to: list[str]
    sender: str = msgspec.field(name="from")
    port: int = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    subject_prefix: str = "[assay]"
    batch_seconds: float = 60.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.to:
            raise ValueError("`to` needs at least one address")
        if self.password is not None and self.password_env is not None:
            raise ValueError("set `password` or `password_env`, not both")
        if self.batch_seconds < 0:
            raise ValueError("`batch_seconds` must be >= 0")


class WebhookConfig(Strict, frozen=True):
    """An HTTP sink: every event is POSTed as a JSON object."""

    url: str
    timeout_s: float = 5.0
    headers: dict[str, str] = {}

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("`url` must start with http:// or https://")


class NotificationsConfig(Strict, frozen=True):
    """Where the standard notification lines go besides the log.

    ``level: window`` sends window outcomes to the sinks and logs batch lines at
    debug level; ``level: batch`` sends every batch line too.
    """

    level: Literal["window", "batch"] = "window"
    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None


class Rule(Strict, frozen=True, tag_field="rule"):
    """An alert rule; ``name`` (default: the rule kind, plus the layer) labels it."""

    name: str | None = None
    severity: Severity = "warning"

    @property
    def id(self) -> str:
        if self.name:
            return self.name
        kind = str(self.__struct_config__.tag)
        layer = getattr(self, "layer", None)
        return f"{kind}:{layer}" if layer else kind


class LagAbove(Rule, frozen=True, tag="lag_above", kw_only=True):
    """More than ``entries`` not yet delivered to a group (of ``layer``, or any)."""

    entries: int
    layer: str | None = None


class PendingOlderThan(Rule, frozen=True, tag="pending_older_than", kw_only=True):
    """A group's oldest pending entry was delivered more than ``seconds`` ago."""

    seconds: float
    layer: str | None = None


class ConsumerIdle(Rule, frozen=True, tag="consumer_idle", kw_only=True):
    """A consumer has been idle more than ``seconds`` while its group has lag."""

    seconds: float
    layer: str | None = None


class DeadLetterGrowth(Rule, frozen=True, tag="dead_letter_growth"):
    """At least ``entries`` new dead letters in a division within ``within_s``."""

    entries: int = 1
    within_s: float = 300.0
    severity: Severity = "error"

    def __post_init__(self) -> None:
        if self.entries < 1 or self.within_s <= 0:
            raise ValueError("`entries` must be >= 1 and `within_s` > 0")


class WindowTimedOut(Rule, frozen=True, tag="window_timed_out"):
    """A window timed out; resolved by the division's next window outcome."""

    severity: Severity = "error"


class WindowNotApplied(Rule, frozen=True, tag="window_not_applied"):
    """A window completed more than ``seconds`` ago and Gold has not applied it (its
    ``gold_windows`` row is missing); windows opened within ``lookback_s`` are checked."""

    seconds: float = 300.0
    lookback_s: float = 86_400.0
    severity: Severity = "error"

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.lookback_s <= 0:
            raise ValueError("`seconds` and `lookback_s` must be > 0")


class BatchFailed(Rule, frozen=True, tag="batch_failed"):
    """A batch committed nothing; resolved by the layer's next batch of the division."""

    severity: Severity = "error"


AlertRule = (LagAbove | PendingOlderThan | ConsumerIdle | DeadLetterGrowth | WindowTimedOut
             | WindowNotApplied | BatchFailed)


def default_rules() -> list[AlertRule]:
    return [
        LagAbove(entries=10_000),
        PendingOlderThan(seconds=300.0),
        ConsumerIdle(seconds=600.0),
        DeadLetterGrowth(),
        WindowTimedOut(),
        WindowNotApplied(),
        BatchFailed(),
    ]


class AlertsConfig(Strict, frozen=True):
    """The alert rules and how often the monitor checks the streams against them.

    Without ``rules`` the defaults apply; ``"rules": []`` turns alerting off.
    """

    rules: list[AlertRule] = msgspec.field(default_factory=default_rules)
    check_every_s: float = 15.0
    scan_bound: int = 10_000
    """How many entries the monitor counts at most when Redis cannot report a lag."""

    def __post_init__(self) -> None:
        ids = [rule.id for rule in self.rules]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"rule {twice[0]!r} is defined twice; give one a `name`")
        if self.check_every_s <= 0:
            raise ValueError("`check_every_s` must be > 0")
