"""Bad input gets a clear, specific error and changes nothing: hostile layers, bad manifests,
mismatched digests. Each case also checks that nothing escaped the store and nothing was committed."""

from __future__ import annotations

import os

import pytest

import imagebuild as ib
from helpers import pull, store_is_clean

BB = ib.busybox_entries


@pytest.fixture
def outside():
    """The directory hostile layers aim at (their names point here); must stay empty. Removed afterwards."""
    path = "/tmp/berth-e2e-escape"
    os.makedirs(path, exist_ok=True)
    yield path
    import shutil
    shutil.rmtree(path, ignore_errors=True)


HOSTILE = {
    "dotdot": ([ib.Raw("../escape-dotdot", data=b"pwned\n")], ["..", "escape"]),
    "dotdot-nested": ([ib.Raw("a/../../escape-nested", data=b"pwned\n")], [".."]),
    "absolute": ([ib.Raw("/tmp/berth-e2e-escape/abs", data=b"pwned\n")], ["absolute"]),
    "symlink-parent": ([ib.Raw("link", type="2", linkname="/tmp/berth-e2e-escape", size=0),
                        ib.Raw("link/through-symlink", data=b"pwned\n")], ["symlink"]),
    "symlink-dotdot-parent": ([ib.Raw("up", type="2", linkname="../../../../../../tmp/berth-e2e-escape", size=0),
                               ib.Raw("up/through-rel-symlink", data=b"pwned\n")], ["symlink"]),
    "hardlink-outside": ([ib.Raw("hl", type="1", linkname="../../../../../../etc/passwd", size=0)], ["link"]),
    "hardlink-absolute": ([ib.Raw("hl", type="1", linkname="/etc/passwd", size=0)], ["link"]),
    "chardev": ([ib.Raw("dev/kmsg", type="3", devmajor=1, devminor=11, size=0)], ["device"]),
    "blockdev": ([ib.Raw("dev/sda", type="4", devmajor=8, devminor=0, size=0)], ["device"]),
    "bare-whiteout": ([ib.Raw("etc/.wh.", data=b"")], ["whiteout"]),
    "overlay-xattr": ([ib.Raw("x", data=b"", pax={"SCHILY.xattr.trusted.overlay.opaque": b"y"})], ["overlay"]),
    "uid-out-of-range": ([ib.Raw("big-uid", data=b"", uid=20000000)], ["uid"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_rejected(registry_plain, berth_data, outside, case):
    entries, needles = HOSTILE[case]
    before = sorted(os.listdir(outside))
    img = ib.build_image([ib.Layer(BB()), ib.Layer(entries)], config={"Cmd": ["/bin/sh"]})
    registry_plain.push(img, f"hostile/{case}:v")
    r = pull(berth_data, registry_plain, registry_plain.ref(f"hostile/{case}:v"), check=False)
    assert r.returncode != 0, r.stdout
    msg = r.stderr.lower()
    assert any(n in msg for n in needles), r.stderr
    assert sorted(os.listdir(outside)) == before, "a hostile layer wrote outside the store"
    assert not os.path.exists("/etc/passwd-pwned")
    # The good base layer may be committed (it verified); the hostile one and the image must not be.
    assert ib.build_image([ib.Layer(entries)]).layers[0].diff_id.split(":")[1] not in os.listdir(
        os.path.join(berth_data, "image", "layers"))
    assert os.listdir(os.path.join(berth_data, "image", "tmp")) == []
    images = os.path.join(berth_data, "image", "images.json")
    assert not os.path.exists(images) or '"images": {}' in open(images).read()


def test_decompression_bomb_stopped_by_budget(registry_plain, berth_data, scratch):
    cfg = os.path.join(scratch, "config.yaml")
    with open(cfg, "w") as f:
        f.write("image:\n  max_layer_bytes: 52428800\n")  # 50 MB
    bomb = ib.Layer([ib.ZeroFile("zeros", 300 << 20)], gzip_level=9)
    img = ib.build_image([bomb])
    registry_plain.push(img, "hostile/bomb:v")
    assert img.layers[0].size < 2 << 20  # tiny on the wire
    r = pull(berth_data, registry_plain, registry_plain.ref("hostile/bomb:v"), check=False, config=cfg)
    assert r.returncode != 0
    assert "budget" in r.stderr.lower() or "bomb" in r.stderr.lower(), r.stderr
    assert store_is_clean(berth_data)


def test_entry_count_budget(registry_plain, berth_data, scratch):
    cfg = os.path.join(scratch, "config.yaml")
    with open(cfg, "w") as f:
        f.write("image:\n  max_layer_entries: 100\n")
    img = ib.build_image([[ib.File(f"f{i}", "") for i in range(500)]])
    registry_plain.push(img, "hostile/many:v")
    r = pull(berth_data, registry_plain, registry_plain.ref("hostile/many:v"), check=False, config=cfg)
    assert r.returncode != 0 and "entr" in r.stderr.lower(), r.stderr
    assert store_is_clean(berth_data)


def test_wrong_diff_id_rejected(registry_plain, berth_data):
    bad = ib.Layer(BB(), diff_id_override="sha256:" + "1" * 64)
    img = ib.build_image([bad])
    registry_plain.push(img, "hostile/diffid:v")
    r = pull(berth_data, registry_plain, registry_plain.ref("hostile/diffid:v"), check=False)
    assert r.returncode != 0 and "diffid" in r.stderr.lower(), r.stderr
    assert store_is_clean(berth_data)


def test_blob_digest_mismatch_rejected(fake_registry, berth_data):
    def flip(b: bytes) -> bytes:
        return b[:-1] + bytes([b[-1] ^ 1])
    img = ib.build_image([ib.Layer(BB(), tamper=flip)])
    fake_registry.add_image(img, "hostile/tamper:v")
    r = pull(berth_data, None, fake_registry.ref("hostile/tamper:v"), check=False)
    assert r.returncode != 0 and "digest" in r.stderr.lower(), r.stderr
    assert store_is_clean(berth_data)


def test_blob_size_mismatch_rejected(fake_registry, berth_data):
    img = ib.build_image([ib.Layer(BB(), descriptor_overrides={"size": 100})])
    fake_registry.add_image(img, "hostile/size:v")
    r = pull(berth_data, None, fake_registry.ref("hostile/size:v"), check=False)
    assert r.returncode != 0, r.stdout
    assert store_is_clean(berth_data)


def test_truncated_gzip_rejected(fake_registry, berth_data):
    img = ib.build_image([ib.Layer(BB())])
    blob = img.layers[0].blob
    # serve a truncated blob whose digest and size are announced consistently: decompression must fail
    cut = blob[: len(blob) // 2]
    img2 = ib.build_image([ib.Layer(BB(), tamper=lambda b: cut)])
    fake_registry.add_image(img2, "hostile/trunc:v")
    r = pull(berth_data, None, fake_registry.ref("hostile/trunc:v"), check=False)
    assert r.returncode != 0
    assert store_is_clean(berth_data)


def test_schema1_refused_clearly(fake_registry, berth_data):
    fake_registry.serve_schema1("old/app", "v1")
    r = pull(berth_data, None, fake_registry.ref("old/app:v1"), check=False)
    assert r.returncode != 0
    assert "schema 1" in r.stderr.lower() or "schema1" in r.stderr.lower(), r.stderr
    assert store_is_clean(berth_data)


def test_manifest_digest_mismatch_rejected(fake_registry, berth_data):
    img = ib.busybox_image()
    digest = fake_registry.serve_mismatched_manifest("bad/manifest", "v", img)
    for ref in ("bad/manifest:v", "bad/manifest@" + digest):
        r = pull(berth_data, None, fake_registry.ref(ref), check=False)
        assert r.returncode != 0 and "digest" in r.stderr.lower(), r.stderr
    assert store_is_clean(berth_data)


def test_oversized_manifest_rejected(fake_registry, berth_data):
    fake_registry.serve_oversized_manifest("bad/huge", "v")
    r = pull(berth_data, None, fake_registry.ref("bad/huge:v"), check=False)
    assert r.returncode != 0 and ("4 mib" in r.stderr.lower() or "too large" in r.stderr.lower()
                                  or "larger" in r.stderr.lower()), r.stderr
    assert store_is_clean(berth_data)


def test_ambiguous_manifest_rejected(fake_registry, berth_data):
    img = ib.busybox_image()
    import json
    man = dict(img.manifest)
    man["manifests"] = []
    body = json.dumps(man).encode()
    for d, data in img.blobs.items():
        fake_registry.set_blob(d, data)
    fake_registry.set_manifest("bad/ambig", "v", body, img.media_type)
    r = pull(berth_data, None, fake_registry.ref("bad/ambig:v"), check=False)
    assert r.returncode != 0 and "ambiguous" in r.stderr.lower(), r.stderr
    assert store_is_clean(berth_data)


def test_unknown_layer_media_type_rejected(fake_registry, berth_data):
    img = ib.build_image([ib.Layer(BB(), media_type="application/x-something-else")])
    fake_registry.add_image(img, "bad/media:v")
    r = pull(berth_data, None, fake_registry.ref("bad/media:v"), check=False)
    assert r.returncode != 0 and "application/x-something-else" in r.stderr, r.stderr
    assert store_is_clean(berth_data)
