#!/usr/bin/env python3
"""Turns the add-on options and the MQTT broker into a safepoint configuration.

    addon_config.py --options /data/options.json --mqtt-json FILE --out /data/safepoint.yaml
    addon_config.py --options /data/options.json --mqtt-from-supervisor --out /data/safepoint.yaml

The broker comes from one of two places:
- the options mqtt_host, mqtt_port, mqtt_username, mqtt_password, mqtt_tls (an external broker).
  When mqtt_host is set they replace the Supervisor's service entirely, and the Supervisor is
  not asked;
- else the Supervisor's `mqtt` service. It exists only while an add-on provides it (the
  Mosquitto broker add-on); a broker configured in Home Assistant's MQTT integration is not
  one. --mqtt-from-supervisor asks the Supervisor API with $SUPERVISOR_TOKEN (config.yaml
  declares `services: [mqtt:want]`); --mqtt-json reads the same answer from a file (tests).
  Both accept the API's envelope ({"result": "ok", "data": {...}}) or the bare object; an
  error envelope ({"result": "error", ...}, what the API answers when no add-on provides the
  service) means there is no service.
Without either, the script stops with a message naming both ways.

The output is YAML in which every scalar is written as a JSON string or number, which YAML reads
exactly as written. It holds the MQTT password, so it is created with mode 0600 and never
printed. Errors name the option, never its value when it could be a secret. Standard library
only, so the add-on image needs nothing beyond python3.
"""

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request

DEFAULT_HA_CONFIG = "/homeassistant"
SUPERVISOR_MQTT_URL = "http://supervisor/services/mqtt"
RESTART_CORE = ["/usr/lib/safepoint/restart_core.py"]

DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+$|^[0-9]+$")
DAILY_AT = re.compile(r"^(?:off|(?:[01][0-9]|2[0-3]):[0-5][0-9])$")
SIZE = re.compile(r"^[0-9]+(?: ?(?:B|KB|MB|GB|TB|KiB|MiB|GiB|TiB))?$", re.IGNORECASE)
NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SECRET_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")

# Every option, its default and its check. config.yaml's schema mirrors this table.
DEFAULTS = {
    "secrets_file": "",
    "passphrase_key": "backup_encryption_passphrase",
    "backup_dir": "",
    "confirm_timeout": "30m",
    "health_timeout": "5m",
    "auto_rollback": True,
    "on_conflict": "abort",
    "daily_at": "04:00",
    "keep_last": 10,
    "keep_daily": 7,
    "max_total_size": "0",
    "scrypt_work_factor": 18,
    "include": ["**"],
    "exclude": [],
    "mirror_filters": ["zigbee2mqtt/#"],
    "zigbee2mqtt_backup": False,
    "restart_home_assistant": True,
    "base_topic": "safepoint",
    "node_id": "safepoint",
    "log_level": "info",
    "mqtt_host": "",
    "mqtt_port": 1883,
    "mqtt_username": "",
    "mqtt_password": "",
    "mqtt_tls": False,
}

NO_BROKER = ("no MQTT broker: install and start the Mosquitto broker add-on (the Supervisor then "
             "gives this add-on its address and a login), or set the option 'mqtt_host' (with "
             "'mqtt_port', 'mqtt_username', 'mqtt_password', 'mqtt_tls') for another broker")


class OptionError(Exception):
    pass


def _string(options, key, pattern=None, what=None):
    value = options[key]
    if not isinstance(value, str):
        raise OptionError(f"option '{key}': expected a string")
    if pattern is not None and not pattern.match(value):
        raise OptionError(f"option '{key}': '{value}' is not {what}")
    return value


def _int(options, key, low, high):
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"option '{key}': expected an integer")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise OptionError(f"option '{key}': {value} is out of range ({bound})")
    return value


def _bool(options, key):
    value = options[key]
    if not isinstance(value, bool):
        raise OptionError(f"option '{key}': expected true or false")
    return value


def _strings(options, key):
    value = options[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise OptionError(f"option '{key}': expected a list of non-empty strings")
    return value


def _size(text):
    return int(text) if text.isdigit() else text


def _path(value, ha_config, key):
    if not value:
        return None
    if "\x00" in value or "\n" in value:
        raise OptionError(f"option '{key}': invalid path")
    return value if value.startswith("/") else os.path.join(ha_config, value)


def mqtt_url(service):
    host = service.get("host")
    port = service.get("port", 1883)
    if not isinstance(host, str) or not host or any(c in host for c in "/@ \n"):
        raise OptionError("MQTT service: missing or invalid 'host'")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise OptionError("MQTT service: invalid 'port'")
    scheme = "mqtts" if service.get("ssl") is True else "mqtt"
    return f"{scheme}://{host}:{port}"


def merged_options(options):
    if not isinstance(options, dict):
        raise OptionError("options: expected a JSON object")
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise OptionError(f"unknown option '{unknown[0]}'")
    opts = dict(DEFAULTS)
    opts.update(options)
    return opts


def external_broker(opts):
    """The broker of the mqtt_* options, in the service's shape; None when mqtt_host is empty."""
    host = _string(opts, "mqtt_host").strip()
    if not host:
        return None
    return {"host": host, "port": _int(opts, "mqtt_port", 1, 65535),
            "ssl": _bool(opts, "mqtt_tls"), "username": _string(opts, "mqtt_username"),
            "password": _string(opts, "mqtt_password")}


def supervisor_service(answer):
    """The service object of a Supervisor answer; None when the answer says there is none."""
    if answer is None:
        return None
    if not isinstance(answer, dict):
        raise OptionError("MQTT service: expected a JSON object")
    if answer.get("result") == "error":
        return None
    if isinstance(answer.get("data"), dict):
        return answer["data"]
    return answer


def translate(options, service, ha_config=DEFAULT_HA_CONFIG):
    """Returns the safepoint configuration (a dict) for the add-on options and MQTT service.

    `service` is the Supervisor's answer (None or an error envelope: no service); the mqtt_*
    options replace it when mqtt_host is set."""
    opts = merged_options(options)
    external = external_broker(opts)
    service = external if external is not None else supervisor_service(service)
    if service is None:
        raise OptionError(NO_BROKER)

    on_conflict = _string(opts, "on_conflict")
    if on_conflict not in ("abort", "overwrite", "merge"):
        raise OptionError(f"option 'on_conflict': '{on_conflict}' is not abort, overwrite or merge")
    log_level = _string(opts, "log_level")
    if log_level not in ("trace", "debug", "info", "warn", "error", "critical", "off"):
        raise OptionError(f"option 'log_level': '{log_level}' is not a log level")

    config = {"paths": {"ha_config": ha_config}}
    backup_dir = _path(_string(opts, "backup_dir"), ha_config, "backup_dir")
    if backup_dir:
        config["paths"]["backup_dir"] = backup_dir

    encryption = {
        "passphrase_key": _string(opts, "passphrase_key", SECRET_KEY, "a secrets.yaml key"),
        "scrypt_work_factor": _int(opts, "scrypt_work_factor", 15, 22),
    }
    secrets_file = _path(_string(opts, "secrets_file"), ha_config, "secrets_file")
    if secrets_file:
        encryption["secrets_file"] = secrets_file
    config["encryption"] = encryption

    config["sources"] = {
        "ha_config": {"include": _strings(opts, "include"), "exclude": _strings(opts, "exclude")}
    }
    config["retention"] = {
        "keep_last": _int(opts, "keep_last", 1, None),
        "keep_daily": _int(opts, "keep_daily", 0, None),
        "max_total_bytes": _size(_string(opts, "max_total_size", SIZE, "a size such as 10GB")),
    }
    config["rollback"] = {"on_conflict": on_conflict}
    restart = []
    if _bool(opts, "restart_home_assistant"):
        restart.append({"name": "home-assistant", "command": RESTART_CORE, "timeout": "300s",
                        "when_changed": ["ha_config"]})
    config["restart"] = restart

    mqtt = {"url": mqtt_url(service)}
    for key in ("username", "password"):
        value = service.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise OptionError(f"MQTT service: '{key}' must be a string")
        mqtt[key] = value
    protocol = service.get("protocol")
    if protocol in ("5", "5.0", 5):
        mqtt["protocol"] = 5
    base_topic = _string(opts, "base_topic")
    if not base_topic or base_topic.startswith("/") or base_topic.endswith("/") or any(
            c in base_topic for c in "+#\x00"):
        raise OptionError(f"option 'base_topic': '{base_topic}' is not a valid topic prefix")
    mqtt["base_topic"] = base_topic
    mqtt["node_id"] = _string(opts, "node_id", NAME, "made of letters, digits, '_' and '-'")
    mqtt["mirror"] = {"filters": _strings(opts, "mirror_filters")}
    mqtt["zigbee2mqtt_backup"] = _bool(opts, "zigbee2mqtt_backup")
    config["mqtt"] = mqtt

    config["service"] = {
        "confirm_timeout": _string(opts, "confirm_timeout", DURATION, "a duration such as 30m"),
        "health_timeout": _string(opts, "health_timeout", DURATION, "a duration such as 5m"),
        "auto_rollback": _bool(opts, "auto_rollback"),
        "schedule": {"daily_at": _string(opts, "daily_at", DAILY_AT, "HH:MM or off")},
    }
    config["logging"] = {"level": log_level}
    return config


def to_yaml(value, indent=0):
    """Block-style YAML; scalars as JSON, which YAML reads back unchanged."""
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    else:
        for item in value:
            if isinstance(item, dict):
                body = to_yaml(item, indent + 1).lstrip()
                lines.append(f"{pad}- {body}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return "\n".join(lines)


def _scalar(item):
    if isinstance(item, dict):
        return "{}"
    if isinstance(item, list):
        return json.dumps(item, ensure_ascii=True)
    return json.dumps(item, ensure_ascii=True)


def read_supervisor_mqtt():
    token = os.environ.get("SUPERVISOR_TOKEN")
    if not token:
        raise OptionError("SUPERVISOR_TOKEN is not set: is this running as an add-on?")
    request = urllib.request.Request(SUPERVISOR_MQTT_URL,
                                     headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError:
        # The API answers an error status when no add-on provides the service.
        return None
    except (OSError, ValueError) as error:
        raise OptionError(f"cannot read the MQTT service from the Supervisor: {error}") from None


def write_private(path, text):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", required=True, help="the add-on options (/data/options.json)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mqtt-json", help="a file with the MQTT service description")
    source.add_argument("--mqtt-from-supervisor", action="store_true",
                        help="ask the Supervisor API (needs $SUPERVISOR_TOKEN)")
    parser.add_argument("--ha-config", default=DEFAULT_HA_CONFIG,
                        help="where Home Assistant's configuration is mapped (default %(default)s)")
    parser.add_argument("--out", required=True, help="the safepoint configuration to write")
    args = parser.parse_args(argv)
    try:
        try:
            with open(args.options, encoding="utf-8") as f:
                options = json.load(f)
        except (OSError, ValueError) as error:
            raise OptionError(f"{args.options}: {error}") from None
        external = external_broker(merged_options(options)) if isinstance(options, dict) else None
        if external is not None:
            service = None  # the options name the broker; the Supervisor is not asked
        elif args.mqtt_json:
            try:
                with open(args.mqtt_json, encoding="utf-8") as f:
                    service = json.load(f)
            except (OSError, ValueError):
                # The file holds a password: do not echo the parser's excerpt of it.
                raise OptionError(f"{args.mqtt_json}: not a readable JSON file") from None
        else:
            service = read_supervisor_mqtt()
        config = translate(options, service, args.ha_config)
        header = ("# Written by the safepoint add-on from its options at every start; "
                  "edits here are lost.\n")
        write_private(args.out, header + to_yaml(config) + "\n")
    except OptionError as error:
        print(f"safepoint add-on: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
