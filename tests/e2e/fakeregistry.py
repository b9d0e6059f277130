"""A programmable, misbehaving registry (plain HTTP on loopback) for the
e2e tests.

Two servers run in threads: the *registry* on ``127.0.0.1:PORT`` (``.host``,
``.url``) and a *blob server* on ``redirect_host`` (default ``127.0.0.2``,
i.e. a different host so the "don't forward Authorization across hosts"
rule applies; pass ``redirect_host="127.0.0.1"`` for same-host/other-port)
used as the 307 redirect target (``.blob_host``, ``.blob_url``).

Content::

    fake.add_image(image, "repo:tag")        # imagebuild Image/Index: blobs+manifests
    fake.set_manifest(repo, ref, body, content_type, digest_header=AUTO)
    fake.set_blob(digest, data)              # bytes need not match the digest
    fake.delete_manifest(repo, ref) / fake.delete_blob(digest)

Misbehaviour switches::

    fake.fail(status, times, path=None, methods=None, retry_after=None)
        -> Failure; answer ``status`` (e.g. 429 with Retry-After, 503) the
           next ``times`` matching requests (path: regex searched in the
           request path).  ``Failure.hits`` counts answers given.
    fake.redirect_blobs(True, status=307)    # blob GET/HEAD -> blob server
    fake.blob_server_rejects_auth = True     # blob server answers 400 (like
                                             # S3) when Authorization is sent
    fake.reset_blob_once(digest, after=None, mode="rst")
        # the next GET of that blob (on whichever server serves the bytes)
        # sends headers with the full Content-Length, ``after`` bytes (default
        # min(half, 32 KiB)) and then resets the connection (mode "rst": TCP
        # RST via SO_LINGER 0 -> client sees ECONNRESET, curl error 56;
        # "close": clean FIN -> short body, curl error 18).  With "rst" the
        # kernel discards data the client has not read yet, so for large
        # ``after`` (> ~64 KiB) the client may receive fewer bytes; small
        # values are delivered exactly in practice.  Range ``bytes=N-`` / ``N-M`` is
        # always honoured with 206 + Content-Range (416 when unsatisfiable);
        # ``fake.ignore_range = True`` answers 200 + full body instead.
    fake.serve_schema1(repo, tag)            # signed schema1 manifest
    fake.serve_mismatched_manifest(repo, tag, image) -> claimed digest
        # body != image.digest but Docker-Content-Digest says image.digest,
        # also served at /manifests/<image.digest>
    fake.serve_oversized_manifest(repo, tag, size=5 << 20) -> digest
    fake.serve_wrong_content_type(repo, tag, image, content_type="text/plain")
    fake.require_auth("basic", user, password) | ("bearer", token_server)
    fake.add_hook(fn)   # fn(req) -> None | Response(status, headers, body) | "reset"

Observation: ``fake.requests`` (list of :class:`Req`: server ("registry" or
"blob"), method, path, query (dict of lists), headers (case-insensitive
dict)), ``fake.find(method=None, path=None, server=None)``, ``fake.clear()``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import json
import re
import socket
import struct
import threading
import urllib.parse
from typing import Callable, Optional

from requests.structures import CaseInsensitiveDict

import imagebuild

AUTO = object()


@dataclasses.dataclass
class Req:
    server: str
    method: str
    path: str
    query: dict
    headers: CaseInsensitiveDict
    range: Optional[str] = None

    @property
    def authorization(self) -> Optional[str]:
        return self.headers.get("Authorization")


@dataclasses.dataclass
class Response:
    status: int
    headers: dict = dataclasses.field(default_factory=dict)
    body: bytes = b""


@dataclasses.dataclass
class Failure:
    status: int
    times: int
    path: Optional[str] = None
    methods: Optional[tuple] = None
    retry_after: Optional[str] = None
    hits: int = 0

    def matches(self, req: Req) -> bool:
        if self.hits >= self.times:
            return False
        if self.methods and req.method not in self.methods:
            return False
        if self.path and not re.search(self.path, req.path):
            return False
        return True


@dataclasses.dataclass
class _Manifest:
    body: bytes
    content_type: str
    digest_header: Optional[str]


_PATH_RE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags)/(?P<ref>.+)$")


class FakeRegistry:
    def __init__(self, redirect_host: str = "127.0.0.2"):
        self.redirect_host = redirect_host
        self.lock = threading.RLock()
        self.manifests: dict[tuple[str, str], _Manifest] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[Req] = []
        self.failures: list[Failure] = []
        self.hooks: list[Callable] = []
        self.redirect = False
        self.redirect_status = 307
        self.blob_server_rejects_auth = False
        self.ignore_range = False
        self.resets: dict[str, tuple[int | None, str]] = {}
        self.auth = None
        self._servers = []

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> "FakeRegistry":
        self._main = self._serve("127.0.0.1", "registry")
        self._blob = self._serve(self.redirect_host, "blob")
        self.port = self._main.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.blob_port = self._blob.server_address[1]
        self.blob_host = f"{self.redirect_host}:{self.blob_port}"
        self.blob_url = f"http://{self.blob_host}"
        return self

    def _serve(self, addr, role):
        fake = self

        class H(_Handler):
            pass
        H.fake = fake
        H.role = role
        srv = http.server.ThreadingHTTPServer((addr, 0), H)
        srv.daemon_threads = True
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                             name=f"fakeregistry-{role}", daemon=True)
        t.start()
        self._servers.append((srv, t))
        return srv

    def stop(self):
        for srv, t in self._servers:
            srv.shutdown()
            srv.server_close()
            t.join(5)
        self._servers = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def ref(self, repo_tag: str) -> str:
        return f"{self.host}/{repo_tag}"

    # -- content ---------------------------------------------------------------
    def set_manifest(self, repo, ref, body: bytes, content_type: str, digest_header=AUTO):
        if digest_header is AUTO:
            digest_header = imagebuild.sha256_digest(body)
        with self.lock:
            self.manifests[(repo, ref)] = _Manifest(body, content_type, digest_header)

    def delete_manifest(self, repo, ref):
        with self.lock:
            self.manifests.pop((repo, ref), None)

    def set_blob(self, digest: str, data: bytes):
        with self.lock:
            self.blobs[digest] = data

    def delete_blob(self, digest: str):
        with self.lock:
            self.blobs.pop(digest, None)

    def add_image(self, image, ref: Optional[str] = None) -> str:
        """Serve an imagebuild Image/Index (blobs as built, tampered ones
        included) under ``ref`` (default ``image.name``); every manifest is
        also served by digest.  Returns the top digest."""
        repo, tag = imagebuild.split_ref(ref or image.name)
        for d, data in image.blobs.items():
            self.set_blob(d, data)
        for d, mt, body in image.manifests_to_push():
            self.set_manifest(repo, d, body, mt)
        if tag:
            self.set_manifest(repo, tag, image.manifest_bytes, image.media_type)
        return image.digest

    def serve_schema1(self, repo, tag="latest") -> str:
        body = imagebuild.schema1_manifest(repo, tag)
        self.set_manifest(repo, tag, body, imagebuild.SCHEMA1_SIGNED)
        return imagebuild.sha256_digest(body)

    def serve_mismatched_manifest(self, repo, tag, image) -> str:
        """Blobs of ``image`` are served; the manifest body is altered (still
        valid JSON) while ``Docker-Content-Digest`` and the by-digest URL claim
        ``image.digest``.  Returns ``image.digest``."""
        for d, data in image.blobs.items():
            self.set_blob(d, data)
        bad = image.manifest_bytes + b"\n "
        self.set_manifest(repo, tag, bad, image.media_type, digest_header=image.digest)
        self.set_manifest(repo, image.digest, bad, image.media_type, digest_header=image.digest)
        return image.digest

    def serve_oversized_manifest(self, repo, tag, size=5 << 20, image=None) -> str:
        """A syntactically valid manifest of ``size`` bytes (padding in an
        annotation) based on ``image`` (default a busybox image)."""
        image = image or imagebuild.busybox_image()
        for d, data in image.blobs.items():
            self.set_blob(d, data)
        man = dict(image.manifest)
        man["annotations"] = {"pad": ""}
        base = len(json.dumps(man).encode())
        man["annotations"] = {"pad": "x" * max(0, size - base)}
        body = json.dumps(man).encode()
        self.set_manifest(repo, tag, body, image.media_type)
        d = imagebuild.sha256_digest(body)
        self.set_manifest(repo, d, body, image.media_type)
        return d

    def serve_wrong_content_type(self, repo, tag, image, content_type="text/plain") -> str:
        self.add_image(image, f"{repo}:{tag}")
        self.set_manifest(repo, tag, image.manifest_bytes, content_type)
        return image.digest

    # -- misbehaviour ----------------------------------------------------------
    def fail(self, status: int, times: int = 1, path: Optional[str] = None, methods=None,
             retry_after: Optional[str | int] = None) -> Failure:
        f = Failure(status, times, path, tuple(methods) if methods else None,
                    None if retry_after is None else str(retry_after))
        with self.lock:
            self.failures.append(f)
        return f

    def redirect_blobs(self, on: bool = True, status: int = 307):
        self.redirect = on
        self.redirect_status = status

    def reset_blob_once(self, digest: str, after: Optional[int] = None, mode: str = "rst"):
        assert mode in ("rst", "close")
        with self.lock:
            self.resets[digest] = (after, mode)

    def require_auth(self, kind: Optional[str], *args):
        """``require_auth("basic", user, pw)``, ``require_auth("bearer",
        token_server)`` (any token issued by it that grants pull on the repo
        is accepted; challenge realm/service are the token server's), or
        ``require_auth(None)``."""
        self.auth = (kind, *args) if kind else None

    def add_hook(self, fn: Callable):
        self.hooks.append(fn)

    # -- observation -----------------------------------------------------------
    def find(self, method=None, path=None, server=None) -> list[Req]:
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path))
                    and (server is None or r.server == server)]

    def clear(self):
        with self.lock:
            self.requests.clear()


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: FakeRegistry = None
    role = "registry"
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    # -- plumbing --------------------------------------------------------------
    def _send(self, status, headers=None, body=b"", head=False):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        headers.setdefault("Docker-Distribution-API-Version", "registry/2.0")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _error(self, status, code, msg, head=False, headers=None):
        body = json.dumps({"errors": [{"code": code, "message": msg, "detail": None}]}).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        self._send(status, h, body, head)

    def _reset(self, mode="rst"):
        sock = self.connection
        try:
            if mode == "rst":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.rfile.close()
        except Exception:
            pass
        sock.close()
        self.close_connection = True

    def _drain_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)

    def do_GET(self):
        self._handle(False)

    def do_HEAD(self):
        self._handle(True)

    def do_POST(self):
        self._drain_body()
        self._handle(False)

    def do_PUT(self):
        self._drain_body()
        self._handle(False)

    def do_DELETE(self):
        self._handle(False)

    def do_PATCH(self):
        self._drain_body()
        self._handle(False)

    # -- logic -------------------------------------------------------------------
    def _handle(self, head):
        fake = self.fake
        u = urllib.parse.urlsplit(self.path)
        req = Req(self.role, self.command, u.path, urllib.parse.parse_qs(u.query),
                  CaseInsensitiveDict(self.headers.items()), self.headers.get("Range"))
        with fake.lock:
            fake.requests.append(req)
        try:
            for hook in list(fake.hooks):
                r = hook(req)
                if r == "reset":
                    return self._reset()
                if isinstance(r, Response):
                    return self._send(r.status, r.headers, r.body, head)
            with fake.lock:
                fail = next((f for f in fake.failures if f.matches(req)), None)
                if fail:
                    fail.hits += 1
            if fail:
                h = {"Retry-After": fail.retry_after} if fail.retry_after is not None else {}
                code = "TOOMANYREQUESTS" if fail.status == 429 else "UNAVAILABLE"
                return self._error(fail.status, code, "injected failure", head, h)
            if self.role == "blob":
                return self._blob_server(req, head)
            return self._registry(req, head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _check_auth(self, req, name) -> bool:
        fake = self.fake
        if not fake.auth:
            return True
        kind = fake.auth[0]
        h = req.authorization or ""
        if kind == "basic":
            user, pw = fake.auth[1], fake.auth[2]
            want = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
            if h == want:
                return True
            self._error(401, "UNAUTHORIZED", "authentication required", req.method == "HEAD",
                        {"WWW-Authenticate": 'Basic realm="berth-fake-registry"'})
            return False
        ts = fake.auth[1]
        if h.startswith("Bearer "):
            tok = h[7:]
            if tok in ts.issued:
                if name is None:
                    return True
                import tokenserver
                _, claims = tokenserver.decode_jwt(tok)
                for a in claims.get("access", []):
                    if a.get("type") == "repository" and a.get("name") == name and "pull" in a.get("actions", []):
                        return True
        ch = f'Bearer realm="{ts.realm}",service="{ts.service}"'
        if name is not None:
            ch += f',scope="repository:{name}:pull"'
        if h:
            ch += ',error="invalid_token"' if not h.startswith("Bearer ") or h[7:] not in ts.issued \
                else ',error="insufficient_scope"'
        self._error(401, "UNAUTHORIZED", "authentication required", req.method == "HEAD",
                    {"WWW-Authenticate": ch})
        return False

    def _registry(self, req: Req, head):
        fake = self.fake
        if req.path in ("/v2", "/v2/"):
            if not self._check_auth(req, None):
                return
            return self._send(200, {"Content-Type": "application/json"}, b"{}", head)
        m = _PATH_RE.match(req.path)
        if not m or req.method not in ("GET", "HEAD"):
            return self._error(404 if not m else 405, "UNSUPPORTED", "not supported by fake registry", head)
        name, kind, ref = m.group("name"), m.group("kind"), m.group("ref")
        if not self._check_auth(req, name):
            return
        if kind == "manifests":
            with fake.lock:
                man = fake.manifests.get((name, ref))
            if man is None:
                return self._error(404, "MANIFEST_UNKNOWN", "manifest unknown", head)
            h = {"Content-Type": man.content_type}
            if man.digest_header:
                h["Docker-Content-Digest"] = man.digest_header
            return self._send(200, h, man.body, head)
        if kind == "tags":
            with fake.lock:
                tags = sorted({r for (n, r) in fake.manifests if n == name and not r.startswith("sha256:")})
            if not tags:
                return self._error(404, "NAME_UNKNOWN", "repository name not known", head)
            body = json.dumps({"name": name, "tags": tags}).encode()
            return self._send(200, {"Content-Type": "application/json"}, body, head)
        # blobs
        with fake.lock:
            data = fake.blobs.get(ref)
        if data is None:
            return self._error(404, "BLOB_UNKNOWN", "blob unknown", head)
        if fake.redirect:
            loc = f"{fake.blob_url}/blobs/{ref}?sig={hashlib.sha256(ref.encode()).hexdigest()[:16]}"
            return self._send(fake.redirect_status, {"Location": loc}, b"", head)
        return self._serve_bytes(req, ref, data, head)

    def _blob_server(self, req: Req, head):
        fake = self.fake
        if fake.blob_server_rejects_auth and req.authorization:
            return self._send(400, {"Content-Type": "application/xml"},
                              b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism "
                              b"allowed</Message></Error>", head)
        m = re.match(r"^/blobs/(.+)$", req.path)
        with fake.lock:
            data = fake.blobs.get(m.group(1)) if m else None
        if data is None:
            return self._send(404, {"Content-Type": "text/plain"}, b"no such blob", head)
        return self._serve_bytes(req, m.group(1), data, head)

    def _serve_bytes(self, req: Req, digest, data: bytes, head):
        fake = self.fake
        total = len(data)
        status, start, end = 200, 0, total - 1
        h = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
             "Docker-Content-Digest": digest}
        rng = req.range
        if rng and not fake.ignore_range:
            m = re.match(r"^bytes=(\d+)-(\d*)$", rng.strip())
            if not m:
                return self._send(416, {"Content-Range": f"bytes */{total}"}, b"", head)
            start = int(m.group(1))
            end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total or start > end:
                return self._send(416, {"Content-Range": f"bytes */{total}"}, b"", head)
            status = 206
            h["Content-Range"] = f"bytes {start}-{end}/{total}"
        body = data[start:end + 1]
        h["Content-Length"] = str(len(body))
        reset = None
        if req.method == "GET":
            with fake.lock:
                reset = fake.resets.pop(digest, None)
        if reset is None:
            return self._send(status, h, body, head)
        after, mode = reset
        after = min(len(body) // 2, 32768) if after is None else min(after, len(body))
        self.send_response(status)
        for k, v in h.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body[:after])
        self.wfile.flush()
        self._reset(mode)
