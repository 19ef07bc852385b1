#!/usr/bin/env bash
# Builds the web console (web/, Vue 3 + Vite) into web/dist, which lowart serves at /ui.
# Quick when nothing changed: installs npm packages only when the lock file is newer than
# the last install, and rebuilds only when a source file is newer than the last build.
set -euo pipefail
cd "$(dirname "$0")/../web"
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "web: installing npm packages"
  npm ci --no-audit --no-fund --silent
fi
stamp=dist/index.html
if [[ ! -f $stamp ]] || [[ -n $(find src index.html vite.config.ts package.json -newer "$stamp" -print -quit 2>/dev/null) ]]; then
  echo "web: building the console"
  npm run build --silent
fi
