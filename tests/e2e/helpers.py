"""Small helpers shared by the berth image e2e tests."""

from __future__ import annotations

import json
import os

import berthcli


def berth(data_dir, *args, env=None, check=True, config=None, **kw):
    """Run ``berth --data-dir DATA [--config CONFIG] ARGS``."""
    pre = ["--data-dir", data_dir]
    if config:
        pre += ["--config", config]
    return berthcli.run_berth(*pre, *args, env=env, check=check, **kw)


def creds_env(registry):
    """(extra args, env) to pull from ``registry`` with its credentials."""
    if not getattr(registry, "auth", None):
        return [], None
    user, pw = registry.auth
    return ["--username", user], {"BERTH_REGISTRY_PASSWORD": pw}


def pull(data_dir, registry, ref, *extra, check=True, config=None, env=None):
    args, cenv = creds_env(registry) if registry is not None else ([], None)
    e = dict(cenv or {})
    e.update(env or {})
    return berth(data_dir, "image", "pull", ref, *args, *extra, env=e or None, check=check, config=config)


def inspect(data_dir, ref):
    return json.loads(berth(data_dir, "image", "inspect", ref).stdout)


def layer_dirs(data_dir):
    d = os.path.join(data_dir, "image", "layers")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def tmp_entries(data_dir):
    d = os.path.join(data_dir, "image", "tmp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def store_is_clean(data_dir):
    """Nothing committed: no layers, no image records, nothing left in tmp."""
    images = os.path.join(data_dir, "image", "images.json")
    recs = {}
    if os.path.exists(images):
        with open(images) as f:
            recs = json.load(f).get("images", {})
    return layer_dirs(data_dir) == [] and recs == {} and tmp_entries(data_dir) == []


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def wait_for(pred, timeout=30.0, what="condition", interval=0.02):
    """Poll ``pred()`` until it returns a truthy value (returned) or fail after ``timeout`` seconds."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def inspect_ctr(data_dir, ref):
    import json
    return json.loads(berth(data_dir, "inspect", ref).stdout)[0]


def ps_json(data_dir, all_=True):
    import json
    args = ["ps", "--json"] + (["-a"] if all_ else [])
    return json.loads(berth(data_dir, *args).stdout)


def host_snapshot(data_dir):
    """Everything a container may create on the host, to compare before/after: mounts, network namespaces,
    links, cgroups, nftables rules, loop devices, monitor and container processes, cell files."""
    import glob
    import subprocess
    snap = {}
    with open("/proc/mounts") as f:
        snap["mounts"] = sorted(l for l in f.read().splitlines() if data_dir in l)
    snap["links"] = sorted(l.split(":")[1].strip().split("@")[0] for l in
                           subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines())
    snap["cgroups"] = sorted(glob.glob("/sys/fs/cgroup/*/berth/*/") + glob.glob("/sys/fs/cgroup/berth/*/"))
    snap["nft"] = subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True, text=True).stdout
    snap["loops"] = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    procs = []
    for p in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(p, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if data_dir in cmd:
            procs.append(cmd)
    snap["processes"] = sorted(procs)
    ctr = []
    for p in glob.glob("/proc/[0-9]*/cgroup"):
        try:
            with open(p) as f:
                if "/berth/" in f.read():
                    ctr.append(p.split("/")[2])
        except OSError:
            continue
    snap["container_pids"] = sorted(ctr)
    files = []
    for sub in ("cell/containers", "cell/names", "cell/netns", "cell/net", "cell/disk/containers", "cell/runtime",
                "image/containers"):
        d = os.path.join(data_dir, sub)
        if os.path.isdir(d):
            files += [os.path.join(sub, x) for x in os.listdir(d)]
    snap["files"] = sorted(files)
    return snap
