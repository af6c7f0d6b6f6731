#!/usr/bin/env bash
# Runs every test of safepoint on a fresh Debian 12 machine:
#   1. installs the build and test dependencies (scripts/install-deps.sh),
#   2. fetches the C2SP/CCTV age test vectors (npm package cctv-age, pinned),
#   3. builds with -Werror and runs the whole suite (ctest),
#   4. builds again with AddressSanitizer + UndefinedBehaviorSanitizer and runs the suite again.
# Integration tests start their own Mosquitto on a free loopback port and stop it.
# Environment: SAFEPOINT_SKIP_SANITIZERS=1 skips step 4; JOBS sets build parallelism.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
jobs=${JOBS:-$(nproc)}

"$root/scripts/install-deps.sh"
vectors="$root/build/age-vectors"
[[ -d "$vectors" ]] || "$root/scripts/fetch-age-vectors.sh" "$vectors"
export SAFEPOINT_AGE_VECTORS="$vectors"
# Node-RED (pinned in tests/deploy) runs the example flow against the service.
nodered="$root/build/node-red"
[[ -f "$nodered/node_modules/node-red/red.js" ]] || "$root/tests/deploy/install-node-red.sh" "$nodered"
export SAFEPOINT_NODE_RED="$nodered"

run_suite() {  # <build dir> [cmake args...]
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -G Ninja -DSAFEPOINT_WERROR=ON "$@"
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure -j 2 --timeout 900
}

echo "== tests (RelWithDebInfo) =="
run_suite "$root/build"

if [[ "${SAFEPOINT_SKIP_SANITIZERS:-0}" != 1 ]]; then
  echo "== tests under AddressSanitizer + UndefinedBehaviorSanitizer =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DSAFEPOINT_SANITIZE=address,undefined
fi
echo "== all tests passed =="
