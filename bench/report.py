#!/usr/bin/env python3
"""Summarizes bench/run.sh results: medians, ratios and the targets, as a markdown table.

  report.py results.tsv [--env env.txt] [--latency latency.txt] [--work-factor 18]

Targets (issue "Foundation", item 7):
  large backup wall   <= 0.70 x the tar | zstd -3 | age -p pipeline
  small backup wall   <= 1.05 x the age pipeline
  verify wall         <= 1.00 x age -d (both sizes)
  peak RSS            <= scrypt memory (128 * r * N = 256 MiB at work factor 18) + 64 MiB,
                         for backup and verify at both sizes
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
}
OPS = ("backup", "verify", "rollback")


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

    out.append("| tree | operation | tool | wall s | CPU s (user+sys) | peak RSS MiB | output MB "
               "| wall vs safepoint |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|")
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
    loads = [float(r["load1"]) for rs in rows.values() for r in rs if r.get("load1")]
    if loads:
        out.append("")
        out.append(f"1-minute load average during the measurements: {min(loads):.2f} .. "
                   f"{max(loads):.2f} (median {statistics.median(loads):.2f}) on {args.cpus} CPUs.")

    scrypt_mib = 128 * 8 * (1 << args.work_factor) / (1 << 20)
    rss_limit = scrypt_mib + 64
    targets = []
    for size, limit in (("large", 0.70), ("small", 1.05)):
        if size in sizes:
            ratio = med((size, "safepoint", "backup"), "wall_s") / med((size, "age", "backup"), "wall_s")
            targets.append((f"{size} backup wall <= {limit:.2f}x age pipeline", f"{ratio:.2f}x",
                            ratio <= limit))
    for size in sizes:
        ratio = med((size, "safepoint", "verify"), "wall_s") / med((size, "age", "verify"), "wall_s")
        targets.append((f"{size} verify wall <= 1.00x age -d", f"{ratio:.2f}x", ratio <= 1.0))
    env_text = open(args.env, encoding="utf-8").read() if args.env else ""
    if "rollback: FAILED" in env_text:
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
    for name, got, ok in targets:
        out.append(f"| {name} | {got} | {'PASS' if ok else 'MISS'} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
