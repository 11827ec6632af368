"""Recovery in seconds: heartbeats, entries of gone consumers, supervised processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
import structlog

from assay.demo.run import ProcfileError, procfile_lines
from assay.runner import Context, make_consumer
from assay.streams import keys as channels
from assay.streams.consumer import RuntimeSettings
from assay.streams.producer import Producer, TableTarget
from assay.supervise import Slot, Supervisor
from tests.conftest import OpenContext, eventually, item_rows, write_config


@pytest.fixture
async def ctx(open_ctx: OpenContext, tmp_path: Path, schema: str) -> Context:
    return await open_ctx(write_config(tmp_path / "config", schema, batch_size=2))


async def consumers(ctx: Context, division: str = "east") -> dict[str, int]:
    stream = ctx.keys.stream(division, channels.INGEST)
    try:
        found: Any = await ctx.redis.xinfo_consumers(stream, ctx.keys.group("bronze"))
    except redis.exceptions.ResponseError:  # no group yet
        return {}
    return {c["name"].decode(): int(c["pending"]) for c in found}


async def kill_while_holding(ctx: Context, victim: asyncio.subprocess.Process) -> None:
    """SIGKILL the victim at a moment it holds pending entries."""

    async def holding() -> bool:
        if (await consumers(ctx)).get("victim", 0) == 0:
            return False
        victim.send_signal(signal.SIGSTOP)
        if (await consumers(ctx)).get("victim", 0) > 0:
            return True
        victim.send_signal(signal.SIGCONT)
        return False

    await eventually(holding)
    victim.kill()
    await victim.wait()


async def test_entries_of_a_killed_consumer_are_claimed_in_seconds(
        ctx: Context, tmp_path: Path, redis_url: str, database_url: str) -> None:
    """claim_idle_ms stays 60 s: the rescue comes from the victim's missing heartbeat."""
    assert ctx.plan.config.pipeline.claim_idle_ms == 60_000
    await Producer(ctx.redis, ctx.keys, chunk_size=50).send_table(
        TableTarget("east", "item", "w1"), item_rows(5_000))
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": ctx.keys.prefix, "ASSAY_LOG_LEVEL": "WARNING"}
    victim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "assay", "run", "bronze", "--config",
        str(tmp_path / "config"), "--name", "victim", env=env, stderr=subprocess.DEVNULL)
    try:
        await kill_while_holding(ctx, victim)
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()
    rescuer = make_consumer("bronze", ctx, name="rescuer")
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(rescuer.run())

        async def rescued() -> bool:
            return "victim" not in await consumers(ctx)

        try:
            await eventually(rescued, timeout=20)
        finally:
            rescuer.stop()
            await task
    events = [e["event"] for e in logs]
    assert "entries_claimed_from_gone_consumer" in events and "consumer_removed" in events
    # The rescuer was stopped, maybe with claimed entries not yet handled: it comes back
    # under its name (as a restarted Procfile slot would) and takes its own pending first.
    await make_consumer("bronze", ctx, name="rescuer").run(burst=True)
    table = f'"{ctx.plan.schema}"."bronze_item"'
    assert await ctx.pool.fetchval(f"SELECT count(*) FROM {table}") == 5_000
    assert await ctx.redis.xlen(ctx.keys.stream("east", channels.DEAD)) == 0


async def test_a_gone_consumer_holding_nothing_leaves_the_group(ctx: Context) -> None:
    stream = ctx.keys.stream("east", channels.INGEST)
    group = ctx.keys.group("bronze")
    await ctx.redis.xgroup_create(stream, group, id="0", mkstream=True)
    await ctx.redis.xgroup_createconsumer(stream, group, "ghost")
    live = make_consumer("bronze", ctx, name="live")
    await live.beat_once()
    await ctx.redis.xgroup_createconsumer(stream, group, "live")
    sweeper = make_consumer("bronze", ctx, name="sweeper")
    sweeper.settings = RuntimeSettings(block_ms=10, heartbeat_s=0.01, heartbeat_ttl_ms=50)

    async def swept() -> bool:
        with structlog.testing.capture_logs() as logs:
            await sweeper.run(burst=True)
        return any(e["event"] == "consumer_removed" and e["gone"] == "ghost" for e in logs)

    await eventually(swept)
    assert set(await consumers(ctx)) == {"live", "sweeper"}  # a heartbeat keeps it


async def test_supervisor_restarts_a_dead_process_in_its_slot() -> None:
    start = partial(asyncio.create_subprocess_exec, sys.executable, "-c",
                    "import signal; signal.pause()")  # runs until a signal
    supervisor = Supervisor([Slot("waiter.1", start)], backoff_start_s=0.01)
    await supervisor.start()
    first = supervisor.pids()["waiter.1"]
    with structlog.testing.capture_logs() as logs:
        os.kill(first, signal.SIGKILL)

        async def restarted() -> bool:
            return supervisor.pids().get("waiter.1") not in (None, first)

        try:
            await eventually(restarted)
        finally:
            codes = await supervisor.stop(grace_s=10)
    assert supervisor.slots[0].exits == [-signal.SIGKILL]
    assert supervisor.restarts == 1 and codes == [-signal.SIGTERM]
    assert [e["slot"] for e in logs if e["event"] == "process_restarted"] == ["waiter.1"]


STUBBORN = ("import signal\n"
            "signal.signal(signal.SIGTERM, lambda *_: print('term', flush=True))\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    signal.pause()\n")
"""A process that says when it is up and when it got SIGTERM, and does not stop for it."""


async def stubborn() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-c", STUBBORN,
                                                stdout=asyncio.subprocess.PIPE)


async def test_a_process_sigkilled_by_another_during_the_stop_is_no_failed_stop() -> None:
    supervisor = Supervisor([Slot("layer", stubborn)])
    await supervisor.start()
    process = supervisor.slots[0].process
    assert process is not None and process.stdout is not None
    assert await process.stdout.readline() == b"ready\n"
    stopping = asyncio.create_task(supervisor.stop(grace_s=60))
    assert await process.stdout.readline() == b"term\n"
    os.kill(process.pid, signal.SIGKILL)  # a chaos killer, within the grace period
    assert await stopping == []
    assert supervisor.slots[0].exits == [-signal.SIGKILL]


async def test_a_process_that_outlives_the_grace_is_a_failed_stop() -> None:
    supervisor = Supervisor([Slot("layer", stubborn)])
    await supervisor.start()
    process = supervisor.slots[0].process
    assert process is not None and process.stdout is not None
    assert await process.stdout.readline() == b"ready\n"
    assert await supervisor.stop(grace_s=0.2) == [-signal.SIGKILL]


def test_procfile_lines_that_are_not_assay_run_or_serve_are_an_error(tmp_path: Path) -> None:
    good = tmp_path / "Procfile"
    good.write_text("bronze: assay run bronze\n# note\n\napi: assay serve --port 8080\n")
    assert [(p.name, p.layer) for p in procfile_lines(good)] == [("bronze", "bronze"),
                                                                 ("api", None)]
    bad = tmp_path / "Procfile.bad"
    bad.write_text("bronze: assay run bronze\nsilver: while true; do assay run silver; done\n")
    with pytest.raises(ProcfileError, match=r"Procfile.bad:2: .*while true"):
        procfile_lines(bad)
    unknown = tmp_path / "Procfile.unknown"
    unknown.write_text("silver: assay run silverr\n")
    with pytest.raises(ProcfileError, match="silverr"):
        procfile_lines(unknown)


def test_demo_refuses_a_procfile_it_cannot_run(tmp_path: Path, redis_url: str,
                                              database_url: str) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("silver: sh -c 'until assay run silver; do sleep 1; done'\n")
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": "refused"}
    result = subprocess.run(
        [sys.executable, "-m", "assay", "demo", "--procfile", str(procfile), "--timeout", "5"],
        capture_output=True, text=True, env=env, check=False, timeout=120)
    assert result.returncode == 2
    assert f"{procfile}:1:" in result.stderr and "assay run LAYER" in result.stderr
