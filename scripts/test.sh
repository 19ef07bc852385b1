#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test:
#   1. unit tests (GoogleTest via ctest) on the release build
#   2. the same unit tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   3. end-to-end tests: the real build/lowart and build/lowart-mock on loopback,
#      driven by the official `openai` npm client, curl and promtool, and the web
#      console (built first by scripts/build_web.sh) in Debian's chromium; two replicas
#      sharing real redis-server and PostgreSQL servers (started by the tests on
#      loopback); then the storage-heavy suites again with PostgreSQL as the database, and
#      the concurrency-heavy ones again with 4 I/O threads and 2 actor threads
#   4. each libFuzzer target for FUZZ_SECONDS (10) on its seeds and regression inputs
# Ends with one line "total: N passed, M failed". Exit code 0 only if all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/setup.sh || exit 1

passed=0 failed=0 status=0
log=$(mktemp -d)

count_ctest() { # LOG -> adds to passed/failed from ctest's summary line
  local line total fails
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$1" | tail -1)
  fails=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
  if [[ -n "$line" ]]; then
    passed=$((passed + total - fails)); failed=$((failed + fails))
  else
    failed=$((failed + 1))
  fi
}

echo "== build (release)"
scripts/build.sh default || { echo "build failed"; echo "total: $passed passed, 1 failed"; exit 1; }

echo "== unit tests (release)"
(cd build && ctest --output-on-failure -L unit --timeout 120) 2>&1 | tee "$log/unit.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
count_ctest "$log/unit.txt"

echo "== unit tests (ASan + UBSan)"
if scripts/build.sh asan lowart_unit_tests; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$root/tests/sanitizer-suppressions.txt
  (cd build-asan && ctest --output-on-failure -L unit --timeout 300) 2>&1 | tee "$log/asan.txt"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
  count_ctest "$log/asan.txt"
  unset ASAN_OPTIONS UBSAN_OPTIONS
else
  echo "asan build failed"; status=1; failed=$((failed + 1))
fi

echo "== web console build"
scripts/build_web.sh || { echo "web console build failed"; status=1; failed=$((failed + 1)); }

count_e2e() { # LOG -> adds node --test's summary to passed/failed
  local p f
  p=$(grep -E '^# pass [0-9]+' "$1" | tail -1 | awk '{print $3}')
  f=$(grep -E '^# fail [0-9]+' "$1" | tail -1 | awk '{print $3}')
  if [[ -n "$p" ]]; then
    passed=$((passed + p)); failed=$((failed + ${f:-0}))
  else
    failed=$((failed + 1))
  fi
}

echo "== end-to-end tests (SQLite; fleet.test.mjs runs two replicas on real redis-server + postgres)"
LOWART_BIN=$root/build/lowart LOWART_MOCK_BIN=$root/build/lowart-mock \
  tests/e2e/run.sh 2>&1 | tee "$log/e2e.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
count_e2e "$log/e2e.txt"

# The storage-heavy suites once more with every gateway on PostgreSQL (a real server per
# file, a fresh database per gateway): the same migrations and tests prove both backends.
echo "== end-to-end tests on PostgreSQL"
LOWART_E2E_POSTGRES=1 LOWART_BIN=$root/build/lowart LOWART_MOCK_BIN=$root/build/lowart-mock \
  tests/e2e/run.sh --only-files admin.test.mjs rbac.test.mjs limits.test.mjs metering.test.mjs anthropic.test.mjs \
  mcp.test.mjs a2a.test.mjs jobs.test.mjs ops.test.mjs durability.test.mjs scripts.test.mjs logs.test.mjs 2>&1 | tee "$log/e2e-pg.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
count_e2e "$log/e2e-pg.txt"

# The suites where threads meet (limiter shards, per-thread pools, shared breakers, fleet
# batches) once more with 4 I/O threads and 2 actor threads: with one of each, "exactly N
# under concurrency" would be true by construction.
echo "== end-to-end tests with 4 I/O threads and 2 actor threads"
LOWART_IO_THREADS=4 LOWART_ACTOR_THREADS=2 LOWART_BIN=$root/build/lowart LOWART_MOCK_BIN=$root/build/lowart-mock \
  tests/e2e/run.sh --only-files limits.test.mjs resilience.test.mjs proxy.test.mjs fleet.test.mjs 2>&1 | tee "$log/e2e-threads.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
count_e2e "$log/e2e-threads.txt"

echo "== fuzz (each target briefly; make fuzz runs longer)"
FUZZ_SECONDS=${FUZZ_SECONDS:-10} scripts/fuzz.sh 2>&1 | tee "$log/fuzz.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fuzz_line=$(grep -E '^fuzz: [0-9]+ passed' "$log/fuzz.txt" | tail -1)
if [[ -n "$fuzz_line" ]]; then
  passed=$((passed + $(awk '{print $2}' <<<"$fuzz_line"))); failed=$((failed + $(awk '{print $4}' <<<"$fuzz_line")))
else
  failed=$((failed + 1))
fi

rm -rf "$log"
((failed > 0)) && status=1
echo "total: $passed passed, $failed failed"
exit $status
