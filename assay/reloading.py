"""Config reload without a restart: a layer's processor that switches between batches.

On ``reload()`` (SIGHUP, or ``assay reload``) the config folder is read and checked
again and compared with the database. When it is valid and the database already
matches it (``assay migrate`` has run for any new column), a processor for the new
config is built and takes over at the start of the next batch; a batch in hand
finishes on the old one. Otherwise the old config keeps running: one log line
(``config_reload_refused``) and an alert (``config_reload_failed``) say why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from assay.contracts.config import ConfigError, load_config
from assay.db.schema import migrate
from assay.ops.notify import AlertNotice, Notifier
from assay.processors.plan import Plan, build_plan
from assay.streams.codec import Item
from assay.streams.consumer import Output, Processor

if TYPE_CHECKING:
    from assay.runner import Context

log = structlog.get_logger("assay.reload")


class Refused(Exception):
    """The config on disk cannot replace the running one: the reason, in one line."""


class ReloadingProcessor:
    """Delegates to the processor of the current config; ``reload`` prepares the next."""

    def __init__(self, layer: str, ctx: Context, config_dir: Path, current: Processor,
                 build: Callable[[Context], Processor], notifier: Notifier | None = None
                 ) -> None:
        self.layer = layer
        self.ctx = ctx
        self.config_dir = config_dir
        self.build = build
        self.notifier = notifier
        self.current = current
        self.reloads = 0
        self._next: tuple[Context, Processor] | None = None
        self._alerted = False

    async def process(self, items: Sequence[Item]) -> Output:
        if self._next is not None:
            (self.ctx, self.current), self._next = self._next, None
            self.reloads += 1
            log.info("config_reloaded", layer=self.layer, reloads=self.reloads)
        return await self.current.process(items)

    async def tick(self) -> Any:
        """The current processor's periodic work (the barrier's timeouts)."""
        return await self.current.tick()  # type: ignore[attr-defined]

    async def reload(self) -> bool:
        """Check the config folder; on success the next batch runs on it."""
        try:
            plan = await self._checked()
        except Refused as exc:
            log.error("config_reload_refused", layer=self.layer, config=str(self.config_dir),
                      reason=str(exc))
            await self._alert("ALERT", f"{self.layer} kept its config: {exc}")
            return False
        context = dataclasses.replace(self.ctx, plan=plan)
        self._next = (context, self.build(context))
        log.info("config_reload_accepted", layer=self.layer, config=str(self.config_dir))
        await self._alert("RESOLVED", f"{self.layer} reloaded its config")
        return True

    async def _checked(self) -> Plan:
        try:
            plan = build_plan(load_config(self.config_dir))
        except ConfigError as exc:
            raise Refused("; ".join(exc.problems)) from exc
        running = self.ctx.plan
        if plan.schema != running.schema:
            raise Refused(f"db_schema changed from {running.schema!r} to {plan.schema!r};"
                          " restart the layers")
        if set(plan.config.divisions) != set(running.config.divisions):
            raise Refused("divisions added or removed; restart the layers to read their"
                          " streams")
        async with self.ctx.pool.acquire() as conn:
            needed = await migrate(conn, plan.schema, plan.shapes(), plan.views(),
                                   dry_run=True, strict=False)
        if needed.pending:
            raise Refused("the database does not match the config ("
                          + "; ".join(needed.lines()) + "); run `assay migrate`, then"
                          " `assay reload`")
        return plan

    async def _alert(self, status: Any, message: str) -> None:
        if self.notifier is None or (status == "RESOLVED" and not self._alerted):
            return
        self._alerted = status == "ALERT"
        await self.notifier.alert(AlertNotice(
            environment=self.notifier.environment, status=status, rule="config_reload_failed",
            severity="error", division="all", subject=self.layer, message=message))
