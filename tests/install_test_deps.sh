#!/usr/bin/env bash
# What the browser and PostgreSQL tests need beyond Python, installed where this machine allows it (`make test`
# runs this, so a newcomer's run is the same as CI's). Each test that needs a missing piece skips with a reason.
set -uo pipefail
cd "$(dirname "$0")/.."
# The report and ranking-page tests open pages in Debian's headless Chromium.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "could not install chromium; browser tests will skip" >&2
fi
# The server-store tests run PostgreSQL + pgvector (PGlite) from npm.
if command -v npm >/dev/null && [ ! -d tests/pgvector_server/node_modules ]; then
    npm ci --silent --prefix tests/pgvector_server || echo "could not install the pgvector test server; its tests will skip" >&2
fi
exit 0
