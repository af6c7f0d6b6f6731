#!/usr/bin/env python3
"""Lists product functions longer than a limit (default 80 lines) and files over 600 lines.

A function counts from the line of its opening brace to its closing brace. One whose body or
the comment lines just above it say why it is long ("long because", "one page because" or
"length:") is listed as explained and does not fail the check.

  scripts/long-functions.py            # report; exit 1 when an unexplained one is found
  scripts/long-functions.py --limit 60
"""
import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRODUCT_DIRS = ["core", "mqtt", "discovery", "service"]
REASON = re.compile(r"long because|one page because|length:", re.IGNORECASE)
# A definition line: a name (maybe qualified) followed by "(" and, after the parameter list, "{"
# at the end of the line or the next ones. Control statements and lambdas are not definitions.
NOT_A_FUNCTION = re.compile(r"^\s*(if|for|while|switch|catch|return|else|do)\b|\[.*\]\s*\(")


def strip(line):
    """Drops string literals and // comments so braces inside them do not count."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])*'", "''", line)
    return line.split("//")[0]


def functions(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    depth = 0
    i = 0
    scope_depths = []  # depths at which a namespace/class/struct body opened
    while i < len(lines):
        code = strip(lines[i])
        opens = code.count("{")
        closes = code.count("}")
        at_top = depth == (scope_depths[-1] if scope_depths else 0)
        if at_top and opens > closes and re.search(r"^\s*(namespace|class|struct|enum|union)\b|^\s*extern", code):
            scope_depths.append(depth + 1)
            depth += opens - closes
            i += 1
            continue
        if at_top and opens > 0 and not NOT_A_FUNCTION.search(code):
            # Find the signature: this line, or the lines above up to the last blank/; line.
            start = i
            while start > 0 and strip(lines[start - 1]).strip() and not strip(lines[start - 1]).rstrip().endswith((";", "}", "{")):
                start -= 1
            signature = " ".join(strip(l).strip() for l in lines[start:i + 1])
            if "(" in signature and "=" not in signature.split("(")[0]:
                name = signature.split("(")[0].split()[-1] if signature.split("(")[0].split() else "?"
                d = depth
                j = i
                body_depth = d
                while j < len(lines):
                    c = strip(lines[j])
                    body_depth += c.count("{") - c.count("}")
                    if body_depth <= d and j > i or (j == i and body_depth == d and "}" in c):
                        break
                    j += 1
                length = j - i + 1
                comment_start = start
                while comment_start > 0 and lines[comment_start - 1].strip().startswith("//"):
                    comment_start -= 1
                text = "\n".join(lines[comment_start:j + 1])
                yield name, i + 1, length, bool(REASON.search(text))
                i = j + 1
                continue
        depth += opens - closes
        while scope_depths and depth < scope_depths[-1]:
            scope_depths.pop()
        i += 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=80)
    parser.add_argument("--file-limit", type=int, default=600)
    args = parser.parse_args()
    unexplained = 0
    for d in PRODUCT_DIRS:
        for path in sorted((ROOT / d).rglob("*")):
            if path.suffix not in (".cc", ".h"):
                continue
            rel = path.relative_to(ROOT)
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > args.file_limit:
                print(f"{rel}: file of {n} lines")
                unexplained += 1
            for name, line, length, explained in functions(path):
                if length > args.limit:
                    print(f"{rel}:{line}: {name} {length} lines{' (reason given)' if explained else ''}")
                    unexplained += 0 if explained else 1
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
