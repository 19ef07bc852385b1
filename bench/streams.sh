#!/usr/bin/env bash
# make bench-streams: lowart holds STREAMS (default 9,500) concurrent streaming responses,
# each a slow drip from lowart-mock (one SSE event every DRIP_MS, default 500, about 11 s
# a stream), and reports completed streams, RSS per stream and CPU per event.
# Each proxied stream costs lowart two descriptors (client and upstream socket); the
# process limit here (ulimit -n) caps how many can be open at once, see the README.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${STREAMS:-9500}
drip=${DRIP_MS:-500}
mock_port=18290 gw_port=3290
work=$(mktemp -d /tmp/lowart-streams.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
limit=$(ulimit -n)
if (( 2 * n + 200 > limit )); then
  echo "streams: ulimit -n is $limit; $n streams need about $((2 * n + 200)) descriptors in lowart" >&2
  exit 2
fi
cat > "$work/streams.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
io_threads = 2
max_connections = $((n + 100))
idle_timeout_ms = 60000
[storage]
sqlite_path = "$work/streams.db"
[[providers]]
name = "mock"
base_url = "http://127.0.0.1:$mock_port/v1"
first_byte_timeout_ms = 60000
idle_timeout_ms = 60000
[[models]]
name = "drip"
[[models.deployments]]
provider = "mock"
model = "mock-slow-$drip"
TOML
build/lowart-mock --listen 127.0.0.1:$mock_port >"$work/mock.log" 2>&1 &
pids+=($!)
key=sk-streams-$RANDOM$RANDOM
LOWART_MASTER_KEY=$key LOWART_LOG=warn build/lowart serve --config "$work/streams.toml" >"$work/lowart.log" 2>&1 &
gw=$!
pids+=($gw)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$gw_port/readyz" >/dev/null && break; sleep 0.1; done
echo "== $n concurrent streams, one event every ${drip} ms"
result=$(node bench/streams_client.mjs $gw_port "$key" "$n" "$gw")
echo "$result"
mkdir -p bench/results
echo "$(date -u +%FT%TZ) streams $result" >> "bench/results/streams.txt"
