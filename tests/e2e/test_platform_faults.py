"""Faults of berth itself (issue 5, "Zero-downtime and restarts of berth itself"), end to end, each asserting
what a user would see while a client thread sends requests through the router:

- kill -9 of the cell agent: zero failed requests; ``berth up`` restarts it; it re-adopts its containers
  without restarting any (same instance guids, same ``since``, same container pids);
- kill -9 of the controller: zero failed requests (the router keeps its last table); nothing in the store
  is lost; on restart it converges without duplicating or killing healthy instances;
- kill -9 of the router: restarted, table rebuilt; requests fail only while it is down (gap printed);
- a power-loss-like stop of everything, and a clean SIGTERM stop, each followed by ``berth up`` on the same
  data dir: started apps come back, stopped ones stay stopped, stale state is cleaned up;
- ``diego_docker`` turned off and on under load;
- a long streamed response through the router survives route table changes.

One ``berth up`` for the module (restarted in place by the tests that stop it). Tests run in order.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

import helpers
import imagebuild as ib
from berthplatform import (Hammer, _cgroups_of, _links_on, _bridge_of, app_images, enable_docker, plat,  # noqa: F401
                           web_image, web_layer)


@pytest.fixture(scope="module", autouse=True)
def docker_on(plat):
    enable_docker(plat)


def instances(plat, name) -> dict:
    """guid -> (index, state, since) of the app's instances, as ``berth app`` shows them."""
    return {i["guid"]: (i["index"], str(i["state"]).upper(), i["since"])
            for i in plat.app(name).get("instances") or []}


def container_pid(plat, guid) -> int:
    doc = helpers.inspect_ctr(plat.data_dir, f"i-{guid}")
    assert doc["State"]["Running"], doc["State"]
    return doc["State"]["Pid"]


def cell_instances(plat) -> dict:
    """The cell agent's own view (GET /v1/lrps with the internal token): guid -> state; {} while it is down."""
    with open(os.path.join(plat.data_dir, "internal-token")) as f:
        token = f.read().strip()
    try:
        r = requests.get(f"http://127.0.0.1:{plat.cell_port}/v1/lrps", timeout=2,
                         headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException:
        return {}
    if r.status_code != 200:
        return {}
    return {i["instance_guid"]: i["state"] for i in r.json().get("instances", [])}


def push_running(plat, name, ref, n, *args):
    plat.push(name, ref, "-i", str(n), *args)
    plat.wait_running(name, n)
    plat.wait_route(name)


# --- 1. kill -9 of the cell agent --------------------------------------------------------------------------

def test_kill9_cell_agent_readopts_without_restarts(plat, app_images):
    push_running(plat, "kcell", app_images["web"], 2)
    before = instances(plat, "kcell")
    assert len(before) == 2 and all(st == "RUNNING" for _, st, _ in before.values())
    pids = {g: container_pid(plat, g) for g in before}
    ctrs = plat.container_ids()
    old = plat.children()["cell"]
    with Hammer(plat, "kcell") as h:
        t_kill = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = plat.wait_child_restarted("cell", old)
        print(f"cell agent {old} killed; berth up restarted it as {new} after "
              f"{time.monotonic() - t_kill:.3f} s")
        helpers.wait_for(lambda: set(cell_instances(plat)) >= set(before), timeout=20,
                         what="the restarted agent to list both instances again", interval=0.02)
        # The adopted instances' liveness checks run and heartbeats reach the controller meanwhile.
        h.observe(6)
        h.wait_ok(20, since=t_kill)
    fails = h.failures()
    assert fails == [], f"{len(fails)} of {len(h.results)} requests failed: {fails[:5]}"
    after = instances(plat, "kcell")
    assert after == before, "the re-adopted instances must keep their guids, state and since"
    assert {g: container_pid(plat, g) for g in after} == pids, "no container was restarted"
    assert plat.container_ids() == ctrs, "no container was created or removed"
    d = plat.app("kcell")
    assert len(plat.running("kcell")) == 2 and d["process"]["instances"] == 2
    assert "2/2" in plat.cli("app", "kcell").stdout


# --- 2. kill -9 of the controller --------------------------------------------------------------------------

def test_kill9_controller_keeps_routes_and_store(plat, app_images):
    push_running(plat, "kctl", app_images["web"], 2)
    # What a user created just before the crash: env, a user and a role, a second route, a stopped app.
    plat.cli("set-env", "kctl", "CRASH_TEST", "kept")
    plat.cli("create-user", "crashdev", "pw-crashdev")
    plat.cli("set-space-role", "crashdev", "default", "default", "SpaceDeveloper")
    app_guid = plat.app_guid("kctl")
    space = plat.api_json("GET", "/v3/spaces?names=default")["resources"][0]["guid"]
    domain = plat.api_json("GET", f"/v3/domains?names={plat.domain}")["resources"][0]["guid"]
    route = plat.api_json("POST", "/v3/routes", status=201, json={
        "host": "kctl-extra", "relationships": {"space": {"data": {"guid": space}},
                                                "domain": {"data": {"guid": domain}}}})
    plat.api_json("POST", f"/v3/routes/{route['guid']}/destinations", json={
        "destinations": [{"app": {"guid": app_guid, "process": {"type": "web"}}}]})
    plat.wait_route("kctl-extra")
    before = instances(plat, "kctl")
    pids = {g: container_pid(plat, g) for g in before}
    ctrs = plat.container_ids()
    old = plat.children()["controller"]
    with Hammer(plat, "kctl") as h:
        t_kill = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = plat.wait_child_restarted("controller", old)

        def api_up():
            try:
                return plat.session.get(plat.api_url + "/v3/info", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        helpers.wait_for(api_up, timeout=20, what="the restarted controller's API", interval=0.02)
        print(f"controller {old} killed; {new} answers after {time.monotonic() - t_kill:.3f} s")
        # A few convergence sweeps (1 s each) and cell heartbeats (2 s) after the restart.
        h.observe(5)
        h.wait_ok(20, since=t_kill)
    fails = h.failures()
    assert fails == [], f"{len(fails)} of {len(h.results)} requests failed: {fails[:5]}"
    # Nothing lost (the old admin token is in the store too).
    env = plat.api_json("GET", f"/v3/apps/{app_guid}/environment_variables")["var"]
    assert env.get("CRASH_TEST") == "kept"
    users = plat.api_json("GET", "/v3/users?per_page=5000")["resources"]
    dev = [u for u in users if u["username"] == "crashdev"]
    assert dev, "user created before the crash is gone"
    roles = plat.api_json("GET", f"/v3/roles?per_page=5000")["resources"]
    assert any(r["type"] == "space_developer" and r["relationships"]["user"]["data"]["guid"] == dev[0]["guid"]
               for r in roles), "role created before the crash is gone"
    assert plat.api_json("GET", f"/v3/routes/{route['guid']}")["host"] == "kctl-extra"
    plat.login_home("crashdev", "pw-crashdev")
    assert plat.wait_route("kctl-extra").status_code == 200
    # Converged without duplicating or killing the healthy instances.
    after = instances(plat, "kctl")
    assert after == before
    assert {g: container_pid(plat, g) for g in after} == pids
    assert plat.container_ids() == ctrs, "the restarted controller created or removed containers"


# --- 3. kill -9 of the router ------------------------------------------------------------------------------

def test_kill9_router_restarts_and_rebuilds_its_table(plat, app_images):
    push_running(plat, "krtr", app_images["web"], 2)
    old = plat.children()["router"]
    with Hammer(plat, "krtr", pace=0.005) as h:
        t_kill = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = plat.wait_child_restarted("router", old)
        h.wait_ok(20, since=time.monotonic())
    res = [r for r in h.results if r[0] >= t_kill]
    first_ok = next(t for t, st, _ in res if st == 200)
    fails = [r for r in res if r[1] != 200]
    last_fail = max((t for t, _, _ in fails), default=t_kill)
    gap = first_ok - t_kill
    print(f"router {old} killed, restarted as {new}: first 200 after {gap * 1000:.0f} ms; "
          f"{len(fails)} failed requests, the last {(last_fail - t_kill) * 1000:.0f} ms after the kill")
    assert gap < 3.0, f"the route came back after {gap:.2f} s"
    # Failures only while it was down: none after the first success.
    assert all(t < first_ok for t, _, _ in fails), f"failures after the router was back: {fails}"
    assert all(st in (None, 200) or st in (404, 503) for _, st, _ in res)


# --- 4. a power loss, and a clean stop, followed by berth up on the same data dir -------------------------

def _kernel_leftovers(plat, ids) -> dict:
    """What containers ``ids`` may have left on the host: mounts, cgroups, netns mounts, veths, leases."""
    with open("/proc/mounts") as f:
        mounts = [l for l in f.read().splitlines() if any(i in l for i in ids)]
    netns = os.path.join(plat.data_dir, "cell", "netns")
    leases = os.path.join(plat.data_dir, "cell", "net")
    bridge = _bridge_of(plat.config)
    return {
        "mounts": mounts,
        "cgroups": _cgroups_of(ids),
        "netns": [n for n in (os.listdir(netns) if os.path.isdir(netns) else []) if n.split("@")[0] in ids],
        "leases": [l for l in (os.listdir(leases) if os.path.isdir(leases) else [])
                   if os.path.islink(os.path.join(leases, l))
                   and os.readlink(os.path.join(leases, l)) in ids],
        "container dirs": [i for i in plat.container_ids() if i in ids],
        "veths": len(_links_on(bridge)) if bridge else 0,
    }


def _truly_running(plat, name, n):
    """n instances RUNNING in ``berth app`` that the cell agent also runs (not stale rows of the store)."""
    cell = cell_instances(plat)
    run = [i["guid"] for i in plat.running(name)]
    return len(run) == n and all(cell.get(g) == "RUNNING" for g in run)


def _stale_running(plat, names) -> list:
    """Instances ``berth app`` shows RUNNING that the cell does not have at all (asked after berth app, so
    that an instance placed and started in between is not counted)."""
    shown = [(n, i["guid"]) for n in names for i in plat.running(n)]
    cell = cell_instances(plat)
    return [(n, g) for n, g in shown if g not in cell]


def _apps_back(plat, started: dict, stopped: list, timeout=90):
    for name, n in started.items():
        helpers.wait_for(lambda: _truly_running(plat, name, n), timeout=timeout,
                         what=f"{n} instances of {name} running on the cell", interval=0.2)
        plat.wait_route(name, timeout=timeout)
        assert f"{n}/{n}" in plat.cli("app", name).stdout
    for name in stopped:
        d = plat.app(name)
        assert d["app"]["state"] == "STOPPED", d["app"]
        # A stopped process shows DOWN placeholders, never an instance of its own.
        assert all(i.get("guid") is None and str(i["state"]).upper() == "DOWN"
                   for i in d.get("instances") or []), d["instances"]
        assert plat.route_get(name).status_code in (404, 503)


def test_power_loss_then_up_brings_started_apps_back(plat, app_images):
    push_running(plat, "boot1", app_images["web"], 2)
    push_running(plat, "boot2", app_images["web2"], 1)
    plat.push("bootoff", app_images["web"], "--no-start")
    names = set(plat.app_names())
    started = {n: len(plat.running(n)) for n in ("kcell", "kctl", "krtr", "boot1", "boot2") if n in names}
    assert started["boot1"] == 2
    old_ids = plat.container_ids()
    assert len(old_ids) == sum(started.values())
    killed = plat.power_loss()
    print(f"power loss: {len(killed)} processes killed, {len(old_ids)} containers dead")
    t0 = time.monotonic()
    off = len(plat.log())
    plat.start()
    _apps_back(plat, started, ["bootoff"])
    print(f"after the power loss every app was routable again {time.monotonic() - t0:.1f} s after berth up")
    # The dead run's containers are gone from the host; the new ones are all there is.
    helpers.wait_for(lambda: not any(v for k, v in _kernel_leftovers(plat, old_ids).items() if k != "veths"),
                     timeout=30, what=f"the dead containers' leftovers to go: {_kernel_leftovers(plat, old_ids)}")
    # Exactly one container per started instance: none placed twice (a heartbeat of the new agent session
    # that omits an instance whose PUT is still on its way must not make the controller place it again).
    extra = len(plat.container_ids()) - sum(started.values())
    log = plat.log()[off:]
    unwanted = [l for l in log.splitlines() if "the store does not want" in l]
    assert extra == 0 and not unwanted, (plat.container_ids(), unwanted)
    assert _kernel_leftovers(plat, old_ids)["veths"] == sum(started.values())
    warns = [l for l in log.splitlines() if " warn " in l or " error " in l]
    print("warnings after the power loss:\n" + "\n".join(warns[:40]))
    bad = [l for l in log.splitlines() if " error " in l or "berth up: cannot" in l]
    assert not bad, bad


def test_sigterm_then_up_brings_started_apps_back(plat, app_images):
    names = set(plat.app_names())
    if "boot1" not in names:
        push_running(plat, "boot1", app_images["web"], 2)
        plat.push("bootoff", app_images["web"], "--no-start")
        names.add("boot1")
    started = {n: len(plat.running(n)) for n in ("boot1", "boot2", "kcell", "kctl", "krtr") if n in names}
    assert plat.stop() == 0
    assert plat.container_ids() == [], "berth up's stop drains its cell"
    t0 = time.monotonic()
    plat.start()
    stale = _stale_running(plat, started)
    _apps_back(plat, started, ["bootoff"])
    print(f"after a clean stop every app was routable again {time.monotonic() - t0:.1f} s after berth up")
    assert len(plat.container_ids()) == sum(started.values())
    # Rows the drained cell no longer reports go with its first heartbeat: none shows RUNNING, none is routed.
    assert not stale, f"instances shown RUNNING that the cell no longer runs: {stale}"
