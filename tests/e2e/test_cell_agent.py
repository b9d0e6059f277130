"""The cell agent (`berth cell`) against a fake controller: desired LRPs become RUNNING containers reachable on
their host port with the CF_INSTANCE_* env, state changes are reported as events and heartbeats, DELETE leaves
nothing behind, pull failures / start timeouts / exits crash with the documented reasons, and a restarted agent
re-adopts a running instance without restarting it.

Uses the session's cell network (conftest's BERTH_CONFIG values) with the agent's own host port range.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

import berthcli
import conftest
import imagebuild as ib
from helpers import host_snapshot, wait_for

pytestmark = pytest.mark.skipif(not berthcli.berth_available(), reason="berth binary not built")

HOST_PORTS = "61870-61889"


class FakeController:
    """Records heartbeats (PUT /internal/v1/cells/:id) and events (POST .../events); checks the bearer."""

    def __init__(self, token):
        self.token = token
        self.heartbeats = []
        self.events = []
        self.unauthorized = 0
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    with outer.lock:
                        outer.unauthorized += 1
                    self._reply(401)
                    return
                doc = json.loads(body) if body else None
                with outer.lock:
                    if self.command == "PUT" and self.path.startswith("/internal/v1/cells/") and \
                            not self.path.endswith("/events"):
                        outer.heartbeats.append((self.path, doc))
                    elif self.command == "POST" and self.path.endswith("/events"):
                        outer.events.append(doc)
                self._reply(200, b"{}")

            def _reply(self, status, body=b""):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PUT = do_POST = _handle

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def states(self, guid):
        with self.lock:
            return [e["instance"]["state"] for e in self.events if e["instance"]["instance_guid"] == guid]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Agent:
    def __init__(self, data_dir, scratch, controller_url, token_file, drain=True):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(scratch, "agent-config.yaml")
        with open(self.config, "w") as f:
            f.write(conftest.CELL_CONFIG_YAML + f"  agent:\n    host_ports: {HOST_PORTS}\n    id: cell-e2e\n")
        self.log = os.path.join(scratch, f"agent-{time.monotonic_ns()}.log")
        args = [berthcli.BERTH_BIN, "--data-dir", data_dir, "--config", self.config, "cell", "--listen",
                f"127.0.0.1:{self.port}", "--controller", controller_url, "--internal-token-file", token_file]
        if drain:
            args.append("--drain-on-exit")
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT)
        with open(token_file) as f:
            self.token = f.read().strip()
        wait_for(lambda: self._ping(), timeout=20, what="the agent answering /v1/ping")

    def _ping(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}: {self.log_text()}")
        try:
            return self.req("GET", "/v1/ping")[0] == 200
        except OSError:
            return False

    def req(self, method, path, body=None, token="default"):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.url + path, data=data, method=method)
        tok = self.token if token == "default" else token
        if tok:
            r.add_header("Authorization", f"Bearer {tok}")
        if data is not None:
            r.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(r, timeout=60) as resp:
                raw = resp.read()
                return resp.status, raw
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, guid):
        st, raw = self.req("GET", f"/v1/lrps/{guid}")
        assert st == 200, raw
        return json.loads(raw)

    def wait_state(self, guid, state, timeout=60):
        return wait_for(lambda: (lambda i: i if i["state"] == state else None)(self.get(guid)), timeout=timeout,
                        what=f"{guid} {state}", interval=0.1)

    def log_text(self):
        if not self.logf.closed:
            self.logf.flush()
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.logf.closed:
            self.logf.close()
        return self.proc.returncode


def lrp(guid, image, **kw):
    body = {"instance_guid": guid, "process_guid": "p-" + guid[:8], "app_guid": "a-" + guid[:8],
            "app_name": "web", "index": 0, "image": image, "username": None, "password": None, "command": None,
            "env": [["PORT", "8080"], ["GREETING", "hello"]], "ports": [8080], "memory_mb": 64, "disk_mb": 64,
            "health_check": {"type": "port", "endpoint": "/", "timeout_s": 30, "invocation_timeout_s": 1}}
    body.update(kw)
    return body


WEB_CMD = ["/bin/sh", "-c", "mkdir -p /www && env > /www/env.txt && exec httpd -f -p $PORT -h /www"]


@pytest.fixture
def platform(berth_data, scratch):
    token_file = os.path.join(scratch, "internal-token")
    with open(token_file, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    os.chmod(token_file, 0o600)
    with open(token_file) as f:
        ctl = FakeController(f.read().strip())
    agents = []

    def start(drain=True):
        a = Agent(berth_data, scratch, ctl.url, token_file, drain=drain)
        agents.append(a)
        return a

    yield start, ctl
    for a in agents:
        a.stop()
    ctl.stop()
    # Anything an interrupted test left.
    for d in subprocess.run([berthcli.BERTH_BIN, "--data-dir", berth_data, "ps", "-aq"], capture_output=True,
                            text=True).stdout.split():
        subprocess.run([berthcli.BERTH_BIN, "--data-dir", berth_data, "rm", "-f", d], capture_output=True)


def test_lifecycle_env_events_and_delete(platform, registry_plain, berth_data):
    start, ctl = platform
    digest = registry_plain.push(ib.busybox_image(), "test/web:1")
    image = registry_plain.ref(f"test/web@{digest}")
    before = host_snapshot(berth_data)
    agent = start()
    guid = str(uuid.uuid4())
    # Auth and validation first.
    assert agent.req("GET", "/v1/lrps", token=None)[0] == 401
    assert agent.req("GET", "/v1/lrps", token="wrong")[0] == 401
    st, raw = agent.req("PUT", f"/v1/lrps/{guid}", lrp(guid, image, memory_mb=0))
    assert st == 422 and b"memory_mb" in raw
    st, raw = agent.req("PUT", f"/v1/lrps/{guid}", lrp(guid, image, bogus=1))
    assert st == 422 and b"bogus" in raw
    assert agent.req("GET", f"/v1/lrps/{guid}")[0] == 404

    assert agent.req("PUT", f"/v1/lrps/{guid}", lrp(guid, image, command=WEB_CMD))[0] == 202
    assert agent.req("PUT", f"/v1/lrps/{guid}", lrp(guid, image, command=WEB_CMD))[0] == 202  # idempotent
    inst = agent.wait_state(guid, "RUNNING")
    assert inst["external_ip"] == "127.0.0.1"
    lo, hi = map(int, HOST_PORTS.split("-"))
    assert lo <= inst["external_port"] <= hi
    assert inst["port"] == 8080 and inst["host"].startswith(conftest.E2E_SUBNET_PREFIX)
    assert inst["exit_code"] is None and inst["reason"] is None
    assert inst["usage"]["mem_quota"] == 64 << 20 and inst["usage"]["disk_quota"] == 64 << 20
    # Reachable on the host port, with the env of docs/PLATFORM.md.
    with urllib.request.urlopen(f"http://127.0.0.1:{inst['external_port']}/env.txt", timeout=10) as r:
        env = dict(l.split("=", 1) for l in r.read().decode().splitlines() if "=" in l)
    assert env["PORT"] == "8080" and env["GREETING"] == "hello"
    assert env["CF_INSTANCE_GUID"] == guid and env["INSTANCE_GUID"] == guid
    assert env["CF_INSTANCE_INDEX"] == "0" and env["INSTANCE_INDEX"] == "0"
    assert env["CF_INSTANCE_IP"] == "127.0.0.1"
    assert env["CF_INSTANCE_INTERNAL_IP"] == inst["host"]
    assert env["CF_INSTANCE_PORT"] == str(inst["external_port"])
    assert env["CF_INSTANCE_ADDR"] == f"127.0.0.1:{inst['external_port']}"
    assert json.loads(env["CF_INSTANCE_PORTS"]) == [{"external": inst["external_port"], "internal": 8080}]
    # Listed, reported.
    st, raw = agent.req("GET", "/v1/lrps")
    doc = json.loads(raw)
    assert st == 200 and doc["cell_id"] == "cell-e2e" and [i["instance_guid"] for i in doc["instances"]] == [guid]
    wait_for(lambda: "RUNNING" in ctl.states(guid), timeout=10, what="RUNNING event")
    assert ctl.states(guid)[0] == "STARTING"
    wait_for(lambda: any(hb[1]["instances"] and hb[1]["instances"][0]["state"] == "RUNNING"
                         for hb in ctl.heartbeats), timeout=10, what="a heartbeat with the instance")
    path, hb = ctl.heartbeats[-1]
    assert path == "/internal/v1/cells/cell-e2e" and hb["url"] == agent.url
    assert hb["memory_mb"] > 0 and hb["disk_mb"] > 0
    # Logs (NDJSON).
    st, raw = agent.req("GET", f"/v1/lrps/{guid}/logs?tail=10")
    assert st == 200
    for line in raw.decode().splitlines():
        rec = json.loads(line)
        assert set(rec) == {"time", "source", "stream", "text"}
    # Delete leaves nothing.
    assert agent.req("DELETE", f"/v1/lrps/{guid}")[0] == 202
    assert agent.req("GET", f"/v1/lrps/{guid}")[0] == 404
    assert agent.req("DELETE", f"/v1/lrps/{guid}")[0] == 404
    assert agent.stop() == 0
    after = host_snapshot(berth_data)
    # The cell's per-host pieces (the disk pool and the netns mount point) stay, as after `berth rm`.
    pool = {os.path.join(berth_data, "cell", d) for d in ("disk", "netns")}
    after["mounts"] = [m for m in after["mounts"] if m.split()[1] not in pool]
    after["files"] = [f for f in after["files"] if f != "cell/net/lock"]
    for k in ("mounts", "processes", "files"):
        assert before.get(k) == after.get(k), k
    # cgroups and container processes are host-wide (other e2e runs may have containers): only this one's
    cid = inst["container_id"]
    assert [c for c in after["cgroups"] if cid in c] == [] and container_pids(cid) == []
    assert os.listdir(os.path.join(berth_data, "cell", "agent")) == []
    assert ctl.unauthorized == 0


def test_basic_auth_pull_right_and_wrong(platform, registry_basic):
    start, ctl = platform
    digest = registry_basic.push(ib.busybox_image(), "test/private:1")
    image = registry_basic.ref(f"test/private@{digest}")
    user, pw = registry_basic.auth
    agent = start()
    bad, good = str(uuid.uuid4()), str(uuid.uuid4())
    wrong_pw = "wr0ng-" + secrets.token_hex(6)
    agent.req("PUT", f"/v1/lrps/{bad}", lrp(bad, image, username=user, password=wrong_pw, command=WEB_CMD))
    inst = agent.wait_state(bad, "CRASHED")
    assert inst["reason"].startswith("pull failed: ")
    http_hc = {"type": "http", "endpoint": "/env.txt", "timeout_s": 30, "invocation_timeout_s": 1}
    agent.req("PUT", f"/v1/lrps/{good}", lrp(good, image, username=user, password=pw, command=WEB_CMD,
                                              health_check=http_hc))
    agent.wait_state(good, "RUNNING")
    for g in (bad, good):
        assert agent.req("DELETE", f"/v1/lrps/{g}")[0] == 202
    agent.stop()
    text = agent.log_text()
    assert wrong_pw not in text and pw not in text
    for f in os.listdir(os.path.join(agent.data_dir, "cell", "agent")):
        with open(os.path.join(agent.data_dir, "cell", "agent", f)) as fh:
            assert pw not in fh.read()


def test_start_timeout_and_exit(platform, registry_plain):
    start, ctl = platform
    digest = registry_plain.push(ib.busybox_image(), "test/bb:1")
    image = registry_plain.ref(f"test/bb@{digest}")
    agent = start()
    never, exits = str(uuid.uuid4()), str(uuid.uuid4())
    hc = {"type": "port", "timeout_s": 2, "invocation_timeout_s": 1}
    agent.req("PUT", f"/v1/lrps/{never}", lrp(never, image, command=["/bin/sh", "-c", "exec sleep 1000"],
                                               health_check=hc))
    agent.req("PUT", f"/v1/lrps/{exits}", lrp(exits, image, command=["/bin/sh", "-c", "echo bye; exit 3"],
                                               health_check={**hc, "timeout_s": 30}))
    # Listens, becomes RUNNING, then stops listening without exiting: liveness (every 5 s) crashes it.
    flaky = str(uuid.uuid4())
    agent.req("PUT", f"/v1/lrps/{flaky}", lrp(flaky, image, health_check={**hc, "timeout_s": 30}, command=[
        "/bin/sh", "-c", "httpd -f -p $PORT & sleep 2; kill $!; exec sleep 1000"]))
    agent.wait_state(flaky, "RUNNING", timeout=30)
    inst = agent.wait_state(flaky, "CRASHED", timeout=30)
    assert inst["reason"] == "health check failed"
    inst = agent.wait_state(never, "CRASHED", timeout=30)
    assert inst["reason"] == "start timeout"
    inst = agent.wait_state(exits, "CRASHED", timeout=30)
    assert inst["reason"] == "exited with status 3" and inst["exit_code"] == 3
    wait_for(lambda: "CRASHED" in ctl.states(exits) and "CRASHED" in ctl.states(never), timeout=10,
             what="CRASHED events")
    st, raw = agent.req("GET", f"/v1/lrps/{exits}/logs")
    assert any(json.loads(l)["text"] == "bye" for l in raw.decode().splitlines())
    for g in (never, exits, flaky):
        assert agent.req("DELETE", f"/v1/lrps/{g}")[0] == 202
    assert agent.stop() == 0


def test_restart_readopts_running_instance(platform, registry_plain):
    start, ctl = platform
    digest = registry_plain.push(ib.busybox_image(), "test/web2:1")
    image = registry_plain.ref(f"test/web2@{digest}")
    agent = start(drain=False)
    guid = str(uuid.uuid4())
    agent.req("PUT", f"/v1/lrps/{guid}", lrp(guid, image, command=WEB_CMD))
    inst = agent.wait_state(guid, "RUNNING")
    agent.proc.kill()
    agent.proc.wait()
    agent.logf.close()
    url = f"http://127.0.0.1:{inst['external_port']}/env.txt"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200  # still serving without an agent
    agent2 = start()
    again = agent2.get(guid)
    assert again["state"] == "RUNNING" and again["container_id"] == inst["container_id"]
    assert again["since"] == inst["since"] and again["external_port"] == inst["external_port"]
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
    # The re-adopted instance is supervised as before: its end is reported at once.
    pids = container_pids(inst["container_id"])
    assert pids
    t0 = time.monotonic()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # httpd's child of the request above, exiting on its own
    crashed = agent2.wait_state(guid, "CRASHED", timeout=10)
    assert time.monotonic() - t0 < 1.5
    assert crashed["reason"] == "killed by signal 9 (SIGKILL)" and crashed["exit_code"] == 137
    assert agent2.req("DELETE", f"/v1/lrps/{guid}")[0] == 202
    assert agent2.stop() == 0


def container_pids(cid):
    for path in (f"/sys/fs/cgroup/pids/berth/{cid}/cgroup.procs", f"/sys/fs/cgroup/berth/{cid}/cgroup.procs"):
        if os.path.exists(path):
            with open(path) as f:
                return [int(p) for p in f.read().split()]
    return []


def test_stop_signal_grace_period_and_logs_of_deleted_instances(platform, registry_plain):
    start, ctl = platform
    usr1 = ib.build_image([ib.Layer(ib.busybox_entries())], name="test/usr1:1",
                          config={"Env": ib.DEFAULT_ENV, "StopSignal": "SIGUSR1", "Cmd": ["/bin/sh"]})
    image = registry_plain.ref(f"test/usr1@{registry_plain.push(usr1, 'test/usr1:1')}")
    digest = registry_plain.push(ib.busybox_image(), "test/bb2:1")
    plain = registry_plain.ref(f"test/bb2@{digest}")
    agent = start()
    hc = {"type": "process", "timeout_s": 10}
    loop = "while :; do sleep 1 & wait $!; done"
    polite, stubborn = str(uuid.uuid4()), str(uuid.uuid4())
    agent.req("PUT", f"/v1/lrps/{polite}", lrp(polite, image, health_check=hc, command=[
        "/bin/sh", "-c", f"trap 'echo got USR1; exit 0' USR1; echo started; {loop}"]))
    agent.req("PUT", f"/v1/lrps/{stubborn}", lrp(stubborn, plain, health_check=hc, command=[
        "/bin/sh", "-c", f"trap 'echo ignoring TERM' TERM; echo started; {loop}"]))
    for g in (polite, stubborn):
        agent.wait_state(g, "RUNNING")
        wait_for(lambda g=g: b"started" in agent.req("GET", f"/v1/lrps/{g}/logs")[1], timeout=10,
                 what="the app's first line")
    # The image's StopSignal, handled: gone at once.
    t0 = time.monotonic()
    assert agent.req("DELETE", f"/v1/lrps/{polite}")[0] == 202
    assert time.monotonic() - t0 < 3
    # SIGTERM caught and ignored: SIGKILL after 10 s.
    t0 = time.monotonic()
    assert agent.req("DELETE", f"/v1/lrps/{stubborn}")[0] == 202
    took = time.monotonic() - t0
    assert 9.5 <= took < 14, took
    # The next instance of the polite one's process index shows its predecessor's lines first.
    succ = str(uuid.uuid4())
    agent.req("PUT", f"/v1/lrps/{succ}", lrp(succ, image, health_check=hc, process_guid="p-" + polite[:8],
                                              command=["/bin/sh", "-c", f"echo successor; {loop}"]))
    agent.wait_state(succ, "RUNNING")
    wait_for(lambda: b"successor" in agent.req("GET", f"/v1/lrps/{succ}/logs")[1], timeout=10,
             what="the successor's line")
    recs = [json.loads(l) for l in agent.req("GET", f"/v1/lrps/{succ}/logs")[1].decode().splitlines()]
    app = [(r["source"], r["text"]) for r in recs if r["source"].startswith("APP/")]
    assert app == [("APP/PROC/WEB/0", "started"), ("APP/PROC/WEB/0", "got USR1"), ("APP/PROC/WEB/0", "successor")]
    cell = [r["text"] for r in recs if r["source"] == "CELL/0"]
    assert cell[:4] == ["Creating container", "Successfully created container",
                        "Starting health monitoring of container", "Container became healthy"]
    assert "Stopping instance" in cell and "Destroying container" in cell
    assert [r["time"] for r in recs] == sorted(r["time"] for r in recs)
    assert agent.req("GET", f"/v1/lrps/{succ}/logs?tail=1")[1].count(b"\n") == 1
    assert agent.req("DELETE", f"/v1/lrps/{succ}")[0] == 202
    assert agent.stop() == 0


def test_unreachable_controller_exit_without_and_with_drain(platform, registry_plain, berth_data, scratch):
    start, ctl = platform
    digest = registry_plain.push(ib.busybox_image(), "test/web3:1")
    image = registry_plain.ref(f"test/web3@{digest}")
    token_file = os.path.join(scratch, "internal-token")
    dead = f"http://127.0.0.1:{free_port()}"
    agent = Agent(berth_data, scratch, dead, token_file, drain=False)
    try:
        guid = str(uuid.uuid4())
        agent.req("PUT", f"/v1/lrps/{guid}", lrp(guid, image, command=WEB_CMD))
        inst = agent.wait_state(guid, "RUNNING")  # no controller needed
        time.sleep(2.5)  # a heartbeat round failed meanwhile
        assert agent.get(guid)["state"] == "RUNNING"
    finally:
        assert agent.stop() == 0  # SIGTERM without --drain-on-exit: the instance stays
    running = json.loads(subprocess.run([berthcli.BERTH_BIN, "--data-dir", berth_data, "ps", "--json"],
                                        capture_output=True, text=True, check=True).stdout)
    assert inst["container_id"] in [c["Id"] for c in running]
    agent2 = start(drain=True)  # re-adopts, then reports it to the (reachable) controller
    assert agent2.get(guid)["container_id"] == inst["container_id"]
    wait_for(lambda: any(i["instance_guid"] == guid for _, hb in ctl.heartbeats for i in hb["instances"]),
             timeout=10, what="a heartbeat with the re-adopted instance")
    assert agent2.stop() == 0  # drains
    left = subprocess.run([berthcli.BERTH_BIN, "--data-dir", berth_data, "ps", "-aq"], capture_output=True,
                          text=True).stdout.split()
    assert left == []
    assert os.listdir(os.path.join(berth_data, "cell", "agent")) == []


def test_deleted_instance_logs_are_bounded(platform, registry_plain):
    start, ctl = platform
    digest = registry_plain.push(ib.busybox_image(), "test/bb3:1")
    image = registry_plain.ref(f"test/bb3@{digest}")
    agent = start()
    hc = {"type": "process", "timeout_s": 10}
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    proc = "p-" + old[:8]
    agent.req("PUT", f"/v1/lrps/{old}", lrp(old, image, health_check=hc, process_guid=proc, command=[
        "/bin/sh", "-c", "i=1; while [ $i -le 1500 ]; do echo line $i; i=$((i+1)); done; exec sleep 1000"]))
    agent.wait_state(old, "RUNNING")
    wait_for(lambda: b"line 1500" in agent.req("GET", f"/v1/lrps/{old}/logs?tail=5")[1], timeout=10,
             what="the 1500 lines")
    assert agent.req("DELETE", f"/v1/lrps/{old}")[0] == 202
    # Another index of the same process does not see them; the same index does: the last 1000 lines.
    other = str(uuid.uuid4())
    agent.req("PUT", f"/v1/lrps/{other}", lrp(other, image, health_check=hc, process_guid=proc, index=1,
                                               command=["/bin/sh", "-c", "exec sleep 1000"]))
    agent.req("PUT", f"/v1/lrps/{new}", lrp(new, image, health_check=hc, process_guid=proc,
                                             command=["/bin/sh", "-c", "exec sleep 1000"]))
    agent.wait_state(new, "RUNNING")
    agent.wait_state(other, "RUNNING")
    recs = [json.loads(l) for l in agent.req("GET", f"/v1/lrps/{new}/logs")[1].decode().splitlines()]
    # The deleted one's records come first: its last 1000 lines, app and cell lines together.
    texts = [r["text"] for r in recs]
    kept = recs[:len(texts) - 1 - texts[::-1].index("Creating container")]
    assert len(kept) == 1000 and kept[-1]["text"] == "Destroying container"
    app = [r["text"] for r in kept if r["source"] == "APP/PROC/WEB/0"]
    first = int(app[0].split()[1])
    assert 500 < first < 510 and app == [f"line {i}" for i in range(first, 1501)]
    recs = [json.loads(l) for l in agent.req("GET", f"/v1/lrps/{other}/logs")[1].decode().splitlines()]
    assert [r for r in recs if r["source"].startswith("APP/")] == []
    assert {r["source"] for r in recs} == {"CELL/1"}
    for g in (new, other):
        assert agent.req("DELETE", f"/v1/lrps/{g}")[0] == 202
    assert agent.stop() == 0
