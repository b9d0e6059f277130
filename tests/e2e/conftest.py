"""pytest fixtures for the berth e2e tests (run with
``/usr/bin/python3 -m pytest tests/e2e``; needs root and the Debian packages
in ``REQUIREMENTS.txt``).

Registries (``registry.Registry``; function scope, fresh storage each test,
torn down -- process killed, dirs removed -- even on failure):

``registry_plain``   plain HTTP
``registry_tls``     HTTPS, ``.ca`` = test CA cert path
``registry_basic``   htpasswd Basic auth over plain HTTP, ``.auth`` =
                     ("alice", "s3cret-pa55")
``registry_token``   Bearer tokens, ``.auth`` = ("bob", "t0ken-pa55"),
                     ``.token_server`` = tokenserver.TokenServer (counts,
                     post_enabled, expires_in, ...)
``registry_any``     parametrised over the four above (ids plain/tls/basic/token)
``registry_factory`` ``make(mode, **Registry kwargs)`` for custom setups
                     (all stopped at teardown; on test failure their log
                     tails are printed), e.g.
                     ``registry_factory("token", token_opts={"expires_in": 60})``
                     or ``registry_factory("basic", tls=True)``
``session_registry`` one plain registry shared by the session (unique repo
                     names please)
``test_ca``          session-wide ``registry.TestCA`` (``ca_cert``,
                     ``server_cert``, ``server_key``, ``cert_dir``)

Others:

``fake_registry``    started ``fakeregistry.FakeRegistry`` (HTTP, 127.0.0.1,
                     blob/redirect server on 127.0.0.2)
``berth_data``       empty temporary berth data dir (str), removed afterwards
                     (mounts below it are lazily unmounted first)
``run_berth``        the ``berthcli.run_berth`` function
``scratch``          an empty temp dir (str) removed afterwards

Image builders are plain functions in ``imagebuild`` (``busybox_image()``,
``rich_image()``, ``multiarch_index()``, ``build_image()``, ...); tree
helpers in ``treecmp``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import berthcli  # noqa: E402
import fakeregistry  # noqa: E402
import registry as registry_mod  # noqa: E402


@pytest.fixture(scope="session")
def test_ca():
    ca = registry_mod.TestCA()
    yield ca
    ca.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture
def registry_factory(request, test_ca):
    started = []

    def make(mode="plain", **kw):
        kw.setdefault("ca", test_ca)
        r = registry_mod.Registry(mode, **kw)
        started.append(r)
        return r.start()

    yield make
    failed = _failed(request)
    for r in started:
        if failed and r.dir:
            print(f"--- {r!r} log tail ---\n{r.log_tail()}")
        r.stop()


@pytest.fixture(scope="session")
def session_registry(test_ca):
    """One plain-HTTP registry shared by the whole session (faster; use
    unique repository names and don't rely on it being empty)."""
    r = registry_mod.Registry("plain", ca=test_ca).start()
    yield r
    r.stop()


@pytest.fixture
def registry_plain(registry_factory):
    return registry_factory("plain")


@pytest.fixture
def registry_tls(registry_factory):
    return registry_factory("tls")


@pytest.fixture
def registry_basic(registry_factory):
    """htpasswd Basic auth.  distribution 2.8.2 accepts htpasswd without
    TLS, so this is plain HTTP (use ``registry_factory("basic", tls=True)``
    for Basic over HTTPS)."""
    return registry_factory("basic")


@pytest.fixture
def registry_token(registry_factory):
    return registry_factory("token")


@pytest.fixture(params=registry_mod.MODES)
def registry_any(request, registry_factory):
    return registry_factory(request.param)


@pytest.fixture
def fake_registry():
    f = fakeregistry.FakeRegistry().start()
    yield f
    f.stop()


def _umount_below(path: str):
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
    except OSError:
        return
    for m in sorted((m for m in mounts if m == path or m.startswith(path + "/")),
                    key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def _rmtree(path: str):
    _umount_below(path)
    # immutable/append-only attrs or read-only dirs could make rmtree fail
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-R", "-f", "-i", "-a", path], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def berth_data():
    d = tempfile.mkdtemp(prefix="berth-e2e-data-")
    yield d
    _rmtree(d)


@pytest.fixture
def scratch():
    d = tempfile.mkdtemp(prefix="berth-e2e-scratch-")
    yield d
    _rmtree(d)


@pytest.fixture
def run_berth():
    return berthcli.run_berth


# The cell's network for the whole session: its own bridge, subnet and nftables table, so that tests never
# touch a platform running on the same host (berth0 / "berth"), and removed at the end.
E2E_BRIDGE = f"bte2e{os.getpid() % 100000}"
E2E_TABLE = f"berth_e2e_{os.getpid()}"
# Per run, so that concurrent runs (helpers, a developer and CI) do not route into each other's bridges.
E2E_SUBNET_PREFIX = f"10.{160 + os.getpid() % 40}."  # clear of the unit tests (10.200-204) and bench (10.21x)
E2E_SUBNET = E2E_SUBNET_PREFIX + "0.0/16"
CELL_CONFIG_YAML = (f"cell:\n  network:\n    bridge: {E2E_BRIDGE}\n    subnet: {E2E_SUBNET}\n"
                    f"    nft_table: {E2E_TABLE}\n")


@pytest.fixture(scope="session", autouse=True)
def cell_network_config():
    d = tempfile.mkdtemp(prefix="berth-e2e-config-")
    path = os.path.join(d, "config.yaml")
    with open(path, "w") as f:
        f.write(CELL_CONFIG_YAML)
    os.environ["BERTH_CONFIG"] = path
    yield path
    # the bridge, its rules and the ip_forward switch berth may have turned on (every container is gone by
    # now); then, whatever a failed run left, by hand
    empty = tempfile.mkdtemp(prefix="berth-e2e-prune-")
    berthcli.run_berth("--data-dir", empty, "network", "prune", check=False)
    shutil.rmtree(empty, ignore_errors=True)
    os.environ.pop("BERTH_CONFIG", None)
    subprocess.run(["ip", "link", "del", E2E_BRIDGE], capture_output=True)
    subprocess.run(["nft", "delete", "table", "inet", E2E_TABLE], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)
