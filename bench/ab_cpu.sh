#!/usr/bin/env bash
# bench/ab_cpu.sh OLD_BIN NEW_BIN: A/B of lowart's CPU per JSON request (auth, limits, metering on), same mock, alternated.
# LOWART_LOG=info measures with the access log on (as bench/peers.sh runs); default warn.
set -euo pipefail
A=${1:?old lowart binary} B=${2:?new lowart binary}
cd "$(dirname "$0")/.."
mock_port=18390 gw_port=3390
source bench/lib.sh # bench_config
MOCK=${LOWART_MOCK_BIN:-build/lowart-mock}
work=$(mktemp -d)
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there, how are you today?"}],"max_tokens":32}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
LUA
$MOCK --listen 127.0.0.1:18390 > "$work/mock.log" 2>&1 & MP=$!
trap 'kill $MP 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.5
run() { # BIN LABEL
  local bin=$1 label=$2 dir; dir=$(mktemp -d)
  (work=$dir; bench_config ab) > $dir/b.toml
  LOWART_MASTER_KEY=sk-master-ab LOWART_LOG=${LOWART_LOG:-warn} $bin serve --config $dir/b.toml > $dir/log 2>&1 & local GP=$!
  for i in $(seq 50); do curl -s -o /dev/null 127.0.0.1:3390/healthz && break; sleep 0.1; done
  KEY=$(curl -s 127.0.0.1:3390/admin/keys -H 'authorization: Bearer sk-master-ab' -d '{"name":"ab","rpm":100000000,"tpm":1000000000000,"budget_tokens":1000000000000}' | sed -E 's/.*"key":"([^"]+)".*/\1/')
  KEY=$KEY wrk -t1 -c32 -d2s -s "$work/post.lua" http://127.0.0.1:3390/v1/chat/completions > /dev/null
  local t0; t0=$(awk '{print $14+$15}' /proc/$GP/stat)
  local out; out=$(KEY=$KEY wrk -t1 -c32 -d8s -s "$work/post.lua" http://127.0.0.1:3390/v1/chat/completions)
  local t1; t1=$(awk '{print $14+$15}' /proc/$GP/stat)
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
  local tck; tck=$(getconf CLK_TCK)
  echo "$label rps=$rps reqs=$reqs non2xx=${non2xx:-0} cpu_us_per_req=$(echo "($t1-$t0)*1000000/$tck/$reqs" | bc -l | cut -c1-5)"
  kill $GP; wait $GP 2>/dev/null || true; rm -rf $dir
}
for i in 1 2 3; do
  run "$A" A
  run "$B" B
done
