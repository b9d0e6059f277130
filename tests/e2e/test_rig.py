"""Tests of the e2e rig itself (no berth needed):

    cd /work/main && /usr/bin/python3 -m pytest -q tests/e2e/test_rig.py
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import time

import pytest
import requests

import berthcli
import fakeregistry
import imagebuild as ib
import registry as registry_mod
import tokenserver
import treecmp

# ---------------------------------------------------------------------------
# registries
# ---------------------------------------------------------------------------


def test_registry_modes_push_and_fetch(registry_any):
    reg = registry_any
    img = ib.busybox_image()
    digest = reg.push(img, "test/busybox:latest")
    assert digest == img.digest
    c = reg.client()
    r = c.get_manifest("test/busybox", "latest")
    assert r.status_code == 200, r.text
    assert r.content == img.manifest_bytes
    assert r.headers["Content-Type"] == ib.OCI_MANIFEST
    assert r.headers["Docker-Content-Digest"] == img.digest
    layer = img.layers[0]
    b = c.get_blob("test/busybox", layer.digest)
    assert b.status_code == 200 and hashlib.sha256(b.content).hexdigest() == layer.digest[7:]
    assert reg.ref("test/busybox:latest") == f"{reg.host}/test/busybox:latest"
    assert reg.host.startswith("127.0.0.1:")

    # (without an OCI Accept header distribution 2.8 answers 404 for OCI manifests)
    anon = requests.get(reg.url + "/v2/test/busybox/manifests/latest", verify=reg.ca or True,
                        headers={"Accept": ib.OCI_MANIFEST})
    if reg.mode in ("plain", "tls"):
        assert reg.auth is None
        assert anon.status_code == 200
    elif reg.mode == "basic":
        assert reg.auth == ("alice", "s3cret-pa55")
        assert anon.status_code == 401
        assert anon.headers["WWW-Authenticate"].startswith("Basic ")
    else:
        assert reg.auth == ("bob", "t0ken-pa55")
        assert anon.status_code == 401
        scheme, params = ib.parse_www_authenticate(anon.headers["WWW-Authenticate"])
        assert scheme == "bearer"
        assert params["realm"] == reg.token_server.realm
        assert params["service"] == reg.token_server.service
        assert params["scope"] == "repository:test/busybox:pull"


def test_tls_registry_uses_test_ca(registry_tls):
    reg = registry_tls
    assert reg.url.startswith("https://") and os.path.exists(reg.ca)
    assert requests.get(reg.url + "/v2/", verify=reg.ca).status_code == 200
    assert requests.get(f"https://localhost:{reg.port}/v2/", verify=reg.ca).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(reg.url + "/v2/")


def test_basic_registry_rejects_bad_password(registry_basic):
    reg = registry_basic
    assert reg.url.startswith("http://")  # htpasswd works without TLS in 2.8
    ok = requests.get(reg.url + "/v2/", auth=reg.auth)
    bad = requests.get(reg.url + "/v2/", auth=("alice", "wrong"))
    assert ok.status_code == 200 and bad.status_code == 401


def test_basic_over_tls(registry_factory):
    reg = registry_factory("basic", tls=True)
    assert reg.url.startswith("https://") and reg.ca
    assert requests.get(reg.url + "/v2/", auth=reg.auth, verify=reg.ca).status_code == 200
    reg.push(ib.busybox_image(), "x/y:z")


def test_registry_stop_kills_process_and_removes_dirs(test_ca):
    reg = registry_mod.Registry("token", ca=test_ca).start()
    pid, d, port = reg.proc.pid, reg.dir, reg.port
    tport = reg.token_server.port
    reg.stop()
    assert not os.path.exists(d)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    for p in (port, tport):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p), timeout=1).close()
    reg.stop()  # idempotent


def test_push_formats_and_indexes(registry_plain):
    reg = registry_plain
    c = reg.client()
    for fmt in ("oci", "docker"):
        for comp in ("gzip", "zstd", "none"):
            img = ib.busybox_image(fmt=fmt, compression=comp)
            d = reg.push(img, f"fmt/{fmt}-{comp}:v1")
            r = c.get_manifest(f"fmt/{fmt}-{comp}", "v1")
            assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == d == img.digest
            m = json.loads(r.content)
            assert m["layers"][0]["mediaType"] == ib.LAYER_MEDIA_TYPES[(fmt, comp)]
            cfg = json.loads(c.get_blob(f"fmt/{fmt}-{comp}", m["config"]["digest"]).content)
            assert cfg["rootfs"]["diff_ids"] == [img.layers[0].diff_id]
            assert cfg["config"]["Cmd"] == ["/bin/sh"]

    idx = ib.multiarch_index(fmt="oci")
    d = reg.push(idx, "multi/oci:latest")
    r = c.get_manifest("multi/oci", "latest")
    assert r.headers["Content-Type"] == ib.OCI_INDEX and d == idx.digest
    man = json.loads(r.content)
    plats = [(m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))
             for m in man["manifests"]]
    assert plats == [("linux", "arm64", None), ("linux", "amd64", None), ("linux", "arm", "v7"),
                     ("unknown", "unknown", None), ("unknown", "unknown", None), ("unknown", "unknown", None)]
    att = man["manifests"][3]
    assert att["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
    assert att["annotations"]["vnd.docker.reference.digest"] == man["manifests"][0]["digest"]
    for m in man["manifests"]:
        assert c.get_manifest("multi/oci", m["digest"]).status_code == 200
    arm64 = idx.child("arm64")
    assert arm64.expected_tree["etc/berth-platform"]["size"] == len("linux/arm64\n")

    lst = ib.multiarch_index(fmt="docker")
    reg.push(lst, "multi/docker:latest")
    r = c.get_manifest("multi/docker", "latest")
    assert r.headers["Content-Type"] == ib.DOCKER_LIST
    assert len(json.loads(r.content)["manifests"]) == 3

    first = ib.multiarch_index(attestation_position="first")
    assert json.loads(first.manifest_bytes)["manifests"][0]["platform"]["os"] == "unknown"


def test_push_tampered_blob_is_refused_by_real_registry(registry_plain):
    bad = ib.Layer([ib.File("f", "x")], tamper=lambda b: b + b"junk")
    img = ib.build_image([bad])
    with pytest.raises(RuntimeError, match="PUT blob"):
        registry_plain.push(img, "bad/tamper:v1")


# ---------------------------------------------------------------------------
# token server + token registry
# ---------------------------------------------------------------------------


def _get_token(ts, scope, auth=None, **q):
    params = {"service": ts.service, "scope": scope, **q}
    return requests.get(ts.realm, params=params, auth=auth)


def test_token_server_grants(registry_token):
    reg, ts = registry_token, registry_token.token_server
    reg.push(ib.busybox_image(), "private/app:v1")
    reg.push(ib.busybox_image(), "public/app:v1")
    ts.reset()

    # authenticated GET
    r = _get_token(ts, "repository:private/app:pull,push", auth=("bob", "t0ken-pa55"))
    assert r.status_code == 200
    j = r.json()
    assert set(j) == {"token", "access_token", "expires_in", "issued_at"}
    assert j["token"] == j["access_token"] and j["expires_in"] == 300
    hdr, claims = tokenserver.decode_jwt(j["token"])
    assert hdr["alg"] == "RS256" and "x5c" in hdr
    assert claims["access"] == [{"type": "repository", "name": "private/app", "actions": ["pull", "push"]}]
    assert claims["aud"] == ts.service and claims["iss"] == ts.issuer
    m = requests.get(reg.url + "/v2/private/app/manifests/v1",
                     headers={"Authorization": "Bearer " + j["token"], "Accept": ib.OCI_MANIFEST})
    assert m.status_code == 200

    # anonymous: public -> pull only; private -> empty access, registry says 401
    r = _get_token(ts, "repository:public/app:pull,push")
    assert tokenserver.decode_jwt(r.json()["token"])[1]["access"] == \
        [{"type": "repository", "name": "public/app", "actions": ["pull"]}]
    m = requests.get(reg.url + "/v2/public/app/manifests/v1",
                     headers={"Authorization": "Bearer " + r.json()["token"], "Accept": ib.OCI_MANIFEST})
    assert m.status_code == 200
    r = _get_token(ts, "repository:private/app:pull")
    assert r.status_code == 200 and tokenserver.decode_jwt(r.json()["token"])[1]["access"] == []
    m = requests.get(reg.url + "/v2/private/app/manifests/v1",
                     headers={"Authorization": "Bearer " + r.json()["token"]})
    assert m.status_code == 401
    assert 'error="insufficient_scope"' in m.headers["WWW-Authenticate"]

    # wrong password -> 401
    assert _get_token(ts, "repository:private/app:pull", auth=("bob", "nope")).status_code == 401
    # multiple scopes + name containing a port
    r = requests.get(ts.realm, params=[("service", ts.service), ("scope", "repository:a/b:pull"),
                                       ("scope", "repository:127.0.0.1:5000/c:pull")],
                     auth=("bob", "t0ken-pa55"))
    names = [a["name"] for a in tokenserver.decode_jwt(r.json()["token"])[1]["access"]]
    assert names == ["a/b", "127.0.0.1:5000/c"]
    assert ts.counts["GET"] == 5 and ts.counts["POST"] == 0
    assert [q["user"] for q in ts.requests] == ["bob", None, None, "bob", "bob"]
    assert [q["status"] for q in ts.requests] == [200, 200, 200, 401, 200]


def test_token_server_oauth_post_and_fallback_switch(registry_token):
    reg, ts = registry_token, registry_token.token_server
    reg.push(ib.busybox_image(), "private/app:v1")
    ts.reset()
    form = {"grant_type": "password", "username": "bob", "password": "t0ken-pa55",
            "service": ts.service, "client_id": "berth", "scope": "repository:private/app:pull",
            "access_type": "offline"}
    r = requests.post(ts.realm, data=form)
    assert r.status_code == 200
    j = r.json()
    assert "access_token" in j and "token" not in j and j["refresh_token"]
    m = requests.get(reg.url + "/v2/private/app/manifests/v1",
                     headers={"Authorization": "Bearer " + j["access_token"], "Accept": ib.OCI_MANIFEST})
    assert m.status_code == 200
    r2 = requests.post(ts.realm, data={"grant_type": "refresh_token", "refresh_token": j["refresh_token"],
                                       "service": ts.service, "client_id": "berth",
                                       "scope": "repository:private/app:pull"})
    assert r2.status_code == 200 and r2.json()["access_token"]
    assert requests.post(ts.realm, data=dict(form, password="bad")).status_code == 401
    assert requests.post(ts.realm, data={k: v for k, v in form.items() if k != "client_id"}).status_code == 400
    ts.post_enabled = False
    assert requests.post(ts.realm, data=form).status_code == 404
    assert _get_token(ts, "repository:private/app:pull", auth=("bob", "t0ken-pa55")).status_code == 200
    assert ts.counts == {"POST": 5, "GET": 1}
    assert ts.requests[0]["form"]["client_id"] == "berth"
    # knobs
    ts.expires_in = 61
    ts.token_fields = ("access_token",)
    ts.include_issued_at = False
    j = _get_token(ts, "repository:private/app:pull", auth=("bob", "t0ken-pa55")).json()
    assert set(j) == {"access_token", "expires_in"} and j["expires_in"] == 61
    claims = tokenserver.decode_jwt(j["access_token"])[1]
    assert claims["exp"] - claims["iat"] == 61
    ts.fail_next.append(503)
    assert _get_token(ts, "", auth=("bob", "t0ken-pa55")).status_code == 503


@pytest.mark.parametrize("alg,key_ref", [("RS256", "x5c"), ("ES256", "x5c"), ("RS256", "kid"),
                                         ("ES256", "kid"), ("RS256", "jwk"), ("ES256", "jwk")])
def test_registry_accepts_token_formats(registry_factory, alg, key_ref):
    reg = registry_factory("token", token_opts={"alg": alg, "key_ref": key_ref})
    reg.push(ib.busybox_image(), "fmt/tok:v1")  # push itself needs a valid token
    ts = reg.token_server
    tok = _get_token(ts, "repository:fmt/tok:pull", auth=reg.auth).json()["token"]
    hdr, _ = tokenserver.decode_jwt(tok)
    assert hdr["alg"] == alg and key_ref in hdr
    r = requests.get(reg.url + "/v2/fmt/tok/manifests/v1",
                     headers={"Authorization": "Bearer " + tok, "Accept": ib.OCI_MANIFEST})
    assert r.status_code == 200


def test_registry_rejects_foreign_token(registry_token, tmp_path):
    reg = registry_token
    reg.push(ib.busybox_image(), "p/x:v1")
    other = tokenserver.SigningKey(str(tmp_path), "RS256")  # not in rootcertbundle
    now = int(time.time())
    tok = other.make_jwt({"iss": reg.token_server.issuer, "sub": "bob", "aud": reg.token_server.service,
                          "exp": now + 300, "nbf": now, "iat": now, "jti": "x",
                          "access": [{"type": "repository", "name": "p/x", "actions": ["pull"]}]})
    r = requests.get(reg.url + "/v2/p/x/manifests/v1", headers={"Authorization": "Bearer " + tok})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_registry_token_claim_rules(registry_token):
    """Facts about distribution 2.8.2 token validation the berth tests rely on."""
    reg, ts = registry_token, registry_token.token_server
    reg.push(ib.busybox_image(), "p/x:v1")
    now = int(time.time())
    base = {"iss": ts.issuer, "sub": "bob", "aud": ts.service, "exp": now + 300, "nbf": now,
            "iat": now, "jti": "x", "access": [{"type": "repository", "name": "p/x", "actions": ["pull"]}]}

    def status(**change):
        claims = dict(base, **change)
        tok = ts.key.make_jwt(claims, "x5c")
        return requests.get(reg.url + "/v2/p/x/manifests/v1", headers={
            "Authorization": "Bearer " + tok, "Accept": ib.OCI_MANIFEST}).status_code

    assert status() == 200
    assert status(aud=[ts.service]) == 401      # 2.8: aud must be a string
    assert status(iss="someone-else") == 401
    assert status(exp=now - 30) == 200          # 60 s leeway on exp ...
    assert status(exp=now - 120) == 401         # ... but not more


def test_session_registry(session_registry):
    assert session_registry.mode == "plain"
    session_registry.push(ib.busybox_image(), "session/bb:v1")


def test_token_realm_over_tls(registry_factory):
    reg = registry_factory("token", token_tls=True)
    assert reg.token_server.realm.startswith("https://")
    assert reg.url.startswith("http://") and reg.ca  # .ca is needed to trust the realm
    reg.push(ib.busybox_image(), "t/tls:v1")


# ---------------------------------------------------------------------------
# image builder + tree comparison
# ---------------------------------------------------------------------------


def test_umoci_unpack_rich_image_matches_expected_tree(registry_plain, scratch):
    img = ib.rich_image()
    registry_plain.push(img, "test/rich:latest")
    rootfs = treecmp.umoci_unpack(registry_plain, "test/rich:latest", scratch)
    actual = treecmp.walk_dir(rootfs)
    treecmp.assert_trees_equal(img.expected_tree, actual)
    # sanity: the features really are there
    t = actual
    assert t["bin/suid"]["mode"] == 0o4755
    assert t["bin/tool"]["xattrs"]["security.capability"] == ib.CAP_NET_BIND_SERVICE_XATTR
    assert t["a"]["mode"] == 0o750 and t["a"]["uid"] == 1000
    assert t["data2/h1"]["hardlink_group"] == t["data2/sub/h2"]["hardlink_group"] == "data2/h1"
    assert "hardlink_group" not in t["data/hello"]
    assert "deldir" not in t and "del/file1" not in t and "opq/old1" not in t
    assert t["misc/fifo"]["type"] == "fifo"


@pytest.mark.parametrize("fmt,comp", [("docker", "gzip"), ("oci", "none")])
def test_umoci_unpack_other_formats(registry_plain, scratch, fmt, comp):
    img = ib.rich_image(fmt=fmt, compression=comp)
    registry_plain.push(img, "test/rich2:v")
    rootfs = treecmp.umoci_unpack(registry_plain, "test/rich2:v", scratch)
    treecmp.assert_trees_equal(img.expected_tree, treecmp.walk_dir(rootfs))


def test_umoci_unpack_busybox_with_auth(registry_token, scratch):
    img = ib.busybox_image()
    registry_token.push(img, "test/bb:1")
    rootfs = treecmp.umoci_unpack(registry_token, "test/bb:1", scratch)
    treecmp.assert_trees_equal(img.expected_tree, treecmp.walk_dir(rootfs))
    assert os.path.islink(os.path.join(rootfs, "bin/sh"))
    with open(os.path.join(rootfs, "etc/passwd")) as f:
        assert "app:x:1000:1000" in f.read()


@pytest.mark.parametrize("comp", ["gzip", "zstd", "none"])
def test_expected_tree_equals_merge_of_layer_tars(comp):
    img = ib.rich_image(compression=comp)
    magic = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}.get(comp)
    for l in img.layers:
        if magic:
            assert l.blob.startswith(magic)
        assert l.diff_id == "sha256:" + hashlib.sha256(treecmp._open_tar_bytes(l.blob)).hexdigest()
    treecmp.assert_trees_equal(img.expected_tree, treecmp.merge_tars([l.blob for l in img.layers]),
                               ignore=())


def test_tree_diff_reports_differences():
    img = ib.rich_image()
    t = json.loads(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "xattrs"}
                               for k, v in img.expected_tree.items()}))
    for v in t.values():
        v["xattrs"] = {}
        if "rdev" in v:
            v["rdev"] = tuple(v["rdev"])
    t["bin/suid"]["mode"] = 0o755
    del t["etc/config"]
    t["extra"] = {"type": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 0, "sha256": "", "xattrs": {}}
    d = treecmp.diff_trees(img.expected_tree, t)
    assert "~ bin/suid: mode expected 0o4755 got 0o755" in d
    assert any(x.startswith("- etc/config: missing") for x in d)
    assert any(x.startswith("+ extra: unexpected") for x in d)
    assert any(x.startswith("~ bin/tool: xattrs") for x in d)
    with pytest.raises(AssertionError, match="trees differ"):
        treecmp.assert_trees_equal(img.expected_tree, t)


def test_walk_tar_and_walk_dir_agree(scratch):
    layer = ib.Layer([ib.Dir("d", mode=0o700, uid=5, gid=6), ib.File("d/f", "abc", mode=0o4711),
                      ib.Hardlink("d/g", "d/f"), ib.Symlink("s", "d/f"), ib.Fifo("p"),
                      ib.File("x", "1", xattrs={"user.k": b"v"}), ib.Whiteout("gone")],
                     compression="none").build()
    t = treecmp.walk_tar(layer.blob)
    assert t["d/g"]["hardlink_group"] == "d/f" and ".wh.gone" in t
    assert "gone" not in treecmp.walk_tar(layer.blob, apply_whiteouts=True)
    with tarfile.open(fileobj=io.BytesIO(layer.blob)) as tf:
        tf.extractall(scratch, numeric_owner=True)
    for p in ("x",):
        os.setxattr(os.path.join(scratch, p), "user.k", b"v")  # tarfile does not restore xattrs
    treecmp.assert_trees_equal(t, treecmp.walk_dir(scratch), ignore={"dir:mtime", "symlink:mode", "mtime"})


def test_hostile_raw_entries_are_written_verbatim():
    evil = [
        ib.Raw("../escape", data=b"x"),
        ib.Raw("/abs/path", data=b"y"),
        ib.Raw("link", type="2", linkname="/etc"),
        ib.Raw("link/passwd", data=b"pwned"),
        ib.Raw("hl", type="1", linkname="../../etc/shadow"),
        ib.Raw("dev/sda", type="4", devmajor=8, devminor=0),
        ib.Raw("dev/mem", type="3", devmajor=1, devminor=1),
        ib.Raw("huge", data=b"", size=(1 << 40), pad=False),
    ]
    raw = ib.tar_bytes(evil[:-1], end_of_archive=True)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        got = [(m.name, m.type, m.linkname) for m in tf.getmembers()]
    assert got == [("../escape", b"0", ""), ("/abs/path", b"0", ""), ("link", b"2", "/etc"),
                   ("link/passwd", b"0", ""), ("hl", b"1", "../../etc/shadow"),
                   ("dev/sda", b"4", ""), ("dev/mem", b"3", "")]
    huge = ib.tar_bytes([evil[-1]], end_of_archive=False)
    assert len(huge) == 512
    ti = tarfile.TarInfo.frombuf(huge[:512], "utf-8", "surrogateescape")
    assert ti.size == 1 << 40
    many = ib.Layer([ib.File(f"m/{i}", b"") for i in range(5000)]).build()
    assert len(treecmp.tar_entries(many.blob)) == 5000
    img = ib.build_image([ib.Layer(evil[:3])])
    assert img.has_raw and img.expected_tree == {}


def test_gzip_bomb_and_wrong_diffid_and_tamper():
    bomb = ib.Layer([ib.ZeroFile("zeros", 200 << 20)], compression="gzip").build()
    assert bomb.size < 1 << 20 and bomb.uncompressed_size > 200 << 20
    wrong = ib.Layer([ib.File("f", "x")], diff_id_override="sha256:" + "0" * 64)
    tam = ib.Layer([ib.File("g", "y")], tamper=lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    img = ib.build_image([bomb, wrong, tam])
    assert img.config["rootfs"]["diff_ids"][1] == "sha256:" + "0" * 64
    assert wrong.real_diff_id != wrong.diff_id
    assert hashlib.sha256(img.blobs[tam.digest]).hexdigest() != tam.digest[7:]
    assert img.expected_tree["zeros"]["size"] == 200 << 20
    d = ib.Layer([ib.File("h", "z")], descriptor_overrides={"size": 1}).descriptor("oci")
    assert d["size"] == 1


def test_config_fields():
    img = ib.rich_image(fmt="docker")
    cfg = json.loads(img.config_bytes)
    c = cfg["config"]
    assert c["Entrypoint"] == ["/bin/tool"] and c["Cmd"] == ["--flag", "value"]
    assert c["User"] == "1234:5678" and c["WorkingDir"] == "/home/user"
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}} and c["StopSignal"] == "SIGINT"
    assert c["Labels"] == {"org.example.test": "rich"} and "RICH=1" in c["Env"]
    assert cfg["architecture"] == "amd64" and cfg["os"] == "linux"
    assert len(cfg["history"]) == len(cfg["rootfs"]["diff_ids"]) == 3
    man = json.loads(img.manifest_bytes)
    assert man["mediaType"] == ib.DOCKER_MANIFEST and man["config"]["mediaType"] == ib.DOCKER_CONFIG
    v7 = ib.busybox_image(arch="arm", variant="v7")
    assert v7.config["variant"] == "v7" and v7.platform == {"architecture": "arm", "os": "linux", "variant": "v7"}


# ---------------------------------------------------------------------------
# fake registry
# ---------------------------------------------------------------------------


def test_fake_registry_serves_image_and_range(fake_registry):
    f = fake_registry
    img = ib.busybox_image()
    f.add_image(img, "fake/bb:v1")
    r = requests.get(f.url + "/v2/fake/bb/manifests/v1")
    assert r.content == img.manifest_bytes and r.headers["Docker-Content-Digest"] == img.digest
    assert r.headers["Content-Type"] == ib.OCI_MANIFEST
    assert requests.get(f.url + f"/v2/fake/bb/manifests/{img.digest}").status_code == 200
    assert requests.get(f.url + "/v2/fake/bb/tags/list").json() == {"name": "fake/bb", "tags": ["v1"]}
    layer = img.layers[0]
    r = requests.get(f.url + f"/v2/fake/bb/blobs/{layer.digest}", headers={"Range": "bytes=100-"})
    assert r.status_code == 206 and r.content == layer.blob[100:]
    assert r.headers["Content-Range"] == f"bytes 100-{layer.size - 1}/{layer.size}"
    r = requests.get(f.url + f"/v2/fake/bb/blobs/{layer.digest}", headers={"Range": f"bytes={layer.size}-"})
    assert r.status_code == 416
    assert requests.get(f.url + "/v2/fake/bb/manifests/nope").status_code == 404
    assert f.find("GET", "tags/list")[0].server == "registry"


def _raw_get(host_port: str, path: str, headers=None) -> tuple[bytes, bytes, Exception | None]:
    """GET over a bare socket: (head, body bytes received, error or None)."""
    host, port = host_port.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    hdrs = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_port}\r\n{hdrs}Connection: close\r\n\r\n".encode())
    data, err = b"", None
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        err = e
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body, err


def test_fake_registry_reset_then_resume(fake_registry):
    f = fake_registry
    img = ib.busybox_image()
    f.add_image(img, "fake/bb:v1")
    layer = img.layers[0]
    path = f"/v2/fake/bb/blobs/{layer.digest}"
    for mode, errtype in (("rst", ConnectionResetError), ("close", type(None))):
        f.reset_blob_once(layer.digest, after=10000, mode=mode)
        head, got, err = _raw_get(f.host, path)
        assert f"Content-Length: {layer.size}".encode() in head
        assert isinstance(err, errtype), err
        assert got == layer.blob[:10000]
        r = requests.get(f.url + path, headers={"Range": f"bytes={len(got)}-"})
        assert r.status_code == 206
        assert hashlib.sha256(got + r.content).hexdigest() == layer.digest[7:]
    assert [q.range for q in f.find("GET", "blobs")] == [None, "bytes=10000-", None, "bytes=10000-"]
    # requests/urllib3 see the same thing as a broken connection
    f.reset_blob_once(layer.digest)
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        requests.get(f.url + path).content


def test_fake_registry_redirect_records_authorization(fake_registry):
    f = fake_registry
    img = ib.busybox_image()
    f.add_image(img, "fake/bb:v1")
    f.redirect_blobs()
    d = img.layers[0].digest
    r = requests.get(f.url + f"/v2/fake/bb/blobs/{d}", allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"].startswith(f.blob_url + "/blobs/" + d)
    assert f.blob_host.startswith("127.0.0.2:")
    r = requests.get(r.headers["Location"], headers={"Authorization": "Bearer leak"})
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == d[7:]
    blob_reqs = f.find(server="blob")
    assert len(blob_reqs) == 1 and blob_reqs[0].authorization == "Bearer leak"
    f.blob_server_rejects_auth = True
    assert requests.get(f.blob_url + f"/blobs/{d}", headers={"Authorization": "x"}).status_code == 400
    assert requests.get(f.blob_url + f"/blobs/{d}", headers={"Range": "bytes=5-9"}).content == \
        img.layers[0].blob[5:10]


def test_fake_registry_failures_and_bad_manifests(fake_registry):
    f = fake_registry
    img = ib.busybox_image()
    f.add_image(img, "fake/bb:v1")
    fail = f.fail(429, times=2, path="/manifests/", retry_after=1)
    codes = [requests.get(f.url + "/v2/fake/bb/manifests/v1") for _ in range(3)]
    assert [c.status_code for c in codes] == [429, 429, 200] and fail.hits == 2
    assert codes[0].headers["Retry-After"] == "1"
    f.fail(503, times=1, methods=["HEAD"])
    assert requests.head(f.url + "/v2/").status_code == 503
    assert requests.get(f.url + "/v2/").status_code == 200

    f.serve_schema1("fake/old", "v1")
    r = requests.get(f.url + "/v2/fake/old/manifests/v1")
    assert r.headers["Content-Type"] == ib.SCHEMA1_SIGNED and r.json()["schemaVersion"] == 1

    claimed = f.serve_mismatched_manifest("fake/mm", "v1", img)
    r = requests.get(f.url + f"/v2/fake/mm/manifests/{claimed}")
    assert r.headers["Docker-Content-Digest"] == claimed != ib.sha256_digest(r.content)

    d = f.serve_oversized_manifest("fake/big", "v1", size=5 << 20)
    r = requests.get(f.url + "/v2/fake/big/manifests/v1")
    assert len(r.content) >= 5 << 20 and ib.sha256_digest(r.content) == d
    json.loads(r.content)

    f.serve_wrong_content_type("fake/ct", "v1", img)
    assert requests.get(f.url + "/v2/fake/ct/manifests/v1").headers["Content-Type"] == "text/plain"

    f.add_hook(lambda req: fakeregistry.Response(418, {}, b"teapot") if "teapot" in req.path else None)
    assert requests.get(f.url + "/v2/teapot/manifests/x").status_code == 418


def test_fake_registry_auth(fake_registry, tmp_path):
    f = fake_registry
    img = ib.busybox_image()
    f.add_image(img, "fake/bb:v1")
    f.require_auth("basic", "u", "p")
    assert requests.get(f.url + "/v2/").status_code == 401
    assert requests.get(f.url + "/v2/fake/bb/manifests/v1", auth=("u", "p")).status_code == 200
    with tokenserver.TokenServer(str(tmp_path), anonymous_prefixes=("fake/",)) as ts:
        f.require_auth("bearer", ts)
        r = requests.get(f.url + "/v2/fake/bb/manifests/v1")
        assert r.status_code == 401
        scheme, params = ib.parse_www_authenticate(r.headers["WWW-Authenticate"])
        assert params["scope"] == "repository:fake/bb:pull" and params["realm"] == ts.realm
        c = ib.RegistryClient(f.url)
        assert c.get_manifest("fake/bb", "v1").status_code == 200
        assert ts.counts["GET"] == 1


# ---------------------------------------------------------------------------
# berth helpers
# ---------------------------------------------------------------------------


def test_berth_helpers(berth_data, run_berth, monkeypatch):
    assert os.path.isdir(berth_data) and not os.listdir(berth_data)
    assert berthcli.BERTH_BIN.endswith("build/berth") or os.environ.get("BERTH_BIN")
    monkeypatch.setattr(berthcli, "BERTH_BIN", "/bin/sh")
    r = run_berth("-c", 'echo "$FOO"; echo err >&2', env={"FOO": "bar"})
    assert r.stdout == "bar\n" and r.stderr == "err\n"
    with pytest.raises(berthcli.BerthError, match="exited 3"):
        run_berth("-c", "echo boom >&2; exit 3")
    assert run_berth("-c", "exit 4", check=False).returncode == 4
