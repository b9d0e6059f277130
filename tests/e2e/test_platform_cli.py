"""The platform CLI end to end against a real ``berth up`` (issues 4 and 5): ``push -f`` with cf manifests
(several apps, APP selecting one, flags over manifest values), ``logs`` following, the role and route
commands, ``delete -r``, ``app`` with crashed instances and CPU usage, rolling restarts and pushes, and the
API over TLS. Each command's human output, its ``--json`` output and its errors (non-zero exit, nothing
changed).

One ``berth up`` for the module (diego_docker enabled once); every test uses apps of its own names.
"""

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import requests

import berthcli
import helpers
from berthplatform import app_images, enable_docker, plat  # noqa: F401 (fixtures)


@pytest.fixture(scope="module", autouse=True)
def docker_on(plat):
    enable_docker(plat)


def write(tmp_path, text, name="manifest.yml"):
    m = tmp_path / name
    m.write_text(text)
    return str(m)


# --- push -f manifest.yml ---------------------------------------------------------------------------------

def test_manifest_several_apps_in_order(plat, app_images, tmp_path):
    m = write(tmp_path, f"""---
applications:
- name: mf-one
  docker:
    image: {app_images['web']}
  buildpacks: [ignored]
  env:
    WHO: one
    COUNT: 3
  routes:
  - route: mf-one-r.apps.localhost
- name: mf-two
  docker:
    image: {app_images['web']}
  instances: 0
  no-route: true
  random-route: true
""")
    r = plat.cli("push", "-f", m)
    assert r.stdout.index("Pushing app mf-one") < r.stdout.index("Pushing app mf-two")
    assert "unknown key 'buildpacks' ignored" in r.stderr
    assert "random-route: not supported, ignored" in r.stderr
    env = plat.instance_env("mf-one-r")
    assert env["WHO"] == "one" and env["COUNT"] == "3"
    assert plat.cli_json("env", "mf-one")["environment_variables"] == {"WHO": "one", "COUNT": "3"}
    two = plat.app("mf-two")
    assert two["process"]["instances"] == 0 and two["routes"] == []
    assert [x["url"] for x in plat.app("mf-one")["routes"]] == ["mf-one-r.apps.localhost"]


def test_manifest_app_selected_and_flags_override(plat, app_images, tmp_path):
    m = write(tmp_path, f"""applications:
- name: mf-sel-a
  docker:
    image: {app_images['web']}
- name: mf-sel-b
  docker:
    image: {app_images['web']}
  instances: 1
  memory: 64M
  command: exec start-web from-manifest
  env:
    KEEP: manifest
""")
    plat.cli("push", "mf-sel-b", "-f", m, "-i", "2", "-m", "96M", "-c", "exec start-web from-flag")
    assert "mf-sel-a" not in plat.app_names(), "APP selects one app of the manifest"
    d = plat.app("mf-sel-b")
    assert d["process"]["instances"] == 2
    assert d["process"]["memory_in_mb"] == 96
    assert d["process"]["command"] == "exec start-web from-flag"
    assert plat.instance_env("mf-sel-b")["KEEP"] == "manifest"
    assert plat.route_get("mf-sel-b", "/cgi-bin/argv").text.strip() == "/bin/start-web from-flag"
    # a second push with the manifest alone changes env of an existing app too
    m2 = write(tmp_path, f"""applications:
- name: mf-sel-b
  docker:
    image: {app_images['web']}
  env:
    KEEP: second
""", "m2.yml")
    plat.cli("push", "-f", m2, "--no-start")
    assert plat.cli_json("env", "mf-sel-b")["environment_variables"]["KEEP"] == "second"


def test_manifest_health_check_and_limits(plat, app_images, tmp_path):
    m = write(tmp_path, f"""applications:
- name: mf-hc
  docker:
    image: {app_images['web']}
  memory: 96M
  disk_quota: 512M
  health-check-type: http
  health-check-http-endpoint: /index.html
  timeout: 45
""")
    plat.cli("push", "-f", m)
    proc = plat.app("mf-hc")["process"]
    assert proc["health_check"]["type"] == "http"
    assert proc["health_check"]["data"]["endpoint"] == "/index.html"
    assert proc["health_check"]["data"]["timeout"] == 45
    assert (proc["memory_in_mb"], proc["disk_in_mb"]) == (96, 512)
    plat.wait_route("mf-hc")
    # the flag wins over the manifest's health check
    plat.cli("push", "-f", m, "-u", "port")
    assert plat.app("mf-hc")["process"]["health_check"]["type"] == "port"


def test_default_route_from_app_name(plat, app_images):
    plat.push("Under_Score.App", app_images["web"], "-i", "0")
    assert [r["url"] for r in plat.app("Under_Score.App")["routes"]] == ["under-score-app.apps.localhost"]
    r = plat.push("hn-bad", app_images["web"], "--hostname", "no.dots", check=False)
    assert r.returncode == 1 and "host name 'no.dots' is not a DNS label" in r.stderr
    assert "hn-bad" not in plat.app_names()


def test_push_json(plat, app_images, tmp_path):
    r = plat.cli("push", "pj-one", "--docker-image", app_images["web"], "--json")
    doc = json.loads(r.stdout)
    assert doc["app"]["name"] == "pj-one" and doc["process"]["instances"] == 1
    assert any(i["state"] == "RUNNING" for i in doc["instances"])
    assert "Pushing app pj-one" in r.stderr, "progress goes to stderr with --json"
    m = write(tmp_path, f"""applications:
- name: pj-a
  docker:
    image: {app_images['web']}
  instances: 0
- name: pj-b
  docker:
    image: {app_images['web']}
  instances: 0
""")
    docs = json.loads(plat.cli("push", "-f", m, "--json").stdout)
    assert [d["app"]["name"] for d in docs] == ["pj-a", "pj-b"]


def test_manifest_errors_change_nothing(plat, app_images, tmp_path):
    m = write(tmp_path, f"""applications:
- name: mf-err-a
  docker:
    image: {app_images['web']}
- name: mf-err-b
  docker:
    image: {app_images['web']}
""")
    before = plat.app_names()
    r = plat.cli("push", "nope", "-f", m, check=False)
    assert r.returncode == 1 and "Could not find app named 'nope' in manifest" in r.stderr
    r = plat.cli("push", "-f", m, "-i", "2", check=False)
    assert r.returncode == 2 and "cannot be applied when pushing multiple apps" in r.stderr
    r = plat.cli("push", "-f", str(tmp_path / "missing.yml"), check=False)
    assert r.returncode == 1 and "missing.yml" in r.stderr
    r = plat.cli("push", "mf-err-a", "-f", m, "--strategy", "blue-green", check=False)
    assert r.returncode == 2 and "usage" in r.stderr
    assert plat.app_names() == before


# --- logs ---------------------------------------------------------------------------------------------------

TICKER = "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done & exec start-web"
LOG_LINE = (r"^   \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d\d\+0000 \[(?:APP/PROC/WEB|CELL|RTR|API|STG)/(\d+)\] "
            r"(OUT|ERR) (.*)$")


class Follower:
    """``berth logs APP [--json]`` in the background; ``lines`` collects its stdout."""

    def __init__(self, plat, *args):
        env = dict(os.environ, BERTH_HOME=plat.home)
        self.proc = subprocess.Popen([berthcli.BERTH_BIN, "logs", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, pred, what, timeout=30):
        return helpers.wait_for(lambda: pred(list(self.lines)), timeout=timeout, what=what, interval=0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(10)
        self.t.join(5)
        return rc, self.proc.stderr.read()


def ticks(lines):
    import re
    out = []
    for l in lines:
        m = re.match(LOG_LINE, l)
        if m and m.group(3).startswith("tick-"):
            out.append(int(m.group(3)[5:]))
    return out


def controller_pids(plat):
    pids = []
    for c in os.listdir("/proc"):
        if not c.isdigit():
            continue
        try:
            with open(f"/proc/{c}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"controller" in argv and any(plat.data_dir.encode() in a for a in argv) and b"up" not in argv:
            pids.append(int(c))
    return pids


def test_logs_recent_human_and_json(plat, app_images):
    import re
    plat.push("lg-recent", app_images["web"], "-c", TICKER)
    helpers.wait_for(lambda: len(ticks(plat.cli("logs", "lg-recent", "--recent").stdout.splitlines())) >= 3,
                     timeout=20, what="three ticks in the recent logs")
    out = plat.cli("logs", "lg-recent", "--recent").stdout.splitlines()
    assert out[0].startswith("Retrieving logs for app lg-recent in org default / space default as admin...")
    entries = [l for l in out[2:] if l]
    assert entries and all(re.match(LOG_LINE, l) for l in entries), entries
    assert any("start-web: uid 0 (root)" in l for l in entries)
    doc = plat.cli_json("logs", "lg-recent", "--recent")
    assert {"timestamp", "source_type", "instance_index", "message_type", "message"} <= set(doc["resources"][0])
    r = plat.cli("logs", "no-such-app", "--recent", check=False)
    assert r.returncode == 1 and "App 'no-such-app' not found" in r.stderr


def test_logs_follow_across_restart_and_controller_restart(plat, app_images):
    plat.push("lg-follow", app_images["web"], "-c", TICKER)
    f = Follower(plat, "lg-follow")
    try:
        # recent lines first, then new ones live
        f.wait(lambda ls: len(ticks(ls)) >= 2, "the first ticks")
        first = max(ticks(f.lines))
        f.wait(lambda ls: max(ticks(ls)) >= first + 5, "live ticks")
        # a restart: the new instance's lines follow (its start line, ticks from 1 again)
        n_start = sum("start-web: uid" in l for l in f.lines)
        plat.cli("restart", "lg-follow")
        f.wait(lambda ls: sum("start-web: uid" in l for l in ls) > n_start, "the restarted instance's lines")
        # the controller dies (berth up restarts it): the CLI reconnects and goes on without repeating lines
        pids = controller_pids(plat)
        assert len(pids) == 1, pids
        n = len(f.lines)
        os.kill(pids[0], signal.SIGKILL)
        f.wait(lambda ls: len(ticks(ls[n:])) >= 5, "ticks after the controller restarted", timeout=60)
        assert f.proc.poll() is None
    finally:
        rc, err = f.stop()
    assert rc == 0, err
    entries = [l for l in f.lines if l.startswith("   ")]
    assert len(entries) == len(set(entries)), "no line printed twice"
    # (Order across instances is the controller's: it may deliver a stopping instance's last line after a
    # newer one of its successor; the CLI prints what a stream sends as it comes.)


def test_logs_follow_ends_when_the_app_is_deleted(plat, app_images):
    plat.push("lg-gone", app_images["web"])
    f = Follower(plat, "lg-gone")
    try:
        f.wait(lambda ls: any("start-web: uid" in l for l in ls), "the recent lines")
        plat.cli("delete", "lg-gone", "-f")
        # noticed at the next keep-alive of the stream (10 s without news)
        f.proc.wait(30)
    finally:
        rc, err = f.stop()
    assert rc == 1
    assert "App 'lg-gone' not found (deleted?)" in err


def test_logs_follow_json(plat, app_images):
    plat.push("lg-json", app_images["web"], "-c", TICKER)
    f = Follower(plat, "lg-json", "--json")
    try:
        f.wait(lambda ls: sum('"tick-' in l for l in ls) >= 3, "three ticks as NDJSON")
    finally:
        rc, _ = f.stop()
    assert rc == 0
    docs = [json.loads(l) for l in f.lines if l.strip()]
    assert all(d["source_type"] in ("APP/PROC/WEB", "CELL", "RTR") and d["instance_index"] == 0 for d in docs)
    assert any(d["source_type"] == "APP/PROC/WEB" and d["message"].startswith("tick-") for d in docs)


# --- spaces, roles, routes, delete -r ------------------------------------------------------------------------

def route_urls(plat):
    return sorted(r["url"] for r in plat.api_json("GET", "/v3/routes?per_page=5000")["resources"])


def space_names(plat):
    return sorted(s["name"] for s in plat.api_json("GET", "/v3/spaces?per_page=5000")["resources"])


def test_create_space_o_before_or_after(plat):
    assert plat.cli("create-space", "cli-sp-after", "-o", "default").stdout.strip().endswith("OK")
    doc = plat.cli_json("create-space", "-o", "default", "cli-sp-before")
    assert doc["name"] == "cli-sp-before"
    org = plat.api_json("GET", "/v3/organizations?names=default")["resources"][0]["guid"]
    assert doc["relationships"]["organization"]["data"]["guid"] == org
    assert {"cli-sp-after", "cli-sp-before"} <= set(space_names(plat))
    before = space_names(plat)
    r = plat.cli("create-space", "cli-sp-after", "-o", "default", check=False)
    assert r.returncode == 1 and "cli-sp-after" in r.stderr, r.stderr
    r = plat.cli("create-space", "x-sp", "-o", "no-such-org", check=False)
    assert r.returncode == 1 and "Organization 'no-such-org' not found." in r.stderr
    r = plat.cli("create-space", check=False)
    assert r.returncode == 2
    assert space_names(plat) == before


def test_space_roles_and_space_users(plat):
    plat.cli("create-space", "cli-roles", "-o", "default")
    plat.cli("create-user", "cli-dev", "cli-dev-pa55")
    plat.cli("create-user", "cli-aud", "cli-aud-pa55")
    r = plat.cli("set-space-role", "cli-dev", "default", "cli-roles", "SpaceDeveloper")
    assert "Assigning role SpaceDeveloper to user cli-dev in org default / space cli-roles" in r.stdout
    role = plat.cli_json("set-space-role", "cli-aud", "default", "cli-roles", "SpaceAuditor")
    assert role["type"] == "space_auditor"
    plat.cli("set-space-role", "cli-dev", "default", "cli-roles", "SpaceAuditor")

    out = plat.cli("space-users", "default", "cli-roles").stdout
    assert out.startswith("Getting users in org default / space cli-roles as admin...")
    assert "\nSPACE MANAGER\n  No space manager found\n" in out
    assert "\nSPACE DEVELOPER\n  cli-dev (uaa)\n" in out
    aud = out.split("SPACE AUDITOR\n")[1].split("\n\n")[0]
    assert sorted(aud.split("\n")) == ["  cli-aud (uaa)", "  cli-dev (uaa)"]
    doc = plat.cli_json("space-users", "default", "cli-roles")
    assert sorted(r["type"] for r in doc["roles"]) == ["space_auditor", "space_auditor", "space_developer"]
    assert sorted(u["username"] for u in doc["users"]) == ["cli-aud", "cli-dev"]

    r = plat.cli("unset-space-role", "cli-dev", "default", "cli-roles", "SpaceDeveloper")
    assert "Removing role SpaceDeveloper from user cli-dev" in r.stdout and r.stdout.strip().endswith("OK")
    out = plat.cli("space-users", "default", "cli-roles").stdout
    assert "\nSPACE DEVELOPER\n  No space developer found\n" in out
    assert "  cli-dev (uaa)" in out, "the auditor role stays"
    # unsetting a role the user does not have is fine (cf's behaviour); --json gives the role deleted
    assert plat.cli_json("unset-space-role", "cli-dev", "default", "cli-roles", "SpaceDeveloper") is None
    removed = plat.cli_json("unset-space-role", "cli-aud", "default", "cli-roles", "SpaceAuditor")
    assert removed["type"] == "space_auditor"

    before = plat.cli_json("space-users", "default", "cli-roles")
    for args, code, says in [
        (["unset-space-role", "nobody", "default", "cli-roles", "SpaceAuditor"], 1, "User 'nobody' not found."),
        (["unset-space-role", "cli-dev", "default", "cli-roles", "SpaceKing"], 2, "usage"),
        (["set-space-role", "cli-dev", "default", "no-space", "SpaceAuditor"], 1, "Space 'no-space' not found."),
        (["space-users", "default", "no-space"], 1, "Space 'no-space' not found."),
        (["space-users", "no-org", "cli-roles"], 1, "Organization 'no-org' not found."),
        (["space-users", "default"], 2, "usage"),
    ]:
        r = plat.cli(*args, check=False)
        assert r.returncode == code and says in r.stderr, (args, r)
    assert plat.cli_json("space-users", "default", "cli-roles") == before


def test_create_and_delete_route(plat):
    r = plat.cli("create-route", "apps.localhost", "--hostname", "cr-one")
    assert "Creating route cr-one.apps.localhost for org default / space default as admin..." in r.stdout
    assert "Route cr-one.apps.localhost has been created." in r.stdout
    doc = plat.cli_json("create-route", "apps.localhost", "--hostname", "cr-two", "--path", "/api")
    assert doc["url"] == "cr-two.apps.localhost/api" and doc["host"] == "cr-two" and doc["path"] == "/api"
    assert {"cr-one.apps.localhost", "cr-two.apps.localhost/api"} <= set(route_urls(plat))
    # a route without app: unknown to the router
    assert plat.route_get("cr-one").status_code == 404

    before = route_urls(plat)
    for args, code, says in [
        (["create-route", "apps.localhost", "--hostname", "cr-one"], 1, "cr-one"),
        (["create-route", "apps.localhost", "--hostname", "Bad Host"], 1, "Host"),
        (["create-route", "no-such.example", "--hostname", "x"], 1, "Domain 'no-such.example' not found."),
        (["create-route", "apps.localhost"], 2, "usage"),
        (["delete-route", "apps.localhost"], 2, "usage"),
        (["delete-route", "no-such.example", "--hostname", "cr-one", "-f"], 1, "Domain 'no-such.example' not found."),
    ]:
        r = plat.cli(*args, check=False)
        assert r.returncode == code and says in r.stderr, (args, r)
    assert route_urls(plat) == before

    r = plat.cli("delete-route", "apps.localhost", "--hostname", "cr-one", "-f")
    assert "Deleting route cr-one.apps.localhost..." in r.stdout and r.stdout.strip().endswith("OK")
    # the path tells two routes of one host apart
    r = plat.cli("delete-route", "apps.localhost", "--hostname", "cr-two", "-f")
    assert "Unable to delete. Route cr-two.apps.localhost not found." in r.stdout
    gone = plat.cli_json("delete-route", "apps.localhost", "--hostname", "cr-two", "--path", "/api", "-f")
    assert gone["url"] == "cr-two.apps.localhost/api"
    urls = route_urls(plat)
    assert "cr-one.apps.localhost" not in urls and "cr-two.apps.localhost/api" not in urls
    assert plat.cli_json("delete-route", "apps.localhost", "--hostname", "cr-one", "-f") is None


def test_delete_app_with_and_without_routes(plat, app_images):
    plat.push("del-r", app_images["web"], "-i", "0")
    plat.cli("map-route", "del-r", "apps.localhost", "--hostname", "del-r-two")
    plat.push("del-keep", app_images["web"], "-i", "0")
    assert {"del-r.apps.localhost", "del-r-two.apps.localhost", "del-keep.apps.localhost"} <= set(route_urls(plat))
    r = plat.cli("delete", "del-r", "-r", "-f")
    assert "Deleting app del-r in org default / space default as admin..." in r.stdout
    assert "Deleting route del-r-two.apps.localhost..." in r.stdout
    assert "del-r" not in plat.app_names()
    urls = route_urls(plat)
    assert "del-r.apps.localhost" not in urls and "del-r-two.apps.localhost" not in urls
    assert "del-keep.apps.localhost" in urls
    # without -r the routes stay; --json gives what was deleted
    doc = plat.cli_json("delete", "del-keep", "-f")
    assert doc["app"]["name"] == "del-keep" and doc["routes"] == []
    assert "del-keep.apps.localhost" in route_urls(plat)
    r = plat.cli("delete", "del-keep", "-f", check=False)
    assert r.returncode == 1 and "App 'del-keep' not found." in r.stderr
    r = plat.cli("delete", "x", "-z", check=False)
    assert r.returncode == 2


# --- app: crashed instances, CPU ----------------------------------------------------------------------------

def test_app_shows_crash_reason_and_last_lines(plat, app_images):
    r = plat.push("cr-view", app_images["crash"], check=False)
    assert r.returncode == 1, r

    def crashed_view():
        out = plat.cli("app", "cr-view").stdout
        rows = [l for l in out.splitlines() if l.startswith("#0 ")]
        return out if rows and " crashed " in rows[0] and "last log lines" in out else None
    out = helpers.wait_for(crashed_view, timeout=60, what="cr-view's instance shown as crashed", interval=0.2)
    row = [l for l in out.splitlines() if l.startswith("#0 ")][0]
    assert "exited with status 3" in row and "(crashed " in row, row
    tail = out.split("last log lines of crashed instance #0:\n")[1].splitlines()
    assert 1 <= len(tail) <= 10 and all(l.startswith("   ") for l in tail), tail
    assert any("[APP/PROC/WEB/0] ERR crashing-now" in l for l in tail), tail
    # --json stays the API's data
    inst = plat.app("cr-view")["instances"][0]
    if inst["state"] == "CRASHED":
        assert inst["details"] == "exited with status 3"
    assert set(plat.app("cr-view")) == {"app", "process", "droplet", "routes", "instances"}


def test_app_cpu_usage(plat, app_images):
    plat.push("cpu-burn", app_images["web"], "-c", "while :; do :; done & exec start-web")
    plat.wait_route("cpu-burn")

    def busy():
        inst = plat.app("cpu-burn")["instances"]
        return inst if inst and inst[0]["state"] == "RUNNING" and inst[0]["usage"].get("cpu", 0) > 0.05 else None
    inst = helpers.wait_for(busy, timeout=30, what="cpu usage of cpu-burn above 5%", interval=0.5)
    assert inst[0]["usage"]["cpu"] > 0

    def shown():
        rows = [l for l in plat.cli("app", "cpu-burn").stdout.splitlines() if l.startswith("#0 ")]
        if not rows:
            return None
        pct = [f for f in rows[0].split() if f.endswith("%")]
        return float(pct[0][:-1]) if pct and float(pct[0][:-1]) > 0 else None
    assert helpers.wait_for(shown, timeout=30, what="a non-zero cpu % in berth app", interval=0.5) > 0
    plat.cli("delete", "cpu-burn", "-f")


def test_start_and_restart_wait_for_a_new_instance(plat, app_images):
    plat.push("rs-wait", app_images["web"])
    old = {i["guid"] for i in plat.running("rs-wait")}
    assert plat.cli("restart", "rs-wait").stdout.strip().endswith("OK")
    new = {i["guid"] for i in plat.running("rs-wait")}
    assert new and not new & old, "restart returned once a new instance ran"
    plat.cli("app-stop", "rs-wait")
    assert plat.cli_json("start", "rs-wait")["state"] == "STARTED"
    assert plat.running("rs-wait"), "start returned once an instance ran"
    # an app whose instances all crash: restart fails with their details
    plat.push("rs-crash", app_images["crash"], check=False)
    r = plat.cli("restart", "rs-crash", check=False)
    assert r.returncode == 1 and "Start unsuccessful" in r.stderr and "exited with status 3" in r.stderr, r


# --- rolling deployments: the CLI's side against a fake API -----------------------------------------------

class FakeDeployAPI:
    """Just enough of the API for ``restart --strategy rolling`` and ``push --strategy rolling`` on a started
    app: a deployment goes ACTIVE for ``polls`` GETs, then FINALIZED with ``reason``. Records requests."""

    APP, PROC, DROPLET, NEW_DROPLET, DEP, ROUTE = ("a-guid", "p-guid", "d-old", "d-new", "dep-guid", "r-guid")

    def __init__(self, reason="DEPLOYED", polls=3, deployments=True):
        import http.server
        self.reason, self.polls, self.deployments = reason, polls, deployments
        self.requests = []  # (monotonic time, method, path, body)
        self.gets = 0
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _do(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                fake.requests.append((time.monotonic(), self.command, self.path, body))
                status, doc = fake.answer(self.command, self.path, body)
                data = json.dumps(doc).encode() if doc is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            do_GET = do_POST = do_PATCH = do_DELETE = _do

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def deployment(self, value, reason):
        return {"guid": self.DEP, "status": {"value": value, "reason": reason, "details": {}},
                "strategy": "rolling", "droplet": {"guid": self.NEW_DROPLET}, "previous_droplet": {"guid": self.DROPLET},
                "relationships": {"app": {"data": {"guid": self.APP}}}, "created_at": "2026-11-28T18:00:00Z",
                "updated_at": "2026-11-28T18:00:00Z"}

    def answer(self, method, path, body):
        p = path.split("?")[0]
        app = {"guid": self.APP, "name": "roller", "state": "STARTED"}
        if method == "GET" and p == "/v3/apps":
            return 200, {"resources": [app] if "names=roller" in path else []}
        if method == "GET" and p == f"/v3/apps/{self.APP}/processes/web":
            return 200, {"guid": self.PROC, "instances": 2, "memory_in_mb": 256, "disk_in_mb": 1024, "command": None}
        if method == "GET" and p == f"/v3/apps/{self.APP}/droplets/current":
            return 200, {"guid": self.DROPLET, "image": "r/x@sha256:0", "docker_image": "r/x:1"}
        if method == "GET" and p == f"/v3/apps/{self.APP}/routes":
            return 200, {"resources": [{"guid": self.ROUTE, "url": "roller.apps.test"}]}
        if method == "GET" and p == f"/v3/processes/{self.PROC}/stats":
            return 200, {"resources": [{"index": 0, "state": "RUNNING", "since": "2026-11-28T18:00:00Z",
                                        "usage": {"cpu": 0.01, "mem": 1, "disk": 1}, "mem_quota": 1, "disk_quota": 1,
                                        "details": None}]}
        if method == "GET" and p == "/v3/domains":
            return 200, {"resources": [{"guid": "dom", "name": "apps.test"}]}
        if method == "GET" and p == "/v3/routes":
            return 200, {"resources": [{"guid": self.ROUTE, "host": "roller", "path": ""}]}
        if method == "POST" and p == f"/v3/routes/{self.ROUTE}/destinations":
            return 200, {"destinations": []}
        if method == "POST" and p == "/v3/packages":
            return 201, {"guid": "pkg", "state": "READY"}
        if method == "POST" and p == "/v3/builds":
            return 201, {"guid": "bld", "state": "STAGED", "droplet": {"guid": self.NEW_DROPLET}}
        if self.deployments and method == "POST" and p == "/v3/deployments":
            return 201, self.deployment("ACTIVE", "DEPLOYING")
        if self.deployments and method == "GET" and p == f"/v3/deployments/{self.DEP}":
            self.gets += 1
            if self.gets < self.polls:
                return 200, self.deployment("ACTIVE", "DEPLOYING")
            return 200, self.deployment("FINALIZED", self.reason)
        return 404, {"errors": [{"code": 10000, "title": "CF-NotFound", "detail": "Unknown request"}]}

    def calls(self, method=None, prefix=""):
        return [r for r in self.requests if (method is None or r[1] == method) and r[2].startswith(prefix)]

    def cli(self, tmp_path, *args):
        home = tmp_path / "fake-home"
        home.mkdir(exist_ok=True)
        (home / "config.json").write_text(json.dumps({
            "api": self.url, "access_token": "tok", "username": "admin",
            "org": {"guid": "o", "name": "default"}, "space": {"guid": "s", "name": "default"}}))
        return berthcli.run_berth(*args, env={"BERTH_HOME": str(home)}, check=False, timeout=60)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def fake_api():
    made = []

    def make(**kw):
        made.append(FakeDeployAPI(**kw))
        return made[-1]
    yield make
    for f in made:
        f.close()


def test_restart_rolling_polls_the_deployment(fake_api, tmp_path):
    f = fake_api(polls=4)
    r = f.cli(tmp_path, "restart", "roller", "--strategy", "rolling")
    assert r.returncode == 0, r
    assert "Waiting for app to deploy..." in r.stdout and "name:              roller" in r.stdout
    posts = f.calls("POST", "/v3/deployments")
    assert [x[3] for x in posts] == [{"strategy": "rolling", "relationships": {"app": {"data": {"guid": f.APP}}}}]
    gets = [x[0] for x in f.calls("GET", f"/v3/deployments/{f.DEP}")]
    assert len(gets) == 4
    assert all(b - a >= 0.15 for a, b in zip(gets, gets[1:])), "polled every 200 ms"
    assert not f.calls("POST", f"/v3/apps/{f.APP}/actions/"), "no plain restart"
    # --json: the app view's document
    f2 = fake_api(polls=1)
    r = f2.cli(tmp_path, "restart", "roller", "--strategy", "rolling", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["app"]["name"] == "roller"


@pytest.mark.parametrize("reason", ["CANCELED", "SUPERSEDED"])
def test_restart_rolling_fails_unless_deployed(fake_api, tmp_path, reason):
    f = fake_api(reason=reason, polls=2)
    r = f.cli(tmp_path, "restart", "roller", "--strategy", "rolling")
    assert r.returncode == 1 and reason in r.stderr, r


def test_rolling_usage_and_missing_endpoint(fake_api, tmp_path):
    f = fake_api(deployments=False)
    for args in (["restart", "roller", "--strategy", "blue-green"], ["restart", "roller", "--strategy"],
                 ["push", "roller", "--docker-image", "r/x:1", "--strategy", "canary"]):
        r = f.cli(tmp_path, *args)
        assert r.returncode == 2 and "usage" in r.stderr, (args, r)
    assert f.requests == [], "usage errors send nothing"
    r = f.cli(tmp_path, "restart", "roller", "--strategy", "rolling")
    assert r.returncode == 1 and "no rolling deployments" in r.stderr, r


def test_push_rolling_deploys_the_new_droplet(fake_api, tmp_path):
    f = fake_api(polls=2)
    r = f.cli(tmp_path, "push", "roller", "--docker-image", "r/x:2", "--strategy", "rolling")
    assert r.returncode == 0, r
    posts = f.calls("POST", "/v3/deployments")
    assert len(posts) == 1 and posts[0][3]["droplet"] == {"guid": f.NEW_DROPLET}
    assert posts[0][3]["strategy"] == "rolling"
    assert not f.calls("PATCH", f"/v3/apps/{f.APP}/relationships/current_droplet"), "the deployment sets it"
    assert not f.calls("POST", f"/v3/apps/{f.APP}/actions/"), "no restart"
    assert f.calls("POST", "/v3/builds")[0][0] < posts[0][0], "staged first"


def test_rolling_on_new_or_stopped_app_is_a_plain_start(plat, app_images):
    """No deployment is needed (nor made) for an app that runs nothing yet."""
    plat.push("roll-new", app_images["web"], "--strategy", "rolling")
    plat.wait_route("roll-new")
    plat.cli("app-stop", "roll-new")
    plat.wait_route("roll-new", status=503, timeout=15)
    r = plat.cli("restart", "roll-new", "--strategy", "rolling")
    assert "name:              roll-new" in r.stdout
    assert "#0   running" in r.stdout, "it waited for the instance"
    plat.wait_route("roll-new")


# --- rolling deployments on the real platform ----------------------------------------------------------------

class Load:
    """GETs through the router in a loop (a new connection each); counts answers other than 200."""

    def __init__(self, plat, host):
        self.plat, self.host = plat, host
        self.ok, self.failed, self.stop_ = 0, [], False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_:
            try:
                r = self.plat.route_get(self.host, timeout=10)
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(r.status_code)
            except requests.RequestException as e:
                self.failed.append(repr(e))

    def stop(self):
        self.stop_ = True
        self.t.join(30)


@pytest.fixture
def deployments(plat):
    r = plat.api("POST", "/v3/deployments", json={})
    if r.status_code == 404:
        pytest.skip("needs /v3/deployments")
    return plat


def test_rolling_restart_and_push_under_load(deployments, app_images):
    plat = deployments
    plat.push("roll", app_images["web"], "-i", "3")
    plat.wait_running("roll", 3)
    plat.wait_route("roll")
    before = {i["guid"] for i in plat.app("roll")["instances"]}
    load = Load(plat, "roll")
    try:
        helpers.wait_for(lambda: load.ok >= 5, timeout=10, what="the load running")
        r = plat.cli("restart", "roll", "--strategy", "rolling", timeout=300)
        assert "name:              roll" in r.stdout
        n = load.ok
        helpers.wait_for(lambda: load.ok >= n + 5, timeout=10, what="requests after the deployment")
    finally:
        load.stop()
    assert load.failed == [], f"{len(load.failed)} failed requests of {load.ok + len(load.failed)}"
    after = plat.wait_running("roll", 3)
    assert not before & {i["guid"] for i in after}, "every instance replaced"

    load = Load(plat, "roll")
    try:
        helpers.wait_for(lambda: load.ok >= 5, timeout=10, what="the load running")
        plat.push("roll", app_images["web2"], "--strategy", "rolling", timeout=300)
    finally:
        load.stop()
    assert load.failed == [], f"{len(load.failed)} failed requests of {load.ok + len(load.failed)}"
    assert plat.wait_route("roll", pred=lambda r: r.text.strip() == "berth-e2e-web 2")
    assert plat.app("roll")["droplet"]["docker_image"].endswith("e2e/web:2")


# --- the API over TLS -----------------------------------------------------------------------------------------

def _self_signed(d, name):
    cert, key = os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_controller(tmp_path):
    """``berth controller`` alone, serving its API over HTTPS with a self-signed certificate."""
    from berthplatform import free_port
    d = str(tmp_path)
    cert, key = _self_signed(d, "api")
    wrong_ca, _ = _self_signed(d, "other")
    data = os.path.join(d, "data")
    os.makedirs(data)
    cfg = os.path.join(d, "config.yaml")
    with open(cfg, "w") as f:
        f.write(f"controller:\n  tls_cert: {cert}\n  tls_key: {key}\n")
    port = free_port()
    log = open(os.path.join(d, "controller.log"), "wb")
    proc = subprocess.Popen([berthcli.BERTH_BIN, "--data-dir", data, "--config", cfg, "controller",
                             "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, open(os.path.join(d, "controller.log")).read()
        try:
            return requests.get(url + "/v3/info", verify=cert, timeout=2).status_code == 200
        except requests.RequestException:
            return False
    try:
        helpers.wait_for(up, timeout=30, what="the controller's HTTPS API", interval=0.05)
        with open(os.path.join(data, "admin-password")) as f:
            pw = f.read().strip()
        yield {"url": url, "cert": cert, "wrong_ca": wrong_ca, "password": pw, "dir": d}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_api_over_tls(tls_controller, tmp_path):
    t = tls_controller

    def berth(*args, home, env=None):
        return berthcli.run_berth(*args, env={"BERTH_HOME": str(tmp_path / home), "SSL_CERT_FILE": None,
                                              **(env or {})}, check=False, timeout=60)
    login = ["login", "-a", t["url"], "-u", "admin", "-p", t["password"]]
    # the system's CAs do not know a self-signed certificate: a clear error, no login kept
    r = berth(*login, home="h-none")
    assert r.returncode == 1, r
    assert f"TLS with 127.0.0.1:{t['url'].rsplit(':', 1)[1]}" in r.stderr and "--skip-ssl-validation" in r.stderr, r
    assert berth("orgs", home="h-none").returncode != 0
    # --skip-ssl-validation: works, and is remembered
    r = berth(*login, "--skip-ssl-validation", home="h-skip")
    assert r.returncode == 0, r
    assert json.loads((tmp_path / "h-skip" / "config.json").read_text())["skip_ssl_validation"] is True
    r = berth("orgs", home="h-skip")
    assert r.returncode == 0 and "default" in r.stdout, r
    # the API's CA given: verified; a wrong CA: refused
    r = berth(*login, "--ca-file", t["cert"], home="h-ca")
    assert r.returncode == 0, r
    assert berth("orgs", "--json", home="h-ca").returncode == 0
    r = berth(*login, "--ca-file", t["wrong_ca"], home="h-wrong")
    assert r.returncode == 1 and "TLS with" in r.stderr, r
    r = berth(*login, "--ca-file", os.path.join(t["dir"], "missing.pem"), home="h-missing")
    assert r.returncode == 1 and "missing.pem" in r.stderr
    # SSL_CERT_FILE
    r = berth(*login, home="h-env", env={"SSL_CERT_FILE": t["cert"]})
    assert r.returncode == 0, r
    r = berth(*login, home="h-env-wrong", env={"SSL_CERT_FILE": t["wrong_ca"]})
    assert r.returncode == 1 and "TLS with" in r.stderr, r


def test_json_everywhere(plat, app_images):
    t = plat.cli_json("target")
    assert t["api"] == plat.api_url and t["user"] == "admin" and t["org"]["name"] == "default"
    plat.push("js-app", app_images["web"], "-i", "0")
    assert plat.cli_json("set-env", "js-app", "K", "v")["var"]["K"] == "v"
    assert "K" not in plat.cli_json("unset-env", "js-app", "K")["var"]
    mapped = plat.cli_json("map-route", "js-app", "apps.localhost", "--hostname", "js-two")
    guid = plat.app_guid("js-app")
    assert guid in [d["app"]["guid"] for d in mapped["destinations"]]
    assert plat.cli_json("unmap-route", "js-app", "apps.localhost", "--hostname", "js-two")["url"] == \
        "js-two.apps.localhost"
    assert [r["url"] for r in plat.app("js-app")["routes"]] == ["js-app.apps.localhost"]
    plat.cli("create-space", "js-space", "-o", "default")
    assert plat.cli_json("delete-space", "js-space", "-f")["name"] == "js-space"
    plat.cli("create-user", "js-user", "js-pa55")
    assert plat.cli_json("delete-user", "js-user", "-f")["username"] == "js-user"
    assert "js-space" not in space_names(plat)
