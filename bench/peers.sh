#!/usr/bin/env bash
# make bench-peers: runs ../shared/bench/peer_bench.sh with lowart as an extra target,
# beside nginx (bare reverse proxy) and the Portkey gateway on the same mock upstream.
# lowart runs with key auth, metrics, access logs and usage metering on. Like the nginx
# proxy it talks to the plain nginx mock: one lowart instance routes to its JSON
# endpoint, a second (same database, same key) to its SSE endpoint, and both are
# measured as one process tree (the idle one costs nothing).
#   bench/peers.sh [peer_bench options...]   e.g. --modes json --conns 32 --duration 10
# Install the peers first: ../shared/bench/setup_peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
peer=${PEER_BENCH:-$root/../shared/bench/peer_bench.sh}
[[ -x "$peer" || -f "$peer" ]] || { echo "peer benchmark not found at $peer" >&2; exit 2; }
work=$(mktemp -d /tmp/lowart-peers.XXXXXX)
port=${LOWART_PEER_PORT:-3290}
stream_port=$((port + 1))
master="sk-peers-master-$(openssl rand -hex 8)"

write_config() { # FILE PORT UPSTREAM
  cat > "$1" <<TOML
[server]
listen = "127.0.0.1:$2"
[storage]
sqlite_path = "$work/peers.db"
[[providers]]
name = "mock"
base_url = "$3"
api_key = "sk-upstream-peers"
[[models]]
name = "gpt-4o-mini"
[[models.deployments]]
provider = "mock"
model = "gpt-4o-mini"
TOML
}
write_config "$work/peers.toml" $port http://127.0.0.1:18080/v1
write_config "$work/peers-stream.toml" $stream_port http://127.0.0.1:18080/stream/v1

# Create the benchmark's virtual key in the database before the measured process starts.
LOWART_MASTER_KEY=$master build/lowart serve --config "$work/peers.toml" 2>/dev/null & pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
key=$(curl -fsS "http://127.0.0.1:$port/admin/keys" -H "Authorization: Bearer $master" -d '{"name":"peer-bench"}' |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
kill -TERM $pid; wait $pid || true

echo "# lowart: $(git -C "$root" rev-parse --short HEAD), log level ${LOWART_LOG:-info}, work dir $work"
# Both instances in one process tree; SIGTERM to the wrapper is passed on to both.
cat > "$work/both.sh" <<SH
export LOWART_MASTER_KEY=$master LOWART_LOG=${LOWART_LOG:-info}
$root/build/lowart serve --config $work/peers.toml & a=\$!
$root/build/lowart serve --config $work/peers-stream.toml & b=\$!
trap 'kill -TERM \$a \$b; wait' TERM INT
wait
SH
bash "$peer" --targets "${PEER_TARGETS:-direct,nginx,portkey}" \
  --extra "lowart=http://127.0.0.1:$port/v1/chat/completions" \
  --extra-stream-url "http://127.0.0.1:$stream_port/v1/chat/completions" \
  --extra-header "Authorization: Bearer $key" \
  --extra-cmd "bash $work/both.sh" \
  "$@"
