#!/usr/bin/env python3
"""Renders Home Assistant automation templates with Jinja2 against given entity states, for
tests/service/deploy_test.cc (the example automations' conditions, waits and payloads).

Reads one JSON object on stdin:
    {"states": {"<entity_id>": {"state": "...", "attributes": {...}}, ...},
     "variables": {...},
     "steps": [["<name>", "<template>"], ...],   # a `variables` action, rendered in order
     "template": "<template>"}
and prints the final template's result (stripped) on stdout.

Only what the examples use is modelled, the way Home Assistant does it: the functions states(),
is_state() and state_attr(); the tojson filter; and native types for variables (a rendered
variable that reads as a Python literal becomes that value, so "True" is a boolean and
"2026.12.1" stays a string).
"""

import ast
import json
import sys

try:
    import jinja2
except ImportError:
    sys.exit("render_ha_template.py needs Jinja2: apt-get install python3-jinja2")


def native(text):
    stripped = text.strip()
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return stripped
    if isinstance(value, (bool, int, float, list, dict, tuple)) or value is None:
        return value
    return stripped


def main():
    request = json.load(sys.stdin)
    states = request.get("states", {})

    def state(entity_id):
        entry = states.get(entity_id)
        return "unknown" if entry is None else entry.get("state", "unknown")

    def state_attr(entity_id, name):
        entry = states.get(entity_id)
        return None if entry is None else entry.get("attributes", {}).get(name)

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    env.globals.update(states=state, is_state=lambda e, s: state(e) == s, state_attr=state_attr)
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
    variables = dict(request.get("variables", {}))
    for name, template in request.get("steps", []):
        variables[name] = native(env.from_string(template).render(variables))
    print(env.from_string(request["template"]).render(variables).strip())


if __name__ == "__main__":
    main()
