"""The window store's row accounting on real Redis against a row-by-row model.

The store sends rows as runs and sets a run whose bits are all clear at once; whatever
the runs, the counts must be those of accounting each row on its own, in order.
"""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.streams.keys import Keys
from assay.streams.windows import WindowPolicy, WindowStore, runs

POLICY = WindowPolicy(("a",), 3600.0, 0, 60.0, "hold")
KINDS = ("applied", "failed", "reapplied", "refailed")

spans = st.tuples(st.integers(1, 70), st.integers(0, 30)).map(
    lambda s: list(range(s[0], s[0] + s[1] + 1)))
row_lists = st.lists(st.one_of(spans, st.lists(st.integers(1, 100), max_size=6)),
                     min_size=1, max_size=4).map(lambda parts: [r for p in parts for r in p])
calls = st.lists(st.tuples(st.sampled_from(KINDS), row_lists), min_size=1, max_size=6)


def model(calls: list[tuple[str, list[int]]]) -> dict[str, int]:
    """Each row on its own: a new row counts as seen (and failed, if it failed); a failed
    row applied later is restated; any other repeat outside a replay is a duplicate."""
    seen: set[int] = set()
    failed_rows: set[int] = set()
    counts = {"seen": 0, "failed": 0, "restated": 0, "duplicates": 0}
    for kind, rows in calls:
        applied, replay = kind in ("applied", "reapplied"), kind.startswith("re")
        for row in rows:
            if row not in seen:
                seen.add(row)
                counts["seen"] += 1
                if not applied:
                    failed_rows.add(row)
                    counts["failed"] += 1
            elif applied and row in failed_rows:
                failed_rows.discard(row)
                counts["failed"] -= 1
                counts["restated"] += 1
            elif not replay:
                counts["duplicates"] += 1
    return counts


def test_runs_keep_every_row_in_order() -> None:
    assert runs([]) == []
    assert runs([4, 5, 6]) == [4, 6]
    assert runs([1, 2, 4, 4, 5, 3]) == [1, 2, 4, 4, 4, 5, 3, 3]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=calls)
async def test_accounting_matches_a_row_by_row_model(
        redis: aioredis.Redis, keys: Keys, calls: list[tuple[str, list[int]]]) -> None:
    store = WindowStore(redis, keys)
    window = uuid.uuid4().hex[:8]
    for kind, rows in calls:
        await store.account("east", window, "a", kind, rows, 1_000.0, POLICY)
    state = (await store.states("east", [window]))[0]
    assert {name: int(state.get(f"a:{name}", 0)) for name in ("seen", "failed", "restated")
            } | {"duplicates": int(state.get("duplicates", 0))} == model(calls)
    bits = await redis.get(keys.state("east", f"rows:{window}:a")) or b""
    on = {i for i in range(len(bits) * 8) if bits[i // 8] >> (7 - i % 8) & 1}
    assert on == {row for _, rows in calls for row in rows}
