#!/bin/sh
# Entry point of the safepoint add-on: options + the MQTT broker (the mqtt_* options, else the
# Supervisor's mqtt service of the Mosquitto add-on) -> config, then
# the service in the foreground (PID 1's child; the Supervisor's stop sends SIGTERM).
set -eu
python3 /usr/lib/safepoint/addon_config.py --options /data/options.json --mqtt-from-supervisor \
  --ha-config /homeassistant --out /data/safepoint.yaml
/usr/local/bin/safepoint --config /data/safepoint.yaml config check >/dev/null
exec /usr/local/bin/safepoint --config /data/safepoint.yaml serve
