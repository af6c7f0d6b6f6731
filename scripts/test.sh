#!/usr/bin/env bash
# Runs every test of safepoint on a fresh Debian 12 machine:
#   1. installs the build and test dependencies (scripts/install-deps.sh),
#   2. fetches the C2SP/CCTV age test vectors (npm package cctv-age, pinned),
#   3. builds with -Werror and runs the whole suite (ctest),
#   4. builds again with AddressSanitizer + UndefinedBehaviorSanitizer and runs the suite again,
#   5. builds with ThreadSanitizer and runs the suite again,
#   6. builds the libFuzzer targets with clang-14 and runs each for FUZZ_SECONDS (default 20).
# Integration tests start their own Mosquitto on a free loopback port and stop it.
# Environment: SAFEPOINT_SKIP_SANITIZERS=1 skips steps 4 and 5, SAFEPOINT_SKIP_FUZZERS=1 step 6;
# JOBS sets build parallelism. The long property tests are bounded by time per stage: the soak by
# SAFEPOINT_SOAK_SECONDS (200 plain, 120 under a sanitizer), the round trip by
# SAFEPOINT_ROUNDTRIP_SECONDS (100 plain, 60 under a sanitizer), the no-crash test by
# SAFEPOINT_NOCRASH_SECONDS (75, 45 under a sanitizer); each still asserts a minimum it must reach.
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

# Fails when ctest reported a test as skipped or disabled that tests/ci-skips.txt does not name
# with a reason. $1: a file holding ctest's output.
check_skips() {
  local log=$1 allowed name status=0
  allowed=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$root/tests/ci-skips.txt" |
    awk 'NF >= 2 { print $1 }')
  while IFS= read -r name; do
    if ! grep -qxF -e "$name" <<<"$allowed"; then
      echo "error: $name did not run, and tests/ci-skips.txt does not say why CI cannot run it" >&2
      status=1
    fi
  done < <(sed -n '/^The following tests did not run:$/,/^[^[:space:]]/ s/^[[:space:]]*[0-9][0-9]* - \(.*\) (\(Skipped\|Disabled\))$/\1/p' "$log")
  return $status
}

run_suite() {  # <build dir> [cmake args...]; $ctest_exclude: a ctest -E regex, or empty
  local dir=$1 exclude=()
  shift
  [[ -n "${ctest_exclude:-}" ]] && exclude=(-E "$ctest_exclude")
  cmake -S "$root" -B "$dir" -G Ninja -DSAFEPOINT_WERROR=ON "$@"
  cmake --build "$dir" -j "$jobs"
  echo "-- built $dir at ${SECONDS}s"
  ctest --test-dir "$dir" --output-on-failure -j 2 --timeout 900 "${exclude[@]}" 2>&1 |
    tee "$dir/ctest-output.log"
  check_skips "$dir/ctest-output.log"
  echo "-- tested $dir at ${SECONDS}s"
}

# The round-trip property test draws a different block of seeds in each stage, so one CI run
# covers more trees (tests/service/roundtrip_test.cc; a failure prints the seed to repeat).
echo "== tests (RelWithDebInfo) =="
SAFEPOINT_ROUNDTRIP_SEED=${SAFEPOINT_ROUNDTRIP_SEED:-1} \
  SAFEPOINT_SOAK_SECONDS=${SAFEPOINT_SOAK_SECONDS:-200} run_suite "$root/build"

if [[ "${SAFEPOINT_SKIP_SANITIZERS:-0}" != 1 ]]; then
  echo "== tests under AddressSanitizer + UndefinedBehaviorSanitizer =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    SAFEPOINT_SOAK_SECONDS=${SAFEPOINT_SOAK_SECONDS:-120} SAFEPOINT_ROUNDTRIP_SEED=100001 \
    SAFEPOINT_ROUNDTRIP_SECONDS=${SAFEPOINT_ROUNDTRIP_SECONDS:-60} \
    SAFEPOINT_NOCRASH_SECONDS=${SAFEPOINT_NOCRASH_SECONDS:-45} \
    run_suite "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DSAFEPOINT_SANITIZE=address,undefined
  echo "== tests under ThreadSanitizer =="
  single_threaded_tests='commands_test;config_test;daemon_test;diff_test;discovery_test;glob_test;lifecycle_test;manifest_test;mirror_test;restart_test;sources_test'
  # The one suppression covers Paho's C++ library, which is not built with TSan (tests/tsan.supp).
  # ThreadSanitizer looks for races, so it skips the four exhaustive rollback crash-point loops and
  # the kill -9 loop of the rollback CLI: each repeats one single-threaded rollback hundreds of
  # times (the backup threads they start are covered by the store's crash loops, which run here),
  # and both run in the two stages above. For the same reason it does not build the test files
  # that start no thread (the pure parsers, the lifecycle, the controller with its fake worker).
  ctest_exclude='^Devices/RollbackCrashTest\.(CrashAtEveryStep|DiskFullAtEveryWrite)|^RollbackCliTest\.KillNine' \
  TSAN_OPTIONS="suppressions=$root/tests/tsan.supp halt_on_error=1 second_deadlock_stack=1" \
    SAFEPOINT_SOAK_SECONDS=${SAFEPOINT_SOAK_SECONDS:-120} SAFEPOINT_ROUNDTRIP_SEED=200001 \
    SAFEPOINT_ROUNDTRIP_SECONDS=${SAFEPOINT_ROUNDTRIP_SECONDS:-60} \
    SAFEPOINT_NOCRASH_SECONDS=${SAFEPOINT_NOCRASH_SECONDS:-45} \
    run_suite "$root/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSAFEPOINT_SANITIZE=thread \
    "-DSAFEPOINT_SKIP_TESTS=$single_threaded_tests"
fi

if [[ "${SAFEPOINT_SKIP_FUZZERS:-0}" != 1 ]]; then
  echo "== fuzzing (libFuzzer, clang-14, ASan+UBSan) =="
  cmake -S "$root" -B "$root/build-fuzz" -G Ninja -DCMAKE_C_COMPILER=clang-14 \
    -DCMAKE_CXX_COMPILER=clang++-14 -DSAFEPOINT_BUILD_FUZZERS=ON -DSAFEPOINT_BUILD_TESTS=OFF \
    -DSAFEPOINT_WERROR=ON
  cmake --build "$root/build-fuzz" -j "$jobs"
  "$root/tests/fuzz/run.sh" "$root/build-fuzz"
  echo "-- fuzzed at ${SECONDS}s"
fi
echo "== all tests passed in ${SECONDS}s =="
