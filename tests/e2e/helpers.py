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
