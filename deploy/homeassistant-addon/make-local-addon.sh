#!/usr/bin/env bash
# Assembles the safepoint add-on in a folder the Supervisor builds from, usually the `addons`
# share of Home Assistant OS (reach it with the Samba or SSH add-on):
#   deploy/homeassistant-addon/make-local-addon.sh /addons/safepoint
# It copies this folder and the sources it needs (src/); then, in Home Assistant: Settings >
# Add-ons > Add-on store > ... > Check for updates, and install "safepoint" from Local add-ons.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 <add-on folder>" >&2
  exit 2
fi
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
out=$(realpath -m -- "$1")
mkdir -p -- "$out/src" "$out/translations"
cp -- "$here"/{config.yaml,Dockerfile,run.sh,addon_config.py,restart_core.py,DOCS.md} "$out/"
cp -- "$here"/translations/*.yaml "$out/translations/"
for part in CMakeLists.txt cmake core mqtt discovery service scripts; do
  [[ -e "$root/$part" ]] && cp -R -- "$root/$part" "$out/src/"
done
echo "safepoint add-on assembled in $out"
