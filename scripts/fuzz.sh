#!/usr/bin/env bash
# Builds the libFuzzer targets (preset "fuzz": clang, ASan + UBSan) and runs each one for
# FUZZ_SECONDS (default 60; CI uses 10). Every run first replays tests/fuzz/corpus/<target>/
# — the checked-in seeds and the reproducers of crashes found before, which therefore stay
# regression tests. New corpus entries go to a scratch directory, not the repository; a
# crash saves its input as tests/fuzz/crashes/<target>-crash-* and fails the run.
# Prints "fuzz: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
targets=(sse translate responses jsonrpc config http)
if [[ ! -f build-fuzz/build.ninja ]]; then
  cmake --preset fuzz >/dev/null || { echo "fuzz: configure failed"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
fi
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_NOHASHDIR=1
ninja -C build-fuzz -j "${LOWART_JOBS:-2}" "${targets[@]/#/fuzz_}" || { echo "fuzz: 0 passed, 1 failed"; exit 1; }
mkdir -p tests/fuzz/crashes
passed=0 failed=0
for t in "${targets[@]}"; do
  scratch=$(mktemp -d)
  echo "== fuzz_$t for ${secs}s"
  if build-fuzz/fuzz_$t -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
       -artifact_prefix="tests/fuzz/crashes/$t-" "$scratch" "tests/fuzz/corpus/$t" >"$scratch.log" 2>&1; then
    passed=$((passed + 1))
    grep -E '^(Done|stat::number_of_executed_units)' "$scratch.log" | tail -1
  else
    failed=$((failed + 1))
    tail -40 "$scratch.log"
    echo "fuzz_$t FAILED: reproducer in tests/fuzz/crashes/ (move it into tests/fuzz/corpus/$t/ once fixed)"
  fi
  rm -rf "$scratch" "$scratch.log"
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
