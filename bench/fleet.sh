#!/usr/bin/env bash
# make bench-fleet: what sharing limits through Redis costs on the hot path. One lowart
# with a key that has RPM and TPM limits (never reached), the same request through:
#   local-limits   lowart alone: limits checked in process (bench/run.sh's setting)
#   fleet-limits   lowart with [cluster] redis_url: one Lua script in Redis per request
#   *-nolimit      the same gateway, a key without limits (never asks Redis)
# Prints req/s, p50/p99 and CPU microseconds per request of lowart and of redis-server.
#   BENCH_DURATION=10 BENCH_CONNS="32 1" bench/fleet.sh
# Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
duration=${BENCH_DURATION:-10}
conns=${BENCH_CONNS:-"32 1"}
mock_port=18290 gw_port=3290 redis_port=16390
bench_init fleet
bench_mock $mock_port
redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --logfile "$work/redis.log" &
redis_pid=$!
pids+=($redis_pid)
for _ in $(seq 50); do redis-cli -p $redis_port ping >/dev/null 2>&1 && break; sleep 0.1; done

config() { # [cluster]?
  bench_config "$1"
  [[ $1 == fleet ]] && printf '[cluster]\nredis_url = "redis://127.0.0.1:%s"\n' $redis_port
  return 0
}
new_key() { # BODY -> prints the key
  curl -fsS "http://127.0.0.1:$gw_port/admin/keys" -H "Authorization: Bearer $key" -d "$1" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])'
}

body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the capital of France, and which river runs through it?"}],"max_tokens":64}'
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)

measure() { # NAME CONNS AUTH
  local name=$1 c=$2 auth=$3 t=2 out g0 g1 r0 r1
  ((c < t)) && t=$c
  BENCH_BODY=$body timeout $((duration + 20)) wrk -t$t -c$c -d2s -s bench/wrk_post.lua \
    -H "Authorization: Bearer $auth" "http://127.0.0.1:$gw_port/v1/chat/completions" >/dev/null 2>&1 || true
  g0=$(cpu_ticks $gw) r0=$(cpu_ticks $redis_pid)
  out=$(BENCH_BODY=$body timeout $((duration + 20)) wrk -t$t -c$c -d${duration}s -s bench/wrk_post.lua \
    -H "Authorization: Bearer $auth" "http://127.0.0.1:$gw_port/v1/chat/completions" | grep RESULT)
  g1=$(cpu_ticks $gw) r1=$(cpu_ticks $redis_pid)
  python3 - "$name" "$c" "$out" "$((g1 - g0))" "$((r1 - r0))" "$clk" <<'PY'
import json, sys
name, conns, line, g, r, clk = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
kv = dict(p.split("=") for p in line.split()[1:])
req, dur = int(kv["requests"]), int(kv["duration_us"]) / 1e6
row = {"target": name, "conns": conns, "rps": round(req / dur), "p50_ms": int(kv["p50_us"]) / 1000,
       "p99_ms": int(kv["p99_us"]) / 1000, "errors": int(kv["errors"]),
       "lowart_cpu_us": round(g / clk * 1e6 / max(req, 1), 1), "redis_cpu_us": round(r / clk * 1e6 / max(req, 1), 1)}
print("%-14s %5d %9d %8.3f %8.3f %6d %10.1f %10.1f" % (name, conns, row["rps"], row["p50_ms"], row["p99_ms"],
      row["errors"], row["lowart_cpu_us"], row["redis_cpu_us"]))
print("JSON " + json.dumps(row), file=sys.stderr)
PY
}

echo "# lowart fleet bench $(date -u +%FT%TZ) on $(nproc) cores, ${duration}s per row"
printf "%-14s %5s %9s %8s %8s %6s %10s %10s\n" target conns "req/s" "p50 ms" "p99 ms" errors "lowart us" "redis us"
limited='{"name":"limited","rpm":1000000000,"tpm":1000000000000}'
for mode in local fleet; do
  config $mode > "$work/$mode.toml"
  bench_lowart "$work/$mode.toml"
  lim=$(new_key "$limited")
  free=$(new_key '{"name":"free"}')
  for c in $conns; do
    measure $mode-limits "$c" "$lim" 2>>"$work/rows.jsonl"
    measure $mode-nolimit "$c" "$free" 2>>"$work/rows.jsonl"
  done
  kill $gw && wait $gw 2>/dev/null || true
done
bench_record fleet "$(sed -n 's/^JSON //p' "$work/rows.jsonl" | python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in sys.stdin]))')"
