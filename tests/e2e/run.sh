#!/usr/bin/env bash
# Runs lowart's end-to-end tests against build/lowart and build/lowart-mock
# (override with LOWART_BIN / LOWART_MOCK_BIN). Extra arguments go to `node --test`.
set -euo pipefail
cd "$(dirname "$0")"
# (Re)install when the lock file changed since the last install.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
set +e
if [[ "${1:-}" == "--only-files" ]]; then # run.sh --only-files a.test.mjs b.test.mjs ...
  shift
  node --test --test-concurrency=1 "$@"
  exit $?
fi
node --test --test-concurrency=1 "$@" *.test.mjs
status=$?
exit $status
