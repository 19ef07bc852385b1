#!/usr/bin/env bash
# make bench-streams: lowart holds STREAMS (default 9,500) concurrent streaming responses,
# each a slow drip from lowart-mock (one SSE event every DRIP_MS, default 500, about 11 s
# a stream), and reports completed streams, RSS per stream and CPU per event.
# Each proxied stream costs lowart two descriptors (client and upstream socket); the
# process limit here (ulimit -n) caps how many can be open at once, see docs/operations.md.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${STREAMS:-9500}
drip=${DRIP_MS:-500}
mock_port=18290 gw_port=3290
source bench/lib.sh
bench_init streams
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
bench_mock $mock_port
bench_lowart "$work/streams.toml"
echo "== $n concurrent streams, one event every ${drip} ms"
result=$(node bench/streams_client.mjs $gw_port "$key" "$n" "$gw")
bench_record streams "$result"
