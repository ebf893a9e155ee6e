#!/usr/bin/env python3
"""Abuse run against `fastgen serve` (Python 3.11 standard library only).

Starts the server, then sends what a hostile or broken client sends: malformed and huge
bodies, deeply nested JSON, invalid UTF-8, wrong Content-Types, clients that send their
headers a byte a second, hundreds of idle connections, clients that vanish mid-stream, and
prompts at and just past the context. Checks that every request gets its documented status,
that /health answers 200 throughout (polled from a thread), that the server closes slow and
idle connections within its timeouts, and compares resident memory (VmRSS) before and after.

    python3 scripts/abuse.py [--bin target/release/fastgen] [--model smollm2]
        [--serve-arg=--keep-conversations-mib --serve-arg=0]

Exits 1 if any check fails. The server runs with short timeouts (header 3 s, body 3 s,
idle 6 s) so that the run takes minutes, not hours. The memory baseline is taken after a
warm-up that includes one prompt of the whole context (the engine keeps a workspace per
slot, sized by the largest prompt that slot has run, for reuse; the server runs with one
slot), so growth past it is what the abuse left. Finished requests' caches kept for a
conversation's next turn (`--keep-conversations-mib`, 256 by default) grow it by design up
to that bound; `--serve-arg=--keep-conversations-mib --serve-arg=0` leaves them out.
"""

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

HEADER_S, BODY_S, IDLE_S = 3, 3, 6


class Server:
    def __init__(self, binary, model, extra):
        # One slot: the engine keeps a workspace per slot at the size of the largest prompt
        # that slot has run, so with one slot the warm-up below reaches the high-water mark.
        args = [binary, "serve", "--port", "0", "-m", model, "--slots", "1",
                "--max-tokens-limit", "256",
                "--header-timeout-secs", str(HEADER_S),
                "--body-timeout-secs", str(BODY_S),
                "--idle-timeout-secs", str(IDLE_S)] + extra
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        self.log = []
        found = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line.rstrip())
                m = re.search(r"listening on http://([\d.]+):(\d+)", line)
                if m:
                    self.host, self.port = m.group(1), int(m.group(2))
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(600):
            sys.exit("fastgen serve did not start:\n" + "\n".join(self.log))

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def connect(self, timeout=600):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        s.settimeout(timeout)
        return s

    def raw(self, data, timeout=600):
        """Sends bytes, reads to EOF: (status or None, body bytes)."""
        s = self.connect(timeout)
        try:
            try:
                s.sendall(data)
            except OSError:
                pass  # answered (413) and closed before the whole body was sent
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            s.close()
        head, _, body = out.partition(b"\r\n\r\n")
        m = re.match(rb"HTTP/1\.1 (\d+)", head)
        return (int(m.group(1)) if m else None), body

    def post(self, path, body, content_type="application/json", timeout=600):
        if isinstance(body, str):
            body = body.encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: abuse\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n")
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        return self.raw(head.encode() + b"\r\n" + body, timeout)

    def get(self, path):
        return self.raw(f"GET {path} HTTP/1.1\r\nHost: abuse\r\nConnection: close\r\n\r\n"
                        .encode(), timeout=30)


def error_shaped(body):
    """OpenAI's error object (possibly in a chunked body)."""
    text = body.decode("utf-8", "replace")
    a, b = text.find("{"), text.rfind("}")
    try:
        e = json.loads(text[a:b + 1])["error"]
        return all(k in e for k in ("message", "type", "param", "code"))
    except (ValueError, KeyError, TypeError):
        return False


class Checks:
    def __init__(self, srv):
        self.srv = srv
        self.rows = []  # (phase, requests, Counter of statuses, failures)

    def phase(self, name, results):
        """results: list of (status, expected set, body)."""
        statuses = Counter(str(st) for st, _, _ in results)
        bad = []
        for st, want, body in results:
            if st not in want:
                bad.append(f"{st} not in {sorted(want, key=str)}")
            elif st is not None and 400 <= st < 500 and not error_shaped(body):
                bad.append(f"{st} without the error object: {body[:120]!r}")
        self.rows.append((name, len(results), statuses, bad))
        print(f"{name}: {len(results)} requests, statuses {dict(statuses)}, "
              f"VmRSS {self.srv.rss_kib() / 1024:.1f} MiB"
              + (f", {len(bad)} UNEXPECTED: {bad[:3]}" if bad else ""), flush=True)

    def fact(self, name, ok, detail):
        self.rows.append((name, 1, Counter({"ok" if ok else "FAIL": 1}), [] if ok else [detail]))
        print(f"{name}: {'ok' if ok else 'FAIL'} ({detail})", flush=True)

    def failed(self):
        return sum(len(r[3]) for r in self.rows)


def malformed_bodies(rng):
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    cases = [
        "", "{", "}", "[]", "null", "42", '"text"', "{'single': 'quotes'}",
        '{"messages": }', '{"messages": [}', '{"messages": "hi"}', '{"messages": []}',
        '{"messages": [{"role": "user"}]}', '{"messages": [{"content": "x"}]}',
        '{"messages": [{"role": 5, "content": "x"}]}', '{"prompt": 5}', '{"prompt": []}',
        '{"prompt": [-1]}', '{"prompt": [99999999999]}', '{"prompt": ["a", "b"]}',
        '{"prompt": "x", "max_tokens": -1}', '{"prompt": "x", "max_tokens": 1e300}',
        '{"prompt": "x", "max_tokens": 100000}', '{"prompt": "x", "temperature": "hot"}',
        '{"prompt": "x", "top_p": 7}', '{"prompt": "x", "stop": 5}', '{"prompt": "x", "n": 3}',
        '{"prompt": "x", "stream": "yes"}', '{"prompt": "x", "model": "gpt-9"}',
        '{"prompt": "x", "kv": {"policy": "nope"}}', '{"prompt": "x"' + ", " * 1000,
    ]
    for _ in range(170):
        d = json.loads(json.dumps(chat))
        key = rng.choice(["messages", "max_tokens", "temperature", "stop", "seed", "top_k", "stream"])
        d[key] = rng.choice([None, -5, 2**70, "x", [], {}, [None], {"a": [1]}, 1.5e308, True])
        cases.append(json.dumps(d))
    return cases


def run(args):
    srv = Server(args.bin, args.model, args.serve_arg)
    checks = Checks(srv)
    health_fail = []
    stop = threading.Event()

    def poll_health():
        n = 0
        while not stop.is_set():
            try:
                st, _ = srv.get("/health")
            except OSError as e:
                st = repr(e)
            n += 1
            if st != 200:
                health_fail.append(st)
            stop.wait(0.5)
        poll_health.count = n

    # Warm up, then the baseline. The engine keeps its workspaces for reuse, sized by the
    # largest batch and context it has run, so the warm-up includes one prompt of the whole
    # context: what grows after that is what the abuse left behind.
    for _ in range(3):
        srv.post("/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}))
    print(f"VmRSS after short requests: {srv.rss_kib() / 1024:.1f} MiB", flush=True)
    _, b = srv.get("/v1/models")
    n_ctx = json.loads(b.decode())["data"][0]["context_length"]
    t0 = time.monotonic()
    st, _ = srv.post("/v1/completions", json.dumps({"prompt": [28] * (n_ctx - 1), "max_tokens": 1}))
    print(f"warm-up prompt of {n_ctx - 1} tokens: {st} in {time.monotonic() - t0:.0f} s", flush=True)
    time.sleep(1)
    rss_before = srv.rss_kib()
    print(f"VmRSS before: {rss_before / 1024:.1f} MiB", flush=True)
    poller = threading.Thread(target=poll_health, daemon=True)
    poller.start()
    rng = random.Random(1)

    # Malformed bodies and wrong fields: 400 (404 for an unknown model).
    res = []
    for body in malformed_bodies(rng):
        path = rng.choice(["/v1/chat/completions", "/v1/completions"])
        st, b = srv.post(path, body)
        res.append((st, {400, 404, 200}, b))
    checks.phase("malformed bodies", res)

    # Huge bodies: past the 1 MiB limit 413, a Content-Length of a terabyte 413 at once.
    res = []
    for n in (2 << 20, 8 << 20, 32 << 20):
        st, b = srv.post("/v1/completions", '{"prompt": "' + "a" * n + '"}')
        res.append((st, {413}, b))
    st, b = srv.raw(b"POST /v1/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json"
                    b"\r\nContent-Length: 1000000000000\r\nConnection: close\r\n\r\n{", 60)
    res.append((st, {413}, b))
    checks.phase("huge bodies", res)

    # Deep nesting: 400 (serde_json's recursion limit), never a stack overflow.
    res = []
    for d in (100, 1000, 100_000, 500_000):
        for path, key in (("/v1/completions", "prompt"), ("/v1/chat/completions", "messages")):
            st, b = srv.post(path, '{"%s": %s%s}' % (key, "[" * d, "]" * d))
            res.append((st, {400, 413}, b))
        # An unknown field is ignored: nested within serde_json's limit (128) it is fine.
        st, b = srv.post("/v1/completions", '{"prompt": "x", "max_tokens": 1, "x": %s1%s}'
                         % ('{"a":' * d, "}" * d))
        res.append((st, {200} if d < 128 else {400, 413}, b))
    checks.phase("deeply nested JSON", res)

    # Invalid UTF-8: 400.
    res = []
    for bad in (b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"):
        st, b = srv.post("/v1/completions", b'{"prompt": "a' + bad + b'b", "max_tokens": 1}')
        res.append((st, {400}, b))
        st, b = srv.post("/v1/chat/completions",
                         b'{"messages": [{"role": "user", "content": "' + bad + b'"}]}')
        res.append((st, {400}, b))
    checks.phase("invalid UTF-8", res)

    # Content-Type: JSON (with a charset, any case) accepted, anything else 415.
    res = []
    body = json.dumps({"prompt": "Hi", "max_tokens": 1})
    for ct, want in (("text/plain", 415), ("application/x-www-form-urlencoded", 415),
                     ("multipart/form-data; boundary=x", 415), ("application/xml", 415),
                     ("application/json; charset=utf-8", 200), ("APPLICATION/JSON", 200)):
        st, b = srv.post("/v1/completions", body, ct)
        res.append((st, {want}, b))
    checks.phase("Content-Type", res)

    # Slow headers: 20 clients sending a byte a second are closed within the header timeout.
    def slow_client(out):
        s = srv.connect(30)
        t0 = time.monotonic()
        try:
            for ch in b"POST /v1/completions HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 100:
                s.sendall(bytes([ch]))
                time.sleep(1)
        except OSError:
            pass
        try:
            s.settimeout(HEADER_S + 5)
            while s.recv(1024):
                pass
        except OSError:
            pass
        out.append(time.monotonic() - t0)
        s.close()

    took = []
    threads = [threading.Thread(target=slow_client, args=(took,)) for _ in range(20)]
    for t in threads:
        t.start()
    st, b = srv.post("/v1/completions", json.dumps({"prompt": "Hi", "max_tokens": 2}))
    checks.phase("request beside the slow clients", [(st, {200}, b)])
    for t in threads:
        t.join()
    checks.fact("slow-header clients closed", all(x < HEADER_S + 3 for x in took) and len(took) == 20,
                f"20 clients, closed after {min(took):.1f}-{max(took):.1f} s, header timeout {HEADER_S} s")

    # 250 idle connections (some after a keep-alive request): the server keeps answering
    # others, and closes them all after the idle timeout.
    idle = []
    for i in range(250):
        s = srv.connect(IDLE_S + 10)
        if i % 5 == 0:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: idle\r\n\r\n")
        idle.append(s)
    st, b = srv.post("/v1/completions", json.dumps({"prompt": "Hi", "max_tokens": 2}))
    checks.phase("request beside 250 idle connections", [(st, {200}, b)])
    t0 = time.monotonic()
    closed = 0
    for s in idle:
        try:
            while s.recv(4096):
                pass  # a keep-alive request's answer, then EOF
            closed += 1
        except socket.timeout:
            pass
        except OSError:
            closed += 1  # reset: closed too
        s.close()
    checks.fact("idle connections closed", closed == 250,
                f"{closed} of 250 closed by the server within {time.monotonic() - t0:.1f} s, "
                f"idle timeout {IDLE_S} s")

    # Clients that vanish mid-stream: their generations stop and free their slots.
    for _ in range(20):
        s = srv.connect(120)
        body = json.dumps({"prompt": "Write a long story about a cat.", "max_tokens": 200,
                           "stream": True}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: v\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        s.recv(4096)
        s.close()
    t0 = time.monotonic()
    busy = None
    while time.monotonic() - t0 < 60:
        st, b = srv.get("/health")
        busy = json.loads(b.decode()).get("slots_busy") if st == 200 else None
        if busy == 0:
            break
        time.sleep(0.2)
    checks.fact("vanished streams freed their slots", busy == 0,
                f"20 streams dropped after their first bytes; slots busy {busy} after "
                f"{time.monotonic() - t0:.1f} s")

    # Prompts at and just past the context (token ids, sent as is).
    res = []
    for n, want in ((n_ctx - 1, {200}), (n_ctx + 1, {400}), (n_ctx + 1000, {400})):
        t0 = time.monotonic()
        st, b = srv.post("/v1/completions", json.dumps({"prompt": [28] * n, "max_tokens": 1}))
        print(f"  prompt of {n} tokens (context {n_ctx}): {st} in {time.monotonic() - t0:.1f} s",
              flush=True)
        res.append((st, want, b))
    checks.phase("prompts at and past the context", res)

    stop.set()
    poller.join()
    time.sleep(2)
    rss_after = srv.rss_kib()
    growth = (rss_after - rss_before) / rss_before
    print(f"VmRSS after: {rss_after / 1024:.1f} MiB ({growth * 100:+.1f}%)", flush=True)
    checks.fact("/health 200 throughout", not health_fail,
                f"{poll_health.count} polls, {len(health_fail)} not 200: {health_fail[:5]}")
    checks.fact("resident memory within 10%", abs(growth) <= 0.10,
                f"{rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB")

    srv.proc.send_signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(60)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        code = None
    checks.fact("exit 0 after SIGTERM", code == 0, f"exit {code}")
    total = sum(r[1] for r in checks.rows)
    print(f"abuse: {total} checks and requests, {checks.failed()} unexpected")
    return 1 if checks.failed() else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p.add_argument("--bin", default=os.path.join(target, "release", "fastgen"))
    p.add_argument("--model", default="smollm2")
    p.add_argument("--serve-arg", action="append", default=[],
                   help="passed on to fastgen serve (repeat for each word)")
    sys.exit(run(p.parse_args()))


if __name__ == "__main__":
    main()
