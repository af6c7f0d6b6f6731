#!/usr/bin/env python3
"""Deterministic generator of a Home-Assistant-like configuration directory for benchmarks.

  gen_tree.py tree OUT --size large|small [--seed N]
      Writes OUT/config/       the HA configuration directory (the data under test)
             OUT/workspace/    an empty agent workspace (outside the tree)
             OUT/safepoint.yaml  a safepoint configuration pointing at them, work factor 18,
                                 backup_dir OUT/backups (outside the tree)
      The passphrase lives only in OUT/config/secrets.yaml (key backup_encryption_passphrase),
      as Home Assistant keeps it; it is never printed.

  gen_tree.py tree OUT --files N [--seed S]
      A scale tree of exactly N files (N >= 200) in the same layout: root YAML and include
      trees (2 %), .storage JSON, incompressible images (1 %), custom_components/ (10 %) and
      the bulk as HACS cards under www/community/ (small minified JS files, median ~1 KB, 8 %
      of the files .js.gz copies); about 3 in 100 names have umlauts, accents, CJK or emoji.
      About 150 MB at 100,000 files.

  gen_tree.py mutate DIR [--fraction 0.05] [--seed N] [--add-fraction 0.01]
      Simulates an update on a generated tree: changes FRACTION of its files in place
      (text edited, binaries rewritten; one in ten of them deleted) and adds ADD_FRACTION new
      files under custom_components/update_added/. Deterministic.
      Prints a one-line JSON summary (counts only).

  gen_tree.py stats DIR [--no-mtime]
      Prints file count, total bytes and a hash of the tree's paths, modes, mtimes and contents
      (JSON); --no-mtime leaves the mtimes out.

Same seed and size (or file count) => byte-identical tree (contents, modes and mtimes).
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

BASE_MTIME = 1_700_000_000  # fixed mtimes keep the tree identical across generations

ROOMS = [
    "living_room", "kitchen", "bedroom", "office", "garage", "hallway", "bathroom", "garden",
    "basement", "attic", "kids_room", "guest_room", "laundry", "porch", "driveway", "dining",
    "stairs", "terrace", "workshop", "pantry", "entrance", "nursery", "gym", "cellar",
]
THINGS = [
    "light", "lamp", "ceiling", "motion", "door", "window", "temperature", "humidity", "power",
    "energy", "plug", "switch", "thermostat", "blind", "cover", "speaker", "tv", "vacuum",
    "battery", "illuminance", "contact", "leak", "smoke", "co2", "pm25", "voltage", "current",
    "occupancy", "presence", "heater", "fan", "pump", "valve", "siren", "lock", "button",
]
DOMAINS = [
    "light", "switch", "sensor", "binary_sensor", "cover", "climate", "media_player",
    "input_boolean", "input_number", "number", "select", "button", "device_tracker", "fan",
    "lock", "vacuum", "update", "siren", "valve", "event",
]
PLATFORMS = [
    "mqtt", "zha", "hue", "esphome", "shelly", "tasmota", "tuya", "xiaomi_miio", "sonos",
    "cast", "unifi", "tplink", "fritz", "netatmo", "deconz", "zwave_js", "template", "hacs",
    "frigate", "alexa_media", "localtuya", "browser_mod", "adaptive_lighting", "powercalc",
    "nodered", "xiaomi_gateway3", "midea_ac", "tapo", "solcast_solar", "battery_notes",
]
MANUFACTURERS = [
    "Signify Netherlands B.V.", "IKEA of Sweden", "Aqara", "Shelly", "Espressif", "Sonoff",
    "TP-Link", "Sonos", "Google Inc.", "Xiaomi", "Tuya", "Ubiquiti", "AVM", "Netatmo", "Eve",
]
WORDS = (
    "state value entity device config entry data coordinator update refresh client session "
    "token payload attribute unique name unit class icon area zone service call response "
    "request result error timeout retry interval scan options flow step user input schema "
    "platform sensor switch light cover climate fan lock media player track event trigger "
    "condition action template render context hass store load save parse build format native "
    "available enabled disabled category diagnostic translation key field host port path "
    "mode brightness color kelvin position speed preset target current voltage power energy "
    "battery level signal rssi firmware version model serial mac address channel group scene "
    "script automation helper counter timer schedule calendar notify message title cache "
    "listener callback handler dispatcher subscription topic discovery prefix manager api "
    "endpoint header cookie status report history statistic mean min max sum last changed"
).split()
LANGS = [
    "en", "de", "fr", "nl", "it", "es", "pl", "pt", "pt-BR", "sv", "da", "nb", "fi", "cs", "sk",
    "hu", "ro", "ru", "uk", "tr", "el", "bg", "hr", "sl", "ca", "zh-Hans", "zh-Hant", "ja", "ko",
]


def ident(rng: random.Random, parts: int = 2) -> str:
    return "_".join(rng.choice(WORDS) for _ in range(parts))


def hexid(rng: random.Random, nbytes: int = 16) -> str:
    return rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()


def ulid(rng: random.Random) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "01H" + "".join(rng.choice(alphabet) for _ in range(23))


def iso_time(rng: random.Random) -> str:
    return (f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}+00:00")


@dataclass
class Entity:
    entity_id: str
    unique_id: str
    device_id: str
    platform: str
    name: str
    domain: str
    area: str


class World:
    """The shared universe of entities and devices that files refer to."""

    def __init__(self, rng: random.Random, n_entities: int):
        self.rng = rng
        n_devices = max(4, n_entities // 4)
        self.devices = []
        for i in range(n_devices):
            room = rng.choice(ROOMS)
            self.devices.append({
                "id": hexid(rng),
                "name": f"{room.replace('_', ' ').title()} {rng.choice(THINGS).title()} {i}",
                "manufacturer": rng.choice(MANUFACTURERS),
                "model": f"{rng.choice(['TRADFRI', 'LCT', 'SNZB', 'ZNCZ', 'S31', 'MHO'])}"
                         f"-{rng.randint(1, 999):03d}",
                "area": room,
                "platform": rng.choice(PLATFORMS),
                "entry": hexid(rng),
                "sw": f"{rng.randint(1, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 99)}",
                "mac": ":".join(f"{rng.randint(0, 255):02x}" for _ in range(6)),
            })
        self.entities: list[Entity] = []
        seen = set()
        for i in range(n_entities):
            dev = rng.choice(self.devices)
            domain = rng.choice(DOMAINS)
            eid = f"{domain}.{dev['area']}_{rng.choice(THINGS)}_{i}"
            if eid in seen:
                continue
            seen.add(eid)
            self.entities.append(Entity(eid, hexid(rng, 12), dev["id"], dev["platform"],
                                        f"{dev['name']} {rng.choice(THINGS)}", domain,
                                        dev["area"]))

    def entity(self, domain: str | None = None) -> Entity:
        if domain is not None:
            for _ in range(20):
                e = self.rng.choice(self.entities)
                if e.domain == domain:
                    return e
        return self.rng.choice(self.entities)


# ----------------------------------------------------------------------------- text generators


def yaml_automation(rng: random.Random, w: World, indent: str = "") -> str:
    trig = w.entity("binary_sensor")
    tgt = w.entity("light")
    lines = [
        f"{indent}- id: '{rng.randint(10**12, 10**13 - 1)}'",
        f"{indent}  alias: {trig.area.replace('_', ' ').title()} {rng.choice(WORDS)} "
        f"{rng.choice(WORDS)} {rng.randint(1, 999)}",
        f"{indent}  description: '{' '.join(rng.choice(WORDS) for _ in range(rng.randint(0, 9)))}'",
        f"{indent}  trigger:",
    ]
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(4)
        if kind == 0:
            lines += [f"{indent}  - platform: state", f"{indent}    entity_id: {trig.entity_id}",
                      f"{indent}    to: 'on'"]
            if rng.random() < 0.4:
                lines += [f"{indent}    for:", f"{indent}      minutes: {rng.randint(1, 30)}"]
        elif kind == 1:
            lines += [f"{indent}  - platform: numeric_state",
                      f"{indent}    entity_id: {w.entity('sensor').entity_id}",
                      f"{indent}    above: {rng.randint(0, 3000) / 10}"]
        elif kind == 2:
            lines += [f"{indent}  - platform: time",
                      f"{indent}    at: '{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00'"]
        else:
            lines += [f"{indent}  - platform: mqtt",
                      f"{indent}    topic: zigbee2mqtt/{rng.choice(ROOMS)}_{rng.choice(THINGS)}"
                      f"/action", f"{indent}    payload: {rng.choice(['single', 'double', 'hold'])}"]
    lines.append(f"{indent}  condition:")
    if rng.random() < 0.5:
        lines += [f"{indent}  - condition: sun", f"{indent}    after: sunset",
                  f"{indent}    after_offset: '-00:{rng.randint(0, 59):02d}:00'"]
    else:
        lines += [f"{indent}  - condition: template",
                  f"{indent}    value_template: \"{{{{ states('{w.entity('sensor').entity_id}')"
                  f" | float(0) > {rng.randint(1, 100)} }}}}\""]
    lines.append(f"{indent}  action:")
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(3)
        if kind == 0:
            lines += [f"{indent}  - service: light.turn_on", f"{indent}    target:",
                      f"{indent}      entity_id: {tgt.entity_id}", f"{indent}    data:",
                      f"{indent}      brightness_pct: {rng.randint(1, 100)}",
                      f"{indent}      transition: {rng.randint(0, 5)}"]
        elif kind == 1:
            lines += [f"{indent}  - delay:", f"{indent}      seconds: {rng.randint(1, 120)}"]
        else:
            lines += [f"{indent}  - service: notify.mobile_app_{rng.choice(['pixel', 'iphone'])}"
                      f"_{rng.randint(1, 9)}", f"{indent}    data:",
                      f"{indent}      message: {' '.join(rng.choice(WORDS) for _ in range(8))}"]
    lines.append(f"{indent}  mode: {rng.choice(['single', 'restart', 'queued', 'parallel'])}")
    return "\n".join(lines) + "\n"


def yaml_sensor_block(rng: random.Random, w: World) -> str:
    e = w.entity("sensor")
    return (
        f"  - name: \"{e.name} {rng.randint(1, 99)}\"\n"
        f"    unique_id: {e.unique_id}\n"
        f"    unit_of_measurement: \"{rng.choice(['W', 'kWh', '°C', '%', 'lx', 'ppm', 'V'])}\"\n"
        f"    state: >\n"
        f"      {{% set v = states('{w.entity().entity_id}') | float(0) %}}\n"
        f"      {{{{ (v * {rng.randint(1, 1000) / 100}) | round({rng.randint(0, 3)}) }}}}\n"
        f"    availability: \"{{{{ has_value('{w.entity().entity_id}') }}}}\"\n")


def yaml_file(rng: random.Random, w: World, target: int, kind: str) -> str:
    head = f"# {kind} {' '.join(rng.choice(WORDS) for _ in range(6))}\n"
    parts = [head]
    size = len(head)
    if kind == "package":
        parts.append(f"{ident(rng)}:\n  input_boolean:\n    {ident(rng)}_{rng.randint(1, 99)}:\n"
                     f"      name: {ident(rng)}\n  template:\n  - sensor:\n")
    elif kind == "sensors":
        parts.append("- sensor:\n")
    while size < target:
        if kind in ("automation", "blueprint_body"):
            s = yaml_automation(rng, w)
        else:
            s = yaml_sensor_block(rng, w)
        parts.append(s)
        size += len(s)
    return "".join(parts)


def esphome_yaml(rng: random.Random, w: World, target: int) -> str:
    name = f"{rng.choice(ROOMS).replace('_', '-')}-{rng.choice(THINGS)}-{rng.randint(1, 99)}"
    out = [f"esphome:\n  name: {name}\n  friendly_name: {name.replace('-', ' ').title()}\n\n"
           f"esp32:\n  board: {rng.choice(['esp32dev', 'esp32-c3-devkitm-1', 'nodemcu-32s'])}\n"
           f"  framework:\n    type: {rng.choice(['arduino', 'esp-idf'])}\n\nlogger:\n\n"
           f"api:\n  encryption:\n    key: !secret {name.replace('-', '_')}_api_key\n\nota:\n"
           f"  - platform: esphome\n    password: !secret ota_password\n\nwifi:\n"
           f"  ssid: !secret wifi_ssid\n  password: !secret wifi_password\n\nsensor:\n"]
    size = len(out[0])
    while size < target:
        s = (f"  - platform: {rng.choice(['dht', 'bme280_i2c', 'adc', 'pulse_counter', 'uptime'])}\n"
             f"    name: \"{rng.choice(THINGS).title()} {rng.randint(1, 99)}\"\n"
             f"    pin: GPIO{rng.randint(0, 39)}\n    update_interval: {rng.randint(5, 600)}s\n"
             f"    filters:\n      - sliding_window_moving_average:\n"
             f"          window_size: {rng.randint(2, 30)}\n          send_every: {rng.randint(1, 15)}\n")
        out.append(s)
        size += len(s)
    return "".join(out)


PY_IMPORTS = [
    "from __future__ import annotations", "import asyncio", "import logging",
    "from datetime import timedelta", "from typing import Any",
    "from homeassistant.config_entries import ConfigEntry",
    "from homeassistant.core import HomeAssistant, callback",
    "from homeassistant.helpers.update_coordinator import CoordinatorEntity",
    "from homeassistant.helpers.entity import DeviceInfo, EntityCategory",
    "from homeassistant.const import CONF_HOST, CONF_PORT, CONF_NAME, Platform",
    "import voluptuous as vol", "import aiohttp", "from homeassistant.exceptions import "
    "ConfigEntryNotReady", "import homeassistant.helpers.config_validation as cv",
]


def py_statement(rng: random.Random, depth: str) -> str:
    a, b, c = ident(rng), ident(rng, 1), rng.choice(WORDS)
    k = rng.randrange(12)
    if k == 0:
        return f"{depth}{a} = self._{b}.get(\"{c}\", {rng.randint(0, 500)})\n"
    if k == 1:
        return f"{depth}if {a} is None:\n{depth}    return {rng.choice(['None', 'False', '{}', '[]'])}\n"
    if k == 2:
        return f"{depth}_LOGGER.debug(\"{c} {b} for %s: %s\", self.{a}, {ident(rng)})\n"
    if k == 3:
        return f"{depth}await self.coordinator.async_request_refresh()\n"
    if k == 4:
        return (f"{depth}for {b} in self._{a}:\n{depth}    if {b}.{c} != {rng.randint(0, 9)}:\n"
                f"{depth}        continue\n{depth}    {ident(rng)}.append({b})\n")
    if k == 5:
        return (f"{depth}try:\n{depth}    {a} = await self._client.{ident(rng)}({b}=self.{c})\n"
                f"{depth}except (asyncio.TimeoutError, aiohttp.ClientError) as err:\n"
                f"{depth}    raise UpdateFailed(f\"{c} failed: {{err}}\") from err\n")
    if k == 6:
        return f"{depth}self._attr_{a} = {ident(rng)}[\"{c}\"] * {rng.randint(1, 1000) / 10}\n"
    if k == 7:
        return f"{depth}# {' '.join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))}\n"
    if k == 8:
        return f"{depth}return {{\"{a}\": self.{b}, \"{c}\": {ident(rng)}}}\n"
    if k == 9:
        return (f"{depth}{a} = [{', '.join(repr(rng.choice(WORDS)) for _ in range(rng.randint(2, 6)))}]\n")
    if k == 10:
        return f"{depth}{a}: dict[str, Any] = dict(self.config_entry.{b})\n"
    return f"{depth}self.async_write_ha_state()\n"


def python_module(rng: random.Random, target: int) -> str:
    imports = rng.sample(PY_IMPORTS, rng.randint(3, len(PY_IMPORTS)))
    out = [f'"""{" ".join(rng.choice(WORDS) for _ in range(8)).capitalize()}."""\n',
           "\n".join(imports), "\n\n_LOGGER = logging.getLogger(__name__)\n",
           f"SCAN_INTERVAL = timedelta(seconds={rng.randint(5, 600)})\n"]
    for _ in range(rng.randint(2, 8)):
        out.append(f"CONF_{ident(rng).upper()} = \"{ident(rng)}\"\n")
    size = sum(len(s) for s in out)
    while size < target:
        cls = "".join(x.title() for x in ident(rng, 3).split("_"))
        block = [f"\n\nclass {cls}(CoordinatorEntity, {rng.choice(['SensorEntity', 'SwitchEntity', 'LightEntity'])}):\n",
                 f'    """{" ".join(rng.choice(WORDS) for _ in range(10)).capitalize()}."""\n\n',
                 f"    _attr_has_entity_name = True\n    _attr_translation_key = \"{ident(rng)}\"\n"]
        for _ in range(rng.randint(2, 7)):
            asy = "async " if rng.random() < 0.5 else ""
            block.append(f"\n    {asy}def {ident(rng)}(self, {ident(rng, 1)}: {rng.choice(['str', 'int', 'Any', 'dict[str, Any]'])}) -> "
                         f"{rng.choice(['None', 'bool', 'Any', 'dict[str, Any]'])}:\n")
            block.append(f'        """{" ".join(rng.choice(WORDS) for _ in range(7)).capitalize()}."""\n')
            for _ in range(rng.randint(2, 9)):
                block.append(py_statement(rng, "        "))
        s = "".join(block)
        out.append(s)
        size += len(s)
    return "".join(out) + "\n"


JS_SHORT = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def js_statement(rng: random.Random) -> str:
    """One statement of minified card code."""
    short = JS_SHORT
    k = rng.randrange(6)
    v1, v2, v3 = rng.choice(short) + rng.choice(short), rng.choice(short), rng.choice(short)
    if k == 0:
        return f"function {v1}({v2},{v3}){{return {v2}.{rng.choice(WORDS)}({v3})||null}}"
    if k == 1:
        return f"const {v1}={{{rng.choice(WORDS)}:{rng.randint(0, 9999)},{rng.choice(WORDS)}:\"{ident(rng)}\"}};"
    if k == 2:
        return f"{v1}.prototype.{ident(rng)}=function({v2}){{this.{rng.choice(WORDS)}={v2}.{rng.choice(WORDS)};}};"
    if k == 3:
        return f"customElements.define(\"{ident(rng).replace('_', '-')}-{rng.randint(0, 999)}\",{v1});"
    if k == 4:
        return f"if({v2}.{rng.choice(WORDS)}!=={rng.randint(0, 255)}){v3}.{rng.choice(WORDS)}(\"{rng.choice(WORDS)}\");"
    return f"var {v1}=\"{hexid(rng, rng.randint(2, 8))}\";"


def minified_js(rng: random.Random, target: int) -> str:
    out = [f"/*! {ident(rng)}-card v{rng.randint(0, 5)}.{rng.randint(0, 30)}.{rng.randint(0, 20)} | MIT */\n"]
    size = len(out[0])
    while size < target:
        s = js_statement(rng)
        out.append(s)
        size += len(s)
        if rng.random() < 0.002:
            out.append("\n")
    return "".join(out) + "\n"


def translation_json(rng: random.Random, target: int) -> str:
    data: dict = {"title": ident(rng), "config": {"step": {}, "error": {}, "abort": {}},
                  "entity": {"sensor": {}}}
    size = 0
    while size < target:
        key = ident(rng)
        data["entity"]["sensor"][key] = {"name": " ".join(rng.choice(WORDS) for _ in range(3)),
                                         "state": {ident(rng, 1): rng.choice(WORDS) for _ in range(3)}}
        data["config"]["step"][ident(rng)] = {
            "title": " ".join(rng.choice(WORDS) for _ in range(4)),
            "description": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))),
            "data": {ident(rng): " ".join(rng.choice(WORDS) for _ in range(2))}}
        size += 400
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def binary(rng: random.Random, size: int, magic: bytes) -> bytes:
    return magic + rng.randbytes(max(0, size - len(magic)))


# ----------------------------------------------------------------------------- .storage


def storage(key: str, data, minor: int = 1, indent: int | None = 2) -> str:
    doc = {"version": 1, "minor_version": minor, "key": key, "data": data}
    return json.dumps(doc, indent=indent, ensure_ascii=False) + "\n"


def entity_registry(rng: random.Random, w: World) -> str:
    ents = []
    for e in w.entities:
        ents.append({
            "aliases": [], "area_id": None if rng.random() < 0.7 else e.area,
            "capabilities": {"state_class": "measurement"} if e.domain == "sensor" else None,
            "categories": {}, "config_entry_id": hexid(rng), "device_class": None,
            "device_id": e.device_id, "disabled_by": None if rng.random() < 0.9 else "integration",
            "entity_category": rng.choice([None, None, "diagnostic", "config"]),
            "entity_id": e.entity_id, "hidden_by": None, "icon": None, "id": hexid(rng),
            "has_entity_name": True, "labels": [], "modified_at": iso_time(rng), "name": None,
            "options": {"conversation": {"should_expose": rng.random() < 0.3}},
            "original_device_class": rng.choice([None, "temperature", "power", "motion"]),
            "original_icon": None, "original_name": e.name, "platform": e.platform,
            "supported_features": rng.randint(0, 63), "translation_key": ident(rng),
            "unique_id": e.unique_id, "previous_unique_id": None,
            "unit_of_measurement": rng.choice([None, "W", "kWh", "°C", "%"]),
        })
    deleted = [{"config_entry_id": hexid(rng), "entity_id": f"sensor.old_{ident(rng)}_{i}",
                "id": hexid(rng), "orphaned_timestamp": None, "platform": rng.choice(PLATFORMS),
                "unique_id": hexid(rng, 12)} for i in range(len(w.entities) // 8)]
    return storage("core.entity_registry", {"entities": ents, "deleted_entities": deleted}, 15)


def device_registry(rng: random.Random, w: World) -> str:
    devs = []
    for d in w.devices:
        devs.append({
            "area_id": d["area"], "config_entries": [d["entry"]],
            "configuration_url": None if rng.random() < 0.6 else f"http://192.168.1.{rng.randint(2, 254)}",
            "connections": [["mac", d["mac"]]] if rng.random() < 0.5 else [],
            "created_at": iso_time(rng), "disabled_by": None, "entry_type": None,
            "hw_version": None, "id": d["id"],
            "identifiers": [[d["platform"], hexid(rng, 8)]], "labels": [],
            "manufacturer": d["manufacturer"], "model": d["model"], "model_id": None,
            "modified_at": iso_time(rng), "name_by_user": None, "name": d["name"],
            "primary_config_entry": d["entry"], "serial_number": hexid(rng, 6),
            "sw_version": d["sw"], "via_device_id": None,
        })
    return storage("core.device_registry", {"devices": devs, "deleted_devices": []}, 8)


def restore_state(rng: random.Random, w: World) -> str:
    states = []
    for e in w.entities:
        states.append({
            "state": {"entity_id": e.entity_id, "state": str(rng.choice(["on", "off", rng.randint(0, 5000) / 10])),
                      "attributes": {"friendly_name": e.name, "icon": f"mdi:{rng.choice(THINGS)}",
                                     ident(rng): rng.randint(0, 1000)},
                      "last_changed": iso_time(rng), "last_reported": iso_time(rng),
                      "last_updated": iso_time(rng),
                      "context": {"id": ulid(rng), "parent_id": None, "user_id": None}},
            "extra_data": {"native_value": rng.randint(0, 10000) / 100, "native_unit_of_measurement": "W"}
            if e.domain == "sensor" else None,
            "last_seen": iso_time(rng),
        })
    return storage("core.restore_state", states, 1)


def traces(rng: random.Random, w: World, target: int) -> str:
    out: dict = {}
    size = 0
    while size < target:
        key = f"automation.{ident(rng, 3)}"
        runs = []
        for _ in range(5):
            runs.append({
                "extended_dict": {
                    "last_step": "action/0", "run_id": hexid(rng), "state": "stopped",
                    "script_execution": "finished",
                    "timestamp": {"start": iso_time(rng), "finish": iso_time(rng)},
                    "domain": "automation", "item_id": str(rng.randint(10**12, 10**13)),
                    "trigger": f"state of {w.entity().entity_id}",
                    "trace": {f"action/{i}": [{"path": f"action/{i}", "timestamp": iso_time(rng),
                                               "changed_variables": {"context": {"id": ulid(rng)}},
                                               "result": {"params": {"domain": "light", "service": "turn_on",
                                                                     "target": {"entity_id": [w.entity().entity_id]}}}}]
                              for i in range(rng.randint(2, 6))},
                    "config": {"id": str(rng.randint(10**12, 10**13)), "alias": ident(rng, 3)},
                    "context": {"id": ulid(rng), "parent_id": None, "user_id": None},
                },
                "short_dict": {"last_step": "action/0", "run_id": hexid(rng), "state": "stopped"},
            })
        out[key] = runs
        size += 5 * 1500
    return storage("trace.saved_traces", out, 1)


def lovelace(rng: random.Random, w: World, target: int, key: str) -> str:
    views = []
    size = 0
    while size < target:
        cards = []
        for _ in range(rng.randint(4, 16)):
            cards.append({"type": rng.choice(["entities", "tile", "custom:mushroom-light-card",
                                              "custom:mini-graph-card", "glance", "history-graph"]),
                          "title": ident(rng, 2),
                          "entities": [{"entity": w.entity().entity_id,
                                        "name": ident(rng, 2)} for _ in range(rng.randint(1, 8))]})
        views.append({"title": ident(rng, 2), "path": ident(rng, 1), "icon": f"mdi:{rng.choice(THINGS)}",
                      "cards": cards})
        size += len(json.dumps(views[-1]))
    return storage(key, {"config": {"views": views}}, 1)


def generic_storage(rng: random.Random, key: str, target: int) -> str:
    items = []
    size = 0
    while size < target:
        item = {"id": hexid(rng), "name": ident(rng, 2), ident(rng): rng.randint(0, 10**6),
                "created_at": iso_time(rng), "options": {ident(rng): rng.choice(WORDS) for _ in range(3)}}
        items.append(item)
        size += 220
    return storage(key, {"items": items}, 1)


# ----------------------------------------------------------------------------- tree writer


class Writer:
    def __init__(self, root: Path):
        self.root = root
        self.count = 0
        self.bytes = 0

    def write(self, rel: str, content: str | bytes, mode: int = 0o644) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        t = BASE_MTIME + self.count * 7
        os.utime(path, (t, t))
        self.count += 1
        self.bytes += len(data)


@dataclass
class Profile:
    entities: int
    automations_yaml: int        # bytes of automations.yaml
    automation_files: int        # automations/ include dir
    package_files: int
    sensor_files: int
    script_files: int
    blueprints: int
    esphome: int
    themes: int
    dashboards_yaml: int
    integrations: int
    modules_per_integration: tuple[int, int]
    languages: int
    js_cards: int
    js_card_size: tuple[int, int]
    images: int
    image_size: tuple[int, int]
    big_binaries: int
    big_binary_size: tuple[int, int]
    traces: int
    lovelace_dashboards: int
    lovelace_size: int
    extra_storage: int
    z2m_db: int
    text_scale: float = 1.0      # scales the sizes of the many small text files


PROFILES = {
    "large": Profile(entities=4200, automations_yaml=600_000, automation_files=700,
                     package_files=260, sensor_files=320, script_files=220, blueprints=80,
                     esphome=80, themes=30, dashboards_yaml=60, integrations=48,
                     modules_per_integration=(14, 50), languages=26, js_cards=36,
                     js_card_size=(50_000, 1_000_000), images=260, image_size=(10_000, 150_000),
                     big_binaries=6, big_binary_size=(2_000_000, 4_000_000), traces=4_000_000,
                     lovelace_dashboards=5, lovelace_size=450_000, extra_storage=30,
                     z2m_db=1_500_000),
    "small": Profile(entities=50, automations_yaml=12_000, automation_files=6, package_files=12,
                     sensor_files=0, script_files=0, blueprints=8, esphome=8, themes=2,
                     dashboards_yaml=0, integrations=1, modules_per_integration=(11, 11),
                     languages=12, js_cards=1, js_card_size=(20_000, 20_000), images=4,
                     image_size=(3_000, 12_000), big_binaries=0, big_binary_size=(0, 0),
                     traces=12_000, lovelace_dashboards=1, lovelace_size=10_000, extra_storage=6,
                     z2m_db=8_000, text_scale=0.22),
}


def passphrase_for(seed: int) -> str:
    # A benchmark passphrase: derived from the seed so the tree is reproducible.
    return "bench-" + hashlib.sha256(f"safepoint-bench-{seed}".encode()).hexdigest()[:32]


def finish_tree(out: Path, cfg: Path) -> None:
    """Writes the bench configuration beside the tree and fixes the directories' mtimes."""
    # A safepoint configuration outside the tree: work factor 18 (age's default), backup dir
    # outside the tree, no log tails, an empty workspace.
    (out / "workspace").mkdir(parents=True, exist_ok=True)
    (out / "backups").mkdir(parents=True, exist_ok=True)
    os.chmod(out / "backups", 0o700)
    (out / "safepoint.yaml").write_text(
        "# Benchmark configuration (generated by bench/gen_tree.py).\n"
        "paths:\n"
        f"  ha_config: {cfg}\n"
        f"  workspace: {out / 'workspace'}\n"
        f"  backup_dir: {out / 'backups'}\n"
        "encryption:\n"
        f"  secrets_file: {cfg / 'secrets.yaml'}\n"
        "  passphrase_key: backup_encryption_passphrase\n"
        "  scrypt_work_factor: 18\n"
        "sources:\n"
        "  logs: []\n")
    # Directories get fixed mtimes too.
    for dirpath, _dirs, _files in os.walk(cfg):
        os.utime(dirpath, (BASE_MTIME, BASE_MTIME))


def gen_tree(out: Path, size: str, seed: int) -> dict:
    p = PROFILES[size]
    rng = random.Random(f"{seed}-{size}")
    cfg = out / "config"
    if cfg.exists() and any(cfg.iterdir()):
        raise SystemExit(f"gen_tree: {cfg} exists and is not empty")
    w = World(rng, p.entities)
    wr = Writer(cfg)

    def sz(lo: int, hi: int) -> int:  # a text file size, scaled by the profile
        return int(rng.randint(lo, hi) * p.text_scale)

    # Root YAML.
    wr.write("configuration.yaml", (
        "homeassistant:\n  name: Home\n  unit_system: metric\n  time_zone: Europe/Berlin\n"
        "  packages: !include_dir_named packages\n  customize: !include customize.yaml\n"
        "default_config:\nfrontend:\n  themes: !include_dir_merge_named themes\n"
        "automation ui: !include automations.yaml\n"
        + ("automation split: !include_dir_merge_list automations\n" if p.automation_files else "")
        + "script: !include scripts.yaml\nscene: !include scenes.yaml\ngroup: !include groups.yaml\n"
        + ("template: !include_dir_merge_list sensors\n" if p.sensor_files else "")
        + "recorder:\n  purge_keep_days: 10\n  exclude:\n    domains: [automation, updater]\n"
        "mqtt:\n  sensor: []\nhttp:\n  use_x_forwarded_for: true\n  trusted_proxies: [172.30.33.0/24]\n"))
    wr.write("automations.yaml", yaml_file(rng, w, p.automations_yaml, "automation"))
    wr.write("scripts.yaml", yaml_file(rng, w, max(4000, p.automations_yaml // 4), "sensors"))
    wr.write("scenes.yaml", yaml_file(rng, w, max(2000, p.automations_yaml // 10), "sensors"))
    wr.write("groups.yaml", "".join(f"{ident(rng)}:\n  name: {ident(rng, 2)}\n  entities:\n"
                                    + "".join(f"    - {w.entity().entity_id}\n" for _ in range(6))
                                    for _ in range(max(5, p.entities // 100))))
    wr.write("customize.yaml", "".join(f"{w.entity().entity_id}:\n  friendly_name: {ident(rng, 2)}\n"
                                       f"  icon: mdi:{rng.choice(THINGS)}\n"
                                       for _ in range(max(10, p.entities // 20))))
    secrets = [f"backup_encryption_passphrase: \"{passphrase_for(seed)}\"",
               f"wifi_ssid: \"{ident(rng)}\"", f"wifi_password: \"{hexid(rng, 12)}\"",
               f"ota_password: \"{hexid(rng, 12)}\"", f"mqtt_password: \"{hexid(rng, 12)}\""]
    secrets += [f"{ident(rng)}_api_key: \"{hexid(rng, 32)}\"" for _ in range(max(5, p.esphome))]
    wr.write("secrets.yaml", "\n".join(secrets) + "\n", 0o600)
    wr.write(".HA_VERSION", "2024.11.3\n")

    for i in range(p.automation_files):
        wr.write(f"automations/{rng.choice(ROOMS)}/{ident(rng)}_{i}.yaml",
                 yaml_file(rng, w, sz(1500, 7000), "automation"))
    for i in range(p.package_files):
        wr.write(f"packages/{ident(rng)}_{i}.yaml", yaml_file(rng, w, sz(1000, 14000), "package"))
    for i in range(p.sensor_files):
        wr.write(f"sensors/{ident(rng)}_{i}.yaml", yaml_file(rng, w, sz(500, 5000), "sensors"))
    for i in range(p.script_files):
        wr.write(f"scripts/{ident(rng)}_{i}.yaml", yaml_file(rng, w, sz(400, 4000), "sensors"))
    for i in range(p.blueprints):
        author = rng.choice(["homeassistant", "EPMatt", "Blackshome", "vandalon", "freakshock88"])
        wr.write(f"blueprints/{rng.choice(['automation', 'script'])}/{author}/{ident(rng)}_{i}.yaml",
                 f"blueprint:\n  name: {ident(rng, 3)}\n  domain: automation\n  input:\n"
                 f"    target_light:\n      selector:\n        entity:\n          domain: light\n"
                 + yaml_file(rng, w, sz(1000, 9000), "automation"))
    for i in range(p.esphome):
        wr.write(f"esphome/{rng.choice(ROOMS).replace('_', '-')}-{i}.yaml",
                 esphome_yaml(rng, w, sz(800, 6000)))
    if p.esphome:
        wr.write("esphome/secrets.yaml", "wifi_ssid: !secret wifi_ssid\n")
    for i in range(p.themes):
        wr.write(f"themes/{ident(rng)}_{i}.yaml",
                 f"{ident(rng)}:\n" + "".join(f"  {ident(rng)}-color: \"#{hexid(rng, 3)}\"\n"
                                              for _ in range(rng.randint(30, 200))))
    for i in range(p.dashboards_yaml):
        wr.write(f"dashboards/{ident(rng)}_{i}.yaml",
                 # JSON is YAML; dashboards in YAML mode often are this verbose.
                 json.dumps(json.loads(lovelace(rng, w, rng.randint(5000, 45000), "x"))["data"]
                            ["config"], indent=2) + "\n")

    # .storage
    wr.write(".storage/core.entity_registry", entity_registry(rng, w))
    wr.write(".storage/core.device_registry", device_registry(rng, w))
    wr.write(".storage/core.restore_state", restore_state(rng, w))
    wr.write(".storage/trace.saved_traces", traces(rng, w, p.traces))
    wr.write(".storage/core.config_entries", generic_storage(rng, "core.config_entries", p.entities * 40))
    wr.write(".storage/auth", generic_storage(rng, "auth", max(3000, p.entities * 10)), 0o600)
    wr.write(".storage/auth_provider.homeassistant", generic_storage(rng, "auth_provider.homeassistant", 800), 0o600)
    wr.write(".storage/core.area_registry", generic_storage(rng, "core.area_registry", 3000))
    wr.write(".storage/core.config", storage("core.config", {"latitude": 52.52, "longitude": 13.4,
                                                            "elevation": 34, "unit_system_v2": "metric",
                                                            "location_name": "Home", "time_zone": "Europe/Berlin"}))
    wr.write(".storage/core.uuid", storage("core.uuid", {"uuid": hexid(rng)}))
    wr.write(".storage/onboarding", storage("onboarding", {"done": ["user", "core_config", "analytics", "integration"]}))
    wr.write(".storage/http", storage("http", {"use_x_forwarded_for": True}))
    wr.write(".storage/person", generic_storage(rng, "person", 1200))
    wr.write(".storage/lovelace", lovelace(rng, w, p.lovelace_size, "lovelace"))
    for i in range(1, p.lovelace_dashboards):
        wr.write(f".storage/lovelace.dashboard_{ident(rng, 1)}_{i}",
                 lovelace(rng, w, p.lovelace_size // 2, f"lovelace.dashboard_{i}"))
    extra_keys = ["hacs.repositories", "hacs.data", "core.analytics", "counter", "input_boolean",
                  "input_number", "input_select", "input_text", "timer", "schedule", "zone",
                  "tag", "energy", "homeassistant.exposed_entities", "assist_pipeline.pipelines",
                  "bluetooth.remote_scanners", "frontend.user_data", "mobile_app", "repairs.issue_registry",
                  "core.network", "backup", "cloud", "image", "application_credentials",
                  "core.label_registry", "core.floor_registry", "statistics_meta", "scene",
                  "esphome.devices", "zha.storage"]
    for i in range(p.extra_storage):
        key = extra_keys[i % len(extra_keys)] + ("" if i < len(extra_keys) else f"_{i}")
        big = key.startswith("hacs.repositories") or key.startswith("homeassistant.exposed")
        tgt = sz(500, 30000) if not big else p.entities * 250
        wr.write(f".storage/{key}", generic_storage(rng, key, tgt))

    # custom_components
    for i in range(p.integrations):
        dom = f"{rng.choice(PLATFORMS)}_{ident(rng, 1)}" if i else "safepoint_demo"
        if (cfg / "custom_components" / dom).exists():
            dom += f"_{i}"
        base = f"custom_components/{dom}"
        wr.write(f"{base}/manifest.json", json.dumps({
            "domain": dom, "name": ident(rng, 2).replace("_", " ").title(),
            "codeowners": [f"@{ident(rng, 1)}"], "config_flow": True, "documentation": f"https://example.invalid/{dom}",
            "iot_class": "local_polling", "requirements": [f"{ident(rng, 1)}=={rng.randint(0, 9)}.{rng.randint(0, 9)}"],
            "version": f"{rng.randint(0, 5)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"}, indent=2) + "\n")
        n_mod = rng.randint(*p.modules_per_integration)
        std = ["__init__", "const", "config_flow", "coordinator", "sensor", "binary_sensor",
               "switch", "light", "diagnostics", "entity", "api"]
        for j in range(n_mod):
            name = std[j] if j < len(std) else f"lib/{ident(rng)}_{j}"
            wr.write(f"{base}/{name}.py", python_module(rng, int(rng.lognormvariate(8.8, 0.7) * p.text_scale)))
        wr.write(f"{base}/services.yaml", yaml_file(rng, w, sz(500, 4000), "sensors"))
        wr.write(f"{base}/strings.json", translation_json(rng, sz(2000, 12000)))
        for lang in LANGS[:p.languages]:
            wr.write(f"{base}/translations/{lang}.json", translation_json(rng, sz(1500, 9000)))
        if i % 9 == 4:  # a few integrations ship a frontend panel
            wr.write(f"{base}/frontend/{dom}-panel.js", minified_js(rng, rng.randint(150_000, 900_000)))

    # www: frontend cards, images, a few big binaries
    for i in range(p.js_cards):
        card = f"{ident(rng).replace('_', '-')}-card"
        js = minified_js(rng, rng.randint(*p.js_card_size))
        wr.write(f"www/community/{card}/{card}.js", js)
        if size == "large":
            # HACS stores a gzip copy beside each card: already compressed, incompressible.
            wr.write(f"www/community/{card}/{card}.js.gz",
                     binary(rng, len(js) // 3, b"\x1f\x8b\x08\x00"))
    for i in range(p.images):
        kind = rng.choice([("png", b"\x89PNG\r\n\x1a\n"), ("jpg", b"\xff\xd8\xff\xe0"), ("webp", b"RIFF")])
        wr.write(f"www/images/{rng.choice(ROOMS)}_{i}.{kind[0]}",
                 binary(rng, rng.randint(*p.image_size), kind[1]))
    big = [("www/floorplan/floorplan_{}.png", b"\x89PNG\r\n\x1a\n"),
           ("www/videos/doorbell_{}.mp4", b"\x00\x00\x00\x20ftypisom"),
           ("www/sounds/chime_{}.mp3", b"ID3\x04"), ("www/fonts/icons_{}.woff2", b"wOF2")]
    for i in range(p.big_binaries):
        path, magic = big[i % len(big)]
        wr.write(path.format(i), binary(rng, rng.randint(*p.big_binary_size), magic))

    # Zigbee2MQTT data dir (as the add-on keeps it under /config/zigbee2mqtt).
    wr.write("zigbee2mqtt/configuration.yaml",
             "homeassistant: true\nmqtt:\n  server: mqtt://core-mosquitto:1883\n  user: addons\n"
             "serial:\n  port: /dev/ttyUSB0\nadvanced:\n  network_key: GENERATE\n  log_level: warn\n"
             "devices:\n" + "".join(f"  '0x{hexid(rng, 8)}':\n    friendly_name: {rng.choice(ROOMS)}/{rng.choice(THINGS)}_{k}\n"
                                   for k in range(max(5, p.entities // 40))))
    db_lines = []
    size_db = 0
    k = 0
    while size_db < p.z2m_db:
        line = json.dumps({"id": k, "type": "EndDevice", "ieeeAddr": f"0x{hexid(rng, 8)}",
                           "nwkAddr": rng.randint(0, 65535), "manufId": rng.randint(0, 5000),
                           "manufName": rng.choice(MANUFACTURERS), "modelId": rng.choice(THINGS),
                           "epList": [1], "endpoints": {"1": {"inClusterList": rng.sample(range(0, 1200), 6),
                                                             "clusters": {"genBasic": {"attributes": {
                                                                 "modelId": ident(rng), "swBuildId": hexid(rng, 4)}}}}},
                           "lastSeen": rng.randint(10**12, 2 * 10**12)})
        db_lines.append(line)
        size_db += len(line) + 1
        k += 1
    wr.write("zigbee2mqtt/database.db", "\n".join(db_lines) + "\n")
    wr.write("zigbee2mqtt/state.json", json.dumps({f"0x{hexid(rng, 8)}": {"state": "ON", "brightness": rng.randint(0, 254)}
                                                   for _ in range(max(5, p.entities // 20))}) + "\n")

    finish_tree(out, cfg)
    return {"files": wr.count, "bytes": wr.bytes}


# ----------------------------------------------------------------------------- scale trees

# Names with umlauts, accents, CJK and emoji, as people give their images, cards and folders.
NON_ASCII = [
    "küchenlicht", "wohnzimmer_über", "straße", "gemütlich", "größe", "türklingel", "café",
    "crème_brûlée", "façade", "élégant", "noël", "chauffe-eau", "客厅", "卧室灯", "温度计",
    "厨房", "🏠", "🌙_nacht", "🔥kamin", "💡licht", "ångström", "søvn", "señal", "żarówka",
]
NON_ASCII_SHARE = 0.03  # a few names per hundred files
MEDIA_KINDS = [("png", b"\x89PNG\r\n\x1a\n"), ("jpg", b"\xff\xd8\xff\xe0"), ("webp", b"RIFF")]
CARD_DIRS = ["", "dist", "dist/chunks", "components", "editor", "locales", "src/utils"]
LOCALE_DIRS = ["locales/deutsch_ä", "locales/français", "locales/中文", "locales/español_ñ"]
SCALE_MIN_FILES = 200
JS_STATEMENT_MEAN = 42  # characters, of js_statement()


class FastWriter(Writer):
    """Writer for the scale trees: creates each directory once, refuses to overwrite a file
    (so the count is exact) and sets mode and mtime through the open descriptor."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.top = str(root)
        self.dirs: set[str] = set()

    def write(self, rel: str, content: str | bytes, mode: int = 0o644) -> None:
        path = os.path.join(self.top, rel)
        parent = os.path.dirname(path)
        if parent not in self.dirs:
            os.makedirs(parent, exist_ok=True)
            self.dirs.add(parent)
        data = content.encode() if isinstance(content, str) else content
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            t = BASE_MTIME + self.count * 7
            os.utime(fd, (t, t))
        finally:
            os.close(fd)
        self.count += 1
        self.bytes += len(data)


def maybe_non_ascii(rng: random.Random, stem: str) -> str:
    """Gives a few names per hundred a non-ASCII part."""
    if rng.random() < NON_ASCII_SHARE:
        return f"{rng.choice(NON_ASCII)}_{stem}"
    return stem


def js_statements(rng: random.Random, n: int) -> list[str]:
    """A pool of minified-JS statements; the many small files are drawn from it."""
    return [js_statement(rng) for _ in range(n)]


def small_js(rng: random.Random, pool: list[str], target: int, name: str) -> str:
    head = (f"/*! {name} v{rng.randint(0, 5)}.{rng.randint(0, 30)}.{rng.randint(0, 20)} */"
            f"var _{hexid(rng, 4)}=\"{hexid(rng, 8)}\";")
    body = rng.choices(pool, k=max(1, (target - len(head)) // JS_STATEMENT_MEAN))
    return head + "".join(body) + "\n"


@dataclass
class ScalePlan:
    """How many files of each kind a scale tree of `files` files has (they add up exactly)."""
    files: int
    entities: int
    traces: int
    yaml: int
    media: int
    integrations: int
    integration_files: int
    gz: int
    js: int

    @staticmethod
    def for_count(n: int) -> "ScalePlan":
        fixed = 8 + 13 + 3  # root YAML, .storage, zigbee2mqtt
        yaml = max(10, n // 50)                # include trees: 2 %
        media = max(5, n // 100)               # incompressible images: 1 %
        integration_files = max(20, n // 10)
        integrations = max(1, integration_files // 60)
        gz = max(1, n * 8 // 100)              # .js.gz copies beside cards
        js = n - fixed - yaml - media - integration_files - gz
        return ScalePlan(files=n, entities=min(3000, max(200, n // 30)),
                         traces=min(2_000_000, max(100_000, n * 20)), yaml=yaml, media=media,
                         integrations=integrations, integration_files=integration_files,
                         gz=gz, js=js)


def scale_root_and_storage(rng: random.Random, w: World, wr: Writer, p: ScalePlan,
                           seed: int) -> None:
    """Root YAML, secrets, .storage (several MB at 100k files) and the Zigbee2MQTT dir."""
    wr.write("configuration.yaml",
             "homeassistant:\n  name: Home\n  packages: !include_dir_named packages\n"
             "  customize: !include customize.yaml\ndefault_config:\nfrontend:\n"
             "  themes: !include_dir_merge_named themes\nautomation ui: !include automations.yaml\n"
             "automation split: !include_dir_merge_list automations\n"
             "script: !include scripts.yaml\nscene: !include scenes.yaml\n"
             "group: !include groups.yaml\ntemplate: !include_dir_merge_list sensors\n")
    wr.write("automations.yaml", yaml_file(rng, w, min(600_000, p.files * 3), "automation"))
    wr.write("scripts.yaml", yaml_file(rng, w, min(150_000, p.files), "sensors"))
    wr.write("scenes.yaml", yaml_file(rng, w, min(60_000, p.files // 2), "sensors"))
    wr.write("groups.yaml", "".join(f"{ident(rng)}:\n  entities:\n" + "".join(
        f"    - {w.entity().entity_id}\n" for _ in range(6)) for _ in range(p.entities // 100)))
    wr.write("customize.yaml", "".join(f"{w.entity().entity_id}:\n  friendly_name: "
                                       f"{ident(rng, 2)}\n" for _ in range(p.entities // 20)))
    wr.write("secrets.yaml", f"backup_encryption_passphrase: \"{passphrase_for(seed)}\"\n"
             f"wifi_password: \"{hexid(rng, 12)}\"\nmqtt_password: \"{hexid(rng, 12)}\"\n", 0o600)
    wr.write(".HA_VERSION", "2024.11.3\n")
    wr.write(".storage/core.entity_registry", entity_registry(rng, w))
    wr.write(".storage/core.device_registry", device_registry(rng, w))
    wr.write(".storage/core.restore_state", restore_state(rng, w))
    wr.write(".storage/trace.saved_traces", traces(rng, w, p.traces))
    wr.write(".storage/lovelace", lovelace(rng, w, min(450_000, p.files * 4), "lovelace"))
    for key, target in (("core.config_entries", p.entities * 40), ("auth", 3000),
                        ("core.area_registry", 3000), ("core.config", 500), ("core.uuid", 100),
                        ("hacs.repositories", p.entities * 100), ("hacs.data", 20_000),
                        ("homeassistant.exposed_entities", p.entities * 60)):
        wr.write(f".storage/{key}", generic_storage(rng, key, target),
                 0o600 if key == "auth" else 0o644)
    wr.write("zigbee2mqtt/configuration.yaml", "homeassistant: true\nmqtt:\n"
             "  server: mqtt://core-mosquitto:1883\nserial:\n  port: /dev/ttyUSB0\n")
    wr.write("zigbee2mqtt/database.db", "".join(
        json.dumps({"id": k, "ieeeAddr": f"0x{hexid(rng, 8)}", "modelId": ident(rng),
                    "manufName": rng.choice(MANUFACTURERS)}) + "\n"
        for k in range(p.entities // 4)))
    wr.write("zigbee2mqtt/state.json", json.dumps({f"0x{hexid(rng, 8)}": {"state": "ON"}
                                                   for _ in range(p.entities // 20)}) + "\n")


def scale_yaml_and_media(rng: random.Random, w: World, wr: Writer, p: ScalePlan) -> None:
    """The include trees (automations/, packages/, sensors/, blueprints/, esphome/) and media."""
    dirs = [("automations/{room}", "automation"), ("packages", "package"), ("sensors", "sensors"),
            ("scripts", "sensors"), ("blueprints/automation/{author}", "automation"),
            ("esphome", "esphome")]
    for i in range(p.yaml):
        where, kind = dirs[i % len(dirs)]
        where = where.format(room=rng.choice(ROOMS), author=rng.choice(["EPMatt", "Blackshome"]))
        name = maybe_non_ascii(rng, f"{ident(rng)}_{i}")
        body = (esphome_yaml(rng, w, rng.randint(800, 4000)) if kind == "esphome"
                else yaml_file(rng, w, rng.randint(600, 4000), kind))
        wr.write(f"{where}/{name}.yaml", body)
    folders = ["www/images", "www/images/floorplan", "www/images/Küche", "www/images/客厅",
               "www/images/🎄_weihnachten", "www/images/cameras"]
    for i in range(p.media):
        ext, magic = MEDIA_KINDS[i % len(MEDIA_KINDS)]
        size = min(400_000, max(2_000, int(rng.lognormvariate(9.1, 0.8))))  # median 9 KB
        folder = folders[i % len(folders)]
        wr.write(f"{folder}/{maybe_non_ascii(rng, f'{rng.choice(ROOMS)}_{i}')}.{ext}",
                 binary(rng, size, magic))


def scale_integrations(rng: random.Random, wr: Writer, p: ScalePlan) -> None:
    """custom_components/: manifest, Python modules and translations per integration."""
    left = p.integration_files
    for i in range(p.integrations):
        count = left if i == p.integrations - 1 else left // (p.integrations - i)
        left -= count
        dom = f"{rng.choice(PLATFORMS)}_{ident(rng, 1)}_{i}"
        base = f"custom_components/{dom}"
        wr.write(f"{base}/manifest.json", json.dumps({"domain": dom, "version": f"1.{i}.0"}) + "\n")
        langs = min(len(LANGS), count // 4)
        for lang in LANGS[:langs]:
            wr.write(f"{base}/translations/{lang}.json", translation_json(rng, rng.randint(800, 4000)))
        for j in range(count - 1 - langs):
            sub = "" if j < 12 else f"lib/{ident(rng, 1)}/"
            name = maybe_non_ascii(rng, f"{ident(rng)}_{j}")
            target = min(40_000, int(rng.lognormvariate(6.4, 0.6)))  # most 0.7 KB, some ~4 KB
            wr.write(f"{base}/{sub}{name}.py", python_module(rng, target))


def scale_cards(rng: random.Random, wr: Writer, p: ScalePlan) -> None:
    """www/community/<card>/: thousands of small minified JS files, some with .js.gz copies."""
    pool = js_statements(rng, 4000)
    cards = max(2, p.js // 400)
    written = gz_written = 0
    for c in range(cards):
        card = f"{ident(rng).replace('_', '-')}-card-{c}"
        count = (p.js * (c + 1)) // cards - (p.js * c) // cards
        buckets = max(1, count // 120)  # at most ~120 files a directory
        subdirs = CARD_DIRS + [f"dist/chunks/{b:02x}" for b in range(buckets)]
        if c % 3 == 1:
            subdirs.append(rng.choice(LOCALE_DIRS))
        for j in range(count):
            sub = card if j == 0 else f"{card}/{subdirs[j % len(subdirs)]}".rstrip("/")
            name = card if j == 0 else maybe_non_ascii(rng, f"{hexid(rng, 4)}-{j}")
            target = min(60_000, int(rng.lognormvariate(6.98, 0.35)))  # median 1.05 KB
            js = small_js(rng, pool, target if j else target * 20, name)
            wr.write(f"www/community/{sub}/{name}.js", js)
            written += 1
            # Spread the .js.gz copies evenly: exactly p.gz of them.
            if (written * p.gz) // p.js > gz_written:
                wr.write(f"www/community/{sub}/{name}.js.gz",
                         binary(rng, max(64, len(js) // 3), b"\x1f\x8b\x08\x00"))
                gz_written += 1


def gen_scale_tree(out: Path, files: int, seed: int) -> dict:
    if files < SCALE_MIN_FILES:
        raise SystemExit(f"gen_tree: --files must be at least {SCALE_MIN_FILES}")
    p = ScalePlan.for_count(files)
    rng = random.Random(f"{seed}-n{files}")
    cfg = out / "config"
    if cfg.exists() and any(cfg.iterdir()):
        raise SystemExit(f"gen_tree: {cfg} exists and is not empty")
    w = World(rng, p.entities)
    wr = FastWriter(cfg)
    scale_root_and_storage(rng, w, wr, p, seed)
    scale_yaml_and_media(rng, w, wr, p)
    scale_integrations(rng, wr, p)
    scale_cards(rng, wr, p)
    if wr.count != files:
        raise SystemExit(f"gen_tree: wrote {wr.count} files, planned {files} (a bug)")
    finish_tree(out, cfg)
    return {"files": wr.count, "bytes": wr.bytes}


def tree_stats(root: Path, with_mtime: bool = True) -> dict:
    h = hashlib.sha256()
    files = 0
    total = 0
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            data = path.read_bytes()
            mtime = int(st.st_mtime) if with_mtime else 0
            h.update(f"{rel}\0{st.st_mode:o}\0{mtime}\0{len(data)}\0".encode())
            h.update(hashlib.sha256(data).digest())
            files += 1
            total += len(data)
    return {"files": files, "bytes": total, "sha256": h.hexdigest()}


def mutate(root: Path, fraction: float, seed: int, add_fraction: float = 0.01) -> dict:
    """Changes `fraction` of the files like an update would; returns counts."""
    rng = random.Random(f"mutate-{seed}")
    files = []
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        files += [Path(dirpath) / n for n in sorted(names)]
    files = [f for f in files if f.name != "secrets.yaml"]  # keep the passphrase readable
    chosen = rng.sample(files, max(1, round(len(files) * fraction)))
    changed = deleted = added = 0
    t = BASE_MTIME + 10_000_000
    for path in chosen:
        r = rng.random()
        if r < 0.1:
            path.unlink()
            deleted += 1
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096] or not data:
            # Binary: rewrite a slice in the middle.
            off = rng.randrange(max(1, len(data)))
            n = min(len(data) - off, 4096)
            data = data[:off] + rng.randbytes(n) + data[off + n:]
        else:
            text = data.decode("utf-8", "replace").splitlines(keepends=True)
            for _ in range(rng.randint(1, 5)):
                i = rng.randrange(len(text) + 1)
                text.insert(i, f"# updated {ident(rng)} {rng.randint(0, 10**6)}\n"
                            if path.suffix in (".yaml", ".py") else f"{ident(rng)}{rng.randint(0, 9)}")
            data = "".join(text).encode()
        path.write_bytes(data)
        os.utime(path, (t, t))
        changed += 1
    # New files an update brings (e.g. new integration modules and translations).
    for i in range(round(len(files) * add_fraction)):
        path = root / "custom_components" / "update_added" / f"{ident(rng)}_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(python_module(rng, rng.randint(1000, 12000)))
        os.utime(path, (t, t))
        added += 1
    return {"changed": changed, "deleted": deleted, "added": added, "files_before": len(files) + 1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tree", help="generate a tree and a safepoint config")
    t.add_argument("out", type=Path)
    shape = t.add_mutually_exclusive_group()
    shape.add_argument("--size", choices=sorted(PROFILES), help="a fixed tree (default: large)")
    shape.add_argument("--files", type=int, metavar="N",
                       help=f"a scale tree of exactly N files (N >= {SCALE_MIN_FILES})")
    t.add_argument("--seed", type=int, default=1)
    m = sub.add_parser("mutate", help="change a fraction of a generated tree's files")
    m.add_argument("dir", type=Path)
    m.add_argument("--fraction", type=float, default=0.05)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--add-fraction", type=float, default=0.01,
                   help="new files to add, as a fraction of the file count (default 0.01)")
    s = sub.add_parser("stats", help="count, size and content hash of a tree")
    s.add_argument("dir", type=Path)
    s.add_argument("--no-mtime", action="store_true", help="hash paths, modes and contents only")
    args = ap.parse_args()
    if args.cmd == "tree":
        if args.files is not None:
            result = gen_scale_tree(args.out.resolve(), args.files, args.seed)
        else:
            result = gen_tree(args.out.resolve(), args.size or "large", args.seed)
    elif args.cmd == "mutate":
        if not 0 < args.fraction <= 1:
            ap.error("--fraction must be in (0, 1]")
        result = mutate(args.dir.resolve(), args.fraction, args.seed, args.add_fraction)
    else:
        result = tree_stats(args.dir.resolve(), with_mtime=not args.no_mtime)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
