#!/usr/bin/env python3
"""Runs a command on a fresh pseudo-terminal and types a passphrase at its prompts.

  pty_run.py --secrets FILE [--key NAME] [--answers N] [--latency-file F] -- CMD [ARG...]

age reads passphrases only from a terminal. This runs CMD as the session leader of a new pty
(so /dev/tty is that pty), waits for each "... passphrase ...: " prompt, waits until the
terminal's echo is off (age disables it while reading), types the passphrase and a newline, and
answers at most N prompts (2 for `age -p`: enter and confirm; 1 for `age -d`).

To time a pipeline, make CMD the timer itself, e.g.
  pty_run.py --secrets s.yaml -- /usr/bin/time -o t -f '%e' bash -c 'tar ... | zstd | age -p >o'
so the measurement covers the pipeline; the only typing cost inside it is the time from a
prompt appearing to the answer being written (recorded in --latency-file, in seconds).

The passphrase is read from a Home-Assistant-style secrets file (top-level `key: value`) and is
never printed: the terminal output is kept only to be shown on failure, with it redacted.
Exit status: CMD's exit status (128+signal when killed); 2 on usage errors.
Standard library only.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import sys
import termios
import time

PROMPT = re.compile(rb"passphrase[^\n]*:\s*$", re.IGNORECASE)


def read_secret(path: str, key: str) -> bytes:
    with open(path, "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if not line.startswith(key.encode() + b":"):
                continue
            value = line[len(key) + 1:].strip()
            if len(value) >= 2 and value[:1] in (b'"', b"'") and value[-1:] == value[:1]:
                value = value[1:-1]
            if not value:
                break
            return value
    raise SystemExit(f"pty_run: key '{key}' not found or empty in {path}")


def echo_is_off(fd: int) -> bool:
    try:
        lflag = termios.tcgetattr(fd)[3]
    except termios.error:
        return False
    return not lflag & termios.ECHO


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secrets", required=True, help="secrets file holding the passphrase")
    ap.add_argument("--key", default="backup_encryption_passphrase")
    ap.add_argument("--answers", type=int, default=2, help="prompts to answer (default 2)")
    ap.add_argument("--latency-file", help="append the prompt-to-answer time (seconds) here")
    ap.add_argument("--timeout", type=float, default=3600.0, help="kill CMD after this (s)")
    ap.add_argument("--autogroup-nice", type=int,
                    help="set the scheduler autogroup nice of CMD's new session (Linux)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("missing command")
    secret = read_secret(args.secrets, args.key)

    pid, master = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal and stdin/stdout/stderr
        try:
            if args.autogroup_nice is not None:
                # A new session is a new autogroup, which would not inherit the caller's share.
                try:
                    with open("/proc/self/autogroup", "w", encoding="ascii") as f:
                        f.write(str(args.autogroup_nice))
                except OSError:
                    pass
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)

    transcript = bytearray()  # terminal output since the last answer
    shown = bytearray()       # everything, for a failure report
    answered = 0
    latency = 0.0
    deadline = time.monotonic() + args.timeout
    status = None
    while True:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
        try:
            ready, _, _ = select.select([master], [], [], 0.05)
        except InterruptedError:
            ready = []
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed
                chunk = b""
            if not chunk:
                break
            transcript += chunk
            if len(shown) < 1 << 20:
                shown += chunk
            if answered < args.answers and PROMPT.search(bytes(transcript[-256:])):
                seen = time.monotonic()
                # Type only once the reader has turned echo off (no passphrase echo).
                while not echo_is_off(master) and time.monotonic() - seen < 5.0:
                    time.sleep(0.0005)
                os.write(master, secret + b"\n")
                latency += time.monotonic() - seen
                answered += 1
                transcript.clear()
        else:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
    if status is None:
        _, status = os.waitpid(pid, 0)
    os.close(master)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code
    if args.latency_file:
        with open(args.latency_file, "a", encoding="ascii") as f:
            f.write(f"{latency:.6f}\n")
    if code != 0:
        text = bytes(shown).replace(secret, b"<passphrase>").decode("utf-8", "replace")
        sys.stderr.write(f"pty_run: {cmd[0]} exited with {code}; terminal output:\n{text}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
