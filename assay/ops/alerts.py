"""Alert rules, evaluated against lag snapshots, window outcomes and batch lines.

An alert is one rule firing for one subject (a group on a stream, a consumer, a
division). It is raised once when its condition starts and resolved once when it
stops; checks in between change nothing. Raised alerts are logged at the rule's
severity (``alert_raised``), resolved ones at info (``alert_resolved``), and both go
to the notifier's sinks. With an ``AlertStore`` the active alerts outlive the process:
a restarted monitor does not raise again what is still active, and resolves what
ended while it was down.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import structlog

from assay.contracts.messages import WindowEvent
from assay.contracts.ops import (
    AlertRule,
    BatchFailed,
    ConsumerIdle,
    DeadLetterGrowth,
    LagAbove,
    PendingOlderThan,
    Severity,
    WindowNotApplied,
    WindowTimedOut,
)
from assay.ops.gold_watch import Unapplied
from assay.ops.metrics import Metrics
from assay.ops.notify import AlertNotice, Notification, Notifier, lacking_of, missing_text
from assay.streams.client import Client
from assay.streams.consumer import TRANSIENT
from assay.streams.lag import GroupLag, LagReport, StreamLag

log = structlog.get_logger("assay.alerts")


@dataclass(frozen=True)
class Finding:
    """A rule's condition holding for one subject, with what to tell the operator."""

    subject: str
    division: str
    message: str


@dataclass(frozen=True)
class Alert:
    """An active alert: raised at ``since`` and not resolved yet."""

    rule: str
    severity: Severity
    finding: Finding
    since: float


class AlertStore:
    """Active alerts in one Redis hash (field: rule and subject; value: the alert as JSON).

    Writes are best effort: an alert that could not be saved is logged, never raised, so
    the store can cost a restart a repeated notification but never a lost one.
    """

    def __init__(self, client: Client, key: str) -> None:
        self.client = client
        self.key = key

    async def load(self) -> list[Alert]:
        stored: Any = await self.client.hvals(self.key)
        return [msgspec.json.decode(value, type=Alert) for value in stored]

    async def save(self, alert: Alert) -> None:
        await self._best_effort(self.client.hset(
            self.key, _field(alert.rule, alert.finding.subject), msgspec.json.encode(alert)))

    async def drop(self, rule: str, subject: str) -> None:
        await self._best_effort(self.client.hdel(self.key, _field(rule, subject)))

    async def _best_effort(self, command: Awaitable[Any]) -> None:
        try:
            await command
        except TRANSIENT as exc:
            log.warning("alert_state_not_saved", key=self.key,
                        error=f"{type(exc).__name__}: {exc}")


def _field(rule: str, subject: str) -> bytes:
    return msgspec.json.encode([rule, subject])


class Alerts:
    """Keeps which alerts are active; raises and resolves them as conditions change.

    ``divisions`` maps division names to display names for the messages; ``store``
    keeps the active alerts across restarts (``restore`` reads them back).
    """

    def __init__(self, rules: Sequence[AlertRule], *, notifier: Notifier | None = None,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
                 divisions: Mapping[str, str] | None = None,
                 store: AlertStore | None = None) -> None:
        self.rules = list(rules)
        self.notifier = notifier
        self.metrics = metrics
        self.clock = clock
        self.divisions = dict(divisions or {})
        self.store = store
        self.active: dict[tuple[str, str], Alert] = {}
        self._dead: dict[str, deque[tuple[float, int]]] = {}
        for rule in self.rules:
            self._count(rule.id)

    async def restore(self) -> None:
        """Take back the alerts a previous process left active; forget those of rules
        no longer configured."""
        if self.store is None:
            return
        rules = {rule.id for rule in self.rules}
        for alert in await self.store.load():
            if alert.rule in rules:
                self.active[(alert.rule, alert.finding.subject)] = alert
            else:
                await self.store.drop(alert.rule, alert.finding.subject)
        for rule_id in rules:
            self._count(rule_id)
        log.info("alerts_restored", active=len(self.active))

    async def check(self, report: LagReport) -> None:
        """Evaluate the stream rules against a snapshot."""
        self._remember_dead(report)
        for rule in self.rules:
            match rule:
                case LagAbove():
                    findings = self._lag_above(rule, report)
                case PendingOlderThan():
                    findings = self._pending_older(rule, report)
                case ConsumerIdle():
                    findings = self._consumer_idle(rule, report)
                case DeadLetterGrowth():
                    findings = self._dead_letter_growth(rule, report)
                case _:
                    continue
            await self._update(rule, findings)

    async def unapplied(self, late: Sequence[Unapplied], now: float) -> None:
        """Completed windows Gold has not applied: raised past the rule's ``seconds``,
        resolved once applied."""
        for rule in self.rules:
            if isinstance(rule, WindowNotApplied):
                findings = [Finding(f"{u.division} {u.window}", self._name(u.division),
                                    f"window {u.window} completed {now - u.completed_at:.0f}s"
                                    " ago and is not applied in Gold")
                            for u in late if now - u.completed_at > rule.seconds]
                await self._update(rule, findings)

    @property
    def lookback_s(self) -> float | None:
        """How far back the ``window_not_applied`` rules look; None without such a rule."""
        spans = [r.lookback_s for r in self.rules if isinstance(r, WindowNotApplied)]
        return max(spans) if spans else None

    async def window(self, event: WindowEvent) -> None:
        """A window outcome: a timeout raises, the division's next outcome resolves."""
        division = self._name(event.division)
        for rule in self.rules:
            if isinstance(rule, WindowTimedOut):
                found = Finding(event.division, division, f"window {event.window} timed out"
                                + missing_text(lacking_of(event)))
                await self._set(rule, found, event.status == "timed_out")

    async def batch(self, n: Notification) -> None:
        """A batch line: FAILED raises, the layer's next batch of the division resolves."""
        for rule in self.rules:
            if isinstance(rule, BatchFailed):
                found = Finding(f"{n.pipeline} {n.division}", n.division,
                                f"{n.pipeline} batch failed: {n.processed} / {n.failed}")
                await self._set(rule, found, n.status == "FAILED")

    def _lag_above(self, rule: LagAbove, report: LagReport) -> list[Finding]:
        return [self._finding(s, g, f"{g.layer} lag {g.lag} > {rule.entries} on {s.channel}")
                for s, g in _groups(report, rule.layer) if g.lag > rule.entries]

    def _pending_older(self, rule: PendingOlderThan, report: LagReport) -> list[Finding]:
        return [self._finding(s, g, f"{g.layer} oldest pending {g.oldest_pending_ms / 1000:.0f}s"
                                    f" > {rule.seconds:g}s on {s.channel}")
                for s, g in _groups(report, rule.layer)
                if g.oldest_pending_ms is not None and g.oldest_pending_ms > rule.seconds * 1000]

    def _consumer_idle(self, rule: ConsumerIdle, report: LagReport) -> list[Finding]:
        return [self._finding(s, g, f"{g.layer} consumer {c.name} idle {c.idle_ms / 1000:.0f}s"
                                    f" > {rule.seconds:g}s with lag {g.lag} on {s.channel}",
                              consumer=c.name)
                for s, g in _groups(report, rule.layer) if g.lag > 0
                for c in g.consumers if c.idle_ms > rule.seconds * 1000]

    def _dead_letter_growth(self, rule: DeadLetterGrowth, report: LagReport) -> list[Finding]:
        findings = []
        for division, samples in self._dead.items():
            base = next(added for at, added in samples if at >= report.at - rule.within_s)
            grown = samples[-1][1] - base
            if grown >= rule.entries:
                findings.append(Finding(division, self._name(division),
                                        f"{grown} new dead letters in {rule.within_s:g}s"))
        return findings

    def _remember_dead(self, report: LagReport) -> None:
        keep = max((r.within_s for r in self.rules if isinstance(r, DeadLetterGrowth)),
                   default=0.0)
        for dead in report.dead_letters:
            samples = self._dead.setdefault(dead.division, deque())
            samples.append((report.at, dead.entries_added))
            while samples[0][0] < report.at - keep:
                samples.popleft()

    async def _update(self, rule: AlertRule, findings: Sequence[Finding]) -> None:
        """Raise what is newly found; resolve what is no longer found."""
        for finding in findings:
            if (rule.id, finding.subject) not in self.active:
                await self._raise(rule, finding)
        found = {finding.subject for finding in findings}
        for rule_id, subject in list(self.active):
            if rule_id == rule.id and subject not in found:
                await self._resolve(rule_id, subject)

    async def _set(self, rule: AlertRule, finding: Finding, holds: bool) -> None:
        if holds and (rule.id, finding.subject) not in self.active:
            await self._raise(rule, finding)
        elif not holds and (rule.id, finding.subject) in self.active:
            await self._resolve(rule.id, finding.subject)

    async def _raise(self, rule: AlertRule, finding: Finding) -> None:
        alert = Alert(rule.id, rule.severity, finding, self.clock())
        self.active[(rule.id, finding.subject)] = alert
        emit = log.error if rule.severity == "error" else log.warning
        emit("alert_raised", rule=rule.id, severity=rule.severity, subject=finding.subject,
             division=finding.division, message=finding.message)
        self._count(rule.id)
        await self._notify(alert, "ALERT")
        if self.store is not None:
            await self.store.save(alert)

    async def _resolve(self, rule_id: str, subject: str) -> None:
        alert = self.active.pop((rule_id, subject))
        log.info("alert_resolved", rule=rule_id, severity=alert.severity, subject=subject,
                 division=alert.finding.division, lasted_s=round(self.clock() - alert.since, 3))
        self._count(rule_id)
        await self._notify(alert, "RESOLVED")
        if self.store is not None:
            await self.store.drop(rule_id, subject)

    async def _notify(self, alert: Alert, status: Literal["ALERT", "RESOLVED"]) -> None:
        if self.notifier is None:
            return
        await self.notifier.alert(AlertNotice(
            environment=self.notifier.environment, status=status,
            rule=alert.rule, severity=alert.severity, division=alert.finding.division,
            subject=alert.finding.subject, message=alert.finding.message))

    def _count(self, rule_id: str) -> None:
        if self.metrics is not None:
            count = sum(1 for rule, _ in self.active if rule == rule_id)
            self.metrics.set_alerts_active(rule_id, count)

    def _finding(self, stream: StreamLag, group: GroupLag, message: str,
                 consumer: str | None = None) -> Finding:
        """A finding about a group on a stream (or one of its consumers)."""
        subject = f"{stream.stream} {group.group}" + (f" {consumer}" if consumer else "")
        return Finding(subject, self._name(stream.division), message)

    def _name(self, division: str) -> str:
        return self.divisions.get(division, division)


def _groups(report: LagReport, layer: str | None) -> Iterable[tuple[StreamLag, GroupLag]]:
    return ((s, g) for s, g in report.groups() if layer is None or g.layer == layer)
