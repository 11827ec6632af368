"""The standard notification line, and its delivery to real local SMTP and HTTP servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from assay.contracts.config import ConfigError
from assay.contracts.messages import WindowEvent
from assay.contracts.ops import EmailConfig, NotificationsConfig, WebhookConfig
from assay.ops.notify import (
    Notifier,
    batch_counts,
    environment_name,
    from_batch,
    from_window,
    render_line,
)
from assay.ops.observe import BatchObserver
from assay.streams.consumer import BatchResult
from tests.ops_helpers import (
    HttpReceiver,
    captured_logs,
    events,
    free_port,
    self_signed,
    smtp_server,
)


async def never(_: float) -> None:
    """An injected sleep that never ends: email goes out on flush() only."""
    await asyncio.Event().wait()


async def until(condition: Callable[[], Any], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def window(status: Any, tables: dict[str, int], failed: dict[str, int]) -> WindowEvent:
    return WindowEvent(division="europe", window="2024-06-01", status=status, tables=tables,
                       failed=failed, at=1_700_000_000.0)


def email(port: int, **options: Any) -> EmailConfig:
    """A plain-text SMTP sink on 127.0.0.1 (``options`` override)."""
    return EmailConfig(**{"host": "127.0.0.1", "port": port, "security": "none",
                          "sender": "assay@example.com",
                          "to": ["ops@example.com", "lead@example.com"], **options})


def test_success_line() -> None:
    n = from_batch("PROD", "silver", "Europe", 5000, 0)
    assert render_line(n) == "[PROD] [SUCCESS] SILVER — EUROPE — 5000 / 0"


def test_partial_line() -> None:
    n = from_batch("PROD", "silver", "Europe", 4980, 20)
    assert render_line(n) == "[PROD] [PARTIAL] SILVER — EUROPE — 4980 / 20"


def test_failed_line_when_nothing_succeeded() -> None:
    n = from_batch("PROD", "bronze", "Pacific", 0, 20)
    assert render_line(n) == "[PROD] [FAILED] BRONZE — PACIFIC — 0 / 20"


def test_failed_line_when_the_batch_failed_as_a_whole() -> None:
    n = from_batch("PROD", "silver", "Europe", 10, 0, failed_whole=True)
    assert n.status == "FAILED"


def test_division_display_name_is_upper_cased() -> None:
    n = from_batch("dev", "gold", "North America", 12, 0)
    assert render_line(n) == "[DEV] [SUCCESS] GOLD — NORTH AMERICA — 12 / 0"


def test_timed_out_window_is_failed() -> None:
    n = from_window("PROD", window("timed_out", {"erp_order": 90}, {}), "Europe")
    assert render_line(n) == "[PROD] [FAILED] WINDOW — EUROPE — 90 / 0"


def test_partial_window_is_partial() -> None:
    n = from_window("PROD", window("partial", {"erp_order": 100}, {}), "Europe")
    assert render_line(n) == "[PROD] [PARTIAL] WINDOW — EUROPE — 100 / 0"


def test_completed_window_sums_its_tables() -> None:
    event = window("completed", {"erp_order": 4000, "erp_order_line": 1000},
                   {"erp_order_line": 20})
    n = from_window("PROD", event, "Europe")
    assert (render_line(n), n.window) == ("[PROD] [PARTIAL] WINDOW — EUROPE — 4980 / 20",
                                          "2024-06-01")


def test_environment_variable_wins_over_config() -> None:
    assert (environment_name("demo", {"ASSAY_ENV": "prod"}),
            environment_name("demo", {})) == ("PROD", "DEMO")


def test_batch_counts_dead_letters_and_quarantine_as_failed() -> None:
    result = BatchResult("silver", "europe", "s", "1-0", "2-0", items=100, dead=3, emitted=1,
                         seconds=0.1, processed=95, quarantined=2)
    assert batch_counts(result) == (95, 5)


async def test_notification_is_logged_with_its_fields() -> None:
    with captured_logs() as logs:
        await Notifier(None, "PROD").notify(from_batch("PROD", "silver", "Europe", 4980, 20))
    [entry] = events(logs, "notification")
    assert {k: entry[k] for k in ("log_level", "environment", "status", "pipeline", "division",
                                  "processed", "failed", "line")} == {
        "log_level": "info", "environment": "PROD", "status": "PARTIAL", "pipeline": "silver",
        "division": "Europe", "processed": 4980, "failed": 20,
        "line": "[PROD] [PARTIAL] SILVER — EUROPE — 4980 / 20"}


async def test_batch_lines_stay_in_the_debug_log_by_default() -> None:
    async with HttpReceiver() as hook:
        notifier = Notifier(NotificationsConfig(webhook=WebhookConfig(url=hook.url)), "PROD")
        with captured_logs() as logs:
            await notifier.notify(from_batch("PROD", "silver", "Europe", 10, 0), batch=True)
    assert (hook.bodies, [e["log_level"] for e in events(logs, "notification")]) == (
        [], ["debug"])


async def test_batch_level_sends_batch_lines() -> None:
    async with HttpReceiver() as hook:
        config = NotificationsConfig(level="batch", webhook=WebhookConfig(url=hook.url))
        await Notifier(config, "PROD").notify(from_batch("PROD", "silver", "Europe", 10, 0),
                                              batch=True)
    assert [b["line"] for b in hook.bodies] == ["[PROD] [SUCCESS] SILVER — EUROPE — 10 / 0"]


async def test_webhook_receives_the_fields_and_the_line_as_json() -> None:
    async with HttpReceiver() as hook:
        config = NotificationsConfig(webhook=WebhookConfig(
            url=hook.url, headers={"Authorization": "Bearer t0k"}))
        notifier = Notifier(config, "PROD", clock=lambda: 1_700_000_123.5)
        await notifier.notify(from_window("PROD", window("timed_out", {"erp_order": 90}, {}),
                                          "Europe"))
    assert hook.bodies == [{
        "kind": "notification", "environment": "PROD", "status": "FAILED",
        "pipeline": "window", "division": "Europe", "processed": 90, "failed": 0,
        "window": "2024-06-01", "detail": "timed_out", "at": 1_700_000_123.5,
        "line": "[PROD] [FAILED] WINDOW — EUROPE — 90 / 0"}]
    assert hook.headers[0]["authorization"] == "Bearer t0k"


async def test_a_burst_of_events_is_one_mail() -> None:
    lines = [from_batch("PROD", "silver", "Europe", 100 - i, i) for i in range(4)]
    lines.append(from_window("PROD", window("timed_out", {"erp_order": 1}, {}), "Europe"))
    with smtp_server() as (inbox, port):
        notifier = Notifier(NotificationsConfig(email=email(port)), "PROD", sleep=never)
        for n in lines:
            await notifier.notify(n)
        held = len(inbox.mails)
        await notifier.flush()
    [mail] = inbox.mails
    assert held == 0
    assert mail["Subject"] == "[assay] [PROD] [FAILED] 5 events"
    assert str(mail.get_payload()).splitlines() == [render_line(n) for n in lines]
    assert inbox.recipients == [["ops@example.com", "lead@example.com"]]


async def test_mail_leaves_when_the_batch_timer_fires() -> None:
    release = asyncio.Event()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await release.wait()

    with smtp_server() as (inbox, port):
        notifier = Notifier(NotificationsConfig(email=email(port, batch_seconds=30)), "PROD",
                            sleep=sleep)
        await notifier.notify(from_batch("PROD", "silver", "Europe", 1, 0))
        await notifier.notify(from_batch("PROD", "silver", "Europe", 2, 0))
        release.set()
        await until(lambda: inbox.mails)
    assert (slept, inbox.mails[0]["Subject"]) == ([30], "[assay] [PROD] [SUCCESS] 2 events")


async def test_mail_goes_over_starttls_with_a_login(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tls, cert = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with smtp_server(tls) as (inbox, port):
        config = email(port, security="starttls", username="assay",
                       password_env="ASSAY_SMTP_PW", batch_seconds=0)
        notifier = Notifier(NotificationsConfig(email=config), "PROD",
                            env={"ASSAY_SMTP_PW": "s3cret"})
        await notifier.notify(from_batch("PROD", "silver", "Europe", 1, 0))
    assert (inbox.logins, len(inbox.mails), dict(notifier.failures)) == (
        [("assay", "s3cret")], 1, {})


async def test_a_failing_sink_is_counted_and_the_others_deliver() -> None:
    refused = email(free_port(), batch_seconds=0)
    async with HttpReceiver() as hook:
        notifier = Notifier(NotificationsConfig(email=refused,
                                                webhook=WebhookConfig(url=hook.url)), "PROD")
        with captured_logs() as logs:
            await notifier.notify(from_batch("PROD", "silver", "Europe", 4980, 20))
    assert dict(notifier.failures) == {"email": 1}
    assert [b["status"] for b in hook.bodies] == ["PARTIAL"]
    assert [e["sink"] for e in events(logs, "notification_sink_failed")] == ["email"]


async def test_a_webhook_error_status_counts_as_a_failure() -> None:
    async with HttpReceiver(status=500) as hook:
        notifier = Notifier(NotificationsConfig(webhook=WebhookConfig(url=hook.url)), "PROD")
        await notifier.notify(from_batch("PROD", "silver", "Europe", 1, 0))
    assert dict(notifier.failures) == {"webhook": 1}


async def test_batch_hook_sends_each_batch_line_in_order() -> None:
    async with HttpReceiver() as hook:
        config = NotificationsConfig(level="batch", webhook=WebhookConfig(url=hook.url))
        observer = BatchObserver(Notifier(config, "PROD"), {"europe": "Europe"})
        for items, dead in ((5, 5), (10, 0), (10, 1)):
            observer(BatchResult("silver", "europe", "s", "1-0", "2-0", items=items, dead=dead,
                                 emitted=1, seconds=0.1, processed=items - dead))
        await observer.close()
    assert [b["line"] for b in hook.bodies] == [
        "[PROD] [FAILED] SILVER — EUROPE — 0 / 5",
        "[PROD] [SUCCESS] SILVER — EUROPE — 10 / 0",
        "[PROD] [PARTIAL] SILVER — EUROPE — 9 / 1",
    ]


def test_a_missing_password_variable_stops_start_up() -> None:
    config = NotificationsConfig(email=email(25, username="u", password_env="ASSAY_SMTP_PW"))
    with pytest.raises(ConfigError, match=r"ASSAY_SMTP_PW.*\$\.notifications\.email"):
        Notifier(config, "PROD", env={})


def test_notifications_section_decodes_from_json() -> None:
    raw = b"""{"level": "batch", "email": {"host": "smtp.example.com", "port": 465,
               "security": "ssl", "from": "assay@example.com", "to": ["ops@example.com"],
               "username": "assay", "password_env": "SMTP_PASSWORD", "batch_seconds": 120},
               "webhook": {"url": "https://hooks.example.com/x", "timeout_s": 3}}"""
    config = msgspec.json.decode(raw, type=NotificationsConfig)
    assert config.email is not None and config.webhook is not None
    assert (config.level, config.email.sender, config.email.security,
            config.webhook.timeout_s) == ("batch", "assay@example.com", "ssl", 3)


def test_notifications_section_refuses_unknown_keys() -> None:
    raw = b'{"webhook": {"url": "https://x", "timeout": 3}}'
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `timeout` - at `\$.webhook`"):
        msgspec.json.decode(raw, type=NotificationsConfig)
