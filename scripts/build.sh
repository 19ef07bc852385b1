#!/usr/bin/env bash
# Configures and builds one preset: scripts/build.sh [default|asan|tsan] [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-default}
shift || true
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
# Paths below the checkout are hashed relative to it, so a fresh clone elsewhere (CI)
# reuses the cache of an earlier build.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
export CCACHE_NOHASHDIR=1
case "$preset" in
  default) dir=build ;;
  asan) dir=build-asan ;;
  tsan) dir=build-tsan ;;
  *) echo "build: unknown preset '$preset' (default, asan, tsan)" >&2; exit 2 ;;
esac
if [[ ! -f "$dir/build.ninja" ]]; then
  cmake --preset "$preset" >/dev/null
fi
# Two cores: two compile jobs, never more (benchmarks and tests share the machine).
ninja -C "$dir" -j "${LOWART_JOBS:-2}" "$@"
