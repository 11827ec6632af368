"""Window state in Redis: which rows of which tables of a sync window are accounted for.

Per division (all keys share the division's hash tag):

* ``state:w:<window>`` — a hash: status, opened/completed times, retries, and per table
  ``<table>:expected`` (from its table-end), ``<table>:seen`` and ``<table>:failed``;
* ``state:rows:<window>:<table>`` — a bitmap with one bit per row number accounted for;
* ``state:failed:<window>:<table>`` — the bits of the rows accounted as failed: a failed
  row applied later (re-driven by ``assay replay``) moves from failed to applied once,
  and its completed window emits ``amended`` (windows opened before these bits existed use
  ``state:restated:<window>:<table>``: a re-driven row is restated once);
* ``state:windows`` — every window by the time it opened; ``state:open`` — the open ones.

A table is complete when each of its row numbers 1..N is accounted for exactly once (a
lost row plus a duplicate never looks complete: duplicates set no new bit). Every
state change and the window event it causes happen in one Lua script, so a window
event is emitted exactly once, also when the barrier restarts or an entry is redelivered.
Rows travel to the script as runs of consecutive numbers; a run none of whose bits is
set yet is set a byte at a time, any other run row by row, with the same counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions

from assay.contracts.errors import RecordError, TransientError
from assay.contracts.messages import MAX_ROW
from assay.streams import keys as channels
from assay.streams.client import Client
from assay.streams.keys import Keys

BUSY = ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "NOSCRIPT")
"""Replies of a server that cannot serve now: not the update's fault."""

_CHECK = """
local function check(h, expected)
  local tables, failed, missing, announced = {}, {}, {}, {}
  local complete, anyfailed = true, false
  for _, t in ipairs(expected) do
    local exp = tonumber(redis.call('HGET', h, t .. ':expected') or '-1')
    local seen = tonumber(redis.call('HGET', h, t .. ':seen') or '0')
    local f = tonumber(redis.call('HGET', h, t .. ':failed') or '0')
    tables[t] = seen
    failed[t] = f
    announced[t] = exp
    if f > 0 then anyfailed = true end
    if exp < 0 then
      complete = false
      missing[t] = 'no table_end yet (' .. seen .. ' rows accounted)'
    elseif seen ~= exp then
      complete = false
      missing[t] = seen .. ' of ' .. exp .. ' rows accounted'
    end
  end
  return complete, anyfailed, tables, failed, missing, announced
end

local function emit(out, division, window, status, tables, failed, missing, now, announced)
  local event = {type = 'window', division = division, window = window, status = status,
                 tables = tables, failed = failed, missing = missing, at = tonumber(now),
                 opened_at = tonumber(redis.call('HGET', KEYS[1], 'opened_at')),
                 expected = announced}
  return redis.call('XADD', out, '*', 'json', cjson.encode(event))
end

local function setbits(key, first, last)
  -- bits first..last, all clear: the whole bytes among them in one SETRANGE
  local whole, past = math.floor((first + 7) / 8), math.floor((last + 1) / 8)
  if whole >= past then
    for row = first, last do redis.call('SETBIT', key, row, 1) end
    return
  end
  for row = first, whole * 8 - 1 do redis.call('SETBIT', key, row, 1) end
  redis.call('SETRANGE', key, whole, string.rep('\\255', past - whole))
  for row = past * 8, last do redis.call('SETBIT', key, row, 1) end
end

local function finish(h, openset, window, anyfailed, now)
  local status = 'completed'
  if anyfailed then status = 'partial' end
  redis.call('HSET', h, 'status', status, 'completed_at', now)
  redis.call('ZREM', openset, window)
  return status
end
"""

_ACCOUNT = _CHECK + """
local h, bm, out, index, openset, fbm = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local restated_bm = KEYS[7]
local division, window, tbl, kind, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n = tonumber(ARGV[7])
local expected = {}
for i = 1, n do expected[i] = ARGV[7 + i] end
if redis.call('HSETNX', h, 'opened_at', now) == 1 then
  redis.call('HSET', h, 'status', 'open', 'failed_bits', '1')
  redis.call('ZADD', index, now, window)
  redis.call('ZADD', openset, now, window)
end
local changed, restated = false, 0
if kind == 'end' then
  if redis.call('HGET', h, tbl .. ':expected') ~= ARGV[6] then
    redis.call('HSET', h, tbl .. ':expected', ARGV[6])
    changed = true
  end
else
  -- kinds: applied, failed, and reapplied / refailed for rows re-driven from quarantine
  local applied = kind == 'applied' or kind == 'reapplied'
  local replay = kind == 'reapplied' or kind == 'refailed'
  local fresh, failed, duplicates = 0, 0, 0
  -- a window opened before failed rows had their own bits: a re-driven row was failed
  -- (only quarantined rows are re-driven), restated once by its bit in restated_bm
  local legacy = replay and applied and not redis.call('HGET', h, 'failed_bits')
  -- rows come as runs [first, last]: a run whose bits are all clear is fresh as a whole
  -- (whole bytes set at once); any other run goes row by row
  for i = 8 + n, #ARGV, 2 do
    local first, last = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    if last - first >= 8 and redis.call('BITCOUNT', bm, first, last, 'BIT') == 0 then
      local k = last - first + 1
      setbits(bm, first, last)
      fresh = fresh + k
      if not applied then
        failed = failed + k
        setbits(fbm, first, last)
      end
    else
      for row = first, last do
        if redis.call('SETBIT', bm, row, 1) == 0 then
          fresh = fresh + 1
          if not applied then
            failed = failed + 1
            redis.call('SETBIT', fbm, row, 1)
          end
        elseif applied and redis.call('SETBIT', fbm, row, 0) == 1 then
          restated = restated + 1
          if legacy then redis.call('SETBIT', restated_bm, row, 1) end
        elseif legacy and redis.call('SETBIT', restated_bm, row, 1) == 0
            and tonumber(redis.call('HGET', h, tbl .. ':failed') or '0') > restated then
          restated = restated + 1
        elseif not replay then
          duplicates = duplicates + 1
        end
      end
    end
  end
  if duplicates > 0 then redis.call('HINCRBY', h, 'duplicates', duplicates) end
  if fresh > 0 then
    redis.call('HINCRBY', h, tbl .. ':seen', fresh)
    changed = true
  end
  if failed > 0 then redis.call('HINCRBY', h, tbl .. ':failed', failed) end
  if restated > 0 then
    redis.call('HINCRBY', h, tbl .. ':failed', -restated)
    redis.call('HINCRBY', h, tbl .. ':restated', restated)
    changed = true
  end
end
local status = redis.call('HGET', h, 'status')
if not changed then return {status, ''} end
local complete, anyfailed, tables, failed, missing, announced = check(h, expected)
if not complete then
  if restated > 0 and (status == 'completed' or status == 'partial') then
    -- completed partial on timeout: it stays partial, but Gold must see the restated rows
    redis.call('HINCRBY', h, 'amendments', 1)
    emit(out, division, window, 'amended', tables, failed, missing, now, announced)
    return {status, 'amended'}
  end
  return {status, ''}
end
if status == 'open' or status == 'timed_out' then
  local new = finish(h, openset, window, anyfailed, now)
  emit(out, division, window, new, tables, failed, missing, now, announced)
  return {new, new}
end
redis.call('HINCRBY', h, 'amendments', 1)
local new = finish(h, openset, window, anyfailed, now)
emit(out, division, window, 'amended', tables, failed, missing, now, announced)
return {new, 'amended'}
"""

_TICK = _CHECK + """
local h, out, openset = KEYS[1], KEYS[2], KEYS[3]
local division, window, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local timeout, retries, interval, action = tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6]), ARGV[7]
local n = tonumber(ARGV[8])
local expected = {}
for i = 1, n do expected[i] = ARGV[8 + i] end
local status = redis.call('HGET', h, 'status')
if status ~= 'open' then
  redis.call('ZREM', openset, window)
  return {status or '', ''}
end
local opened = tonumber(redis.call('HGET', h, 'opened_at'))
local done = tonumber(redis.call('HGET', h, 'retries') or '0')
if now < opened + timeout + done * interval then return {status, ''} end
local complete, anyfailed, tables, failed, missing, announced = check(h, expected)
if complete then
  local new = finish(h, openset, window, anyfailed, ARGV[3])
  emit(out, division, window, new, tables, failed, missing, ARGV[3], announced)
  return {new, new}
end
if done < retries then
  redis.call('HSET', h, 'retries', done + 1)
  return {status, 'retry'}
end
redis.call('HSET', h, 'status', 'timed_out', 'timed_out_at', ARGV[3])
emit(out, division, window, 'timed_out', tables, failed, missing, ARGV[3], announced)
if action == 'complete_partial' then
  redis.call('HSET', h, 'status', 'partial', 'completed_at', ARGV[3])
  redis.call('ZREM', openset, window)
  emit(out, division, window, 'partial', tables, failed, missing, ARGV[3], announced)
  return {'partial', 'timed_out'}
end
redis.call('ZREM', openset, window)
return {'timed_out', 'timed_out'}
"""


_SUMMARY = """
local names = redis.call('ZRANGE', KEYS[1], 0, -1)
local prefix, keep_waiting, keep_done = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local counts, waiting, done = {}, {}, {}
for _, name in ipairs(names) do
  local status = redis.call('HGET', prefix .. name, 'status') or ''
  counts[status] = (counts[status] or 0) + 1
  if status == 'completed' or status == 'partial' then
    table.insert(done, name)
    if #done > keep_done then table.remove(done, 1) end
  else
    table.insert(waiting, name)
    if #waiting > keep_waiting then table.remove(waiting, 1) end
  end
end
local flat = {}
for status, n in pairs(counts) do
  table.insert(flat, status)
  table.insert(flat, n)
end
return {flat, waiting, done}
"""


@dataclass(frozen=True)
class WindowSummary:
    """A division's windows in brief: how many per status, and the names of the newest
    ones not yet complete and the newest complete ones (oldest first)."""

    counts: dict[str, int]
    waiting: list[str]
    done: list[str]


@dataclass(frozen=True)
class Transition:
    """What one state update did: the window's status now, and the event it emitted."""

    window: str
    status: str
    event: str
    """'' when nothing was emitted; else completed, partial, amended, timed_out or retry."""


@dataclass(frozen=True)
class WindowPolicy:
    """A division's expected tables and timeout policy, as the scripts need them."""

    tables: Sequence[str]
    timeout_s: float
    retries: int
    retry_interval_s: float
    on_timeout: str


class WindowStore:
    """Atomic window-state updates for the barrier."""

    def __init__(self, client: Client, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._account = client.register_script(_ACCOUNT)
        self._tick = client.register_script(_TICK)
        self._summary = client.register_script(_SUMMARY)

    def _hash(self, division: str, window: str) -> str:
        return self.keys.state(division, f"w:{window}")

    async def account(self, division: str, window: str, table: str, kind: str,
                      rows: Sequence[int], now: float, policy: WindowPolicy,
                      expected_rows: int = 0) -> Transition:
        """Record rows as ``applied`` or ``failed`` (``reapplied`` / ``refailed`` when
        re-driven from quarantine), or a table-end (``kind='end'``)."""
        keys = [self._hash(division, window),
                self.keys.state(division, f"rows:{window}:{table}"),
                self.keys.stream(division, channels.WINDOWS),
                self.keys.state(division, "windows"),
                self.keys.state(division, "open"),
                self.keys.state(division, f"failed:{window}:{table}"),
                self.keys.state(division, f"restated:{window}:{table}")]
        if rows and not 1 <= min(rows) <= max(rows) <= MAX_ROW:
            outside = next(r for r in rows if not 1 <= r <= MAX_ROW)
            raise RecordError(f"row number outside 1…{MAX_ROW}: {outside}")
        if not 0 <= expected_rows <= MAX_ROW:
            raise RecordError(f"row number outside 1…{MAX_ROW}: {expected_rows}")
        args: list[str | int | float] = [division, window, table, kind, repr(now),
                                         expected_rows, len(policy.tables), *policy.tables,
                                         *runs(rows)]
        try:
            status, event = await self._account(keys=keys, args=args)
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith(BUSY):
                raise TransientError(str(exc)) from exc
            raise RecordError(f"window state refused the update: {exc}") from exc
        return Transition(window, _text(status), _text(event))

    async def tick(self, division: str, now: float, policy: WindowPolicy) -> list[Transition]:
        """Re-check the open windows that are past their timeout."""
        openset = self.keys.state(division, "open")
        due: Any = await self.redis.zrangebyscore(openset, "-inf", now - policy.timeout_s)
        transitions = []
        for raw in due:
            window = _text(raw)
            status, event = await self._tick(
                keys=[self._hash(division, window), self.keys.stream(division, channels.WINDOWS),
                      openset],
                args=[division, window, repr(now), policy.timeout_s, policy.retries,
                      policy.retry_interval_s, policy.on_timeout, len(policy.tables),
                      *policy.tables])
            if event:
                transitions.append(Transition(window, _text(status), _text(event)))
        return transitions

    async def windows(self, division: str, since: float | None = None
                      ) -> list[dict[str, str]]:
        """Every window of a division (or those opened at ``since`` or later) with its
        state fields, oldest first."""
        index = self.keys.state(division, "windows")
        names: Any = await (self.redis.zrange(index, 0, -1) if since is None else
                            self.redis.zrangebyscore(index, since, "+inf"))
        return await self.states(division, [_text(raw) for raw in names])

    async def states(self, division: str, windows: Sequence[str]) -> list[dict[str, str]]:
        """The state fields of the named windows of a division."""
        pipe = self.redis.pipeline(transaction=False)
        for window in windows:
            pipe.hgetall(self._hash(division, window))
        states: list[Any] = await pipe.execute() if windows else []
        return [{"window": window, **{_text(k): _text(v) for k, v in fields.items()}}
                for window, fields in zip(windows, states, strict=True)]

    async def summary(self, division: str, waiting: int = 50, done: int = 8) -> WindowSummary:
        """Counts per status and the newest windows of each kind, in one script (the
        status page with 10,000 windows reads these, not every window's state)."""
        found: Any = await self._summary(
            keys=[self.keys.state(division, "windows")],
            args=[self.keys.state(division, "w:"), waiting, done])
        flat, names_waiting, names_done = found
        counts = {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return WindowSummary(counts, [_text(n) for n in names_waiting],
                             [_text(n) for n in names_done])


def runs(rows: Sequence[int]) -> list[int]:
    """Rows as runs of consecutive numbers, in their order: ``first, last`` per run."""
    if not rows:
        return []
    first, last = rows[0], rows[-1]
    if last - first + 1 == len(rows) and list(rows) == list(range(first, last + 1)):
        return [first, last]
    out: list[int] = []
    start = previous = first
    for row in rows[1:]:
        if row != previous + 1:
            out += (start, previous)
            start = row
        previous = row
    out += (start, previous)
    return out


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
