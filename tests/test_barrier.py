"""The window barrier on real Redis, with a test clock that the tests advance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from assay.contracts.messages import (
    Accounted,
    DeadLetter,
    Message,
    TableEnd,
    WindowEvent,
    json_decoder,
)
from assay.contracts.ops import EmailConfig, NotificationsConfig, WebhookConfig, WindowTimedOut
from assay.ops.alerts import Alerts
from assay.ops.notify import Notifier, from_window, render_line
from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from assay.streams.codec import encode
from tests.conftest import OpenContext
from tests.ops_helpers import HttpReceiver, smtp_server


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


TABLE = {"columns": {"id": "integer"}, "key": ["id"]}


@pytest.fixture
async def ctx(open_ctx: OpenContext, tmp_path: Path, schema: str) -> Context:
    folder = tmp_path / "config"
    folder.mkdir()
    policy = {"window_timeout_s": 60, "retries": 2, "retry_interval_s": 10}
    (folder / "c.json").write_text(json.dumps({
        "pipeline": {"db_schema": schema, "block_ms": 50},
        "divisions": {
            "east": {"name": "East", "tables": ["a", "b"], **policy, "on_timeout": "hold"},
            "west": {"name": "West", "tables": ["a", "b"], **policy,
                     "on_timeout": "complete_partial"},
        },
        "tables": {"a": TABLE, "b": TABLE},
    }))
    context = await open_ctx(folder)
    context.clock = Clock()
    return context


async def put(ctx: Context, division: str, *messages: Message) -> None:
    for message in messages:
        channel = channels.DEAD if isinstance(message, DeadLetter) else channels.ACCOUNTED
        await ctx.redis.xadd(ctx.keys.stream(division, channel), encode(message))


def applied(division: str, table: str, rows: list[int], window: str = "w1",
            quarantined: list[int] | None = None) -> Accounted:
    return Accounted(division=division, table=table, window=window, layer="silver",
                     applied=rows, quarantined=quarantined or [])


def end(division: str, table: str, rows: int, window: str = "w1") -> TableEnd:
    return TableEnd(division=division, table=table, window=window, rows=rows)


async def barrier(ctx: Context) -> None:
    await make_consumer("barrier", ctx).run(burst=True)


async def events(ctx: Context, division: str = "east") -> list[WindowEvent]:
    raw = await ctx.redis.xrange(ctx.keys.stream(division, channels.WINDOWS))
    return [json_decoder.decode(f[b"json"]) for _, f in raw]  # type: ignore[misc]


async def tick(ctx: Context) -> list[str]:
    processor = make_consumer("barrier", ctx).processor
    return [t.event for t in await processor.tick()]  # type: ignore[attr-defined]


async def test_all_tables_arrive_one_completion(ctx: Context) -> None:
    await put(ctx, "east", applied("east", "a", [1, 2]), end("east", "a", 3),
              applied("east", "b", [1]), end("east", "b", 1))
    await barrier(ctx)
    assert await events(ctx) == []
    await put(ctx, "east", applied("east", "a", [3]))
    await barrier(ctx)
    [event] = await events(ctx)
    assert (event.status, event.window, event.tables, event.failed) == (
        "completed", "w1", {"a": 3, "b": 1}, {"a": 0, "b": 0})
    assert event.opened_at == event.at == 1_000.0  # the test clock did not move


async def test_quarantined_and_dead_lettered_rows_complete_as_partial(ctx: Context) -> None:
    dead = DeadLetter(layer="bronze", stream=ctx.keys.stream("east", channels.INGEST),
                      entry_id="1-0", error="boom", deliveries=3, division="east", table="b",
                      window="w1", row=2)
    await put(ctx, "east", applied("east", "a", [1], quarantined=[2]), end("east", "a", 2),
              applied("east", "b", [1]), end("east", "b", 2), dead)
    await barrier(ctx)
    [event] = await events(ctx)
    assert event.status == "partial" and event.failed == {"a": 1, "b": 1}


async def test_a_lost_row_plus_a_duplicate_is_not_complete(ctx: Context) -> None:
    await put(ctx, "east", applied("east", "a", [1, 1]), end("east", "a", 2),
              applied("east", "b", [1]), end("east", "b", 1))
    await barrier(ctx)
    assert await events(ctx) == []
    windows = await make_consumer("barrier", ctx).processor.store.windows("east")  # type: ignore[attr-defined]
    assert windows[0]["duplicates"] == "1" and windows[0]["a:seen"] == "1"


async def test_short_table_times_out_after_retries_naming_it(ctx: Context) -> None:
    clock: Clock = ctx.clock  # type: ignore[assignment]
    await put(ctx, "east", applied("east", "a", [1]), end("east", "a", 1),
              applied("east", "b", [1]), end("east", "b", 5))
    await barrier(ctx)
    clock.now += 59
    assert await tick(ctx) == []
    clock.now += 1
    assert await tick(ctx) == ["retry"]
    assert await tick(ctx) == []  # not again until the retry interval has passed
    clock.now += 10
    assert await tick(ctx) == ["retry"]
    clock.now += 10
    assert await tick(ctx) == ["timed_out"]
    assert await tick(ctx) == []
    [event] = await events(ctx)
    assert event.status == "timed_out"
    assert event.missing == {"b": "1 of 5 rows accounted"}


async def test_hold_completes_when_the_rest_arrives(ctx: Context) -> None:
    clock: Clock = ctx.clock  # type: ignore[assignment]
    await put(ctx, "east", applied("east", "a", [1]), end("east", "a", 1))
    await barrier(ctx)
    clock.now += 1000
    for _ in range(3):
        await tick(ctx)
    await put(ctx, "east", applied("east", "b", [1]), end("east", "b", 1))
    await barrier(ctx)
    assert [e.status for e in await events(ctx)] == ["timed_out", "completed"]
    assert (await events(ctx))[0].missing == {"b": "no table_end yet (0 rows accounted)"}


async def test_complete_partial_then_late_data_amends(ctx: Context) -> None:
    clock: Clock = ctx.clock  # type: ignore[assignment]
    await put(ctx, "west", applied("west", "a", [1]), end("west", "a", 1))
    await barrier(ctx)
    clock.now += 1000
    for _ in range(3):
        await tick(ctx)
    assert [e.status for e in await events(ctx, "west")] == ["timed_out", "partial"]
    await put(ctx, "west", applied("west", "b", [1, 2]), end("west", "b", 2))
    await barrier(ctx)
    assert [e.status for e in await events(ctx, "west")] == ["timed_out", "partial", "amended"]


async def test_late_data_for_a_completed_window_amends(ctx: Context) -> None:
    await put(ctx, "east", applied("east", "a", [1]), end("east", "a", 1),
              applied("east", "b", [1]), end("east", "b", 1))
    await barrier(ctx)
    await put(ctx, "east", end("east", "b", 2), applied("east", "b", [2]))
    await barrier(ctx)
    statuses = [(e.status, e.tables["b"]) for e in await events(ctx)]
    assert statuses == [("completed", 1), ("amended", 2)]


async def test_restart_and_redelivery_emit_no_duplicate(ctx: Context) -> None:
    await put(ctx, "east", applied("east", "a", [1, 2]), end("east", "a", 2))
    await barrier(ctx)  # this barrier process "dies" here
    await put(ctx, "east", applied("east", "b", [1]), end("east", "b", 1))
    await make_consumer("barrier", ctx, name="restarted").run(burst=True)
    for channel in (channels.ACCOUNTED, channels.DEAD):  # deliver everything once more
        await ctx.redis.xgroup_setid(ctx.keys.stream("east", channel),
                                     ctx.keys.group("barrier"), "0")
    await make_consumer("barrier", ctx, name="again").run(burst=True)
    assert [e.status for e in await events(ctx)] == ["completed"]


async def test_two_divisions_interleaved(ctx: Context) -> None:
    for window in ("w1", "w2"):
        for division in ("east", "west"):
            await put(ctx, division, applied(division, "a", [1], window), end(division, "a", 1,
                                                                              window))
    for window in ("w1", "w2"):
        for division in ("west", "east"):
            await put(ctx, division, applied(division, "b", [1], window), end(division, "b", 1,
                                                                              window))
    await barrier(ctx)
    for division in ("east", "west"):
        assert [(e.window, e.status) for e in await events(ctx, division)] == [
            ("w1", "completed"), ("w2", "completed")]


async def test_completing_a_window_never_fails_its_batch(ctx: Context) -> None:
    from structlog.testing import capture_logs

    await put(ctx, "east", applied("east", "a", [1]), end("east", "a", 1),
              applied("east", "b", [1]), end("east", "b", 1))
    with capture_logs() as logs:
        await barrier(ctx)
    # Before a fix, logging the transition raised: the batch was split and retried.
    assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == []
    assert [e.status for e in await events(ctx)] == ["completed"]


MISSING_LINE = re.compile(
    r"^\[(?P<env>[A-Z]+)\] \[(?P<status>[A-Z]+)\] (?P<pipeline>[A-Z_]+) — (?P<division>[A-Z ]+)"
    r" — (?P<processed>\d+) / (?P<failed>\d+)"
    r"(?: — missing (?P<missing>.+))?$")
"""The line as the README documents it; ``missing`` is ``; ``-separated parts."""
PART = re.compile(r"^(?P<table>\w+) (?:\(no table_end\)|(?P<lacking>\d+) of (?P<of>\d+) rows)$")


def parse(line: str) -> tuple[dict[str, str | None], dict[str, tuple[int, int] | None]]:
    match = MISSING_LINE.match(line)
    assert match, line
    parts = [PART.match(p) for p in (match["missing"] or "").split("; ") if p]
    assert all(parts), line
    return match.groupdict(), {p["table"]: (int(p["lacking"]), int(p["of"])) if p["lacking"]
                               else None for p in parts if p}


async def test_a_timeout_names_what_is_missing_in_line_mail_webhook_and_alert(
        ctx: Context) -> None:
    clock: Clock = ctx.clock  # type: ignore[assignment]
    await put(ctx, "east", applied("east", "a", [1, 2, 3]), end("east", "a", 15))
    await barrier(ctx)
    clock.now += 1000
    for _ in range(3):
        await tick(ctx)
    [event] = await events(ctx)
    notice = from_window("DEMO", event, "East")
    assert [(m.table, m.expected, m.accounted, m.lacking) for m in notice.missing] == [
        ("a", 15, 3, 12), ("b", None, 0, None)]
    line = render_line(notice)
    assert line == ("[DEMO] [FAILED] WINDOW — EAST — 3 / 0"
                    " — missing a 12 of 15 rows; b (no table_end)")
    head, missing = parse(line)
    assert (head["status"], head["processed"], missing) == ("FAILED", "3",
                                                           {"a": (12, 15), "b": None})
    alerts = Alerts([WindowTimedOut()], divisions={"east": "East"}, clock=clock)
    with smtp_server() as (inbox, port):
        async with HttpReceiver() as hook:
            config = NotificationsConfig(webhook=WebhookConfig(url=hook.url), email=EmailConfig(
                host="127.0.0.1", port=port, security="none", sender="assay@example.com",
                to=["ops@example.com"], batch_seconds=0))
            notifier = Notifier(config, "DEMO")
            alerts.notifier = notifier
            await notifier.notify(notice)
            await alerts.window(event)
    assert [m.get_payload(decode=True).decode().strip() for m in inbox.mails] == [
        line, "[DEMO] [ALERT] WINDOW_TIMED_OUT — EAST — window w1 timed out"
              " — missing a 12 of 15 rows; b (no table_end)"]
    assert hook.bodies[0]["line"] == line
    assert hook.bodies[0]["missing"] == [
        {"table": "a", "expected": 15, "accounted": 3, "lacking": 12},
        {"table": "b", "expected": None, "accounted": 0, "lacking": None}]
