#!/usr/bin/env bash
# bench/spike.sh: lowart's memory after load spikes (issue 23). A benchmark, not a test.
#   idle: CONNS (5,000) TCP connections that send nothing, until the idle timeout closes them.
#   slow: SLOW (200) clients stall while downloading the largest web-console file, while a
#         one-connection chat load runs for 10 s (its p50/p99 show what the stall costs others).
# Each phase prints lowart's RSS before, at its peak, once the connections are gone and 5 s
# later (memory given back on a housekeeping tick shows there). BIN picks the lowart binary.
# On loopback the kernel's socket buffers (a few hundred KiB each way) can take a whole
# console file, so lowart's write may complete at once and the idle timeout then closes the
# connection; complete / cut_by_gw in the slow row show which happened.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${CONNS:-5000}
slow=${SLOW:-200}
export BIN=${BIN:-build/lowart}
bin=$BIN
idle_ms=2000 # [server] idle_timeout_ms: short, so the idle phase ends quickly
hold_s=20    # how long the slow readers stall (the idle timeout may close them sooner)
mock_port=18490 gw_port=3490
source bench/lib.sh

# lowart and the client each hold one descriptor per connection.
need=$((conns + slow + 500))
if (( $(ulimit -n) < need )); then
  ulimit -n "$need" 2>/dev/null || { echo "spike: ulimit -n $(ulimit -Hn) is below the $need needed" >&2; exit 2; }
fi
[[ -f web/dist/index.html ]] || scripts/build_web.sh # the slow phase downloads the console

bench_init spike
bench_config spike "idle_timeout_ms = $idle_ms
ui_dir = \"$PWD/web/dist\"" > "$work/spike.toml"
bench_mock $mock_port
bench_lowart "$work/spike.toml"
master=$key
key=$(curl -sf "http://127.0.0.1:$gw_port/admin/keys" -H "authorization: Bearer $master" \
  -d '{"name":"spike","rpm":100000000,"tpm":1000000000000,"budget_tokens":1000000000000}' |
  sed -E 's/.*"key":"([^"]+)".*/\1/')

echo "spike: $(date -u +%FT%TZ) arch=$(uname -m) nproc=$(nproc) rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) bin=$bin conns=$conns slow=$slow idle_timeout_ms=$idle_ms"
echo "phase=warm $(node bench/spike_client.mjs warm $gw_port "$key" 2000)"
echo "phase=idle $(node bench/spike_client.mjs idle $gw_port $gw "$conns" $idle_ms)"

# The slow readers stall in the background; once they all have, the chat load runs.
ready=$work/slow.ready
node bench/spike_client.mjs slow $gw_port $gw "$slow" $hold_s "$ready" >"$work/slow.out" &
client=$!
pids+=($client)
until [[ -e $ready ]]; do
  kill -0 $client 2>/dev/null || { wait $client || true; echo "spike: the slow-reader client failed" >&2; exit 1; }
  sleep 0.1
done
export BENCH_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there, how are you today?"}],"max_tokens":32}'
load=$(wrk -t1 -c1 -d10s -s bench/wrk_post.lua -H "Authorization: Bearer $key" \
  "http://127.0.0.1:$gw_port/v1/chat/completions" | grep '^RESULT')
wait $client
# RESULT requests=… duration_us=… errors=… p50_us=… p99_us=… (bench/wrk_post.lua)
latency=$(awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  printf "load_requests=%d load_errors=%d p50_ms=%.3f p99_ms=%.3f", v["requests"], v["errors"], v["p50_us"] / 1000, v["p99_us"] / 1000 }' <<<"$load")
echo "phase=slow $(cat "$work/slow.out") $latency"
# Warnings beyond the expected one (no encryption key in a scratch set-up), e.g. refusals.
extra=$(grep -v LOWART_ENCRYPTION_KEY "$work/lowart.log" | tail -n 5 || true)
[[ -z $extra ]] || printf "lowart's log (last lines):\n%s\n" "$extra"
