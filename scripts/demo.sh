#!/usr/bin/env bash
# Runs safepoint on a demo Home Assistant configuration, against a Mosquitto broker on loopback.
#   1. installs dependencies (scripts/install-deps.sh) and builds a release binary,
#   2. creates demo/ with a small HA config dir, secrets.yaml (demo passphrase) and safepoint.yaml,
#   3. starts Mosquitto on 127.0.0.1 (a free port), then `safepoint serve` in the foreground.
# Ctrl-C stops both. Environment: DEMO_DIR (default ./demo), DEMO_PORT (default: a free port).
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
demo=${DEMO_DIR:-$root/demo}

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$root/build-release" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSAFEPOINT_BUILD_TESTS=OFF >/dev/null
cmake --build "$root/build-release" --target safepoint
bin="$root/build-release/service/safepoint"

port=${DEMO_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
ha="$demo/config"
if [[ ! -f "$ha/configuration.yaml" ]]; then
  mkdir -p "$ha/.storage" "$ha/custom_components/demo_light" "$ha/blueprints/automation" \
    "$ha/.openclaw/workspace/memory" "$ha/.openclaw/logs"
  cat >"$ha/configuration.yaml" <<'YAML'
homeassistant:
  name: Demo Home
  time_zone: Europe/Berlin
automation: !include automations.yaml
mqtt:
YAML
  cat >"$ha/automations.yaml" <<'YAML'
- id: "evening_lights"
  alias: Evening lights
  trigger: [{platform: sun, event: sunset}]
  action: [{service: light.turn_on, target: {entity_id: light.living_room}}]
YAML
  echo '{"version":1,"minor_version":1,"key":"core.entity_registry","data":{"entities":[]}}' \
    >"$ha/.storage/core.entity_registry"
  echo '"""Demo custom component."""' >"$ha/custom_components/demo_light/__init__.py"
  echo "# Notes of the agent" >"$ha/.openclaw/workspace/memory/notes.md"
  echo "- check the heating schedule" >"$ha/.openclaw/workspace/agenda.md"
  printf 'agent started\nagent idle\n' >"$ha/.openclaw/logs/agent.log"
  # A demo passphrase: for the demo only. Choose your own, long and random, for real use.
  printf 'backup_encryption_passphrase: "demo only - replace me"\n' >"$ha/secrets.yaml"
  chmod 600 "$ha/secrets.yaml"
fi
cat >"$demo/safepoint.yaml" <<YAML
paths:
  ha_config: $ha
  backup_dir: $demo/safety_points
encryption:
  scrypt_work_factor: 15   # demo: fast; keep the default (18) for real use
mqtt:
  url: mqtt://127.0.0.1:$port
service:
  confirm_timeout: 5m
restart:
  - name: home-assistant
    command: ["/bin/echo", "a real setup restarts Home Assistant here"]
    timeout: 10s
YAML

cat >"$demo/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
CONF
mosquitto -c "$demo/mosquitto.conf" >"$demo/mosquitto.log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null || true' EXIT
sleep 0.5

cat <<HELP

safepoint demo: broker mqtt://127.0.0.1:$port, config $demo/safepoint.yaml
In another terminal, watch everything:
  mosquitto_sub -p $port -v -t 'safepoint/#'
Ask for a safety point before an update, then confirm it:
  mosquitto_pub -p $port -t safepoint/update/request -m '{"update_id":"demo-1","target":"core","from_version":"2025.1","to_version":"2025.2"}'
  mosquitto_pub -p $port -t safepoint/cmd/continue -m PRESS
Report a failed update (safepoint rolls back; edit $ha/configuration.yaml first to see it restored):
  mosquitto_pub -p $port -t safepoint/update/result -m '{"update_id":"demo-1","success":false,"exit_code":1}'
CLI on the same store:
  $bin --config $demo/safepoint.yaml list
Ctrl-C stops the service and the broker.

HELP
"$bin" --config "$demo/safepoint.yaml" serve
