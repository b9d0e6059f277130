"""`berth image pull/ls/inspect/export`: real registries, real images, compared with umoci."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest

import imagebuild as ib
import treecmp
from helpers import berth, inspect, layer_dirs, pull, tmp_entries

# Export writes the image's own ownership back (berth stores layers shifted into its id range).


def export_tree(data_dir, ref, scratch, name="export"):
    dest = os.path.join(scratch, name)
    berth(data_dir, "image", "export", ref, dest)
    return treecmp.walk_dir(dest)


def test_pull_every_registry_mode(registry_any, berth_data, scratch):
    img = ib.busybox_image()
    digest = registry_any.push(img, "test/busybox:1")
    ref = registry_any.ref("test/busybox:1")
    out = pull(berth_data, registry_any, ref)
    assert f"Digest: {digest}" in out.stdout
    doc = inspect(berth_data, ref)
    assert doc["digest"] == digest
    assert doc["config_digest"] == img.config_digest
    assert [l["diff_id"] for l in doc["layers"]] == img.config["rootfs"]["diff_ids"]
    assert doc["config"]["config"]["Cmd"] == ["/bin/sh"]
    ls = json.loads(berth(berth_data, "image", "ls", "--json").stdout)
    assert any(e["repository"] == f"{registry_any.host}/test/busybox" and e["tag"] == "1" for e in ls)
    rootfs = treecmp.umoci_unpack(registry_any, "test/busybox:1", os.path.join(scratch, "umoci"))
    treecmp.assert_trees_equal(treecmp.walk_dir(rootfs), export_tree(berth_data, ref, scratch))


@pytest.mark.parametrize("fmt,comp", [("oci", "gzip"), ("docker", "gzip"), ("oci", "none")])
def test_rich_image_equals_umoci(registry_plain, berth_data, scratch, fmt, comp):
    img = ib.rich_image(fmt=fmt, compression=comp)
    registry_plain.push(img, "test/rich:v1")
    ref = registry_plain.ref("test/rich:v1")
    pull(berth_data, registry_plain, ref)
    umoci = treecmp.walk_dir(treecmp.umoci_unpack(registry_plain, "test/rich:v1", os.path.join(scratch, "u")))
    ours = export_tree(berth_data, ref, scratch)
    treecmp.assert_trees_equal(umoci, ours)
    treecmp.assert_trees_equal(img.expected_tree, ours)
    # the features are really there
    assert ours["bin/suid"]["mode"] == 0o4755
    assert ours["bin/tool"]["xattrs"]["security.capability"] == ib.CAP_NET_BIND_SERVICE_XATTR
    assert ours["a"]["mode"] == 0o750 and ours["a"]["uid"] == 1000  # implicit parent kept the lower's metadata
    assert ours["home/user"]["uid"] == 1234
    assert "deldir" not in ours and "del/file1" not in ours and "opq/old1" not in ours


def test_export_tar_equals_directory(registry_plain, berth_data, scratch):
    img = ib.rich_image()
    registry_plain.push(img, "test/rich:tar")
    ref = registry_plain.ref("test/rich:tar")
    pull(berth_data, registry_plain, ref)
    tar = os.path.join(scratch, "rootfs.tar")
    berth(berth_data, "image", "export", ref, tar)
    assert tarfile.is_tarfile(tar)
    treecmp.assert_trees_equal(img.expected_tree, treecmp.walk_tar(tar))


@pytest.mark.parametrize("comp", ["zstd", "none"])
def test_zstd_and_uncompressed_layers(registry_plain, berth_data, scratch, comp):
    # umoci 0.4.7 cannot read zstd: compare with the tree the test itself defined.
    img = ib.rich_image(compression=comp)
    registry_plain.push(img, "test/rich-" + comp + ":v")
    ref = registry_plain.ref("test/rich-" + comp + ":v")
    pull(berth_data, registry_plain, ref)
    treecmp.assert_trees_equal(img.expected_tree, export_tree(berth_data, ref, scratch))


def test_uncompressed_blob_with_gzip_media_type_is_sniffed(registry_plain, berth_data, scratch):
    layer = ib.Layer(ib.busybox_entries(), compression="none", media_type=ib.OCI_LAYER_GZIP)
    img = ib.build_image([layer], config={"Cmd": ["/bin/sh"]})
    registry_plain.push(img, "test/sniff:v")
    ref = registry_plain.ref("test/sniff:v")
    pull(berth_data, registry_plain, ref)
    treecmp.assert_trees_equal(img.expected_tree, export_tree(berth_data, ref, scratch))


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_index_platform_selection(registry_plain, berth_data, scratch, fmt):
    idx = ib.multiarch_index(fmt=fmt, attestations=(fmt == "oci"), attestation_position="first",
                             platforms=("linux/arm64", "linux/amd64", "linux/arm/v7", "linux/arm/v6"))
    registry_plain.push(idx, "test/multi:v")
    ref = registry_plain.ref("test/multi:v")

    def platform_of(data):
        d = os.path.join(scratch, "p-" + os.path.basename(data))
        berth(data, "image", "export", ref, d)
        with open(os.path.join(d, "etc/berth-platform")) as f:
            return f.read().strip()

    cases = {None: "linux/amd64", "linux/arm64": "linux/arm64", "linux/arm64/v8": "linux/arm64",
             "aarch64": "linux/arm64", "linux/arm/v7": "linux/arm/v7", "linux/arm/v8": "linux/arm/v7",
             "linux/armhf": "linux/arm/v7", "linux/arm/v6": "linux/arm/v6", "linux/x86_64": "linux/amd64"}
    for i, (want, got) in enumerate(cases.items()):
        data = os.path.join(berth_data, f"d{i}")
        extra = ["--platform", want] if want else []
        pull(data, registry_plain, ref, *extra)
        assert platform_of(data) == got, want
        assert inspect(data, ref)["index_digest"] == idx.digest
    # The host's entry of the index also equals what skopeo + umoci make of it.
    umoci = treecmp.walk_dir(treecmp.umoci_unpack(registry_plain, "test/multi:v", os.path.join(scratch, "u")))
    treecmp.assert_trees_equal(umoci, export_tree(os.path.join(berth_data, "d0"), ref, scratch, "host"))
    r = pull(os.path.join(berth_data, "s390x"), registry_plain, ref, "--platform", "linux/s390x", check=False)
    assert r.returncode != 0
    assert "linux/s390x" in r.stderr and "linux/arm64" in r.stderr and "linux/amd64" in r.stderr


def test_pull_by_digest_and_tag_plus_digest(registry_plain, berth_data):
    img = ib.busybox_image()
    digest = registry_plain.push(img, "test/bydigest:v")
    by_digest = registry_plain.ref("test/bydigest@" + digest)
    pull(berth_data, registry_plain, by_digest)
    assert inspect(berth_data, by_digest)["digest"] == digest
    both = registry_plain.ref("test/bydigest:v@" + digest)
    pull(berth_data, registry_plain, both)
    wrong = registry_plain.ref("test/bydigest@sha256:" + "0" * 64)
    r = pull(berth_data, registry_plain, wrong, check=False)
    assert r.returncode != 0 and "not found" in r.stderr.lower()


def test_repull_is_cached_and_pull_by_digest_works_offline(registry_factory, berth_data):
    reg = registry_factory("plain")
    img = ib.busybox_image(extra_layers=[[ib.File("extra", "x\n")]])
    digest = reg.push(img, "test/cache:v")
    ref = reg.ref("test/cache:v")
    pull(berth_data, reg, ref)
    before = layer_dirs(berth_data)
    out = pull(berth_data, reg, ref)
    assert "already present" in out.stdout
    assert layer_dirs(berth_data) == before
    reg.stop()  # registry gone: a digest-pinned image needs no network
    pull(berth_data, None, ref.split(":v")[0] + "@" + digest)


def test_concurrent_pulls_of_the_same_image_coalesce(registry_plain, berth_data):
    big = ib.Layer([ib.ZeroFile("big", 64 << 20, fill=b"abcdefgh")] + ib.busybox_entries())
    img = ib.build_image([big, [ib.File("top", "t\n")]], config={"Cmd": ["/bin/sh"]})
    registry_plain.push(img, "test/conc:v")
    ref = registry_plain.ref("test/conc:v")
    procs = [subprocess.Popen([os.environ.get("BERTH_BIN", "build/berth"), "--data-dir", berth_data, "image", "pull",
                               ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len(layer_dirs(berth_data)) == 2
    assert tmp_entries(berth_data) == []


def test_ls_rm_prune(registry_plain, berth_data):
    base = ib.busybox_entries()
    a = ib.build_image([base, [ib.File("a", "a\n")]], config={"Cmd": ["/bin/sh"]})
    b = ib.build_image([base, [ib.File("b", "b\n")]], config={"Cmd": ["/bin/sh"]})
    registry_plain.push(a, "test/a:v")
    registry_plain.push(b, "test/b:v")
    ra, rb = registry_plain.ref("test/a:v"), registry_plain.ref("test/b:v")
    pull(berth_data, registry_plain, ra)
    pull(berth_data, registry_plain, rb)
    assert len(layer_dirs(berth_data)) == 3  # the shared base is stored once
    table = berth(berth_data, "image", "ls").stdout
    assert "test/a" in table and "test/b" in table
    berth(berth_data, "image", "rm", ra)
    assert berth(berth_data, "image", "inspect", ra, check=False).returncode != 0
    out = berth(berth_data, "image", "prune").stdout
    assert "Removed 1 layer" in out
    assert len(layer_dirs(berth_data)) == 2
    berth(berth_data, "image", "rm", rb)
    berth(berth_data, "image", "prune")
    assert layer_dirs(berth_data) == []
    r = berth(berth_data, "image", "rm", rb, check=False)
    assert r.returncode != 0 and "no such image" in r.stderr


def test_image_id_prefix_lookup(registry_plain, berth_data):
    img = ib.busybox_image()
    digest = registry_plain.push(img, "test/idp:v")
    pull(berth_data, registry_plain, registry_plain.ref("test/idp:v"))
    assert inspect(berth_data, digest[7:19])["digest"] == digest
    assert inspect(berth_data, digest)["digest"] == digest


@pytest.mark.parametrize("ref,needle", [
    ("test/UPPER", "lowercase"),
    ("test/x:bad tag", "invalid"),
    ("test/x@sha256:abc", "digest"),
    ("", "empty"),
    ("test//x", "invalid"),
    ("localhost:99999/x", "port"),
])
def test_bad_references_fail_clearly(berth_data, ref, needle):
    r = berth(berth_data, "image", "pull", ref, check=False)
    assert r.returncode != 0
    assert needle in r.stderr.lower(), r.stderr
    assert not os.path.exists(os.path.join(berth_data, "image", "images.json"))


def test_unreachable_registry_fails_fast(berth_data):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = berth(berth_data, "image", "pull", f"127.0.0.1:{port}/x/y:z", check=False, timeout=60)
    assert r.returncode != 0
    assert "127.0.0.1" in r.stderr and ("refused" in r.stderr or "reach" in r.stderr)
