"""The controller's apps half against a fake cell (Python, speaking the cell API of docs/PLATFORM.md and
heartbeating) and a real registry: push flow via the API (app, package, build, droplet, start) with the
PUT /v1/lrps body checked, the diego_docker flag stopping and restoring instances, scale, staging errors,
restage after a tag move, the route table long poll, stats and logs.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

import berthcli
import imagebuild

START_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Controller:
    def __init__(self, work: str):
        self.work = work
        self.data_dir = os.path.join(work, "data")
        self.token_file = os.path.join(work, "internal-token")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log_path = os.path.join(work, "controller.log")
        self.tok = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [berthcli.BERTH_BIN, "--data-dir", self.data_dir, "controller", "--listen",
             f"127.0.0.1:{self.port}", "--internal-token-file", self.token_file, "--domain", "apps.test"],
            stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "controller exited:\n" + self.log()
            try:
                if requests.get(self.url + "/v3/info", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("controller did not answer:\n" + self.log())
        with open(os.path.join(self.data_dir, "admin-password")) as f:
            pw = f.read().strip()
        r = requests.post(self.url + "/oauth/token",
                          data={"grant_type": "password", "username": "admin", "password": pw})
        assert r.status_code == 200, r.text
        self.tok = r.json()["access_token"]

    def internal_token(self) -> str:
        with open(self.token_file) as f:
            return f.read().strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("controller did not stop on SIGTERM:\n" + self.log())
            assert rc == 0, f"controller exited {rc}:\n" + self.log()
        self.proc = None

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def api(self, method: str, path: str, token: str | None = "admin", **kw):
        headers = kw.pop("headers", {})
        if token == "admin":
            token = self.tok
        if token:
            headers["Authorization"] = "bearer " + token
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)


class FakeCell:
    """The cell agent's internal API, in memory: PUT makes an instance RUNNING at once (reported as an
    event), DELETE removes it; heartbeats every 0.5 s."""

    def __init__(self, controller_url: str, token: str, cell_id="cell-0", memory_mb=4096):
        self.controller_url = controller_url
        self.token = token
        self.id = cell_id
        self.memory_mb = memory_mb
        self.instances: dict[str, dict] = {}
        self.puts: list[dict] = []
        self.deletes: list[tuple[float, str]] = []
        self.ops: list[tuple[str, str, str]] = []  # ("put"|"delete", instance guid, app guid), in order
        self.hold = False  # PUT leaves instances STARTING (no RUNNING event) while set
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.logs: dict[str, list[dict]] = {}
        cell = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status, body=None, ctype="application/json"):
                data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authed(self):
                if self.headers.get("Authorization") != "Bearer " + cell.token:
                    self.reply(401, {"error": "unauthorized"})
                    return False
                return True

            def do_PUT(self):
                if not self.authed():
                    return
                guid = self.path.rsplit("/", 1)[1]
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with cell.lock:
                    cell.puts.append(body)
                    inst = {"instance_guid": guid, "process_guid": body["process_guid"],
                            "app_guid": body["app_guid"], "index": body["index"], "state": "RUNNING",
                            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": "127.0.0.1",
                            "port": body["ports"][0], "external_ip": "127.0.0.1", "external_port": 61001,
                            "container_id": "c-" + guid, "exit_code": None, "reason": None,
                            "usage": {"cpu_ns": 1000, "mem_bytes": 1 << 20, "disk_bytes": 8192,
                                      "mem_quota": body["memory_mb"] << 20, "disk_quota": body["disk_mb"] << 20}}
                    if cell.hold:
                        inst["state"] = "STARTING"
                    cell.instances[guid] = inst
                    cell.ops.append(("put", guid, body["app_guid"]))
                    cell.logs[guid] = [{"time": "2026-11-28T18:00:00.%06dZ" % body["index"], "stream": "stdout",
                                        "text": f"hello from {body['index']}"}]
                self.reply(202, {})
                if inst["state"] == "RUNNING":
                    threading.Thread(target=cell.event, args=(dict(inst),), daemon=True).start()

            def do_DELETE(self):
                if not self.authed():
                    return
                guid = self.path.rsplit("/", 1)[1]
                with cell.lock:
                    cell.deletes.append((time.monotonic(), guid))
                    found = cell.instances.pop(guid, None)
                    if found:
                        cell.ops.append(("delete", guid, found["app_guid"]))
                self.reply(202 if found else 404, {})

            def do_GET(self):
                if not self.authed():
                    return
                path = self.path.split("?")[0]
                parts = path.split("/")
                with cell.lock:
                    if path == "/v1/lrps":
                        return self.reply(200, {"cell_id": cell.id, "instances": list(cell.instances.values())})
                    if len(parts) == 4 and parts[3] in cell.instances:
                        return self.reply(200, cell.instances[parts[3]])
                    if len(parts) == 5 and parts[4] == "logs" and parts[3] in cell.logs:
                        data = "".join(json.dumps(l) + "\n" for l in cell.logs[parts[3]])
                        return self.reply(200, data.encode(), "application/x-ndjson")
                self.reply(404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def event(self, inst):
        try:
            requests.post(f"{self.controller_url}/internal/v1/cells/{self.id}/events",
                          headers={"Authorization": "Bearer " + self.token}, json={"instance": inst}, timeout=5)
        except requests.RequestException:
            pass

    def heartbeat(self):
        with self.lock:
            body = {"url": self.url, "memory_mb": self.memory_mb, "disk_mb": 100000,
                    "instances": list(self.instances.values())}
        try:
            requests.put(f"{self.controller_url}/internal/v1/cells/{self.id}",
                         headers={"Authorization": "Bearer " + self.token}, json=body, timeout=5)
        except requests.RequestException:
            pass

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

        def beat():
            while not self.stopping.is_set():
                self.heartbeat()
                self.stopping.wait(0.5)

        threading.Thread(target=beat, daemon=True).start()
        return self

    def stop(self):
        self.stopping.set()
        self.server.shutdown()

    def crash(self, guid, code=3):
        with self.lock:
            inst = self.instances[guid]
            inst.update(state="CRASHED", exit_code=code, reason=f"exited with status {code}",
                        since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            inst = dict(inst)
        self.event(inst)

    def make_running(self, guid):
        with self.lock:
            inst = self.instances[guid]
            inst.update(state="RUNNING")
            inst = dict(inst)
        self.event(inst)

    def adopt(self, guid, app_guid="a", process_guid="p"):
        """An instance the controller never asked for (left over from an earlier life)."""
        with self.lock:
            self.instances[guid] = {"instance_guid": guid, "process_guid": process_guid, "app_guid": app_guid,
                                    "index": 0, "state": "RUNNING", "since": "2026-11-28T18:00:00Z",
                                    "host": "127.0.0.1", "port": 8080, "external_ip": "127.0.0.1",
                                    "external_port": 61002, "container_id": "x", "exit_code": None,
                                    "reason": None, "usage": None}

    def running(self, app_guid=None):
        with self.lock:
            return [i for i in self.instances.values() if app_guid is None or i["app_guid"] == app_guid]


@pytest.fixture
def ctl():
    if not berthcli.berth_available():
        pytest.skip("build/berth not built")
    work = tempfile.mkdtemp(prefix="berth-apiapps-")
    c = Controller(work)
    try:
        c.start()
        yield c
        c.stop()
    finally:
        if c.proc and c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def cell(ctl):
    fc = FakeCell(ctl.url, ctl.internal_token()).start()
    yield fc
    fc.stop()


@pytest.fixture(scope="module")
def images(session_registry):
    """Two images: EXPOSE 9000/tcp 7000/udp 9001/tcp with an entrypoint, and a plain busybox."""
    web = imagebuild.busybox_image(config={"Entrypoint": ["/bin/web"], "Cmd": ["--port", "9000"],
                                           "ExposedPorts": {"9001/tcp": {}, "7000/udp": {}, "9000/tcp": {}},
                                           "User": "1000", "Env": ["PATH=/bin", "A=1"]})
    plain = imagebuild.busybox_image(config={"Cmd": ["/bin/sh", "-c", "echo hi"]})
    session_registry.push(web, "apiapps/web:1")
    session_registry.push(plain, "apiapps/plain:1")
    return {"web": session_registry.ref("apiapps/web:1"), "plain": session_registry.ref("apiapps/plain:1"),
            "registry": session_registry, "web_img": web, "plain_img": plain}


def errors(r):
    return r.json()["errors"][0]


def space_guid(ctl) -> str:
    r = ctl.api("GET", "/v3/spaces?names=default")
    return r.json()["resources"][0]["guid"]


def set_flag(ctl, on: bool):
    r = ctl.api("PATCH", "/v3/feature_flags/diego_docker", json={"enabled": on})
    assert r.status_code == 200, r.text


def create_app(ctl, name="web", env=None) -> dict:
    body = {"name": name, "relationships": {"space": {"data": {"guid": space_guid(ctl)}}},
            "lifecycle": {"type": "docker", "data": {}}}
    if env:
        body["environment_variables"] = env
    r = ctl.api("POST", "/v3/apps", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def stage(ctl, app_guid, image, **creds) -> requests.Response:
    data = {"image": image}
    data.update(creds)
    r = ctl.api("POST", "/v3/packages", json={"type": "docker", "data": data,
                                               "relationships": {"app": {"data": {"guid": app_guid}}}})
    assert r.status_code == 201, r.text
    return ctl.api("POST", "/v3/builds", json={"package": {"guid": r.json()["guid"]}})


def push(ctl, images, name="web", env=None, start=True) -> dict:
    app = create_app(ctl, name, env)
    b = stage(ctl, app["guid"], images["web"])
    assert b.status_code == 201, b.text
    assert b.json()["state"] == "STAGED"
    drop = b.json()["droplet"]["guid"]
    r = ctl.api("PATCH", f"/v3/apps/{app['guid']}/relationships/current_droplet", json={"data": {"guid": drop}})
    assert r.status_code == 200, r.text
    if start:
        r = ctl.api("POST", f"/v3/apps/{app['guid']}/actions/start")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "STARTED"
    return app


def test_docker_flag_off_refuses_and_creates_nothing(ctl):
    body = {"name": "web", "relationships": {"space": {"data": {"guid": space_guid(ctl)}}},
            "lifecycle": {"type": "docker", "data": {}}}
    r = ctl.api("POST", "/v3/apps", json=body)
    assert r.status_code == 403
    assert r.json() == {"errors": [{"code": 330002, "title": "CF-FeatureDisabled",
                                    "detail": "Feature Disabled: diego_docker"}]}
    assert ctl.api("GET", "/v3/apps").json()["pagination"]["total_results"] == 0


def test_app_crud_and_validation(ctl):
    set_flag(ctl, True)
    app = create_app(ctl, "one", env={"K": "v", "N": 5})
    assert app["state"] == "STOPPED" and app["lifecycle"]["type"] == "docker"
    sp = space_guid(ctl)
    r = ctl.api("POST", "/v3/apps", json={"name": "one", "relationships": {"space": {"data": {"guid": sp}}}})
    assert r.status_code == 422 and errors(r)["title"] == "CF-UniquenessError"
    assert errors(r)["detail"] == "App with name 'one' already exists in space 'default'"
    r = ctl.api("POST", "/v3/apps", json={"name": "", "relationships": {"space": {"data": {"guid": sp}}}})
    assert r.status_code == 422
    for bad, detail in (("PORT", "environment_variables cannot set PORT"),
                        ("VCAP_X", "environment_variables cannot start with VCAP_"),
                        ("CF_INSTANCE_IP", "environment_variables cannot start with CF_INSTANCE_")):
        r = ctl.api("PATCH", f"/v3/apps/{app['guid']}/environment_variables", json={"var": {bad: "1"}})
        assert r.status_code == 422 and errors(r)["detail"] == detail
    r = ctl.api("PATCH", f"/v3/apps/{app['guid']}/environment_variables", json={"var": {"K": None, "B": "2"}})
    assert r.status_code == 200 and r.json()["var"] == {"N": "5", "B": "2"}
    procs = ctl.api("GET", f"/v3/apps/{app['guid']}/processes").json()["resources"]
    assert len(procs) == 1
    web = procs[0]
    assert (web["type"], web["instances"], web["memory_in_mb"], web["disk_in_mb"]) == ("web", 1, 256, 1024)
    assert web["health_check"]["type"] == "port" and web["health_check"]["data"]["timeout"] == 60
    assert web["command"] is None
    r = ctl.api("POST", f"/v3/processes/{web['guid']}/actions/scale", json={"memory_in_mb": 0})
    assert r.status_code == 422 and errors(r)["detail"] == "Memory in mb must be greater than 0"
    r = ctl.api("POST", f"/v3/processes/{web['guid']}/actions/scale", json={"instances": -1})
    assert r.status_code == 422
    r = ctl.api("PATCH", f"/v3/processes/{web['guid']}", json={"command": "run me",
                "health_check": {"type": "http", "data": {"endpoint": "/health", "timeout": 10}}})
    assert r.status_code == 200, r.text
    assert r.json()["command"] == "run me" and r.json()["health_check"]["data"]["endpoint"] == "/health"
    r = ctl.api("POST", f"/v3/apps/{app['guid']}/actions/start")
    assert r.status_code == 422 and errors(r)["detail"] == "Assign a droplet before starting this app."
    env = ctl.api("GET", f"/v3/apps/{app['guid']}/env").json()
    va = env["application_env_json"]["VCAP_APPLICATION"]
    assert va["application_name"] == "one" and va["space_name"] == "default"
    assert va["limits"] == {"fds": 16384, "mem": 256, "disk": 1024}
    assert env["system_env_json"] == {"VCAP_SERVICES": {}}
    r = ctl.api("DELETE", f"/v3/apps/{app['guid']}")
    assert r.status_code == 202
    assert ctl.api("GET", f"/v3/apps/{app['guid']}").status_code == 404


def test_push_flow_lrp_body_routes_stats_logs(ctl, cell, images):
    set_flag(ctl, True)
    app = push(ctl, images, env={"MY": "var"}, start=False)
    g = app["guid"]
    dom = ctl.api("GET", "/v3/domains").json()["resources"][0]["guid"]
    r = ctl.api("POST", "/v3/routes", json={"host": "web", "relationships": {
        "space": {"data": {"guid": space_guid(ctl)}}, "domain": {"data": {"guid": dom}}}})
    assert r.status_code == 201, r.text
    route = r.json()
    r = ctl.api("POST", "/v3/routes", json={"host": "web", "relationships": {
        "space": {"data": {"guid": space_guid(ctl)}}, "domain": {"data": {"guid": dom}}}})
    assert r.status_code == 422
    r = ctl.api("POST", "/v3/routes", json={"host": "Web", "relationships": {
        "space": {"data": {"guid": space_guid(ctl)}}, "domain": {"data": {"guid": dom}}}})
    assert r.status_code == 422
    r = ctl.api("POST", f"/v3/routes/{route['guid']}/destinations",
                json={"destinations": [{"app": {"guid": g, "process": {"type": "web"}}}]})
    assert r.status_code == 200, r.text
    assert r.json()["destinations"][0]["port"] == 9000
    r = ctl.api("POST", f"/v3/apps/{g}/actions/start")
    assert r.status_code == 200 and r.json()["state"] == "STARTED"

    wait_for(lambda: cell.running(g), what="an instance placed")
    body = cell.puts[-1]
    drop = ctl.api("GET", f"/v3/apps/{g}/droplets/current").json()
    assert drop["image"].startswith(images["registry"].host + "/apiapps/web@sha256:")
    assert drop["docker_image"] == images["web"]
    assert drop["process_types"] == {"web": "/bin/web --port 9000"}
    em = json.loads(drop["execution_metadata"])
    assert em["ports"] == [{"Port": 7000, "Protocol": "udp"}, {"Port": 9000, "Protocol": "tcp"},
                           {"Port": 9001, "Protocol": "tcp"}]
    assert em["entrypoint"] == ["/bin/web"] and em["user"] == "1000"
    assert body["image"] == drop["image"] and body["index"] == 0 and body["app_name"] == "web"
    assert body["command"] is None and body["ports"] == [9000, 9001]  # the app port, then the other TCP ports
    assert body["username"] is None and body["password"] is None
    assert (body["memory_mb"], body["disk_mb"]) == (256, 1024)
    assert body["health_check"] == {"type": "port", "endpoint": None, "timeout_s": 60, "invocation_timeout_s": 1}
    names = [k for k, _ in body["env"]]
    assert names == ["PORT", "VCAP_APPLICATION", "VCAP_SERVICES", "MEMORY_LIMIT", "MY"]
    env = dict(body["env"])
    assert env["PORT"] == "9000" and env["MEMORY_LIMIT"] == "256m" and env["VCAP_SERVICES"] == "{}"
    va = json.loads(env["VCAP_APPLICATION"])
    assert va["instance_id"] == body["instance_guid"] and va["instance_index"] == 0 and va["port"] == 9000
    assert va["host"] == "0.0.0.0" and va["application_uris"] == ["web.apps.test"]

    # the route table: one endpoint once RUNNING
    it = ctl.internal_token()
    hdr = {"Authorization": "Bearer " + it}

    def table(index=0, wait=0):
        r = requests.get(f"{ctl.url}/internal/v1/routes?index={index}&wait={wait}", headers=hdr, timeout=70)
        assert r.status_code == 200, r.text
        return r.json()

    t = wait_for(lambda: (lambda t: t if t["routes"] and t["routes"][0]["endpoints"] else None)(table()),
                 what="an endpoint")
    rt = t["routes"][0]
    assert rt["host"] == "web.apps.test" and rt["path"] == "" and rt["app_guid"] == g
    assert rt["endpoints"] == [{"instance_guid": body["instance_guid"], "index": 0, "host": "127.0.0.1",
                                "port": 9000}]
    assert requests.get(f"{ctl.url}/internal/v1/routes?index=0", timeout=5).status_code == 401
    # long poll: answered within 1 s of a change
    idx = t["index"]
    result = {}

    def poll():
        t0 = time.monotonic()
        result["t"] = table(idx, 30)
        result["dt"] = time.monotonic() - t0

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.5)
    t_change = time.monotonic()
    r = ctl.api("POST", "/v3/routes", json={"host": "other", "relationships": {
        "space": {"data": {"guid": space_guid(ctl)}}, "domain": {"data": {"guid": dom}}}})
    assert r.status_code == 201
    th.join(10)
    assert result["t"]["index"] > idx and time.monotonic() - t_change < 1.5 and result["dt"] < 5
    # the change wakes the poll; a route mapped to no app is not routable, so it is not in the table
    assert {x["host"] for x in result["t"]["routes"]} == {"web.apps.test"}

    # stats and logs
    st = ctl.api("GET", f"/v3/apps/{g}/processes/web/stats").json()["resources"]
    assert len(st) == 1 and st[0]["state"] == "RUNNING" and st[0]["usage"]["mem"] == 1 << 20
    assert st[0]["instance_ports"] == [{"external": 61001, "internal": 9000}]
    assert st[0]["mem_quota"] == 256 << 20
    logs = ctl.api("GET", f"/v3/apps/{g}/logs?lines=10").json()["resources"]
    assert logs == [{"timestamp": "2026-11-28T18:00:00.000000Z", "source_type": "APP/PROC/WEB",
                     "instance_index": 0, "message_type": "OUT", "message": "hello from 0"}]
    with requests.get(f"{ctl.url}/v3/apps/{g}/logs?follow=true&lines=5", stream=True, timeout=10,
                      headers={"Authorization": "bearer " + ctl.tok}) as r:
        assert r.status_code == 200
        lines = (json.loads(l) for l in r.iter_lines() if l.strip())
        assert next(lines)["message"] == "hello from 0"
        with cell.lock:
            cell.logs[body["instance_guid"]].append({"time": "2026-11-28T18:00:01.000000Z", "stream": "stderr",
                                                     "text": "later"})
        e = next(lines)
        assert (e["message"], e["message_type"], e["instance_index"]) == ("later", "ERR", 0)

    # scale to 3, then 1
    web = ctl.api("GET", f"/v3/apps/{g}/processes/web").json()
    r = ctl.api("POST", f"/v3/processes/{web['guid']}/actions/scale", json={"instances": 3})
    assert r.status_code == 202 and r.json()["instances"] == 3
    wait_for(lambda: len(cell.running(g)) == 3, what="3 instances")
    assert sorted(i["index"] for i in cell.running(g)) == [0, 1, 2]
    st = ctl.api("GET", f"/v3/processes/{web['guid']}/stats").json()["resources"]
    assert [s["index"] for s in st] == [0, 1, 2]
    r = ctl.api("POST", f"/v3/processes/{web['guid']}/actions/scale", json={"instances": 1})
    wait_for(lambda: len(cell.running(g)) == 1, what="scale down to 1")
    assert cell.running(g)[0]["index"] == 0

    # restart: new instance guid
    old = cell.running(g)[0]["instance_guid"]
    r = ctl.api("POST", f"/v3/apps/{g}/actions/restart")
    assert r.status_code == 200
    wait_for(lambda: [i for i in cell.running(g) if i["instance_guid"] != old], what="a restarted instance")
    wait_for(lambda: len(cell.running(g)) == 1, what="the old instance gone")

    # stop: all gone, no endpoints
    r = ctl.api("POST", f"/v3/apps/{g}/actions/stop")
    assert r.status_code == 200 and r.json()["state"] == "STOPPED"
    wait_for(lambda: not cell.running(g), what="stop")
    t = table()
    assert all(not x["endpoints"] for x in t["routes"])

    # routes of the app, unmapping, deleting; deleting a started app stops its instances
    rs = ctl.api("GET", f"/v3/apps/{g}/routes").json()["resources"]
    assert [x["url"] for x in rs] == ["web.apps.test"]
    dest = ctl.api("GET", f"/v3/routes/{route['guid']}/destinations").json()["destinations"][0]
    assert ctl.api("DELETE", f"/v3/routes/{route['guid']}/destinations/{dest['guid']}").status_code == 204
    assert ctl.api("GET", f"/v3/apps/{g}/routes").json()["resources"] == []
    assert [x for x in table()["routes"] if x["host"] == "web.apps.test"] == []  # unmapped: not routable
    assert ctl.api("DELETE", f"/v3/routes/{route['guid']}").status_code == 202
    assert "web.apps.test" not in {x["host"] for x in table()["routes"]}
    assert ctl.api("POST", f"/v3/apps/{g}/actions/start").status_code == 200
    wait_for(lambda: cell.running(g), what="started again")
    assert ctl.api("DELETE", f"/v3/apps/{g}").status_code == 202
    wait_for(lambda: not cell.running(g), what="instances of the deleted app stopped")


def test_flag_off_stops_and_on_restores(ctl, cell, images):
    set_flag(ctl, True)
    app = push(ctl, images)
    g = app["guid"]
    wait_for(lambda: cell.running(g), what="an instance")
    set_flag(ctl, False)
    t0 = time.monotonic()
    wait_for(lambda: not cell.running(g), timeout=5, what="DELETE within 5 s of the flag going off")
    assert time.monotonic() - t0 < 5
    r = ctl.api("POST", f"/v3/apps/{g}/actions/start")
    assert r.status_code == 403
    assert r.json() == {"errors": [{"code": 330002, "title": "CF-FeatureDisabled",
                                    "detail": "Feature Disabled: diego_docker"}]}
    assert ctl.api("GET", f"/v3/apps/{g}").json()["state"] == "STARTED"
    pk = ctl.api("GET", f"/v3/apps/{g}/packages").json()["resources"][0]["guid"]
    r = ctl.api("POST", "/v3/builds", json={"package": {"guid": pk}})
    assert r.status_code == 403
    time.sleep(1.5)
    assert not cell.running(g)
    set_flag(ctl, True)
    wait_for(lambda: cell.running(g), timeout=5, what="instances back with the flag on")


def test_staging_errors_and_restage(ctl, images):
    set_flag(ctl, True)
    app = create_app(ctl, "stg")
    g = app["guid"]
    reg = images["registry"]
    b = stage(ctl, g, reg.ref("apiapps/missing:1"))
    assert b.status_code == 422
    e = errors(b)
    assert e["code"] == 170004 and e["title"] == "CF-StagingError"
    assert e["detail"].startswith("Staging error: ") and "not found" in e["detail"]
    b = stage(ctl, g, f"127.0.0.1:{free_port()}/nothing/here:1")
    assert b.status_code == 422 and errors(b)["title"] == "CF-StagingError"
    assert ctl.api("GET", f"/v3/apps/{g}/droplets").json()["resources"] == []
    r = ctl.api("POST", "/v3/packages", json={"type": "docker", "data": {"image": "UPPER/Case::bad"},
                                               "relationships": {"app": {"data": {"guid": g}}}})
    assert r.status_code == 422
    # credentials are sealed and never returned
    r = ctl.api("POST", "/v3/packages", json={"type": "docker", "data": {
        "image": images["plain"], "username": "u", "password": "sekrit"},
        "relationships": {"app": {"data": {"guid": g}}}})
    assert r.status_code == 201 and r.json()["data"]["password"] == "***"
    assert "sekrit" not in ctl.api("GET", f"/v3/packages/{r.json()['guid']}").text

    # restage after the tag moves: a new pinned digest
    reg.push(images["web_img"], "apiapps/moving:1")
    b1 = stage(ctl, g, reg.ref("apiapps/moving:1"))
    assert b1.status_code == 201, b1.text
    d1 = ctl.api("GET", f"/v3/droplets/{b1.json()['droplet']['guid']}").json()
    reg.push(images["plain_img"], "apiapps/moving:1")
    b2 = stage(ctl, g, reg.ref("apiapps/moving:1"))
    assert b2.status_code == 201, b2.text
    d2 = ctl.api("GET", f"/v3/droplets/{b2.json()['droplet']['guid']}").json()
    assert d1["image"] != d2["image"] and d1["docker_image"] == d2["docker_image"]
    assert json.loads(d2["execution_metadata"])["ports"] == []
    assert d2["process_types"] == {"web": "/bin/sh -c echo hi"}
    assert ctl.api("GET", f"/v3/builds/{b2.json()['guid']}").json()["state"] == "STAGED"
    # no cell has reported: starting is refused and changes nothing
    r = ctl.api("PATCH", f"/v3/apps/{g}/relationships/current_droplet",
                json={"data": {"guid": b2.json()["droplet"]["guid"]}})
    assert r.status_code == 200
    r = ctl.api("POST", f"/v3/apps/{g}/actions/start")
    assert r.status_code == 502 and errors(r)["code"] == 170015 and errors(r)["title"] == "CF-RunnerUnavailable"
    assert ctl.api("GET", f"/v3/apps/{g}").json()["state"] == "STOPPED"


def test_crash_restart_policy_and_audit(ctl, cell, images):
    set_flag(ctl, True)
    app = push(ctl, images)
    g = app["guid"]
    first = wait_for(lambda: cell.running(g), what="an instance")[0]["instance_guid"]
    # crashes 1 and 2 are restarted at once, with a new instance
    seen = {first}
    for n in (1, 2):
        cur = [i for i in cell.running(g) if i["state"] == "RUNNING"][0]["instance_guid"]
        cell.crash(cur)
        new = wait_for(lambda: [i for i in cell.running(g) if i["instance_guid"] not in seen | {cur}
                                and i["state"] == "RUNNING"], what=f"a restart after crash {n}")
        seen |= {cur, new[0]["instance_guid"]}
        wait_for(lambda: cur not in {i["instance_guid"] for i in cell.running(g)}, what="the crashed one deleted")
    ev = ctl.api("GET", f"/v3/audit_events?target_guids={g}&types=audit.app.process.crash").json()["resources"]
    assert len(ev) == 2
    d = ev[0]["data"]
    assert d["index"] == 0 and d["exit_status"] == 3 and d["reason"] == "exited with status 3"
    assert d["instance"] in seen
    # the third crash waits 30 s: it stays CRASHED, stats say so with the reason
    cur = [i for i in cell.running(g) if i["state"] == "RUNNING"][0]["instance_guid"]
    cell.crash(cur)
    time.sleep(2.5)
    insts = cell.running(g)
    assert [i["instance_guid"] for i in insts] == [cur] and insts[0]["state"] == "CRASHED"
    st = ctl.api("GET", f"/v3/apps/{g}/processes/web/stats").json()["resources"]
    assert st[0]["state"] == "CRASHED" and st[0]["details"] == "exited with status 3"
    t = requests.get(f"{ctl.url}/internal/v1/routes?index=0",
                     headers={"Authorization": "Bearer " + ctl.internal_token()}, timeout=5).json()
    assert all(not r["endpoints"] for r in t["routes"])


def test_silent_cell_replaced_and_strays_deleted(ctl, images):
    set_flag(ctl, True)
    a = FakeCell(ctl.url, ctl.internal_token(), "cell-a", memory_mb=8192).start()
    b = None
    try:
        app = push(ctl, images)
        g = app["guid"]
        wait_for(lambda: a.running(g), what="an instance on cell-a")
        # a stray instance on the cell is deleted by the next heartbeat
        a.adopt("stray-1")
        wait_for(lambda: any(gd == "stray-1" for _, gd in a.deletes), what="the stray deleted")
        # cell-a goes silent: after 10 s its instance is placed on cell-b
        b = FakeCell(ctl.url, ctl.internal_token(), "cell-b", memory_mb=1024).start()
        a.stop()
        wait_for(lambda: b.running(g), timeout=20, what="the instance replaced on cell-b")
    finally:
        a.stop()
        if b:
            b.stop()


def test_auditor_and_space_delete(ctl, cell, images):
    set_flag(ctl, True)
    app = push(ctl, images)
    g = app["guid"]
    wait_for(lambda: cell.running(g), what="an instance")
    r = ctl.api("POST", "/v3/users", json={"username": "aud", "password": "pw-aud-123"})
    assert r.status_code == 201, r.text
    r = ctl.api("POST", "/v3/roles", json={"type": "space_auditor", "relationships": {
        "user": {"data": {"username": "aud"}}, "space": {"data": {"guid": space_guid(ctl)}}}})
    assert r.status_code == 201, r.text
    tok = requests.post(ctl.url + "/oauth/token", data={"grant_type": "password", "username": "aud",
                                                         "password": "pw-aud-123"}).json()["access_token"]
    assert ctl.api("GET", f"/v3/apps/{g}", token=tok).status_code == 200
    assert ctl.api("GET", f"/v3/apps/{g}/env", token=tok).status_code == 403
    assert ctl.api("GET", f"/v3/apps/{g}/environment_variables", token=tok).status_code == 403
    assert ctl.api("POST", f"/v3/apps/{g}/actions/stop", token=tok).status_code == 403
    assert ctl.api("GET", f"/v3/apps/{g}/processes/web/stats", token=tok).status_code == 200
    # deleting the space deletes the app; the scheduler stops its instances
    r = ctl.api("DELETE", f"/v3/spaces/{space_guid(ctl)}")
    assert r.status_code in (202, 204), r.text
    assert ctl.api("GET", f"/v3/apps/{g}").status_code == 404
    wait_for(lambda: not cell.running(g), what="instances stopped after the space went")


class FakeRouter:
    """A router's route watch: long-polls /internal/v1/routes with the index it holds, taking ``install_s``
    to install each new table before it asks for the next one. Records (monotonic time, index, instance
    guids) of every table it received."""

    def __init__(self, ctl, install_s):
        self.ctl = ctl
        self.install_s = install_s
        self.tables = []
        self.stop_ev = threading.Event()
        self.session = requests.Session()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        index = 0
        hdr = {"Authorization": "Bearer " + self.ctl.internal_token()}
        while not self.stop_ev.is_set():
            try:
                r = self.session.get(f"{self.ctl.url}/internal/v1/routes?index={index}&wait=2", headers=hdr,
                                     timeout=10)
            except requests.RequestException:
                continue
            doc = r.json()
            if doc["index"] != index:
                guids = {e["instance_guid"] for rt in doc["routes"] for e in rt["endpoints"]}
                self.tables.append((time.monotonic(), doc["index"], guids))
                time.sleep(self.install_s)  # installing it
                index = doc["index"]
        self.session.close()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.thread.join(15)


def test_stop_waits_for_the_routers(ctl, cell, images):
    """An instance being stopped leaves the route table first; its DELETE reaches the cell only once every
    live router has taken a table without it (a router that takes 0.4 s to install one delays the DELETE by
    that much), and a router that stopped polling holds stops up no longer than about a second."""
    set_flag(ctl, True)
    app = push(ctl, images)
    g = app["guid"]
    dom = ctl.api("GET", "/v3/domains").json()["resources"][0]["guid"]
    route = ctl.api("POST", "/v3/routes", json={"host": "stopper", "relationships": {
        "space": {"data": {"guid": space_guid(ctl)}}, "domain": {"data": {"guid": dom}}}}).json()
    r = ctl.api("POST", f"/v3/routes/{route['guid']}/destinations",
                json={"destinations": [{"app": {"guid": g, "process": {"type": "web"}}}]})
    assert r.status_code == 200, r.text
    scale(ctl, g, 3)
    wait_for(lambda: len([i for i in cell.running(g) if i["state"] == "RUNNING"]) == 3, what="3 instances")
    router = FakeRouter(ctl, install_s=0.4).start()
    try:
        wait_for(lambda: router.tables and len(router.tables[-1][2]) == 3, what="the router to hold 3 endpoints")
        before = {i["instance_guid"]: i["index"] for i in cell.running(g)}
        victim = [gu for gu, ix in before.items() if ix == 2][0]
        t0 = time.monotonic()
        scale(ctl, g, 2)
        wait_for(lambda: any(gu == victim for _, gu in cell.deletes), what="the DELETE of index 2")
        t_del = [t for t, gu in cell.deletes if gu == victim][0]
        t_table = min(t for t, _, guids in router.tables if t > t0 and victim not in guids)
        print(f"\nscale-down: table without it after {(t_table - t0) * 1000:.0f} ms, DELETE after "
              f"{(t_del - t0) * 1000:.0f} ms (the router installs a table in 400 ms)")
        assert t_del >= t_table + 0.4 - 0.05, "the DELETE went out before the router took the table"
        assert t_del - t0 < 1.5
    finally:
        router.stop()
    # the router is gone (no poll for > 3 s after its last one): stops no longer wait for it at all; while it
    # may still be live, a stop waits at most about 1 s
    victim = [i["instance_guid"] for i in cell.running(g) if i["index"] == 1][0]
    t0 = time.monotonic()
    scale(ctl, g, 1)
    wait_for(lambda: any(gu == victim for _, gu in cell.deletes), what="the DELETE of index 1")
    took = [t for t, gu in cell.deletes if gu == victim][0] - t0
    print(f"scale-down with the router gone: DELETE after {took * 1000:.0f} ms")
    assert took < 2.0


def deploy(ctl, app_guid, droplet=None, token="admin"):
    body = {"strategy": "rolling", "relationships": {"app": {"data": {"guid": app_guid}}}}
    if droplet:
        body["droplet"] = {"guid": droplet}
    return ctl.api("POST", "/v3/deployments", json=body, token=token)


def deployment(ctl, guid):
    r = ctl.api("GET", f"/v3/deployments/{guid}")
    assert r.status_code == 200, r.text
    return r.json()


def scale(ctl, app_guid, n):
    r = ctl.api("POST", f"/v3/apps/{app_guid}/processes/web/actions/scale", json={"instances": n})
    assert r.status_code == 202 or r.status_code == 200, r.text


def test_rolling_deployment_replaces_one_at_a_time(ctl, cell, images):
    """A rolling deployment to a new droplet: the CF V3 resource, one new instance at a time (never fewer
    serving instances than wanted, never more than one extra), every instance replaced, FINALIZED/DEPLOYED,
    the app's current droplet, the audit events, the list filters."""
    set_flag(ctl, True)
    app = push(ctl, images)
    g = app["guid"]
    scale(ctl, g, 3)
    wait_for(lambda: len([i for i in cell.running(g) if i["state"] == "RUNNING"]) == 3, what="3 instances")
    old = {i["instance_guid"] for i in cell.running(g)}
    d1 = ctl.api("GET", f"/v3/apps/{g}/droplets/current").json()["guid"]
    b = stage(ctl, g, images["plain"])
    assert b.status_code == 201, b.text
    d2 = b.json()["droplet"]["guid"]
    with cell.lock:
        start = len(cell.ops)
    r = deploy(ctl, g, d2)
    assert r.status_code == 201, r.text
    dep = r.json()
    web = ctl.api("GET", f"/v3/apps/{g}/processes/web").json()
    assert dep["state"] == "DEPLOYING" and dep["status"]["value"] == "ACTIVE"
    assert dep["status"]["reason"] == "DEPLOYING"
    assert "last_successful_healthcheck" in dep["status"]["details"]
    assert dep["strategy"] == "rolling" and dep["revision"] is None
    assert dep["droplet"] == {"guid": d2} and dep["previous_droplet"] == {"guid": d1}
    assert dep["new_processes"] == [{"guid": web["guid"], "type": "web"}]
    assert dep["relationships"] == {"app": {"data": {"guid": g}}}
    assert dep["links"]["self"]["href"] == f"{ctl.url}/v3/deployments/{dep['guid']}"
    assert dep["links"]["cancel"]["method"] == "POST"
    assert dep["created_at"] and dep["updated_at"]
    done = wait_for(lambda: (lambda d: d if d["status"]["value"] == "FINALIZED" else None)(
        deployment(ctl, dep["guid"])), timeout=20, what="the deployment to finish")
    assert done["status"]["reason"] == "DEPLOYED" and done["state"] == "DEPLOYED"
    now = {i["instance_guid"] for i in cell.running(g)}
    assert len(now) == 3 and not (now & old), "every instance replaced"
    with cell.lock:
        ops = [o for o in cell.ops[start:] if o[2] == g]
    # replay: never fewer than 3 instances on the cell; an old one is deleted only after a new one was
    # placed (the next new one may be placed while the replaced one is being stopped: it already left
    # the routes, so at most 2 extra exist for a moment)
    live = set(old)
    puts = 0
    for kind, guid, _ in ops:
        if kind == "put":
            live.add(guid)
            puts += 1
        else:
            assert guid in old and puts > len(old - live), ops
            live.discard(guid)
        assert 3 <= len(live) <= 5, ops
    assert sorted(k for k, _, _ in ops) == ["delete"] * 3 + ["put"] * 3, ops
    assert ctl.api("GET", f"/v3/apps/{g}/droplets/current").json()["guid"] == d2
    types = [e["type"] for e in ctl.api("GET", f"/v3/audit_events?target_guids={g}").json()["resources"]]
    assert "audit.app.deployment.create" in types
    lst = ctl.api("GET", f"/v3/deployments?app_guids={g}").json()
    assert lst["pagination"]["total_results"] == 1 and lst["resources"][0]["guid"] == dep["guid"]
    assert ctl.api("GET", "/v3/deployments?status_values=ACTIVE").json()["resources"] == []
    assert ctl.api("GET", "/v3/deployments?app_guids=nope").json()["resources"] == []
    # a rolling restart: the current droplet by default
    r = deploy(ctl, g)
    assert r.status_code == 201 and r.json()["droplet"] == {"guid": d2}, r.text
    wait_for(lambda: deployment(ctl, r.json()["guid"])["status"]["value"] == "FINALIZED", timeout=20,
             what="the rolling restart to finish")
    assert not ({i["instance_guid"] for i in cell.running(g)} & now)


def test_deployment_cancel_supersede_and_errors(ctl, cell, images):
    set_flag(ctl, True)
    app = push(ctl, images)
    g = app["guid"]
    scale(ctl, g, 2)
    wait_for(lambda: len([i for i in cell.running(g) if i["state"] == "RUNNING"]) == 2, what="2 instances")
    old = {i["instance_guid"] for i in cell.running(g)}
    d1 = ctl.api("GET", f"/v3/apps/{g}/droplets/current").json()["guid"]
    d2 = stage(ctl, g, images["plain"]).json()["droplet"]["guid"]
    # a new instance that never becomes healthy: the old ones keep running, the deployment stays ACTIVE
    cell.hold = True
    dep = deploy(ctl, g, d2).json()
    wait_for(lambda: len(cell.running(g)) == 3, what="one new instance")
    new = [i["instance_guid"] for i in cell.running(g) if i["instance_guid"] not in old]
    assert len(new) == 1
    cell.crash(new[0])
    time.sleep(0.5)
    assert old <= {i["instance_guid"] for i in cell.running(g)}
    d = deployment(ctl, dep["guid"])
    assert d["status"]["value"] == "ACTIVE" and d["state"] == "DEPLOYING"
    # superseded by a newer deployment (to d1 again)
    dep2 = deploy(ctl, g, d1).json()
    d = deployment(ctl, dep["guid"])
    assert (d["status"]["value"], d["status"]["reason"]) == ("FINALIZED", "SUPERSEDED")
    assert dep2["previous_droplet"] == {"guid": d2}
    # cancel: back to the previous droplet (d2) and version; the old instances were never stopped
    r = ctl.api("POST", f"/v3/deployments/{dep2['guid']}/actions/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"]["reason"] in ("CANCELING", "CANCELED")
    cell.hold = False
    for i in list(cell.running(g)):
        if i["state"] == "STARTING":
            cell.make_running(i["instance_guid"])
    wait_for(lambda: deployment(ctl, dep2["guid"])["status"]["reason"] == "CANCELED", timeout=20,
             what="the cancel to finish")
    d = deployment(ctl, dep2["guid"])
    assert (d["state"], d["status"]["value"]) == ("CANCELED", "FINALIZED")
    assert ctl.api("GET", f"/v3/apps/{g}/droplets/current").json()["guid"] == d2
    wait_for(lambda: len([i for i in cell.running(g) if i["state"] == "RUNNING"]) == 2, what="2 instances")
    r = ctl.api("POST", f"/v3/deployments/{dep2['guid']}/actions/cancel")
    assert r.status_code == 422, r.text
    types = [e["type"] for e in ctl.api("GET", f"/v3/audit_events?target_guids={g}").json()["resources"]]
    assert "audit.app.deployment.cancel" in types

    # errors
    r = deploy(ctl, g, "no-such-droplet")
    assert r.status_code == 422 and "droplet" in errors(r)["detail"], r.text
    r = ctl.api("POST", "/v3/deployments", json={"strategy": "blue", "relationships": {"app": {"data": {"guid": g}}}})
    assert r.status_code == 422
    r = ctl.api("POST", "/v3/deployments", json={"strategy": "rolling"})
    assert r.status_code == 422
    assert deploy(ctl, "no-such-app").status_code == 404
    assert ctl.api("GET", "/v3/deployments/nope").status_code == 404
    r = ctl.api("POST", f"/v3/apps/{g}/actions/stop")
    assert r.status_code == 200
    r = deploy(ctl, g)
    assert r.status_code == 422 and errors(r)["detail"] == "Cannot create deployment for a STOPPED app.", r.text
    assert ctl.api("POST", f"/v3/apps/{g}/actions/start").status_code == 200
    set_flag(ctl, False)
    r = deploy(ctl, g)
    assert r.status_code == 403 and errors(r)["code"] == 330002, r.text
    set_flag(ctl, True)
    # roles: an auditor may read (403 on create), a user of another space sees nothing (404)
    for u in ("aud2", "other"):
        assert ctl.api("POST", "/v3/users", json={"username": u, "password": "pw-" + u + "-123"}).status_code == 201
    r = ctl.api("POST", "/v3/roles", json={"type": "space_auditor", "relationships": {
        "user": {"data": {"username": "aud2"}}, "space": {"data": {"guid": space_guid(ctl)}}}})
    assert r.status_code == 201, r.text
    org = ctl.api("GET", "/v3/organizations").json()["resources"][0]["guid"]
    sp2 = ctl.api("POST", "/v3/spaces", json={"name": "s2", "relationships": {
        "organization": {"data": {"guid": org}}}}).json()["guid"]
    r = ctl.api("POST", "/v3/roles", json={"type": "space_developer", "relationships": {
        "user": {"data": {"username": "other"}}, "space": {"data": {"guid": sp2}}}})
    assert r.status_code == 201, r.text

    def tok(u):
        return requests.post(ctl.url + "/oauth/token", data={"grant_type": "password", "username": u,
                                                             "password": "pw-" + u + "-123"}).json()["access_token"]
    aud, other = tok("aud2"), tok("other")
    assert deploy(ctl, g, token=aud).status_code == 403
    assert ctl.api("GET", f"/v3/deployments/{dep['guid']}", token=aud).status_code == 200
    assert ctl.api("POST", f"/v3/deployments/{dep['guid']}/actions/cancel", token=aud).status_code == 403
    assert deploy(ctl, g, token=other).status_code == 404
    assert ctl.api("GET", f"/v3/deployments/{dep['guid']}", token=other).status_code == 404
    assert ctl.api("GET", "/v3/deployments", token=other).json()["resources"] == []


# --- the real cell and router (berth up), driven through the API only (no CLI) -------------------------------

from berthplatform import app_images, parse_environ, plat  # noqa: E402,F401


def test_real_cell_push_via_api(plat, app_images):
    assert plat.api("PATCH", "/v3/feature_flags/diego_docker", json={"enabled": True}).status_code == 200
    sp = plat.api_json("GET", "/v3/spaces?names=default")["resources"][0]["guid"]
    dom = plat.api_json("GET", "/v3/domains")["resources"][0]["guid"]
    app = plat.api_json("POST", "/v3/apps", status=201, json={
        "name": "apiweb", "relationships": {"space": {"data": {"guid": sp}}},
        "lifecycle": {"type": "docker", "data": {}}, "environment_variables": {"GREET": "hi"}})
    g = app["guid"]
    pkg = plat.api_json("POST", "/v3/packages", status=201, json={
        "type": "docker", "data": {"image": app_images["ports"]}, "relationships": {"app": {"data": {"guid": g}}}})
    b = plat.api_json("POST", "/v3/builds", status=201, json={"package": {"guid": pkg["guid"]}})
    plat.api_json("PATCH", f"/v3/apps/{g}/relationships/current_droplet",
                  json={"data": {"guid": b["droplet"]["guid"]}})
    route = plat.api_json("POST", "/v3/routes", status=201, json={"host": "apiweb", "relationships": {
        "space": {"data": {"guid": sp}}, "domain": {"data": {"guid": dom}}}})
    plat.api_json("POST", f"/v3/routes/{route['guid']}/destinations",
                  json={"destinations": [{"app": {"guid": g}}]})
    # 502 until the cell has registered
    wait_for(lambda: plat.api("POST", f"/v3/apps/{g}/actions/start").status_code == 200, timeout=30,
             what="the app started (the cell registered)")
    r = plat.wait_route("apiweb", "/cgi-bin/env", timeout=90)
    env = parse_environ(r.content)
    assert env["PORT"] == "7000" and env["GREET"] == "hi" and env["MEMORY_LIMIT"] == "256m"
    va = json.loads(env["VCAP_APPLICATION"])
    assert va["application_name"] == "apiweb" and va["uris"] == ["apiweb." + plat.domain]
    assert env["CF_INSTANCE_INDEX"] == "0"
    st = plat.api_json("GET", f"/v3/apps/{g}/processes/web/stats")["resources"]
    assert st[0]["state"] == "RUNNING" and st[0]["usage"]["mem"] > 0
    # flag off: the route loses its endpoint within 5 s
    assert plat.api("PATCH", "/v3/feature_flags/diego_docker", json={"enabled": False}).status_code == 200
    wait_for(lambda: plat.route_get("apiweb").status_code == 503, timeout=8, what="no endpoints after flag off")
    assert plat.api("PATCH", "/v3/feature_flags/diego_docker", json={"enabled": True}).status_code == 200
    plat.wait_route("apiweb", "/", timeout=90)


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-cq"], input=data, capture_output=True, check=True).stdout


def test_internal_logs_take_zstd_bodies(ctl, cell):
    """The routers' access log POSTs come zstd-compressed (Content-Encoding: zstd): their lines land in the
    app's RTR logs, from one frame or several. A body that is not zstd or ends inside a frame is 400, one that
    decodes to over 1 MiB is 413, another coding is 415; none of them stores anything."""
    set_flag(ctl, True)
    g = create_app(ctl, name="zlog")["guid"]
    hdr = {"Authorization": "Bearer " + ctl.internal_token(), "Content-Type": "application/json"}

    def post(body, enc):
        return requests.post(f"{ctl.url}/internal/v1/logs", data=body, headers={**hdr, "Content-Encoding": enc},
                             timeout=10)

    def line(msg, s):
        return {"app_guid": g, "timestamp": f"2026-11-29T18:00:0{s}.000000000Z", "message": msg}

    def rtr():
        logs = ctl.api("GET", f"/v3/apps/{g}/logs?lines=100").json()["resources"]
        return [l["message"] for l in logs if l["source_type"] == "RTR"]

    plain = json.dumps({"lines": [line("refused", 0)]}).encode()
    r = post(plain, "zstd")
    assert r.status_code == 400 and errors(r)["code"] == 1001 and "zstd body is not valid" in errors(r)["detail"]
    r = post(_zstd(plain)[:-4], "zstd")
    assert r.status_code == 400 and "ends inside a zstd frame" in errors(r)["detail"], r.text
    assert post(b"", "zstd").status_code == 400
    bomb = _zstd(json.dumps({"lines": [line("x" * 2_000_000, 0)]}).encode())
    assert len(bomb) < 10_000
    r = post(bomb, "zstd")
    assert r.status_code == 413 and "more than 1048576 bytes" in errors(r)["detail"], r.text
    r = post(gzip.compress(plain), "gzip")
    assert r.status_code == 415 and r.headers.get("Accept-Encoding") == "zstd", r.text
    assert "gzip is not supported" in errors(r)["detail"]
    assert rtr() == []

    r = post(_zstd(json.dumps({"lines": [line("one", 1), line("two", 2)]}).encode()), "zstd")
    assert r.status_code == 202 and r.json() == {"accepted": 2}, r.text
    r = post(_zstd(b'{"lines":[') + _zstd(json.dumps(line("three", 3)).encode() + b"]}"), "zstd")
    assert r.status_code == 202 and r.json() == {"accepted": 1}, r.text
    r = post(json.dumps({"lines": [line("four", 4)]}).encode(), "identity")
    assert r.status_code == 202 and r.json() == {"accepted": 1}, r.text
    assert rtr() == ["one", "two", "three", "four"]
