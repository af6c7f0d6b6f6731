#!/usr/bin/env bash
# Installs every build, test and demo dependency of safepoint from Debian 12's packages.
# Used by .ci/run, the demo (scripts/demo.sh) and the container build, so none of them drift.
# Usage: scripts/install-deps.sh [--runtime-only]
set -euo pipefail

runtime=(
  libsodium23 libssl3 libpaho-mqttpp3-1 libpaho-mqtt1.3 libyaml-cpp0.7 libspdlog1.10 libarchive13 libzstd1
  ca-certificates
)
build=(
  build-essential cmake ninja-build pkg-config git
  libsodium-dev libpaho-mqttpp-dev libpaho-mqtt-dev nlohmann-json3-dev libyaml-cpp-dev
  libspdlog-dev libfmt-dev libarchive-dev libzstd-dev libcli11-dev libexpected-dev libssl-dev
  libgtest-dev libgmock-dev googletest libdtl-dev
)
test=(
  mosquitto mosquitto-clients libmosquitto-dev age zstd tar restic openssl python3 python3-jinja2 time hyperfine
  clang-14 libclang-rt-14-dev systemd diffutils patch
)
# Node.js runs the test-only npm tools (age test vectors, Node-RED); any Node.js >= 18 will do.
command -v npm >/dev/null 2>&1 || test+=(nodejs npm)

if [[ "${1:-}" == "--runtime-only" ]]; then
  pkgs=("${runtime[@]}" mosquitto mosquitto-clients)
else
  pkgs=("${runtime[@]}" "${build[@]}" "${test[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
