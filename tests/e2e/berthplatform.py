"""A running single-node berth platform (``berth up``) for the platform e2e tests (issue 4), its CLI and
API helpers, and the test app images.

(Named ``berthplatform``, not ``platform``: a ``tests/e2e/platform.py`` would shadow Python's own
``platform`` module for everything imported after conftest puts this directory first on ``sys.path``.)

Fixtures (import them into a test module: ``from berthplatform import plat, app_images``):

``plat``        module scope: ``berth --data-dir D --config $BERTH_CONFIG up --api-port P --router-port P
                --cell-port P --domain apps.localhost`` on free ports, waited for (``GET /v3/info``), admin
                logged in with ``BERTH_HOME=<tmp>/home``; stopped with SIGTERM at the end, asserting exit 0
                and that nothing of it is left on the host (processes, mounts, netns, veths, cgroups, cell
                files). A :class:`Platform`.
``app_images``  session scope: the test app images (:func:`build_app_images`) pushed to the session registry;
                a dict ``kind -> reference``.

:class:`Platform` helpers: ``cli(*args, env=, check=, home=, input=)`` (runs berth with ``BERTH_HOME``),
``cli_json(...)``, ``api(method, path, token=, **requests kwargs)``, ``route_get(host, path)``,
``wait_route(host, path, status)``, ``app(name)`` (``berth app NAME --json``), ``push(name, ref, *args)``,
``instance_env(host)`` (the app's environment through the router), ``login_home(user, password)`` (a new
``BERTH_HOME`` logged in as that user), ``log()`` (what ``berth up`` printed so far), ``children()``
(``berth up``'s child pids by name), ``wait_child_restarted(name, old_pid)``, ``power_loss()`` (SIGKILL
every process of the platform at once; ``start()`` again on the same data dir), ``stop()`` then ``start()``
(a clean restart on the same data dir and ports).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests

import berthcli
import helpers
import imagebuild as ib

DOMAIN = "apps.localhost"
APPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
UP_START_TIMEOUT = 60
UP_STOP_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def parse_environ(raw: bytes) -> dict:
    """NUL-separated KEY=VALUE (``/proc/PID/environ``, what the test app's /cgi-bin/env answers) -> dict."""
    env = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode()] = v.decode(errors="replace")
    return env


class Platform:
    def __init__(self, data_dir: str, work: str, config: str):
        self.data_dir = data_dir
        self.work = work
        self.config = config
        self.home = os.path.join(work, "home")
        self.log_path = os.path.join(work, "up.log")
        self.api_port, self.router_port, self.cell_port = free_ports(3)
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.router_url = f"http://127.0.0.1:{self.router_port}"
        self.domain = DOMAIN
        self.proc = None
        self.admin_password = None
        self.token = None
        self.session = requests.Session()
        self._homes = 0

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self):
        os.makedirs(self.home, exist_ok=True)
        log_from = len(self.log())  # a restart on the same data dir waits for its own "berth is up."
        cmd = [berthcli.BERTH_BIN, "--data-dir", self.data_dir, "--config", self.config, "up",
               "--api-port", str(self.api_port), "--router-port", str(self.router_port),
               "--cell-port", str(self.cell_port), "--domain", self.domain]
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

        def api_up():
            if self.proc.poll() is not None:
                raise AssertionError(f"berth up exited with {self.proc.returncode} before its API answered:\n"
                                     f"{self.log()[-4000:]}")
            try:
                r = self.session.get(self.api_url + "/v3/info", timeout=2)
                return r.status_code == 200 and r.json().get("name") == "berth"
            except (requests.RequestException, ValueError):
                return False
        helpers.wait_for(api_up, timeout=UP_START_TIMEOUT, what=f"berth up's API on {self.api_url}",
                         interval=0.05)
        pw_file = os.path.join(self.data_dir, "admin-password")
        helpers.wait_for(lambda: os.path.exists(pw_file), timeout=10, what="admin-password")
        assert os.stat(pw_file).st_mode & 0o777 == 0o600, "admin-password must be 0600"
        with open(pw_file) as f:
            self.admin_password = f.read().strip()
        self.cli("login", "-a", self.api_url, "-u", "admin", "-p", self.admin_password)
        self.token = self.get_token("admin", self.admin_password)
        # `berth up` says it is up once a live cell has registered (a push before that fails with 502).
        helpers.wait_for(lambda: "berth is up." in self.log()[log_from:], timeout=UP_START_TIMEOUT,
                         what="berth up's readiness (a registered cell)")
        return self

    def get_token(self, user, password) -> str:
        r = self.session.post(self.api_url + "/oauth/token",
                              data={"grant_type": "password", "username": user, "password": password},
                              auth=("cf", ""), timeout=10)
        assert r.status_code == 200, f"token for {user}: {r.status_code} {r.text}"
        return r.json()["access_token"]

    def stop(self):
        """SIGTERM ``berth up``; returns its exit status (None if it had to be killed)."""
        if self.proc is None:
            return None
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(UP_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                rc = None
        else:
            rc = self.proc.returncode
        self.logf.close()
        return rc

    def children(self) -> dict:
        """``berth up``'s running children: {"controller"|"cell"|"router": pid}."""
        kids = {}
        if self.proc is None or self.proc.poll() is not None:
            return kids
        for st in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(st) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != self.proc.pid:
                    continue
                with open(st[:-4] + "cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except (OSError, ValueError, IndexError):
                continue
            for name in ("controller", "cell", "router"):
                if name in argv:
                    kids[name] = int(st.split("/")[2])
        return kids

    def wait_child_restarted(self, name, old_pid, timeout=15) -> int:
        """Wait until ``berth up`` runs a new ``name`` child (not ``old_pid``); returns its pid."""
        return helpers.wait_for(lambda: (lambda p: p if p and p != old_pid else None)(self.children().get(name)),
                                timeout=timeout, what=f"berth up to restart the {name}", interval=0.01)

    def power_loss(self):
        """As a power loss would: every process of this platform (``berth up``, its children, the
        containers' monitors and processes) stopped at once with SIGSTOP, then SIGKILLed, so that none of
        them reacts (no drain on a parent's death). Kernel state (mounts, netns, veths, cgroups) and files
        stay behind; ``start()`` on the same data dir must cope. Returns the pids killed."""
        cdir = os.path.join(self.data_dir, "cell", "containers")
        cids = os.listdir(cdir) if os.path.isdir(cdir) else []
        pids = set(_pids_with(self.data_dir) + _pids_in_cgroups(cids))
        if self.proc is not None and self.proc.poll() is None:
            pids.add(self.proc.pid)
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        if self.proc is not None:
            self.proc.wait(10)
            self.logf.close()

        def gone():
            return not any(os.path.exists(f"/proc/{p}") and _state_of(p) != "Z" for p in pids)
        helpers.wait_for(gone, timeout=10, what="the platform's processes to die")
        return sorted(pids)

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def container_ids(self) -> list[str]:
        d = os.path.join(self.data_dir, "cell", "containers")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    # -- CLI -----------------------------------------------------------------------------------------------
    def cli(self, *args, env=None, check=True, home=None, input="", timeout=180):
        """Run ``berth ARGS`` with ``BERTH_HOME`` (default: the admin's). stdin is empty (not a TTY)."""
        e = {"BERTH_HOME": home or self.home, "BERTH_DOCKER_PASSWORD": None, "CF_DOCKER_PASSWORD": None}
        e.update(env or {})
        return berthcli.run_berth(*args, env=e, check=check, input=input, timeout=timeout)

    def cli_json(self, *args, **kw):
        r = self.cli(*args, "--json", **kw)
        return json.loads(r.stdout)

    def login_home(self, user, password, org=None, space=None) -> str:
        """A fresh BERTH_HOME logged in as ``user`` (targeting ``org``/``space`` when given)."""
        self._homes += 1
        home = os.path.join(self.work, f"home-{user}-{self._homes}")
        os.makedirs(home)
        self.cli("login", "-a", self.api_url, "-u", user, "-p", password, home=home)
        if org or space:
            t = ["target"] + (["-o", org] if org else []) + (["-s", space] if space else [])
            self.cli(*t, home=home)
        return home

    def app(self, name, home=None) -> dict:
        return self.cli_json("app", name, home=home)

    def push(self, name, ref, *args, **kw):
        return self.cli("push", name, "--docker-image", ref, *args, **kw)

    def app_guid(self, name) -> str:
        return self.app(name)["app"]["guid"]

    def running(self, name, home=None) -> list:
        return [i for i in self.app(name, home=home).get("instances") or []
                if str(i.get("state", "")).upper() == "RUNNING"]

    def wait_running(self, name, n, timeout=60):
        return helpers.wait_for(lambda: (lambda r: r if len(r) == n else None)(self.running(name)),
                                timeout=timeout, what=f"{n} running instances of {name}", interval=0.2)

    # -- API -----------------------------------------------------------------------------------------------
    def api(self, method, path, token="admin", **kw) -> requests.Response:
        """``token``: "admin" (default), a token string, or None (no Authorization header)."""
        headers = dict(kw.pop("headers", None) or {})
        tok = self.token if token == "admin" else token
        if tok:
            headers["Authorization"] = f"bearer {tok}"
        kw.setdefault("timeout", 60)
        url = path if path.startswith("http") else self.api_url + path
        return self.session.request(method, url, headers=headers, **kw)

    def api_json(self, method, path, status=200, **kw):
        r = self.api(method, path, **kw)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def app_names(self, token="admin") -> list[str]:
        names, url = [], "/v3/apps?per_page=5000"
        while url:
            doc = self.api_json("GET", url, token=token)
            names += [a["name"] for a in doc["resources"]]
            nxt = (doc.get("pagination") or {}).get("next")
            url = nxt["href"] if nxt else None
        return sorted(names)

    # -- router --------------------------------------------------------------------------------------------
    def host(self, name) -> str:
        return f"{name}.{self.domain}"

    def route_get(self, host, path="/", timeout=10, **kw) -> requests.Response:
        """GET ``path`` through the router with ``Host: host`` (``host`` without a dot gets the domain)."""
        if "." not in host:
            host = self.host(host)
        headers = dict(kw.pop("headers", None) or {})
        headers["Host"] = host
        # A new connection each time: round-robin is per request, keep-alive must not pin an instance.
        return requests.get(self.router_url + path, headers=headers, timeout=timeout, **kw)

    def wait_route(self, host, path="/", status=200, timeout=30, pred=None) -> requests.Response:
        def ok():
            try:
                r = self.route_get(host, path)
            except requests.RequestException:
                return None
            if r.status_code == status and (pred is None or pred(r)):
                return [r]  # a Response is falsy for 4xx/5xx: wrap it
            return None
        return helpers.wait_for(ok, timeout=timeout, what=f"GET {host}{path} through the router -> {status}",
                                interval=0.05)[0]

    def instance_env(self, host) -> dict:
        r = self.wait_route(host, "/cgi-bin/env")
        return parse_environ(r.content)


def _links_on(bridge: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True).stdout
    return sorted(l.split(":")[1].strip().split("@")[0] for l in out.splitlines() if ":" in l)


def _bridge_of(config_path: str) -> str | None:
    try:
        import yaml
        with open(config_path) as f:
            return ((yaml.safe_load(f) or {}).get("cell") or {}).get("network", {}).get("bridge")
    except Exception:
        return None


def _pids_with(text: str) -> list[int]:
    """Pids of the processes whose command line mentions ``text`` (this platform's data dir)."""
    import glob
    pids = []
    for c in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(c, "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(c.split("/")[2]))
        except (OSError, ValueError):
            continue
    return [p for p in pids if p != os.getpid()]


def _pids_in_cgroups(ids) -> list[int]:
    """Processes whose cgroup is one of these containers' (/berth/<id>)."""
    pids = []
    for p in glob.glob("/proc/[0-9]*/cgroup"):
        try:
            with open(p) as f:
                text = f.read()
        except OSError:
            continue
        if any(f"/berth/{i}" in text for i in ids if i):
            pids.append(int(p.split("/")[2]))
    return pids


def _state_of(pid) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _rmdir_quiet(path) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _cgroups_of(ids) -> list[str]:
    import glob
    found = []
    for i in ids:
        found += glob.glob(f"/sys/fs/cgroup/*/berth/{i}*") + glob.glob(f"/sys/fs/cgroup/berth/{i}*")
    return sorted(found)


@pytest.fixture(scope="module")
def plat(request, cell_network_config):
    if not berthcli.berth_available():
        pytest.skip(f"{berthcli.BERTH_BIN} is not built")
    work = tempfile.mkdtemp(prefix="berth-e2e-up-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    os.chmod(work, 0o711)  # containers' root (a shifted uid) must traverse to their rootfs
    os.chmod(data, 0o711)
    p = Platform(data, work, cell_network_config)
    ids = []
    try:
        p.start()
        yield p
        ids = p.container_ids()
    finally:
        rc = p.stop()
        log = p.log()
        snap = helpers.host_snapshot(data)
        bridge = _bridge_of(cell_network_config)
        # The data dir's own cell resources outlive a stop by design (like the image store): the quota pool
        # (a loop-mounted btrfs at cell/disk), the netns mount point and the address-lease lock.
        per_data_dir = (os.path.join(data, "cell/disk") + " ", os.path.join(data, "cell/netns") + " ")
        left = {
            "exit status": rc,
            "processes": snap["processes"],
            "mounts": [m for m in snap["mounts"] if not any(x in m for x in per_data_dir)],
            "cell files": [f for f in snap["files"] if f != "cell/net/lock"],
            "veths on the bridge": _links_on(bridge) if bridge else [],
            "cgroups": _cgroups_of(ids),
        }
        failed = rc != 0 or any(v for k, v in left.items() if k != "exit status")
        if failed or os.environ.get("BERTH_E2E_SHOW_UP_LOG"):
            print(f"--- berth up log (tail) ---\n{log[-8000:]}")
        if failed:
            # Kill what is left of this platform (by pid) so the next module starts clean: its processes, and
            # its containers' processes, which do not name the data dir and would otherwise outlive it
            # (holding the quota pool's loop device through their overlay mounts).
            cdir = os.path.join(data, "cell", "containers")
            cids = set(ids) | set(os.listdir(cdir) if os.path.isdir(cdir) else [])
            for pid in _pids_with(data) + _pids_in_cgroups(cids):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            for cg in _cgroups_of(cids):
                helpers.wait_for(lambda cg=cg: _rmdir_quiet(cg), timeout=5, what=f"removing {cg}")
        from conftest import _rmtree
        _rmtree(work)
        assert not failed, f"berth up did not stop cleanly: {left}"


# --------------------------------------------------------------------------------------------------------
# test app images
# --------------------------------------------------------------------------------------------------------

WEB_FILES = ["bin/start-web", "www/cgi-bin/env", "www/cgi-bin/id", "www/cgi-bin/argv", "www-other/index.html"]
WEB_USER = ("webuser", 4321)


def _read(rel):
    with open(os.path.join(APPS_DIR, "web", rel), "rb") as f:
        return f.read()


def web_layer(version="1", user=False) -> list:
    """The web app's files (tests/e2e/apps/web) with index.html saying ``berth-e2e-web <version>``; with
    ``user``, /etc/passwd and /etc/group also know ``webuser`` (4321:4321)."""
    es = [ib.Dir("www"), ib.Dir("www/cgi-bin"), ib.Dir("www-other")]
    for rel in WEB_FILES:
        es.append(ib.File(rel, _read(rel), mode=0o755 if rel.startswith(("bin/", "www/cgi-bin/")) else 0o644))
    es.append(ib.File("www/index.html", _read("www/index.html").replace(b"VERSION", version.encode())))
    if user:
        name, uid = WEB_USER
        es += [ib.File("etc/passwd", ib.PASSWD + f"{name}:x:{uid}:{uid}:web:/home/{name}:/bin/sh\n".encode()),
               ib.File("etc/group", ib.GROUP + f"{name}:x:{uid}:\n".encode()),
               ib.Dir(f"home/{name}", uid=uid, gid=uid)]
    return es


def web_image(version="1", config=None, user=False, name="e2e/web:1"):
    """busybox-static + the web app. Default config: ENTRYPOINT ["start-web"] (looked up in PATH), CMD
    ["hello", "world"], ENV IMAGE_GREETING=from-image and PORT=1234 (which the platform overrides), no
    EXPOSE. ``config`` entries replace these (a value of None removes the key)."""
    cfg = {"Entrypoint": ["start-web"], "Cmd": ["hello", "world"], "WorkingDir": "/",
           "Env": ib.DEFAULT_ENV + ["IMAGE_GREETING=from-image", "PORT=1234", f"APP_VERSION={version}"]}
    for k, v in (config or {}).items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    layers = [ib.Layer(ib.busybox_entries()), ib.Layer(web_layer(version, user))]
    return ib.build_image(layers, config=cfg, name=name)


def build_app_images() -> dict:
    """kind -> (image, repo:tag) of every test app image."""
    env = ib.DEFAULT_ENV + ["IMAGE_GREETING=from-image", "PORT=1234"]
    return {
        # ENTRYPOINT + CMD, no EXPOSE (-> 8080), runs as root (no USER)
        "web": (web_image("1"), "e2e/web:1"),
        "web2": (web_image("2"), "e2e/web:2"),
        # USER by name
        "user": (web_image("1", {"User": WEB_USER[0]}, user=True), "e2e/web-user:1"),
        # several EXPOSEd ports: 9410/tcp, 7000/tcp, 53/udp -> 7000; a listener on 9410 too
        "ports": (web_image("1", {"ExposedPorts": ["9410/tcp", "7000/tcp", "53/udp"],
                                  "Env": env + ["EXTRA_PORTS=9410"]}), "e2e/web-ports:1"),
        # only a UDP port: as no EXPOSE -> 8080
        "udp": (web_image("1", {"ExposedPorts": ["53/udp"]}), "e2e/web-udp:1"),
        # neither ENTRYPOINT nor CMD
        "nocmd": (web_image("1", {"Entrypoint": None, "Cmd": None}), "e2e/web-nocmd:1"),
        # exits at once
        "crash": (web_image("1", {"Entrypoint": None, "Cmd": ["/bin/sh", "-c", "echo crashing-now >&2; exit 3"]}),
                  "e2e/crash:1"),
    }


@pytest.fixture(scope="session")
def app_images(session_registry):
    refs = {}
    for kind, (img, repo_tag) in build_app_images().items():
        session_registry.push(img, repo_tag)
        refs[kind] = session_registry.ref(repo_tag)
    return refs


def enable_docker(p: Platform):
    p.cli("enable-feature-flag", "diego_docker")
    doc = p.api_json("GET", "/v3/feature_flags/diego_docker")
    assert doc["enabled"] is True


def errors_of(r: requests.Response) -> dict:
    """The first error of a CF V3 error body."""
    doc = r.json()
    assert "errors" in doc and doc["errors"], doc
    return doc["errors"][0]


class Hammer:
    """A client thread sending GET requests through the router (a new connection each) until stopped;
    records (monotonic time, status or None, detail) for each."""

    def __init__(self, plat, host, path="/", pace=0.01, timeout=5):
        self.url = plat.router_url + path
        self.host = plat.host(host) if "." not in host else host
        self.pace, self.timeout = pace, timeout
        self.results = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        s = requests.Session()
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                r = s.get(self.url, headers={"Host": self.host, "Connection": "close"}, timeout=self.timeout)
                self.results.append((t, r.status_code, r.text[:80]))
            except requests.RequestException as e:
                self.results.append((t, None, type(e).__name__))
            self._stop.wait(self.pace)

    def __enter__(self):
        self._t.start()
        self.wait_ok(5)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(30)

    def ok_since(self, t0) -> int:
        return sum(1 for t, st, _ in list(self.results) if t >= t0 and st == 200)

    def wait_ok(self, n, since=None, timeout=30):
        t0 = time.monotonic() if since is None else since
        helpers.wait_for(lambda: self.ok_since(t0) >= n, timeout=timeout,
                         what=f"{n} successful requests through the router", interval=0.01)

    def observe(self, seconds):
        """Keep the client running for an observation window (requests are what is observed)."""
        t0 = time.monotonic()
        helpers.wait_for(lambda: time.monotonic() - t0 >= seconds, timeout=seconds + 5,
                         what=f"{seconds}s of requests", interval=0.05)

    def failures(self):
        return [(t, st, d) for t, st, d in list(self.results) if st != 200]
