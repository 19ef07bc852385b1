#!/usr/bin/env bash
# Installs everything lowart needs to build, run and test on Debian 12 (bookworm).
# Idempotent and quick when nothing is missing. Needs root (apt-get).
#   scripts/setup.sh          build + run + test dependencies
#   scripts/setup.sh --bench  also the load tools (wrk, nginx for the peer benchmark, heaptrack)
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libcaf-dev libboost1.81-dev libsimdjson-dev libsqlite3-dev libssl-dev
  prometheus-cpp-dev libtomlplusplus-dev libcli11-dev liblua5.4-dev libpcre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev
  prometheus sqlite3 curl openssl ca-certificates procps
  iproute2   # ss: the e2e tests read a socket's send buffer from the kernel
  libpq-dev libhiredis-dev   # PostgreSQL storage and Redis shared limits (scale-out)
  postgresql redis-server    # real servers on loopback for the scale-out tests
  chromium   # the web console's browser tests (playwright-core drives it headless)
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(wrk nginx-light libnginx-mod-http-js heaptrack)
fi
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The nginx package may start a system service on port 80; lowart does not need it.
  if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null; then
    systemctl stop nginx 2>/dev/null || true
  fi
fi

# Tokenizer ranks (o200k_base, cl100k_base) come from the js-tiktoken npm package,
# extracted once into .deps/tokenizers, where build/lowart looks for them.
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ ! -s "$root/.deps/tokenizers/o200k_base.tiktoken" || ! -s "$root/.deps/tokenizers/cl100k_base.tiktoken" ]]; then
  echo "setup: fetching tokenizer ranks (npm js-tiktoken)"
  npm install --silent --no-save --no-audit --no-fund --prefix "$root/.deps/npm" js-tiktoken@1.0.21 >/dev/null
  node "$root/scripts/extract_ranks.mjs" "$root/.deps/npm/node_modules/js-tiktoken" "$root/.deps/tokenizers" \
    o200k_base cl100k_base
fi
