#!/usr/bin/env bash
# Installs the pinned Node-RED (tests/deploy/package-lock.json) into the directory given as $1
# (created if missing) for tests/service/nodered_test.cc, which finds it through
# $SAFEPOINT_NODE_RED (default <build dir>/node-red):
#   tests/deploy/install-node-red.sh build/node-red
# Kept out of the source tree so the checkout holds no node_modules.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 <output-dir>" >&2
  exit 2
fi
out=$(realpath -m -- "$1")
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
mkdir -p -- "$out"
cp -- "$here/package.json" "$here/package-lock.json" "$here/.npmrc" "$out/"
cd -- "$out"
npm ci --no-audit --no-fund --loglevel=error
test -f node_modules/node-red/red.js
