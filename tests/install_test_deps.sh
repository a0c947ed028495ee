#!/usr/bin/env bash
# What the browser and PostgreSQL tests need beyond Python, installed where this machine allows it (`make test`
# runs this, so a newcomer's run is the same as CI's). Locally, a test whose piece is missing skips with a reason;
# in CI (CI=true) a piece that cannot be installed fails here, and tests/conftest.py's `require` fails such a test
# instead of skipping it, so a broken install can never pass as a green run.
set -uo pipefail
cd "$(dirname "$0")/.."
missing=()
# The report and ranking-page tests open pages in Debian's headless Chromium.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "could not install chromium; browser tests will skip" >&2
fi
command -v chromium >/dev/null || missing+=("chromium (Debian package)")
# The server-store tests run PostgreSQL + pgvector (PGlite) from npm.
if command -v npm >/dev/null && [ ! -d tests/pgvector_server/node_modules ]; then
    npm ci --silent --prefix tests/pgvector_server || echo "could not install the pgvector test server; its tests will skip" >&2
fi
[ -d tests/pgvector_server/node_modules ] || missing+=("the pgvector test server (npm ci --prefix tests/pgvector_server)")
if [ "${CI:-}" = true ] && [ ${#missing[@]} -gt 0 ]; then
    printf 'install_test_deps.sh: CI needs %s\n' "${missing[@]}" >&2
    exit 1
fi
exit 0
