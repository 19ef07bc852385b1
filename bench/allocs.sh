#!/usr/bin/env bash
# bench/allocs.sh [BIN]: heap allocations per JSON chat request through lowart (auth, limits,
# metering on), counted by heaptrack. Two runs under heaptrack, one short and one long;
# allocations per request = (calls_long - calls_short) / (requests_long - requests_short),
# so start-up and shutdown cancel out. Exact counts, unlike CPU time: no run-to-run noise.
# ALLOCS_KEEP=FILE keeps the long run's heaptrack data (heaptrack_print -f FILE -n 40: where).
set -euo pipefail
cd "$(dirname "$0")/.."
export BIN=${1:-build/lowart}
command -v heaptrack >/dev/null || { echo "allocs: heaptrack is not installed (apt-get install heaptrack)" >&2; exit 2; }
mock_port=18590 gw_port=3590
source bench/lib.sh
bench_init allocs
bench_config allocs > "$work/allocs.toml"
bench_mock $mock_port
sleep 0.3
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there, how are you today?"}],"max_tokens":32}'
# ALLOCS_STREAM=1: the same request streamed (the mock sends its events one by one).
[[ -n ${ALLOCS_STREAM:-} ]] && body=${body%\}}',"stream":true}'

run() { # SECONDS -> prints "requests allocation_calls"
  local secs=$1 master=sk-allocs-$RANDOM$RANDOM hp gp key reqs calls
  rm -f "$work"/bench-allocs.db* "$work"/ht.*
  LOWART_MASTER_KEY=$master LOWART_LOG=warn heaptrack -o "$work/ht" "$BIN" serve --config "$work/allocs.toml" \
    >"$work/heaptrack.log" 2>&1 &
  hp=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$gw_port/readyz" >/dev/null && break; sleep 0.1; done
  key=$(curl -sf "http://127.0.0.1:$gw_port/admin/keys" -H "authorization: Bearer $master" \
    -d '{"name":"allocs","rpm":100000000,"tpm":1000000000000,"budget_tokens":1000000000000}' |
    sed -E 's/.*"key":"([^"]+)".*/\1/')
  export BENCH_BODY=$body
  reqs=$(wrk -t1 -c8 -d"${secs}s" -s bench/wrk_post.lua -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$gw_port/v1/chat/completions" | sed -nE 's/^RESULT requests=([0-9]+).*/\1/p')
  gp=$(pgrep -P $hp -f "serve --config $work/allocs.toml" || pgrep -f "serve --config $work/allocs.toml" | head -1)
  kill -TERM "$gp"
  wait $hp || true
  calls=$(heaptrack_print -f "$work"/ht.*zst 2>/dev/null | awk '/^calls to allocation functions:/ {print $5}')
  if [[ -n ${ALLOCS_KEEP:-} ]]; then cp "$work"/ht.*zst "$ALLOCS_KEEP"; fi # for heaptrack_print / heaptrack_gui
  echo "$reqs $calls"
}
read -r r1 c1 < <(run 1)
read -r r2 c2 < <(run 6)
echo "allocs: ${ALLOCS_STREAM:+stream }bin=$BIN rev=$(git rev-parse --short HEAD) short: $r1 requests $c1 calls; long: $r2 requests $c2 calls;" \
  "allocations per request: $(echo "($c2 - $c1) / ($r2 - $r1)" | bc -l | cut -c1-5)"
