"""The platform CLI against a tiny fake API (no controller needed): usage errors, login, error details,
--json passthrough and push's request sequence with the docker password kept out of the output."""
import json
import os
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from berthcli import BERTH_BIN

GUID = "11111111-1111-4111-8111-111111111111"


class FakeAPI:
    def __init__(self):
        self.requests = []  # (method, path, body text)
        self.flag_disabled = False
        api = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _do(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                api.requests.append((self.command, self.path, body))
                code, resp = api.answer(self.command, self.path, body)
                data = json.dumps(resp).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _do

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def answer(self, method, path, body):
        res = {"guid": GUID, "name": "default", "state": "STOPPED"}
        if path == "/oauth/token":
            if "password=secret" not in body:
                return 401, {"error": "unauthorized", "error_description": "Bad credentials"}
            return 200, {"access_token": "tok", "refresh_token": "ref", "token_type": "bearer"}
        if path.startswith("/v3/apps?names=nope") or path.startswith("/v3/apps?names=new"):
            return 200, {"resources": []}
        if method == "POST" and path == "/v3/apps" and self.flag_disabled:
            return 403, {"errors": [{"code": 330002, "title": "CF-FeatureDisabled",
                                     "detail": "Feature Disabled: diego_docker"}]}
        if path.startswith("/v3/routes?"):
            return 200, {"resources": []}
        if path.endswith("/stats"):
            return 200, {"resources": [{"index": 0, "state": "RUNNING"}]}
        if path == "/v3/builds":
            return 201, {"guid": GUID, "state": "STAGED", "droplet": {"guid": GUID}}
        if method == "GET" and "?" in path or path in ("/v3/organizations", "/v3/domains"):
            return 200, {"pagination": {"total_results": 1}, "resources": [res]}
        return 200 if method != "POST" else 201, res

    def close(self):
        self.srv.shutdown()


def run(home, *args, env=None):
    e = dict(os.environ, BERTH_HOME=str(home))
    e.pop("CF_DOCKER_PASSWORD", None)
    e.pop("BERTH_DOCKER_PASSWORD", None)
    e.update(env or {})
    return subprocess.run([BERTH_BIN, *args], capture_output=True, text=True, env=e, stdin=subprocess.DEVNULL,
                          timeout=30)


@pytest.fixture
def api():
    a = FakeAPI()
    yield a
    a.close()


@pytest.fixture
def logged_in(api, tmp_path):
    r = run(tmp_path, "login", "-a", api.url, "-u", "admin", "-p", "secret")
    assert r.returncode == 0, r.stderr
    api.requests.clear()
    return tmp_path


def test_login_config_0600_without_password(api, tmp_path):
    r = run(tmp_path, "login", "-a", api.url, "-u", "admin", "-p", "secret")
    assert r.returncode == 0, r.stderr
    m, p, body = api.requests[0]
    assert (m, p) == ("POST", "/oauth/token")
    assert "grant_type=password" in body and "username=admin" in body
    cfg = tmp_path / "config.json"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    text = cfg.read_text()
    assert "secret" not in text
    c = json.loads(text)
    assert c["access_token"] == "tok" and c["org"]["name"] == "default" and c["space"]["guid"] == GUID


def test_login_bad_credentials(api, tmp_path):
    r = run(tmp_path, "login", "-a", api.url, "-u", "admin", "-p", "wrong")
    assert r.returncode == 1
    assert r.stderr.startswith("berth: ")


@pytest.mark.parametrize("args", [
    ["push", "x", "--docker-image", "r/x:1", "-m", "12Q"],
    ["push", "x", "--docker-image", "r/x:1", "-k", "1T"],
    ["push", "x", "--docker-image", "r/x:1", "-i", "-1"],
    ["push", "x", "--docker-image", "r/x:1", "-u", "tcp"],
    ["push", "x"],
    ["login", "-a", "http://x"],
])
def test_usage_errors_send_nothing(logged_in, api, args):
    r = run(logged_in, *args)
    assert r.returncode == 2, r.stderr
    assert api.requests == []


def test_api_error_detail(logged_in, api):
    r = run(logged_in, "start", "nope")
    assert r.returncode == 1
    assert r.stderr.strip() == "berth: App 'nope' not found."


def test_json_passthrough(logged_in, api):
    r = run(logged_in, "orgs", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["resources"][0]["guid"] == GUID


def test_push_sequence_password_only_in_body(logged_in, api):
    r = run(logged_in, "push", "new", "--docker-image", "r/x:1", "--docker-username", "u", "-m", "1G", "-i", "2",
            env={"CF_DOCKER_PASSWORD": "hunter2"})
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    seq = [(m, p.split("?")[0]) for m, p, _ in api.requests]
    assert ("POST", "/v3/apps") in seq
    pkg = [b for m, p, b in api.requests if p == "/v3/packages"][0]
    assert json.loads(pkg)["data"]["password"] == "hunter2"
    scale = [json.loads(b) for m, p, b in api.requests if p.endswith("/actions/scale")][0]
    assert scale == {"instances": 2, "memory_in_mb": 1024}
    assert seq.index(("POST", "/v3/builds")) < seq.index(("POST", "/v3/apps/%s/actions/start" % GUID))


def test_push_feature_disabled(logged_in, api):
    api.flag_disabled = True
    r = run(logged_in, "push", "new", "--docker-image", "r/x:1")
    assert r.returncode == 1
    assert "berth: For application 'new': Feature Disabled: diego_docker" in r.stderr
