"""The router on a running platform (issue 6): its access log lines are the app's RTR logs.

One ``berth up`` for the module (diego_docker enabled once).
"""

import re

import pytest

import helpers
from berthplatform import app_images, enable_docker, plat  # noqa: F401


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
