"""Tenancy and bad input on a running platform (issue 4), end to end from the CLI (and the API where the
CLI cannot send the bad request): a space developer cannot see or touch another space, an auditor reads but
cannot push or change env; invalid names, sizes, manifests and image references are answered with a
non-zero exit / 422 and change nothing.

One ``berth up`` for the module; tests in order (the tenancy set-up is a module fixture).
"""

import json

import pytest

from berthplatform import app_images, enable_docker, errors_of, parse_environ, plat  # noqa: F401 (fixtures)

ORG, SA, SB = "tenancy", "space-a", "space-b"


@pytest.fixture(scope="module")
def tenancy(plat, app_images):
    enable_docker(plat)
    p = plat
    p.cli("create-org", ORG)
    p.cli("create-space", SA, "-o", ORG)
    p.cli("create-space", SB, "-o", ORG)
    p.cli("create-user", "dev", "dev-pa55")
    p.cli("create-user", "aud", "aud-pa55")
    p.cli("set-space-role", "dev", ORG, SA, "SpaceDeveloper")
    p.cli("set-space-role", "aud", ORG, SA, "SpaceAuditor")
    # admin's apps: one in each space
    admin_home = p.login_home("admin", p.admin_password, ORG, SB)
    p.push("app-b", app_images["web"], "--no-route", home=admin_home)
    p.cli("set-env", "app-b", "SECRET_B", "b-value", home=admin_home)
    p.cli("target", "-o", ORG, "-s", SA, home=admin_home)
    p.push("app-a", app_images["web"], "--no-route", home=admin_home)
    p.cli("set-env", "app-a", "VISIBLE_A", "a-value", home=admin_home)
    guids = {}
    for space, app in ((SB, "app-b"), (SA, "app-a")):
        sp = p.api_json("GET", f"/v3/spaces?names={space}")["resources"][0]["guid"]
        guids[app] = p.api_json("GET", f"/v3/apps?names={app}&space_guids={sp}")["resources"][0]["guid"]
        guids[space] = sp
    return {"admin": admin_home, "dev": p.login_home("dev", "dev-pa55"),
            "aud": p.login_home("aud", "aud-pa55"),
            "dev_token": p.get_token("dev", "dev-pa55"), "aud_token": p.get_token("aud", "aud-pa55"),
            **guids}


def _app_state(p, guid):
    a = p.api_json("GET", f"/v3/apps/{guid}")
    env = p.api_json("GET", f"/v3/apps/{guid}/environment_variables")["var"]
    proc = p.api_json("GET", f"/v3/apps/{guid}/processes/web")
    return a["state"], a["name"], env, proc["instances"], proc["memory_in_mb"], proc["command"]


def test_login_targets_the_only_space(plat, tenancy):
    # dev has a role in one space only: login targeted it
    cfg = plat.cli("target", home=tenancy["dev"]).stdout
    assert ORG in cfg and SA in cfg


def test_developer_cannot_see_other_space(plat, tenancy):
    dev, tok = tenancy["dev"], tenancy["dev_token"]
    b = tenancy["app-b"]
    before = _app_state(plat, b)
    out = plat.cli("apps", home=dev).stdout
    assert "app-a" in out and "app-b" not in out
    r = plat.cli("target", "-o", ORG, "-s", SB, home=dev, check=False)
    assert r.returncode != 0
    assert plat.cli("app", "app-b", home=dev, check=False).returncode != 0
    # the API: 404 for everything of space B, never 403 (names do not leak)
    assert plat.api_json("GET", "/v3/apps?names=app-b", token=tok)["resources"] == []
    assert [s["name"] for s in plat.api_json("GET", "/v3/spaces", token=tok)["resources"]] == [SA]
    for method, path, body in [
        ("GET", f"/v3/apps/{b}", None),
        ("GET", f"/v3/apps/{b}/env", None),
        ("GET", f"/v3/spaces/{tenancy[SB]}", None),
        ("PATCH", f"/v3/apps/{b}/environment_variables", {"var": {"X": "1"}}),
        ("PATCH", f"/v3/apps/{b}", {"name": "stolen"}),
        ("POST", f"/v3/apps/{b}/actions/stop", None),
        ("DELETE", f"/v3/apps/{b}", None),
    ]:
        r = plat.api(method, path, token=tok, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert errors_of(r)["code"] == 10010
    # pushing into space B by guid
    r = plat.api("POST", "/v3/apps", token=tok, json={"name": "intruder", "lifecycle": {"type": "docker", "data": {}},
                                                     "relationships": {"space": {"data": {"guid": tenancy[SB]}}}})
    assert r.status_code in (404, 422), r.text
    assert _app_state(plat, b) == before
    assert "intruder" not in plat.app_names()


def test_developer_manages_own_space(plat, tenancy, app_images):
    dev = tenancy["dev"]
    plat.cli("set-env", "app-a", "DEV_SET", "1", home=dev)
    assert plat.cli_json("env", "app-a", home=dev)["environment_variables"]["DEV_SET"] == "1"
    plat.push("dev-app", app_images["web"], "--no-route", home=dev)
    assert "dev-app" in plat.cli("apps", home=dev).stdout
    plat.cli("delete", "dev-app", "-f", home=dev)
    assert "dev-app" not in plat.app_names()
    # but no flags, users or orgs
    assert plat.cli("disable-feature-flag", "diego_docker", home=dev, check=False).returncode != 0
    assert plat.cli("create-user", "eve", "eve-pa55", home=dev, check=False).returncode != 0
    assert plat.cli("create-org", "dev-org", home=dev, check=False).returncode != 0
    assert plat.api_json("GET", "/v3/feature_flags/diego_docker")["enabled"] is True


def test_auditor_reads_but_cannot_write(plat, tenancy, app_images):
    aud, tok = tenancy["aud"], tenancy["aud_token"]
    a = tenancy["app-a"]
    before = _app_state(plat, a)
    names_before = plat.app_names()
    assert "app-a" in plat.cli("apps", home=aud).stdout
    assert plat.app("app-a", home=aud)["app"]["guid"] == a
    r = plat.push("aud-app", app_images["web"], home=aud, check=False)
    assert r.returncode == 1 and "not authorized" in (r.stdout + r.stderr).lower(), r
    r = plat.push("app-a", app_images["web2"], home=aud, check=False)
    assert r.returncode == 1
    r = plat.cli("set-env", "app-a", "AUD", "1", home=aud, check=False)
    assert r.returncode == 1 and "not authorized" in r.stderr.lower(), r
    r = plat.cli("env", "app-a", home=aud, check=False)
    assert r.returncode == 1, "auditors may not read env variables"
    for cmd in (["app-stop", "app-a"], ["restart", "app-a"], ["scale", "app-a", "-i", "2"],
                ["delete", "app-a", "-f"]):
        assert plat.cli(*cmd, home=aud, check=False).returncode == 1, cmd
    r = plat.api("GET", f"/v3/apps/{a}/env", token=tok)
    assert r.status_code == 403 and errors_of(r)["code"] == 10003
    r = plat.api("PATCH", f"/v3/apps/{a}/environment_variables", token=tok, json={"var": {"AUD": "1"}})
    assert r.status_code == 403
    assert _app_state(plat, a) == before
    assert plat.app_names() == names_before


def test_wildcard_route_is_admins_and_routes_every_unrouted_name(plat, tenancy):
    """A wildcard route (host "*"), as Cloud Foundry's: every domain here is shared, so only an admin may create
    one (a developer gets 403 and nothing is created); it serves every name below the domain at any depth
    that has no route of its own, while routed names keep theirs. (The host "*" was refused as not a DNS
    label, and the router matched one level only.)"""
    p = plat
    dom = p.api_json("GET", "/v3/domains")["resources"][0]["guid"]
    body = {"host": "*", "relationships": {"space": {"data": {"guid": tenancy[SA]}},
                                           "domain": {"data": {"guid": dom}}}}
    before = p.api_json("GET", "/v3/routes?per_page=5000")["pagination"]["total_results"]
    r = p.api("POST", "/v3/routes", json=body, token=tenancy["dev_token"])
    assert r.status_code == 403 and errors_of(r)["code"] == 10003, r.text
    assert "wildcard" in errors_of(r)["detail"]
    assert p.api_json("GET", "/v3/routes?per_page=5000")["pagination"]["total_results"] == before
    route = p.api_json("POST", "/v3/routes", status=201, json=body)
    try:
        assert route["host"] == "*" and route["url"] == "*." + p.domain
        p.api_json("POST", f"/v3/routes/{route['guid']}/destinations",
                   json={"destinations": [{"app": {"guid": tenancy["app-a"]}}]})
        def app_of(r):
            return json.loads(parse_environ(r.content)["VCAP_APPLICATION"])["application_name"]

        for name in ("anything", "deep.er"):
            assert app_of(p.wait_route(p.host(name), "/cgi-bin/env", timeout=30)) == "app-a"
        # A name with a route of its own keeps it.
        own = p.api_json("POST", "/v3/routes", status=201, json={"host": "own-b", "relationships": {
            "space": {"data": {"guid": tenancy[SB]}}, "domain": {"data": {"guid": dom}}}})
        p.api_json("POST", f"/v3/routes/{own['guid']}/destinations",
                   json={"destinations": [{"app": {"guid": tenancy["app-b"]}}]})
        p.wait_route("own-b", "/cgi-bin/env", timeout=30, pred=lambda r: app_of(r) == "app-b")
        p.api_json("DELETE", f"/v3/routes/{own['guid']}", status=202)
    finally:
        p.api_json("DELETE", f"/v3/routes/{route['guid']}", status=202)
    p.wait_route("anything", status=404, timeout=10)


def test_bad_token(plat):
    r = plat.api("GET", "/v3/apps", token="not-a-token")
    assert r.status_code == 401 and errors_of(r)["code"] == 1000
    r = plat.api("GET", "/v3/apps", token=None)
    assert r.status_code == 401 and errors_of(r)["code"] == 10002
    r = plat.session.post(plat.api_url + "/oauth/token",
                          data={"grant_type": "password", "username": "admin", "password": "wrong"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = plat.cli("login", "-a", plat.api_url, "-u", "admin", "-p", "wrong", home=plat.work + "/home-bad",
                 check=False)
    assert r.returncode != 0


# --- bad input -------------------------------------------------------------------------------------------------

def _snapshot(p):
    """Apps with their env, processes and current droplets; routes; packages."""
    out = {}
    for a in p.api_json("GET", "/v3/apps?per_page=5000")["resources"]:
        proc = p.api_json("GET", f"/v3/apps/{a['guid']}/processes/web")
        env = p.api_json("GET", f"/v3/apps/{a['guid']}/environment_variables")["var"]
        out[a["guid"]] = (a["name"], a["state"], a["updated_at"], json.dumps(env, sort_keys=True),
                          proc["instances"], proc["memory_in_mb"], proc["disk_in_mb"], proc["command"])
    routes = sorted(r["url"] if "url" in r else r["host"] for r in
                    p.api_json("GET", "/v3/routes?per_page=5000")["resources"])
    return out, routes


@pytest.fixture(scope="module")
def bad_base(plat, tenancy, app_images):
    """admin targeting default/default, one app 'steady' there."""
    plat.cli("target", "-o", "default", "-s", "default")
    plat.push("steady", app_images["web"])
    plat.wait_route("steady")
    return plat


@pytest.mark.parametrize("args,codes", [
    (["-m", "0"], (1, 2)),
    (["-m", "abc"], (2,)),
    (["-m", "-5M"], (1, 2)),
    (["-k", "1X"], (2,)),
    (["-k", "0"], (1, 2)),
    (["-i", "-1"], (1, 2)),
    (["-i", "many"], (2,)),
    (["-t", "1000"], (1, 2)),
    (["-u", "tcp"], (1, 2)),
])
def test_bad_push_options(bad_base, app_images, args, codes):
    p = bad_base
    before = _snapshot(p)
    r = p.push("badopts", app_images["web"], *args, check=False)
    assert r.returncode in codes, (args, r.returncode, r.stderr)
    assert r.stderr.strip(), "an error message"
    r = p.push("steady", app_images["web"], *args, check=False)
    assert r.returncode in codes, (args, r.returncode, r.stderr)
    assert _snapshot(p) == before


@pytest.mark.parametrize("ref", ["UPPER/case:x", "a@sha256:zz", "bad ref", "127.0.0.1:5000/x:tag:tag",
                                 "repo:" + "t" * 200, "", "127.0.0.1:1/nothing-listens:1"])
def test_bad_references(bad_base, ref):
    p = bad_base
    before = _snapshot(p)
    r = p.push("badref", ref, check=False)
    assert r.returncode in (1, 2), (ref, r)
    assert r.stderr.strip()
    assert "badref" not in p.app_names()
    assert _snapshot(p) == before


def test_bad_reference_api_422(bad_base):
    p = bad_base
    guid = p.app_guid("steady")
    for ref in ("repo/UPPER:x", "a@sha256:zz"):  # "UPPER/case:x" is registry UPPER, as in Docker
        r = p.api("POST", "/v3/packages", json={"type": "docker", "data": {"image": ref},
                                               "relationships": {"app": {"data": {"guid": guid}}}})
        assert r.status_code == 422, r.text
        e = errors_of(r)
        assert e["code"] == 10008 and ref in e["detail"], e


def test_unknown_image_is_a_staging_error(bad_base, session_registry):
    p = bad_base
    before = _snapshot(p)
    r = p.push("missing-img", session_registry.ref("e2e/does-not-exist:1"), check=False)
    assert r.returncode == 1
    assert "image not found" in r.stdout + r.stderr, r.stderr
    assert "missing-img" not in p.app_names()
    assert _snapshot(p) == before


def test_bad_app_names(bad_base, app_images):
    p = bad_base
    before = _snapshot(p)
    r = p.push("", app_images["web"], check=False)
    assert r.returncode in (1, 2), r
    assert r.stderr.strip()
    assert _snapshot(p) == before


def test_bad_names_api(bad_base):
    p = bad_base
    before = _snapshot(p)
    space = p.api_json("GET", "/v3/spaces?names=default")["resources"][0]["guid"]
    rel = {"space": {"data": {"guid": space}}}
    for body, code, status in [
        ({"name": "", "relationships": rel, "lifecycle": {"type": "docker", "data": {}}}, 10008, 422),
        ({"relationships": rel, "lifecycle": {"type": "docker", "data": {}}}, 10008, 422),
        ({"name": "steady", "relationships": rel, "lifecycle": {"type": "docker", "data": {}}}, 10016, 422),
        ({"name": 7, "relationships": rel}, 10008, 422),
    ]:
        r = p.api("POST", "/v3/apps", json=body)
        assert r.status_code == status and errors_of(r)["code"] == code, (body, r.text)
    r = p.api("POST", "/v3/apps", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and errors_of(r)["code"] == 1001, r.text
    r = p.api("POST", "/v3/routes", json={"host": "Bad_Host!", "relationships": {
        "space": {"data": {"guid": space}},
        "domain": {"data": {"guid": p.api_json("GET", "/v3/domains")["resources"][0]["guid"]}}}})
    assert r.status_code == 422, r.text
    assert p.cli("create-space", "", check=False).returncode != 0
    assert p.cli("create-org", "", check=False).returncode != 0
    assert _snapshot(p) == before


def test_bad_sizes_api(bad_base):
    p = bad_base
    before = _snapshot(p)
    proc = p.app("steady")["process"]["guid"]
    for body in ({"memory_in_mb": 0}, {"disk_in_mb": 0}, {"instances": -1}, {"memory_in_mb": "big"}):
        r = p.api("POST", f"/v3/processes/{proc}/actions/scale", json=body)
        assert r.status_code == 422 and errors_of(r)["code"] == 10008, (body, r.text)
    for body in ({"health_check": {"type": "tcp"}}, {"health_check": {"type": "port", "data": {"timeout": 1000}}}):
        r = p.api("PATCH", f"/v3/processes/{proc}", json=body)
        assert r.status_code == 422, (body, r.text)
    r = p.api("GET", "/v3/apps?per_page=0")
    assert r.status_code == 400 and errors_of(r)["code"] == 10005
    r = p.api("GET", "/v3/apps?order_by=color")
    assert r.status_code == 400
    assert p.cli("scale", "steady", "-m", "zero", check=False).returncode == 2
    assert p.cli("scale", "steady", "-i", "-3", check=False).returncode in (1, 2)
    assert _snapshot(p) == before


# kind -> (manifest, what the error says): each is refused by the manifest's own checks before any request
# changes anything (not by an unknown -f, not half-way through a push).
MANIFESTS = {
    "not-yaml": ("applications: [\n  - name: x\n", "not valid YAML"),
    "no-applications": ("name: bad-mani\ndocker:\n  image: x\n", "no 'applications:'"),
    "applications-not-a-list": ("applications:\n  name: bad-mani\n", "applications must be a list"),
    "no-image": ("applications:\n- name: bad-mani\n  instances: 1\n", "no Docker image"),
    "bad-memory": ("applications:\n- name: bad-mani\n  docker:\n    image: {image}\n  memory: lots\n",
                   "memory: invalid size"),
    "bad-instances": ("applications:\n- name: bad-mani\n  docker:\n    image: {image}\n  instances: -2\n",
                      "instances must be an integer of 0 or more"),
    "bad-env": ("applications:\n- name: bad-mani\n  docker:\n    image: {image}\n  env:\n    PORT: 9\n",
                "'PORT' cannot be set"),
    "bad-route": ("applications:\n- name: bad-mani\n  docker:\n    image: {image}\n  routes:\n"
                  "  - route: 'no spaces.apps.localhost'\n", 'route "no spaces.apps.localhost"'),
    "unknown-domain": ("applications:\n- name: bad-mani\n  docker:\n    image: {image}\n  routes:\n"
                       "  - route: x.no-such-domain.example\n", "no such domain"),
    "bad-health-check": ("applications:\n- name: bad-mani\n  docker:\n    image: {image}\n"
                         "  health-check-type: telepathy\n", "health-check-type must be port, http or process"),
    "bad-timeout": ("applications:\n- name: bad-mani\n  docker:\n    image: {image}\n  timeout: 500\n",
                    "timeout must be an integer from 1 to 180"),
    "env-not-a-map": ("applications:\n- name: bad-mani\n  docker:\n    image: {image}\n  env: [A]\n",
                      "env must be a map"),
    # the first app is fine, the second is not: neither is pushed
    "second-app-bad": ("applications:\n- name: bad-mani\n  docker:\n    image: {image}\n"
                       "- name: bad-mani-2\n  docker:\n    image: {image}\n  memory: 0\n", "(bad-mani-2): memory"),
    "empty": ("", "manifest is empty"),
}


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_bad_manifests(bad_base, app_images, tmp_path, kind):
    p = bad_base
    before = _snapshot(p)
    m = tmp_path / "manifest.yml"
    text, says = MANIFESTS[kind]
    m.write_text(text.replace("{image}", app_images["web"]))
    r = p.cli("push", "-f", str(m), check=False)
    assert r.returncode in (1, 2), (kind, r)
    assert says in r.stderr, (kind, r.stderr)
    assert "Pushing app" not in r.stdout, "refused before the push began"
    assert "bad-mani" not in p.app_names() and "bad-mani-2" not in p.app_names()
    assert _snapshot(p) == before
