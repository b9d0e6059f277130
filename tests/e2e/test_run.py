"""`berth run` (issue 3, first part): foreground containers from real images, real crun, real namespaces."""

from __future__ import annotations

import os
import subprocess

import pytest

import imagebuild as ib
from helpers import berth


@pytest.fixture
def run_image(session_registry, berth_data):
    """Push a busybox image with `config` and return a function running `berth run [args] REF [cmd]`."""
    counter = {"n": 0}

    def make(config, extra_layers=()):
        counter["n"] += 1
        img = ib.busybox_image(config=config, extra_layers=extra_layers)
        repo = f"run/t{os.getpid()}-{counter['n']}:v"
        session_registry.push(img, repo)
        ref = session_registry.ref(repo)

        def run(*args, cmd=(), check=False):
            return berth(berth_data, "run", "--rm", *args, ref, *cmd, check=check, timeout=120)
        return run
    yield make
    # nothing of a container may outlive its run
    containers = os.path.join(berth_data, "image", "containers")
    assert not os.path.isdir(containers) or os.listdir(containers) == []
    with open("/proc/mounts") as f:
        # what a data dir keeps once set up (the netns directory's own mount, the disk-quota pool) aside
        keep = (os.path.join(berth_data, "cell", "netns"), os.path.join(berth_data, "cell", "disk"))
        assert not [l for l in f.read().splitlines() if berth_data in l and l.split()[1] not in keep]


def test_exit_code_user_and_namespaces(run_image):
    run = run_image({"Cmd": ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map; ls /dev; exit 7"]})
    r = run()
    assert r.returncode == 7, r.stderr
    lines = r.stdout.split()
    assert "0" in lines and "1000000000" in lines  # root inside, berth's host range outside
    assert "fuse" not in r.stdout and "null" in r.stdout


def test_entrypoint_cmd_rules(run_image):
    run = run_image({"Entrypoint": ["/bin/echo", "E"], "Cmd": ["C"]})
    assert run().stdout.strip() == "E C"
    assert run(cmd=["X", "Y"]).stdout.strip() == "E X Y"                    # args replace CMD
    assert run("--entrypoint", "/bin/echo").stdout.strip() == ""             # a user entrypoint drops image CMD
    assert run("--entrypoint", "/bin/echo", cmd=["Z"]).stdout.strip() == "Z"
    r = run_image({"Cmd": None})()
    assert r.returncode != 0 and "no command specified" in r.stderr


def test_user_forms_and_env(run_image):
    run = run_image({"User": "app", "Env": ["PATH=/bin", "A=image", "B=image"],
                     "Cmd": ["/bin/sh", "-c", "id -u; id -g; echo $A $B $HOME"]})
    out = run("-e", "B=cli").stdout.split()
    assert out == ["1000", "1000", "image", "cli", "/home/app"] or out[:4] == ["1000", "1000", "image", "cli"]
    assert run("--user", "0").stdout.split()[:2] == ["0", "0"]
    assert run("--user", "4242").stdout.split()[:2] == ["4242", "0"]       # numeric uid absent from passwd
    r = run("--user", "nosuchuser")
    assert r.returncode != 0 and "unable to find user nosuchuser" in r.stderr


def test_workdir_and_crashing_app(run_image):
    # The app is not PID 1 here (PID 1 ignores signals it has no handler for, as in Docker without --init).
    run = run_image({"WorkingDir": "/srv/app", "Cmd": ["/bin/sh", "-c", "pwd; /bin/sh -c 'kill -SEGV $$'; exit $?"]})
    r = run()
    assert r.stdout.strip() == "/srv/app"
    assert r.returncode == 128 + 11


def test_seccomp_and_capabilities(run_image):
    run = run_image({"Cmd": ["/bin/sh", "-c",
                             "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; "
                             "mount -t tmpfs none /tmp && echo MOUNTED; busybox unshare -U true && echo UNSHARED; true"]})
    r = run()
    assert "Seccomp:\t2" in r.stdout and "NoNewPrivs:\t1" in r.stdout
    assert "MOUNTED" not in r.stdout and "UNSHARED" not in r.stdout


def test_unknown_image_and_bad_options(berth_data):
    r = berth(berth_data, "run", "127.0.0.1:1/none/such:v", check=False)
    assert r.returncode != 0 and "127.0.0.1:1" in r.stderr
    r = berth(berth_data, "run", "-m", "lots", "x", check=False)
    assert r.returncode != 0 and "memory" in r.stderr


def test_env_file(run_image, scratch):
    path = os.path.join(scratch, "app.env")
    with open(path, "w") as f:
        f.write("# comment\n\nA=from-file\nB=x=y\r\nFROM_CALLER\nUNSET_IN_CALLER\n")
    run = run_image({"Env": ["PATH=/bin", "A=image"], "Cmd": ["/bin/sh", "-c", "echo $A $B $FROM_CALLER; env | grep -c UNSET_IN_CALLER"]})
    r = berth_env_run(run, path)
    assert r.stdout.split()[:4] == ["from-file", "x=y", "caller-value", "0"], r.stdout + r.stderr
    bad = os.path.join(scratch, "bad.env")
    with open(bad, "w") as f:
        f.write("=novalue\n")
    r = run("--env-file", bad)
    assert r.returncode != 0 and "line 1" in r.stderr


def berth_env_run(run, path):
    os.environ["FROM_CALLER"] = "caller-value"
    os.environ.pop("UNSET_IN_CALLER", None)
    try:
        return run("--env-file", path)
    finally:
        del os.environ["FROM_CALLER"]


def test_runc_is_selectable(run_image):
    if not os.path.exists("/usr/sbin/runc") and not os.path.exists("/usr/bin/runc"):
        pytest.skip("runc is not installed")
    run = run_image({"Cmd": ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map; exit 5"]})
    r = run("--runtime", "runc")
    assert r.returncode == 5, r.stderr
    assert "1000000000" in r.stdout


def test_network_prune(session_registry, berth_data, tmp_path):
    """`berth network prune` removes the containers' bridge, its nftables table and its ip_forward record, and
    is refused (changing nothing) while a container exists. Its own bridge, subnet and table: the session's
    stay up for the other tests."""
    n = os.getpid() % 100000
    bridge, table = f"btprn{n}", f"berth_prune_{n}"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"cell:\n  network:\n    bridge: {bridge}\n    subnet: 10.159.{n % 200}.0/24\n"
                   f"    nft_table: {table}\n")
    img = ib.busybox_image(config={"Cmd": ["sleep", "600"]})
    repo = f"run/prune{n}:v"
    session_registry.push(img, repo)
    ref = session_registry.ref(repo)

    def link_exists():
        return subprocess.run(["ip", "link", "show", "dev", bridge], capture_output=True).returncode == 0

    def table_exists():
        return subprocess.run(["nft", "list", "table", "inet", table], capture_output=True).returncode == 0

    def forward_users():
        d = f"/run/berth/ip_forward/{os.stat('/proc/self/ns/net').st_ino}"
        return set(os.listdir(d)) if os.path.isdir(d) else set()

    try:
        cid = berth(berth_data, "run", "-d", ref, config=str(cfg)).stdout.strip()
        assert link_exists() and table_exists() and bridge in forward_users()
        r = berth(berth_data, "network", "prune", config=str(cfg), check=False)
        assert r.returncode != 0 and "1 container(s) exist" in r.stderr, r.stderr
        assert link_exists() and table_exists() and bridge in forward_users()
        berth(berth_data, "rm", "-f", cid, config=str(cfg))
        berth(berth_data, "network", "prune", config=str(cfg))
        assert not link_exists() and not table_exists() and bridge not in forward_users()
        berth(berth_data, "network", "prune", config=str(cfg))  # again: nothing to do
        r = berth(berth_data, "network", "nonsense", config=str(cfg), check=False)
        assert r.returncode == 2 and "Usage: berth network prune" in r.stderr
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
