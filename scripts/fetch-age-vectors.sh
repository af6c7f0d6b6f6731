#!/usr/bin/env bash
# Installs the pinned npm package cctv-age (tests/vectors/package-lock.json) and dumps its C2SP/CCTV
# age test vectors, one file per vector, into the directory given as $1 (created if missing).
# tests/core/age_test reads them from $SAFEPOINT_AGE_VECTORS, default <build dir>/age-vectors:
#   scripts/fetch-age-vectors.sh build/age-vectors
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 <output-dir>" >&2
  exit 2
fi
out=$(realpath -m -- "$1")
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here/tests/vectors"
npm ci --no-audit --no-fund --loglevel=error
rm -rf -- "$out.tmp"
node dump-vectors.mjs "$out.tmp"
rm -rf -- "$out"
mv -- "$out.tmp" "$out"
