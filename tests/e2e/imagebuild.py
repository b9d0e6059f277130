"""Pure-Python OCI / Docker image writer and registry pusher for the e2e rig.

Build layers from a declarative entry list, images (manifest + config) and
indexes / manifest lists from those, and push them with the registry HTTP
API.  Every built :class:`Image` carries its ``expected_tree`` (see
``treecmp`` for the node format) computed from the spec itself, so trees of
images that umoci cannot read (zstd) can still be checked.

Quick tour::

    from imagebuild import *
    layer = Layer([Dir("etc"), File("etc/motd", b"hi\\n", mode=0o600, uid=1000)],
                  compression="zstd")
    img = build_image([layer], fmt="oci", config={"Cmd": ["/bin/sh"]})
    registry.push(img, "test/motd:v1")          # conftest fixtures
    img.expected_tree["etc/motd"]["mode"] == 0o600

    idx = multiarch_index()                     # arm64, amd64, arm/v7 + attestations
    bb  = busybox_image()                       # canonical runnable test image
    rich = rich_image()                         # whiteouts, opaque, links, xattrs...

Entry constructors (all paths are relative to the layer root; a leading
``/`` is stripped for non-raw entries):

    File(path, content=b"", mode=0o644, uid=0, gid=0, mtime=MTIME, xattrs=None)
    ZeroFile(path, size, ...)       # streamed zeros (for gzip bombs)
    Dir(path, mode=0o755, ...)
    Symlink(path, target, ...)      # target written verbatim
    Hardlink(path, target, ...)     # target is a layer path; header mode/owner/
                                    # mtime default to the target entry's
    Fifo(path, ...), CharDev(path, major, minor, ...), BlockDev(path, major, minor, ...)
    Whiteout(path)                  # writes <dir>/.wh.<name>
    Opaque(dirpath)                 # writes <dirpath>/.wh..wh..opq
    Raw(name, type="0", data=b"", size=None, linkname="", mode=0o644, uid=0,
        gid=0, mtime=MTIME, devmajor=0, devminor=0, pax=None, fields=None)
                                    # written EXACTLY as given: name bytes
                                    # untouched (../, absolute), size header
                                    # may differ from len(data), raw header
                                    # field overrides via fields={"size": b"..."}
    RawBytes(data)                  # appended verbatim to the tar stream

Layer(entries, compression="gzip"|"zstd"|"none", media_type=None,
      diff_id_override=None, tamper=None, descriptor_overrides=None,
      end_of_archive=True)

Xattrs are written as PAX records ``SCHILY.xattr.<name>`` (binary values
allowed).  Raw entries are NOT included in ``expected_tree``
(``Image.has_raw`` tells).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import hashlib
import json
import os
import posixpath
import re
import shutil
import struct
import subprocess
import tempfile
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import treecmp

# --------------------------------------------------------------------------
# media types
# --------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"        # uncompressed (BuildKit, containers/image)
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"   # BuildKit
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
IN_TOTO = "application/vnd.in-toto+json"

LAYER_MEDIA_TYPES = {
    ("oci", "gzip"): OCI_LAYER_GZIP, ("oci", "zstd"): OCI_LAYER_ZSTD, ("oci", "none"): OCI_LAYER_TAR,
    ("docker", "gzip"): DOCKER_LAYER_GZIP, ("docker", "zstd"): DOCKER_LAYER_ZSTD,
    ("docker", "none"): DOCKER_LAYER_TAR,
}

#: default mtime of entries (2023-11-14T22:13:20Z)
MTIME = 1700000000
CREATED = "2023-11-14T22:13:20Z"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------
# entries
# --------------------------------------------------------------------------

@dataclass
class Entry:
    """One tar entry of a layer (use the constructor helpers below)."""
    path: str
    type: str                      # file dir symlink hardlink fifo chardev blockdev
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    xattrs: dict = field(default_factory=dict)
    content: Optional[bytes] = b""
    size: Optional[int] = None     # for streamed fill files (content None)
    fill: bytes = b"\0"
    target: str = ""
    devmajor: int = 0
    devminor: int = 0
    uname: str = ""
    gname: str = ""


@dataclass
class Raw:
    """A hostile/raw tar entry written exactly as given.  ``type`` is the tar
    typeflag character ("0" file, "1" hardlink, "2" symlink, "3" chr, "4" blk,
    "5" dir, "6" fifo, ...).  ``size`` is what the header claims (default
    ``len(data)``); ``data`` is written as is, padded to 512.  ``pax`` adds
    PAX records (dict str->bytes|str) in a preceding 'x' header.  ``fields``
    overrides raw header fields after formatting (keys: name mode uid gid size
    mtime chksum typeflag linkname magic version uname gname devmajor
    devminor prefix), the checksum is recomputed unless "chksum" is given."""
    name: str | bytes
    type: str = "0"
    data: bytes = b""
    size: Optional[int] = None
    linkname: str | bytes = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    devmajor: int = 0
    devminor: int = 0
    pax: Optional[dict] = None
    fields: Optional[dict] = None
    pad: bool = True


@dataclass
class RawBytes:
    """Bytes appended verbatim to the tar stream."""
    data: bytes


def File(path, content: bytes | str = b"", mode=0o644, uid=0, gid=0, mtime=MTIME, xattrs=None, **kw) -> Entry:
    if isinstance(content, str):
        content = content.encode()
    return Entry(path, "file", mode, uid, gid, mtime, dict(xattrs or {}), content, **kw)


def ZeroFile(path, size: int, mode=0o644, uid=0, gid=0, mtime=MTIME, fill=b"\0", **kw) -> Entry:
    """A regular file of ``size`` bytes of ``fill`` streamed (never held in
    memory): use for gzip bombs, e.g. ``ZeroFile("bomb", 200 << 20)``."""
    return Entry(path, "file", mode, uid, gid, mtime, {}, None, size=size, fill=fill, **kw)


def Dir(path, mode=0o755, uid=0, gid=0, mtime=MTIME, xattrs=None, **kw) -> Entry:
    return Entry(path, "dir", mode, uid, gid, mtime, dict(xattrs or {}), **kw)


def Symlink(path, target, uid=0, gid=0, mtime=MTIME, mode=0o777, xattrs=None, **kw) -> Entry:
    return Entry(path, "symlink", mode, uid, gid, mtime, dict(xattrs or {}), target=target, **kw)


def Hardlink(path, target, uid=None, gid=None, mtime=None, mode=None, **kw) -> Entry:
    """Hardlink header; mode/uid/gid/mtime left None are copied from the
    target entry earlier in the same layer (as Docker/Go tar writers do)."""
    return Entry(path, "hardlink", mode, uid, gid, mtime, {}, target=target, **kw)


def Fifo(path, mode=0o644, uid=0, gid=0, mtime=MTIME, **kw) -> Entry:
    return Entry(path, "fifo", mode, uid, gid, mtime, **kw)


def CharDev(path, major, minor, mode=0o666, uid=0, gid=0, mtime=MTIME, **kw) -> Entry:
    return Entry(path, "chardev", mode, uid, gid, mtime, devmajor=major, devminor=minor, **kw)


def BlockDev(path, major, minor, mode=0o660, uid=0, gid=0, mtime=MTIME, **kw) -> Entry:
    return Entry(path, "blockdev", mode, uid, gid, mtime, devmajor=major, devminor=minor, **kw)


def Whiteout(path, mtime=MTIME) -> Entry:
    """Delete ``path`` (file or whole directory) from lower layers."""
    p = treecmp.norm_path(path)
    return Entry(posixpath.join(posixpath.dirname(p), ".wh." + posixpath.basename(p)),
                 "file", 0o644, 0, 0, mtime, {}, b"")


def Opaque(dirpath, mtime=MTIME) -> Entry:
    """Hide every lower-layer child of ``dirpath``."""
    return Entry(posixpath.join(treecmp.norm_path(dirpath), ".wh..wh..opq"),
                 "file", 0o644, 0, 0, mtime, {}, b"")


# --------------------------------------------------------------------------
# tar serialisation (own writer: full control over every header byte)
# --------------------------------------------------------------------------

_TYPEFLAGS = {"file": b"0", "hardlink": b"1", "symlink": b"2", "chardev": b"3",
              "blockdev": b"4", "dir": b"5", "fifo": b"6"}

_FIELDS = [("name", 100), ("mode", 8), ("uid", 8), ("gid", 8), ("size", 12), ("mtime", 12),
           ("chksum", 8), ("typeflag", 1), ("linkname", 100), ("magic", 6), ("version", 2),
           ("uname", 32), ("gname", 32), ("devmajor", 8), ("devminor", 8), ("prefix", 155),
           ("pad", 12)]


def _b(s) -> bytes:
    return s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape")


def _octal(v: int, width: int) -> bytes:
    s = b"%0*o" % (width - 1, v)
    if len(s) > width - 1:
        # GNU base-256 for values that do not fit
        return bytes([0x80]) + v.to_bytes(width - 1, "big")
    return s + b"\0"


def _fits_octal(v: int, width: int) -> bool:
    return 0 <= v < 8 ** (width - 1)


def ustar_header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
                 typeflag: bytes, linkname: bytes = b"", uname: bytes = b"",
                 gname: bytes = b"", devmajor: int = 0, devminor: int = 0,
                 fields: Optional[dict] = None) -> bytes:
    """One 512-byte ustar header block.  ``fields`` overrides raw field bytes
    (padded/truncated to the field width)."""
    vals = {
        "name": name[:100], "mode": _octal(mode, 8), "uid": _octal(uid, 8), "gid": _octal(gid, 8),
        "size": _octal(size, 12), "mtime": _octal(mtime, 12), "chksum": b" " * 8,
        "typeflag": typeflag, "linkname": linkname[:100], "magic": b"ustar\0", "version": b"00",
        "uname": uname[:32], "gname": gname[:32], "devmajor": _octal(devmajor, 8),
        "devminor": _octal(devminor, 8), "prefix": b"", "pad": b"",
    }
    own_chksum = None
    for k, v in (fields or {}).items():
        if k == "chksum":
            own_chksum = v
        vals[k] = v
    block = b"".join(vals[k][:w].ljust(w, b"\0") if k != "chksum" else b" " * 8 for k, w in _FIELDS)
    if own_chksum is not None:
        ck = own_chksum[:8].ljust(8, b"\0")
    else:
        ck = b"%06o\0 " % (sum(block) & 0o777777)
    return block[:148] + ck + block[156:]


def pax_records(records: Iterable[tuple[str, bytes | str]]) -> bytes:
    out = b""
    for k, v in records:
        body = b" " + _b(k) + b"=" + _b(v) + b"\n"
        n = len(body)
        length = n + len(str(n))
        if len(str(length)) != len(str(n)):
            length = n + len(str(length))
        out += str(length).encode() + body
    return out


def _pad(n: int) -> bytes:
    return b"\0" * ((512 - n % 512) % 512)


def pax_header_block(name: bytes, records: list) -> bytes:
    data = pax_records(records)
    hname = b"PaxHeaders.0/" + posixpath.basename(name.rstrip(b"/"))[:80]
    return ustar_header(hname, 0o644, 0, 0, len(data), 0, b"x") + data + _pad(len(data))


def _entry_chunks(e: Entry):
    """Yield the tar bytes of a normal (non-raw) entry."""
    path = treecmp.norm_path(e.path)
    name = _b(path + ("/" if e.type == "dir" else ""))
    if e.type == "hardlink":
        link = _b(treecmp.norm_path(e.target))
    else:
        link = _b(e.target)
    if e.type == "file":
        size = len(e.content) if e.content is not None else e.size
    else:
        size = 0
    records = []
    if len(name) > 100:
        records.append(("path", name))
    if len(link) > 100:
        records.append(("linkpath", link))
    if not _fits_octal(size, 12):
        records.append(("size", str(size)))
    for v, k in ((e.uid, "uid"), (e.gid, "gid")):
        if not _fits_octal(v, 8):
            records.append((k, str(v)))
    for k in sorted(e.xattrs):
        records.append(("SCHILY.xattr." + k, _b(e.xattrs[k])))
    if records:
        yield pax_header_block(name, records)
    yield ustar_header(name, e.mode & 0o7777, e.uid if _fits_octal(e.uid, 8) else 0,
                       e.gid if _fits_octal(e.gid, 8) else 0,
                       size if _fits_octal(size, 12) else 0, e.mtime, _TYPEFLAGS[e.type], link,
                       _b(e.uname), _b(e.gname), e.devmajor, e.devminor)
    if e.type == "file":
        if e.content is not None:
            yield e.content
        else:
            chunk = e.fill * (1 << 20)
            left = size
            while left > 0:
                n = min(left, len(chunk))
                yield chunk[:n]
                left -= n
        yield _pad(size)


def _raw_chunks(r: Raw):
    name = _b(r.name)
    size = len(r.data) if r.size is None else r.size
    if r.pax:
        yield pax_header_block(name, list(r.pax.items()))
    yield ustar_header(name, r.mode, r.uid, r.gid, size, r.mtime, _b(r.type), _b(r.linkname),
                       b"", b"", r.devmajor, r.devminor, fields=r.fields)
    yield r.data
    if r.pad:
        yield _pad(len(r.data))


def tar_chunks(entries, end_of_archive=True):
    """Generator of the tar stream bytes for ``entries``."""
    seen: dict[str, Entry] = {}
    for e in entries:
        if isinstance(e, Entry):
            if e.type == "hardlink" and None in (e.mode, e.uid, e.gid, e.mtime):
                t = seen.get(treecmp.norm_path(e.target))
                e = dataclasses.replace(
                    e, **{k: (getattr(t, k) if t else d) for k, d in
                          (("mode", 0o644), ("uid", 0), ("gid", 0), ("mtime", MTIME))
                          if getattr(e, k) is None})
            seen[treecmp.norm_path(e.path)] = e
            yield from _entry_chunks(e)
        elif isinstance(e, Raw):
            yield from _raw_chunks(e)
        elif isinstance(e, RawBytes):
            yield e.data
        else:
            raise TypeError(f"not a layer entry: {e!r}")
    if end_of_archive:
        yield b"\0" * 1024


def tar_bytes(entries, end_of_archive=True) -> bytes:
    return b"".join(tar_chunks(entries, end_of_archive))


def _entry_record(e: Entry, content_sha: Optional[str]) -> dict:
    rec = {"path": e.path, "type": e.type, "mode": e.mode or 0, "uid": e.uid, "gid": e.gid,
           "mtime": e.mtime, "xattrs": {k: _b(v) for k, v in e.xattrs.items()}}
    if e.type == "file":
        rec["size"] = len(e.content) if e.content is not None else e.size
        rec["sha256"] = content_sha
    elif e.type in ("symlink", "hardlink"):
        rec["target"] = e.target
    elif e.type in ("chardev", "blockdev"):
        rec["rdev"] = (e.devmajor, e.devminor)
    return rec


def _content_sha(e: Entry) -> str:
    if e.content is not None:
        return hashlib.sha256(e.content).hexdigest()
    return _fill_sha(e.size, e.fill)


@functools.lru_cache(maxsize=16)
def _fill_sha(size, fill):
    h = hashlib.sha256()
    chunk = fill * (1 << 20)
    left = size
    while left > 0:
        n = min(left, len(chunk))
        h.update(chunk[:n])
        left -= n
    return h.hexdigest()


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------

class Layer:
    """A layer: entries + compression.  Built lazily by :meth:`build` (called
    by :func:`build_image`).  After building:

    ``blob`` (bytes served/pushed, after ``tamper``), ``digest``/``size`` (of
    the untampered compressed bytes = what the manifest says), ``diff_id``
    (sha256 of the uncompressed tar; config gets ``diff_id_override`` if set),
    ``media_type``, ``uncompressed_size``, ``records`` (entry records for the
    expected tree), ``has_raw``.

    * ``compression``: "gzip" | "zstd" | "none"
    * ``media_type``: overrides the format default (e.g. a gzip media type on
      an uncompressed blob to test magic sniffing)
    * ``diff_id_override``: wrong DiffID in the config
    * ``tamper``: ``fn(bytes) -> bytes`` applied to the blob after its digest
      was computed (a blob that does not match the manifest digest; a real
      registry refuses such a push: serve it with ``fakeregistry``)
    * ``descriptor_overrides``: dict merged into the manifest descriptor
      (e.g. ``{"size": 1}``, ``{"urls": [...]}``, ``{"annotations": ...}``)
    * ``end_of_archive``: False to omit the two zero blocks
    """

    def __init__(self, entries, compression="gzip", media_type=None, diff_id_override=None,
                 tamper: Optional[Callable[[bytes], bytes]] = None, descriptor_overrides=None,
                 end_of_archive=True, gzip_level=6):
        if compression not in ("gzip", "zstd", "none"):
            raise ValueError(compression)
        self.entries = list(entries)
        self.compression = compression
        self.media_type_override = media_type
        self.diff_id_override = diff_id_override
        self.tamper = tamper
        self.descriptor_overrides = dict(descriptor_overrides or {})
        self.end_of_archive = end_of_archive
        self.gzip_level = gzip_level
        self._built = False

    @property
    def has_raw(self) -> bool:
        return any(not isinstance(e, Entry) for e in self.entries)

    def build(self):
        if self._built:
            return self
        dh = hashlib.sha256()
        usize = 0
        if self.compression == "gzip":
            comp = zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)
            parts = []
            for chunk in tar_chunks(self.entries, self.end_of_archive):
                dh.update(chunk)
                usize += len(chunk)
                parts.append(comp.compress(chunk))
            parts.append(comp.flush())
            blob = b"".join(parts)
        elif self.compression == "none":
            parts = []
            for chunk in tar_chunks(self.entries, self.end_of_archive):
                dh.update(chunk)
                usize += len(chunk)
                parts.append(chunk)
            blob = b"".join(parts)
        else:
            with tempfile.TemporaryFile(prefix="berth-e2e-layer-") as tf:
                for chunk in tar_chunks(self.entries, self.end_of_archive):
                    dh.update(chunk)
                    usize += len(chunk)
                    tf.write(chunk)
                tf.flush()
                tf.seek(0)
                blob = subprocess.run(["zstd", "-q", "-c", "-3", "--no-progress"], stdin=tf,
                                      stdout=subprocess.PIPE, check=True).stdout
        self.uncompressed_size = usize
        self.real_diff_id = "sha256:" + dh.hexdigest()
        self.diff_id = self.diff_id_override or self.real_diff_id
        self.digest = sha256_digest(blob)
        self.size = len(blob)
        self.blob = self.tamper(blob) if self.tamper else blob
        self.records = [_entry_record(e, _content_sha(e) if e.type == "file" else None)
                        for e in self.entries if isinstance(e, Entry)]
        self._built = True
        return self

    def media_type(self, fmt: str) -> str:
        return self.media_type_override or LAYER_MEDIA_TYPES[(fmt, self.compression)]

    def descriptor(self, fmt: str) -> dict:
        self.build()
        d = {"mediaType": self.media_type(fmt), "digest": self.digest, "size": self.size}
        d.update(self.descriptor_overrides)
        return d


# --------------------------------------------------------------------------
# images and indexes
# --------------------------------------------------------------------------

class _Pushable:
    media_type: str
    manifest_bytes: bytes
    digest: str
    blobs: dict

    def manifests_to_push(self) -> list[tuple[str, str, bytes]]:
        """(digest, media_type, bytes) of every manifest, children first,
        this one last."""
        raise NotImplementedError

    @property
    def size(self) -> int:
        return len(self.manifest_bytes)


class Image(_Pushable):
    """A single-platform image (Docker schema2 or OCI manifest).

    Attributes: ``fmt`` ("oci"|"docker"), ``layers``, ``config`` (dict),
    ``config_bytes``, ``config_digest``, ``manifest`` (dict),
    ``manifest_bytes``, ``digest``, ``media_type``, ``platform`` (dict),
    ``blobs`` (digest -> bytes, config + layers, as served),
    ``expected_tree`` (merged tree, raw entries excluded), ``has_raw``,
    ``name`` (default "repo:tag" used by ``Registry.push``)."""

    def __init__(self, fmt, layers, config, manifest, manifest_bytes, media_type, platform,
                 config_bytes, name=None, extra_blobs=None):
        self.fmt = fmt
        self.layers = layers
        self.config = config
        self.config_bytes = config_bytes
        self.config_digest = sha256_digest(config_bytes)
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.media_type = media_type
        self.digest = sha256_digest(manifest_bytes)
        self.platform = platform
        self.name = name or "test/image:latest"
        self.blobs = {self.config_digest: config_bytes}
        for l in layers:
            self.blobs[l.digest] = l.blob
        self.blobs.update(extra_blobs or {})
        self.has_raw = any(l.has_raw for l in layers)
        self._expected = None

    @property
    def expected_tree(self) -> dict:
        if self._expected is None:
            self._expected = treecmp.merge_layers([l.records for l in self.layers])
        return self._expected

    def manifests_to_push(self):
        return [(self.digest, self.media_type, self.manifest_bytes)]

    def descriptor(self, platform=True) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if platform and self.platform:
            d["platform"] = dict(self.platform)
        return d


class Index(_Pushable):
    """An OCI index or Docker manifest list.  ``children``: list of
    (Image|Index, descriptor dict); ``blobs``: union of the children's blobs;
    ``manifest`` (dict), ``manifest_bytes``, ``digest``, ``media_type``."""

    def __init__(self, fmt, children, manifest, manifest_bytes, media_type, name=None):
        self.fmt = fmt
        self.children = children
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.media_type = media_type
        self.digest = sha256_digest(manifest_bytes)
        self.name = name or "test/index:latest"
        self.blobs = {}
        for c, _ in children:
            self.blobs.update(c.blobs)

    def manifests_to_push(self):
        out, seen = [], set()
        for c, _ in self.children:
            for m in c.manifests_to_push():
                if m[0] not in seen:
                    seen.add(m[0])
                    out.append(m)
        out.append((self.digest, self.media_type, self.manifest_bytes))
        return out

    def child(self, arch=None, os_="linux", variant=None) -> "Image":
        """First child image whose platform matches."""
        for c, d in self.children:
            p = d.get("platform") or {}
            if p.get("architecture") == arch and p.get("os") == os_ and \
                    (variant is None or p.get("variant") == variant):
                return c
        raise KeyError((arch, os_, variant))


DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def build_image(layers, fmt="oci", config=None, arch="amd64", os_="linux", variant=None,
                history=None, annotations=None, name=None, config_extra=None,
                manifest_extra=None, config_media_type=None, created=CREATED) -> Image:
    """Build an image.

    * ``layers``: list of :class:`Layer` (or plain entry lists -> gzip layers)
    * ``fmt``: "oci" (OCI manifest) or "docker" (schema2)
    * ``config``: the runtime ``config`` object (Entrypoint, Cmd, Env, User,
      WorkingDir, ExposedPorts (list or dict), Labels, StopSignal, Volumes...)
    * ``history``: list of history dicts (default one per layer)
    * ``config_extra`` / ``manifest_extra``: dicts merged at top level (can
      override anything, e.g. ``{"rootfs": ...}`` or ``{"mediaType": ...}``)
    """
    layers = [l if isinstance(l, Layer) else Layer(l) for l in layers]
    for l in layers:
        l.build()
    rc = {"Env": list(DEFAULT_ENV)}
    rc.update(copy.deepcopy(config or {}))
    if isinstance(rc.get("ExposedPorts"), (list, tuple)):
        rc["ExposedPorts"] = {p: {} for p in rc["ExposedPorts"]}
    if isinstance(rc.get("Volumes"), (list, tuple)):
        rc["Volumes"] = {p: {} for p in rc["Volumes"]}
    cfg = {"created": created, "architecture": arch, "os": os_}
    if variant:
        cfg["variant"] = variant
    cfg["config"] = rc
    cfg["rootfs"] = {"type": "layers", "diff_ids": [l.diff_id for l in layers]}
    cfg["history"] = history if history is not None else [
        {"created": created, "created_by": f"berth-e2e imagebuild layer {i}"} for i in range(len(layers))]
    cfg.update(config_extra or {})
    config_bytes = canonical_json(cfg)
    cmt = config_media_type or (OCI_CONFIG if fmt == "oci" else DOCKER_CONFIG)
    mt = OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST
    man = {"schemaVersion": 2, "mediaType": mt,
           "config": {"mediaType": cmt, "digest": sha256_digest(config_bytes), "size": len(config_bytes)},
           "layers": [l.descriptor(fmt) for l in layers]}
    if annotations:
        man["annotations"] = dict(annotations)
    man.update(manifest_extra or {})
    mb = json.dumps(man, indent=2, sort_keys=False).encode()
    platform = {"architecture": arch, "os": os_}
    if variant:
        platform["variant"] = variant
    return Image(fmt, layers, cfg, man, mb, mt, platform, config_bytes, name=name)


def attestation_manifest(subject: Image) -> Image:
    """A BuildKit-style attestation manifest (OCI, in-toto layer,
    platform unknown/unknown) for ``subject``."""
    stmt = canonical_json({"_type": "https://in-toto.io/Statement/v0.1",
                           "predicateType": "https://spdx.dev/Document",
                           "subject": [{"name": "pkg:docker/test", "digest": {"sha256": subject.digest[7:]}}],
                           "predicate": {"spdxVersion": "SPDX-2.3", "name": "berth-e2e"}})
    layer_digest = sha256_digest(stmt)
    cfg = {"architecture": "unknown", "os": "unknown", "config": {},
           "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
    cb = canonical_json(cfg)
    man = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(cb), "size": len(cb)},
           "layers": [{"mediaType": IN_TOTO, "digest": layer_digest, "size": len(stmt),
                       "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}]}
    mb = json.dumps(man, indent=2).encode()
    img = Image("oci", [], cfg, man, mb, OCI_MANIFEST, {"architecture": "unknown", "os": "unknown"}, cb)
    img.blobs[layer_digest] = stmt
    img.subject = subject
    return img


def build_index(images, fmt="oci", attestations=False, attestation_position="last",
                annotations=None, name=None, extra_descriptors=None) -> Index:
    """Build an OCI index (``fmt="oci"``) or Docker manifest list
    (``fmt="docker"``) over ``images`` (Image or Index objects; a child
    Index is allowed for nested-index tests).

    * ``attestations``: add one BuildKit attestation manifest per image
      (platform unknown/unknown, annotations ``vnd.docker.reference.type:
      attestation-manifest`` and ``vnd.docker.reference.digest``)
    * ``attestation_position``: "last" (BuildKit order) or "first" (makes a
      client that blindly takes entry 0 fail)
    * ``extra_descriptors``: raw descriptor dicts appended as is (e.g. for an
      unknown media type entry; their content is not pushed)
    """
    mt = OCI_INDEX if fmt == "oci" else DOCKER_LIST
    children = []
    for im in images:
        d = im.descriptor() if isinstance(im, Image) else \
            {"mediaType": im.media_type, "digest": im.digest, "size": im.size}
        children.append((im, d))
    if attestations:
        atts = []
        for im in images:
            if not isinstance(im, Image):
                continue
            a = attestation_manifest(im)
            d = a.descriptor()
            d["annotations"] = {"vnd.docker.reference.digest": im.digest,
                                "vnd.docker.reference.type": "attestation-manifest"}
            atts.append((a, d))
        children = atts + children if attestation_position == "first" else children + atts
    man = {"schemaVersion": 2, "mediaType": mt, "manifests": [d for _, d in children]}
    man["manifests"] += list(extra_descriptors or [])
    if annotations:
        man["annotations"] = dict(annotations)
    mb = json.dumps(man, indent=2).encode()
    return Index(fmt, children, man, mb, mt, name=name)


def schema1_manifest(name="test/schema1", tag="latest", arch="amd64") -> bytes:
    """A (fake-)signed Docker schema1 manifest (``SCHEMA1_SIGNED``) for
    fakeregistry: its blobs do not exist; clients must refuse schema1."""
    body = {"schemaVersion": 1, "name": name, "tag": tag, "architecture": arch,
            "fsLayers": [{"blobSum": sha256_digest(b"schema1-layer")}],
            "history": [{"v1Compatibility": json.dumps({"id": "0" * 64, "architecture": arch,
                                                        "os": "linux", "created": CREATED})}],
            "signatures": [{"header": {"jwk": {"crv": "P-256", "kty": "EC", "x": "AAAA", "y": "AAAA"},
                                       "alg": "ES256"},
                            "signature": "AAAA", "protected": "e30"}]}
    return json.dumps(body, indent=3).encode()


# --------------------------------------------------------------------------
# canned images
# --------------------------------------------------------------------------

BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "id", "env", "sleep", "true", "httpd")

PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
          b"app:x:1000:1000:app:/home/app:/bin/sh\n")
GROUP = b"root:x:0:\nnobody:x:65534:\napp:x:1000:\n"


def ensure_busybox() -> str:
    """Path of the host's static busybox (installs busybox-static via apt-get
    if missing; the machine is Debian, we are root)."""
    if not os.path.exists(BUSYBOX):
        subprocess.run(["apt-get", "install", "-y", "-q", "busybox-static"], check=True,
                       stdout=subprocess.DEVNULL)
    return BUSYBOX


@functools.lru_cache(maxsize=None)
def _busybox_bytes() -> bytes:
    with open(ensure_busybox(), "rb") as f:
        return f.read()


def busybox_entries(platform_marker: Optional[str] = None) -> list:
    """Entries of the canonical busybox layer: /bin/busybox (host
    busybox-static) + applet symlinks, /etc/passwd & /etc/group (root, nobody,
    app 1000:1000), /tmp (1777), /root (0700), /home/app (1000:1000), empty
    /proc /sys /dev.  ``platform_marker`` adds /etc/berth-platform."""
    es = [Dir("bin"), File("bin/busybox", _busybox_bytes(), mode=0o755)]
    es += [Symlink(f"bin/{a}", "busybox") for a in BUSYBOX_APPLETS]
    es += [Dir("etc"), File("etc/passwd", PASSWD), File("etc/group", GROUP),
           Dir("tmp", mode=0o1777), Dir("root", mode=0o700), Dir("home"),
           Dir("home/app", uid=1000, gid=1000), Dir("proc"), Dir("sys"), Dir("dev")]
    if platform_marker:
        es.append(File("etc/berth-platform", platform_marker + "\n"))
    return es


def busybox_image(fmt="oci", compression="gzip", arch="amd64", variant=None, config=None,
                  extra_layers=(), name="test/busybox:latest", platform_marker=None) -> Image:
    """The canonical small runnable image.  Default config: Cmd ["/bin/sh"],
    Env PATH, WorkingDir "/".  ``config`` entries override/extend it;
    ``extra_layers``: further Layer objects (or entry lists) on top.
    NOTE: /bin/busybox is the host's (amd64) binary even when ``arch`` says
    otherwise -- ``arch``/``variant`` only label the image."""
    cfg = {"Cmd": ["/bin/sh"], "WorkingDir": "/"}
    cfg.update(config or {})
    layers = [Layer(busybox_entries(platform_marker), compression=compression)]
    layers += [l if isinstance(l, Layer) else Layer(l, compression=compression) for l in extra_layers]
    return build_image(layers, fmt=fmt, config=cfg, arch=arch, variant=variant, name=name)


def multiarch_index(fmt="oci", attestations=None, attestation_position="last",
                    platforms=("linux/arm64", "linux/amd64", "linux/arm/v7"),
                    compression="gzip", name="test/multi:latest") -> Index:
    """An index (OCI) / manifest list (docker) of busybox images, one per
    platform, each with ``/etc/berth-platform`` containing e.g.
    ``linux/arm64`` (so tests see which one was pulled; all run on amd64).
    Default order arm64, amd64, arm/v7 (amd64 deliberately not first).
    ``attestations`` defaults to True for OCI, False for docker."""
    if attestations is None:
        attestations = fmt == "oci"
    imgs = []
    for p in platforms:
        parts = p.split("/")
        os_, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) > 2 else None
        imgs.append(busybox_image(fmt=fmt, compression=compression, arch=arch, variant=variant,
                                  platform_marker=p, name=name))
    return build_index(imgs, fmt=fmt, attestations=attestations,
                       attestation_position=attestation_position, name=name)


CAP_NET_BIND_SERVICE_XATTR = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
"""``security.capability`` value (VFS_CAP_REVISION_2, effective) granting
cap_net_bind_service (permitted)."""


def rich_layers(compression="gzip") -> list[Layer]:
    """The layers of :func:`rich_image` (see there)."""
    base = [
        Dir("a", mode=0o750, uid=1000, gid=1000, mtime=1600000000),
        Dir("etc", mtime=1600000001),
        File("etc/config", "v1\n", mtime=1600000002),
        Dir("del"), File("del/file1", "to be deleted\n"), File("del/keep", "kept\n"),
        Dir("deldir"), File("deldir/x", "x\n"), Dir("deldir/sub"), File("deldir/sub/y", "y\n"),
        Dir("opq", mode=0o711, uid=7, gid=8), File("opq/old1", "old1\n"), Dir("opq/oldsub"),
        File("opq/oldsub/old2", "old2\n"),
        File("f2d", "file that becomes a directory\n"),
        Dir("d2f"), File("d2f/child", "child of a dir that becomes a file\n"),
        Dir("bin"),
        File("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755,
             xattrs={"security.capability": CAP_NET_BIND_SERVICE_XATTR, "user.comment": b"a tool"}),
        File("bin/suid", b"\x7fELFsuid", mode=0o4755),
        File("bin/sgid", b"\x7fELFsgid", mode=0o2755, gid=50),
        Dir("tmp", mode=0o1777),
        Dir("home"), Dir("home/user", mode=0o700, uid=1234, gid=5678),
        File("home/user/owned", "owned\n", mode=0o640, uid=1234, gid=5678, mtime=1234567890),
        Dir("data"),
        File("data/empty", b""),
        File("data/hello", "hello\n", mtime=1234567890),
        Hardlink("data/hello-link", "data/hello"),
        File("data/xattr-file", "x\n", xattrs={"user.foo": b"bar", "user.bin": b"\x00\xff\x01"}),
        Dir("data/xdir", xattrs={"user.dirattr": b"1"}),
        Dir("links"),
        Symlink("links/rel", "../data/hello", mtime=1500000000),
        Symlink("links/abs", "/data/hello"),
        Symlink("links/dangling", "/nonexistent/target"),
        Symlink("links/dir", "../data"),
        Dir("misc"), Fifo("misc/fifo", mode=0o600),
    ]
    second = [
        Whiteout("del/file1"),
        Whiteout("deldir"),
        Opaque("opq"),
        File("opq/new1", "new1\n"),
        Dir("f2d", mode=0o755),
        File("f2d/inner", "inner\n"),
        File("d2f", "now a file\n", mode=0o600),
        File("a/b/c", "deep file in implicit parents\n", uid=1000, gid=1000),
        File("etc/config", "v2\n", mode=0o600, mtime=1600000100),
        Dir("data2"),
        File("data2/h1", "hardlinked in layer 2\n", mode=0o640, uid=3, gid=4),
        Dir("data2/sub"),
        Hardlink("data2/sub/h2", "data2/h1"),
        Dir("home/user", mode=0o750, uid=1234, gid=5678),   # dir over dir: attrs replaced, child kept
    ]
    third = [
        File("links/rel", "symlink replaced by a file\n"),
        Whiteout("bin/sgid"),
        File("data/hello", "hello replaced; hello-link keeps old content\n"),
        File("etc/added-in-3", ""),
    ]
    return [Layer(base, compression), Layer(second, compression), Layer(third, compression)]


def rich_image(fmt="oci", compression="gzip", name="test/rich:latest") -> Image:
    """Multi-layer image exercising: whiteout of a file (del/file1) and of a
    directory (deldir), an opaque directory (opq), hardlinks within a layer
    (data/hello-link, data2/sub/h2), relative / absolute / dangling symlinks,
    xattrs (user.* on file and dir, security.capability on bin/tool), a setuid
    file (bin/suid), setgid (bin/sgid, later whited out), sticky /tmp,
    non-root ownership (home/user), implicit parents (layer 2 has a/b/c with
    no a/ or a/b entries; layer 1 made a/ 0750 1000:1000), mtimes, an empty
    file, file->dir (f2d), dir->file (d2f), symlink->file (links/rel), a
    hardlink group broken by replacing one name (data/hello) and a fifo.
    (No device nodes: berth rejects them, see test_image_hostile.py.)  Config: Entrypoint/Cmd/Env/User/
    WorkingDir/ExposedPorts/Labels/StopSignal all set."""
    cfg = {"Entrypoint": ["/bin/tool"], "Cmd": ["--flag", "value"],
           "Env": DEFAULT_ENV + ["RICH=1", "EMPTY="], "User": "1234:5678", "WorkingDir": "/home/user",
           "ExposedPorts": ["8080/tcp", "53/udp"], "Labels": {"org.example.test": "rich"},
           "StopSignal": "SIGINT"}
    return build_image(rich_layers(compression), fmt=fmt, config=cfg, name=name)


# --------------------------------------------------------------------------
# pushing (registry HTTP API v2)
# --------------------------------------------------------------------------

_CHALLENGE_RE = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_www_authenticate(value: str) -> tuple[str, dict]:
    """``'Bearer realm="x",service="y"'`` -> ("bearer", {...})."""
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    for m in _CHALLENGE_RE.finditer(rest):
        params[m.group(1).lower()] = (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
    return scheme.lower(), params


class RegistryClient:
    """Minimal registry client used to push (and inspect) test images.

    ``base_url``: e.g. ``http://127.0.0.1:5000``; ``auth``: (user, password)
    used for Basic challenges and for Bearer token requests (GET with Basic
    credentials); ``verify``: CA bundle path or bool (requests semantics).
    """

    def __init__(self, base_url: str, auth=None, verify=True):
        import requests
        self.base = base_url.rstrip("/")
        self.auth = auth
        self.s = requests.Session()
        self.s.verify = verify
        self.s.trust_env = False
        self._tokens: dict[str, str] = {}
        self._basic = False

    def _token(self, params: dict) -> str:
        scope = params.get("scope", "")
        if scope in self._tokens:
            return self._tokens[scope]
        q = {"service": params.get("service", "")}
        if scope:
            q["scope"] = scope.split(" ")
        r = self.s.get(params["realm"], params=q, auth=self.auth)
        r.raise_for_status()
        j = r.json()
        tok = j.get("token") or j.get("access_token")
        self._tokens[scope] = tok
        return tok

    def request(self, method, url, headers=None, **kw):
        if not url.startswith("http"):
            url = self.base + url
        headers = dict(headers or {})
        if self._basic and self.auth:
            kw["auth"] = self.auth
        r = self.s.request(method, url, headers=headers, allow_redirects=False, **kw)
        if r.status_code == 401 and "WWW-Authenticate" in r.headers:
            scheme, params = parse_www_authenticate(r.headers["WWW-Authenticate"])
            if scheme == "basic":
                self._basic = True
                kw["auth"] = self.auth
            elif scheme == "bearer":
                params.setdefault("scope", "")
                self._tokens.pop(params["scope"], None)
                headers["Authorization"] = "Bearer " + self._token(params)
            if "data" in kw and hasattr(kw["data"], "seek"):
                kw["data"].seek(0)
            r = self.s.request(method, url, headers=headers, allow_redirects=False, **kw)
        return r

    def ping(self):
        return self.request("GET", "/v2/")

    def blob_exists(self, repo, digest) -> bool:
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status_code == 200

    def push_blob(self, repo: str, digest: str, data: bytes):
        """Monolithic upload: POST uploads/ then PUT <location>?digest=."""
        if self.blob_exists(repo, digest):
            return
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if r.status_code != 202:
            raise RuntimeError(f"POST upload {repo}: {r.status_code} {r.text}")
        loc = urllib.parse.urljoin(self.base + "/", r.headers["Location"])
        sep = "&" if "?" in loc else "?"
        r = self.request("PUT", f"{loc}{sep}digest={urllib.parse.quote(digest)}", data=data,
                         headers={"Content-Type": "application/octet-stream"})
        if r.status_code != 201:
            raise RuntimeError(f"PUT blob {digest} to {repo}: {r.status_code} {r.text}")

    def push_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        r = self.request("PUT", f"/v2/{repo}/manifests/{ref}", data=body,
                         headers={"Content-Type": media_type})
        if r.status_code != 201:
            raise RuntimeError(f"PUT manifest {repo}:{ref}: {r.status_code} {r.text}")
        return r.headers.get("Docker-Content-Digest", sha256_digest(body))

    def push(self, image: _Pushable, repo: str, tag: Optional[str] = "latest") -> str:
        """Push blobs, child manifests (by digest) and the top manifest (by
        ``tag``, or by digest if ``tag`` is None).  Returns its digest."""
        for d, data in image.blobs.items():
            self.push_blob(repo, d, data)
        mans = image.manifests_to_push()
        for d, mt, body in mans[:-1]:
            self.push_manifest(repo, d, body, mt)
        d, mt, body = mans[-1]
        return self.push_manifest(repo, tag or d, body, mt)

    def get_manifest(self, repo, ref, accept=(OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)):
        """-> requests.Response (raise_for_status not called)."""
        return self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ", ".join(accept)})

    def get_blob(self, repo, digest):
        return self.request("GET", f"/v2/{repo}/blobs/{digest}")


def split_ref(ref: str) -> tuple[str, Optional[str]]:
    """``"repo:tag"`` -> (repo, tag); ``"repo@sha256:.."`` -> (repo, None);
    ``"repo"`` -> (repo, "latest")."""
    if "@" in ref:
        return ref.split("@", 1)[0], None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"
