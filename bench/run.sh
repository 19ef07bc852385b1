#!/usr/bin/env bash
# make bench: wrk against the mock directly and through lowart (auth, metrics, usage
# metering on), JSON and SSE, chat and the Responses API, at 1 and 32 connections.
# Prints req/s, p50/p99 and the CPU microseconds lowart spent per request (utime+stime
# from /proc), then the microbenchmarks of the hot-path pieces.
#   BENCH_DURATION=10 BENCH_CONNS="32 1" BENCH_LOG=info bench/run.sh
# Run it on an otherwise idle machine: wrk, the mock and lowart share the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${BENCH_DURATION:-10}
conns=${BENCH_CONNS:-"32 1"}
mock_port=18190 gw_port=3190 closed_port=18199   # nothing listens on closed_port
work=$(mktemp -d /tmp/lowart-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/bench.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
[storage]
sqlite_path = "$work/bench.db"
[[providers]]
name = "mock"
base_url = "http://127.0.0.1:$mock_port/v1"
api_key = "sk-upstream-bench"
[[providers]]
name = "mock-responses"
base_url = "http://127.0.0.1:$mock_port/v1"
api_key = "sk-upstream-bench"
responses = true
[[providers]]
name = "down"
base_url = "http://127.0.0.1:$closed_port/v1"
[[models]]
name = "gpt-4o-mini"
[[models.deployments]]
provider = "mock"
model = "mock-model"
# The Responses API passed through to an upstream that speaks it.
[[models]]
name = "responses-pass"
[[models.deployments]]
provider = "mock-responses"
model = "mock-model"
# The failover case: the primary refuses connections, the backup is the mock.
[[models]]
name = "failover"
[[models.deployments]]
provider = "down"
model = "mock-model"
priority = 0
[[models.deployments]]
provider = "mock"
model = "mock-model"
priority = 1
# Breakers stay closed here so that every request pays the failed connect: this row
# measures the fallback itself (with a breaker open, the primary is skipped for free).
[breaker]
min_requests = 1000000000
TOML

build/lowart-mock --listen 127.0.0.1:$mock_port > "$work/mock.log" 2>&1 & pids+=($!)
master="sk-bench-master-$(openssl rand -hex 8)"
LOWART_MASTER_KEY=$master LOWART_LOG=${BENCH_LOG:-info} build/lowart serve --config "$work/bench.toml" \
  > /dev/null 2> "$work/lowart.log" & gw=$!; pids+=($gw)
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$gw_port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
key=$(curl -fsS "http://127.0.0.1:$gw_port/admin/keys" -H "Authorization: Bearer $master" \
  -d '{"name":"bench"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')

json_body='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a concise, helpful assistant. Answer in plain English, cite facts you are sure of, and keep answers under 120 words unless asked otherwise."},{"role":"user","content":"Hi! I am planning a weekend trip and need some quick facts."},{"role":"assistant","content":"Sure - tell me where you are going and what you would like to know."},{"role":"user","content":"What is the capital of France, which river runs through it, and roughly how many people live there? One short paragraph please."}],"temperature":0.7,"max_tokens":256}'
stream_body=${json_body%\}}',"stream":true,"stream_options":{"include_usage":true}}'
failover_body=${json_body/gpt-4o-mini/failover}
# The same conversation for POST /v1/responses (stored, as by default).
responses_body='{"model":"gpt-4o-mini","instructions":"You are a concise, helpful assistant. Answer in plain English, cite facts you are sure of, and keep answers under 120 words unless asked otherwise.","input":[{"role":"user","content":"Hi! I am planning a weekend trip and need some quick facts."},{"role":"assistant","content":"Sure - tell me where you are going and what you would like to know."},{"role":"user","content":"What is the capital of France, which river runs through it, and roughly how many people live there? One short paragraph please."}],"temperature":0.7,"max_output_tokens":256}'
responses_stream_body=${responses_body%\}}',"stream":true}'
responses_pass_body=${responses_body/gpt-4o-mini/responses-pass}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)

run() { # NAME URL BODY CONNS [auth]
  local name=$1 url=$2 body=$3 c=$4 auth=${5:-} t=2 before after out
  ((c < t)) && t=$c
  local hdr=()
  [[ -n "$auth" ]] && hdr=(-H "Authorization: Bearer $auth")
  BENCH_BODY=$body timeout $((duration + 20)) wrk -t$t -c$c -d2s -s bench/wrk_post.lua "${hdr[@]}" "$url" >/dev/null 2>&1 || true
  before=$(cpu_ticks $gw)
  out=$(BENCH_BODY=$body timeout $((duration + 20)) wrk -t$t -c$c -d${duration}s -s bench/wrk_post.lua "${hdr[@]}" "$url" | grep RESULT)
  after=$(cpu_ticks $gw)
  python3 - "$name" "$c" "$out" "$((after - before))" "$clk" <<'PY'
import sys
name, conns, line, ticks, clk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
kv = dict(p.split("=") for p in line.split()[1:])
req, dur = int(kv["requests"]), int(kv["duration_us"]) / 1e6
cpu = "" if name.startswith("direct") else "%8.1f" % (ticks / clk * 1e6 / max(req, 1))
print("%-16s %5s %10.0f %9.3f %9.3f %8s %s" % (name, conns, req / dur, int(kv["p50_us"]) / 1000,
      int(kv["p99_us"]) / 1000, kv["errors"], cpu))
PY
}

echo "# lowart bench $(date -u +%FT%TZ) on $(nproc) cores, ${duration}s per row, log level ${BENCH_LOG:-info}"
printf "%-16s %5s %10s %9s %9s %8s %s\n" target conns "req/s" "p50 ms" "p99 ms" errors "lowart CPU us/req"
for c in $conns; do
  run direct-json "http://127.0.0.1:$mock_port/v1/chat/completions" "$json_body" $c
  run lowart-json "http://127.0.0.1:$gw_port/v1/chat/completions" "$json_body" $c "$key"
  run direct-stream "http://127.0.0.1:$mock_port/v1/chat/completions" "$stream_body" $c
  run lowart-stream "http://127.0.0.1:$gw_port/v1/chat/completions" "$stream_body" $c "$key"
  run lowart-failover "http://127.0.0.1:$gw_port/v1/chat/completions" "$failover_body" $c "$key"
  run lowart-responses "http://127.0.0.1:$gw_port/v1/responses" "$responses_body" $c "$key"
  run lowart-resp-stream "http://127.0.0.1:$gw_port/v1/responses" "$responses_stream_body" $c "$key"
  run lowart-resp-pass "http://127.0.0.1:$gw_port/v1/responses" "$responses_pass_body" $c "$key"
done
echo "# lowart-failover: primary refuses connections, backup serves; compare its latency with lowart-json"
echo "# lowart-responses, -resp-stream: POST /v1/responses translated to chat (stored); -resp-pass: passed through"
echo
echo "# usage records written: $(sqlite3 "$work/bench.db" 'select count(*) from usage_records' 2>/dev/null || echo '?') (flushed every 25 ms)"
echo
if [[ -x build/lowart_micro_bench ]]; then
  build/lowart_micro_bench --benchmark_min_time=0.2
fi
