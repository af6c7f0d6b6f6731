#!/usr/bin/env python3
"""Summarizes bench/run.sh results: medians, ratios and the targets, as a markdown table.

  report.py results.tsv [--env env.txt] [--latency latency.txt] [--work-factor 18]

Targets (issue "Foundation", item 7):
  large backup wall   <= 0.70 x the tar | zstd -3 | age -p pipeline
  small backup wall   <= 1.05 x the age pipeline
  verify wall         <= 1.00 x age -d (both sizes)
  peak RSS            <= scrypt memory (128 * r * N = 256 MiB at work factor 18) + 64 MiB,
                         for backup and verify at both sizes

Scale mode (rows whose size is nN, N files; issue "Performance at scale"): a table per N, the
cost per file count of each safepoint operation, and the targets
  backup wall at 100k files   <= 0.80 x the age pipeline
  rollback wall at 100k files <= 0.50 x age -d | zstd -d | tar -x
  peak RSS                    <= 256 + 64 MiB for backup, verify, diff and rollback at every N
  diff wall                   <= 1 s + one key derivation (the median `age -d` of a 1-byte file)
  diff --patch wall           <= 1 s + one key derivation (issue "What did the update change?",
                                 at 5,000 files; reported at every N, beside GNU diff -ruN of an
                                 age extraction)
  list                        < 100 ms wall and < 32 MiB peak RSS at every N
When 100k is not among the counts, the 100k targets are checked at the largest N (and say so).
Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
from collections import defaultdict

TOOLS = ["safepoint", "age", "restic"]
TOOL_LABEL = {
    "backup": {"safepoint": "safepoint backup", "age": "tar \\| zstd -3 \\| age -p",
               "restic": "restic backup"},
    "verify": {"safepoint": "safepoint verify", "age": "age -d > /dev/null",
               "restic": "restic check --read-data"},
    "rollback": {"safepoint": "safepoint rollback (5% changed)",
                 "age": "age -d \\| zstd -d \\| tar -x (empty dir)",
                 "restic": "restic restore (empty dir)"},
    "patch": {"safepoint": "safepoint --json diff ID --patch (5% changed)",
              "age": "age -d \\| zstd -d \\| tar -x, then diff -ruN"},
}
OPS = ("backup", "verify", "rollback")
SCALE_OPS = ("backup", "verify", "list", "diff", "patch", "rollback")
SCALE_LABEL = {"list": "safepoint --json list", "diff": "safepoint --json diff ID (5% changed)"}


def fixed_tables(sizes, rows, med, cpu) -> list[str]:
    """The table and the ratios of the small and large trees."""
    out = ["| tree | operation | tool | wall s | CPU s (user+sys) | peak RSS MiB | output MB "
           "| wall vs safepoint |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for size in sizes:
        for op in OPS:
            if not rows[(size, "safepoint", op)]:
                continue
            base = med((size, "safepoint", op), "wall_s")
            for tool in TOOLS:
                key = (size, tool, op)
                if not rows[key]:
                    continue
                wall = med(key, "wall_s")
                outb = med(key, "out_bytes")
                out.append(
                    f"| {size} | {op} | {TOOL_LABEL[op][tool]} | {wall:.2f} | {cpu(key):.2f} | "
                    f"{med(key, 'maxrss_kib') / 1024:.0f} | "
                    f"{(f'{outb / 1e6:.2f}' if op == 'backup' else '-')} | "
                    f"{'1.00' if tool == 'safepoint' else f'{base / wall:.2f}x'} |")
    out.append("")
    out.append("Ratios (safepoint / peer, median wall time; < 1 means safepoint is faster):")
    out.append("")
    out.append("| tree | operation | safepoint / age | safepoint / restic | CPU: safepoint / age "
               "| CPU: safepoint / restic |")
    out.append("|---|---|---:|---:|---:|---:|")
    for size in sizes:
        for op in OPS:
            if not rows[(size, "safepoint", op)]:
                continue
            sp = med((size, "safepoint", op), "wall_s")
            a = med((size, "age", op), "wall_s")
            r = med((size, "restic", op), "wall_s")
            spc, ac, rc = (cpu((size, t, op)) for t in TOOLS)
            out.append(f"| {size} | {op} | {sp / a:.2f} | {sp / r:.2f} | {spc / ac:.2f} | "
                       f"{spc / rc:.2f} |")
    return out


def growth(big, small):
    """big / small as "2.5x"; "-" when the small run took no measurable time (list at 1k files
    takes under 10 ms, which /usr/bin/time reports as 0.00)."""
    return f"{big / small:.1f}x" if small > 0 else "-"


def scale_report(rows, med, cpu, env_text: str, rss_limit: float) -> tuple[list[str], list]:
    """Tables and targets for the scale rows (size nN)."""
    counts = sorted({int(k[0][1:]) for k in rows if k[0][1:].isdigit() and k[0][0] == "n"})
    out: list[str] = []
    targets: list = []
    if not counts:
        return out, targets

    def peak(key) -> float:
        return max(float(r["maxrss_kib"]) for r in rows[key]) / 1024

    def items(key) -> str:
        vals = sorted({r.get("items") or "" for r in rows[key]} - {""}, key=int)
        return "/".join(vals)

    for n in counts:
        size = f"n{n}"
        out.append(f"Scale: {n:,} files (medians; peak RSS: max over the runs)")
        out.append("")
        out.append("| operation | tool | wall s | CPU s | peak RSS MiB | output MB | "
                   "safepoint / tool: wall | CPU |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for op in SCALE_OPS:
            base = (size, "safepoint", op)
            if not rows[base]:
                continue
            for tool in TOOLS:
                key = (size, tool, op)
                if not rows[key]:
                    continue
                label = SCALE_LABEL.get(op) or TOOL_LABEL[op][tool]
                if op == "list":
                    label += f" (safety points: {items(key)})"
                elif op == "diff":
                    label += f" (paths that differ: {items(key)})"
                elif op == "patch" and tool == "safepoint":
                    label += f" (files: {items(key)})"
                outb = med(key, "out_bytes")
                ratio = ("-" if tool == "safepoint" else
                         f"{med(base, 'wall_s') / med(key, 'wall_s'):.2f} | "
                         f"{cpu(base) / cpu(key):.2f}")
                out.append(f"| {op} | {label} | {med(key, 'wall_s'):.2f} | {cpu(key):.2f} | "
                           f"{peak(key):.0f} | {(f'{outb / 1e6:.2f}' if op == 'backup' else '-')}"
                           f" | {ratio if tool != 'safepoint' else '- | -'} |")
        out.append("")

    out.append("Cost per file count (safepoint; medians, peak RSS max over the runs; µs per "
               "file = median / files):")
    out.append("")
    out.append("| operation | files | wall s | CPU s | peak RSS MiB | wall µs/file | CPU µs/file |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for op in SCALE_OPS:
        for n in counts:
            key = (f"n{n}", "safepoint", op)
            if not rows[key]:
                continue
            wall, c = med(key, "wall_s"), cpu(key)
            out.append(f"| {op} | {n:,} | {wall:.2f} | {c:.2f} | {peak(key):.0f} | "
                       f"{wall / n * 1e6:.1f} | {c / n * 1e6:.1f} |")
    lo, hi = counts[0], counts[-1]
    if hi > lo:
        out.append("")
        out.append(f"From {lo:,} to {hi:,} files ({hi / lo:.0f}x the files): the growth of time, "
                   "the time each added file costs (the fixed part, e.g. the key derivation, "
                   "drops out) and the growth of memory.")
        out.append("")
        out.append("| operation | wall growth | CPU growth | wall µs per added file | peak RSS MiB at "
                   f"{lo:,} | at {hi:,} | RSS delta MiB |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for op in SCALE_OPS:
            a, b = (f"n{lo}", "safepoint", op), (f"n{hi}", "safepoint", op)
            if not rows[a] or not rows[b]:
                continue
            added = (med(b, "wall_s") - med(a, "wall_s")) / (hi - lo) * 1e6
            out.append(f"| {op} | {growth(med(b, 'wall_s'), med(a, 'wall_s'))} | "
                       f"{growth(cpu(b), cpu(a))} | {added:.1f} | {peak(a):.0f} | {peak(b):.0f} | "
                       f"{peak(b) - peak(a):+.0f} |")

    # Targets.
    at = 100000 if 100000 in counts else hi
    note = "" if at == 100000 else f" (set for 100,000 files; measured at {at:,})"
    size = f"n{at}"
    if rows[(size, "safepoint", "backup")] and rows[(size, "age", "backup")]:
        ratio = med((size, "safepoint", "backup"), "wall_s") / med((size, "age", "backup"), "wall_s")
        targets.append((f"backup wall at 100,000 files <= 0.80x age pipeline{note}",
                        f"{ratio:.2f}x", ratio <= 0.80))
    if f"rollback: FAILED ({size} " in env_text:
        targets.append((f"rollback wall at 100,000 files <= 0.50x age extraction{note}",
                        "safepoint rollback failed", False))
    elif rows[(size, "safepoint", "rollback")] and rows[(size, "age", "rollback")]:
        ratio = (med((size, "safepoint", "rollback"), "wall_s") /
                 med((size, "age", "rollback"), "wall_s"))
        targets.append((f"rollback wall at 100,000 files <= 0.50x age extraction{note}",
                        f"{ratio:.2f}x", ratio <= 0.50))
    kdf = med(("kdf", "age", "kdf"), "wall_s") if rows[("kdf", "age", "kdf")] else None
    for n in counts:
        size = f"n{n}"
        ops = [op for op in ("backup", "verify", "diff", "rollback") if rows[(size, "safepoint", op)]]
        if ops:
            worst = max(ops, key=lambda op: peak((size, "safepoint", op)))
            got = peak((size, "safepoint", worst))
            targets.append((f"{n:,} files: peak RSS of {', '.join(ops)} <= {rss_limit:.0f} MiB",
                            f"{got:.0f} MiB ({worst})", got <= rss_limit))
        if f"rollback: FAILED ({size} " in env_text:
            targets.append((f"{n:,} files: safepoint rollback", "failed", False))
        if rows[(size, "safepoint", "diff")]:
            wall = med((size, "safepoint", "diff"), "wall_s")
            if kdf is None:
                targets.append((f"{n:,} files: diff wall <= 1 s + KDF (not measured)",
                                f"{wall:.2f} s", None))
            else:
                targets.append((f"{n:,} files: diff wall <= 1 s + KDF ({kdf:.2f} s, `age -d` "
                                f"of 1 byte) = {1 + kdf:.2f} s", f"{wall:.2f} s",
                                wall <= 1 + kdf))
        if rows[(size, "safepoint", "patch")]:
            wall = med((size, "safepoint", "patch"), "wall_s")
            limit = 1 + kdf if kdf is not None else None
            targets.append((f"{n:,} files: diff --patch wall <= 1 s + KDF"
                            + (f" = {limit:.2f} s" if limit else " (KDF not measured)"),
                            f"{wall:.2f} s", None if limit is None else wall <= limit))
        if rows[(size, "safepoint", "list")]:
            key = (size, "safepoint", "list")
            wall, rss = med(key, "wall_s"), peak(key)
            targets.append((f"{n:,} files: list < 100 ms and < 32 MiB (safety points: "
                             f"{items(key)}; wall in steps of 10 ms)",
                            f"{wall * 1000:.0f} ms, {rss:.1f} MiB", wall < 0.1 and rss < 32))
    return out, targets


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--env")
    ap.add_argument("--latency")
    ap.add_argument("--work-factor", type=int, default=18)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()

    rows: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    with open(args.results, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            rows[(r["size"], r["tool"], r["op"])].append(r)

    def med(key, field) -> float:
        vals = [float(r[field]) for r in rows[key]]
        return statistics.median(vals) if vals else float("nan")

    def cpu(key) -> float:
        vals = [float(r["user_s"]) + float(r["sys_s"]) for r in rows[key]]
        return statistics.median(vals) if vals else float("nan")

    sizes = [s for s in ("small", "large") if any(k[0] == s for k in rows)]
    out = []
    if args.env:
        out.append("```")
        with open(args.env, encoding="utf-8") as f:
            out.extend(line.rstrip("\n") for line in f)
        if args.latency:
            try:
                with open(args.latency, encoding="ascii") as f:
                    lat = [float(x) for x in f if x.strip()]
                out.append(f"pty:     passphrase typed {len(lat)} times, prompt-to-answer "
                           f"max {max(lat) * 1000:.2f} ms (inside the age timings)")
            except (OSError, ValueError):
                pass
        out.append("```")
        out.append("")

    scrypt_mib = 128 * 8 * (1 << args.work_factor) / (1 << 20)
    rss_limit = scrypt_mib + 64
    env_text = open(args.env, encoding="utf-8").read() if args.env else ""
    scale_out, scale_targets = scale_report(rows, med, cpu, env_text, rss_limit)
    if sizes or not scale_out:
        out.extend(fixed_tables(sizes, rows, med, cpu))
    out.extend(scale_out)
    loads = [float(r["load1"]) for rs in rows.values() for r in rs if r.get("load1")]
    if loads:
        out.append("")
        out.append(f"1-minute load average during the measurements: {min(loads):.2f} .. "
                   f"{max(loads):.2f} (median {statistics.median(loads):.2f}) on {args.cpus} CPUs.")

    targets = []
    for size, limit in (("large", 0.70), ("small", 1.05)):
        if size in sizes:
            ratio = med((size, "safepoint", "backup"), "wall_s") / med((size, "age", "backup"), "wall_s")
            targets.append((f"{size} backup wall <= {limit:.2f}x age pipeline", f"{ratio:.2f}x",
                            ratio <= limit))
    for size in sizes:
        ratio = med((size, "safepoint", "verify"), "wall_s") / med((size, "age", "verify"), "wall_s")
        targets.append((f"{size} verify wall <= 1.00x age -d", f"{ratio:.2f}x", ratio <= 1.0))
    if "rollback: FAILED (large " in env_text:
        targets.append(("large rollback wall <= 0.70x age -d \\| zstd -d \\| tar -x",
                        "safepoint rollback failed", False))
    elif rows[("large", "safepoint", "rollback")]:
        ratio = (med(("large", "safepoint", "rollback"), "wall_s") /
                 med(("large", "age", "rollback"), "wall_s"))
        targets.append(("large rollback wall <= 0.70x age -d \\| zstd -d \\| tar -x",
                        f"{ratio:.2f}x", ratio <= 0.70))
    for size in sizes:
        peak = max(max(float(r["maxrss_kib"]) for r in rows[(size, "safepoint", op)])
                   for op in OPS if rows[(size, "safepoint", op)]) / 1024
        targets.append((f"{size} peak RSS <= {scrypt_mib:.0f} + 64 = {rss_limit:.0f} MiB "
                        f"(max over all runs)", f"{peak:.0f} MiB", peak <= rss_limit))
    out.append("")
    out.append("| target | measured | result |")
    out.append("|---|---:|---|")
    for name, got, ok in targets + scale_targets:
        result = "-" if ok is None else "PASS" if ok else "MISS"
        out.append(f"| {name} | {got} | {result} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
