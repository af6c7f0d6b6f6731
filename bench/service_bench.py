#!/usr/bin/env python3
"""Benchmarks `safepoint serve` over MQTT on loopback. Not part of the test suite.

    bench/service_bench.py [--binary build-svc/service/safepoint] [--presses 200]

Starts its own Mosquitto on a free loopback port and one `safepoint serve` (scrypt work factor
15, a small Home Assistant tree) in a scratch dir, then measures:

  1. button press -> published decision: PRESS on safepoint/cmd/continue until the decision
     arrives on safepoint/update/decision (median, p95, max over --presses update cycles);
  2. safety point with 10,000 mirrored topics: backup command -> backup_completed event, with
     an empty mirror and with 10,000 Zigbee2MQTT topics; the difference is what the entity
     snapshot (capture, JSON, compression, encryption of state/entities.json) costs;
  3. idle RSS and CPU: /proc/<pid>/status VmRSS, and utime+stime over --idle-seconds;
  4. Continue under load: 10,000 invalid command messages published back to back from a second
     connection, then a PRESS; the time until the decision.

Prints a table with the targets of issue 4 (items 9). Only the Python standard library is used:
the MQTT client below speaks the few MQTT 3.1.1 packets needed (QoS 0).
"""

import argparse
import json
import random
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---- A minimal MQTT 3.1.1 client (QoS 0) ----------------------------------------------------

def _encode_len(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


class MiniMqtt:
    def __init__(self, port, client_id):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lock = threading.Lock()
        self.cv = threading.Condition()
        self.messages = []  # (monotonic time, topic, payload bytes)
        var = _str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0)  # clean session, no keepalive
        self._send(0x10, var + _str(client_id))
        ptype, body = self._read_packet()
        if ptype != 0x20 or body[1] != 0:
            raise RuntimeError("CONNACK refused")
        self.subacks = 0
        self.reader = threading.Thread(target=self._read_loop, daemon=True)
        self.reader.start()

    def _send(self, first, body):
        with self.lock:
            self.sock.sendall(bytes([first]) + _encode_len(len(body)) + body)

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _read_packet(self):
        first = self._recv_exact(1)[0]
        mult, length = 1, 0
        while True:
            b = self._recv_exact(1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return first & 0xF0, self._recv_exact(length)

    def _read_loop(self):
        try:
            while True:
                ptype, body = self._read_packet()
                now = time.monotonic()
                if ptype == 0x30:
                    tlen = struct.unpack("!H", body[:2])[0]
                    topic = body[2:2 + tlen].decode()
                    payload = body[2 + tlen:]
                    with self.cv:
                        self.messages.append((now, topic, payload))
                        self.cv.notify_all()
                elif ptype == 0x90:
                    with self.cv:
                        self.subacks += 1
                        self.cv.notify_all()
        except (EOFError, OSError):
            pass

    def subscribe(self, *filters):
        body = struct.pack("!H", 1) + b"".join(_str(f) + b"\x00" for f in filters)
        with self.cv:
            want = self.subacks + 1
        self._send(0x82, body)
        with self.cv:
            self.cv.wait_for(lambda: self.subacks >= want, timeout=10)

    def publish(self, topic, payload, retain=False):
        if isinstance(payload, str):
            payload = payload.encode()
        self._send(0x30 | (1 if retain else 0), _str(topic) + payload)

    def mark(self):
        with self.cv:
            return len(self.messages)

    def wait(self, topic, start, pred=lambda p: True, timeout=60):
        """First message on `topic` at index >= start matching pred: (index, time, payload)."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cv:
            while True:
                while i < len(self.messages):
                    t, top, payload = self.messages[i]
                    i += 1
                    if top == topic and pred(payload):
                        return i, t, payload
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("nothing on %s" % topic)
                self.cv.wait(left)

    def close(self):
        try:
            self._send(0xE0, b"")
            self.sock.close()
        except OSError:
            pass


def js(pred):
    def f(payload):
        try:
            return pred(json.loads(payload))
        except ValueError:
            return False
    return f


# ---- Setup -------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(scratch):
    port = free_port()
    conf = os.path.join(scratch, "mosquitto.conf")
    with open(conf, "w") as f:
        # Nagle off on the broker side too: otherwise every small message that follows another
        # one waits for a delayed ACK (40 ms on Linux) before the broker sends it on.
        f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "set_tcp_nodelay true\n"
                # By default the broker drops every packet (QoS 0 and 1) for a client that has
                # 1,000 unsent; the bench publishes 10,000 messages back to back, so a service
                # lagging ~30 ms would lose mirrored topics and the fence. (Not 0, which some
                # 2.0 releases read as "queue nothing".)
                "max_queued_messages 1000000\n" % port)
        if os.geteuid() == 0:
            f.write("user root\n")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return proc, port
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("mosquitto did not start")


def write_tree(scratch):
    ha = os.path.join(scratch, "config")
    os.makedirs(os.path.join(ha, ".storage"))
    files = {
        "configuration.yaml": "homeassistant:\n  name: Home\n",
        "automations.yaml": "- id: '1'\n  alias: lights\n",
        "scripts.yaml": "good_night:\n  sequence: []\n",
        ".storage/core.entity_registry": '{"version":1,"data":{"entities":[]}}',
        "secrets.yaml": 'backup_encryption_passphrase: "bench passphrase 1"\n',
    }
    for rel, content in files.items():
        with open(os.path.join(ha, rel), "w") as f:
            f.write(content)
    os.chmod(os.path.join(ha, "secrets.yaml"), 0o600)
    return ha


def write_config(scratch, ha, port):
    path = os.path.join(scratch, "safepoint.yaml")
    with open(path, "w") as f:
        f.write("paths:\n  ha_config: %s\n  workspace: %s/ws\n  backup_dir: %s/backups\n"
                "encryption:\n  scrypt_work_factor: 15\nsources:\n  logs: []\n"
                "retention:\n  keep_last: 1000\n"
                "mqtt:\n  url: mqtt://127.0.0.1:%d\n"
                "service:\n  confirm_timeout: 10m\n  schedule:\n    daily_at: \"off\"\n"
                "logging:\n  level: warn\n" % (ha, scratch, scratch, port))
    return path


def proc_stat(pid, key="VmRSS:"):
    """CPU ticks used so far and the /proc status field `key` (VmRSS:, VmHWM:) in KiB."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    with open("/proc/%d/status" % pid) as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith(key))
    return ticks, kib


def device_payload(i, pad_bytes, rng):
    """A Zigbee2MQTT-like state message; with pad_bytes, padded to a random size up to it."""
    base = '{"linkquality":%d,"state":"ON"' % (i % 256)
    if pad_bytes <= 0:
        return base + "}"
    size = rng.randint(pad_bytes // 2, pad_bytes)
    pad = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(64))
    pad = (pad * (size // 64 + 1))[:size]
    return base + ',"attributes":"%s"}' % pad


# ---- Measurements ------------------------------------------------------------------------------

def update_cycle(c, n):
    """One update request -> awaiting -> PRESS -> decision; returns the press latency (s)."""
    uid = "bench-%d" % n
    start = c.mark()
    c.publish("safepoint/update/request", json.dumps({"update_id": uid, "target": "core"}))
    c.wait("safepoint/status", start, js(lambda j: j["state"] == "awaiting_confirmation"))
    mark = c.mark()
    t0 = time.monotonic()
    c.publish("safepoint/cmd/continue", "PRESS")
    _, t1, payload = c.wait("safepoint/update/decision", mark,
                            js(lambda j: j["update_id"] == uid))
    assert json.loads(payload)["decision"] == "continue", payload
    c.publish("safepoint/update/result", json.dumps({"update_id": uid, "success": True}))
    c.wait("safepoint/status", mark, js(lambda j: j["state"] == "idle"))
    return t1 - t0


def backup_time(c, reason):
    mark = c.mark()
    t0 = time.monotonic()
    c.publish("safepoint/cmd/backup", json.dumps({"reason": reason}))
    _, t1, payload = c.wait("safepoint/event", mark,
                            js(lambda j: j["event_type"] in ("backup_completed", "backup_failed")))
    event = json.loads(payload)
    assert event["event_type"] == "backup_completed", payload
    c.wait("safepoint/status", mark, js(lambda j: j["state"] == "idle"))
    return t1 - t0, event["data"]["backup_id"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build-svc/service/safepoint"))
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--topics", type=int, default=10000)
    ap.add_argument("--payload-bytes", type=int, default=0,
                    help="pad each mirrored message to a random size in [N/2, N] (0: ~30 bytes)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit("no binary at %s (cmake --build build-svc --target safepoint)" % args.binary)

    scratch = tempfile.mkdtemp(prefix="safepoint-service-bench-")
    broker, port = start_broker(scratch)
    ha = write_tree(scratch)
    config = write_config(scratch, ha, port)
    log = open(os.path.join(scratch, "serve.log"), "w")
    c = MiniMqtt(port, "bench-observer")
    c.subscribe("safepoint/#")
    serve = subprocess.Popen([args.binary, "--config", config, "serve"], stdout=log,
                             stderr=subprocess.STDOUT)
    rows = []
    try:
        c.wait("safepoint/availability", 0, lambda p: p == b"online", timeout=30)
        time.sleep(1)

        # 3. idle RSS and CPU (first, before the mirror holds anything).
        ticks0, rss0 = proc_stat(serve.pid)
        time.sleep(args.idle_seconds)
        ticks1, rss1 = proc_stat(serve.pid)
        hz = os.sysconf("SC_CLK_TCK")
        idle_cpu_ms = (ticks1 - ticks0) * 1000.0 / hz
        rows.append(("idle RSS", "%.1f MiB" % (rss1 / 1024.0), "<= 20 MiB",
                     rss1 <= 20 * 1024))
        rows.append(("idle CPU over %.0f s" % args.idle_seconds,
                     "%.0f ms (%.3f%%)" % (idle_cpu_ms,
                                           idle_cpu_ms / (args.idle_seconds * 10.0)),
                     "no CPU when idle", idle_cpu_ms <= 10 * 1000.0 / hz))

        # 1. button press -> decision.
        latencies = [update_cycle(c, n) for n in range(args.presses)]
        ms = sorted(x * 1000 for x in latencies)
        med = statistics.median(ms)
        p95 = ms[int(0.95 * (len(ms) - 1))]
        rows.append(("press -> decision, median of %d" % len(ms),
                     "%.2f ms (p95 %.2f, max %.2f)" % (med, p95, ms[-1]), "<= 5 ms",
                     med <= 5.0))

        # 2. safety point with and without 10,000 mirrored topics.
        empty, _ = backup_time(c, "bench: empty mirror")
        pub = MiniMqtt(port, "bench-z2m")
        rng = random.Random(4)
        for i in range(args.topics):
            pub.publish("zigbee2mqtt/device_%05d" % i,
                        device_payload(i, args.payload_bytes, rng))
        # A fence on the same connection: the service answers it after handling all of them.
        mark = c.mark()
        pub.publish("safepoint/cmd/list", '{"transaction":"fence"}')
        c.wait("safepoint/response/list", mark, js(lambda j: j.get("transaction") == "fence"))
        full, full_id = backup_time(c, "bench: 10k mirror")
        _, rss_full = proc_stat(serve.pid)
        _, hwm_full = proc_stat(serve.pid, "VmHWM:")
        rows.append(("safety point, empty mirror", "%.0f ms" % (empty * 1000), "", None))
        rows.append(("safety point, %d mirrored topics" % args.topics,
                     "%.0f ms" % (full * 1000), "", None))
        rows.append(("  difference (entity snapshot end to end)",
                     "%.0f ms" % ((full - empty) * 1000), "<= 50 ms",
                     (full - empty) * 1000 <= 50))
        rows.append(("RSS with %d mirrored topics" % args.topics, "%.1f MiB" % (rss_full / 1024.0),
                     "", None))
        rows.append(("peak RSS (VmHWM) so far, messages padded to <= %d bytes" % args.payload_bytes,
                     "%.1f MiB" % (hwm_full / 1024.0), "", None))

        # 4. Continue while 10,000 invalid messages arrive.
        mark = c.mark()
        c.publish("safepoint/update/request", json.dumps({"update_id": "flood", "target": "core"}))
        c.wait("safepoint/status", mark, js(lambda j: j["state"] == "awaiting_confirmation"))
        flood = MiniMqtt(port, "bench-flood")
        t_flood = time.monotonic()
        for i in range(10000):
            flood.publish("safepoint/cmd/backup", '{"reason": %d' % i)  # not valid JSON
        mark = c.mark()
        t0 = time.monotonic()
        c.publish("safepoint/cmd/continue", "PRESS")
        _, t1, payload = c.wait("safepoint/update/decision", mark)
        assert json.loads(payload)["decision"] == "continue", payload
        under_load = (t1 - t0) * 1000
        rows.append(("Continue after 10,000 invalid messages",
                     "%.1f ms (flood sent in %.0f ms)" % (under_load, (t0 - t_flood) * 1000),
                     "<= 50 ms", under_load <= 50))
        c.publish("safepoint/update/result", json.dumps({"update_id": "flood", "success": True}))
        alive = serve.poll() is None
        rows.append(("service alive after the flood", str(alive), "yes", alive))
        pub.close()
        flood.close()
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
        broker.terminate()
        broker.wait()
        c.close()
        log.close()

    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print("%-*s  %-*s  %-18s  %s" % (width, "measurement", vwidth, "value", "target", "ok"))
    for name, value, target, ok in rows:
        mark = "" if ok is None else ("yes" if ok else "NO")
        print("%-*s  %-*s  %-18s  %s" % (width, name, vwidth, value, target, mark))
    print("(load average %s, %d CPUs)" % (" ".join("%.2f" % x for x in os.getloadavg()),
                                          os.cpu_count()))
    if args.keep:
        print("scratch dir kept: %s" % scratch)
    else:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
