"""Container lifecycle (issue 3): detached containers under berth-monitor, ps, logs, exec, stop, kill, rm,
inspect, limits, supervision across the death of the processes that started them, and cleanup."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

import berthcli
import imagebuild as ib
from conftest import CELL_CONFIG_YAML, E2E_SUBNET_PREFIX
from helpers import berth, host_snapshot, inspect_ctr, ps_json, wait_for

TRAP_APP = ("trap 'echo got-$SIG; exit 0' $SIG; echo ready; i=0; "
            "while :; do i=$((i+1)); echo tick $i; sleep 0.1; done")


@pytest.fixture
def cell(session_registry, berth_data):
    """Images pushed on demand; at the end every container is removed and the host is as before."""
    # What a data dir and the host keep once (the bridge, the nft table, the netns directory's mount) is set up
    # by a first container; what a container creates must be gone again after the test.
    warm = ib.busybox_image(config={"Cmd": ["true"]})
    session_registry.push(warm, "ctr/warm:v")
    berth(berth_data, "run", "--rm", "--disk", "16M", session_registry.ref("ctr/warm:v"))
    before = host_snapshot(berth_data)
    counter = {"n": 0}

    class Cell:
        data = berth_data

        def image(self, config, extra_layers=()):
            counter["n"] += 1
            img = ib.busybox_image(config=config, extra_layers=extra_layers)
            repo = f"ctr/t{os.getpid()}-{counter['n']}:v"
            session_registry.push(img, repo)
            ref = session_registry.ref(repo)
            berth(berth_data, "image", "pull", ref)
            return ref

        def run(self, *args, check=True, **kw):
            return berth(berth_data, "run", *args, check=check, timeout=120, **kw)

        def __call__(self, *args, check=True, **kw):
            return berth(berth_data, *args, check=check, timeout=120, **kw)

        def detached(self, *args):
            r = self.run("-d", *args)
            cid = r.stdout.strip()
            assert re.fullmatch(r"[0-9a-f]{64}", cid), r.stdout + r.stderr
            return cid

        def state(self, cid):
            return inspect_ctr(berth_data, cid)["State"]

    c = Cell()
    yield c
    ids = [x["Id"] for x in ps_json(berth_data)]
    if ids:
        berth(berth_data, "rm", "-f", *ids, check=False)
    # processes of a killed container's pid namespace are reaped asynchronously: wait for that
    wait_for(lambda: set(host_snapshot(berth_data)["container_pids"]) <= set(before["container_pids"]),
             timeout=10, what="no container process left")
    after = host_snapshot(berth_data)
    for key in before:
        if key != "container_pids":
            assert after[key] == before[key], f"{key} differs after the test"


def test_detached_lifecycle(cell):
    ref = cell.image({"Cmd": ["/bin/sh", "-c", "echo hello; echo oops >&2; exec sleep 1000"], "User": "app"})
    cid = cell.detached("--name", "web", ref)
    ps = ps_json(cell.data, all_=False)
    assert [x["Id"] for x in ps] == [cid]
    st = cell.state("web")
    assert st["Status"] == "running" and st["Running"] and st["Supervised"] and st["Pid"] > 0
    # the process runs as the image's user, shifted into berth's host range
    with open(f"/proc/{st['Pid']}/status") as f:
        uid_line = next(l for l in f if l.startswith("Uid:"))
    assert uid_line.split()[1] == str(1000000000 + 1000)
    # ps table and lookups by name, prefix and full id
    table = cell("ps").stdout
    assert cid[:12] in table and "web" in table and "Up " in table
    assert inspect_ctr(cell.data, cid[:6])["Id"] == cid
    wait_for(lambda: "hello" in cell("logs", "web").stdout, what="the first log line")
    r = cell("logs", "web")
    assert r.stdout == "hello\n" and r.stderr == "oops\n"
    r = cell("logs", "-t", "web")
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z hello\n", r.stdout), r.stdout
    # exec as the container's user, with its environment, exit code propagated
    r = cell("exec", "web", "sh", "-c", "id -u; echo $HOME; hostname; exit 3", check=False)
    assert r.returncode == 3 and r.stdout.split() == ["1000", "/home/app", cid[:12]]
    # the name is taken while the container exists
    r = cell.run("-d", "--name", "web", ref, check=False)
    assert r.returncode != 0 and 'name "web" is already in use' in r.stderr
    # rm refuses a running container without -f
    r = cell("rm", "web", check=False)
    assert r.returncode != 0 and "is running" in r.stderr
    # stop: sleep as PID 1 ignores SIGTERM: killed after the grace period
    t0 = time.monotonic()
    assert cell("stop", "-t", "1", "web").stdout.strip() == "web"
    assert 0.9 < time.monotonic() - t0 < 8
    st = cell.state(cid)
    assert st["Status"] == "exited" and st["ExitCode"] == 137 and not st["Running"] and st["FinishedAt"]
    assert "Exited (137)" in cell("ps", "-a").stdout
    assert ps_json(cell.data, all_=False) == []
    r = cell("exec", "web", "true", check=False)
    assert r.returncode != 0 and "not running" in r.stderr
    assert cell("rm", "web").stdout.strip() == "web"
    r = cell("inspect", cid, check=False)
    assert r.returncode != 0 and "no such container" in r.stderr
    cell.detached("--name", "web", ref)  # the name is free again


@pytest.mark.parametrize("stop_signal", [None, "SIGUSR1", "QUIT"])
def test_stop_signal_and_grace(cell, stop_signal):
    sig = {None: "TERM", "SIGUSR1": "USR1", "QUIT": "QUIT"}[stop_signal]
    cfg = {"Cmd": ["/bin/sh", "-c", TRAP_APP], "Env": [f"SIG={sig}", "PATH=/bin"]}
    if stop_signal:
        cfg["StopSignal"] = stop_signal
    ref = cell.image(cfg)
    cid = cell.detached(ref)
    wait_for(lambda: "ready" in cell("logs", cid).stdout, what="the app to be ready")
    t0 = time.monotonic()
    cell("stop", "-t", "30", cid)
    assert time.monotonic() - t0 < 10  # it handled the signal: no waiting for the grace period
    st = cell.state(cid)
    assert st["ExitCode"] == 0, st
    assert f"got-{sig}" in cell("logs", cid).stdout


def test_kill_and_signal_exit_codes(cell):
    ref = cell.image({"Cmd": ["/bin/sh", "-c", "trap 'exit 42' USR2; echo up; while :; do sleep 0.1; done"]})
    cid = cell.detached(ref)
    wait_for(lambda: "up" in cell("logs", cid).stdout, what="the app")
    cell("kill", "-s", "USR2", cid)
    wait_for(lambda: cell.state(cid)["Status"] == "exited", what="exit")
    assert cell.state(cid)["ExitCode"] == 42
    r = cell("kill", cid, check=False)
    assert r.returncode != 0 and "not running" in r.stderr
    r = cell("kill", "-s", "NOSUCHSIG", cid, check=False)
    assert r.returncode != 0 and "invalid signal" in r.stderr


def test_survives_death_of_its_starter(cell):
    """kill -9 of the `berth run` that started a container: the container keeps running, its logs are still
    collected, and any berth process finds it and reports it accurately."""
    ref = cell.image({"Cmd": ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.05; done"]})
    p = subprocess.Popen([berthcli.BERTH_BIN, "--data-dir", cell.data, "run", "--name", "fg", ref],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "line 1"
    p.kill()
    p.wait()
    st = cell.state("fg")
    assert st["Status"] == "running" and st["Supervised"]
    n0 = len(cell("logs", "fg").stdout.splitlines())
    wait_for(lambda: len(cell("logs", "fg").stdout.splitlines()) > n0 + 5, what="logs after the starter died")
    # logs -f follows until the container stops
    f = subprocess.Popen([berthcli.BERTH_BIN, "--data-dir", cell.data, "logs", "-f", "--tail", "2", "fg"],
                         stdout=subprocess.PIPE, text=True)
    first = f.stdout.readline()
    assert first.startswith("line ")
    cell("stop", "-t", "1", "fg")
    out = f.stdout.read()  # (not communicate(): it would skip what readline() buffered)
    assert f.wait(timeout=30) == 0
    nums = [int(l.split()[1]) for l in [first] + out.splitlines()]
    assert nums == list(range(nums[0], nums[0] + len(nums)))  # no line lost or repeated while following
    assert cell.state("fg")["Status"] == "exited"


def test_monitor_death_is_reported(cell):
    ref = cell.image({"Cmd": ["sleep", "1000"]})
    cid = cell.detached(ref)
    out = subprocess.run(["pgrep", "-f", f"berth-monitor .*--id {cid}"], capture_output=True, text=True).stdout
    os.kill(int(out.split()[0]), signal.SIGKILL)
    wait_for(lambda: not cell.state(cid)["Supervised"], what="the monitor's death to show")
    st = cell.state(cid)
    assert st["Status"] == "running" and "monitor died" in st["Error"]
    assert "unsupervised" in cell("ps").stdout
    cell("rm", "-f", cid)
    assert ps_json(cell.data) == []


def test_foreground_exit_codes_signals_and_rm(cell):
    ref = cell.image({"Cmd": ["/bin/sh", "-c", "echo out; echo err >&2; exit 7"]})
    r = cell.run("--rm", ref, check=False)
    assert (r.returncode, r.stdout, r.stderr.splitlines()[-1]) == (7, "out\n", "err")
    assert ps_json(cell.data) == []
    # without --rm the container stays, exited, with its logs
    r = cell.run("--name", "kept", ref, check=False)
    assert r.returncode == 7
    assert cell.state("kept")["ExitCode"] == 7 and cell("logs", "kept").stdout == "out\n"
    # a command that does not exist: docker's 127, nothing left with --rm
    r = cell.run("--rm", ref, "/no/such/binary", check=False)
    assert r.returncode == 127 and "/no/such/binary" in r.stderr
    # SIGTERM to the foreground berth is passed on to the container
    ref2 = cell.image({"Cmd": ["/bin/sh", "-c", TRAP_APP], "Env": ["SIG=TERM", "PATH=/bin"]})
    p = subprocess.Popen([berthcli.BERTH_BIN, "--data-dir", cell.data, "run", "--rm", ref2],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0 and "got-TERM" in out
    assert [x["Name"] for x in ps_json(cell.data)] == ["kept"]


def test_detached_rm_removes_itself(cell):
    ref = cell.image({"Cmd": ["/bin/sh", "-c", "echo bye"]})
    cid = cell.detached("--rm", ref)
    wait_for(lambda: cid not in [x["Id"] for x in ps_json(cell.data)], what="autoremove")


def test_log_rotation_tail_and_long_lines(cell, scratch):
    cfg = os.path.join(scratch, "config.yaml")
    with open(cfg, "w") as f:
        f.write(CELL_CONFIG_YAML + "  log_max_bytes: 65536\n  log_files: 3\n")
    long = "x" * 40000
    ref = cell.image({"Cmd": ["/bin/sh", "-c",
                              f"i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo line $i; done; "
                              f"printf '{long}\\n'; echo last"]})
    r = berth(cell.data, "run", "--name", "chatty", ref, config=cfg)
    assert r.stdout.endswith(long + "\nlast\n")  # the foreground stream is complete
    d = inspect_ctr(cell.data, "chatty")
    logdir = os.path.dirname(d["LogPath"])
    logs = sorted(x for x in os.listdir(logdir) if x.startswith("container.log"))
    assert logs == ["container.log", "container.log.1", "container.log.2"]
    assert all(os.path.getsize(os.path.join(logdir, x)) <= 65536 + 20000 for x in logs)
    tail = berth(cell.data, "logs", "--tail", "3", "chatty", config=cfg).stdout.splitlines()
    assert tail == ["line 3000", long, "last"]  # a 40 kB line comes back whole from partial records
    assert berth(cell.data, "logs", "--tail", "0", "chatty", config=cfg).stdout == ""


def test_limits_and_usage(cell):
    hog = cell.image({"Cmd": ["/bin/sh", "-c", "echo start; exec dd if=/dev/zero of=/dev/null bs=200M count=1"]})
    r = cell.run("--name", "hog", "-m", "64M", hog, check=False)
    assert r.returncode == 137 and "survived" not in r.stdout
    st = cell.state("hog")
    assert st["OOMKilled"] and st["ExitCode"] == 137
    assert "OOMKilled" in cell("ps", "-a").stdout
    forker = cell.image({"Cmd": ["/bin/sh", "-c",
                                 "(for i in $(seq 60); do sleep 1000 & done) 2>/dev/null; echo spawned; exec sleep 1000"]})
    cid = cell.detached("--pids", "20", "-m", "128M", forker)
    wait_for(lambda: "spawned" in cell("logs", cid).stdout, what="the forks")
    d = inspect_ctr(cell.data, cid)
    assert d["HostConfig"]["PidsLimit"] == 20 and d["HostConfig"]["Memory"] == 128 << 20
    assert d["HostConfig"]["CpuShares"] == 16  # 1024 * 128 / 8192, as Garden
    u = d["Usage"]
    assert u["pids"] <= 20 and u["pids"] >= 10, u
    assert 0 < u["memory_bytes"] < 128 << 20 and u["cpu_ns"] > 0


def test_bad_input(cell):
    ref = cell.image({"Cmd": ["true"]})
    for args, msg in [(["--name", "-bad"], "invalid container name"), (["-p", "80"], "HOSTPORT:PORT"),
                      (["-p", "1.2.3:80:80"], "not an IPv4"), (["-p", "0:80"], "1-65535"),
                      (["--network", "host"], "bridge or none"), (["--disk", "1x"], "disk size"),
                      (["--runtime", "sh"], "--runtime")]:
        r = cell.run(*args, ref, check=False)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
    for cmd in (["logs", "nope"], ["stop", "nope"], ["rm", "nope"], ["exec", "nope", "true"], ["inspect", "nope"]):
        r = cell(*cmd, check=False)
        assert r.returncode != 0 and "no such container: nope" in r.stderr, (cmd, r.stderr)
    r = cell("logs", "--tail", "x", "nope", check=False)
    assert r.returncode == 2


def test_hundred_containers_leave_nothing(cell):
    ref = cell.image({"Cmd": ["sleep", "1000"]})
    # every tenth with a disk quota (a btrfs subvolume and qgroup each) and a published port
    ids = [cell.detached(*(["--disk", "16M", "-p", f"{19000 + i}:80"] if i % 10 == 0 else []), ref)
           for i in range(100)]
    assert len(ps_json(cell.data, all_=False)) == 100
    cell("rm", "-f", *ids)
    assert ps_json(cell.data) == []
    # (the fixture compares mounts, links, cgroups, nft rules, loop devices, processes and files; the
    # quota pool's mount and loop device belong to the data dir and were set up before)


def test_crashed_create_is_swept(cell):
    ref = cell.image({"Cmd": ["sleep", "1000"]})
    clean = host_snapshot(cell.data)
    r = cell.run("-d", "--name", "crashy", "-p", "18089:80", ref, check=False, env={"BERTH_FAULT": "crash-in-create"})
    assert r.returncode == -9
    assert host_snapshot(cell.data) != clean  # the crash left a rootfs mount, a netns, files...
    assert ps_json(cell.data) == []           # ...but no container anyone can see
    cid = cell.detached("--name", "crashy", ref)  # the next run sweeps it; the name is free
    cell("rm", "-f", cid)
    after = host_snapshot(cell.data)
    for key in clean:
        if key != "container_pids":
            assert after[key] == clean[key], key


def test_exec_with_a_terminal(cell):
    ref = cell.image({"Cmd": ["sleep", "1000"]})
    cid = cell.detached(ref)
    cmd = f"{berthcli.BERTH_BIN} --data-dir {cell.data} exec -it {cid[:12]} sh"
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], input="tty; echo term=$TERM; exit 5\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 5
    assert "/dev/pts/0" in r.stdout and "term=xterm" in r.stdout
    r = cell("exec", "-t", cid, "true", check=False)  # stdin is not a terminal here
    assert r.returncode != 0 and "not a TTY" in r.stderr
    r = cell("exec", "-i", cid, "cat", input="through stdin\n")
    assert r.stdout == "through stdin\n"


def test_published_port_disk_quota_and_usage(cell):
    """-p from the host's loopback, --disk enforced, and both visible in inspect's usage."""
    ref = cell.image({"Cmd": ["/bin/sh", "-c",
                              "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"],
                      "ExposedPorts": {"8080/tcp": {}}})
    cid = cell.detached("-p", "127.0.0.1:18181:8080", "--disk", "64M", ref)
    import urllib.request

    def fetch():
        try:
            return urllib.request.urlopen("http://127.0.0.1:18181/index.html", timeout=2).read()
        except OSError:
            return None
    assert wait_for(fetch, what="the published port") == b"hello\n"
    r = cell("exec", cid, "sh", "-c", "dd if=/dev/zero of=/big bs=1M count=100 2>&1; sync; echo rc=$?",
             check=False)
    assert "Disk quota exceeded" in r.stdout, r.stdout
    d = inspect_ctr(cell.data, cid)
    assert d["HostConfig"]["DiskQuota"] == 64 << 20
    assert d["NetworkSettings"]["IPAddress"].startswith(E2E_SUBNET_PREFIX)
    assert d["NetworkSettings"]["Ports"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18181"}]}
    assert "127.0.0.1:18181->8080/tcp" in cell("ps").stdout
    u = d["Usage"]
    assert 32 << 20 <= u["disk_bytes"] <= 65 << 20, u
    assert u["network"]["tx_bytes"] > 0 and u["network"]["rx_bytes"] > 0, u
    # a second container cannot take the same host port, and leaves nothing behind trying
    r = cell.run("-d", "-p", "18181:8080", ref, check=False)
    assert r.returncode != 0 and "host port 18181 is already allocated" in r.stderr
    assert len(ps_json(cell.data)) == 1
    cell("rm", "-f", cid)
    assert fetch() is None  # the mapping went with the container


def test_address_and_port_reused_at_once(cell):
    """A container's address and host port, freed by rm, serve the next container immediately (the host's
    stale neighbour entry for the address must not send its traffic to the old MAC address)."""
    import urllib.request
    for i in range(3):
        ref = cell.image({"Cmd": ["/bin/sh", "-c", f"mkdir -p /w && echo c{i} > /w/i && exec httpd -f -p 8080 -h /w"]})
        cid = cell.detached("-p", "18292:8080", ref)

        def fetch():
            try:
                return urllib.request.urlopen("http://127.0.0.1:18292/i", timeout=1).read()
            except OSError:
                return None
        assert wait_for(fetch, timeout=3, what=f"container {i} through the reused port") == f"c{i}\n".encode()
        cell("rm", "-f", cid)


def test_several_containers_at_once(cell):
    """stop, kill and rm go through every container given, report each failure, and exit 1 if any failed."""
    ref = cell.image({"Cmd": ["sleep", "1000"]})
    a, b = cell.detached("--name", "a", ref), cell.detached("--name", "b", ref)
    r = cell("stop", "-t", "0", "a", "nope", "b", check=False)
    assert r.returncode == 1 and r.stdout.split() == ["a", "b"] and "no such container: nope" in r.stderr
    assert {x["State"]["Status"] for x in ps_json(cell.data)} == {"exited"}
    r = cell("rm", "a", "nope", "b", check=False)
    assert r.returncode == 1 and r.stdout.split() == ["a", "b"]
    assert ps_json(cell.data) == [] and a != b
