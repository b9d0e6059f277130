"""Zero-downtime changes on a running platform (issue 5), driven through the API (``requests``; the CLI's
``--strategy rolling`` lands separately): a rolling deployment and a rolling restart while clients hammer the
app's route through the router (zero failed requests, every instance replaced), a scale-down under load
(zero failed requests: the router drops an instance before it is signalled), a deployment whose new
instances never become healthy (the old ones keep serving; cancel rolls back), a deployment superseded by a
newer one, and the API's 403/404/422 answers.

One ``berth up`` for the module (diego_docker enabled once); every test pushes apps of its own names.
"""

import threading
import time

import pytest
import requests

import helpers
from berthplatform import app_images, enable_docker, errors_of, plat  # noqa: F401


@pytest.fixture(scope="module", autouse=True)
def docker_on(plat):
    enable_docker(plat)


class Hammer:
    """Clients sending GET / to an app through the router, each on a new connection, until stopped; every
    answer that is not a 200 (or a connection error) is a failure."""

    def __init__(self, plat, name, threads=2):
        self.plat = plat
        self.host = plat.host(name)
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.bodies = set()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        while not self.stop_ev.is_set():
            try:
                r = requests.get(self.plat.router_url + "/", headers={"Host": self.host}, timeout=10)
                with self.lock:
                    if r.status_code == 200:
                        self.ok += 1
                        self.bodies.add(r.text.strip())
                    else:
                        self.failures.append((time.time(), r.status_code, r.headers.get("X-Cf-Routererror"),
                                              r.text[:100]))
            except requests.RequestException as e:
                with self.lock:
                    self.failures.append((time.time(), "error", str(e)[:200]))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(15)


def stats(plat, guid):
    return plat.api_json("GET", f"/v3/apps/{guid}/processes/web/stats")["resources"]


def running_guids(plat, guid):
    return {s["guid"] for s in stats(plat, guid) if s["state"] == "RUNNING"}


def wait_running_n(plat, guid, n, timeout=60):
    return helpers.wait_for(lambda: (lambda g: g if len(g) == n else None)(running_guids(plat, guid)),
                            timeout=timeout, what=f"{n} running instances", interval=0.1)


def stage(plat, app_guid, ref) -> str:
    pk = plat.api_json("POST", "/v3/packages", status=201, json={
        "type": "docker", "data": {"image": ref}, "relationships": {"app": {"data": {"guid": app_guid}}}})
    b = plat.api_json("POST", "/v3/builds", status=201, json={"package": {"guid": pk["guid"]}})
    assert b["state"] == "STAGED", b
    return b["droplet"]["guid"]


def deploy(plat, app_guid, droplet=None, token="admin"):
    body = {"strategy": "rolling", "relationships": {"app": {"data": {"guid": app_guid}}}}
    if droplet:
        body["droplet"] = {"guid": droplet}
    return plat.api("POST", "/v3/deployments", json=body, token=token)


def wait_final(plat, dep_guid, timeout=120):
    return helpers.wait_for(
        lambda: (lambda d: d if d["status"]["value"] == "FINALIZED" else None)(
            plat.api_json("GET", f"/v3/deployments/{dep_guid}")),
        timeout=timeout, what=f"deployment {dep_guid} to finish", interval=0.2)


def test_rolling_deployment_under_load(plat, app_images):
    plat.push("roll", app_images["web"], "-i", "3")
    guid = plat.app_guid("roll")
    old = wait_running_n(plat, guid, 3)
    plat.wait_route("roll")
    d2 = stage(plat, guid, app_images["web2"])
    with Hammer(plat, "roll") as h:
        time.sleep(0.3)  # some traffic before
        r = deploy(plat, guid, d2)
        assert r.status_code == 201, r.text
        dep = r.json()
        assert dep["state"] == "DEPLOYING" and dep["status"]["value"] == "ACTIVE"
        assert dep["droplet"] == {"guid": d2}
        done = wait_final(plat, dep["guid"])
        # traffic after, on the new version only
        helpers.wait_for(lambda: h.ok > 20, timeout=10, what="traffic")
        before = h.ok
        helpers.wait_for(lambda: h.ok > before + 20, timeout=10, what="traffic after the deployment")
    print(f"rolling deployment: {h.ok} requests, {len(h.failures)} failed")
    assert h.failures == [], h.failures[:10]
    assert done["status"]["reason"] == "DEPLOYED"
    new = wait_running_n(plat, guid, 3)
    assert not (new & old), "every instance replaced"
    assert h.bodies == {"berth-e2e-web 1", "berth-e2e-web 2"}, h.bodies
    assert plat.route_get("roll").text.strip() == "berth-e2e-web 2"
    assert len(plat.container_ids()) >= 3

    # a rolling restart (the current droplet) under load
    with Hammer(plat, "roll") as h:
        time.sleep(0.3)
        r = deploy(plat, guid)
        assert r.status_code == 201, r.text
        assert r.json()["droplet"] == {"guid": d2} and r.json()["previous_droplet"] == {"guid": d2}
        wait_final(plat, r.json()["guid"])
        before = h.ok
        helpers.wait_for(lambda: h.ok > before + 20, timeout=10, what="traffic after the restart")
    print(f"rolling restart: {h.ok} requests, {len(h.failures)} failed")
    assert h.failures == [], h.failures[:10]
    again = wait_running_n(plat, guid, 3)
    assert not (again & new)
    types = [e["type"] for e in plat.api_json("GET", f"/v3/audit_events?target_guids={guid}")["resources"]]
    assert types.count("audit.app.deployment.create") == 2


def test_scale_down_under_load(plat, app_images):
    plat.push("shrink", app_images["web"], "-i", "4")
    guid = plat.app_guid("shrink")
    wait_running_n(plat, guid, 4)
    plat.wait_route("shrink")
    n0 = len(plat.container_ids())
    with Hammer(plat, "shrink") as h:
        time.sleep(0.3)
        web = plat.api_json("GET", f"/v3/apps/{guid}/processes/web")
        r = plat.api("POST", f"/v3/processes/{web['guid']}/actions/scale", json={"instances": 1})
        assert r.status_code in (200, 202), r.text
        wait_running_n(plat, guid, 1)
        helpers.wait_for(lambda: len(plat.container_ids()) <= n0 - 3, timeout=30,
                         what="the 3 stopped containers to go")
        before = h.ok
        helpers.wait_for(lambda: h.ok > before + 20, timeout=10, what="traffic after the scale-down")
    print(f"scale-down 4 -> 1: {h.ok} requests, {len(h.failures)} failed")
    assert h.failures == [], h.failures[:10]


def test_unhealthy_deployment_keeps_old_then_cancel(plat, app_images):
    plat.push("stuck", app_images["web"], "-i", "2")
    guid = plat.app_guid("stuck")
    old = wait_running_n(plat, guid, 2)
    d1 = plat.api_json("GET", f"/v3/apps/{guid}/droplets/current")["guid"]
    bad = stage(plat, guid, app_images["crash"])  # exits at once: never healthy
    with Hammer(plat, "stuck") as h:
        dep = deploy(plat, guid, bad).json()
        # its first new instance crashes (restarted at once twice, then backoff); the old ones keep serving
        helpers.wait_for(lambda: plat.api_json(
            "GET", f"/v3/audit_events?target_guids={guid}&types=audit.app.process.crash")["resources"],
            timeout=60, what="the new instance to crash", interval=0.2)
        time.sleep(1)
        d = plat.api_json("GET", f"/v3/deployments/{dep['guid']}")
        assert d["status"]["value"] == "ACTIVE" and d["state"] == "DEPLOYING"
        assert old <= running_guids(plat, guid)
        r = plat.api("POST", f"/v3/deployments/{dep['guid']}/actions/cancel")
        assert r.status_code == 200, r.text
        d = wait_final(plat, dep["guid"], timeout=60)
        assert (d["state"], d["status"]["reason"]) == ("CANCELED", "CANCELED")
    assert h.failures == [], h.failures[:10]
    assert running_guids(plat, guid) == old, "the old instances were never stopped"
    assert plat.api_json("GET", f"/v3/apps/{guid}/droplets/current")["guid"] == d1
    r = plat.api("POST", f"/v3/deployments/{dep['guid']}/actions/cancel")
    assert r.status_code == 422, r.text
    types = [e["type"] for e in plat.api_json("GET", f"/v3/audit_events?target_guids={guid}")["resources"]]
    assert "audit.app.deployment.cancel" in types


def test_supersede_and_errors(plat, app_images):
    plat.push("sup", app_images["web"], "-i", "1")
    guid = plat.app_guid("sup")
    wait_running_n(plat, guid, 1)
    bad = stage(plat, guid, app_images["crash"])
    d2 = stage(plat, guid, app_images["web2"])
    first = deploy(plat, guid, bad).json()
    second = deploy(plat, guid, d2)
    assert second.status_code == 201, second.text
    d = plat.api_json("GET", f"/v3/deployments/{first['guid']}")
    assert (d["status"]["value"], d["status"]["reason"]) == ("FINALIZED", "SUPERSEDED")
    done = wait_final(plat, second.json()["guid"])
    assert done["status"]["reason"] == "DEPLOYED"
    plat.wait_route("sup", pred=lambda r: r.text.strip() == "berth-e2e-web 2")
    lst = plat.api_json("GET", f"/v3/deployments?app_guids={guid}&status_values=FINALIZED")
    assert lst["pagination"]["total_results"] == 2
    assert plat.api_json("GET", f"/v3/deployments?app_guids={guid}&status_values=ACTIVE")["resources"] == []

    # 422: a droplet of another app, a STOPPED app
    plat.push("sup-other", app_images["web"], "--no-start")
    other = plat.app_guid("sup-other")
    od = plat.api_json("GET", f"/v3/apps/{other}/droplets/current")["guid"]
    r = deploy(plat, guid, od)
    assert r.status_code == 422 and "belongs to this app" in errors_of(r)["detail"], r.text
    r = deploy(plat, other)
    assert r.status_code == 422 and errors_of(r)["detail"] == "Cannot create deployment for a STOPPED app."
    # 404 for an unknown app and for a user of another space; 403 for an auditor
    assert deploy(plat, "00000000-0000-4000-8000-000000000000").status_code == 404
    plat.cli("create-user", "depaud", "depaud-pw")
    plat.cli("set-space-role", "depaud", "default", "default", "SpaceAuditor")
    plat.cli("create-space", "elsewhere")
    plat.cli("create-user", "depdev", "depdev-pw")
    plat.cli("set-space-role", "depdev", "default", "elsewhere", "SpaceDeveloper")
    aud = plat.get_token("depaud", "depaud-pw")
    dev = plat.get_token("depdev", "depdev-pw")
    r = deploy(plat, guid, token=aud)
    assert r.status_code == 403 and errors_of(r)["code"] == 10003, r.text
    assert plat.api("GET", f"/v3/deployments/{first['guid']}", token=aud).status_code == 200
    assert deploy(plat, guid, token=dev).status_code == 404
    assert plat.api("GET", f"/v3/deployments/{first['guid']}", token=dev).status_code == 404
    # 403 while diego_docker is off, like start
    plat.cli("disable-feature-flag", "diego_docker")
    try:
        r = deploy(plat, guid)
        assert r.status_code == 403 and errors_of(r)["code"] == 330002, r.text
    finally:
        plat.cli("enable-feature-flag", "diego_docker")
