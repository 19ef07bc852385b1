# Shared by the benchmark scripts (source it from the repository root):
#   bench_init NAME         scratch directory $work, removed with every started process on exit
#   bench_mock PORT         starts build/lowart-mock on 127.0.0.1:PORT
#   bench_lowart CONFIG     starts build/lowart with a fresh master key ($key; pid in $gw)
#                           and waits until /readyz answers (PORT from $gw_port)
#   bench_record NAME JSON  prints JSON and appends it, timestamped, to bench/results/NAME.txt
pids=()
bench_init() {
  work=$(mktemp -d "/tmp/lowart-$1.XXXXXX")
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT
}
bench_mock() {
  build/lowart-mock --listen "127.0.0.1:$1" >"$work/mock.log" 2>&1 &
  pids+=($!)
}
# bench_config NAME [SERVER_LINES]: a config routing gpt-4o-mini to the mock on $mock_port,
# listening on $gw_port, its database in $work; SERVER_LINES are added to [server].
bench_config() {
  cat <<TOML
[server]
listen = "127.0.0.1:$gw_port"
${2:-}
[storage]
sqlite_path = "$work/bench-$1.db"
[[providers]]
name = "mock"
base_url = "http://127.0.0.1:$mock_port/v1"
[[models]]
name = "gpt-4o-mini"
[[models.deployments]]
provider = "mock"
model = "mock-model"
TOML
}
# bench_lowart CONFIG: starts ${BIN:-build/lowart} on it (the master key in $key).
bench_lowart() {
  key=sk-bench-$RANDOM$RANDOM
  LOWART_MASTER_KEY=$key LOWART_LOG=warn "${BIN:-build/lowart}" serve --config "$1" >"$work/lowart.log" 2>&1 &
  gw=$!
  pids+=($gw)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$gw_port/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "lowart did not become ready:" >&2
  cat "$work/lowart.log" >&2
  return 1
}
bench_record() {
  echo "$2"
  mkdir -p bench/results
  echo "$(date -u +%FT%TZ) $1 $2" >> "bench/results/$1.txt"
}
