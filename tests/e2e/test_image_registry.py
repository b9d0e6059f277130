"""The registry protocol as berth speaks it: auth, tokens, redirects, resume, retries, TLS trust."""

from __future__ import annotations

import os
import subprocess

import pytest

import imagebuild as ib
import treecmp
from helpers import berth, inspect, pull, store_is_clean, write_config


def busybox_two_layers():
    return ib.busybox_image(extra_layers=[[ib.File("top", "top\n")]])


def test_basic_auth_wrong_and_missing_credentials(registry_basic, berth_data):
    registry_basic.push(ib.busybox_image(), "private/app:v")
    ref = registry_basic.ref("private/app:v")
    r = berth(berth_data, "image", "pull", ref, check=False)
    assert r.returncode != 0 and "--username" in r.stderr, r.stderr
    r = berth(berth_data, "image", "pull", ref, "--username", "alice", env={"BERTH_REGISTRY_PASSWORD": "wrong"},
              check=False)
    assert r.returncode != 0 and ("password" in r.stderr.lower() or "authentication" in r.stderr.lower()), r.stderr
    assert "wrong" not in r.stderr and "wrong" not in r.stdout  # passwords are never printed
    assert store_is_clean(berth_data)
    pull(berth_data, registry_basic, ref)


def test_token_auth_anonymous_public_and_private(registry_token, berth_data):
    ts = registry_token.token_server
    registry_token.push(ib.busybox_image(), "public/app:v")
    registry_token.push(ib.busybox_image(), "private/app:v")
    berth(berth_data, "image", "pull", registry_token.ref("public/app:v"))  # anonymous pull of a public repo
    r = berth(berth_data, "image", "pull", registry_token.ref("private/app:v"), check=False)
    assert r.returncode != 0 and ("denied" in r.stderr.lower() or "authentication" in r.stderr.lower()
                                  or "unauthorized" in r.stderr.lower()), r.stderr
    r = berth(berth_data, "image", "pull", registry_token.ref("private/app:v"), "--username", "bob",
              env={"BERTH_REGISTRY_PASSWORD": "nope"}, check=False)
    assert r.returncode != 0 and "nope" not in r.stderr
    ts.reset()
    pull(berth_data, registry_token, registry_token.ref("private/app:v"))
    # One token serves the whole pull (manifest, config, layers): cached per scope.
    assert ts.counts["GET"] + ts.counts["POST"] == 1, ts.counts


def test_token_auth_post_falls_back_to_get(registry_token, berth_data):
    ts = registry_token.token_server
    ts.post_enabled = False
    registry_token.push(busybox_two_layers(), "private/fb:v")
    ts.reset()
    pull(berth_data, registry_token, registry_token.ref("private/fb:v"))
    assert ts.counts["GET"] >= 1


def test_redirect_does_not_forward_authorization(fake_registry, berth_data, scratch):
    img = busybox_two_layers()
    fake_registry.add_image(img, "red/app:v")
    fake_registry.require_auth("basic", "alice", "pw")
    fake_registry.redirect_blobs(True, status=307)
    fake_registry.blob_server_rejects_auth = True
    berth(berth_data, "image", "pull", fake_registry.ref("red/app:v"), "--username", "alice",
          env={"BERTH_REGISTRY_PASSWORD": "pw"})
    blob_reqs = fake_registry.find(server="blob")
    assert blob_reqs, "blobs were not fetched from the redirect target"
    assert all(r.authorization is None for r in blob_reqs)
    reg_reqs = fake_registry.find(server="registry", path="/manifests/")
    assert reg_reqs and all(r.authorization for r in reg_reqs if r.path.startswith("/v2/red"))
    d = os.path.join(scratch, "x")
    berth(berth_data, "image", "export", fake_registry.ref("red/app:v"), d)
    treecmp.assert_trees_equal(img.expected_tree, treecmp.walk_dir(d))


@pytest.mark.parametrize("mode", ["rst", "close"])
def test_blob_download_resumes_with_range(fake_registry, berth_data, scratch, mode):
    big = ib.Layer([ib.File("big", os.urandom(4 << 20))] + ib.busybox_entries())
    img = ib.build_image([big], config={"Cmd": ["/bin/sh"]})
    fake_registry.add_image(img, "resume/app:v")
    lay = img.layers[0]
    fake_registry.reset_blob_once(lay.digest, after=16384, mode=mode)
    berth(berth_data, "image", "pull", fake_registry.ref("resume/app:v"))
    gets = fake_registry.find(method="GET", path="/blobs/" + lay.digest)
    assert len(gets) >= 2
    if mode == "close":  # a clean FIN delivers the first bytes for sure: the retry must ask for the rest only
        assert any((r.headers.get("Range") or "").startswith("bytes=") for r in gets[1:])
    d = os.path.join(scratch, "x")
    berth(berth_data, "image", "export", fake_registry.ref("resume/app:v"), d)
    treecmp.assert_trees_equal(img.expected_tree, treecmp.walk_dir(d))


@pytest.mark.parametrize("status", [429, 503, 500])
def test_retries_on_throttling_and_server_errors(fake_registry, berth_data, status):
    img = busybox_two_layers()
    fake_registry.add_image(img, "retry/app:v")
    f1 = fake_registry.fail(status, times=2, path="/manifests/", retry_after=1 if status == 429 else None)
    f2 = fake_registry.fail(status, times=1, path="/blobs/")
    berth(berth_data, "image", "pull", fake_registry.ref("retry/app:v"))
    assert f1.hits == 2 and f2.hits == 1


def test_persistent_server_error_gives_up_clearly(fake_registry, berth_data):
    fake_registry.add_image(ib.busybox_image(), "retry/down:v")
    fake_registry.fail(503, times=1000, path="/manifests/")
    r = berth(berth_data, "image", "pull", fake_registry.ref("retry/down:v"), check=False, timeout=120)
    assert r.returncode != 0 and "503" in r.stderr, r.stderr
    assert store_is_clean(berth_data)


def test_missing_tag_and_repo_are_not_found(registry_plain, berth_data):
    registry_plain.push(ib.busybox_image(), "test/exists:v")
    for ref in ("test/exists:nope", "test/nothere:v"):
        r = berth(berth_data, "image", "pull", registry_plain.ref(ref), check=False)
        assert r.returncode != 0 and "not found" in r.stderr.lower(), r.stderr


# --- TLS trust: loopback registries are trusted as Docker does; any other host needs its CA configured ---

REG_NAME = "registry.berth.test"


@pytest.fixture
def named_tls_registry(registry_factory, test_ca):
    """A TLS registry reached by a non-loopback *name* (an /etc/hosts entry to 127.0.0.1), with a
    certificate for that name from the test CA."""
    cert, key = test_ca.issue("named", [f"DNS:{REG_NAME}", "IP:127.0.0.1"], cn=REG_NAME)
    reg = registry_factory("tls", config_extra={"http": {"tls": {"certificate": cert, "key": key}}})
    line = f"127.0.0.1 {REG_NAME} # berth-e2e\n"
    with open("/etc/hosts", "a") as f:
        f.write(line)
    try:
        yield reg, f"{REG_NAME}:{reg.port}"
    finally:
        with open("/etc/hosts") as f:
            lines = [x for x in f if "# berth-e2e" not in x]
        with open("/etc/hosts", "w") as f:
            f.writelines(lines)


def test_tls_needs_ca_for_non_loopback_registry(named_tls_registry, berth_data, scratch, test_ca):
    reg, host = named_tls_registry
    reg.push(ib.busybox_image(), "tls/app:v")
    ref = f"{host}/tls/app:v"
    r = berth(berth_data, "image", "pull", ref, check=False)
    assert r.returncode != 0 and ("certificate" in r.stderr.lower() or "tls" in r.stderr.lower()), r.stderr
    cfg = write_config(os.path.join(scratch, "ca.yaml"),
                       f"registries:\n  hosts:\n    \"{host}\":\n      ca_file: {test_ca.ca_cert}\n")
    berth(berth_data, "image", "pull", ref, config=cfg)
    cfg2 = write_config(os.path.join(scratch, "global.yaml"), f"registries:\n  ca_files: [{test_ca.ca_cert}]\n")
    berth(os.path.join(berth_data, "2"), "image", "pull", ref, config=cfg2)
    cfg3 = write_config(os.path.join(scratch, "insecure.yaml"), f"registries:\n  insecure: [\"{host}\"]\n")
    berth(os.path.join(berth_data, "3"), "image", "pull", ref, config=cfg3)
    assert inspect(berth_data, ref)["repository"] == f"{host}/tls/app"


def test_bad_config_file_is_a_clear_error(berth_data, scratch):
    cfg = write_config(os.path.join(scratch, "bad.yaml"), "registries:\n  insecur: [x]\n")
    r = berth(berth_data, "image", "ls", config=cfg, check=False)
    assert r.returncode != 0 and "insecur" in r.stderr
    r = berth(berth_data, "image", "ls", config=os.path.join(scratch, "missing.yaml"), check=False)
    assert r.returncode != 0 and "missing.yaml" in r.stderr


def test_crash_mid_pull_leaves_store_consistent(fake_registry, berth_data, scratch):
    """kill -9 while a layer streams; the next run recovers and completes the pull."""
    big = ib.Layer([ib.File("big", os.urandom(8 << 20))])
    img = ib.build_image([ib.Layer(ib.busybox_entries()), big], config={"Cmd": ["/bin/sh"]})
    fake_registry.add_image(img, "crash/app:v")
    import threading
    started, gate = threading.Event(), threading.Event()

    def slow(req):
        if req.path.endswith(img.layers[1].digest) and not gate.is_set():
            started.set()
            gate.wait(30)  # hold the big layer's response until the client is killed
        return None

    fake_registry.add_hook(slow)
    p = subprocess.Popen([os.environ.get("BERTH_BIN", "build/berth"), "--data-dir", berth_data, "image", "pull",
                          fake_registry.ref("crash/app:v")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert started.wait(30), "the pull never asked for the big layer"
    p.kill()
    p.wait()
    gate.set()
    pull(berth_data, None, fake_registry.ref("crash/app:v"))
    assert os.listdir(os.path.join(berth_data, "image", "tmp")) == []
    d = os.path.join(scratch, "x")
    berth(berth_data, "image", "export", fake_registry.ref("crash/app:v"), d)
    treecmp.assert_trees_equal(img.expected_tree, treecmp.walk_dir(d))


# --- resolve (what the controller's staging does): digest and config, no layer fetched ---

def test_resolve_pins_digest_reads_config_and_fetches_no_layer(registry_basic, berth_data):
    cfg = {"Entrypoint": ["/bin/httpd"], "Cmd": ["-f"], "User": "app", "WorkingDir": "/srv",
           "Env": ["A=1"], "ExposedPorts": {"9410/tcp": {}, "7000/tcp": {}, "53/udp": {}}}
    digest = registry_basic.push(ib.busybox_image(config=cfg), "private/res:v1")
    ref = registry_basic.ref("private/res:v1")
    env = {"BERTH_REGISTRY_PASSWORD": registry_basic.auth[1]}
    r = berth(berth_data, "image", "resolve", ref, "--username", registry_basic.auth[0], env=env)
    import json as _json
    doc = _json.loads(r.stdout)
    assert doc["digest"] == digest
    assert doc["pinned"] == ref.rsplit(":", 1)[0] + "@" + digest
    for k, v in cfg.items():
        assert doc["config"][k] == v, k
    assert not os.path.exists(os.path.join(berth_data, "image", "layers")) or \
        not os.listdir(os.path.join(berth_data, "image", "layers"))
    # Wrong password, no credentials, unknown tag, unreachable registry: each says what is wrong.
    r = berth(berth_data, "image", "resolve", ref, "--username", registry_basic.auth[0],
              env={"BERTH_REGISTRY_PASSWORD": "wr0ng-pw"}, check=False)
    assert r.returncode == 1 and ("authentication" in r.stderr.lower() or "password" in r.stderr.lower()), r.stderr
    assert "wr0ng-pw" not in r.stderr + r.stdout
    r = berth(berth_data, "image", "resolve", ref, check=False)
    assert r.returncode == 1 and ("authentication" in r.stderr.lower() or "denied" in r.stderr.lower()
                                  or "unauthorized" in r.stderr.lower()), r.stderr
    r = berth(berth_data, "image", "resolve", registry_basic.ref("private/res:nope"), "--username",
              registry_basic.auth[0], env=env, check=False)
    assert r.returncode == 1 and "not found" in r.stderr.lower(), r.stderr
    from registry import free_port
    r = berth(berth_data, "image", "resolve", f"127.0.0.1:{free_port()}/x/y:z", check=False)
    assert r.returncode == 1 and "cannot reach" in r.stderr.lower(), r.stderr
