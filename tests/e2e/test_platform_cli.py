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
