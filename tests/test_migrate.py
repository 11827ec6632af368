"""``assay migrate``: a plan line per difference, --dry-run, --drop, exits; layers that start on
a database their config cannot be applied to say which command to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from assay.runner import Context
from tests.conftest import ITEM_TABLE, OpenContext


def assay(ctx: Context, folder: Path, redis_url: str, database_url: str,
          *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": ctx.keys.prefix, "ASSAY_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "assay", *args, "--config", str(folder)],
                          capture_output=True, text=True, env=env, check=False, timeout=60)


def set_columns(folder: Path, **columns: str | None) -> None:
    table = json.loads(json.dumps(ITEM_TABLE))
    for name, kind in columns.items():
        if kind is None:
            del table["columns"][name]
        else:
            table["columns"][name] = kind
    (folder / "tables.json").write_text(json.dumps({"tables": {"item": table}}))


async def columns(ctx: Context, table: str) -> dict[str, str]:
    rows = await ctx.pool.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = $2", ctx.plan.schema, table)
    return {r[0]: r[1] for r in rows}


async def test_migrate_plans_adds_widenings_kept_columns_and_refusals(
        ctx: Context, config_dir: Path, redis_url: str, database_url: str,
        open_ctx: OpenContext) -> None:
    before = await columns(ctx, "silver_item")
    set_columns(config_dir, colour="text", name=None, weight="text", qty="integer")

    dry = assay(ctx, config_dir, redis_url, database_url, "migrate", "--dry-run")
    plan = dry.stdout.splitlines()
    assert dry.returncode == 1, dry.stderr
    for line in ("add column silver_item.colour text",
                 "widen silver_item.weight numeric → text",
                 "keep silver_item.name (not in config; --drop removes it)",
                 "refuse silver_item.qty numeric → bigint: could lose data",
                 "dry run: nothing changed"):
        assert line in plan
    assert "Traceback" not in dry.stderr
    assert await columns(ctx, "silver_item") == before

    layer = assay(ctx, config_dir, redis_url, database_url, "run", "silver", "--burst")
    assert layer.returncode == 1
    assert "error: refuse silver_item.qty numeric → bigint: could lose data" in layer.stderr
    assert "run `assay migrate --dry-run`" in layer.stderr and "Traceback" not in layer.stderr
    assert await columns(ctx, "silver_item") == before  # a refusing layer changes nothing

    applied = assay(ctx, config_dir, redis_url, database_url, "migrate")
    assert applied.returncode == 1  # the refusal; everything else was applied
    after = await columns(ctx, "silver_item")
    assert (after["colour"], after["weight"], after["name"], after["qty"]) == (
        "text", "text", "text", "numeric")

    set_columns(config_dir, colour="text", name=None, weight="text")
    dropped = assay(ctx, config_dir, redis_url, database_url, "migrate", "--drop")
    assert dropped.returncode == 0, dropped.stderr
    assert "drop column silver_item.name" in dropped.stdout.splitlines()
    assert "name" not in await columns(ctx, "silver_item")
    again = assay(ctx, config_dir, redis_url, database_url, "migrate", "--dry-run")
    assert (again.returncode, again.stdout.splitlines()) == (
        0, ["nothing to change: the database matches the config"])
    await open_ctx(config_dir)  # a layer starts on it without a word


def test_safe_widenings_and_lossy_changes() -> None:
    from assay.db.schema import is_widening

    safe = [("smallint", "integer"), ("integer", "bigint"), ("bigint", "numeric"),
            ("integer", "numeric"), ("real", "double precision"), ("date", "timestamptz"),
            ("character varying(10)", "text"), ("varchar(10)", "varchar(20)"),
            ("boolean", "text"), ("numeric", "text")]
    lossy = [("numeric", "bigint"), ("bigint", "integer"), ("text", "bigint"),
             ("varchar(20)", "varchar(10)"), ("timestamptz", "date"), ("double precision",
                                                                       "real")]
    assert [is_widening(a, b) for a, b in safe] == [True] * len(safe)
    assert [is_widening(a, b) for a, b in lossy] == [False] * len(lossy)


async def test_a_table_gone_from_config_is_kept_unless_dropped(ctx: Context) -> None:
    from assay.db.schema import TableShape, migrate

    keep = TableShape("t_keep", {"id": "bigint"}, ("id",))
    gone = TableShape("t_gone", {"id": "bigint", "v": "text"}, ("id",))
    schema = f"{ctx.plan.schema}_tables"
    async with ctx.pool.acquire() as conn:
        try:
            created = await migrate(conn, schema, [keep, gone])
            kept = await migrate(conn, schema, [keep])
            planned = await migrate(conn, schema, [keep], drop=True, dry_run=True)
            dropped = await migrate(conn, schema, [keep], drop=True)
            after = await migrate(conn, schema, [keep])
            tables = {r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)}
        finally:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert created.lines() == ["create table t_keep", "create table t_gone"]
    assert kept.lines() == ["keep table t_gone (not in config; --drop removes it)"]
    assert planned.lines() == dropped.lines() == ["drop table t_gone"]
    assert (planned.applied, dropped.applied) == (False, True)
    assert tables == {"_assay_columns", "t_keep"}
    assert after.lines() == []
