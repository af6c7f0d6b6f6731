#!/usr/bin/env bash
# Benchmarks `safepoint backup` / `safepoint verify` against `tar | zstd -3 | age -p` /
# `age -d` and restic on generated Home-Assistant-like trees. Not part of the test suite.
#
#   bench/run.sh                      # both sizes, 5 runs each, median reported
#   RUNS=3 SIZES=small bench/run.sh   # quicker
#   SCALE="1000 10000 100000" RUNS=3 bench/run.sh   # scale mode: cost per file count
#
# Environment:
#   RUNS           repetitions per measurement (default 5); the median is reported
#   SIZES          "small large" (default), any subset
#   SCALE          file counts, e.g. "1000 10000 100000" (default empty): the scale mode runs
#                  instead of SIZES, on `gen_tree.py tree --files N` trees: backup, verify, list,
#                  diff, diff --patch (beside age extraction + diff -ruN) and rollback after a
#                  5% update, every run
#   SEED           generator seed (default 1)
#   BENCH_DIR      parent of the scratch dir (default /tmp); must be a local disk
#   SAFEPOINT_BIN  binary to measure (default: build-bench/service/safepoint, built when missing)
#   KEEP=1         keep the scratch dir (trees, outputs, raw results) for inspection
#   RESULTS        also copy the raw results (TSV) and the table (markdown) to this path prefix
#   ROLLBACK       auto (default: when `safepoint rollback` exists), 1 or 0: the rollback benchmark
#                  on the large tree
#   ROLLBACK_ADDED files the simulated update adds, as a fraction of the file count (0.01)
#   BENCH_NICE     run every measured command at this nice value (e.g. -20 on a shared, busy
#                  machine so the CPU share of the tools under test approaches an idle machine's;
#                  negative values need root); recorded in the report
#
# Every measurement is /usr/bin/time -f '%e %U %S %M' (wall s, user s, sys s, max RSS KiB) around
# the whole command; for a shell pipeline the RSS is that of its largest single process.
# The bash -c scripts below take their arguments as $1, $2: single quotes are intended.
# shellcheck disable=SC2016
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
runs="${RUNS:-5}"
sizes="${SIZES:-small large}"
scale="${SCALE:-}"
seed="${SEED:-1}"
bench_parent="${BENCH_DIR:-/tmp}"
sp="${SAFEPOINT_BIN:-$root/build-bench/service/safepoint}"
time_fmt='%e %U %S %M'

die() { echo "bench: $*" >&2; exit 1; }

[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
for s in $sizes; do [[ "$s" == small || "$s" == large ]] || die "unknown size '$s'"; done
for n in $scale; do
  if ! [[ "$n" =~ ^[1-9][0-9]*$ ]] || ((n < 200)); then
    die "SCALE: '$n' is not a file count >= 200"
  fi
done
if [[ -n "$scale" ]]; then sizes=""; fi
for tool in age zstd restic tar python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || die "missing tool: $tool (Debian packages age zstd restic time)"
done

if [[ ! -x "$sp" ]]; then
  [[ -z "${SAFEPOINT_BIN:-}" ]] || die "SAFEPOINT_BIN=$sp is not executable"
  echo "bench: building $sp (Release)" >&2
  cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSAFEPOINT_BUILD_TESTS=OFF >/dev/null
  cmake --build "$root/build-bench" --target safepoint -j2 >/dev/null
fi

pty_nice=()
if [[ -n "${BENCH_NICE:-}" ]]; then
  [[ "$BENCH_NICE" =~ ^-?[0-9]+$ ]] || die "BENCH_NICE must be an integer"
  # With autogroup scheduling, nice only orders tasks within a session: take a session of our
  # own and set its autogroup nice too (the pty sessions of the age runs do the same).
  if [[ -z "${SAFEPOINT_BENCH_SESSION:-}" ]] && [[ -w /proc/self/autogroup ]]; then
    SAFEPOINT_BENCH_SESSION=1 exec setsid -w "$0" "$@"
  fi
  renice -n "$BENCH_NICE" -p $$ >/dev/null || die "cannot renice to $BENCH_NICE"
  if [[ -w /proc/self/autogroup ]]; then
    echo "$BENCH_NICE" >"/proc/$$/autogroup" || die "cannot set the autogroup nice"
  fi
  pty_nice=(--autogroup-nice "$BENCH_NICE")
fi

mkdir -p "$bench_parent"
work="$(mktemp -d "$bench_parent/safepoint-bench.XXXXXX")"
cleanup() {
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "bench: kept $work" >&2
  else
    rm -rf -- "$work"
  fi
}
trap cleanup EXIT
results="$work/results.tsv"
printf 'size\ttool\top\trun\twall_s\tuser_s\tsys_s\tmaxrss_kib\tout_bytes\tload1\titems\n' \
  >"$results"

# Appends one result row from a /usr/bin/time output file (and the 1-minute load average).
# items: what the command reported (safety points listed, paths a diff found), else empty.
record() {  # size tool op run timefile out_bytes [items]
  local t load items="${7:-}"
  t="$(tail -n 1 "$5")"
  load="$(cut -d' ' -f1 /proc/loadavg)"
  # shellcheck disable=SC2086
  set -- "$1" "$2" "$3" "$4" "$6" $t
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$6" "$7" "$8" \
    "$9" "$5" "$load" "$items" >>"$results"
}

bytes_of() { find "$@" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

{
  echo "date:    $(date -Is)"
  echo "host:    $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
  echo "disk:    $(df -hT "$work" | awk 'NR == 2 {print $2, $1}')"
  echo "tools:   safepoint $("$sp" --version 2>&1 | head -n1), age $(age --version), zstd $(zstd --version | grep -o "v[0-9.]*" | head -n1)," \
    "$(restic version | cut -d' ' -f1-2)"
  echo "runs:    $runs per measurement (median); nice $(nice), autogroup" \
    "$(cut -d' ' -f2- /proc/self/autogroup 2>/dev/null || echo n/a)"
} | tee "$work/env.txt" >&2

# Rollback after an update changed 5% of the files (issue "Rollback", item 6): `safepoint
# rollback` vs extracting everything with `age -d | zstd -d | tar -x` or `restic restore` into an
# empty directory. On the large tree, or every run in scale mode.
rollback="${ROLLBACK:-auto}"
rollback_added="${ROLLBACK_ADDED:-0.01}"
if [[ "$rollback" == auto ]]; then
  if "$sp" rollback --help >/dev/null 2>&1; then rollback=1; else rollback=0; fi
fi
# Simulates an update (not timed): changes 5 % of the files in place, as an update does, so the
# other 95 % keep their inodes and times (what a stat-based comparison sees in a real home). The
# tree is reset from the pristine copy first only when no checked rollback has put it back
# (tree_clean=1: as generated, or restored exactly).
mutate_tree() {  # run
  if [[ "${tree_clean:-0}" != 1 ]]; then
    rm -rf "$tree"
    cp -a "$pristine" "$tree"
  fi
  tree_clean=0
  python3 "$here/gen_tree.py" mutate "$tree" --fraction 0.05 --seed "$1" \
    --add-fraction "$rollback_added" >"$work/mutate.json"
  sync  # the copy's dirty pages are not flushed during a timed command
}

# Timed rollbacks of the updated tree: safepoint (then the tree must equal the pristine copy),
# the age extraction and restic restore. Returns 1 (after reporting it) when safepoint failed.
rollback_once() {  # run
  local target="$work/restore" got
  # Without a post-update fingerprint every changed file is a conflict: overwrite them.
  if ! /usr/bin/time -o "$t" -f "$time_fmt" "$sp" --config "$cfg" rollback "$sp_id" --yes \
    --on-conflict overwrite >/dev/null 2>"$work/rollback.err"; then
    echo "rollback: FAILED ($size run $1, update $(cat "$work/mutate.json")): $(tail -n 1 \
      "$work/rollback.err")" | tee -a "$work/env.txt" >&2
    return 1
  fi
  record "$size" safepoint rollback "$1" "$t" 0
  got="$(python3 "$here/gen_tree.py" stats --no-mtime "$tree")"
  [[ "$got" == "$expected" ]] || die "$size rollback run $1 did not restore the tree exactly"
  tree_clean=1

  rm -rf "$target" && mkdir "$target"
  python3 "$here/pty_run.py" --secrets "$secrets" --answers 1 "${pty_nice[@]}" \
    --latency-file "$work/latency.txt" -- \
    /usr/bin/time -o "$t" -f "$time_fmt" bash -c \
    'set -o pipefail; age -d "$1" | zstd -d -q | tar -x -C "$2"' _ "$work/out.age" "$target"
  record "$size" age rollback "$1" "$t" 0

  rm -rf "$target" && mkdir "$target"
  /usr/bin/time -o "$t" -f "$time_fmt" restic -r "$work/restic-repo" restore latest -q \
    --target "$target" >/dev/null
  record "$size" restic rollback "$1" "$t" 0
  rm -rf "$target"
}

# Rollback of the large tree after an update changed 5% of its files (issue "Rollback", item 6),
# RUNS times from the last backup of each tool.
rollback_bench() {
  pristine="$dir/pristine"
  cp -a "$tree" "$pristine"
  tree_clean=1
  expected="$(python3 "$here/gen_tree.py" stats --no-mtime "$pristine")"
  for ((run = 1; run <= runs; run++)); do
    echo "bench: $size rollback run $run/$runs (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    mutate_tree "$run"
    rollback_once "$run" || break
  done
  rm -rf "$pristine"
}

# Generates the tree $dir/config of one size (gen_tree.py tree arguments after the directory).
prepare_tree() {  # gen_tree arguments...
  echo "bench: generating the $size tree" >&2
  python3 "$here/gen_tree.py" tree "$dir" "$@" --seed "$seed" >"$dir.gen.json"
  tree="$dir/config"
  cfg="$dir/safepoint.yaml"
  secrets="$tree/secrets.yaml"
  stats="$(python3 "$here/gen_tree.py" stats "$tree")"
  echo "$size tree: $stats" | tee -a "$work/env.txt" >&2
  # restic reads the same passphrase from its environment; never printed.
  RESTIC_PASSWORD="$(sed -n 's/^backup_encryption_passphrase: *"\(.*\)"$/\1/p' "$secrets")"
  [[ -n "$RESTIC_PASSWORD" ]] || die "no passphrase in $secrets"
  export RESTIC_PASSWORD
  export RESTIC_CACHE_DIR="$work/restic-cache"
  tar -C "$tree" -cf - . >/dev/null  # warm the page cache for every tool alike
}

# One run of backups and verifications, the three tools in a rotating order. In scale mode the
# safety points of earlier runs stay (for `list`); otherwise each backup starts empty.
backup_verify_run() {  # run
  local run="$1"
  echo "bench: $size run $run/$runs (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  t="$work/time.txt"

  # --- backups (the order rotates each run so no tool always goes first)
  order=(safepoint age restic)
  order=("${order[@]:$(((run - 1) % 3))}" "${order[@]:0:$(((run - 1) % 3))}")
  for tool in "${order[@]}"; do
    case "$tool" in
      safepoint)
        [[ -n "$scale" ]] || find "$dir/backups" -mindepth 1 -delete
        /usr/bin/time -o "$t" -f "$time_fmt" "$sp" --config "$cfg" --json backup \
          --reason bench >"$work/sp.json"
        sp_id="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])' \
          <"$work/sp.json")"
        record "$size" safepoint backup "$run" "$t" "$(bytes_of "$dir/backups/$sp_id")"
        ;;
      age)
        rm -f "$work/out.age"
        python3 "$here/pty_run.py" --secrets "$secrets" --answers 2 "${pty_nice[@]}" \
          --latency-file "$work/latency.txt" -- \
          /usr/bin/time -o "$t" -f "$time_fmt" bash -c \
          'set -o pipefail; tar -C "$1" -cf - . | zstd -3 -q | age -p >"$2"' _ \
          "$tree" "$work/out.age"
        record "$size" age backup "$run" "$t" "$(bytes_of "$work/out.age")"
        ;;
      restic)
        rm -rf "$work/restic-repo" "$RESTIC_CACHE_DIR"
        restic -r "$work/restic-repo" init -q >/dev/null
        /usr/bin/time -o "$t" -f "$time_fmt" restic -r "$work/restic-repo" backup -q \
          --host bench "$tree" >/dev/null
        record "$size" restic backup "$run" "$t" "$(bytes_of "$work/restic-repo")"
        ;;
    esac
  done

  # --- verify / decrypt everything
  for tool in "${order[@]}"; do
    case "$tool" in
      safepoint)
        /usr/bin/time -o "$t" -f "$time_fmt" "$sp" --config "$cfg" verify "$sp_id" >/dev/null
        record "$size" safepoint verify "$run" "$t" 0
        ;;
      age)
        python3 "$here/pty_run.py" --secrets "$secrets" --answers 1 "${pty_nice[@]}" \
          --latency-file "$work/latency.txt" -- \
          /usr/bin/time -o "$t" -f "$time_fmt" bash -c 'age -d "$1" >/dev/null' _ \
          "$work/out.age"
        record "$size" age verify "$run" "$t" 0
        ;;
      restic)
        /usr/bin/time -o "$t" -f "$time_fmt" restic -r "$work/restic-repo" check \
          --read-data -q >/dev/null
        record "$size" restic verify "$run" "$t" 0
        ;;
    esac
  done
}

# restic calibrates its own scrypt parameters at init; record them (no secrets in there).
restic_params() {
  python3 - "$work/restic-repo/keys" <<'PY' | tee -a "$work/env.txt" >&2
import json, os, sys
keys = sys.argv[1]
k = json.load(open(os.path.join(keys, sorted(os.listdir(keys))[0])))
print(f"restic:  repo key scrypt N=2^{k['N'].bit_length() - 1} r={k['r']} p={k['p']} "
      f"({128 * k['N'] * k['r'] / 2**20:.0f} MiB); safepoint and age: N=2^18 r=8 p=1 (256 MiB)")
PY
}

# Scale mode: the cost of one key derivation, measured as `age -d` of a 1-byte file (scrypt
# N=2^18 r=8 p=1, the same work factor as safepoint's). The diff target is 1 s + this.
kdf_bench() {
  printf 'x' >"$work/kdf.txt"
  python3 "$here/pty_run.py" --secrets "$secrets" --answers 2 "${pty_nice[@]}" -- \
    bash -c 'age -p -o "$2" "$1"' _ "$work/kdf.txt" "$work/kdf.age" >/dev/null
  for ((run = 1; run <= runs; run++)); do
    python3 "$here/pty_run.py" --secrets "$secrets" --answers 1 "${pty_nice[@]}" \
      --latency-file "$work/latency.txt" -- \
      /usr/bin/time -o "$t" -f "$time_fmt" bash -c 'age -d "$1" >/dev/null' _ "$work/kdf.age"
    record kdf age kdf "$run" "$t" 0
  done
  rm -f "$work/kdf.txt" "$work/kdf.age"
}

# Scale mode, after a run's backups: `safepoint list` over the safety points kept so far, the
# 5% update, `safepoint diff` of it and the three rollbacks.
scale_ops_run() {  # run
  local run="$1" items
  /usr/bin/time -o "$t" -f "$time_fmt" "$sp" --config "$cfg" --json list >"$work/list.json" \
    || die "$size run $run: safepoint list failed"
  items="$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))' \
    <"$work/list.json")"
  record "$size" safepoint list "$run" "$t" 0 "$items"

  mutate_tree "$run"
  # diff exits 0 also when there are differences or the rollback would stop (docs/cli.md).
  /usr/bin/time -o "$t" -f "$time_fmt" "$sp" --config "$cfg" --json diff "$sp_id" \
    >"$work/diff.json" || die "$size run $run: safepoint diff exited $? (0 is documented)"
  items="$(python3 -c 'import json,sys; s = json.load(sys.stdin)["data"]["summary"]
print(sum(v for k, v in s.items() if k != "unchanged"))' <"$work/diff.json")"
  record "$size" safepoint diff "$run" "$t" 0 "$items"

  # The content diff, beside its peer: extract the age pipeline's archive and `diff -ruN` it
  # with the live tree (diff exits 1 when the trees differ).
  /usr/bin/time -o "$t" -f "$time_fmt" "$sp" --config "$cfg" --json diff "$sp_id" --patch \
    >"$work/patch.json" || die "$size run $run: safepoint diff --patch exited $?"
  items="$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["files"]))' \
    <"$work/patch.json")"
  record "$size" safepoint patch "$run" "$t" 0 "$items"
  rm -rf "$work/restore" && mkdir "$work/restore"
  python3 "$here/pty_run.py" --secrets "$secrets" --answers 1 "${pty_nice[@]}" \
    --latency-file "$work/latency.txt" -- \
    /usr/bin/time -o "$t" -f "$time_fmt" bash -c \
    'set -o pipefail; age -d "$1" | zstd -d -q | tar -x -C "$2" &&
     { diff -ruN "$2" "$3" >"$4"; [ $? -le 1 ]; }' _ \
    "$work/out.age" "$work/restore" "$tree" "$work/patch.txt"
  record "$size" age patch "$run" "$t" 0
  rm -rf "$work/restore"

  if [[ "$scale_rollback" == 1 ]]; then
    rollback_once "$run" || scale_rollback=0
  fi
}

t="$work/time.txt"
for size in $sizes; do
  dir="$work/$size"
  prepare_tree --size "$size"
  for ((run = 1; run <= runs; run++)); do
    backup_verify_run "$run"
  done
  restic_params
  if [[ "$size" == large && "$rollback" == 1 ]]; then
    rollback_bench
  fi
  unset RESTIC_PASSWORD
  rm -rf "$dir" "$work/restic-repo" "$RESTIC_CACHE_DIR" "$work/out.age"
done

for n in $scale; do
  size="n$n"
  dir="$work/$size"
  prepare_tree --files "$n"
  if [[ -z "${kdf_done:-}" ]]; then kdf_bench && kdf_done=1; fi
  pristine="$dir/pristine"
  cp -a "$tree" "$pristine"
  tree_clean=1
  expected="$(python3 "$here/gen_tree.py" stats --no-mtime "$pristine")"
  scale_rollback="$rollback"
  for ((run = 1; run <= runs; run++)); do
    if [[ "$tree_clean" != 1 ]]; then  # no rollback put the tree back
      rm -rf "$tree"
      cp -a "$pristine" "$tree"
      tree_clean=1
    fi
    backup_verify_run "$run"
    scale_ops_run "$run"
  done
  restic_params
  unset RESTIC_PASSWORD
  rm -rf "$dir" "$work/restic-repo" "$RESTIC_CACHE_DIR" "$work/out.age"
done

echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (at end)" | tee -a "$work/env.txt" >&2
# The raw results are kept first, so a report that fails loses no measurement.
[[ -z "${RESULTS:-}" ]] || cp "$results" "$RESULTS.tsv"
python3 "$here/report.py" "$results" --env "$work/env.txt" --latency "$work/latency.txt" \
  | tee "$work/table.md"
[[ -z "${RESULTS:-}" ]] || cp "$work/table.md" "$RESULTS.md"
