#!/usr/bin/env bash
# Installs everything lowart needs to build, run and test on Debian 12 (bookworm).
# Idempotent and quick when nothing is missing. Needs root (apt-get).
#   scripts/setup.sh          build + run + test dependencies
#   scripts/setup.sh --bench  also the load tools (wrk, nginx for the peer benchmark)
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libcaf-dev libboost1.81-dev libsimdjson-dev libsqlite3-dev libssl-dev
  prometheus-cpp-dev libtomlplusplus-dev libcli11-dev liblua5.4-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  prometheus sqlite3 curl openssl ca-certificates procps
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(wrk nginx-light libnginx-mod-http-js)
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
