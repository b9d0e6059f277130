"""The controller's core API on its own (`berth controller`, no cell, no router): first start, tokens,
users, orgs, spaces, roles and what each role may see or do, feature flags, pagination, bad input, restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest
import requests

import berthcli

START_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Controller:
    def __init__(self, work: str):
        self.work = work
        self.data_dir = os.path.join(work, "data")
        self.token_file = os.path.join(work, "internal-token")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log_path = os.path.join(work, "controller.log")

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
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("controller did not answer:\n" + self.log())

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

    def admin_password(self) -> str:
        with open(os.path.join(self.data_dir, "admin-password")) as f:
            return f.read().strip()

    def token(self, user: str, password: str) -> str:
        r = requests.post(self.url + "/oauth/token",
                          data={"grant_type": "password", "username": user, "password": password})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def api(self, method: str, path: str, token: str | None = None, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = "bearer " + token
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)


@pytest.fixture
def ctl():
    if not berthcli.berth_available():
        pytest.skip("build/berth not built")
    work = tempfile.mkdtemp(prefix="berth-apicore-")
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


def errors(r):
    return r.json()["errors"][0]


def test_first_start(ctl):
    st = os.stat(os.path.join(ctl.data_dir, "admin-password"))
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ctl.token_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(ctl.data_dir, "controller")).st_mode) == 0o700
    key = os.path.join(ctl.data_dir, "controller", "encryption.key")
    assert os.path.getsize(key) == 32 and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert "admin password in" in ctl.log()
    tok = ctl.token("admin", ctl.admin_password())
    orgs = ctl.api("GET", "/v3/organizations", tok).json()["resources"]
    assert [o["name"] for o in orgs] == ["default"]
    spaces = ctl.api("GET", "/v3/spaces", tok).json()["resources"]
    assert [s["name"] for s in spaces] == ["default"]
    assert spaces[0]["relationships"]["organization"]["data"]["guid"] == orgs[0]["guid"]
    flag = ctl.api("GET", "/v3/feature_flags/diego_docker", tok).json()
    assert flag["enabled"] is False and flag["name"] == "diego_docker"
    doms = ctl.api("GET", "/v3/domains", tok).json()["resources"]
    assert [d["name"] for d in doms] == ["apps.test"]
    root = ctl.api("GET", "/").json()
    assert root["links"]["cloud_controller_v3"]["href"] == ctl.url + "/v3"


def test_tokens(ctl):
    r = requests.post(ctl.url + "/oauth/token",
                      data={"grant_type": "password", "username": "admin", "password": "wrong"})
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized", "error_description": "Bad credentials"}
    r = requests.post(ctl.url + "/oauth/token",
                      data={"grant_type": "password", "username": "nobody", "password": "x"})
    assert r.status_code == 401
    r = requests.post(ctl.url + "/oauth/token", auth=("cf", ""),
                      data={"grant_type": "password", "username": "admin", "password": ctl.admin_password()})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0 and body["refresh_token"]
    assert ctl.api("GET", "/v3/organizations").status_code == 401
    assert errors(ctl.api("GET", "/v3/organizations"))["code"] == 10002
    r = ctl.api("GET", "/v3/organizations", "not-a-token")
    assert r.status_code == 401 and errors(r)["code"] == 1000
    assert ctl.api("GET", "/v3/organizations", body["access_token"]).status_code == 200
    # Refresh, then logout revokes.
    r = requests.post(ctl.url + "/oauth/token",
                      data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert r.status_code == 200
    new = r.json()["access_token"]
    assert new != body["access_token"]
    assert ctl.api("GET", "/v3/organizations", new).status_code == 200
    assert ctl.api("DELETE", "/oauth/token", new).status_code == 204
    assert ctl.api("GET", "/v3/organizations", new).status_code == 401


def make_user(ctl, admin, name, pw="pw-" + "x"):
    r = ctl.api("POST", "/v3/users", admin, json={"username": name, "password": pw})
    assert r.status_code == 201, r.text
    return r.json()["guid"], ctl.token(name, pw)


def test_users_orgs_spaces_roles(ctl):
    admin = ctl.token("admin", ctl.admin_password())
    alice, atok = make_user(ctl, admin, "alice")
    r = ctl.api("POST", "/v3/users", admin, json={"username": "alice", "password": "p"})
    assert r.status_code == 422 and errors(r)["code"] == 10016
    assert ctl.api("POST", "/v3/users", atok, json={"username": "eve", "password": "p"}).status_code == 403
    assert ctl.api("GET", f"/v3/users/{alice}", admin).json()["username"] == "alice"

    org = ctl.api("POST", "/v3/organizations", admin, json={"name": "acme"}).json()
    assert ctl.api("PATCH", f"/v3/organizations/{org['guid']}", admin,
                   json={"name": "acme2"}).json()["name"] == "acme2"
    s1 = ctl.api("POST", "/v3/spaces", admin, json={
        "name": "dev", "relationships": {"organization": {"data": {"guid": org["guid"]}}}}).json()
    s2 = ctl.api("POST", "/v3/spaces", admin, json={
        "name": "prod", "relationships": {"organization": {"data": {"guid": org["guid"]}}}}).json()
    r = ctl.api("POST", "/v3/spaces", admin, json={
        "name": "dev", "relationships": {"organization": {"data": {"guid": org["guid"]}}}})
    assert r.status_code == 422 and errors(r)["code"] == 10016

    # alice sees nothing until she has a role.
    assert ctl.api("GET", "/v3/organizations", atok).json()["resources"] == []
    assert ctl.api("GET", f"/v3/spaces/{s1['guid']}", atok).status_code == 404
    role = ctl.api("POST", "/v3/roles", admin, json={
        "type": "space_developer", "relationships": {
            "user": {"data": {"username": "alice"}}, "space": {"data": {"guid": s1["guid"]}}}})
    assert role.status_code == 201, role.text
    assert role.json()["relationships"]["space"]["data"]["guid"] == s1["guid"]
    # A space role implies organization_user.
    types = {x["type"] for x in ctl.api("GET", f"/v3/roles?user_guids={alice}", admin).json()["resources"]}
    assert types == {"space_developer", "organization_user"}
    assert [o["name"] for o in ctl.api("GET", "/v3/organizations", atok).json()["resources"]] == ["acme2"]
    assert [s["name"] for s in ctl.api("GET", "/v3/spaces", atok).json()["resources"]] == ["dev"]
    # The developer cannot see the other space (404, not 403) nor the default org.
    assert ctl.api("GET", f"/v3/spaces/{s2['guid']}", atok).status_code == 404
    # Nor manage roles of its own space.
    r = ctl.api("POST", "/v3/roles", atok, json={
        "type": "space_developer", "relationships": {
            "user": {"data": {"guid": alice}}, "space": {"data": {"guid": s2["guid"]}}}})
    assert r.status_code == 422  # the space is invisible to her
    # An auditor cannot write.
    bob, btok = make_user(ctl, admin, "bob")
    assert ctl.api("POST", "/v3/roles", admin, json={
        "type": "space_auditor", "relationships": {
            "user": {"data": {"guid": bob}}, "space": {"data": {"guid": s1["guid"]}}}}).status_code == 201
    assert ctl.api("GET", f"/v3/spaces/{s1['guid']}", btok).status_code == 200
    r = ctl.api("PATCH", f"/v3/spaces/{s1['guid']}", btok, json={"name": "hacked"})
    assert r.status_code == 403 and errors(r)["code"] == 10003
    r = ctl.api("DELETE", f"/v3/spaces/{s1['guid']}", btok)
    assert r.status_code == 403
    # Role delete, space delete, org delete (recursive).
    assert ctl.api("DELETE", f"/v3/roles/{role.json()['guid']}", admin).status_code == 202
    assert ctl.api("GET", f"/v3/spaces/{s1['guid']}", atok).status_code == 404
    assert ctl.api("DELETE", f"/v3/spaces/{s2['guid']}", admin).status_code == 202
    assert ctl.api("GET", f"/v3/spaces/{s2['guid']}", admin).status_code == 404
    assert ctl.api("DELETE", f"/v3/organizations/{org['guid']}", admin).status_code == 202
    assert ctl.api("GET", f"/v3/spaces/{s1['guid']}", admin).status_code == 404
    assert ctl.api("DELETE", f"/v3/users/{bob}", admin).status_code == 202
    assert ctl.api("GET", "/v3/organizations", btok).status_code == 401


def test_feature_flags(ctl):
    admin = ctl.token("admin", ctl.admin_password())
    _, utok = make_user(ctl, admin, "carol")
    r = ctl.api("PATCH", "/v3/feature_flags/diego_docker", utok, json={"enabled": True})
    assert r.status_code == 403
    r = ctl.api("PATCH", "/v3/feature_flags/diego_docker", admin, json={"enabled": True})
    assert r.status_code == 200 and r.json()["enabled"] is True
    assert ctl.api("GET", "/v3/feature_flags/diego_docker", utok).json()["enabled"] is True
    r = ctl.api("PATCH", "/v3/feature_flags/nope", admin, json={"enabled": True})
    assert r.status_code == 404 and errors(r)["detail"] == "Feature flag not found"
    names = {f["name"] for f in ctl.api("GET", "/v3/feature_flags?per_page=100", utok).json()["resources"]}
    assert {"diego_docker", "app_scaling", "route_creation", "env_var_visibility", "user_org_creation"} <= names
    ev = ctl.api("GET", "/v3/audit_events?types=audit.feature_flag.update", admin).json()["resources"]
    assert len(ev) == 1 and ev[0]["target"]["name"] == "diego_docker" and ev[0]["actor"]["name"] == "admin"


def test_pagination(ctl):
    admin = ctl.token("admin", ctl.admin_password())
    for i in range(7):
        assert ctl.api("POST", "/v3/organizations", admin, json={"name": f"org{i}"}).status_code == 201
    seen = []
    url = "/v3/organizations?per_page=3&names=" + ",".join(f"org{i}" for i in range(7))
    pages = 0
    while url:
        body = ctl.api("GET", url, admin).json()
        pages += 1
        p = body["pagination"]
        assert p["total_results"] == 7 and p["total_pages"] == 3
        assert p["first"]["href"].startswith(ctl.url + "/v3/organizations?page=1&per_page=3")
        assert "names=org0" in p["last"]["href"] and "page=3" in p["last"]["href"]
        assert (p["previous"] is None) == (pages == 1)
        seen += [o["name"] for o in body["resources"]]
        url = p["next"]["href"][len(ctl.url):] if p["next"] else None
    assert pages == 3 and seen == [f"org{i}" for i in range(7)]
    desc = ctl.api("GET", "/v3/organizations?order_by=-name&per_page=2", admin).json()
    assert [o["name"] for o in desc["resources"]] == ["org6", "org5"]
    r = ctl.api("GET", "/v3/organizations?page=0", admin)
    assert r.status_code == 400 and errors(r)["code"] == 10005


def test_bad_input_changes_nothing(ctl):
    admin = ctl.token("admin", ctl.admin_password())
    before = ctl.api("GET", "/v3/organizations", admin).json()["pagination"]["total_results"]
    r = ctl.api("POST", "/v3/organizations", admin, data="{bad json",
                headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and errors(r)["title"] == "CF-MessageParseError"
    # JSON whatever the Content-Type claims (curl -d sends a form type).
    r = ctl.api("POST", "/v3/organizations", admin, data='{"name":"x"',
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and errors(r)["code"] == 1001
    for name in ["", "x" * 256, 42]:
        r = ctl.api("POST", "/v3/organizations", admin, json={"name": name})
        assert r.status_code == 422 and errors(r)["title"] == "CF-UnprocessableEntity", r.text
    r = ctl.api("POST", "/v3/users", admin, json={"username": "has space", "password": "p"})
    assert r.status_code == 422
    r = ctl.api("POST", "/v3/domains", admin, json={"name": "not a domain"})
    assert r.status_code == 422
    assert ctl.api("GET", "/v3/organizations", admin).json()["pagination"]["total_results"] == before
    assert ctl.api("GET", "/v3/nothing", admin).status_code == 404
    r = ctl.api("PUT", "/v3/organizations", admin, json={})
    assert r.status_code == 405 and errors(r)["title"] == "CF-NotFound"


def test_restart_keeps_data(ctl):
    pw = ctl.admin_password()
    admin = ctl.token("admin", pw)
    assert ctl.api("POST", "/v3/organizations", admin, json={"name": "kept"}).status_code == 201
    ctl.stop()
    ctl.start()
    assert ctl.admin_password() == pw
    assert ctl.log().count("admin password in") == 1
    admin = ctl.token("admin", pw)
    names = [o["name"] for o in ctl.api("GET", "/v3/organizations", admin).json()["resources"]]
    assert names == ["default", "kept"]
