#!/usr/bin/env bash
# Builds lowart and runs it on 127.0.0.1:3000 with an embedded SQLite file and a demo
# route ("gpt-demo") to the bundled mock upstream, so the first request needs no vendor
# key. Prints the admin key and a working curl. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh default lowart lowart-mock
scripts/build_web.sh # the web console, served at /ui

state=.lowart
mkdir -p "$state"
chmod 700 "$state"
if [[ ! -s "$state/master.key" ]]; then
  (umask 077; echo "sk-lw-admin-$(openssl rand -hex 20)" > "$state/master.key")
fi
export LOWART_MASTER_KEY=$(cat "$state/master.key")
export LOWART_DB=${LOWART_DB:-$state/lowart.db}
listen=${LOWART_LISTEN:-127.0.0.1:3000}
export LOWART_LISTEN=$listen

build/lowart-mock --listen 127.0.0.1:18090 > "$state/mock.log" 2>&1 &
mock_pid=$!
trap 'kill $mock_pid 2>/dev/null || true' EXIT

build/lowart serve --config "${LOWART_CONFIG:-config/lowart.example.toml}" &
gw_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://$listen/readyz" >/dev/null 2>&1 && break
  kill -0 $gw_pid 2>/dev/null || { echo "lowart did not start (see the log above)" >&2; exit 1; }
  sleep 0.1
done

# A demo user key, created once through the admin API and kept (0600) for later runs.
demo_key=""
if [[ -s "$state/demo.key" ]]; then
  demo_key=$(cat "$state/demo.key")
  curl -fsS "http://$listen/v1/models" -H "Authorization: Bearer $demo_key" >/dev/null 2>&1 || demo_key=""
fi
if [[ -z "$demo_key" ]]; then
  demo_key=$(curl -fsS "http://$listen/admin/keys" -H "Authorization: Bearer $LOWART_MASTER_KEY" \
      -H 'Content-Type: application/json' -d '{"name":"demo"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  (umask 077; echo "$demo_key" > "$state/demo.key")
fi

cat >&2 <<INFO

  lowart is running on http://$listen  (database: $LOWART_DB)
  web console: http://$listen/ui/  (log in with the admin key below)
  admin key (LOWART_MASTER_KEY, kept in $state/master.key):
    $LOWART_MASTER_KEY
  try it (demo key, model "gpt-demo" -> bundled mock upstream):
    curl http://$listen/v1/chat/completions -H "Authorization: Bearer $demo_key" \\
      -H 'Content-Type: application/json' \\
      -d '{"model":"gpt-demo","messages":[{"role":"user","content":"Hello!"}]}'
  Ctrl-C stops it.

INFO
wait $gw_pid
