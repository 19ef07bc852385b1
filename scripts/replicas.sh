#!/usr/bin/env bash
# Two lowart replicas on one machine sharing one Redis and one PostgreSQL, all on
# loopback: Redis on 16379, PostgreSQL on 15432 (a cluster of its own in .lowart/replicas),
# the mock upstream on 18090, replicas on 127.0.0.1:3001 and 127.0.0.1:3002. Prints the
# admin key and curls for both; Ctrl-C stops everything it started.
#   REPLICAS_POLICY=closed scripts/replicas.sh    # refuse limited requests while Redis is down
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh default lowart lowart-mock

state=$PWD/.lowart/replicas
mkdir -p "$state"
chmod 755 "$PWD/.lowart" "$state" # the postgres user must reach its data directory
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
redis_port=16379 pg_port=15432
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  redis-cli -p $redis_port shutdown nosave >/dev/null 2>&1 || true
  as_pg "$pg_bin/pg_ctl" -D "$state/pg" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
# PostgreSQL refuses to run as root: its commands run as the postgres user then.
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Redis: limits, breakers and change broadcasts (nothing saved to disk).
redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --logfile "$state/redis.log"

# PostgreSQL: keys, catalog, usage, jobs, agents — one database for both replicas.
if [[ ! -s "$state/pg/PG_VERSION" ]]; then
  mkdir -p "$state/pg"
  [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$state/pg"
  as_pg "$pg_bin/initdb" -D "$state/pg" -A trust -U lowart -E UTF8 >/dev/null
fi
[[ $(id -u) -eq 0 ]] && chown postgres:postgres "$state"
as_pg "$pg_bin/pg_ctl" -D "$state/pg" -l "$state/pg.log" -w \
  -o "-p $pg_port -k $state -c listen_addresses=127.0.0.1" start >/dev/null
as_pg "$pg_bin/createdb" -h 127.0.0.1 -p $pg_port -U lowart lowart 2>/dev/null || true

if [[ ! -s "$state/master.key" ]]; then
  (umask 077; echo "sk-lw-admin-$(openssl rand -hex 20)" > "$state/master.key")
fi
if [[ ! -s "$state/encryption.key" ]]; then
  (umask 077; openssl rand -base64 32 > "$state/encryption.key")
fi
export LOWART_MASTER_KEY=$(cat "$state/master.key")
export LOWART_ENCRYPTION_KEY=$(cat "$state/encryption.key")
export LOWART_DATABASE_URL="postgresql://lowart@127.0.0.1:$pg_port/lowart"
export LOWART_REDIS_URL="redis://127.0.0.1:$redis_port"

build/lowart-mock --listen 127.0.0.1:18090 > "$state/mock.log" 2>&1 &
pids+=($!)
config=$state/lowart.toml
sed -e "s/^listen = .*/listen = \"127.0.0.1:3001\"/" config/lowart.example.toml > "$config"
printf '\n[cluster]\non_redis_down = "%s"\n' "${REPLICAS_POLICY:-open}" >> "$config"
for n in 1 2; do
  # Each replica: its own port, replica id and usage spool file; the rest is shared.
  LOWART_LISTEN=127.0.0.1:300$n LOWART_REPLICA_ID=replica-$n LOWART_DB=$state/replica-$n.db \
    build/lowart serve --config "$config" 2> "$state/replica-$n.log" &
  pids+=($!)
done
for n in 1 2; do
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:300$n/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:300$n/readyz" >/dev/null || { echo "replica $n did not start:" >&2; cat "$state/replica-$n.log" >&2; exit 1; }
done

# A demo key made through replica 1, limited to 10 requests a minute for the whole fleet.
key=$(curl -fsS http://127.0.0.1:3001/admin/keys -H "Authorization: Bearer $LOWART_MASTER_KEY" \
    -H 'Content-Type: application/json' -d '{"name":"fleet-demo","rpm":10}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

cat >&2 <<INFO

  two replicas: http://127.0.0.1:3001 and http://127.0.0.1:3002
  shared: PostgreSQL $LOWART_DATABASE_URL, Redis $LOWART_REDIS_URL
  admin key: $LOWART_MASTER_KEY
  a key made through replica 1 (10 requests a minute for the fleet), used on replica 2:
    curl http://127.0.0.1:3002/v1/chat/completions -H "Authorization: Bearer $key" \\
      -H 'Content-Type: application/json' \\
      -d '{"model":"gpt-demo","messages":[{"role":"user","content":"Hello!"}]}'
  logs in $state; Ctrl-C stops everything.

INFO
wait "${pids[1]}"
