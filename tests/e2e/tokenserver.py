"""A small Docker-registry token server (distribution ``auth.token``) for the
e2e rig.  Runs ``http.server`` in a thread on 127.0.0.1.

What distribution 2.8.2 (Debian ``docker-registry``) accepts -- verified by
``test_rig.py`` for RS256+x5c, ES256+kid and RS256+jwk:

* a compact JWS ``b64url(header).b64url(claims).b64url(sig)`` (no padding);
* header ``{"typ":"JWT","alg":"RS256"|"ES256"|..., <key ref>}`` where the key
  ref is one of (tried in this order by the registry):
    - ``x5c``: ``[base64(DER cert), ...]`` (std base64, not url-safe); the
      chain must verify against ``rootcertbundle`` (any EKU accepted; a
      self-signed signing cert that is itself in the bundle works);
    - ``jwk``: the public key as JWK, trusted when its libtrust key id is the
      id of a key in ``rootcertbundle``;
    - ``kid``: the *libtrust fingerprint* of a key in ``rootcertbundle``:
      sha256(DER SubjectPublicKeyInfo), first 240 bits, base32, 12 groups of
      4 chars joined with ``:`` (``ABCD:EFGH:...``);
* claims: ``iss`` == ``auth.token.issuer``; ``aud`` a *string* equal to
  ``auth.token.service`` (2.8 does not accept an array); ``exp``/``nbf``
  checked with 60 s leeway; ``access``: ``[{"type":"repository","name":R,
  "actions":["pull","push"]}]``; ``sub``, ``iat``, ``jti`` informational;
* ES256 signatures are raw ``r||s`` (32+32 bytes), RS256 PKCS#1 v1.5.

Endpoint ``/token`` (any path works):

* ``GET ?service=S&scope=repository:NAME:pull[,push]&scope=...`` with
  optional ``Authorization: Basic`` -> ``{"token","access_token",
  "expires_in","issued_at"}``.  Bad credentials -> 401.  Anonymous requests
  get pull on repositories under ``public/`` only (intersection of requested
  and granted; a denied scope yields a token with empty ``access``, not an
  error -- as real token servers do).  ``offline_token=true`` adds
  ``refresh_token``.
* ``POST`` form ``grant_type=password&username&password&service&client_id
  &scope[&access_type=offline]`` or ``grant_type=refresh_token&refresh_token``
  -> ``{"access_token","expires_in","issued_at","scope"[,"refresh_token"]}``;
  missing service/client_id -> 400; bad credentials -> 401.  Set
  ``post_enabled = False`` to answer every POST with 404 (GET fallback).

Knobs (plain attributes, change at any time): ``expires_in``,
``include_expires_in``, ``include_issued_at``, ``token_fields`` (subset of
``("token", "access_token")`` for GET responses), ``post_enabled``,
``users`` (dict), ``anonymous_prefixes``, ``require_service``,
``fail_next`` (list of HTTP status codes answered to the next requests).
Observations: ``counts`` (Counter of "GET"/"POST"), ``requests`` (list of
dicts: method, path, query, form, headers, user, status, granted),
``issued`` (set of token strings), ``reset()``.
"""

from __future__ import annotations

import base64
import collections
import datetime
import hashlib
import http.server
import json
import os
import secrets
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

DEFAULT_USERS = {"bob": "t0ken-pa55"}
DEFAULT_SERVICE = "berth-test-registry"
DEFAULT_ISSUER = "berth-test-token-issuer"


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def libtrust_key_id(public_key) -> str:
    """libtrust fingerprint of a public key (what distribution uses as
    ``kid``)."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


def _int_b64(n: int, length: int | None = None) -> str:
    length = length or (n.bit_length() + 7) // 8
    return b64url(n.to_bytes(length, "big"))


def parse_scope(scope: str):
    """``repository:host:5000/a/b:pull,push`` -> ("repository",
    "host:5000/a/b", ["pull","push"]) (name may contain ':')."""
    typ, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return typ, name, [a for a in actions.split(",") if a]


class SigningKey:
    """Key + self-signed certificate used to sign tokens.  ``alg``:
    "RS256" or "ES256".  ``cert_path`` is the registry's rootcertbundle."""

    def __init__(self, workdir: str, alg: str = "RS256"):
        self.alg = alg
        if alg == "RS256":
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            self.key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(alg)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=7))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = os.path.join(workdir, f"token-signer-{alg}.crt")
        with open(self.cert_path, "wb") as f:
            f.write(self.cert.public_bytes(serialization.Encoding.PEM))
        self.kid = libtrust_key_id(self.key.public_key())

    def jwk(self) -> dict:
        pub = self.key.public_key().public_numbers()
        if self.alg == "RS256":
            return {"kty": "RSA", "n": _int_b64(pub.n), "e": _int_b64(pub.e)}
        return {"kty": "EC", "crv": "P-256", "x": _int_b64(pub.x, 32), "y": _int_b64(pub.y, 32)}

    def sign(self, data: bytes) -> bytes:
        if self.alg == "RS256":
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def make_jwt(self, claims: dict, key_ref: str = "x5c") -> str:
        header = {"typ": "JWT", "alg": self.alg}
        if key_ref == "x5c":
            header["x5c"] = [base64.b64encode(self.cert_der).decode()]
        elif key_ref == "kid":
            header["kid"] = self.kid
        elif key_ref == "jwk":
            header["jwk"] = self.jwk()
        else:
            raise ValueError(key_ref)
        signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
            b64url(json.dumps(claims, separators=(",", ":")).encode())
        return signing_input + "." + b64url(self.sign(signing_input.encode()))


def decode_jwt(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, unverified (for assertions in tests)."""
    def d(s):
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    h, c, _ = token.split(".")
    return d(h), d(c)


class TokenServer:
    """See the module docstring.  ``start()``/``stop()`` (or use as a
    context manager); ``url`` (base), ``realm`` (``url + "/token"``),
    ``rootcertbundle`` (path to give the registry), ``service``, ``issuer``.
    ``tls=(certfile, keyfile)`` serves HTTPS instead of HTTP."""

    def __init__(self, workdir: str, service: str = DEFAULT_SERVICE, issuer: str = DEFAULT_ISSUER,
                 users: dict | None = None, expires_in: int = 300, alg: str = "RS256",
                 key_ref: str = "x5c", anonymous_prefixes=("public/",), tls=None):
        self.workdir = workdir
        self.service = service
        self.issuer = issuer
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.expires_in = expires_in
        self.key = SigningKey(workdir, alg)
        self.key_ref = key_ref
        self.anonymous_prefixes = tuple(anonymous_prefixes)
        self.tls = tls
        self.post_enabled = True
        self.include_expires_in = True
        self.include_issued_at = True
        self.token_fields = ("token", "access_token")
        self.require_service = True
        self.fail_next: list[int] = []
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.requests: list[dict] = []
        self.issued: set[str] = set()
        self.refresh_tokens: dict[str, str] = {}
        self._httpd = None
        self._thread = None

    # -- lifecycle --------------------------------------------------------
    @property
    def rootcertbundle(self) -> str:
        return self.key.cert_path

    def start(self):
        srv = self

        class Handler(_TokenHandler):
            server_ref = srv

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.realm = self.url + "/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="tokenserver",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def reset(self):
        """Clear counters and the request log."""
        with self.lock:
            self.counts.clear()
            self.requests.clear()

    # -- policy -----------------------------------------------------------
    def grant(self, user: str | None, typ: str, name: str, actions: list[str]) -> list[str]:
        """Actions granted to ``user`` (None = anonymous).  Override or
        monkeypatch for custom policies."""
        if user is None:
            if typ == "repository" and any(name.startswith(p) for p in self.anonymous_prefixes):
                return [a for a in actions if a == "pull"]
            return []
        if typ == "repository":
            return [a for a in actions if a in ("pull", "push", "delete", "*")]
        if typ == "registry" and name == "catalog":
            return [a for a in actions if a == "*"]
        return []

    def issue(self, user: str | None, scopes: list[str]) -> tuple[str, list[dict], int, str]:
        access = []
        for sc in scopes:
            for one in sc.split(" "):
                if not one:
                    continue
                typ, name, actions = parse_scope(one)
                granted = self.grant(user, typ, name, actions)
                if granted:
                    access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service,
                  "exp": now + int(self.expires_in), "nbf": now - 5, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        tok = self.key.make_jwt(claims, self.key_ref)
        issued_at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc) \
            .strftime("%Y-%m-%dT%H:%M:%SZ")
        with self.lock:
            self.issued.add(tok)
        return tok, access, now, issued_at


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    server_ref: TokenServer = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _record(self, rec):
        ts = self.server_ref
        with ts.lock:
            ts.counts[rec["method"]] += 1
            ts.requests.append(rec)

    def _basic_user(self):
        """-> (user or None, ok)."""
        h = self.headers.get("Authorization")
        if not h:
            return None, True
        scheme, _, val = h.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, pw = base64.b64decode(val).decode().partition(":")
        except Exception:
            return None, False
        ok = self.server_ref.users.get(user) == pw
        return user, ok

    def _prefail(self, rec):
        ts = self.server_ref
        with ts.lock:
            status = ts.fail_next.pop(0) if ts.fail_next else None
        if status:
            rec["status"] = status
            self._send(status, {"errors": [{"code": "UNAVAILABLE", "message": "injected failure"}]})
            return True
        return False

    def _token_response(self, tok, now, issued_at, oauth, refresh=None, scope=None):
        ts = self.server_ref
        if oauth:
            body = {"access_token": tok}
        else:
            body = {k: tok for k in ts.token_fields}
        if ts.include_expires_in:
            body["expires_in"] = ts.expires_in
        if ts.include_issued_at:
            body["issued_at"] = issued_at
        if refresh:
            body["refresh_token"] = refresh
        if oauth and scope is not None:
            body["scope"] = scope
        return body

    def do_GET(self):
        ts = self.server_ref
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        rec = {"method": "GET", "path": u.path, "query": q, "form": None,
               "headers": dict(self.headers.items()), "user": None, "status": 200, "granted": None}
        self._record(rec)
        if self._prefail(rec):
            return
        user, ok = self._basic_user()
        rec["user"] = user
        if not ok:
            rec["status"] = 401
            return self._send(401, {"details": "incorrect username or password"},
                              {"WWW-Authenticate": 'Basic realm="berth-test-token"'})
        service = (q.get("service") or [""])[0]
        if ts.require_service and service != ts.service:
            rec["status"] = 400
            return self._send(400, {"details": f"unknown or missing service {service!r}"})
        tok, access, now, issued_at = ts.issue(user, q.get("scope", []))
        rec["granted"] = access
        refresh = None
        if (q.get("offline_token") or [""])[0] == "true" and user:
            refresh = secrets.token_hex(16)
            ts.refresh_tokens[refresh] = user
        self._send(200, self._token_response(tok, now, issued_at, False, refresh))

    def do_POST(self):
        ts = self.server_ref
        u = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode(), keep_blank_values=True).items()}
        rec = {"method": "POST", "path": u.path, "query": urllib.parse.parse_qs(u.query), "form": form,
               "headers": dict(self.headers.items()), "user": None, "status": 200, "granted": None}
        self._record(rec)
        if not ts.post_enabled:
            rec["status"] = 404
            return self._send(404, {"details": "not found"})
        if self._prefail(rec):
            return
        if not form.get("service") or not form.get("client_id"):
            rec["status"] = 400
            return self._send(400, {"error": "invalid_request", "details": "service and client_id required"})
        if ts.require_service and form["service"] != ts.service:
            rec["status"] = 400
            return self._send(400, {"error": "invalid_request", "details": "unknown service"})
        gt = form.get("grant_type")
        if gt == "password":
            user = form.get("username")
            if not user or ts.users.get(user) != form.get("password"):
                rec["status"] = 401
                return self._send(401, {"error": "invalid_grant"})
        elif gt == "refresh_token":
            user = ts.refresh_tokens.get(form.get("refresh_token", ""))
            if not user:
                rec["status"] = 401
                return self._send(401, {"error": "invalid_grant"})
        else:
            rec["status"] = 400
            return self._send(400, {"error": "unsupported_grant_type"})
        rec["user"] = user
        scope = form.get("scope", "")
        tok, access, now, issued_at = ts.issue(user, [scope])
        rec["granted"] = access
        refresh = None
        if form.get("access_type") == "offline":
            refresh = secrets.token_hex(16)
            ts.refresh_tokens[refresh] = user
        self._send(200, self._token_response(tok, now, issued_at, True, refresh, scope))
