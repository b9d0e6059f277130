"""The diego_docker feature flag end to end (issues 4, 5): off on a new platform, the error text, admin-only,
turning it off stops every running Docker app's instances within 1 s (measured from the PATCH's answer to
the containers' processes gone), turning it on brings started apps back; both under load through the router
(clients see 503 no_endpoints while it is off, never a failed connection or a 502).

One ``berth up`` for the module; the tests run in order (each starts from the state the previous left).
"""

import glob
import os
import time

import helpers
from berthplatform import Hammer, _cgroups_of, app_images, errors_of, plat  # noqa: F401 (fixtures)

FLAG = "diego_docker"


def test_fresh_platform(plat):
    """What berth up sets up on first start: the admin login, org and space default (targeted by login),
    the shared domain, its log, and internal APIs closed to callers without the internal token."""
    log = plat.log()
    assert plat.api_url in log, "berth up prints the API URL"
    assert "admin-password" in log, "berth up prints where the admin password is"
    assert "controller | " in log
    info = plat.api_json("GET", "/v3/info", token=None)
    assert info["name"] == "berth" and info.get("version")
    root = plat.api_json("GET", "/", token=None)
    assert root["links"]["cloud_controller_v3"]["href"] == plat.api_url + "/v3"
    orgs = [o["name"] for o in plat.api_json("GET", "/v3/organizations")["resources"]]
    spaces = [s["name"] for s in plat.api_json("GET", "/v3/spaces")["resources"]]
    assert orgs == ["default"] and spaces == ["default"]
    assert [d["name"] for d in plat.api_json("GET", "/v3/domains")["resources"]] == [plat.domain]
    target = plat.cli("target").stdout
    assert "default" in target and "admin" in target
    cfg_path = plat.home + "/config.json"
    import json
    import os
    assert os.stat(cfg_path).st_mode & 0o777 == 0o600
    with open(cfg_path) as f:
        cfg = json.load(f)
    assert cfg["org"]["name"] == "default" and cfg["space"]["name"] == "default" and cfg["username"] == "admin"
    # internal APIs: 401 without the internal token
    import requests
    r = requests.get(plat.api_url + "/internal/v1/routes", timeout=10)
    assert r.status_code == 401, r.text
    r = requests.get(f"http://127.0.0.1:{plat.cell_port}/v1/lrps", timeout=10)
    assert r.status_code == 401, r.text
    r = requests.get(f"http://127.0.0.1:{plat.cell_port}/v1/lrps",
                     headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401, r.text
    with open(os.path.join(plat.data_dir, "internal-token")) as f:
        tok = f.read().strip()
    assert os.stat(os.path.join(plat.data_dir, "internal-token")).st_mode & 0o777 == 0o600
    r = requests.get(f"http://127.0.0.1:{plat.cell_port}/v1/lrps", headers={"Authorization": f"Bearer {tok}"},
                     timeout=10)
    assert r.status_code == 200 and r.json()["instances"] == [], r.text


def test_flag_off_by_default(plat):
    doc = plat.api_json("GET", f"/v3/feature_flags/{FLAG}")
    assert doc["name"] == FLAG and doc["enabled"] is False
    flags = {f["name"]: f["enabled"] for f in plat.api_json("GET", "/v3/feature_flags")["resources"]}
    assert flags[FLAG] is False
    assert flags.get("user_org_creation") is False
    out = plat.cli("feature-flag", FLAG).stdout
    assert FLAG in out and "disabled" in out
    assert plat.cli_json("feature-flag", FLAG)["enabled"] is False
    assert FLAG in plat.cli("feature-flags").stdout


def test_push_refused_while_off(plat, app_images):
    before = plat.app_names()
    r = plat.push("flagapp", app_images["web"], check=False)
    assert r.returncode == 1, r
    assert "For application 'flagapp': Feature Disabled: diego_docker" in r.stdout + r.stderr
    assert plat.app_names() == before, "a refused push left an app behind"
    assert plat.api_json("GET", "/v3/apps?names=flagapp")["resources"] == []

    # The API's answer to creating a Docker app.
    space = plat.api_json("GET", "/v3/spaces?names=default")["resources"][0]["guid"]
    r = plat.api("POST", "/v3/apps", json={"name": "flagapp", "lifecycle": {"type": "docker", "data": {}},
                                           "relationships": {"space": {"data": {"guid": space}}}})
    assert r.status_code == 403, r.text
    assert errors_of(r) == {"code": 330002, "title": "CF-FeatureDisabled",
                            "detail": "Feature Disabled: diego_docker"}
    assert plat.app_names() == before


def test_only_admins_change_flags(plat):
    plat.cli("create-user", "flagdev", "flagdev-pw")
    plat.cli("set-space-role", "flagdev", "default", "default", "SpaceDeveloper")
    home = plat.login_home("flagdev", "flagdev-pw")
    r = plat.cli("enable-feature-flag", FLAG, home=home, check=False)
    assert r.returncode != 0
    assert "not authorized" in (r.stdout + r.stderr).lower()
    tok = plat.get_token("flagdev", "flagdev-pw")
    r = plat.api("PATCH", f"/v3/feature_flags/{FLAG}", token=tok, json={"enabled": True})
    assert r.status_code == 403 and errors_of(r)["code"] == 10003, r.text
    # ... and they may read them
    assert plat.api_json("GET", f"/v3/feature_flags/{FLAG}", token=tok)["enabled"] is False
    # no token at all
    r = plat.api("PATCH", f"/v3/feature_flags/{FLAG}", token=None, json={"enabled": True})
    assert r.status_code == 401, r.text
    assert plat.api_json("GET", f"/v3/feature_flags/{FLAG}")["enabled"] is False


def test_custom_error_message(plat, app_images):
    plat.api_json("PATCH", f"/v3/feature_flags/{FLAG}",
                  json={"enabled": False, "custom_error_message": "docker apps are off today"})
    try:
        r = plat.push("flagapp", app_images["web"], check=False)
        assert r.returncode == 1
        assert "Feature Disabled: docker apps are off today" in r.stdout + r.stderr
    finally:
        plat.api_json("PATCH", f"/v3/feature_flags/{FLAG}", json={"enabled": False, "custom_error_message": None})
    assert plat.api_json("GET", "/v3/apps?names=flagapp")["resources"] == []


def test_enable_then_push(plat, app_images):
    out = plat.cli("enable-feature-flag", FLAG).stdout
    assert plat.cli_json("feature-flag", FLAG)["enabled"] is True, out
    plat.push("flagapp", app_images["web"], "-i", "2")
    plat.wait_route("flagapp")
    plat.wait_running("flagapp", 2)
    events = plat.api_json("GET", "/v3/audit_events?types=audit.feature_flag.update")["resources"]
    assert events, "no audit.feature_flag.update event"


def cgroup_pids(cgroups) -> list:
    """The processes still in these cgroups (a removed cgroup has none)."""
    pids = []
    for cg in cgroups:
        for f in glob.glob(os.path.join(cg, "**", "cgroup.procs"), recursive=True):
            try:
                with open(f) as fh:
                    pids += [int(x) for x in fh.read().split()]
            except OSError:
                pass
    return pids


# Issue 5: within 1 s; a loaded 2-core machine (other e2e suites run alongside) gets a little slack.
STOP_BUDGET_S = 1.5


def test_disable_stops_apps_within_1s(plat, app_images):
    guid = plat.app_guid("flagapp")
    ids = plat.container_ids()
    assert ids, "no containers on the cell"
    cgroups = _cgroups_of(ids)
    assert cgroup_pids(cgroups), f"no processes in the containers' cgroups {cgroups}"
    r = plat.api("PATCH", f"/v3/feature_flags/{FLAG}", json={"enabled": False})
    t0 = time.monotonic()
    assert r.status_code == 200 and r.json()["enabled"] is False, r.text
    helpers.wait_for(lambda: not cgroup_pids(cgroups), timeout=10, interval=0.005,
                     what="the containers' processes to be gone")
    took = time.monotonic() - t0
    print(f"\ndiego_docker off: every instance's processes gone {took * 1000:.0f} ms after the PATCH answered")
    assert took <= STOP_BUDGET_S, f"instances stopped after {took:.3f} s (budget 1 s, {STOP_BUDGET_S} s with slack)"

    def stopped():
        r = plat.route_get("flagapp")
        return r.status_code in (404, 503) and not plat.running("flagapp")
    helpers.wait_for(stopped, timeout=5, what="flagapp's route to fail and its instances to go", interval=0.05)
    helpers.wait_for(lambda: plat.container_ids() == [], timeout=5,
                     what="the cell's containers of flagapp to be removed", interval=0.05)
    r = plat.route_get("flagapp")
    assert r.status_code in (404, 503)
    # The app is still wanted (CF's database keeps STARTED): it comes back when the flag is on again.
    assert plat.app("flagapp")["app"]["state"] == "STARTED"
    # Starting or restarting a Docker app while off is refused too.
    for action in ("start", "restart"):
        r = plat.api("POST", f"/v3/apps/{guid}/actions/{action}")
        assert r.status_code == 403 and errors_of(r)["code"] == 330002, (action, r.text)
    r = plat.cli("restart", "flagapp", check=False)
    assert r.returncode == 1 and "Feature Disabled: diego_docker" in r.stdout + r.stderr


def test_enable_brings_started_apps_back(plat):
    plat.cli("enable-feature-flag", FLAG)
    plat.wait_route("flagapp", timeout=30)
    plat.wait_running("flagapp", 2, timeout=30)
    # the app's own events show the flag going off and on (and its start, scale, ...)
    guid = plat.app_guid("flagapp")
    evs = plat.api_json("GET", f"/v3/audit_events?target_guids={guid}")["resources"]
    flag = [e["data"] for e in evs if e["type"] == "audit.feature_flag.update"]
    assert {"name": FLAG, "enabled": False, "previous_enabled": True} in flag, evs
    assert {"name": FLAG, "enabled": True, "previous_enabled": False} in flag, evs
    plat.cli("delete", "flagapp", "-f")
    helpers.wait_for(lambda: plat.route_get("flagapp").status_code == 404, timeout=10,
                     what="flagapp's route to go")


def test_flag_off_and_on_under_load(plat, app_images):
    plat.cli("enable-feature-flag", FLAG)
    plat.push("flagload", app_images["web"], "-i", "2")
    plat.wait_running("flagload", 2)
    plat.wait_route("flagload")
    with Hammer(plat, "flagload", pace=0.005) as h:
        h.wait_ok(20)
        t_off = time.monotonic()
        r = plat.api("PATCH", f"/v3/feature_flags/{FLAG}", json={"enabled": False})
        assert r.status_code == 200, r.text
        helpers.wait_for(lambda: plat.container_ids() == [], timeout=10, interval=0.02,
                         what="flagload's containers to go")
        t_gone = time.monotonic()
        h.observe(0.5)
        t_on = time.monotonic()
        r = plat.api("PATCH", f"/v3/feature_flags/{FLAG}", json={"enabled": True})
        assert r.status_code == 200, r.text
        h.wait_ok(1, since=t_on, timeout=60)
        t_back = min(t for t, st, _ in h.results if t >= t_on and st == 200)
        h.observe(1.0)
    res = list(h.results)
    first_503 = min(t for t, st, _ in res if t >= t_off and st == 503)
    print(f"\nunder load: {len(res)} requests; flag off -> 503 after {(first_503 - t_off) * 1000:.0f} ms, "
          f"containers gone after {(t_gone - t_off) * 1000:.0f} ms; flag on -> 200 again after "
          f"{(t_back - t_on) * 1000:.0f} ms")
    assert all(st == 200 for t, st, _ in res if t < t_off), [x for x in res if x[0] < t_off and x[1] != 200]
    # Off: instances leave the routes before they are signalled, so clients get 503 no_endpoints, never a
    # failed connection, a timeout or a 502.
    during = [(t, st, d) for t, st, d in res if t_off <= t < t_back]
    bad = [x for x in during if x[1] not in (200, 503) or (x[1] == 503 and "has no avai" not in x[2])]
    assert not bad, bad
    assert not [x for x in during if x[1] == 200 and x[0] > first_503], "a 200 while the flag was off"
    assert first_503 - t_off < 1.5
    # On: every request from the first 200 on succeeds (a new instance is routed only once healthy).
    after = [x for x in res if x[0] >= t_back]
    assert len(after) > 20 and all(st == 200 for _, st, _ in after), [x for x in after if x[1] != 200]
    plat.wait_running("flagload", 2)
    plat.cli("delete", "flagload", "-f")
