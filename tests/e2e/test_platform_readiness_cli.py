"""The CLI's health check commands end to end on ``berth up`` (cf CLI v8's): ``push`` with
``--readiness-health-check-type``/``--readiness-endpoint`` and with cf's readiness manifest keys,
``get-health-check``, ``set-health-check`` and ``set-readiness-health-check`` (new values apply after a
restart), ``berth app`` showing a RUNNING instance that is not ready (``routable: false``), and invalid values
refused before anything changes.

One ``berth up`` for the module (diego_docker enabled once); every test uses apps of its own names.
"""

import json

import pytest

import helpers
import imagebuild as ib
from berthplatform import enable_docker, plat, web_layer  # noqa: F401 (fixtures)


@pytest.fixture(scope="module", autouse=True)
def docker_on(plat):
    enable_docker(plat)


@pytest.fixture(scope="module")
def ready_image(session_registry):
    """The web app with /ready (/cgi-bin/unready removes it, /cgi-bin/ready puts it back)."""
    unready = b"#!/bin/sh\nrm -f /www/ready\nprintf 'Content-Type: text/plain\\r\\n\\r\\nunready\\n'\n"
    ready = b"#!/bin/sh\necho ok > /www/ready\nprintf 'Content-Type: text/plain\\r\\n\\r\\nready\\n'\n"
    img = ib.build_image([ib.Layer(ib.busybox_entries()), ib.Layer(web_layer("1")),
                          ib.Layer([ib.File("www/ready", b"ok\n"),
                                    ib.File("www/cgi-bin/unready", unready, mode=0o755),
                                    ib.File("www/cgi-bin/ready", ready, mode=0o755)])],
                         config={"Entrypoint": ["start-web"], "Cmd": [], "Env": ib.DEFAULT_ENV},
                         name="e2e/readycli:1")
    session_registry.push(img, "e2e/readycli:1")
    return session_registry.ref("e2e/readycli:1")


def write(tmp_path, text, name="manifest.yml"):
    m = tmp_path / name
    m.write_text(text)
    return str(m)


def checks(plat, name) -> tuple:
    """(health_check, readiness_health_check) of the app's web process, from the API."""
    guid = plat.app(name)["process"]["guid"]
    proc = plat.api_json("GET", f"/v3/processes/{guid}")
    return proc["health_check"], proc["readiness_health_check"]


def stats(plat, name) -> list:
    guid = plat.app(name)["process"]["guid"]
    return plat.api_json("GET", f"/v3/processes/{guid}/stats")["resources"]


def test_push_readiness_flags_and_get_health_check(plat, ready_image):
    r = plat.push("rc-flags", ready_image, "--readiness-health-check-type", "http", "--readiness-endpoint",
                  "/ready")
    hc, rc = checks(plat, "rc-flags")
    assert rc == {"type": "http", "data": {"endpoint": "/ready", "interval": None, "invocation_timeout": None}}
    assert hc["type"] == "port", "liveness unchanged"
    assert plat.wait_route("rc-flags", "/ready").text == "ok\n"
    assert [s["routable"] for s in stats(plat, "rc-flags")] == [True]
    assert "running (not ready)" not in r.stdout
    out = plat.cli("get-health-check", "rc-flags").stdout
    assert out.startswith("Getting health check type for app rc-flags in org default / space ")
    lines = out.splitlines()
    live_hdr = next(i for i, x in enumerate(lines) if x.startswith("process") and "health check" in x
                    and "readiness" not in x)
    assert lines[live_hdr].split() == ["process", "health", "check", "endpoint", "(for", "http)", "timeout",
                                       "invocation", "timeout", "interval"]
    assert lines[live_hdr + 1].split() == ["web", "port", "60", "1"]
    ready_hdr = next(i for i, x in enumerate(lines) if "readiness health check" in x)
    assert lines[ready_hdr].split()[:4] == ["process", "readiness", "health", "check"]
    assert lines[ready_hdr + 1].split() == ["web", "http", "/ready", "1"]
    doc = plat.cli_json("get-health-check", "rc-flags")
    assert doc["readiness_health_check"] == rc and doc["health_check"] == hc
    # --readiness-endpoint alone means http (as --endpoint does for liveness)
    plat.push("rc-ep-only", ready_image, "--readiness-endpoint", "/ready", "--no-start")
    assert checks(plat, "rc-ep-only")[1] == {
        "type": "http", "data": {"endpoint": "/ready", "interval": None, "invocation_timeout": None}}


def test_push_manifest_readiness_keys(plat, ready_image, tmp_path):
    m = write(tmp_path, f"""applications:
- name: rc-mf
  docker:
    image: {ready_image}
  health-check-type: http
  health-check-http-endpoint: /index.html
  health-check-invocation-timeout: 4
  health-check-interval: 5
  readiness-health-check-type: http
  readiness-health-check-http-endpoint: /ready
  readiness-health-check-invocation-timeout: 2
  readiness-health-check-interval: 3
""")
    r = plat.cli("push", "-f", m)
    assert "unknown key" not in r.stderr, r.stderr
    hc, rc = checks(plat, "rc-mf")
    assert hc["type"] == "http"
    assert hc["data"] == {"endpoint": "/index.html", "invocation_timeout": 4, "interval": 5, "timeout": 60}
    assert rc == {"type": "http", "data": {"endpoint": "/ready", "invocation_timeout": 2, "interval": 3}}
    assert plat.wait_route("rc-mf", "/ready").text == "ok\n"
    out = plat.cli("get-health-check", "rc-mf").stdout
    assert [x.split() for x in out.splitlines() if x.startswith("web ")] == [
        ["web", "http", "/index.html", "60", "4", "5"], ["web", "http", "/ready", "2", "3"]], out
    # a manifest with only a liveness interval keeps the check's type (http), changes the interval
    m2 = write(tmp_path, f"""applications:
- name: rc-mf
  docker:
    image: {ready_image}
  health-check-interval: 7
""", "m2.yml")
    plat.cli("push", "-f", m2, "--no-start")
    hc2, rc2 = checks(plat, "rc-mf")
    assert hc2["type"] == "http" and hc2["data"]["interval"] == 7 and hc2["data"]["endpoint"] == "/index.html"
    assert rc2 == rc


def test_set_readiness_health_check_then_restart(plat, ready_image):
    plat.push("rc-set", ready_image)
    first = plat.wait_running("rc-set", 1)[0]
    plat.wait_route("rc-set")
    r = plat.cli("set-readiness-health-check", "rc-set", "http", "--endpoint", "/missing", "--interval", "1",
                 "--invocation-timeout", "2")
    assert r.stdout.startswith("Updating readiness health check type for app rc-set process web in org default")
    assert "\nOK\n" in r.stdout
    assert "TIP: An app restart is required for the change to take effect." in r.stdout
    assert checks(plat, "rc-set")[1] == {
        "type": "http", "data": {"endpoint": "/missing", "interval": 1, "invocation_timeout": 2}}
    # the running instance keeps the check it started with: still routable
    assert [(s["guid"], s["routable"]) for s in stats(plat, "rc-set")] == [(first["guid"], True)]
    assert plat.route_get("rc-set").status_code == 200
    # after a restart the new instance runs but never gets ready: out of the routes
    plat.cli("restart", "rc-set")
    new = plat.wait_running("rc-set", 1)[0]
    assert new["guid"] != first["guid"]
    helpers.wait_for(lambda: [s["routable"] for s in stats(plat, "rc-set")] == [False], timeout=10,
                     what="the new instance not routable")
    plat.wait_route("rc-set", status=503)
    out = plat.cli("app", "rc-set").stdout
    inst_lines = [x for x in out.splitlines() if x.startswith("#0 ")]
    assert len(inst_lines) == 1 and "running (not ready)" in inst_lines[0], out
    hdr = next(x for x in out.splitlines() if x.lstrip().startswith("state"))
    line = inst_lines[0]
    after = line.index("running (not ready)") + len("running (not ready)")
    assert hdr.index("since") == after + len(line[after:]) - len(line[after:].lstrip()), \
        f"the columns stay aligned:\n{hdr}\n{line}"
    doc = plat.app("rc-set")
    assert [(i["state"], i["routable"]) for i in doc["instances"]] == [("RUNNING", False)]
    # a port readiness check passes: routable after the next restart
    r = plat.cli("set-readiness-health-check", "rc-set", "port")
    assert "TIP: An app restart" in r.stdout
    plat.cli("restart", "rc-set")
    assert plat.wait_route("rc-set").status_code == 200
    helpers.wait_for(lambda: [s["routable"] for s in stats(plat, "rc-set")] == [True], timeout=10,
                     what="routable again")
    out = plat.cli("app", "rc-set").stdout
    assert "not ready" not in out and any(x.startswith("#0 ") and " running " in x for x in out.splitlines())
    # --json: the process as the API answered
    proc = plat.cli_json("set-readiness-health-check", "rc-set", "process")
    assert proc["readiness_health_check"]["type"] == "process"


def test_set_health_check(plat, ready_image):
    plat.push("rc-live", ready_image, "--no-start")
    r = plat.cli("set-health-check", "rc-live", "http", "--invocation-timeout", "3")
    assert r.stdout.startswith("Updating health check type for app rc-live process web in org default")
    assert "OK" in r.stdout.splitlines()
    assert "TIP" not in r.stdout, "a stopped app takes the change at its next start"
    hc, rc = checks(plat, "rc-live")
    assert hc["type"] == "http" and hc["data"]["endpoint"] == "/" and hc["data"]["invocation_timeout"] == 3
    assert rc["type"] == "process", "readiness unchanged"
    proc = plat.cli_json("set-health-check", "rc-live", "http", "--endpoint", "/index.html")
    assert proc["health_check"]["data"]["endpoint"] == "/index.html"
    assert proc["health_check"]["data"]["invocation_timeout"] == 3, "fields not given stay"
    plat.cli("start", "rc-live")
    assert plat.wait_route("rc-live").status_code == 200
    plat.cli("set-health-check", "rc-live", "port")
    assert checks(plat, "rc-live")[0]["type"] == "port"


def test_invalid_values_change_nothing(plat, ready_image, tmp_path):
    before = plat.app_names()
    for args in (["--readiness-health-check-type", "tcp"], ["--readiness-endpoint", "ready"],
                 ["--readiness-health-check-type", "port", "--readiness-endpoint", "/r"],
                 ["--endpoint", "no-slash"]):
        r = plat.push("rc-bad", ready_image, *args, check=False)
        assert r.returncode == 2, (args, r)
        assert "usage" in r.stderr or "needs --readiness-health-check-type http" in r.stderr, r.stderr
    for body, needle in (
            ("readiness-health-check-type: tcp", "readiness-health-check-type must be port, http or process"),
            ("readiness-health-check-interval: 0", "readiness-health-check-interval must be an integer from 1"),
            ("readiness-health-check-invocation-timeout: 999",
             "readiness-health-check-invocation-timeout must be an integer from 1 to 180"),
            ("health-check-interval: x", "health-check-interval must be an integer"),
            ("readiness-health-check-type: port\n  readiness-health-check-http-endpoint: /r",
             "readiness-health-check-http-endpoint needs readiness-health-check-type http (not port)")):
        m = write(tmp_path, f"applications:\n- name: rc-bad\n  docker:\n    image: {ready_image}\n  {body}\n")
        r = plat.cli("push", "-f", m, check=False)
        assert r.returncode == 1 and needle in r.stderr, (body, r)
        assert "applications[0] (rc-bad)" in r.stderr
    # a manifest's readiness type with a flag's endpoint that does not fit
    m = write(tmp_path, f"applications:\n- name: rc-bad\n  docker:\n    image: {ready_image}\n"
                        "  readiness-health-check-type: port\n")
    r = plat.cli("push", "-f", m, "--readiness-endpoint", "/ready", check=False)
    assert r.returncode == 1 and "a readiness endpoint needs readiness health check type http" in r.stderr
    assert plat.app_names() == before, "nothing created"
    # set-*: refused before any request, the process unchanged
    plat.push("rc-keep", ready_image, "--no-start", "--readiness-health-check-type", "port")
    was = checks(plat, "rc-keep")
    for args, needle in (
            (["set-readiness-health-check", "rc-keep", "tcp"], 'must be "process", "port" or "http"'),
            (["set-readiness-health-check", "rc-keep", "port", "--endpoint", "/x"],
             "--endpoint is only for the http health check type"),
            (["set-readiness-health-check", "rc-keep", "http", "--interval", "0"],
             "--interval must be an integer from 1 to 600"),
            (["set-readiness-health-check", "rc-keep", "http", "--invocation-timeout", "1.5"],
             "--invocation-timeout must be an integer from 1 to 180"),
            (["set-readiness-health-check", "rc-keep", "http", "--endpoint", "ready"],
             "--endpoint must be a path starting with '/'"),
            (["set-health-check", "rc-keep", "http", "--interval", "5"], "usage: berth set-health-check"),
            (["set-health-check", "rc-keep"], "usage: berth set-health-check"),
            (["get-health-check"], "usage: berth get-health-check APP")):
        r = plat.cli(*args, check=False)
        assert r.returncode == 2 and needle in r.stderr, (args, r)
        assert "Updating" not in r.stdout
    r = plat.cli("set-health-check", "rc-nope", "port", check=False)
    assert r.returncode == 1 and "App 'rc-nope' not found." in r.stderr
    r = plat.cli("get-health-check", "rc-nope", "--json", check=False)
    assert r.returncode == 1 and r.stdout == ""
    assert checks(plat, "rc-keep") == was
    assert json.loads(plat.cli("get-health-check", "rc-keep", "--json").stdout)["readiness_health_check"] == \
        was[1]
