#!/usr/bin/env bash
# The test command behind `make test`.
#
# 1. The whole suite, with REDIS_URL/DATABASE_URL as the caller set them; when unset,
#    the suite starts embedded servers itself (the fresh-machine path).
# 2. When the caller set no URLs and a Redis and a PostgreSQL answer at the standard
#    ports (the oldest supported versions run there in CI), the integration tests run
#    a second time against them. Only this script looks at those ports; assay never does.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin

"$BIN/ruff" check .
"$BIN/mypy"

status=0
"$BIN/pytest" "$@" || status=$?
if [ "$status" -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi
[ "$status" -eq 0 ] || exit "$status"

if [ -z "${REDIS_URL:-}" ] && [ -z "${DATABASE_URL:-}" ] && [ -z "${ASSAY_SKIP_STANDARD_PORTS:-}" ]; then
  if "$BIN/python" - <<'PY'
import socket, sys
for port in (6379, 5432):
    s = socket.socket(); s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
  then
    echo "== integration tests again, against the servers at the standard ports =="
    REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
      "$BIN/pytest" -m "integration and not embedded and not once" "$@" || status=$?
    if [ "$status" -eq 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi
    exit "$status"
  fi
fi
