#!/usr/bin/env bash
# The benchmark: pgproxy against direct PostgreSQL, HAProxy (TCP mode) and PgBouncer (session
# mode), all started here on loopback and removed afterwards. Prints a Markdown table and writes
# JSON (default bench/results/latest.json).
#   bench/run.sh [--smoke] [--json FILE]
# --smoke: 3 s per cell, 1 and 16 clients, one repetition (CI runs this to keep the harness
# working; it does not judge speed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh >/dev/null
exec python3 bench/run.py --pgproxy "${BUILD_DIR:-build}/pgproxy" "$@"
