#!/usr/bin/env bash
# make soak: a bounded run (SOAK_SECONDS, default 180) of mixed traffic with upstream
# faults (a failing primary with fallback, streams reset mid-way) and an MCP child that
# is SIGKILLed every 20 s. Reports RSS after warm-up (half the run) and at the end, descriptors
# and child processes; fails if RSS grew more than 10 % after warm-up, or descriptors
# or children leaked. A benchmark, not a CI test.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SOAK_SECONDS:-180}
mock_port=18390 gw_port=3390
source bench/lib.sh
bench_init soak
cat > "$work/soak.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
[storage]
sqlite_path = "$work/soak.db"
[mcp]
allowed_commands = ["node"]
[[providers]]
name = "mock"
base_url = "http://127.0.0.1:$mock_port/v1"
[[models]]
name = "soak"
[[models.deployments]]
provider = "mock"
model = "mock-model"
[[models]]
name = "flaky"
fallbacks = ["soak"]
[[models.deployments]]
provider = "mock"
model = "mock-fail-500"
[[models]]
name = "breaks"
[[models.deployments]]
provider = "mock"
model = "mock-reset"
TOML
bench_mock $mock_port
bench_lowart "$work/soak.toml"
ev=tests/e2e/node_modules/@modelcontextprotocol/server-everything/dist/index.js
curl -sf "http://127.0.0.1:$gw_port/admin/mcp/register" -H "authorization: Bearer $key" \
  -d "{\"name\":\"ev\",\"command\":\"node\",\"args\":[\"$PWD/$ev\",\"stdio\"]}" >/dev/null
sleep 2
echo "== soak for ${secs}s"
result=$(node bench/soak_client.mjs $gw_port "$key" "$secs" "$gw")
bench_record soak "$result"
node -e '
const r = JSON.parse(process.argv[1]);
const bad = [];
if (r.rss_growth_pct > 10) bad.push(`RSS grew ${r.rss_growth_pct} % after warm-up`);
if (r.fds_end > r.fds_warm + 20) bad.push(`descriptors ${r.fds_warm} -> ${r.fds_end}`);
if (r.children_end > 1) bad.push(`${r.children_end} child processes`);
if (bad.length) { console.error("soak: " + bad.join("; ")); process.exit(1); }
console.error("soak: no growth beyond bounds");' "$result"
