"""The router (`berth router`) against a fake controller and Python backends on 127.0.0.1.

The fake controller serves GET /internal/v1/routes with the long-poll semantics of docs/PLATFORM.md and
checks the bearer token; backends are http.server threads (an echo of what they received, a streamed
download, a checksummed upload) and a raw-socket upgrade echo. Gorouter's behaviours are in
shared/reference/cloud-foundry-behaviour.md section 8.
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import pytest

import berthcli
from registry import free_port, wait_until

TOKEN = "router-e2e-token-0123456789"


# ---------------------------------------------------------------------------------------------- fakes


class FakeController:
    """GET /internal/v1/routes?index=N&wait=S: at once if the table's index > N, else when it changes or
    after S seconds. Wrong or missing bearer token → 401."""

    def __init__(self, port=0):
        self.cond = threading.Condition()
        self.index = 1
        self.routes = []
        self.polls = 0
        self.unauthorized = 0
        self.access_lines = []
        self.post_sizes = []  # body bytes of each access log POST
        self.post_gate = None  # (marker, Event): the next access log POST with marker waits for it (4 s at most)
        self.max_body = None  # bytes: larger access log POSTs get 413, as the controller's 1 MiB limit
        self.refuse_zstd = False  # answer zstd access log POSTs 415, as a controller without zstd would
        self.encodings = []  # Content-Encoding of each access log POST ("" for none)
        self.wire_sizes = []  # bytes of each access log POST as sent (post_sizes: as decoded)
        self.stopped = False
        ctl = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # a head and its body in two sends: no delayed-ACK wait (40 ms)

            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                if u.path != "/internal/v1/routes":
                    return self._send(404, b"{}")
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    ctl.unauthorized += 1
                    return self._send(401, b'{"errors":[]}')
                q = urllib.parse.parse_qs(u.query)
                since = int(q.get("index", ["0"])[0])
                wait = min(float(q.get("wait", ["0"])[0]), 60)
                deadline = time.monotonic() + wait
                with ctl.cond:
                    ctl.polls += 1
                    while ctl.index <= since and time.monotonic() < deadline and not ctl.stopped:
                        ctl.cond.wait(deadline - time.monotonic())
                    if ctl.stopped:
                        # Down: the connection breaks, as when the process dies.
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    body = json.dumps({"index": ctl.index, "routes": ctl.routes}).encode()
                self._send(200, body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(n)
                if self.path != "/internal/v1/logs" or self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(404, b"{}")
                enc = self.headers.get("Content-Encoding", "")
                with ctl.cond:
                    ctl.encodings.append(enc)
                    ctl.wire_sizes.append(n)
                if enc == "zstd":
                    if ctl.refuse_zstd:
                        return self._send(415, b'{"errors":[]}')
                    data = subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=True).stdout
                    n = len(data)
                elif enc:
                    return self._send(415, b'{"errors":[]}')
                gate = ctl.post_gate
                if gate is not None and gate[0] in data:
                    ctl.post_gate = None
                    gate[1].wait(4)
                with ctl.cond:
                    ctl.post_sizes.append(n)
                if ctl.max_body is not None and n > ctl.max_body:
                    return self._send(413, b'{"errors":[]}')
                with ctl.cond:
                    ctl.access_lines += json.loads(data)["lines"]
                    ctl.cond.notify_all()
                self._send(202, b"{}")

            def _send(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_routes(self, routes):
        with self.cond:
            self.routes = routes
            self.index += 1
            self.cond.notify_all()

    def stop(self):
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()


def _read_chunked(rfile):
    out = bytearray()
    while True:
        line = rfile.readline(1024)
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(out)
        out += rfile.read(size)
        rfile.readline(16)


def read_to_end(s):
    """Everything socket s receives until its peer closes."""
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            return out
        out += d


def pattern(n):
    """n deterministic bytes."""
    block = hashlib.sha256(b"berth").digest() * 256  # 8 KiB
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


class Backend:
    """An HTTP/1.1 app instance. GET /echo → JSON of what arrived; POST /upload → sha256 and length of
    the body (Content-Length or chunked); GET /big?n=N[&chunked=1] → N pattern bytes; GET /slow?s=S;
    GET /trickle?n=N&ms=M → N pattern bytes, chunked, 4 KiB every M ms."""

    def __init__(self, name):
        self.name = name
        self.requests = []  # (client port, path, headers dict)
        be = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # a head and its body in two sends: no delayed-ACK wait (40 ms)

            def log_message(self, *a):
                pass

            def _reply(self, status, body, ctype="application/json", extra=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _record(self):
                hdrs = {}
                for k, v in self.headers.items():
                    hdrs.setdefault(k.lower(), []).append(v)
                be.requests.append((self.client_address[1], self.path, hdrs))
                return hdrs

            def do_GET(self):
                hdrs = self._record()
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query)
                if u.path == "/big":
                    n = int(q["n"][0])
                    data = pattern(n)
                    self.send_response(200)
                    if q.get("chunked"):
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        for i in range(0, n, 100000):
                            piece = data[i:i + 100000]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        self.send_header("Content-Length", str(n))
                        self.end_headers()
                        for i in range(0, n, 100000):
                            self.wfile.write(data[i:i + 100000])
                    return
                if u.path == "/trickle":  # n pattern bytes in chunks of 4 KiB, one every ms milliseconds
                    n, ms = int(q["n"][0]), float(q["ms"][0])
                    data = pattern(n)
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, n, 4096):
                        piece = data[i:i + 4096]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        time.sleep(ms / 1000)
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if u.path == "/slow":
                    time.sleep(float(q["s"][0]))
                body = json.dumps({"backend": be.name, "path": self.path, "headers": hdrs,
                                   "peer_port": self.client_address[1]}).encode()
                extra = None
                if u.path.endswith("/login"):  # a session starts (Java's cookie): the router makes it sticky
                    extra = {"Set-Cookie": "JSESSIONID=s-" + be.name + "; Path=/; Secure; SameSite=Strict"}
                self._reply(200, body, extra=extra)

            do_HEAD = do_GET

            def do_POST(self):
                self._record()
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = _read_chunked(self.rfile)
                else:
                    data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.dumps({"backend": be.name, "sha256": hashlib.sha256(data).hexdigest(),
                                   "len": len(data)}).encode()
                self._reply(200, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class RawBackend:
    """A raw-socket backend on 127.0.0.1: a thread per connection runs ``_serve(conn)``."""

    def __init__(self, backlog=64):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def read_head(c) -> bytes:
        """Bytes up to and including the end of a request head (b"" if the peer closed first)."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return b""
            buf += d
        return buf

    def stop(self):
        self.stopped = True
        self.sock.close()


class UpgradeEcho(RawBackend):
    """A raw-socket backend: answers an Upgrade request with 101, then echoes every byte."""

    def __init__(self):
        self.heads = []
        super().__init__(backlog=16)

    def _serve(self, c):
        with c:
            buf = self.read_head(c)
            if not buf:
                return
            head, rest = buf.split(b"\r\n\r\n", 1)
            self.heads.append(head.decode())
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            if rest:
                c.sendall(rest)
            while True:
                d = c.recv(65536)
                if not d:
                    return
                c.sendall(d)


def route(host, backends, app="app-guid-1", path=""):
    return {"host": host, "path": path, "route_guid": f"route-{host}", "app_guid": app,
            "endpoints": [{"instance_guid": f"inst-{i}-{port}", "index": i, "host": "127.0.0.1", "port": port}
                          for i, port in enumerate(backends)]}


def dead_port():
    """A port nothing listens on (connects are refused)."""
    return free_port()


# ---------------------------------------------------------------------------------------------- router


class Router:
    def __init__(self, controller_url, tmp, workers=2, config=None, token=TOKEN, cpus=None):
        self.port = free_port()
        self.tmp = tmp
        token_file = os.path.join(tmp, "internal-token")
        with open(token_file, "w") as f:
            f.write(token + "\n")
        os.chmod(token_file, 0o600)
        cfg = os.path.join(tmp, "config.yaml")
        with open(cfg, "w") as f:
            f.write(config or "router:\n  dial_timeout_ms: 2000\n")
        self.log_path = os.path.join(tmp, "router.log")
        self.log = open(self.log_path, "w")
        self.cmd = [berthcli.BERTH_BIN, "--data-dir", tmp, "--config", cfg, "router",
                    "--listen", f"127.0.0.1:{self.port}", "--controller", controller_url,
                    "--workers", str(workers), "--internal-token-file", token_file]
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=pin)
        wait_until(self._accepting, timeout=15, what="the router to listen")

    def _accepting(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"router exited {self.proc.returncode}:\n{self.output()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def get(self, host, path="/echo", headers=None, method="GET", body=None):
        c = self.conn()
        try:
            h = {"Host": host}
            h.update(headers or {})
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r, data
        finally:
            c.close()

    def raw(self, data, timeout=10):
        """Send raw bytes; return everything the router answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            return read_to_end(s)

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def rig():
    """A fake controller, two backends, a router; everything stopped at teardown."""
    tmp = tempfile.mkdtemp(prefix="berth-e2e-router-")
    things = {"tmp": tmp, "ctl": FakeController(), "backends": [Backend("b0"), Backend("b1")]}
    router = None
    try:
        router = Router(things["ctl"].url, tmp)
        things["router"] = router
        yield things
    finally:
        rc = router.stop() if router else 0
        for b in things["backends"]:
            b.stop()
        for extra in things.get("extras", []):
            extra.stop()
        try:
            things["ctl"].stop()
        except Exception:
            pass
        out = router.output() if router else ""
        shutil.rmtree(tmp, ignore_errors=True)
    # SIGTERM is a clean stop (exit 0); anything else (a crash, a sanitizer report) fails the test.
    assert rc == 0, f"router exited {rc}:\n{out}"


def serve(rig, routes):
    """Publish routes and wait until the router serves the first one's host."""
    rig["ctl"].set_routes(routes)
    host = routes[0]["host"]
    wait_until(lambda: rig["router"].get(host)[0].status != 404, timeout=5, what=f"route {host}")


# ---------------------------------------------------------------------------------------------- tests


def test_round_robin(rig):
    b0, b1 = rig["backends"]
    serve(rig, [route("rr.test", [b0.port, b1.port])])
    seen = [json.loads(rig["router"].get("rr.test")[1])["backend"] for _ in range(10)]
    assert seen.count("b0") == 5 and seen.count("b1") == 5, seen
    # Strict alternation within one worker is not guaranteed across workers; counts are.
    assert "route table" in rig["router"].output()
    assert f"127.0.0.1:{rig['router'].port}" in rig["router"].output()


def test_host_case_and_port_ignored(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("case.test", [b0.port])])
    r, _ = rig["router"].get(f"CaSe.TEST:{rig['router'].port}")
    assert r.status == 200


def test_absolute_form_target_routes_by_its_authority(rig):
    """A request whose target is absolute ("GET http://host/path", RFC 9112 3.2.2) is routed by the target's
    host, not the Host header, and reaches the app in origin-form with that host as its Host, as Go's server
    (so Gorouter) and nginx do; an empty path becomes "/". HTTP/1.1 still needs a Host header; userinfo in the
    authority is refused. (The target went on as it came, and the Host header chose the route.)"""
    b0, b1 = rig["backends"]
    serve(rig, [route("abs.test", [b0.port]), route("other.test", [b1.port])])
    router, ctl = rig["router"], rig["ctl"]

    def ask(raw):
        out = router.raw(raw)
        assert out.startswith(b"HTTP/1.1 200 OK\r\n"), out
        return json.loads(out.split(b"\r\n\r\n", 1)[1])

    got = ask(b"GET http://abs.test/echo?x=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
    assert (got["backend"], got["path"], got["headers"]["host"]) == ("b0", "/echo?x=1", ["abs.test"]), got
    got = ask(b"GET HTTP://ABS.test:8080?q=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
    assert (got["backend"], got["path"], got["headers"]["host"]) == ("b0", "/?q=1", ["ABS.test:8080"]), got
    got = ask(b"GET http://abs.test HTTP/1.0\r\n\r\n")
    assert (got["backend"], got["path"], got["headers"]["host"]) == ("b0", "/", ["abs.test"]), got
    out = router.raw(b"GET http://abs.test/echo HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and b"X-Cf-Routererror: empty_host" in out, out
    out = router.raw(b"GET http://user@abs.test/echo HTTP/1.1\r\nHost: abs.test\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out
    wait_until(lambda: any('"GET /echo?x=1 HTTP/1.1" 200 ' in l["message"] for l in ctl.access_lines), timeout=5,
               what="the access log line, in origin-form")


def test_unknown_route_404(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("known.test", [b0.port])])
    r, body = rig["router"].get("nope.test")
    assert r.status == 404
    assert r.getheader("X-Cf-Routererror") == "unknown_route"
    assert r.getheader("Cache-Control") == "no-cache, no-store"
    assert r.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert r.getheader("X-Content-Type-Options") == "nosniff"
    assert body == b"404 Not Found: Requested route ('nope.test') does not exist.\n"


def test_no_endpoints_503(rig):
    serve(rig, [route("empty.test", [])])
    r, body = rig["router"].get("empty.test")
    assert r.status == 503
    assert r.getheader("X-Cf-Routererror") == "no_endpoints"
    assert body == b"503 Service Unavailable: Requested route ('empty.test') has no available endpoints.\n"


def test_empty_host_400(rig):
    out = rig["router"].raw(b"GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert b"\r\nX-Cf-Routererror: empty_host\r\n" in out
    assert out.endswith(b"400 Bad Request: Request had empty Host header\n")
    out = rig["router"].raw(b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and b"empty_host" in out


def test_parser_limits(rig):
    long_target = b"/" + b"a" * 9000
    out = rig["router"].raw(b"GET " + long_target + b" HTTP/1.1\r\nHost: x.test\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 414 "), out[:100]
    big = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
    out = rig["router"].raw(b"GET / HTTP/1.1\r\nHost: x.test\r\n" + big + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431 "), out[:100]
    out = rig["router"].raw(b"GARBAGE\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:100]


BAD_CHUNKS = [b"zz\r\n", b"-5\r\n", b"5\nhello\r\n", b"5\r\nhelloXX", b"1" * 40 + b"\r\n", b"5;\x01\r\n"]


def test_bad_chunked_request_body_400(rig):
    """A request body whose chunked framing is broken, in any of several ways, gets 400 "Invalid chunked
    body" and the connection closed at once, whether the bad bytes came with the head or after the head was
    at the backend (the backend connection is dropped, not pooled). The router answered nothing at all before,
    and the client waited for its own timeout."""
    b0, _ = rig["backends"]
    serve(rig, [route("chunk.test", [b0.port])])
    head = b"POST /upload?case=%d HTTP/1.1\r\nHost: chunk.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i, bad in enumerate(BAD_CHUNKS):
        out = rig["router"].raw(head % i + bad, timeout=5)
        assert out.startswith(b"HTTP/1.1 400 ") and out.endswith(b"Invalid chunked body\n"), (bad, out)
        assert b"\r\nConnection: close\r\n" in out, out
        later = 100 + i
        with socket.create_connection(("127.0.0.1", rig["router"].port), timeout=5) as s:
            s.sendall(head % later + b"5\r\nhello\r\n")
            wait_until(lambda: any(p == "/upload?case=%d" % later for _, p, _ in b0.requests), timeout=5,
                       what="the head at the backend")
            s.sendall(bad)
            out = read_to_end(s)
        assert out.startswith(b"HTTP/1.1 400 ") and out.endswith(b"Invalid chunked body\n"), (bad, out)
    r, body = rig["router"].get("chunk.test", "/upload", method="POST", body=b"fine")
    assert r.status == 200 and json.loads(body)["len"] == 4


def test_refused_endpoint_retried(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("retry.test", [dead_port(), b0.port, dead_port()])])
    for _ in range(20):
        r, body = rig["router"].get("retry.test")
        assert r.status == 200, body
        assert json.loads(body)["backend"] == "b0"


def test_all_dead_502(rig):
    rig["ctl"].set_routes([route("dead.test", [dead_port(), dead_port()]), route("alive.test", [])])
    wait_until(lambda: rig["router"].get("alive.test")[0].status == 503, timeout=5, what="table")
    r, body = rig["router"].get("dead.test")
    assert r.status == 502
    assert r.getheader("X-Cf-Routererror") == "endpoint_failure"
    assert body == b"502 Bad Gateway: Registered endpoint failed to handle the request.\n"


def test_headers_added(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("hdr.test", [b0.port], app="the-app-guid")])
    r, body = rig["router"].get("hdr.test", headers={
        "X-Forwarded-For": "203.0.113.9",
        "X-Vcap-Request-Id": "client-chosen",
        "X-CF-ApplicationID": "forged",
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "hop",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic Zm9v",
        "TE": "trailers",
        "X-Kept": "yes",
    })
    assert r.status == 200
    h = json.loads(body)["headers"]
    assert h["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert re.fullmatch(r"\d{13}", h["x-request-start"][0])
    assert abs(int(h["x-request-start"][0]) - time.time() * 1000) < 60000
    assert len(h["x-vcap-request-id"]) == 1
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        h["x-vcap-request-id"][0])
    assert h["x-cf-applicationid"] == ["the-app-guid"]
    assert h["x-cf-instanceindex"] == ["0"]
    assert h["x-cf-instanceid"] == [f"inst-0-{b0.port}"]
    for gone in ("x-secret", "keep-alive", "proxy-authorization", "te", "connection", "upgrade"):
        assert gone not in h, gone
    assert h["x-kept"] == ["yes"]
    assert h["host"] == ["hdr.test"]
    # Present values of X-Forwarded-Proto and X-Request-Start are kept.
    _, body = rig["router"].get("hdr.test", headers={"X-Forwarded-Proto": "https", "X-Request-Start": "123"})
    h = json.loads(body)["headers"]
    assert h["x-forwarded-proto"] == ["https"] and h["x-request-start"] == ["123"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    # Field names match in any case: each of the router's own headers is replaced, each hop-by-hop one dropped,
    # and present ones are kept once.
    _, body = rig["router"].get("hdr.test", headers={
        "x-forwarded-for": "198.51.100.1",
        "X-FORWARDED-PROTO": "https",
        "x-request-start": "7",
        "X-VCAP-REQUEST-ID": "forged",
        "x-cf-applicationid": "forged",
        "X-CF-INSTANCEINDEX": "9",
        "x-cf-instanceid": "forged",
        "connection": "x-LOWER",
        "X-Lower": "hop",
        "TRAILER": "X-T",
        "keep-alive": "timeout=1",
        "PROXY-CONNECTION": "keep-alive",
        "te": "trailers",
        "X-Kept-Too": "yes",
    })
    h = json.loads(body)["headers"]
    assert h["x-forwarded-for"] == ["198.51.100.1, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["https"] and h["x-request-start"] == ["7"]
    assert len(h["x-vcap-request-id"]) == 1 and h["x-vcap-request-id"][0] != "forged"
    assert h["x-cf-applicationid"] == ["the-app-guid"]
    assert h["x-cf-instanceindex"] == ["0"]
    assert h["x-cf-instanceid"] == [f"inst-0-{b0.port}"]
    for gone in ("x-lower", "trailer", "keep-alive", "proxy-connection", "te", "connection"):
        assert gone not in h, gone
    assert h["x-kept-too"] == ["yes"]


def test_keep_alive_both_sides(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("ka.test", [b0.port])])
    c = rig["router"].conn()
    ids, peers = set(), set()
    sock = None
    for i in range(8):
        c.request("GET", f"/echo?i={i}", headers={"Host": "ka.test"})
        r = c.getresponse()
        body = json.loads(r.read())
        assert r.status == 200
        if sock is None:
            sock = c.sock
        assert c.sock is sock  # the same client connection throughout
        ids.add(body["headers"]["x-vcap-request-id"][0])
        peers.add(body["peer_port"])
    c.close()
    assert len(ids) == 8
    # One client connection stays on one worker, whose pooled backend connection is reused.
    assert len(peers) == 1, peers
    # HEAD: no body but the Content-Length of the GET.
    c = rig["router"].conn()
    c.request("HEAD", "/echo", headers={"Host": "ka.test"})
    r = c.getresponse()
    assert r.status == 200 and r.read() == b""
    c.request("GET", "/echo", headers={"Host": "ka.test"})
    assert c.getresponse().status == 200
    c.close()


def test_pipelined_requests(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("pipe.test", [b0.port])])
    req = b"GET /echo?n=%d HTTP/1.1\r\nHost: pipe.test\r\n\r\n"
    out = rig["router"].raw(req % 1 + req % 2 + (req % 3).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b"/echo?n=1") < out.index(b"/echo?n=2") < out.index(b"/echo?n=3")


def test_chunked_upload_and_large_downloads(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("data.test", [b0.port])])
    data = os.urandom(3 * 1024 * 1024 + 17)

    def gen():
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    c = rig["router"].conn()
    c.request("POST", "/upload", body=gen(), headers={"Host": "data.test", "Transfer-Encoding": "chunked"},
              encode_chunked=True)
    r = c.getresponse()
    got = json.loads(r.read())
    assert r.status == 200
    assert got["len"] == len(data) and got["sha256"] == hashlib.sha256(data).hexdigest()
    # Content-Length upload on the same connection.
    c.request("POST", "/upload", body=data, headers={"Host": "data.test"})
    got = json.loads(c.getresponse().read())
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    # Large downloads, Content-Length and chunked, streamed through.
    n = 64 * 1024 * 1024 + 3
    want = hashlib.sha256(pattern(n)).hexdigest()
    for q in ("", "&chunked=1"):
        c.request("GET", f"/big?n={n}{q}", headers={"Host": "data.test"})
        r = c.getresponse()
        assert r.status == 200
        h = hashlib.sha256()
        total = 0
        while True:
            piece = r.read(1 << 20)
            if not piece:
                break
            h.update(piece)
            total += len(piece)
        assert total == n and h.hexdigest() == want, q
    c.close()


def test_chunked_answer_to_http10_client_is_dechunked(rig):
    """A backend that answers an HTTP/1.0 request chunked anyway (RFC 9112 6.1 forbids it; the router sends
    such requests on as HTTP/1.0): the client gets the data alone, without Transfer-Encoding, ended by the
    router's close, for one large chunked body and for one trickling in 4 KiB chunks. (The chunk framing
    reached the client as if it were the body.)"""
    b0, _ = rig["backends"]
    serve(rig, [route("ten.test", [b0.port])])
    for path, n in (("/big?n=%d&chunked=1", 3000017), ("/trickle?n=%d&ms=0.2", 100003)):
        out = rig["router"].raw(b"GET " + (path % n).encode() + b" HTTP/1.0\r\nHost: ten.test\r\n\r\n", timeout=30)
        head, body = out.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
        assert b"transfer-encoding" not in head.lower() and b"\r\nConnection: close" in head, head
        assert len(body) == n and body == pattern(n), (path, len(body))
    # HTTP/1.1 clients still get the chunks as they come.
    c = rig["router"].conn()
    c.request("GET", "/big?n=5000&chunked=1", headers={"Host": "ten.test"})
    r = c.getresponse()
    assert r.getheader("Transfer-Encoding") == "chunked" and r.read() == pattern(5000)
    c.close()


def test_upgrade_tunnel(rig):
    echo = UpgradeEcho()
    rig.setdefault("extras", []).append(echo)
    serve(rig, [route("ws.test", [echo.port])])
    with socket.create_connection(("127.0.0.1", rig["router"].port), timeout=10) as s:
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            d = s.recv(1)
            assert d, head
            head += d
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"\r\nUpgrade: websocket\r\n" in head and b"\r\nConnection: Upgrade\r\n" in head
        for i in range(5):
            msg = os.urandom(1000 + i * 50000)
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                d = s.recv(65536)
                assert d
                got += d
            assert got == msg
        s.shutdown(socket.SHUT_WR)
        assert s.recv(10) == b""  # the close travels both ways
    sent = [h for h in echo.heads if h.startswith("GET /chat ")][0].lower()
    assert "upgrade: websocket" in sent and "connection: upgrade" in sent


def test_route_change_within_a_second(rig):
    b0, b1 = rig["backends"]
    serve(rig, [route("first.test", [b0.port])])
    time.sleep(0.3)  # the router is now inside its long poll
    t0 = time.monotonic()
    rig["ctl"].set_routes([route("first.test", [b1.port]), route("second.test", [b0.port])])
    wait_until(lambda: rig["router"].get("second.test")[0].status == 200, timeout=1.0, interval=0.01,
               what="a new route")
    assert time.monotonic() - t0 < 1.0
    assert json.loads(rig["router"].get("first.test")[1])["backend"] == "b1"


def test_streams_in_flight_survive_route_table_changes(rig):
    """Long streamed downloads and a slow chunked upload keep going, byte for byte, while the route moves
    to another instance and then goes away: a new table never drops an in-flight request."""
    b0, b1 = rig["backends"]
    serve(rig, [route("stream.test", [b0.port])])
    n = 100 * 4096
    want = hashlib.sha256(pattern(n)).hexdigest()
    results = {}

    def download(i):
        c = rig["router"].conn()
        c.request("GET", f"/trickle?n={n}&ms=20", headers={"Host": "stream.test"})
        r = c.getresponse()
        body = r.read()
        results[f"get{i}"] = (r.status, len(body), hashlib.sha256(body).hexdigest())
        c.close()

    up = os.urandom(64 * 4096)

    def upload():
        def gen():
            for i in range(0, len(up), 4096):
                time.sleep(0.03)
                yield up[i:i + 4096]
        c = rig["router"].conn()
        c.request("POST", "/upload", body=gen(), headers={"Host": "stream.test", "Transfer-Encoding": "chunked"},
                  encode_chunked=True)
        r = c.getresponse()
        results["post"] = (r.status, json.loads(r.read()))
        c.close()

    threads = [threading.Thread(target=download, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=upload))
    for t in threads:
        t.start()
    wait_until(lambda: sum(1 for _, p, _ in b0.requests if p.startswith(("/trickle", "/upload"))) >= 4,
               timeout=5, what="the four streams to reach b0")
    # The route moves to b1: new requests go there, the streams on b0 go on.
    rig["ctl"].set_routes([route("stream.test", [b1.port])])
    wait_until(lambda: json.loads(rig["router"].get("stream.test")[1])["backend"] == "b1", timeout=2,
               interval=0.02, what="the route on b1")
    # Then the route goes away altogether.
    rig["ctl"].set_routes([route("other.test", [b1.port])])
    wait_until(lambda: rig["router"].get("stream.test")[0].status == 404, timeout=2, interval=0.02,
               what="the route gone")
    assert all(t.is_alive() for t in threads), "a stream ended before the table changes: make it longer"
    for t in threads:
        t.join(30)
    for i in range(3):
        assert results[f"get{i}"] == (200, n, want), results
    assert results["post"][0] == 200
    assert results["post"][1]["len"] == len(up) and results["post"][1]["sha256"] == hashlib.sha256(up).hexdigest()
    assert results["post"][1]["backend"] == "b0"


def test_controller_down_keeps_last_table(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("stay.test", [b0.port])])
    port = rig["ctl"].port
    rig["ctl"].stop()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        r, _ = rig["router"].get("stay.test")
        assert r.status == 200
        time.sleep(0.1)
    # It comes back (same port) with a new table: picked up.
    # It restarted and counts from a lower index: the router still takes its table at once.
    ctl = FakeController(port)
    rig["ctl"] = ctl
    ctl.index = 0
    ctl.set_routes([route("back.test", [b0.port])])
    wait_until(lambda: rig["router"].get("back.test")[0].status == 200, timeout=5, what="the new table")
    assert "route watch" in rig["router"].output()


def test_bad_token_is_refused(rig):
    """A router with the wrong token gets no table (the controller answers 401)."""
    b0, _ = rig["backends"]
    serve(rig, [route("tok.test", [b0.port])])
    tmp = tempfile.mkdtemp(prefix="berth-e2e-router-bad-")
    try:
        before = rig["ctl"].unauthorized
        bad = Router(rig["ctl"].url, tmp, token="wrong")
        wait_until(lambda: rig["ctl"].unauthorized > before, timeout=5, what="a refused poll")
        assert bad.get("tok.test")[0].status == 404
        bad.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_config_unknown_key_rejected(rig):
    cfg = os.path.join(rig["tmp"], "bad.yaml")
    with open(cfg, "w") as f:
        f.write("router:\n  listen: 127.0.0.1:1\n  bogus: 1\n")
    r = berthcli.run_berth("--config", cfg, "router", check=False, timeout=30)
    assert r.returncode != 0
    assert 'unknown key "bogus"' in r.stderr


def test_sigterm_drains_in_flight(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("slow.test", [b0.port])])
    result = {}

    def slow():
        result["r"] = rig["router"].get("slow.test", path="/slow?s=1.5")

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: any(p.startswith("/slow") for _, p, _ in b0.requests), timeout=5, what="the request")
    rig["router"].proc.send_signal(signal.SIGTERM)
    t.join(10)
    r, body = result["r"]
    assert r.status == 200 and json.loads(body)["backend"] == "b0"
    assert rig["router"].proc.wait(timeout=15) == 0


def test_slow_head_is_cut(rig):
    """A head trickling in (slowloris) is dropped after the head timeout (10 s), however steady the drip."""
    with socket.create_connection(("127.0.0.1", rig["router"].port), timeout=20) as s:
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        s.settimeout(1)
        closed = False
        for i in range(20):
            try:
                s.sendall(b"X-Drip-%d: x\r\n" % i)
                if s.recv(1024) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        elapsed = time.monotonic() - t0
    assert closed and 9 <= elapsed <= 13, elapsed


class ClosingBackend(RawBackend):
    """Answers one request per connection and closes when the next one arrives, unanswered (a keep-alive
    backend closing an idle connection just as it is reused): the router retries on a fresh connection."""

    def _serve(self, c):
        with c:
            if self.read_head(c):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                # The next request on this connection finds it closing (the idle-close race).
                c.recv(4096)


class CannedBackend(RawBackend):
    """Answers each request on a connection with the canned bytes its path names (``answers[path]``)."""

    NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, answers):
        self.answers = answers
        super().__init__()

    def _serve(self, c):
        with c:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        d = c.recv(65536)
                    except ConnectionResetError:  # the router dropped a connection whose answer it refused
                        return
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                c.sendall(self.answers.get(head.split(b" ")[1].decode(), self.NOT_FOUND))


def test_interim_and_malformed_responses(rig):
    """1xx from the backend: 100 and 103 reach an HTTP/1.1 client before the answer, an HTTP/1.0 client gets
    only the answer (RFC 9110 15.2); a 101 to a request that asked for no upgrade is 502, as a malformed or
    oversized response head and one with both Content-Length and Transfer-Encoding are. Each 502 is logged and
    counted, and the client's connection stays usable. (An unasked 101 was passed on as an interim response,
    and the client's connection then closed with nothing.)"""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    cb = CannedBackend({
        "/early": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + ok,
        "/continue": b"HTTP/1.1 100 Continue\r\n\r\n" + ok,
        "/switch": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw",
        "/status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
        "/both": b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "/huge": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(200))
                 + b"Content-Length: 2\r\n\r\nok",
        "/ok": ok,
        "/echo": ok,  # what serve() asks for
    })
    rig.setdefault("extras", []).append(cb)
    mport = free_port()
    router = extra_router(rig, f"router:\n  metrics_listen: 127.0.0.1:{mport}\n")
    serve(rig, [route("canned.test", [cb.port])])
    wait_until(lambda: router.get("canned.test", "/ok")[0].status == 200, timeout=5, what="the extra's table")
    close = b"GET /ok HTTP/1.1\r\nHost: canned.test\r\nConnection: close\r\n\r\n"  # ends each exchange
    for path, interim in (("/early", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"),
                          ("/continue", b"HTTP/1.1 100 Continue\r\n\r\n")):
        out = router.raw(b"GET %s HTTP/1.1\r\nHost: canned.test\r\n\r\n" % path.encode() + close)
        assert out.startswith(interim + b"HTTP/1.1 200 OK\r\n"), out
        assert out.count(b"HTTP/1.1 200 OK") == 2, out
        out = router.raw(b"GET %s HTTP/1.0\r\nHost: canned.test\r\n\r\n" % path.encode())
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nok"), out
    errors = "berth_router_backend_errors_total"
    m0 = _metrics(mport)[errors]
    for i, path in enumerate(("/switch", "/status", "/both", "/huge")):
        out = router.raw(b"GET %s HTTP/1.1\r\nHost: canned.test\r\n\r\n" % path.encode() + close)
        assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), (path, out)
        assert b"X-Cf-Routererror: endpoint_failure" in out and out.endswith(b"\r\n\r\nok"), (path, out)
        assert _metrics(mport)[errors] == m0 + i + 1, path
    log = router.output()
    assert "of canned.test: 101 Switching Protocols to a request without Upgrade" in log, log
    assert "of canned.test: response head too large" in log, log
    assert log.count("of canned.test: malformed response head") == 2, log


def test_answer_before_the_body_closes_and_says_so(rig):
    """A backend that answers before the request body has come (401 to a POST with Expect: 100-continue, as
    an app checking credentials does): the client gets the answer at once, with "Connection: close", and the
    connection closes (the body it held back may never come). (The close came without the header.)"""
    cb = CannedBackend({"/login": b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
                        "/echo": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
    rig.setdefault("extras", []).append(cb)
    serve(rig, [route("early.test", [cb.port])])
    with socket.create_connection(("127.0.0.1", rig["router"].port), timeout=10) as s:
        s.sendall(b"POST /login HTTP/1.1\r\nHost: early.test\r\nContent-Length: 100000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        out = read_to_end(s)
    assert out == b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", out


def test_backend_closing_pooled_connections(rig):
    cb = ClosingBackend()
    rig.setdefault("extras", []).append(cb)
    serve(rig, [route("closing.test", [cb.port])])
    c = rig["router"].conn()
    for i in range(40):
        c.request("GET", "/", headers={"Host": "closing.test"})
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"ok"), i
    c.close()
    assert cb.connections >= 40


class HangUpBackend(RawBackend):
    """Takes each connection and its request head, then closes it unanswered (a backend going away)."""

    def __init__(self):
        self.heads = 0
        super().__init__()

    def _serve(self, c):
        with c:
            if self.read_head(c):
                self.heads += 1


def test_hang_up_before_the_answer(rig):
    """A fresh connection that ends before any of the answer: a GET (safe, no body) goes to another instance,
    as Gorouter retries an idempotent request on EOF; a POST with a body is not sent twice (502)."""
    hb, h1, h2 = HangUpBackend(), HangUpBackend(), HangUpBackend()
    rig.setdefault("extras", []).extend([hb, h1, h2])
    b0, _ = rig["backends"]
    serve(rig, [route("hangup.test", [hb.port, b0.port])])
    for _ in range(10):
        r, body = rig["router"].get("hangup.test")
        assert r.status == 200, body
        assert json.loads(body)["backend"] == "b0"
    assert hb.heads >= 1
    rig["ctl"].set_routes([route("hangup2.test", [h1.port, h2.port])])
    wait_until(lambda: rig["router"].get("hangup2.test", path="/", method="OPTIONS")[0].status != 404,
               timeout=5, what="the route")
    wait_until(lambda: h1.heads + h2.heads == 2, timeout=5, what="both tried by the OPTIONS")
    r, body = rig["router"].get("hangup2.test", path="/upload", method="POST", body=b"x" * 1000)
    assert r.status == 502, body
    assert r.getheader("X-Cf-Routererror").startswith("endpoint_failure")
    wait_until(lambda: h1.heads + h2.heads >= 3, timeout=5, what="the POST's head")
    assert h1.heads + h2.heads == 3  # sent once


class CorkedCloseBackend(RawBackend):
    """Answers without Content-Length (the body ends at close, as busybox httpd's CGI answers) and sends its
    last bytes and the FIN in one segment (TCP_CORK, then close): the router sees data and EOF in one event."""

    def __init__(self, split_head=False):
        self.split_head = split_head
        super().__init__()

    def _serve(self, c):
        with c:
            if not self.read_head(c):
                return
            head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
            if self.split_head:
                c.sendall(head)  # the head alone first; the body and the FIN together later
                time.sleep(0.05)
                head = b""
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            c.sendall(head + b"sick\n")


@pytest.mark.parametrize("split_head", [False, True])
def test_body_ending_at_close_with_data_and_fin_together(rig, split_head):
    cb = CorkedCloseBackend(split_head)
    rig.setdefault("extras", []).append(cb)
    serve(rig, [route("corked.test", [cb.port])])
    for i in range(30):
        c = rig["router"].conn()
        c.timeout = 5
        c.request("GET", "/", headers={"Host": "corked.test"})
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"sick\n"), i
        c.close()


# ---------------------------------------------------------------------------------------------- issue 6


def extra_router(rig, config, workers=2, cpus=None):
    """A second router on the rig's controller with its own config (stopped by the rig), on the CPUs given
    (its affinity) or on all."""
    d = tempfile.mkdtemp(dir=rig["tmp"])
    r = Router(rig["ctl"].url, d, workers=workers, config=config, cpus=cpus)
    rig.setdefault("extras", []).append(r)
    return r


def _router_close_wait(pid):
    """The router's TCP sockets whose peer has closed and that it has not closed (CLOSE-WAIT)."""
    out = subprocess.run(["ss", "-tnpH", "state", "close-wait"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if f"pid={pid}," in l]


def test_client_gone_gives_up_the_request(rig):
    """A client that closes while its request is with the backend: the router gives the request up at once
    (as Gorouter and nginx: 499 in the access log), not at the request timeout, and holds no socket for it.
    A client that pipelined a second request before shutting down its side still gets both answers."""
    b0, _ = rig["backends"]
    serve(rig, [route("gone.test", [b0.port], app="app-guid-gone")])
    router, ctl = rig["router"], rig["ctl"]
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
        s.sendall(b"GET /slow?s=4&gone=1 HTTP/1.1\r\nHost: gone.test\r\n\r\n")
        wait_until(lambda: any("gone=1" in p for _, p, _ in b0.requests), timeout=5, what="the request")
    t0 = time.monotonic()
    wait_until(lambda: any('"GET /slow?s=4&gone=1 HTTP/1.1" 499 ' in l["message"] for l in ctl.access_lines),
               timeout=3, what="the 499 access log line")
    assert time.monotonic() - t0 < 3.5  # the backend answers after 4 s
    wait_until(lambda: not _router_close_wait(router.proc.pid), timeout=2, what="no socket left in CLOSE-WAIT")
    req = b"GET /slow?s=0.2&pipe=%d HTTP/1.1\r\nHost: gone.test\r\n\r\n"
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
        s.sendall(req % 1 + req % 2)
        s.shutdown(socket.SHUT_WR)
        out = read_to_end(s)
    assert out.count(b"HTTP/1.1 200 OK") == 2, out
    assert out.index(b"pipe=1") < out.index(b"pipe=2")


def test_app_instance_header_pins_the_instance(rig):
    """Gorouter's X-CF-App-Instance (and X-CF-Process-Instance): GUID:INDEX goes to that instance only and is
    not forwarded; a value of another form is 400 invalid_cf_app_instance_header; an instance the route does
    not have is 400 unknown_route."""
    b0, b1 = rig["backends"]
    app = "3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b"
    serve(rig, [route("pin.test", [b0.port, b1.port], app=app)])
    router = rig["router"]
    for name, idx, be in (("X-CF-App-Instance", 0, b0), ("X-CF-App-Instance", 1, b1),
                          ("X-CF-Process-Instance", 1, b1), ("x-cf-app-instance", 0, b0)):
        for _ in range(4):  # round-robin would alternate
            r, body = router.get("pin.test", headers={name: f"{app}:{idx}"})
            assert r.status == 200, body
            j = json.loads(body)
            assert j["backend"] == be.name, (name, idx, j["backend"])
            assert not {"x-cf-app-instance", "x-cf-process-instance"} & set(j["headers"]), j["headers"]
    for bad in ["nope", app, f"{app}:", f"{app}:x", f"{app.upper()}:0", f"{app}:0 1", f"{app[:-1]}:0",
                f"{app}:1234567890"]:
        r, body = router.get("pin.test", headers={"X-CF-App-Instance": bad})
        assert r.status == 400, bad
        assert r.getheader("X-Cf-Routererror") == "invalid_cf_app_instance_header", bad
        assert body == b"400 Bad Request: Invalid X-CF-App-Instance Header\n", body
    other = "00000000-0000-4000-8000-000000000000"
    for guid, idx in ((app, 2), (other, 0)):
        r, body = router.get("pin.test", headers={"X-CF-App-Instance": f"{guid}:{idx}"})
        assert r.status == 400
        assert r.getheader("X-Cf-Routererror") == "unknown_route"
        assert body == (f"400 Bad Request: Requested instance ('{idx}') with guid ('{guid}') does not exist "
                        f"for route ('pin.test')\n").encode(), body
    # The pinned instance refusing connections: no retry on another one.
    dead = dead_port()
    serve(rig, [route("pin2.test", [dead, b1.port], app=app)])
    r, _ = router.get("pin2.test", headers={"X-CF-App-Instance": f"{app}:0"})
    assert r.status == 502 and r.getheader("X-Cf-Routererror").startswith("endpoint_failure")
    assert router.get("pin2.test", headers={"X-CF-App-Instance": f"{app}:1"})[0].status == 200


def test_sticky_sessions(rig):
    b0, b1 = rig["backends"]
    serve(rig, [route("sticky.test", [b0.port, b1.port], path="")])
    router = rig["router"]
    # No session cookie in the response: no __VCAP_ID__.
    r, _ = router.get("sticky.test", path="/echo")
    assert r.getheader("Set-Cookie") is None
    r, body = router.get("sticky.test", path="/login")
    who = json.loads(body)["backend"]
    port = {"b0": b0.port, "b1": b1.port}[who]
    idx = 0 if who == "b0" else 1
    guid = f"inst-{idx}-{port}"
    cookies = r.msg.get_all("Set-Cookie")
    assert f"JSESSIONID=s-{who}; Path=/; Secure; SameSite=Strict" in cookies, cookies
    assert f"__VCAP_ID__={guid}; Path=/; HttpOnly; Secure; SameSite=Strict" in cookies, cookies
    jar = {"Cookie": f"JSESSIONID=s-{who}; __VCAP_ID__={guid}"}
    seen = {json.loads(router.get("sticky.test", headers=jar)[1])["backend"] for _ in range(12)}
    assert seen == {who}, seen
    # A sticky request whose instance went to another gets a new __VCAP_ID__ for the instance it reached.
    other = b1 if who == "b0" else b0
    rig["ctl"].set_routes([route("sticky.test", [other.port])])
    wait_until(lambda: all(json.loads(router.get("sticky.test")[1])["backend"] == other.name for _ in range(6)),
               timeout=5, what="the new table")
    r, body = router.get("sticky.test", headers=jar)
    assert json.loads(body)["backend"] == other.name
    assert r.getheader("Set-Cookie") == f"__VCAP_ID__=inst-0-{other.port}; Path=/; HttpOnly"
    # Unknown and oversized __VCAP_ID__ values are ignored.
    for bad in ("nope", "x" * 500):
        r, _ = router.get("sticky.test", headers={"Cookie": f"__VCAP_ID__={bad}"})
        assert r.status == 200


def test_sticky_cookie_path_is_the_routes(rig):
    b0, _ = rig["backends"]
    rig["ctl"].set_routes([route("sp.test", [b0.port], path="/app")])
    wait_until(lambda: rig["router"].get("sp.test", path="/app/x")[0].status == 200, timeout=5, what="the table")
    r, _ = rig["router"].get("sp.test", path="/app/login")
    assert f"__VCAP_ID__=inst-0-{b0.port}; Path=/app; HttpOnly; Secure; SameSite=Strict" in r.msg.get_all(
        "Set-Cookie")


def test_least_connection(rig):
    b0, b1 = rig["backends"]
    router = extra_router(rig, "router:\n  balancing_algorithm: least-connection\n")
    serve(rig, [route("lc.test", [b0.port, b1.port])])
    wait_until(lambda: router.get("lc.test")[0].status == 200, timeout=5, what="the table")
    done = threading.Event()

    def hold():
        router.get("lc.test", path="/slow?s=3")
        done.set()

    t = threading.Thread(target=hold)
    t.start()
    wait_until(lambda: any(p.startswith("/slow") for b in (b0, b1) for _, p, _ in b.requests), timeout=5,
               what="the slow request")
    busy = b0 if any(p.startswith("/slow") for _, p, _ in b0.requests) else b1
    free_ = b1 if busy is b0 else b0
    seen = [json.loads(router.get("lc.test")[1])["backend"] for _ in range(8)]
    assert not done.is_set(), "the slow request ended too early for the test to mean anything"
    assert seen == [free_.name] * 8, seen
    t.join(10)
    # Idle again: both get requests.
    seen = {json.loads(router.get("lc.test")[1])["backend"] for _ in range(8)}
    assert seen == {"b0", "b1"}, seen


def test_bad_balancing_algorithm_rejected(rig):
    cfg = os.path.join(rig["tmp"], "bad-balance.yaml")
    with open(cfg, "w") as f:
        f.write("router:\n  balancing_algorithm: random\n")
    r = berthcli.run_berth("--config", cfg, "router", check=False, timeout=30)
    assert r.returncode != 0 and "round-robin or least-connection" in r.stderr, r.stderr
    r = berthcli.run_berth("router", "--balancing", "hash", check=False, timeout=30)
    assert r.returncode == 2 and "round-robin or least-connection" in r.stderr, r.stderr


def test_backend_connection_limit(rig):
    b0, _ = rig["backends"]
    router = extra_router(rig, "router:\n  backend_max_conns: 1\n")
    serve(rig, [route("cap.test", [b0.port])])
    wait_until(lambda: router.get("cap.test")[0].status == 200, timeout=5, what="the table")
    result = {}

    def hold():
        result["r"] = router.get("cap.test", path="/slow?s=2")

    t = threading.Thread(target=hold)
    t.start()
    wait_until(lambda: any(p.startswith("/slow") for _, p, _ in b0.requests), timeout=5, what="the request")
    r, body = router.get("cap.test")
    assert r.status == 503, body
    assert r.getheader("X-Cf-Routererror") == "Connection Limit Reached"
    assert body == b"503 Service Unavailable: Requested route ('cap.test') has reached the connection limit.\n"
    t.join(10)
    assert result["r"][0].status == 200
    assert router.get("cap.test")[0].status == 200  # the slot is free again


def _metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    vals = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            vals[k] = float(v)
    return vals


def test_metrics(rig):
    b0, _ = rig["backends"]
    mport = free_port()
    router = extra_router(rig, f"router:\n  metrics_listen: 127.0.0.1:{mport}\n")
    serve(rig, [route("m.test", [b0.port]), route("dead.test", [dead_port()])])
    wait_until(lambda: router.get("m.test")[0].status == 200, timeout=5, what="the table")
    before = _metrics(mport)
    for _ in range(5):
        assert router.get("m.test")[0].status == 200
    assert router.get("nope.test")[0].status == 404
    assert router.get("dead.test")[0].status == 502
    held = router.conn()  # an open client connection shows in the gauge
    held.request("GET", "/echo", headers={"Host": "m.test"})
    held.getresponse().read()
    # A request is counted once its response is written: the client can read it a moment before that.
    ok = 'berth_router_requests_total{status_class="2xx"}'
    wait_until(lambda: _metrics(mport)[ok] - before[ok] >= 6, timeout=5, what="the 2xx count")
    m = _metrics(mport)
    assert m['berth_router_requests_total{status_class="4xx"}'] >= 1
    assert m['berth_router_requests_total{status_class="5xx"}'] >= 1
    assert m["berth_router_backend_errors_total"] >= 1
    assert m["berth_router_open_connections"] >= 1
    assert m["berth_router_open_backend_connections"] >= 1
    count = m["berth_router_request_duration_seconds_count"]
    assert m['berth_router_request_duration_seconds_bucket{le="+Inf"}'] == count
    assert count == sum(v for k, v in m.items() if k.startswith("berth_router_requests_total"))
    assert m["berth_router_request_duration_seconds_sum"] > 0
    held.close()
    c = http.client.HTTPConnection("127.0.0.1", mport, timeout=10)
    c.request("GET", "/other")
    assert c.getresponse().status == 404
    c.close()


def _self_signed(d, name, sans):
    """A self-signed certificate for sans (DNS names) → (cert path, key path)."""
    cert, key = os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={sans[0]}",
                    "-addext", "subjectAltName=" + ",".join("DNS:" + s for s in sans)],
                   check=True, capture_output=True)
    return cert, key


def _tls_get(port, sni, cafile, path="/echo", host=None, conn=None):
    import ssl
    ctx = ssl.create_default_context(cafile=cafile)
    # SNI and the certificate check use sni while the connection goes to 127.0.0.1.
    c = conn or http.client.HTTPSConnection(sni, port, timeout=20, context=ctx)
    if conn is None:
        c._create_connection = lambda addr, *a, **k: socket.create_connection(("127.0.0.1", port), *a, **k)
    c.request("GET", path, headers={"Host": host or sni})
    r = c.getresponse()
    return c, r, r.read()


def test_tls_termination_with_sni(rig):
    import ssl
    b0, _ = rig["backends"]
    d = tempfile.mkdtemp(dir=rig["tmp"])
    a_cert, a_key = _self_signed(d, "a", ["a.test"])
    w_cert, w_key = _self_signed(d, "w", ["*.apps.test", "apps.test"])
    tport = free_port()
    router = extra_router(rig, "router:\n  tls_listen: 127.0.0.1:%d\n  tls_certificates:\n"
                               "    - {cert_file: %s, key_file: %s}\n    - {cert_file: %s, key_file: %s}\n"
                          % (tport, a_cert, a_key, w_cert, w_key))
    serve(rig, [route("a.test", [b0.port]), route("web.apps.test", [b0.port])])
    wait_until(lambda: router.get("web.apps.test")[0].status == 200, timeout=5, what="the table")
    assert f"TLS on 127.0.0.1:{tport}" in router.output()
    # The wildcard certificate for its names (verified against it alone), the first one for a.test.
    c, r, body = _tls_get(tport, "web.apps.test", w_cert)
    assert r.status == 200
    hdrs = json.loads(body)["headers"]
    assert hdrs["x-forwarded-proto"] == ["https"]
    # Keep-alive on the same TLS connection, and a large download checksummed.
    for _ in range(3):
        c.request("GET", "/big?n=3000000", headers={"Host": "web.apps.test"})
        r = c.getresponse()
        data = r.read()
        assert r.status == 200 and data == pattern(3000000)
    c.close()
    c, r, _ = _tls_get(tport, "a.test", a_cert)
    assert r.status == 200
    c.close()
    # A name no certificate covers gets the first one (which fails verification for that name).
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_get(tport, "other.test", w_cert)
    # A TLS client's request for an unknown route gets the router's 404 over TLS.
    c, r, body = _tls_get(tport, "x.apps.test", w_cert)
    assert r.status == 404 and r.getheader("X-Cf-Routererror") == "unknown_route"
    c.close()
    # Plain HTTP on the TLS port: a plain-text 400 saying so (as Go's server and nginx answer; it was a reset),
    # the connection closes, the router lives on.
    with socket.create_connection(("127.0.0.1", tport), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: plain\r\n\r\n")
        out = read_to_end(s)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    assert out.endswith(b"\r\n\r\n400 Bad Request: Client sent an HTTP request to an HTTPS server.\n"), out
    assert router.get("web.apps.test")[0].status == 200


def test_tls_bad_certificate_refused(rig):
    d = tempfile.mkdtemp(dir=rig["tmp"])
    cert, _ = _self_signed(d, "a", ["a.test"])
    _, other_key = _self_signed(d, "b", ["b.test"])
    cfg = os.path.join(d, "tls.yaml")
    with open(cfg, "w") as f:
        f.write(f"router:\n  tls_listen: 127.0.0.1:0\n  tls_certificates:\n    - {{cert_file: {cert}, key_file: {other_key}}}\n")
    tok = os.path.join(d, "tok")
    with open(tok, "w") as f:
        f.write(TOKEN)
    r = berthcli.run_berth("--config", cfg, "router", "--listen", "127.0.0.1:0", "--internal-token-file", tok,
                           check=False, timeout=30)
    assert r.returncode != 0 and "TLS certificate" in r.stderr, r.stderr
    r = berthcli.run_berth("router", "--tls-cert", cert, check=False, timeout=30)
    assert r.returncode == 2 and "has no --tls-key" in r.stderr, r.stderr


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_ten_thousand_idle_connections(rig):
    """10,000 idle client connections are held with bounded memory while other clients are served."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10500:
        pytest.skip(f"needs 10,500 descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    b0, _ = rig["backends"]
    serve(rig, [route("idle.test", [b0.port])])
    router = rig["router"]
    base = _rss_kib(router.proc.pid)
    socks = []
    try:
        for i in range(10000):
            s = socket.socket()
            s.setblocking(True)
            s.connect(("127.0.0.1", router.port))
            socks.append(s)
            if i % 1000 == 999:  # some of them sent half a request head (slow clients)
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: idle.test\r\n")
        # Every connection is accepted and held: the router answers a new client at once.
        r, _ = router.get("idle.test")
        assert r.status == 200
        wait_until(lambda: int(subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{router.port} )"],
                                              capture_output=True, text=True).stdout.count("\n")) >= 10000,
                   timeout=30, what="10,000 established connections on the router")
        grown = _rss_kib(router.proc.pid) - base
        print(f"router RSS grew by {grown} KiB for 10,000 idle connections ({grown * 1024 / 10000:.0f} B each)")
        assert grown < 10000 * 4, f"{grown} KiB for 10,000 idle connections"
        # They are still served when they speak.
        s = socks[5]
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: idle.test\r\nConnection: close\r\n\r\n")
        s.settimeout(10)
        out = read_to_end(s)
        assert out.startswith(b"HTTP/1.1 200 "), out[:100]
    finally:
        for s in socks:
            s.close()
    assert router.get("idle.test")[0].status == 200


class _Load:
    """Threads sending requests through the router until stopped; failures are recorded."""

    def __init__(self, router, host, threads=4):
        self.router, self.host = router, host
        self.ok, self.failed, self.stop_ = 0, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self):
        c = None
        while not self.stop_.is_set():
            try:
                c = c or self.router.conn()
                c.request("GET", "/echo", headers={"Host": self.host})
                r = c.getresponse()
                body = r.read()
                if r.status != 200:
                    self.failed.append((r.status, body[:200]))
                else:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 -- every failure counts
                self.failed.append(repr(e))
                c = None

    def stop(self):
        self.stop_.set()
        for t in self.threads:
            t.join(10)


def test_route_moves_between_instances_under_load(rig):
    b0, b1 = rig["backends"]
    serve(rig, [route("move.test", [b0.port])])
    load = _Load(rig["router"], "move.test")
    wait_until(lambda: load.ok > 50, timeout=10, what="some load")
    rig["ctl"].set_routes([route("move.test", [b0.port, b1.port])])
    wait_until(lambda: len(b1.requests) > 20, timeout=10, what="requests on the new instance")
    rig["ctl"].set_routes([route("move.test", [b1.port])])
    n0 = len(b0.requests)
    wait_until(lambda: load.ok > 400, timeout=20, what="more load")
    load.stop()
    assert not load.failed, load.failed[:5]
    assert len(b0.requests) - n0 < 20  # b0 left the table quickly


def test_instance_killed_under_load(rig):
    """A backend that dies mid-load: new requests go to the other; nothing retriable fails."""
    b0, b1 = rig["backends"]
    serve(rig, [route("kill.test", [b0.port, b1.port])])
    load = _Load(rig["router"], "kill.test")
    wait_until(lambda: load.ok > 100 and len(b0.requests) > 20, timeout=10, what="load on both")
    b0.stop()  # closes its listener: connects are refused; its idle pooled connections are closed
    n1 = len(b1.requests)
    wait_until(lambda: len(b1.requests) - n1 > 300, timeout=20, what="load moving to b1")
    load.stop()
    assert not load.failed, load.failed[:5]


def test_expect_100_continue(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("exp.test", [b0.port])])
    body = pattern(200000)
    with socket.create_connection(("127.0.0.1", rig["router"].port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: exp.test\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                  % len(body))
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n"), first
        s.sendall(body)
        out = b""
        while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
            d = s.recv(65536)
            if not d:
                break
            out += d
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    got = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert got["len"] == len(body) and got["sha256"] == hashlib.sha256(body).hexdigest()


def test_access_log_lines_reach_the_controller(rig):
    b0, _ = rig["backends"]
    serve(rig, [route("log.test", [b0.port], app="app-guid-log")])
    r, _ = rig["router"].get("log.test", path="/echo?q=1", headers={"User-Agent": 'curl/"8"', "Referer": "http://r/"})
    assert r.status == 200
    ctl = rig["ctl"]
    wait_until(lambda: any("/echo?q=1" in l["message"] for l in ctl.access_lines), timeout=5,
               what="the access log line")
    line = next(l for l in ctl.access_lines if "/echo?q=1" in l["message"])
    assert line["app_guid"] == "app-guid-log"
    with ctl.cond:
        assert ctl.encodings and set(ctl.encodings) == {"zstd"}, ctl.encodings  # compressed (accesslog.c)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", line["timestamp"]), line
    m = line["message"]
    assert re.match(r'log\.test - \[\S+\] "GET /echo\?q=1 HTTP/1\.1" 200 0 \d+ "http://r/" "curl/\?8\?" '
                    r'"127\.0\.0\.1:\d+" "127\.0\.0\.1:%d" x_forwarded_for:"127\.0\.0\.1" '
                    r'x_forwarded_proto:"http" vcap_request_id:"[0-9a-f-]{36}" response_time:[0-9.]+ '
                    r'gorouter_time:[0-9.]+ app_id:"app-guid-log" app_index:"0" instance_id:"inst-0-%d"$'
                    % (b0.port, b0.port), m), m
    # Unknown routes are nobody's logs.
    n = len(ctl.access_lines)
    rig["router"].get("nope.test")
    # A later request's line comes in the same batch as, or after, anything the 404 could have queued.
    rig["router"].get("log.test", path="/echo?after")
    wait_until(lambda: any("/echo?after" in l["message"] for l in ctl.access_lines), timeout=5, what="the line")
    assert not any("nope.test" in l["message"] for l in ctl.access_lines[n:])


def test_access_log_goes_plain_to_a_controller_without_zstd(rig):
    """The access log POSTs go zstd-compressed; a controller that answers 415 gets the same lines again as
    plain JSON, and plain bodies from then on."""
    b0, _ = rig["backends"]
    serve(rig, [route("plain.test", [b0.port], app="app-guid-plain")])
    ctl = rig["ctl"]
    ctl.refuse_zstd = True
    for i in range(2):
        assert rig["router"].get("plain.test", path=f"/echo?plain{i}")[0].status == 200
        wait_until(lambda: any(f"/echo?plain{i}" in l["message"] for l in ctl.access_lines), timeout=5,
                   what=f"line {i}")
    with ctl.cond:
        enc = list(ctl.encodings)
        lines = [l["message"] for l in ctl.access_lines if "/echo?plain" in l["message"]]
    assert len(enc) >= 3 and enc[0] == "zstd" and set(enc[1:]) == {""}, enc
    assert len(lines) == 2, lines  # each line once: the refused body's lines were not counted twice


def one_worker_router(rig, host, app, config=""):
    """A second router with one worker (one access log queue) and config lines added, serving host → the
    first backend for app; it has answered GET /echo?warm."""
    b0, _ = rig["backends"]
    serve(rig, [route(host, [b0.port], app=app)])
    router = extra_router(rig, "router:\n" + config, workers=1)
    wait_until(lambda: router.get(host, path="/echo?warm")[0].status == 200, timeout=5,
               what="the route on the second router")
    return router


def test_access_log_full_batch_ships_at_once(rig):
    """Lines wait for the shipper's timer (router.access_log_flush_ms, here a minute) until a worker's batch
    reaches 64 KiB: that batch goes at once, so a busy router ships small batches often."""
    router = one_worker_router(rig, "kick.test", "app-guid-kick", "  access_log_flush_ms: 60000\n")
    ctl = rig["ctl"]

    def arrived(marker):
        with ctl.cond:
            return sum(marker in l["message"] for l in ctl.access_lines)

    time.sleep(0.5)  # the absence of a line: nothing to await
    assert arrived("/echo?warm") == 0, "a small batch was shipped before the timer"
    # 80 lines of about 1.4 KB each: the 47th or so takes the batch past 64 KiB.
    c = router.conn()
    try:
        for i in range(80):
            c.request("GET", f"/echo?bulk-{i:02d}-" + "x" * 1000, headers={"Host": "kick.test"})
            r = c.getresponse()
            r.read()
            assert r.status == 200
    finally:
        c.close()
    wait_until(lambda: arrived("/echo?bulk-") >= 40, timeout=10, what="the full batch")
    assert arrived("/echo?warm") >= 1  # shipped with it


def _line_senders(router, host, marker, statuses, n=1000, clients=25):
    """Threads (not started) that send n GETs of /echo?<marker>NNNN-<1,000 x> to host through router over
    `clients` keep-alive connections, counting the answers' statuses in the Counter statuses: about 1.4 MB
    of access log lines."""
    lock = threading.Lock()

    def client(k):
        c = router.conn()
        try:
            for i in range(k, n, clients):
                c.request("GET", f"/echo?{marker}{i:04d}-" + "x" * 1000, headers={"Host": host})
                r = c.getresponse()
                r.read()
                with lock:
                    statuses[r.status] += 1
        finally:
            c.close()

    return [threading.Thread(target=client, args=(k,)) for k in range(clients)]


def _lines_arrived(ctl, marker):
    """How many of _line_senders' lines (distinct NNNN after ?<marker>) the controller has taken."""
    with ctl.cond:
        return len({l["message"].split("?" + marker)[1][:4] for l in ctl.access_lines
                    if "?" + marker in l["message"]})


def test_access_log_backlog_ships_in_bodies_the_controller_takes(rig):
    """Lines that piled up while the controller was slow (here 1.4 MB of them) go in several POSTs of at most
    about 512 KiB, which the controller's 1 MiB body limit takes: none is lost."""
    router = one_worker_router(rig, "split.test", "app-guid-split")
    ctl = rig["ctl"]
    ctl.max_body = 1 << 20
    gate = threading.Event()
    ctl.post_gate = (b"?split-", gate)
    n, statuses = 1000, collections.Counter()
    threads = _line_senders(router, "split.test", "split-", statuses, n)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        gate.set()
    assert statuses == {200: n}, statuses
    wait_until(lambda: _lines_arrived(ctl, "split-") == n, timeout=20, what=f"all {n} lines")
    with ctl.cond:
        sizes = list(ctl.post_sizes)
    assert max(sizes) <= (512 + 16) * 1024, sizes
    assert sum(s > 400 * 1024 for s in sizes) >= 2, sizes  # the backlog went in several full bodies
    with ctl.cond:
        wire = list(ctl.wire_sizes)
    assert sum(wire) * 4 < sum(sizes), (wire, sizes)  # compressed


def _cpu_ticks(pid):
    """User plus system CPU time of a process, all its threads, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_bounded_settings_are_checked(rig):
    """Each integer setting out of its range (or not an integer) is refused, naming the setting."""
    cfg = os.path.join(rig["tmp"], "bounds.yaml")
    cases = [("busy_poll_us", "-1", "router.busy_poll_us must be between 0 (off) and 10000"),
             ("answer_poll_us", "-1", "router.answer_poll_us must be between 0 (off) and 1000"),
             ("answer_poll_us", "1001", "router.answer_poll_us must be between 0 (off) and 1000"),
             ("busy_poll_us", "10001", "router.busy_poll_us must be between 0 (off) and 10000"),
             ("busy_poll_us", "fast", "busy_poll_us"),
             ("workers", "0", "router.workers must be between 1 and "),
             ("backend_max_conns", "-1", "router.backend_max_conns must be between 0 (no limit) and 1000000"),
             ("dial_timeout_ms", "0", "router.dial_timeout_ms must be between 1 and "),
             ("idle_timeout_ms", "-5", "router.idle_timeout_ms must be between 1 and "),
             ("access_log_flush_ms", "9", "router.access_log_flush_ms must be between 10 and 60000"),
             ("access_log_flush_ms", "60001", "router.access_log_flush_ms must be between 10 and 60000")]
    for key, bad, message in cases:
        with open(cfg, "w") as f:
            f.write(f"router:\n  listen: 127.0.0.1:1\n  {key}: {bad}\n")
        r = berthcli.run_berth("--config", cfg, "router", check=False, timeout=30)
        assert r.returncode != 0, (key, bad)
        assert message in r.stderr, (key, bad, r.stderr)


def test_port_in_use_is_refused(rig):
    """A second router on a port another router listens on fails to start (its SO_REUSEPORT listeners would
    otherwise join the first router's and take half of its connections); the first one goes on serving."""
    cfg = os.path.join(rig["tmp"], "taken.yaml")
    port = rig["router"].port
    with open(cfg, "w") as f:
        f.write(f"router:\n  listen: 127.0.0.1:{port}\n")
    r = berthcli.run_berth("--config", cfg, "router", "--controller", rig["ctl"].url, "--internal-token-file",
                           os.path.join(rig["router"].tmp, "internal-token"), check=False, timeout=30)
    assert r.returncode != 0
    assert f"listen on 127.0.0.1:{port}: bind: Address already in use" in r.stderr, r.stderr
    b0, _ = rig["backends"]
    serve(rig, [route("taken.test", [b0.port])])
    assert rig["router"].get("taken.test")[0].status == 200


def test_listen_backlog_is_the_hosts_longest(rig):
    """Each worker's listening socket asks for the longest accept queue the host allows (net.core.somaxconn,
    as Go's listeners and so Gorouter's do), so a burst of connections waits instead of having SYNs dropped
    (each costing the client a second)."""
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    out = subprocess.run(["ss", "-ltnH", f"sport = :{rig['router'].port}"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out and all(int(l.split()[2]) == min(somaxconn, 65535) for l in out), out


def test_busy_polling_serves_load_then_sleeps(rig):
    """With the longest busy-poll window a worker keeps polling while events come in bursts: concurrent
    keep-alive clients are all answered, and once they stop the router goes back to sleep (its CPU use
    over the next second stays near nothing)."""
    b0, b1 = rig["backends"]
    serve(rig, [route("spin.test", [b0.port, b1.port])])
    router = extra_router(rig, "router:\n  busy_poll_us: 10000\n")
    wait_until(lambda: router.get("spin.test")[0].status == 200, timeout=5, what="the route")
    statuses = []
    lock = threading.Lock()

    def client():
        c = router.conn()
        try:
            for _ in range(40):
                c.request("GET", "/echo", headers={"Host": "spin.test"})
                r = c.getresponse()
                r.read()
                with lock:
                    statuses.append(r.status)
        finally:
            c.close()

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [200] * 480, collections.Counter(statuses)
    # The last window ends 10 ms after the last event; measure a second after that.
    time.sleep(0.1)
    before = _cpu_ticks(router.proc.pid)
    time.sleep(1.0)
    used = _cpu_ticks(router.proc.pid) - before
    hz = os.sysconf("SC_CLK_TCK")
    assert used <= hz // 10, f"an idle router used {used} ticks of {hz} in a second"


def test_busy_polling_is_budgeted(rig):
    """Paced clients whose requests overlap now and then but leave gaps shorter than the longest busy-poll
    window: without a budget the worker would never sleep (a whole CPU for a few thousand requests a
    second); with it, polls that find nothing may cost at most as much CPU as the work, so the router stays
    well under a CPU while every request is answered."""
    router = extra_router(rig, "router:\n  busy_poll_us: 10000\n")
    wait_until(lambda: router.get("nowhere.test")[0].status == 404, timeout=5, what="the router")
    stop = threading.Event()
    statuses = collections.Counter()
    lock = threading.Lock()

    def client():
        c = router.conn()
        try:
            while not stop.is_set():
                c.request("GET", "/", headers={"Host": "nowhere.test"})
                r = c.getresponse()
                r.read()
                with lock:
                    statuses[r.status] += 1
                time.sleep(0.002)  # pacing: gaps of a few ms, under the 10 ms window
        finally:
            c.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the load settles (the budget follows the last few hundred ms)
    before, t0 = _cpu_ticks(router.proc.pid), time.monotonic()
    time.sleep(2.0)
    used, secs = _cpu_ticks(router.proc.pid) - before, time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert set(statuses) == {404} and sum(statuses.values()) > 1000, statuses
    share = used / (secs * os.sysconf("SC_CLK_TCK"))
    assert share < 0.5, f"the router used {share:.0%} of a CPU for {sum(statuses.values())} requests"


def test_busy_polling_is_off_with_more_workers_than_cpus(rig):
    """A worker that polls while another worker shares its CPU takes the CPU from the one with events (and
    from the idle-class access log shipper): with more workers than the CPUs the router may run on (its
    affinity, as taskset or a cpuset sets it), the workers always sleep (busy and answer polling both off),
    and the router says so. With as many CPUs as workers, they poll; answer polling alone can be had."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    crowded = extra_router(rig, "router:\n  busy_poll_us: 10000\n", workers=2, cpus={cpu})
    alone = extra_router(rig, "router:\n  busy_poll_us: 10000\n", workers=1, cpus={cpu})
    answer_only = extra_router(rig, "router:\n  busy_poll_us: 0\n  answer_poll_us: 500\n", workers=1, cpus={cpu})
    neither = extra_router(rig, "router:\n  busy_poll_us: 0\n  answer_poll_us: 0\n", workers=1, cpus={cpu})
    for r in (crowded, alone, answer_only, neither):
        wait_until(lambda: r.get("nowhere.test")[0].status == 404, timeout=5, what="the router")
        wait_until(lambda: "router listening" in r.output(), timeout=5, what="the router's start line")
    assert "(2 workers, round-robin, busy polling off: 2 workers on 1 CPU)" in crowded.output(), crowded.output()
    assert "(1 worker, round-robin, busy polling 10000 us, answer polling 60 us)" in alone.output(), alone.output()
    assert "(1 worker, round-robin, busy polling off, answer polling 500 us)" in answer_only.output()
    assert "(1 worker, round-robin, busy polling off)" in neither.output(), neither.output()


def _answer_polls(mport):
    m = _metrics(mport)
    return (m['berth_router_answer_polls_total{result="answered"}'],
            m['berth_router_answer_polls_total{result="slept"}'])


def test_answer_polling_follows_the_backends_pace(rig):
    """Once a request has gone to a backend, a worker polls for the answer instead of sleeping, when answers
    lately came within router.answer_poll_us: one connection's requests to a quick backend are answered
    while the worker polls. A backend that takes milliseconds closes the window after its first answers
    (the worker sleeps through its waits instead of burning the CPU), and quick answers open it again. A
    router with answer_poll_us 0 never polls for an answer."""
    b0, _ = rig["backends"]
    serve(rig, [route("quick.test", [b0.port])])
    mport, off_port = free_port(), free_port()
    router = extra_router(rig, f"router:\n  answer_poll_us: 1000\n  metrics_listen: 127.0.0.1:{mport}\n",
                          workers=1)
    off = extra_router(rig, f"router:\n  answer_poll_us: 0\n  metrics_listen: 127.0.0.1:{off_port}\n",
                       workers=1)
    for r in (router, off):
        wait_until(lambda: r.get("quick.test")[0].status == 200, timeout=5, what="the route")

    def run(r, path, n):
        c = r.conn()
        try:
            for _ in range(n):
                c.request("GET", path, headers={"Host": "quick.test"})
                resp = c.getresponse()
                resp.read()
                assert resp.status == 200
        finally:
            c.close()

    run(router, "/echo", 300)
    answered, slept = _answer_polls(mport)
    assert answered >= 10, (answered, slept)
    # 5 ms answers: the average passes 1,000 µs after two of them, and the worker stops polling for them.
    run(router, "/slow?s=0.005", 40)
    answered2, slept2 = _answer_polls(mport)
    assert answered2 - answered <= 1 and slept2 - slept <= 3, (answered, slept, answered2, slept2)
    run(router, "/echo", 300)
    answered3, _ = _answer_polls(mport)
    assert answered3 - answered2 >= 10, (answered2, answered3)
    run(off, "/echo", 100)
    assert _answer_polls(off_port) == (0, 0)


def _thread_policies(pid):
    """{tid: scheduling policy} of a process's threads (/proc/PID/task/TID/stat field 41)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[38])
        except FileNotFoundError:
            pass
    return out


SCHED_IDLE = 5


def test_access_log_shipper_is_lifted_when_behind(rig):
    """The shipper runs as SCHED_IDLE, which gets next to no CPU while the workers keep it busy (a
    busy-polling worker at full load starved it: a third of the lines were dropped). It cannot lift itself
    before it has shipped, so a worker whose batch reaches a quarter of its queue's limits lifts it to
    SCHED_OTHER at nice 10. Here the shipper is held in a POST while 1.2 MB of lines pile up: it is lifted
    while still held, and every line arrives once the controller answers."""
    if os.geteuid() != 0:
        pytest.skip("SCHED_IDLE is left again only with CAP_SYS_NICE; the shipper then keeps nice 10")
    router = one_worker_router(rig, "lift.test", "app-guid-lift")
    ctl, pid = rig["ctl"], router.proc.pid
    wait_until(lambda: SCHED_IDLE in _thread_policies(pid).values(), timeout=5, what="a SCHED_IDLE shipper")
    shipper = next(t for t, p in _thread_policies(pid).items() if p == SCHED_IDLE)
    gate = threading.Event()
    ctl.post_gate = (b"?held", gate)
    assert router.get("lift.test", path="/echo?held")[0].status == 200
    wait_until(lambda: ctl.post_gate is None, timeout=5, what="the shipper held in its POST")
    n, statuses = 1000, collections.Counter()
    threads = _line_senders(router, "lift.test", "lift-", statuses, n)
    try:
        for t in threads:
            t.start()
        # The controller holds the POST for 4 s at most: the lift must come while it does.
        wait_until(lambda: _thread_policies(pid).get(shipper) == 0, timeout=3.5,
                   what="the shipper lifted to SCHED_OTHER while held")
        with open(f"/proc/{pid}/task/{shipper}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[16]) == 10  # field 19: nice
    finally:
        gate.set()
        for t in threads:
            t.join(timeout=60)
    assert statuses == {200: n}, statuses
    wait_until(lambda: _lines_arrived(ctl, "lift-") == n, timeout=20, what=f"all {n} lines")


def test_access_log_shipper_yields_to_the_workers(rig):
    """As root (CAP_SYS_NICE) the thread that ships access log lines runs as SCHED_IDLE while its batches are
    small: it gets a CPU only when no worker wants it. The workers stay SCHED_OTHER, and lines still ship."""
    if os.geteuid() != 0:
        pytest.skip("SCHED_IDLE is left again only with CAP_SYS_NICE; the shipper then keeps nice 10")
    b0, _ = rig["backends"]
    serve(rig, [route("idle.test", [b0.port], app="app-guid-idle")])
    pid = rig["router"].proc.pid

    def policies():
        return list(_thread_policies(pid).values())

    wait_until(lambda: SCHED_IDLE in policies(), timeout=5, what="the shipper to run as SCHED_IDLE")
    p = policies()
    assert p.count(SCHED_IDLE) == 1 and p.count(0) == len(p) - 1, p
    rig["router"].get("idle.test", path="/echo?idle")
    wait_until(lambda: any("/echo?idle" in l["message"] for l in rig["ctl"].access_lines), timeout=5,
               what="the access log line")
