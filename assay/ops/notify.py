"""The standard notification line, and the sinks it fans out to.

Every batch summary and every window outcome becomes one ``Notification``,
rendered as ``[ENV] [STATUS] PIPELINE — DIVISION — PROCESSED / FAILED``; a window
that is incomplete adds what it lacks, `` — missing erp_invoice (no table_end);
erp_order 12 of 340 rows`` (``missing_text``). The
``Notifier`` logs it and hands it to the configured sinks (email, webhook). A
failing sink is logged and counted in ``Notifier.failures``; it never raises into
the pipeline, and what it failed to deliver is dropped.
"""

from __future__ import annotations

import asyncio
import os
import re
import smtplib
import ssl
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Literal

import msgspec
import structlog

from assay.contracts.config import ConfigError
from assay.contracts.messages import WindowEvent
from assay.contracts.ops import EmailConfig, NotificationsConfig, WebhookConfig
from assay.streams.consumer import BatchResult

log = structlog.get_logger("assay.notify")

Status = Literal["SUCCESS", "PARTIAL", "FAILED"]

RANK = {"SUCCESS": 0, "RESOLVED": 0, "PARTIAL": 1, "ALERT": 2, "FAILED": 2}
"""How bad a status is; an email's subject carries the worst of its events."""

SINK_ERRORS = (OSError, smtplib.SMTPException)
"""What a sink may fail with (refused, timed out, TLS, HTTP error status, SMTP reply)."""


class Lacking(msgspec.Struct, frozen=True, kw_only=True):
    """An expected table of an incomplete window and how many of its rows it lacks."""

    table: str
    expected: int | None
    """Rows its table-end announced; None: no table-end yet."""
    accounted: int
    lacking: int | None
    """Rows not accounted for; None while the table-end (hence the count) is unknown."""

    def text(self) -> str:
        if self.expected is None:
            return f"{self.table} (no table_end)"
        return f"{self.table} {self.lacking} of {self.expected} rows"


def missing_text(missing: Sequence[Lacking]) -> str:
    """`` — missing erp_invoice (no table_end); erp_order 12 of 340 rows``, or ``''``."""
    if not missing:
        return ""
    return " — missing " + "; ".join(m.text() for m in missing)


_SHORT = re.compile(r"(\d+) of (\d+) rows")


def lacking_of(event: WindowEvent) -> tuple[Lacking, ...]:
    """The tables an incomplete window lacks, by name; from ``expected`` (events written
    before it was added: from the ``missing`` texts)."""
    found = []
    for table, why in sorted(event.missing.items()):
        accounted = event.tables.get(table, 0)
        expected: int | None = event.expected.get(table)
        if expected is None:
            short = _SHORT.search(why)
            expected = int(short.group(2)) if short else None
        if expected is None or expected < 0:
            found.append(Lacking(table=table, expected=None, accounted=accounted, lacking=None))
        else:
            found.append(Lacking(table=table, expected=expected, accounted=accounted,
                                 lacking=max(expected - accounted, 0)))
    return tuple(found)


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One batch summary or window outcome, as operators read it."""

    environment: str
    status: Status
    pipeline: str
    division: str
    processed: int
    failed: int
    window: str | None = None
    detail: str | None = None
    missing: tuple[Lacking, ...] = ()
    """For a window that timed out or completed partially without all its rows."""


class AlertNotice(msgspec.Struct, frozen=True, kw_only=True):
    """An alert that started (``ALERT``) or ended (``RESOLVED``), for the same sinks."""

    environment: str
    status: Literal["ALERT", "RESOLVED"]
    rule: str
    severity: str
    division: str
    subject: str
    message: str


Event = Notification | AlertNotice


def render_line(n: Event) -> str:
    """``[PROD] [PARTIAL] SILVER — EUROPE — 4980 / 20`` (alerts: the rule and message);
    an incomplete window adds `` — missing …`` (``missing_text``)."""
    match n:
        case Notification():
            head, tail = n.pipeline, f"{n.processed} / {n.failed}{missing_text(n.missing)}"
        case AlertNotice():
            head, tail = n.rule, n.message
    return f"[{n.environment.upper()}] [{n.status}] {head.upper()} — {n.division.upper()} — {tail}"


def status_of(processed: int, failed: int, failed_whole: bool = False) -> Status:
    if failed_whole or (failed and not processed):
        return "FAILED"
    return "PARTIAL" if failed else "SUCCESS"


def environment_name(configured: str, env: Mapping[str, str] = os.environ) -> str:
    """The environment shown in every line: ``ASSAY_ENV`` wins over ``pipeline.environment``."""
    return (env.get("ASSAY_ENV") or configured).upper()


def from_batch(environment: str, layer: str, division: str, processed: int, failed: int, *,
               failed_whole: bool = False, detail: str | None = None) -> Notification:
    """A batch summary; ``division`` is the display name (``North America``)."""
    return Notification(environment=environment, status=status_of(processed, failed, failed_whole),
                        pipeline=layer, division=division, processed=processed, failed=failed,
                        detail=detail)


def batch_counts(result: BatchResult) -> tuple[int, int]:
    """(processed, failed) of a committed batch.

    Processed counts the records that reached the layer's table; failed counts
    dead letters and quarantined rows.
    """
    return result.processed, result.dead + result.quarantined


def from_result(environment: str, result: BatchResult, division: str) -> Notification:
    processed, failed = batch_counts(result)
    return from_batch(environment, result.layer, division, processed, failed,
                      detail=f"{result.stream} {result.first_id}..{result.last_id}")


def from_window(environment: str, event: WindowEvent, division: str,
                pipeline: str = "window") -> Notification:
    """A window outcome: ``tables`` counts every accounted row, ``failed`` those that failed."""
    failed = sum(event.failed.values())
    processed = sum(event.tables.values()) - failed
    status = status_of(processed, failed, failed_whole=event.status == "timed_out")
    if event.status == "partial" and status == "SUCCESS":
        status = "PARTIAL"
    return Notification(environment=environment, status=status, pipeline=pipeline,
                        division=division, processed=processed, failed=failed,
                        window=event.window, detail=event.status, missing=lacking_of(event))


def fields_of(event: Event) -> dict[str, Any]:
    """The event's fields and its line, as logged and as POSTed."""
    fields = {k: v for k, v in msgspec.to_builtins(event).items()
              if v is not None and v != () and v != []}
    fields["line"] = render_line(event)
    return fields


class EmailSink:
    """Sends a list of events as one mail over SMTP (smtplib, in a thread)."""

    name = "email"

    def __init__(self, config: EmailConfig, environment: str, password: str | None) -> None:
        self.config = config
        self.environment = environment
        self.password = password

    def message(self, events: Sequence[Event], at: float) -> EmailMessage:
        worst = max((e.status for e in events), key=RANK.__getitem__)
        count = f"{len(events)} event" + ("s" if len(events) > 1 else "")
        mail = EmailMessage()
        mail["Subject"] = f"{self.config.subject_prefix} [{self.environment}] [{worst}] {count}"
        mail["From"] = self.config.sender
        mail["To"] = ", ".join(self.config.to)
        mail["Date"] = formatdate(at, localtime=False)
        mail.set_content("".join(render_line(e) + "\n" for e in events))
        return mail

    async def send(self, events: Sequence[Event], at: float) -> None:
        await asyncio.to_thread(self._send, self.message(events, at))

    def _send(self, mail: EmailMessage) -> None:
        c = self.config
        smtp: smtplib.SMTP
        if c.security == "ssl":
            smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout_s,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
        with smtp:
            if c.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if c.username:
                smtp.login(c.username, self.password or "")
            smtp.send_message(mail)


class WebhookSink:
    """POSTs each event as JSON: its fields, ``line``, ``kind`` and ``at``."""

    name = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config

    async def send(self, event: Event, at: float) -> None:
        kind = "alert" if isinstance(event, AlertNotice) else "notification"
        body = msgspec.json.encode({"kind": kind, **fields_of(event), "at": at})
        await asyncio.to_thread(self._post, body)

    def _post(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json", **self.config.headers}
        request = urllib.request.Request(self.config.url, data=body, headers=headers,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
            response.read()


def _password(config: EmailConfig, env: Mapping[str, str]) -> str | None:
    if config.password_env is None:
        return config.password
    value = env.get(config.password_env)
    if value is None:
        raise ConfigError([f"environment variable {config.password_env!r} is not set"
                           " - at `$.notifications.email.password_env`"])
    return value


class Notifier:
    """Fans each event out to the log and the configured sinks.

    Email is batched: the first event of a burst starts a timer of ``batch_seconds``
    (``sleep`` is injected), and every event until it fires goes into the same mail.
    ``flush()`` sends the pending mail now; ``close()`` flushes before shutdown.
    """

    def __init__(self, config: NotificationsConfig | None, environment: str, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 env: Mapping[str, str] = os.environ) -> None:
        config = config or NotificationsConfig()
        self.level = config.level
        self.environment = environment
        self.clock = clock
        self.sleep = sleep
        self.email = (EmailSink(config.email, environment, _password(config.email, env))
                      if config.email else None)
        self.webhook = WebhookSink(config.webhook) if config.webhook else None
        self.failures: Counter[str] = Counter()
        self._outbox: list[Event] = []
        self._timer: asyncio.Task[None] | None = None

    async def notify(self, n: Notification, *, batch: bool = False) -> None:
        """Log a notification; send it to the sinks unless it is a batch line at window level."""
        if batch and self.level != "batch":
            log.debug("notification", **fields_of(n))
            return
        log.info("notification", **fields_of(n))
        await self._send(n)

    async def alert(self, notice: AlertNotice) -> None:
        """Send an alert to the sinks (the alert rules log their own events)."""
        await self._send(notice)

    async def flush(self) -> None:
        """Send the pending email now."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        events, self._outbox = self._outbox, []
        if events and self.email is not None:
            await self._guard(self.email.name, self.email.send(events, self.clock()), len(events))

    async def close(self) -> None:
        await self.flush()

    async def _send(self, event: Event) -> None:
        if self.email is not None:
            self._outbox.append(event)
            if self.email.config.batch_seconds == 0:
                await self.flush()
            elif self._timer is None:
                self._timer = asyncio.create_task(self._flush_later(self.email.config))
        if self.webhook is not None:
            await self._guard(self.webhook.name, self.webhook.send(event, self.clock()), 1)

    async def _flush_later(self, config: EmailConfig) -> None:
        await self.sleep(config.batch_seconds)
        self._timer = None
        await self.flush()

    async def _guard(self, sink: str, delivery: Awaitable[None], events: int) -> None:
        try:
            await delivery
        except SINK_ERRORS as exc:
            self.failures[sink] += 1
            log.warning("notification_sink_failed", sink=sink, events=events,
                        error=f"{type(exc).__name__}: {exc}")
