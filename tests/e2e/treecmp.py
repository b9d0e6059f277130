"""Filesystem-tree descriptions, layer merging and readable tree diffs.

A *tree* is a ``dict`` mapping a relative path (no leading ``/``, no ``./``,
the root itself excluded, e.g. ``"bin/busybox"``) to a *node* ``dict``::

    type            "file" | "dir" | "symlink" | "fifo" | "chardev" |
                    "blockdev" | "socket"
    mode            int, permission bits incl. setuid/setgid/sticky
                    (``st_mode & 0o7777``)
    uid, gid        int
    mtime           int seconds, or None (= unknown, never compared)
    size            int (regular files only)
    sha256          hex digest of the content (regular files only)
    target          symlink target (symlinks only)
    rdev            (major, minor) (char/block devices only)
    xattrs          dict name -> bytes (``trusted.overlay.*`` and
                    ``user.overlay.*`` are never included)
    hardlink_group  (regular files only, present only when >= 2 paths in the
                    tree share the inode) the lexicographically smallest path
                    of the group

Producers:

* :func:`walk_dir` -- a real directory (lstat, never follows links).
* :func:`walk_tar` -- the contents of one tar (optionally compressed).
* :func:`merge_tars` -- the merged view of a list of layer tars (base first),
  applying whiteouts / opaque markers like an OCI unpacker would.
* ``imagebuild.Image.expected_tree`` -- computed from the declarative spec via
  :class:`TreeMerger` (the same merge code).

Comparison: :func:`diff_trees` returns a list of human-readable lines,
:func:`assert_trees_equal` raises ``AssertionError`` with that list.

Also :func:`umoci_unpack` (skopeo + umoci, as root) to produce a reference
rootfs for an image that lives in a test registry (umoci 0.4.7 cannot read
zstd layers; use ``Image.expected_tree`` for those).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import subprocess
import tarfile
import tempfile

XATTR_IGNORE_PREFIXES = ("trusted.overlay.", "user.overlay.")

#: Differences ignored by default by :func:`diff_trees`:
#: directory mtimes (they change whenever children are created) and symlink
#: permission bits (always 0777 on Linux).
DEFAULT_IGNORE = frozenset({"dir:mtime", "symlink:mode"})

_FIELDS = ("type", "mode", "uid", "gid", "size", "sha256", "target", "rdev",
           "xattrs", "mtime", "hardlink_group")

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


# --------------------------------------------------------------------------
# path helpers
# --------------------------------------------------------------------------

def norm_path(p: str) -> str:
    """Normalise a tar/layer path: strip leading ``/`` and ``./``, collapse
    ``.``/duplicate slashes, drop trailing ``/``.  ``..`` components are kept
    verbatim (callers decide whether that is hostile).  Root -> ``""``."""
    parts = []
    for comp in p.split("/"):
        if comp in ("", "."):
            continue
        parts.append(comp)
    return "/".join(parts)


def _under(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


# --------------------------------------------------------------------------
# merging layers
# --------------------------------------------------------------------------

class TreeMerger:
    """Apply layers (lists of entry records, base layer first) to an
    in-memory tree with OCI layer semantics (image-spec layer.md):

    * ``<dir>/.wh..wh..opq`` removes every lower child of ``<dir>`` (applied
      before the layer's other entries, whatever its position);
    * ``<dir>/.wh.<name>`` removes ``<name>`` and everything below it from
      lower layers (also applied first);
    * an entry replacing an existing path: dir over dir only replaces the
      attributes (children kept); anything else removes the old path and all
      its descendants first;
    * missing parent directories are created implicitly; an implicit parent
      that exists in a lower layer keeps its lower attributes (containerd
      ``mkparent`` / overlayfs merged-view semantics), a brand-new one is
      ``dir 0755 0:0`` with unknown mtime;
    * a hardlink becomes a second name of the target's inode (shares mode,
      owner, content, xattrs).

    Entry records are dicts with ``path``, ``type`` (``file``, ``dir``,
    ``symlink``, ``hardlink``, ``fifo``, ``chardev``, ``blockdev``,
    ``socket``), ``mode``, ``uid``, ``gid``, ``mtime``, ``xattrs`` and, as
    applicable, ``size``/``sha256`` (file), ``target`` (symlink, hardlink),
    ``rdev`` (devices).
    """

    def __init__(self):
        self.nodes: dict[str, dict] = {}
        self._ino = 0

    def _new_ino(self) -> int:
        self._ino += 1
        return self._ino

    def _remove(self, path: str):
        for p in [p for p in self.nodes if _under(p, path)]:
            del self.nodes[p]

    def _ensure_parents(self, path: str):
        parent = posixpath.dirname(path)
        chain = []
        while parent:
            chain.append(parent)
            parent = posixpath.dirname(parent)
        for d in reversed(chain):
            n = self.nodes.get(d)
            if n is not None and n["type"] == "dir":
                continue
            if n is not None:
                self._remove(d)
            self.nodes[d] = {"type": "dir", "mode": 0o755, "uid": 0, "gid": 0,
                             "mtime": None, "xattrs": {}, "_ino": self._new_ino()}

    def apply_layer(self, entries):
        entries = list(entries)
        # 1. opaque markers and whiteouts apply to lower layers, first.
        for e in entries:
            path = norm_path(e["path"])
            base = posixpath.basename(path)
            if base == OPAQUE_MARKER:
                d = posixpath.dirname(path)
                for p in [p for p in self.nodes if d == "" or p.startswith(d + "/")]:
                    del self.nodes[p]
            elif base.startswith(WHITEOUT_PREFIX):
                target = posixpath.join(posixpath.dirname(path), base[len(WHITEOUT_PREFIX):])
                self._remove(target)
        # 2. regular entries in order.
        for e in entries:
            path = norm_path(e["path"])
            base = posixpath.basename(path)
            if path == "" or base.startswith(WHITEOUT_PREFIX):
                continue
            self._ensure_parents(path)
            typ = e["type"]
            if typ == "hardlink":
                tgt = norm_path(e["target"])
                tnode = self.nodes.get(tgt)
                if tnode is None or tnode["type"] == "dir":
                    raise ValueError(f"hardlink {path} -> {tgt}: target missing or a directory")
                if path == tgt:
                    continue
                self._remove(path)
                self.nodes[path] = tnode  # same inode object, shared attrs
                continue
            old = self.nodes.get(path)
            node = {"type": typ, "mode": e.get("mode", 0) & 0o7777,
                    "uid": e.get("uid", 0), "gid": e.get("gid", 0),
                    "mtime": e.get("mtime"), "xattrs": dict(e.get("xattrs") or {})}
            if typ == "file":
                node["size"] = e["size"]
                node["sha256"] = e["sha256"]
            elif typ == "symlink":
                node["target"] = e["target"]
            elif typ in ("chardev", "blockdev"):
                node["rdev"] = tuple(e.get("rdev", (0, 0)))
            if old is not None and old["type"] == "dir" and typ == "dir":
                node["_ino"] = old["_ino"]
                self.nodes[path] = node
                continue
            if old is not None:
                self._remove(path)
            node["_ino"] = self._new_ino()
            self.nodes[path] = node

    def result(self) -> dict:
        groups: dict[int, list[str]] = {}
        for p, n in self.nodes.items():
            if n["type"] == "file":
                groups.setdefault(id(n), []).append(p)
        out = {}
        for p in sorted(self.nodes):
            n = self.nodes[p]
            d = {k: v for k, v in n.items() if not k.startswith("_")}
            d["xattrs"] = {k: v for k, v in d["xattrs"].items()
                           if not k.startswith(XATTR_IGNORE_PREFIXES)}
            if n["type"] == "file":
                g = groups[id(n)]
                if len(g) >= 2:
                    d["hardlink_group"] = min(g)
            out[p] = d
        return out


def merge_layers(layers) -> dict:
    """Merge a list of layers (each an iterable of entry records, base
    first) and return the tree."""
    m = TreeMerger()
    for layer in layers:
        m.apply_layer(layer)
    return m.result()


# --------------------------------------------------------------------------
# tar reading
# --------------------------------------------------------------------------

def _open_tar_bytes(src) -> bytes:
    """Return the *uncompressed* tar bytes of ``src`` (path, bytes or binary
    file object), sniffing gzip / zstd magic."""
    if isinstance(src, (bytes, bytearray)):
        data = bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            data = f.read()
    else:
        data = src.read()
    if data[:2] == b"\x1f\x8b":
        import gzip
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(["zstd", "-q", "-d", "-c"], input=data,
                              stdout=subprocess.PIPE, check=True).stdout
    return data


_TAR_TYPES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
    tarfile.FIFOTYPE: "fifo", tarfile.CHRTYPE: "chardev", tarfile.BLKTYPE: "blockdev",
}


def tar_entries(src) -> list[dict]:
    """Entry records (see :class:`TreeMerger`) of a tar, in archive order,
    exactly as stored (whiteout markers included, hardlinks as ``hardlink``
    records).  ``src``: path, bytes or file object; gzip/zstd sniffed."""
    data = _open_tar_bytes(src)
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for ti in tf:
            typ = _TAR_TYPES.get(ti.type)
            if typ is None:
                continue  # pax global headers, GNU longname etc. are consumed by tarfile
            xattrs = {}
            for k, v in ti.pax_headers.items():
                if k.startswith("SCHILY.xattr."):
                    if isinstance(v, str):
                        v = v.encode("utf-8", "surrogateescape")
                    xattrs[k[len("SCHILY.xattr."):]] = v
            rec = {"path": ti.name, "type": typ, "mode": ti.mode & 0o7777,
                   "uid": ti.uid, "gid": ti.gid, "mtime": int(ti.mtime), "xattrs": xattrs}
            if typ == "file":
                f = tf.extractfile(ti)
                h = hashlib.sha256()
                size = 0
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    size += len(chunk)
                rec["size"] = size
                rec["sha256"] = h.hexdigest()
            elif typ in ("symlink", "hardlink"):
                rec["target"] = ti.linkname
            elif typ in ("chardev", "blockdev"):
                rec["rdev"] = (ti.devmajor, ti.devminor)
            out.append(rec)
    return out


def walk_tar(src, apply_whiteouts: bool = False) -> dict:
    """Tree of one tar's contents (e.g. an exported rootfs).  With
    ``apply_whiteouts=False`` (default) ``.wh.*`` entries are described as
    ordinary files; with True they are interpreted (and hidden)."""
    entries = tar_entries(src)
    if not apply_whiteouts:
        for e in entries:
            p = norm_path(e["path"])
            b = posixpath.basename(p)
            if b.startswith(WHITEOUT_PREFIX):
                e["path"] = posixpath.join(posixpath.dirname(p), "\0" + b)
        tree = merge_layers([entries])
        return {k.replace("\0", ""): v for k, v in tree.items()}
    return merge_layers([entries])


def merge_tars(srcs) -> dict:
    """Merged tree of several layer tars (base first)."""
    return merge_layers([tar_entries(s) for s in srcs])


# --------------------------------------------------------------------------
# directory walking
# --------------------------------------------------------------------------

def _xattrs(path: str) -> dict:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        if n.startswith(XATTR_IGNORE_PREFIXES):
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            pass
    return out


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def walk_dir(root: str, xattrs: bool = True) -> dict:
    """Tree of a real directory (root excluded).  Uses lstat, never follows
    symlinks; hardlink groups are computed among the walked paths only."""
    root = os.fspath(root)
    out = {}
    inodes: dict[tuple, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            m = st.st_mode
            node = {"mode": stat.S_IMODE(m), "uid": st.st_uid, "gid": st.st_gid,
                    "mtime": int(st.st_mtime)}
            if stat.S_ISREG(m):
                node["type"] = "file"
                node["size"] = st.st_size
                node["sha256"] = _file_sha256(full)
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISDIR(m):
                node["type"] = "dir"
            elif stat.S_ISLNK(m):
                node["type"] = "symlink"
                node["target"] = os.readlink(full)
            elif stat.S_ISFIFO(m):
                node["type"] = "fifo"
            elif stat.S_ISCHR(m):
                node["type"] = "chardev"
                node["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            elif stat.S_ISBLK(m):
                node["type"] = "blockdev"
                node["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            elif stat.S_ISSOCK(m):
                node["type"] = "socket"
            else:
                node["type"] = "unknown"
            node["xattrs"] = _xattrs(full) if xattrs else {}
            out[rel] = node
    for paths in inodes.values():
        if len(paths) >= 2:
            g = min(paths)
            for p in paths:
                out[p]["hardlink_group"] = g
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------
# diffing
# --------------------------------------------------------------------------

def _fmt(field, v):
    if field == "mode" and isinstance(v, int):
        return oct(v)
    return repr(v)


def _brief(n: dict) -> str:
    s = f"{n.get('type')} {oct(n.get('mode', 0))} {n.get('uid')}:{n.get('gid')}"
    if n.get("type") == "symlink":
        s += f" -> {n.get('target')}"
    if n.get("type") == "file":
        s += f" size={n.get('size')}"
    return s


def diff_trees(expected: dict, actual: dict, ignore=DEFAULT_IGNORE,
               ignore_paths=(), fields=_FIELDS) -> list[str]:
    """Readable differences between two trees, one line each (empty list =
    equal).  ``ignore``: set of ``"field"`` (everywhere) or ``"type:field"``
    (e.g. ``"dir:mtime"``).  ``ignore_paths``: paths (and their subtrees)
    skipped.  An expected ``mtime`` of None is never compared."""
    ignore = set(ignore)
    lines = []

    def skipped(p):
        return any(_under(p, norm_path(ip)) for ip in ignore_paths)

    for p in sorted(set(expected) | set(actual)):
        if skipped(p):
            continue
        e, a = expected.get(p), actual.get(p)
        if a is None:
            lines.append(f"- {p}: missing (expected {_brief(e)})")
            continue
        if e is None:
            lines.append(f"+ {p}: unexpected ({_brief(a)})")
            continue
        if e.get("type") != a.get("type"):
            lines.append(f"~ {p}: type expected {e.get('type')!r} got {a.get('type')!r}")
            continue
        t = e.get("type")
        for f in fields:
            if f == "type" or f in ignore or f"{t}:{f}" in ignore:
                continue
            ev, av = e.get(f), a.get(f)
            if f == "mtime" and ev is None:
                continue
            if f == "xattrs":
                ev, av = ev or {}, av or {}
            if ev != av:
                lines.append(f"~ {p}: {f} expected {_fmt(f, ev)} got {_fmt(f, av)}")
    return lines


def assert_trees_equal(expected: dict, actual: dict, **kw):
    """``assert`` that :func:`diff_trees` finds nothing; the message lists
    every difference."""
    d = diff_trees(expected, actual, **kw)
    if d:
        raise AssertionError("trees differ (%d differences):\n  %s" % (len(d), "\n  ".join(d)))


# --------------------------------------------------------------------------
# reference unpacking with skopeo + umoci
# --------------------------------------------------------------------------

def umoci_unpack(registry, ref: str, dest: str) -> str:
    """Copy ``ref`` (``"repo:tag"`` or ``"repo@sha256:..."``) from
    ``registry`` (a ``registry.Registry`` or a ``"host:port"`` string) into an
    OCI layout under ``dest`` with skopeo, then ``umoci unpack`` it (as root)
    into ``dest/bundle``.  Returns ``dest/bundle/rootfs``.

    Uses ``--src-tls-verify=false`` (works for the plain-HTTP and TLS modes)
    and the registry's ``.auth`` credentials if any.  umoci 0.4.7 cannot read
    zstd layers: compare against ``Image.expected_tree`` for those.
    """
    host = registry if isinstance(registry, str) else registry.host
    auth = None if isinstance(registry, str) else getattr(registry, "auth", None)
    os.makedirs(dest, exist_ok=True)
    layout = os.path.join(dest, "oci")
    bundle = os.path.join(dest, "bundle")
    tag = "img"
    cmd = ["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false"]
    if auth:
        cmd.append(f"--src-creds={auth[0]}:{auth[1]}")
    else:
        cmd.append("--src-no-creds")
    with tempfile.TemporaryDirectory(prefix="berth-e2e-skopeo-") as tmp:
        env = dict(os.environ, HOME=tmp, XDG_RUNTIME_DIR=tmp, REGISTRY_AUTH_FILE=os.path.join(tmp, "auth.json"))
        r = subprocess.run(cmd + [f"docker://{host}/{ref}", f"oci:{layout}:{tag}"],
                           capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"skopeo copy failed ({r.returncode}):\n{r.stderr}")
    r = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", bundle],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"umoci unpack failed ({r.returncode}):\n{r.stderr}")
    return os.path.join(bundle, "rootfs")
