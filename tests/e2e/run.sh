#!/usr/bin/env bash
# Runs lowart's end-to-end tests against build/lowart and build/lowart-mock
# (override with LOWART_BIN / LOWART_MOCK_BIN). Extra arguments go to `node --test`.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
set +e
node --test --test-concurrency=1 "$@" *.test.mjs
status=$?
exit $status
