"""The router on a running platform (issue 6): its access log lines are the app's RTR logs.

One ``berth up`` for the module (diego_docker enabled once).
"""

import re

import pytest

import helpers
from berthplatform import app_images, enable_docker, parse_environ, plat  # noqa: F401


@pytest.fixture(scope="module", autouse=True)
def docker_on(plat):
    enable_docker(plat)


def test_access_log_in_app_logs(plat, app_images):
    plat.push("rtrlog", app_images["web"])
    plat.wait_route("rtrlog")
    assert plat.route_get("rtrlog", "/index.html?from=rtr-test", headers={"User-Agent": "rtr-e2e"}).status_code == 200

    def rtr_line():
        out = plat.cli("logs", "rtrlog", "--recent").stdout
        return next((l for l in out.splitlines() if "from=rtr-test" in l), None)

    line = helpers.wait_for(rtr_line, timeout=10, what="the RTR line in berth logs --recent")
    host = plat.host("rtrlog")
    assert re.search(r"\[RTR/0\] OUT " + re.escape(host) + r' - \[\S+\] "GET /index\.html\?from=rtr-test HTTP/1\.1" '
                     r'200 0 \d+ "-" "rtr-e2e" ', line), line
    guid = plat.app_guid("rtrlog")
    assert f'app_id:"{guid}"' in line and 'app_index:"0"' in line
    # Another app's logs do not get it.
    plat.push("rtrother", app_images["web"], "--no-route")
    assert "from=rtr-test" not in plat.cli("logs", "rtrother", "--recent").stdout


def test_instance_headers_pin_a_real_instance(plat, app_images):
    """On a running platform, X-CF-App-Instance "APP_GUID:INDEX" and X-CF-Process-Instance
    "PROCESS_GUID:INDEX" reach that instance every time. The web process has its app's guid, as Cloud
    Controller gives it (it had a guid of its own, so X-CF-Process-Instance with the process guid the API
    shows was refused as an unknown instance)."""
    plat.push("pinned", app_images["web"], "-i", "2")
    plat.wait_running("pinned", 2)
    app = plat.app("pinned")
    guid, proc = app["app"]["guid"], app["process"]["guid"]
    assert proc == guid
    plat.wait_route("pinned")
    for header, owner in (("X-CF-App-Instance", guid), ("X-CF-Process-Instance", proc)):
        for index in (1, 0, 1):
            for _ in range(3):
                r = plat.route_get("pinned", "/cgi-bin/env", headers={header: f"{owner}:{index}"})
                assert r.status_code == 200, (header, r.status_code, r.text)
                assert parse_environ(r.content)["CF_INSTANCE_INDEX"] == str(index), (header, index)
    r = plat.route_get("pinned", "/", headers={"X-CF-App-Instance": f"{guid}:5"})
    assert r.status_code == 400 and r.headers["X-Cf-Routererror"] == "unknown_route"
