"""Keeping apps running (issue 5, the cell's side), end to end on ``berth up``: crash reasons (exit status, a
signal, out of memory, a failing health check, the start timeout) as the user sees them in ``berth app``,
``berth events`` and the logs; an instance killed from the host reported and restarted at once; the image's
StopSignal; logs tagged APP/PROC/WEB/<index> and CELL/<index>, complete and in order across a restart; CPU,
memory and disk usage in the process stats.

One ``berth up`` for the module (diego_docker enabled once); every test pushes apps of its own names.
"""

import json
import re
import os
import signal
import subprocess
import time

import pytest

import berthcli
import helpers
import imagebuild as ib
from berthplatform import app_images, enable_docker, plat, web_image, web_layer  # noqa: F401


@pytest.fixture(scope="module", autouse=True)
def docker_on(plat):
    enable_docker(plat)


# --- helpers ------------------------------------------------------------------------------------------------

def crash_events(plat, name) -> list:
    """The app's audit.app.process.crash events, oldest first."""
    doc = plat.cli_json("events", name)
    evs = [e for e in doc["resources"] if e["type"] == "audit.app.process.crash"]
    return sorted(evs, key=lambda e: (e["created_at"], e["data"].get("crash_count", 0)))


def wait_crashes(plat, name, n, timeout=60) -> list:
    return helpers.wait_for(lambda: (lambda e: e if len(e) >= n else None)(crash_events(plat, name)),
                            timeout=timeout, what=f"{n} crash events of {name}", interval=0.1)


def recent_logs(plat, name) -> list:
    """`berth logs NAME --recent` as (source, stream, message) tuples, in its order."""
    out = plat.cli("logs", name, "--recent").stdout
    recs = []
    for line in out.splitlines():
        # cf's format: "   TIME [SOURCE/INDEX] OUT|ERR MESSAGE"
        m = re.match(r"^\s*\S+ \[([^\]]+)\] (OUT|ERR) ?(.*)$", line)
        if m:
            recs.append((m.group(1), m.group(2), m.group(3)))
    return recs


def container_of(plat, instance_guid) -> dict:
    """The cell's container of an instance (its name is i-<instance guid>), from `berth ps`."""
    r = subprocess.run([berthcli.BERTH_BIN, "--data-dir", plat.data_dir, "ps", "-a", "--json"],
                       capture_output=True, text=True, check=True)
    for c in json.loads(r.stdout):
        if c.get("Name") in (f"i-{instance_guid}", f"/i-{instance_guid}"):
            return c
    return None


def container_pids(cid) -> list:
    for path in (f"/sys/fs/cgroup/pids/berth/{cid}/cgroup.procs", f"/sys/fs/cgroup/berth/{cid}/cgroup.procs"):
        try:
            with open(path) as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            continue
    return []


def stats(plat, name) -> list:
    guid = plat.app(name)["process"]["guid"]
    return plat.api_json("GET", f"/v3/processes/{guid}/stats")["resources"]


def route_endpoints(plat, host) -> list:
    with open(os.path.join(plat.data_dir, "internal-token")) as f:
        token = f.read().strip()
    doc = plat.api_json("GET", "/internal/v1/routes?index=0", token=token)
    return [e["instance_guid"] for r in doc["routes"] if r["host"] == plat.host(host) for e in r["endpoints"]]


@pytest.fixture(scope="module")
def health_images(session_registry):
    """Images of this module: a web app with /health (and /cgi-bin/sick, which removes it) and /ready
    (/cgi-bin/unready removes it, /cgi-bin/ready puts it back); one whose init
    traps SIGUSR1 (its StopSignal), prints a numbered sequence and serves."""
    sick = b"#!/bin/sh\nrm -f /www/health\nprintf 'Content-Type: text/plain\\r\\n\\r\\nsick\\n'\n"
    unready = b"#!/bin/sh\nrm -f /www/ready\nprintf 'Content-Type: text/plain\\r\\n\\r\\nunready\\n'\n"
    ready = b"#!/bin/sh\necho ok > /www/ready\nprintf 'Content-Type: text/plain\\r\\n\\r\\nready\\n'\n"
    health = ib.build_image([ib.Layer(ib.busybox_entries()), ib.Layer(web_layer("1")),
                             ib.Layer([ib.File("www/health", b"ok\n"), ib.File("www/ready", b"ok\n"),
                                       ib.File("www/cgi-bin/sick", sick, mode=0o755),
                                       ib.File("www/cgi-bin/unready", unready, mode=0o755),
                                       ib.File("www/cgi-bin/ready", ready, mode=0o755)])],
                            config={"Entrypoint": ["start-web"], "Cmd": [], "Env": ib.DEFAULT_ENV},
                            name="e2e/health:1")
    seq = ("trap 'echo got SIGUSR1, stopping; exit 0' USR1; "
           "i=1; while [ $i -le 50 ]; do echo seq $i; i=$((i+1)); done; "
           "httpd -p $PORT -h /www; while :; do sleep 1 & wait $!; done")
    stopsig = web_image("1", {"Entrypoint": None, "Cmd": ["/bin/sh", "-c", seq], "StopSignal": "SIGUSR1"},
                        name="e2e/stopsig:1")
    refs = {}
    for kind, img, repo in (("health", health, "e2e/health:1"), ("stopsig", stopsig, "e2e/stopsig:1")):
        session_registry.push(img, repo)
        refs[kind] = session_registry.ref(repo)
    return refs


# --- crashes ------------------------------------------------------------------------------------------------

def test_killed_instance_is_reported_and_restarted_at_once(plat, app_images):
    plat.push("killme", app_images["web"])
    plat.wait_route("killme")
    for n in (1, 2):  # crashes 1 and 2 restart at once
        inst = plat.wait_running("killme", 1)[0]
        ctr = container_of(plat, inst["guid"])
        assert ctr and ctr["State"]["Running"], ctr
        pids = container_pids(ctr["Id"])
        assert pids, "no processes in the container's cgroup"
        t0 = time.monotonic()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # httpd's child of a request, exiting on its own
        evs = wait_crashes(plat, "killme", n, timeout=30)
        reported = time.monotonic() - t0
        # The cell reports the end at once (the monitor's pidfd), not at its next heartbeat or check (2-3 s).
        assert reported < 1.5, f"crash {n} reported after {reported:.2f} s"
        ev = evs[-1]["data"]
        assert ev["reason"] == "killed by signal 9 (SIGKILL)" and ev["exit_status"] == 137, ev
        assert ev["crash_count"] == n and ev["instance"] == inst["guid"]
        # ... and restarted at once: a new instance serves
        new = plat.wait_running("killme", 1, timeout=30)[0]
        assert new["guid"] != inst["guid"]
        assert time.monotonic() - t0 < 10
        plat.wait_route("killme")
    log = recent_logs(plat, "killme")
    assert ("CELL/0", "OUT", "Exit status 137 (killed by signal 9 (SIGKILL))") in log, log


def test_exit_status(plat, app_images):
    r = plat.push("exits", app_images["crash"], "-t", "10", check=False)
    assert r.returncode == 1
    ev = wait_crashes(plat, "exits", 1)[0]["data"]
    assert ev["reason"] == "exited with status 3" and ev["exit_status"] == 3
    assert ev["exit_description"] == "APP/PROC/WEB: exited with status 3"
    # After crashes 1 and 2 (restarted at once) the third waits 30 s: CRASHED, with the reason shown.
    inst = helpers.wait_for(lambda: (lambda i: i if i and i[0]["state"].upper() == "CRASHED" and
                                     len(crash_events(plat, "exits")) >= 3 else None)(plat.app("exits")["instances"]),
                            timeout=30, what="exits CRASHED after 3 crashes")[0]
    assert inst["details"] == "exited with status 3"
    log = recent_logs(plat, "exits")
    assert ("APP/PROC/WEB/0", "ERR", "crashing-now") in log
    assert ("CELL/0", "OUT", "Exit status 3") in log


def test_out_of_memory(plat, app_images):
    r = plat.push("oom", app_images["web"], "-m", "32M", "-t", "10", "-c",
                  "echo allocating; exec dd if=/dev/zero of=/dev/null bs=64M count=1", check=False)
    assert r.returncode == 1
    ev = wait_crashes(plat, "oom", 1)[0]["data"]
    assert ev["reason"] == "out of memory", ev
    assert ev["exit_status"] == 137
    inst = helpers.wait_for(lambda: (lambda i: i if i and i[0]["state"].upper() == "CRASHED" and
                                     len(crash_events(plat, "oom")) >= 3 else None)(plat.app("oom")["instances"]),
                            timeout=30, what="oom CRASHED after 3 crashes")[0]
    assert inst["details"] == "out of memory"
    assert ("CELL/0", "OUT", "Exit status 137 (out of memory)") in recent_logs(plat, "oom")


def test_disk_quota_exceeded(plat, app_images):
    plat.push("diskfull", app_images["web"], "-k", "16M", "-t", "10", "-u", "process", "-c",
              "dd if=/dev/zero of=/tmp/big bs=1M count=64; exit 1", check=False)
    ev = wait_crashes(plat, "diskfull", 1)[0]["data"]
    assert ev["reason"] == "disk quota exceeded" and ev["exit_status"] == 1, ev
    log = recent_logs(plat, "diskfull")
    assert ("APP/PROC/WEB/0", "ERR", "dd: error writing '/tmp/big': Disk quota exceeded") in log
    assert ("CELL/0", "OUT", "Exit status 1 (disk quota exceeded)") in log
    # an app failing with room left on its disk is no disk problem
    plat.push("notfull", app_images["web"], "-k", "16M", "-t", "10", "-u", "process", "-c",
              "dd if=/dev/zero of=/tmp/big bs=1M count=8; exit 1", check=False)
    assert wait_crashes(plat, "notfull", 1)[0]["data"]["reason"] == "exited with status 1"


def test_start_timeout_after_the_pull(plat, app_images):
    t0 = time.monotonic()
    r = plat.push("neverport", app_images["web"], "-t", "3", "-c", "echo not listening; exec sleep 1000",
                  check=False)
    assert r.returncode == 1
    ev = wait_crashes(plat, "neverport", 1)[0]["data"]
    assert ev["reason"] == "start timeout" and ev["exit_status"] is None
    assert time.monotonic() - t0 >= 3
    log = recent_logs(plat, "neverport")
    msgs = [m for s, _, m in log if s == "CELL/0"]
    for want in ("Creating container", "Successfully created container", "Starting health monitoring of container",
                 "Failed after 3s: startup health check never passed."):
        assert want in msgs, (want, msgs)
    assert ("APP/PROC/WEB/0", "OUT", "not listening") in log


# --- health checks ------------------------------------------------------------------------------------------

def test_failing_http_health_check_restarts_the_instance(plat, health_images):
    plat.push("sick", health_images["health"], "-u", "http", "--endpoint", "/health")
    assert plat.wait_route("sick", "/health").text == "ok\n"
    inst = plat.wait_running("sick", 1)[0]
    assert route_endpoints(plat, "sick") == [inst["guid"]]
    assert plat.route_get("sick", "/cgi-bin/sick").text == "sick\n"  # /health now answers 404
    t0 = time.monotonic()
    ev = wait_crashes(plat, "sick", 1, timeout=20)[0]["data"]
    # liveness runs every 3 s with a 1 s timeout
    assert time.monotonic() - t0 < 6
    assert ev["reason"] == "health check failed" and ev["instance"] == inst["guid"]
    # Out of the routes at once, and replaced by a healthy instance (the image's /health again).
    assert inst["guid"] not in route_endpoints(plat, "sick")
    new = plat.wait_running("sick", 1, timeout=30)[0]
    assert new["guid"] != inst["guid"]
    assert plat.wait_route("sick", "/health").text == "ok\n"
    msgs = [m for s, _, m in recent_logs(plat, "sick") if s == "CELL/0"]
    assert any(m.startswith("Container became unhealthy: http check on port 8080: status 404") for m in msgs), msgs
    assert "Container became healthy" in msgs


def test_port_check_every_exposed_port(plat, app_images):
    # The "ports" image EXPOSEs 9410 and 7000 (the app port) and listens on both: healthy.
    plat.push("twoports", app_images["ports"])
    plat.wait_running("twoports", 1)
    # Without its listener on 9410 it never passes the port check, though the route's port 7000 answers.
    r = plat.push("oneport", app_images["ports"], "-t", "3", "-c", "EXTRA_PORTS= exec start-web", check=False)
    assert r.returncode == 1
    assert wait_crashes(plat, "oneport", 1)[0]["data"]["reason"] == "start timeout"
    # An http check GETs the endpoint on the app port and connects to the other ports (as Diego).
    plat.push("httptwo", app_images["ports"], "-u", "http", "--endpoint", "/")
    plat.wait_running("httptwo", 1)
    r = plat.push("httpone", app_images["ports"], "-u", "http", "--endpoint", "/", "-t", "3", "-c",
                  "EXTRA_PORTS= exec start-web", check=False)
    assert r.returncode == 1
    assert wait_crashes(plat, "httpone", 1)[0]["data"]["reason"] == "start timeout"


# --- readiness ----------------------------------------------------------------------------------------------

def _endpoints(plat, name) -> dict:
    """instance guid -> (host, port) of the app's route-table endpoints."""
    with open(os.path.join(plat.data_dir, "internal-token")) as f:
        token = f.read().strip()
    doc = plat.api_json("GET", "/internal/v1/routes?index=0", token=token)
    return {e["instance_guid"]: (e["host"], e["port"])
            for r in doc["routes"] if r["host"] == plat.host(name) for e in r["endpoints"]}


def _direct(addr, path):
    import requests
    return requests.get(f"http://{addr[0]}:{addr[1]}{path}", timeout=5)


def test_readiness_check_takes_an_instance_out_of_the_routes_and_back(plat, health_images):
    plat.push("rdy", health_images["health"], "-i", "2", "--no-start")
    guid = plat.app("rdy")["process"]["guid"]
    bad = plat.api("PATCH", f"/v3/processes/{guid}", json={"readiness_health_check": {"type": "tcp"}})
    assert bad.status_code == 422 and "Readiness health check type" in bad.json()["errors"][0]["detail"]
    bad = plat.api("PATCH", f"/v3/processes/{guid}",
                   json={"readiness_health_check": {"type": "http", "data": {"interval": 0}}})
    assert bad.status_code == 422, bad.text
    proc = plat.api_json("PATCH", f"/v3/processes/{guid}", json={
        "readiness_health_check": {"type": "http", "data": {"endpoint": "/ready", "interval": 1}}})
    assert proc["readiness_health_check"] == {
        "type": "http", "data": {"endpoint": "/ready", "interval": 1, "invocation_timeout": None}}
    assert proc["health_check"]["type"] == "port"  # liveness unchanged
    plat.cli("start", "rdy")
    insts = plat.wait_running("rdy", 2)
    eps = helpers.wait_for(lambda: (lambda e: e if len(e) == 2 else None)(_endpoints(plat, "rdy")),
                           timeout=10, what="both rdy instances routable")
    a, b = sorted(eps)
    # A's readiness endpoint goes away: out of the routes within its interval (+ the table's push), not
    # crashed, still RUNNING; every request through the router reaches B.
    assert _direct(eps[a], "/cgi-bin/unready").text == "unready\n"
    t0 = time.monotonic()
    helpers.wait_for(lambda: list(_endpoints(plat, "rdy")) == [b], timeout=5, what="A out of the routes",
                     interval=0.05)
    took = time.monotonic() - t0
    print(f"not ready -> out of the route table in {took * 1000:.0f} ms")
    assert took < 3
    for _ in range(20):
        r = plat.route_get("rdy", "/ready")
        assert r.status_code == 200 and r.text == "ok\n"
    st = {s["guid"]: s for s in stats(plat, "rdy")}
    assert st[a]["state"] == "RUNNING" and st[a]["routable"] is False, st[a]
    assert st[b]["state"] == "RUNNING" and st[b]["routable"] is True, st[b]
    assert crash_events(plat, "rdy") == []
    assert {i["guid"] for i in plat.running("rdy")} == {i["guid"] for i in insts}
    # Ready again: back in the routes.
    assert _direct(eps[a], "/cgi-bin/ready").text == "ready\n"
    helpers.wait_for(lambda: sorted(_endpoints(plat, "rdy")) == [a, b], timeout=5, what="A back in the routes",
                     interval=0.05)
    msgs = [m for s, _, m in recent_logs(plat, "rdy") if s.startswith("CELL/")]
    assert any(m.startswith("Container failed the readiness health check") for m in msgs), msgs
    assert any(m.startswith("Container passed the readiness health check") for m in msgs), msgs
    # Both not ready: the route has no endpoints (503), nothing crashes.
    for g in (a, b):
        _direct(eps[g], "/cgi-bin/unready")
    helpers.wait_for(lambda: plat.route_get("rdy").status_code == 503, timeout=5, what="503 no_endpoints")
    assert plat.route_get("rdy").headers.get("X-Cf-Routererror") == "no_endpoints"
    assert crash_events(plat, "rdy") == [] and len(plat.running("rdy")) == 2


def test_instance_never_ready_runs_but_is_not_routed(plat, health_images):
    plat.push("neverrdy", health_images["health"], "--no-start")
    guid = plat.app("neverrdy")["process"]["guid"]
    plat.api_json("PATCH", f"/v3/processes/{guid}", json={
        "readiness_health_check": {"type": "http", "data": {"endpoint": "/missing"}}})
    plat.cli("start", "neverrdy")  # RUNNING (liveness passes), so start succeeds
    inst = plat.wait_running("neverrdy", 1)[0]
    assert plat.route_get("neverrdy").status_code == 503
    assert _endpoints(plat, "neverrdy") == {}
    assert [s["routable"] for s in stats(plat, "neverrdy")] == [False]
    # A port readiness check passes: routable (the check type changes with a restart, as in CF).
    plat.api_json("PATCH", f"/v3/processes/{guid}", json={"readiness_health_check": {"type": "port"}})
    plat.cli("restart", "neverrdy")
    new = plat.wait_running("neverrdy", 1)[0]
    assert new["guid"] != inst["guid"]
    assert plat.wait_route("neverrdy").status_code == 200


# --- stop, logs ---------------------------------------------------------------------------------------------

def test_stop_signal_and_logs_across_a_restart(plat, health_images):
    plat.push("stopsig", health_images["stopsig"])
    plat.wait_route("stopsig")
    first = plat.wait_running("stopsig", 1)[0]
    plat.cli("restart", "stopsig")
    helpers.wait_for(lambda: (lambda r: r if r and r[0]["guid"] != first["guid"] else None)(
        plat.running("stopsig")), timeout=60, what="a new stopsig instance")
    plat.wait_route("stopsig")
    # A restart places the new instance at once; the old one is signalled once the routers dropped it (up to
    # 1 s later), so its last lines may come after the new one is routed: wait for its end.
    log = helpers.wait_for(lambda: (lambda lg: lg if ("CELL/0", "OUT", "Destroying container") in lg else None)(
        recent_logs(plat, "stopsig")), timeout=20, what="the first stopsig instance destroyed", interval=0.1)
    app = [m for s, _, m in log if s == "APP/PROC/WEB/0"]
    seq = [f"seq {i}" for i in range(1, 51)]
    # both runs complete and in order; the first one's stop signal handler after its own 50 lines
    stop = "got SIGUSR1, stopping"
    assert app.count(stop) == 1 and app.index(stop) >= 50, app
    assert [m for m in app if m != stop] == seq + seq, app
    cell = [m for s, _, m in log if s == "CELL/0"]
    assert cell.count("Creating container") == 2 and cell.count("Container became healthy") == 2, cell
    assert cell.index("Stopping instance") < cell.index("Destroying container"), cell
    # one stream, ordered by time
    times = plat.cli("logs", "stopsig", "--recent").stdout.split("\n")
    stamps = [m.group(1) for m in (re.match(r"^\s+(\S+) \[", t) for t in times) if m]
    assert len(stamps) >= len(log)
    assert stamps == sorted(stamps)


# --- stats --------------------------------------------------------------------------------------------------

def test_stats_cpu_memory_disk(plat, app_images):
    plat.push("burner", app_images["web"], "-m", "64M", "-k", "128M", "-c",
              "(while :; do :; done) & dd if=/dev/zero of=/tmp/fill bs=1M count=3 && sync && exec start-web")
    plat.wait_route("burner")

    def busy():
        s = stats(plat, "burner")[0]
        return s if s["state"] == "RUNNING" and s["usage"].get("cpu", 0) > 0.2 else None
    s = helpers.wait_for(busy, timeout=20, what="cpu > 0.2 in the stats", interval=0.5)
    u = s["usage"]
    assert 0.2 < u["cpu"] < 2.5, u
    assert s["mem_quota"] == 64 << 20 and 0 < u["mem"] < 64 << 20, s
    assert s["disk_quota"] == 128 << 20 and u["disk"] >= 3 << 20, s
    assert s["uptime"] >= 0 and u["time"].endswith("Z")
    # the CLI's view
    inst = plat.app("burner")["instances"][0]
    assert inst["usage"]["cpu"] > 0


# --- berth's own crashes --------------------------------------------------------------------------------------

def cell_agent_pid(plat):
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if plat.data_dir.encode() in argv and b"cell" in argv and b"--drain-on-exit" in argv:
            return int(d)
    return None


def test_cell_agent_kill9_readopts_without_restarting(plat, app_images):
    plat.push("survivor", app_images["web"], "-i", "2")
    plat.wait_route("survivor")
    before = {i["guid"]: i for i in plat.wait_running("survivor", 2)}
    ctrs = {g: container_of(plat, g)["Id"] for g in before}
    pid = cell_agent_pid(plat)
    assert pid
    os.kill(pid, signal.SIGKILL)
    # Its containers keep serving while the agent is away (the router goes straight to them).
    for _ in range(4):
        assert plat.route_get("survivor").status_code == 200
    helpers.wait_for(lambda: (lambda p: p if p and p != pid else None)(cell_agent_pid(plat)), timeout=30,
                     what="berth up restarting the cell agent")
    # Re-adopted: the same instances, containers and since; nothing crashed or restarted.
    after = {i["guid"]: i for i in plat.wait_running("survivor", 2)}
    assert after.keys() == before.keys()
    for g, i in after.items():
        assert i["since"] == before[g]["since"]
        assert container_of(plat, g)["Id"] == ctrs[g]
    assert crash_events(plat, "survivor") == []
    plat.wait_route("survivor")
