#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for a bounded time and fails on any finding (crash,
# leak, sanitizer report, timeout, out-of-memory, a broken invariant):
#   tests/fuzz/run.sh [BUILD_DIR]        (default: build-fuzz)
# Environment: FUZZ_SECONDS per target (default 20: the 12 targets, two at a time on two cores,
# take about 2 minutes); FUZZ_JOBS targets at a time (default: the number of cores); FUZZERS
# to pick targets ("age tar"; default: every tests/fuzz/*_fuzzer.cc); SAFEPOINT_AGE_VECTORS, the
# dumped C2SP/CCTV age vectors (scripts/fetch-age-vectors.sh; fetched when missing); FUZZ_RUN_DIR
# for the working corpus and findings (default BUILD_DIR/fuzz-run; two runs at once need two
# directories).
#
# Each target starts from its committed seeds (tests/fuzz/corpus/<name>, required) plus seeds made
# at run time from real examples: every age vector in three modes, tars of a small Home Assistant
# tree, and a real safety point made by the fuzz build's own safepoint binary (both manifests, its
# age file and tar.zst, its fingerprint.json, the journal of a rollback to it, its secrets.yaml
# and configuration), the example configurations. A seed that cannot be made fails the run before
# any target starts. The working corpus and any crash reproducer stay in BUILD_DIR/fuzz-run/
# (reproduce one with: BUILD_DIR/tests/fuzz/<name>_fuzzer <file>).
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(realpath -- "${1:-$root/build-fuzz}")
seconds=${FUZZ_SECONDS:-20}
all=$(cd -- "$root/tests/fuzz" && for f in *_fuzzer.cc; do printf '%s ' "${f%_fuzzer.cc}"; done)
fuzzers=${FUZZERS:-$all}
# Inputs reach just past the largest documented limit a target checks (64 KiB MQTT payloads).
max_len=65552
run=$(realpath -m -- "${FUZZ_RUN_DIR:-$build/fuzz-run}")
rm -rf -- "$run"
mkdir -p -- "$run/artifacts" "$run/work"

die() {
  echo "run.sh: $*" >&2
  exit 2
}
parallel=${FUZZ_JOBS:-$(nproc)}
[[ "$parallel" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_JOBS must be a positive number, not '$parallel'"
for name in $fuzzers; do
  [[ -x "$build/tests/fuzz/${name}_fuzzer" ]] || die "missing $build/tests/fuzz/${name}_fuzzer"
  compgen -G "$root/tests/fuzz/corpus/$name/*" >/dev/null ||
    die "no committed seeds in tests/fuzz/corpus/$name"
  mkdir -p -- "$run/corpus/$name"
  cp -- "$root/tests/fuzz/corpus/$name"/* "$run/corpus/$name/"
done

# --- seeds from real examples ------------------------------------------------------------------
# Every seed below is required: a step that fails, or a file that is missing or empty, stops the
# run (a fuzzer that silently loses its best seeds still passes, having tested less).
seed() {  # <fuzzer> <name> <control byte as \xNN or ''> <file>
  [[ -s "$4" ]] || die "cannot make seed $1/$2: $4 is missing or empty"
  [[ -d "$run/corpus/$1" ]] || return 0
  { printf "$3"; cat -- "$4"; } > "$run/corpus/$1/$2"
}
sp_cli() {  # <what> <safepoint arguments...>: the fuzz build's binary on the seed configuration
  local what=$1
  shift
  ASAN_OPTIONS=detect_leaks=0 "$build/service/safepoint" --config "$sp/safepoint.yaml" "$@" \
    2>"$run/work/cli.err" || { cat "$run/work/cli.err" >&2; die "cannot make seeds: $what failed"; }
}

# Age vectors: every file in the three modes (header only, passphrase, fixed file key).
vectors=${SAFEPOINT_AGE_VECTORS:-}
for candidate in "$vectors" "$root/build/age-vectors" "$build/age-vectors"; do
  [[ -n "$candidate" && -d "$candidate" ]] && { vectors=$candidate; break; }
done
if [[ -z "$vectors" || ! -d "$vectors" ]]; then
  vectors="$build/age-vectors"
  "$root/scripts/fetch-age-vectors.sh" "$vectors" >/dev/null 2>&1 ||
    die "no age vectors: scripts/fetch-age-vectors.sh $vectors failed"
fi
compgen -G "$vectors/*" >/dev/null || die "no age vectors in $vectors"
if [[ -d "$run/corpus/age" ]]; then
  # A vector is "key: value" lines, a blank line, then the age file (the vector "empty" is an
  # empty file: a seed like any other). A vector without the blank line stops the run.
  # Cut at -max_len, as libFuzzer would (a few vectors are megabytes).
  python3 - "$vectors" "$run/corpus/age" "$max_len" <<'PY'
import os, sys
src, dst, max_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
for name in sorted(os.listdir(src)):
    data = open(os.path.join(src, name), "rb").read()
    body = data[data.index(b"\n\n") + 2:]
    for mode in range(3):
        with open(os.path.join(dst, f"{mode}-{name}"), "wb") as out:
            out.write((bytes([mode]) + body)[:max_len])
PY
fi

# Tars of a small tree: files, a directory, links inside and outside the root, long names.
tree="$run/work/tree"
mkdir -p -- "$tree/ha_config/.storage" "$tree/ha_config/blueprints/empty" "$tree/workspace/memory"
printf 'homeassistant:\n  name: Home\n' > "$tree/ha_config/configuration.yaml"
printf '{"data": {}}' > "$tree/ha_config/.storage/core.entity_registry"
printf '# notes\n' > "$tree/workspace/memory/notes.md"
ln -s configuration.yaml "$tree/ha_config/link.yaml"
ln -s ../../etc/passwd "$tree/ha_config/escape"
touch "$tree/ha_config/$(printf 'n%.0s' {1..150})"
( cd "$tree" && tar --format=pax -cf "$run/work/pax.tar" ha_config workspace &&
  tar --format=gnu -cf "$run/work/gnu.tar" ha_config/configuration.yaml ha_config/link.yaml &&
  tar --format=ustar -cf "$run/work/ustar.tar" workspace &&
  tar --format=pax -cf "$run/work/escape.tar" ha_config/escape &&
  tar --format=pax -P -cf "$run/work/dotdot.tar" ha_config/../workspace/memory/notes.md &&
  ln ha_config/configuration.yaml ha_config/hard.yaml &&
  tar --format=pax -cf "$run/work/hardlink.tar" ha_config/configuration.yaml ha_config/hard.yaml ) ||
  die "cannot make the tar seeds"
for t in pax gnu ustar escape dotdot hardlink; do
  seed tar "$t" '\x00' "$run/work/$t.tar"
  zstd -q -c "$run/work/$t.tar" > "$run/work/$t.tar.zst"
  seed tar "$t-zst" '\x01' "$run/work/$t.tar.zst"
done

# A real safety point made by this build's binary: both manifests, its age file, its tar.zst, its
# fingerprint, the journal of a rollback to it, its secrets file and configuration.
sp="$run/work/sp"
mkdir -p -- "$sp/config"
cp -r -- "$tree/ha_config/." "$sp/config/"
rm -f -- "$sp/config/escape"
printf 'backup_encryption_passphrase: "fuzz seed passphrase"\n' > "$sp/config/secrets.yaml"
chmod 600 "$sp/config/secrets.yaml"
printf 'paths:\n  ha_config: %s\n  workspace: %s\n  backup_dir: %s\nencryption:\n  scrypt_work_factor: 15\nsources:\n  logs: []\n' \
  "$sp/config" "$tree/workspace" "$sp/backups" > "$sp/safepoint.yaml"
sp_cli backup backup --reason "fuzz seed" >/dev/null
dir=$(find "$sp/backups" -mindepth 1 -maxdepth 1 -type d ! -name '.*' | head -n 1)
[[ -n "$dir" ]] || die "cannot make seeds: the backup made no safety point"
id=$(basename -- "$dir")
seed manifest outer '' "$dir/manifest.json"
seed age real-header '\x00' "$(find "$dir" -name 'state_*.enc' | head -n 1)"
sp_cli decrypt decrypt "$id" > "$run/work/real.tar.zst"
seed tar real-zst '\x01' "$run/work/real.tar.zst"
zstd -q -d -c "$run/work/real.tar.zst" > "$run/work/real.tar"
seed tar real '\x00' "$run/work/real.tar"
tar -xOf "$run/work/real.tar" MANIFEST.json > "$run/work/inner.json"
seed manifest inner '' "$run/work/inner.json"
{ cat "$run/work/inner.json"; printf '\0'; cat "$dir/manifest.json"; } > "$run/work/pair"
seed manifest pair '' "$run/work/pair"
sp_cli fingerprint fingerprint "$id" >/dev/null
seed fingerprint real '' "$dir/fingerprint.json"
printf 'changed\n' >> "$sp/config/configuration.yaml"
printf 'added\n' > "$sp/config/added.yaml"
sp_cli rollback rollback "$id" --yes --on-conflict overwrite >/dev/null
seed journal real '' "$(find "$sp/backups/.rollbacks" -name journal.json | head -n 1)"
seed secrets real '\x00' "$sp/config/secrets.yaml"
seed config real '' "$sp/safepoint.yaml"
seed config example '' "$root/deploy/safepoint.example.yaml"
seed config container '' "$root/deploy/container/safepoint.yaml"

# --- run ---------------------------------------------------------------------------------------
# The targets run FUZZ_JOBS at a time (default: one per core); each is single-threaded, so each
# still has a core for its FUZZ_SECONDS.
fuzz_one() {  # <name>: runs one target, leaves its exit code in $run/<name>.rc
  local name=$1 rc
  set +e
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/tests/fuzz/${name}_fuzzer" "$run/corpus/$name" -max_total_time="$seconds" \
    -timeout=20 -rss_limit_mb=2560 -max_len="$max_len" -print_final_stats=1 \
    -artifact_prefix="$run/artifacts/$name-" > "$run/$name.log" 2>&1
  rc=$?
  set -e
  echo "$rc" > "$run/$name.rc"
}
for name in $fuzzers; do
  while (( $(jobs -rp | wc -l) >= parallel )); do wait -n || true; done
  echo "== ${name}_fuzzer: ${seconds}s, $(ls "$run/corpus/$name" | wc -l) seeds =="
  fuzz_one "$name" &
done
wait
failed=()
for name in $fuzzers; do
  log="$run/$name.log"
  rc=$(cat "$run/$name.rc" 2>/dev/null || echo "no exit code")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  echo "   ${name}_fuzzer: exit $rc, ${execs:-?} execs, ${cov:-cov: ?}, corpus $(ls "$run/corpus/$name" | wc -l)"
  if [[ "$rc" != 0 ]] || ls "$run/artifacts/$name-"* >/dev/null 2>&1; then
    failed+=("$name")
    grep -E 'ERROR|SUMMARY|invariant|==[0-9]+==' "$log" | head -n 20 >&2 || true
    ls "$run/artifacts/$name-"* >&2 2>/dev/null || true
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzers with findings: ${failed[*]} (logs and reproducers in $run)" >&2
  exit 1
fi
echo "== all fuzzers ran clean =="
