#!/usr/bin/env python3
"""Restarts Home Assistant Core through the Supervisor API (a safepoint `restart` command).

safepoint runs it without a shell after a rollback changed the configuration. The token comes
from the environment ($SUPERVISOR_TOKEN) and never appears in a process list or a log.
"""

import os
import sys
import urllib.request


def main():
    token = os.environ.get("SUPERVISOR_TOKEN")
    if not token:
        print("restart_core: SUPERVISOR_TOKEN is not set", file=sys.stderr)
        return 2
    request = urllib.request.Request("http://supervisor/core/restart", data=b"", method="POST",
                                     headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(request, timeout=280) as response:
            print(f"restart_core: Supervisor answered {response.status}")
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"restart_core: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
