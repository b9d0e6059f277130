"""Run Debian's ``docker-registry`` (distribution 2.8.2) on 127.0.0.1 for
the e2e tests.

Modes (``Registry(mode, ...)``; pytest fixtures in ``conftest.py``):

``plain``  plain HTTP, no auth.
``tls``    HTTPS; server cert (SAN IP:127.0.0.1, DNS:localhost) issued by a
           test CA made with the openssl CLI (:class:`TestCA`); ``.ca`` is
           the CA cert path.
``basic``  htpasswd (bcrypt) Basic auth, user ``alice`` / ``s3cret-pa55``,
           over plain HTTP: distribution 2.8 does NOT require TLS for
           htpasswd (verified by test_rig.py).  Pass ``tls=True`` for
           Basic-over-HTTPS.
``token``  Bearer token auth against a :class:`tokenserver.TokenServer`
           (``.token_server``) on another loopback port; user ``bob`` /
           ``t0ken-pa55``; anonymous pull allowed on ``public/*`` only.

Every :class:`Registry` has ``.host`` ("127.0.0.1:PORT"), ``.url``
(``http(s)://host``), ``.ca`` (CA cert path or None), ``.auth`` (None or
(user, password)), ``.mode``, ``.storage`` (its storage dir), ``.log``
(path of its stderr log), ``.token_server`` (token mode), ``.client()`` (an
authenticated ``imagebuild.RegistryClient``), ``.push(image, ref=None)`` and
``.ref(repo_tag)`` -> ``"127.0.0.1:PORT/repo:tag"``.

Start waits for ``GET /v2/`` to answer 200/401 (no fixed sleeps); a port
taken between choosing and binding is retried.  ``stop()`` kills the process
and removes its directory (the fixtures always call it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional

import imagebuild

DOCKER_REGISTRY = "/usr/bin/docker-registry"
BASIC_USER = ("alice", "s3cret-pa55")
TOKEN_USER = ("bob", "t0ken-pa55")
MODES = ("plain", "tls", "basic", "token")


def free_port(host="127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (racy by nature: callers
    retry)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(cond, timeout=15.0, interval=0.02, what="condition"):
    """Poll ``cond()`` until truthy (returned) or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return r


class TestCA:
    """A throw-away CA plus a server certificate for 127.0.0.1/localhost,
    made with the openssl CLI (EC P-256).  Attributes: ``dir``, ``ca_cert``,
    ``ca_key``, ``server_cert``, ``server_key``, ``cert_dir`` (a directory
    containing only ``ca.crt``, for tools that want a cert dir).
    ``issue(name, sans)`` makes further leaf certs."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Optional[str] = None):
        self._own = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="berth-e2e-ca-")
        os.makedirs(self.dir, exist_ok=True)
        self.ca_key = os.path.join(self.dir, "ca.key")
        self.ca_cert = os.path.join(self.dir, "ca.crt")
        _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "7",
              "-subj", "/CN=berth e2e test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        self.server_cert, self.server_key = self.issue("server", ["IP:127.0.0.1", "DNS:localhost"])
        self.cert_dir = os.path.join(self.dir, "certdir")
        os.makedirs(self.cert_dir, exist_ok=True)
        shutil.copy(self.ca_cert, os.path.join(self.cert_dir, "ca.crt"))

    def issue(self, name: str, sans: list[str], cn: str = "localhost") -> tuple[str, str]:
        key = os.path.join(self.dir, f"{name}.key")
        csr = os.path.join(self.dir, f"{name}.csr")
        crt = os.path.join(self.dir, f"{name}.crt")
        ext = os.path.join(self.dir, f"{name}.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    f"subjectAltName={','.join(sans)}\n")
        _run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}"])
        _run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
              "-CAcreateserial", "-out", crt, "-days", "7", "-extfile", ext])
        return crt, key

    def cleanup(self):
        if self._own:
            shutil.rmtree(self.dir, ignore_errors=True)


class Registry:
    """One docker-registry process.  ``mode`` in :data:`MODES`.

    Options: ``ca`` (a :class:`TestCA`; required when TLS is used -- the
    fixtures share one per session), ``tls`` (default: mode == "tls"),
    ``users`` (basic mode: dict user->password, default alice),
    ``token_opts`` (kwargs for ``TokenServer``: expires_in, alg, key_ref,
    users, anonymous_prefixes), ``token_tls`` (serve the token realm over
    HTTPS with the test CA), ``config_extra`` (dict deep-merged into the
    registry config, e.g. ``{"storage": {"delete": {"enabled": False}}}``).
    """

    def __init__(self, mode: str = "plain", ca: Optional[TestCA] = None, tls: Optional[bool] = None,
                 users: Optional[dict] = None, token_opts: Optional[dict] = None,
                 token_tls: bool = False, config_extra: Optional[dict] = None):
        if mode not in MODES:
            raise ValueError(mode)
        self.mode = mode
        self.tls = (mode == "tls") if tls is None else tls
        self._ca = ca
        if (self.tls or token_tls) and ca is None:
            raise ValueError("TLS needs a TestCA (ca=...)")
        self.users = users or dict([BASIC_USER])
        self.token_opts = dict(token_opts or {})
        self.token_tls = token_tls
        self.config_extra = config_extra or {}
        self.proc: Optional[subprocess.Popen] = None
        self.token_server = None
        self.dir = None
        self.host = self.url = None
        self.port = None

    # -- public attributes --------------------------------------------------
    @property
    def ca(self) -> Optional[str]:
        return self._ca.ca_cert if (self.tls or self.token_tls) else None

    @property
    def auth(self):
        if self.mode == "basic":
            return next(iter(self.users.items()))
        if self.mode == "token":
            return next(iter(self.token_server.users.items()))
        return None

    @property
    def storage(self) -> str:
        return os.path.join(self.dir, "storage")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "registry.log")

    def ref(self, repo_tag: str) -> str:
        return f"{self.host}/{repo_tag}"

    def client(self, auth="default") -> imagebuild.RegistryClient:
        """A RegistryClient for this registry (``auth=None`` for
        anonymous)."""
        return imagebuild.RegistryClient(self.url, auth=self.auth if auth == "default" else auth,
                                         verify=self.ca or True)

    def push(self, image, ref: Optional[str] = None) -> str:
        """Push an ``imagebuild`` Image/Index as ``ref`` ("repo:tag", or
        "repo" for :latest, or "repo@" to push by digest only; default
        ``image.name``).  Returns the manifest digest."""
        repo, tag = imagebuild.split_ref(ref or image.name)
        return self.client().push(image, repo, tag)

    # -- lifecycle ------------------------------------------------------------
    def _config(self) -> dict:
        cfg = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": self.storage},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}},
                        "cache": {"blobdescriptor": "inmemory"}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": secrets.token_hex(16),
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.tls:
            cfg["http"]["tls"] = {"certificate": self._ca.server_cert, "key": self._ca.server_key}
        if self.mode == "basic":
            htp = os.path.join(self.dir, "htpasswd")
            with open(htp, "w") as f:
                for u, p in self.users.items():
                    f.write(_run(["htpasswd", "-Bbn", "-C", "5", u, p]).stdout.strip() + "\n")
            cfg["auth"] = {"htpasswd": {"realm": "berth-test-registry", "path": htp}}
        elif self.mode == "token":
            ts = self.token_server
            cfg["auth"] = {"token": {"realm": ts.realm, "service": ts.service, "issuer": ts.issuer,
                                     "rootcertbundle": ts.rootcertbundle}}
        _deep_merge(cfg, self.config_extra)
        return cfg

    def start(self) -> "Registry":
        import tokenserver
        self.dir = tempfile.mkdtemp(prefix=f"berth-e2e-reg-{self.mode}-")
        os.makedirs(self.storage)
        try:
            if self.mode == "token":
                tls = (self._ca.server_cert, self._ca.server_key) if self.token_tls else None
                self.token_server = tokenserver.TokenServer(self.dir, tls=tls, **self.token_opts).start()
            last_err = None
            for _attempt in range(5):
                self.port = free_port()
                self.host = f"127.0.0.1:{self.port}"
                self.url = ("https://" if self.tls else "http://") + self.host
                cfgpath = os.path.join(self.dir, "config.yml")
                with open(cfgpath, "w") as f:
                    json.dump(self._config(), f, indent=1)  # JSON is YAML
                env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
                with open(self.log, "ab") as logf:
                    self.proc = subprocess.Popen([DOCKER_REGISTRY, "serve", cfgpath], stdout=logf,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 env=env, start_new_session=True,
                                                 preexec_fn=_die_with_parent)
                try:
                    wait_until(self._ready, timeout=20, what=f"docker-registry on {self.host}")
                    return self
                except _Exited as e:
                    last_err = e
                    self.proc = None
                    if "address already in use" not in self._log_tail():
                        break
            raise RuntimeError(f"docker-registry failed to start: {last_err}\n{self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def log_tail(self, n=4000) -> str:
        """Last ``n`` characters of the registry's log (empty after stop)."""
        return self._log_tail(n)

    def _log_tail(self, n=4000) -> str:
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise _Exited(f"exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        import requests
        try:
            r = requests.get(self.url + "/v2/", verify=self.ca or True, timeout=2)
        except requests.RequestException:
            return False
        return r.status_code in (200, 401)

    def stop(self):
        """Kill the registry (and token server), remove the directory.
        Idempotent."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None
        if self.token_server is not None:
            self.token_server.stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def __repr__(self):
        return f"<Registry {self.mode} {self.url}>"


class _Exited(Exception):
    pass


def _die_with_parent():
    """preexec_fn: SIGKILL the child if the spawning thread dies (so a
    killed pytest does not leave registries behind)."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _deep_merge(dst: dict, src: dict):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v
