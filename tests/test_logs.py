"""Log lines: libraries that log through ``logging`` come out in the same format, one line."""

from __future__ import annotations

import json
import subprocess
import sys

EMIT = """
import logging
from assay import logs
logs.configure(json=True, level="DEBUG")
try:
    raise ConnectionResetError("server closed the connection")
except ConnectionResetError:
    logging.getLogger("asyncpg.pool").warning(
        "Failed to restore the pool connection floor (%s)", "postgresql://u:pw@db/x",
        exc_info=True)
logging.getLogger("uvicorn.error").info("chatter below warning")
"""


def test_a_library_warning_with_a_traceback_is_one_json_line() -> None:
    result = subprocess.run([sys.executable, "-c", EMIT], capture_output=True, text=True,
                            check=True, timeout=60)
    [line] = result.stderr.splitlines()
    event = json.loads(line)
    assert event["logger"] == "asyncpg.pool" and event["level"] == "warning"
    assert event["event"] == "Failed to restore the pool connection floor (postgresql://u:***@db/x)"
    assert event["exception"].startswith("Traceback") and "ConnectionResetError" in event[
        "exception"]
