"""The garbage collector of a consumer process, set for batches.

A batch allocates tens of thousands of containers (a message, a payload dict, a row per
record) that all live until the batch is written and then die together by reference
counting. With CPython's default first threshold (700 allocations) the collector runs dozens
of times per batch, finds nothing to free, and promotes the batch's live objects to older
generations, where they are traversed again. ``settle`` moves what start-up left (modules,
the config, the pools) out of the collector's sight and lets a generation-0 collection wait
for ``gen0`` allocations: most batches then end before one runs. Cycles are still collected,
only later; a consumer makes few.
"""

from __future__ import annotations

import gc

GEN0 = 50_000
"""Container allocations between generation-0 collections (CPython's default: 700)."""


def settle(gen0: int = GEN0) -> None:
    """Freeze what exists now and raise the first threshold; call once, when start-up is done."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
