#!/usr/bin/env bash
# make bench-peers: runs ../shared/bench/peer_bench.sh with lowart as an extra target,
# beside nginx (bare reverse proxy) and the Portkey gateway on the same mock upstream.
# lowart runs with key auth, metrics, access logs and usage metering on, pointed at the
# body-aware njs mock (127.0.0.1:18083) so one route serves both JSON and SSE.
#   bench/peers.sh [peer_bench options...]   e.g. --modes json --conns 32 --duration 10
# Install the peers first: ../shared/bench/setup_peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
peer=${PEER_BENCH:-$root/../shared/bench/peer_bench.sh}
[[ -x "$peer" || -f "$peer" ]] || { echo "peer benchmark not found at $peer" >&2; exit 2; }
work=$(mktemp -d /tmp/lowart-peers.XXXXXX)
port=${LOWART_PEER_PORT:-3290}
master="sk-peers-master-$(openssl rand -hex 8)"

cat > "$work/peers.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[storage]
sqlite_path = "$work/peers.db"
[[providers]]
name = "mock"
base_url = "http://127.0.0.1:18083/v1"
api_key = "sk-upstream-peers"
[[models]]
name = "gpt-4o-mini"
[[models.deployments]]
provider = "mock"
model = "gpt-4o-mini"
TOML

# Create the benchmark's virtual key in the database before the measured process starts.
LOWART_MASTER_KEY=$master build/lowart serve --config "$work/peers.toml" 2>/dev/null & pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
key=$(curl -fsS "http://127.0.0.1:$port/admin/keys" -H "Authorization: Bearer $master" -d '{"name":"peer-bench"}' |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
kill -TERM $pid; wait $pid || true

echo "# lowart: $(git -C "$root" rev-parse --short HEAD), log level ${LOWART_LOG:-info}, work dir $work"
bash "$peer" --targets "${PEER_TARGETS:-direct,direct-auto,nginx,portkey}" \
  --extra "lowart=http://127.0.0.1:$port/v1/chat/completions" \
  --extra-header "Authorization: Bearer $key" \
  --extra-cmd "env LOWART_MASTER_KEY=$master LOWART_LOG=${LOWART_LOG:-info} $root/build/lowart serve --config $work/peers.toml" \
  "$@"
