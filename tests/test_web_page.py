"""The status page in a real headless Chromium: a window shows open then completed, a dead
letter shows with its reason, and a quarantined row is replayed from the page after the
config was fixed and reaches Silver.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); without it the test skips
locally and fails in CI (``CI`` set), so the page is always tested there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from assay.runner import Context, make_consumer
from assay.streams.consumer import Consumer
from assay.streams.keys import Keys
from tests.conftest import OpenContext
from tests.test_web_read import checked_config, item
from tests.web_helpers import INGEST_EAST, OPERATOR, bearer, served

CHROMIUM = os.environ.get("ASSAY_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = os.environ.get("ASSAY_SCREENSHOT")
"""Where to save the 1280×800 screenshot (the README's docs/status-page.png)."""


def chromium() -> str:
    found = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; CI installs it: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


@asynccontextmanager
async def layers(ctx: Context, names: tuple[str, ...]) -> AsyncIterator[list[Consumer]]:
    """Layer consumers running in this loop until the block ends."""
    consumers = [make_consumer(name, ctx) for name in names]
    tasks = [asyncio.ensure_future(c.run()) for c in consumers]
    try:
        yield consumers
    finally:
        for consumer in consumers:
            consumer.stop()
        await asyncio.gather(*tasks)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


async def test_the_page_follows_a_window_and_replays_quarantine(
        tmp_path: Path, schema: str, open_ctx: OpenContext, redis: aioredis.Redis,
        keys: Keys) -> None:
    from playwright.async_api import async_playwright, expect

    executable = chromium()
    expect.set_options(timeout=20_000)
    ctx = await open_ctx(checked_config(tmp_path / "config", schema))
    async with served(ctx, sample_s=0.2) as (base, _), async_playwright() as pw, \
            httpx.AsyncClient(base_url=base, headers=bearer(INGEST_EAST)) as http:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                  "--disable-dev-shm-usage"])
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(base + "/")
        await page.fill("#token", OPERATOR)
        await page.click("#login button")
        await expect(page.locator("#state")).to_have_text("live")
        url = "/v1/divisions/east/windows/2014-03/tables/item"
        async with layers(ctx, ("bronze", "silver", "barrier")):
            assert (await http.post(url, json=[item(1), item(2)])).status_code == 202
            w1 = page.locator('#division-east tr[data-window="2014-03"]')
            await expect(w1).to_have_attribute("data-status", "open")
            await expect(w1).to_contain_text("item")  # what it waits for
            await http.post(url, json=[item(3)], params={"final": "true"})
            await expect(w1).to_have_attribute("data-status", "completed")

            await redis.xadd(keys.stream("east", "ingest"), {"json": '{"type": "nonsense"}'})
            await expect(page.locator("#dead li.dead-letter")).to_contain_text(
                "invalid message")

            bad = "/v1/divisions/east/windows/2014-04/tables/item"
            await http.post(bad, json=[item(4), item(5, qty=-7)], params={"final": "true"})
            held = page.locator("#quarantine tr.held")
            await expect(held).to_have_count(1)
            await expect(held).to_contain_text("qty")
            await expect(page.locator('tr[data-window="2014-04"]')).to_have_attribute(
                "data-status", "partial")
            if SCREENSHOT:
                await page.screenshot(path=SCREENSHOT, full_page=True)
            await page.set_viewport_size({"width": 390, "height": 844})
            wide = await page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, f"the page is {wide} px wide on a phone"
            await page.set_viewport_size({"width": 1280, "height": 800})
        fixed = await open_ctx(checked_config(tmp_path / "fixed", schema, validation=False))
        async with layers(fixed, ("bronze", "silver", "barrier")):
            await held.locator("input").check()
            await page.click("#replay")
            await expect(page.locator("#message")).to_have_text("replayed 1 rows")
            await expect(held).to_have_count(0)

            async def in_silver() -> bool:
                return await fixed.pool.fetchval(
                    f'SELECT qty FROM "{schema}".silver_item WHERE id = 5') == -7

            await until(in_silver, "the replayed row in Silver")
        await browser.close()
