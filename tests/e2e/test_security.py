"""Security (issue 3): a hostile image, run as container root, tries to get out.

It tries: mount (several filesystem types, bind, remount, the new mount API), unshare / clone of every
namespace type, setns, ptrace and its relatives, mknod, /dev/fuse, /proc/kcore, /proc/kmsg, /sys/firmware,
/proc/sysrq-trigger, /proc/sys and /sys writes, raising capabilities, kernel attack surface (keyctl, bpf,
io_uring, perf_event_open, kexec, modules, open_by_handle_at, userfaultfd, iopl...), the i386 system call
ABI (none in an amd64 image; a linux/386 image's under the same filter), a setuid / file-capability escalation, chroot escapes, clock and reboot calls, a fork bomb past the
pids limit, memory past the limit, and reaching the host's and another container's services, IPC and
processes. Every attempt must fail with the expected errno, and the host must be unchanged.

The attempts are made by ``hostile/hostile.c`` (compiled statically once per session), which prints one
``R <name> <value>`` line per attempt; one container makes (nearly) all of them, and the expectations
live in ``EXPECT`` below.

The disk quota, bridge networking and published ports are tested here too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

import imagebuild as ib
from helpers import berth, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
HOSTILE_SRC = os.path.join(HERE, "hostile", "hostile.c")

IDMAP_HOST_BASE = 1000000000
IDMAP_SIZE = 16777216
# bundle.c's capability set (Docker's default): CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
CAPS = "00000000a80425fb"
NO_CAPS = "0000000000000000"
CONTAINER_NAMESPACES = ("user", "pid", "mnt", "net", "uts", "ipc", "cgroup")



# --------------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def hostile_bin():
    """hostile.c, compiled statically once per session."""
    d = tempfile.mkdtemp(prefix="berth-e2e-hostile-")
    out = os.path.join(d, "hostile")
    try:
        subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", out, HOSTILE_SRC], check=True,
                       capture_output=True, text=True)
        with open(out, "rb") as f:
            yield f.read()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _cap_xattr(*caps: int, effective=True) -> bytes:
    """security.capability, VFS_CAP_REVISION_2 (with the effective flag unless told), ``caps`` permitted."""
    lo = sum(1 << c for c in caps if c < 32)
    hi = sum(1 << (c - 32) for c in caps if c >= 32)
    return struct.pack("<IIIII", 0x02000000 | int(effective), lo, 0, hi, 0)


CAP_DAC_READ_SEARCH, CAP_SETUID, CAP_SYS_PTRACE, CAP_SYS_ADMIN = 2, 7, 19, 21


def _umount_below(path):
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f]
    for m in sorted((m for m in mps if m == path or m.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def _procs_with(token: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if token in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def _cgroup_dirs(cid: str) -> list[str]:
    import glob
    return glob.glob(f"/sys/fs/cgroup/*/berth/{cid}") + glob.glob(f"/sys/fs/cgroup/berth/{cid}")


class Sec:
    """A data dir with the hostile image pulled; runs and removes containers, remembers their ids."""

    def __init__(self, data, ref, token):
        self.data, self.ref, self.token = data, ref, token
        self.ids: list[str] = []
        self.n = 0

    def __call__(self, *args, check=True, timeout=120):
        return berth(self.data, *args, check=check, timeout=timeout)

    def name(self, what):
        self.n += 1
        return f"{self.token}-{what}-{self.n}"

    def run(self, *args, cmd=(), entrypoint="/hostile", timeout=120):
        """Foreground run under a unique name; returns (CompletedProcess, inspect document); the container
        is removed afterwards."""
        name = self.name("fg")
        r = self("run", "--name", name, "--entrypoint", entrypoint, *args, self.ref, *cmd, check=False,
                 timeout=timeout)
        ins = self("inspect", name, check=False)
        doc = json.loads(ins.stdout)[0] if ins.returncode == 0 else {}
        if doc:
            self.ids.append(doc["Id"])
            self("rm", "-f", name, check=False)
        return r, doc

    def detached(self, *args, cmd=(), entrypoint="/hostile"):
        r = self("run", "-d", "--name", self.name("bg"), "--entrypoint", entrypoint, *args, self.ref, *cmd)
        cid = r.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{64}", cid), r.stdout + r.stderr
        self.ids.append(cid)
        return cid

    def inspect(self, cid):
        return json.loads(self("inspect", cid).stdout)[0]

    def logs(self, cid):
        return self("logs", cid, check=False).stdout


def _hostile_image(hostile_bin, arch="amd64"):
    """busybox with the probe, set-uid and file-capability copies of it, and a marker file."""
    return ib.busybox_image(arch=arch, config={"Cmd": ["/hostile"]}, extra_layers=[[
        ib.File("hostile", hostile_bin, mode=0o755),
        ib.File("hostile-suid", hostile_bin, mode=0o4755),
        ib.File("hostile-fcap", hostile_bin, mode=0o755,
                xattrs={"security.capability": _cap_xattr(CAP_SYS_ADMIN, CAP_SETUID, CAP_SYS_PTRACE,
                                                          CAP_DAC_READ_SEARCH)}),
        ib.File("hostile-fcap-noeff", hostile_bin, mode=0o755,
                xattrs={"security.capability": _cap_xattr(CAP_SYS_ADMIN, CAP_SETUID, CAP_SYS_PTRACE,
                                                          CAP_DAC_READ_SEARCH, effective=False)}),
        ib.File("etc/berth-hostile-marker", "container\n"),
    ]])


@pytest.fixture(scope="module")
def sec(session_registry, hostile_bin):
    token = "bsec" + secrets.token_hex(4)
    data = tempfile.mkdtemp(prefix="berth-e2e-sec-")
    img = _hostile_image(hostile_bin)
    repo = f"sec/hostile-{token}:v1"
    session_registry.push(img, repo)
    s = Sec(data, session_registry.ref(repo), token)
    try:
        berth(data, "image", "pull", s.ref)
        # warm-up: the first container run may prepare the host once (cgroup controllers); snapshots of the
        # host are taken after it
        r, _ = s.run(cmd=["status", "warm_"])
        assert r.returncode == 0 and "R warm_Seccomp 2" in r.stdout, r.stdout + r.stderr
        yield s
    finally:
        ids = [x["Id"] for x in json.loads(berth(data, "ps", "--json", "-a", check=False).stdout or "[]")]
        if ids:
            berth(data, "rm", "-f", *ids, check=False)
        try:
            # nothing of any container may outlive it: processes, cgroups, mounts
            wait_for(lambda: not _procs_with(token), timeout=15, what="no hostile process left")
            for cid in s.ids:
                wait_for(lambda: not _cgroup_dirs(cid), timeout=10, what=f"cgroups of {cid[:12]} removed")
            with open("/proc/mounts") as f:
                # (the data dir's netns directory is a mount point of its own, like /run/netns: not a leak)
                # (nor is the disk-quota pool at cell/disk, a btrfs on an autoclear loop device)
                mounts = "\n".join(l for l in f.read().splitlines()
                                   if l.split()[1] not in (os.path.join(data, "cell", "netns"),
                                                           os.path.join(data, "cell", "disk")))
            assert data not in mounts and not any(cid in mounts for cid in s.ids)
        finally:
            _umount_below(os.path.realpath(data))
            shutil.rmtree(data, ignore_errors=True)


def parse(out: str) -> dict[str, str]:
    res = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "R":
            res[parts[1]] = parts[2]
    return res


# --------------------------------------------------------------------------------------------------------
# the host, before and after
# --------------------------------------------------------------------------------------------------------

HOST_FILES = ("/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname", "/proc/sys/kernel/core_pattern",
              "/proc/sys/kernel/modprobe", "/proc/sys/kernel/sysrq", "/sys/kernel/uevent_helper",
              "/sys/class/net/lo/mtu", "/sys/kernel/mm/transparent_hugepage/enabled")
HOST_DIRS = ("/", "/etc", "/root", "/var/tmp", "/dev/shm", "/dev", "/sys/fs/cgroup")


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError as e:
        return f"<{e.__class__.__name__}>"


# Where other activity on this host (other test runs, benchmarks with podman...) mounts things while this
# suite runs: not compared. A container escape would show as a mount on the host's own tree (/, /etc,
# /proc, /sys, /dev...), which is compared; the containers' own mounts are checked by id (see `sec`).
BUSY_MOUNT_PREFIXES = (tempfile.gettempdir() + "/", "/work/", "/run/netns", "/var/run/netns", "/run/containers",
                       "/var/lib/containers", "/run/user/", "/var/lib/docker", "/var/lib/berth")


def host_state(data_dir: str) -> dict:
    mounts = []
    with open("/proc/mounts") as f:
        for line in f:
            mp = line.split()[1]
            if mp.startswith(BUSY_MOUNT_PREFIXES) or data_dir in line:
                continue
            mounts.append(line)
    st = {"mounts": sorted(mounts), "files": {p: _read(p) for p in HOST_FILES},
          "uname": os.uname().nodename, "ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in CONTAINER_NAMESPACES}}
    for d in HOST_DIRS:
        try:
            names = os.listdir(d)
        except OSError:
            names = []
        st["dir " + d] = sorted(n for n in names if not (d == "/dev" and n.startswith("loop")))
    st["shm"] = sorted(l.split()[0] for l in _read("/proc/sysvipc/shm").splitlines()[1:])
    return st


def clock_offset() -> float:
    return time.time() - time.monotonic()


class Responsiveness(threading.Thread):
    """Starts /bin/true on the host over and over while a container misbehaves; records the worst latency."""

    def __init__(self):
        super().__init__(daemon=True)
        self.worst, self.runs, self.failures = 0.0, 0, []
        self._stop_ev = threading.Event()

    def run(self):
        while not self._stop_ev.is_set():
            t0 = time.monotonic()
            try:
                subprocess.run(["/bin/true"], timeout=10, check=True)
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(e))
            self.worst = max(self.worst, time.monotonic() - t0)
            self.runs += 1
            self._stop_ev.wait(0.05)

    def stop(self):
        self._stop_ev.set()
        self.join(15)


def _host_ipv4() -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        if m:
            return m.group(1)
    return "192.0.2.1"


def _listener(addr="0.0.0.0", port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    s.setblocking(False)
    return s


def _accepted(s) -> int:
    """Connections that reached a listener (accepted now, so a queued one counts)."""
    n = 0
    while True:
        try:
            c, _ = s.accept()
        except (BlockingIOError, OSError):
            return n
        c.close()
        n += 1


def _abstract_listener(name: str):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + name)
    s.listen(8)
    s.setblocking(False)
    return s


def _shm_create(key: int) -> int:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), ctypes.c_int(0o1000 | 0o600))
    if shmid < 0:
        raise OSError(ctypes.get_errno(), "shmget")
    return shmid


def _shm_remove(shmid: int):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmctl(ctypes.c_int(shmid), ctypes.c_int(0), None)  # IPC_RMID


# --------------------------------------------------------------------------------------------------------
# the main run: one peer container (detached) and one hostile container making all attempts
# --------------------------------------------------------------------------------------------------------

class MainRun:
    pass


@pytest.fixture(scope="module")
def main_run(sec):
    m = MainRun()
    host_ip = _host_ipv4()
    tcp = _listener()
    port = tcp.getsockname()[1]
    host_abs_name = f"berth-sec-host-{sec.token}"
    abs_l = _abstract_listener(host_abs_name)
    host_key = 0x5ec00000 | (os.getpid() & 0xffff)
    shmid = _shm_create(host_key)
    peer_key, peer_abs = host_key + 0x10000, f"berth-sec-peer-{sec.token}"
    try:
        m.before = host_state(sec.data)
        m.clock_before = clock_offset()
        # another container: SysV shm, abstract socket, a file in its rootfs, a TCP service
        peer = sec.detached(cmd=["victim", hex(peer_key), peer_abs, "8080", sec.token])
        wait_for(lambda: "R victim_ready yes" in sec.logs(peer), timeout=30, what="the peer container")
        m.peer_logs_before = parse(sec.logs(peer))
        m.peer = sec.inspect(peer)
        m.peer_pid = m.peer["State"]["Pid"]
        m.peer_status = _read(f"/proc/{m.peer_pid}/status")
        m.peer_uid_map = _read(f"/proc/{m.peer_pid}/uid_map")
        m.peer_gid_map = _read(f"/proc/{m.peer_pid}/gid_map")
        m.peer_ns = {n: os.readlink(f"/proc/{m.peer_pid}/ns/{n}") for n in CONTAINER_NAMESPACES}
        m.peer_cgroup = _read(f"/proc/{m.peer_pid}/cgroup")
        # a process started with berth exec gets the same confinement
        r = sec("exec", peer, "/hostile", "status", "exec_", check=False)
        m.exec_results = parse(r.stdout)
        # the hostile container, with a small pids limit for its fork bomb at the end
        watch = Responsiveness()
        watch.start()
        try:
            m.proc, m.doc = sec.run("--pids", "64", "-m", "256M", cmd=[
                "main", host_ip, str(port), hex(host_key), host_abs_name, str(m.peer_pid), hex(peer_key),
                peer_abs, sec.token], timeout=120)
        finally:
            watch.stop()
        m.watch = watch
        m.r = parse(m.proc.stdout)
        m.peer_logs_after = parse(sec.logs(peer))
        sec("rm", "-f", peer)
        m.host_tcp_accepted = _accepted(tcp)
        m.host_abs_accepted = _accepted(abs_l)
        m.after = host_state(sec.data)
        m.clock_after = clock_offset()
        m.host_shm_after = _read("/proc/sysvipc/shm")
        m.host_ip, m.host_key, m.peer_key = host_ip, host_key, peer_key
        yield m
    finally:
        tcp.close()
        abs_l.close()
        _shm_remove(shmid)


E_DENIED = {"EPERM"}          # seccomp's answer (defaultErrnoRet 1) or a missing capability
E_RO = {"EROFS", "EACCES"}    # read-only (bind) mounts; files of the unmapped host root
def _masked(path):
    return {"bytes=0"} if os.path.exists(path) else {"ENOENT"}


def _ro(path):
    """Writing ``path`` fails as read-only; ENOENT where this kernel has no such file."""
    return E_RO if os.path.exists(path) else {"ENOENT"}


UNREACHABLE = {"ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED", "ETIMEDOUT", "TIMEOUT", "EACCES", "EPERM"}

EXPECT: dict[str, dict[str, set]] = {
    "identity": {
        "uid": {"0"}, "pid": {"1"},
        "uid_map": {f"0 {IDMAP_HOST_BASE} {IDMAP_SIZE}".replace(" ", ",")},
        "gid_map": {f"0 {IDMAP_HOST_BASE} {IDMAP_SIZE}".replace(" ", ",")},
        "CapBnd": {CAPS}, "CapEff": {CAPS}, "CapPrm": {CAPS}, "CapInh": {NO_CAPS}, "CapAmb": {NO_CAPS},
        "NoNewPrivs": {"1"}, "Seccomp": {"2"},
        "capbset_read_sys_admin": {"0"}, "capbset_read_net_raw": {"1"},
        "rlimit_nofile": {"16384"},
        "extra_fds": {"none"}, "cwd": {"/"}, "cwd_is_root": {"yes"},
        "tiocsti_fd0": {"ENOTTY"}, "tiocsti_fd1": {"ENOTTY"}, "tiocsti_fd2": {"ENOTTY"},
        "open_dev_tty": {"ENXIO"},
    },
    "mount": {
        **{k: E_DENIED for k in (
            "mount_tmpfs", "mount_proc", "mount_sysfs", "mount_devpts", "mount_cgroup_v1", "mount_cgroup2",
            "mount_overlay", "mount_fuse", "mount_bind_root", "remount_root_rw", "remount_proc_sys_rw",
            "remount_sys_rw", "make_root_shared", "umount_proc_kcore", "umount_proc_sys", "umount_sys_firmware",
            "fsopen_tmpfs", "fspick_root", "open_tree_clone", "move_mount", "mount_setattr_rw", "pivot_root")},
        "sys_readonly": {"yes"}, "proc_sys_readonly": {"yes"}, "cgroupfs_mounts": {"0"},
        # chroot itself is allowed (CAP_SYS_CHROOT, as Docker); escaping a chroot ends at the container's root
        "chroot_jail": {"OK"}, "chroot_escape_view": {"container"},
    },
    "namespaces": {
        **{f"unshare_{n}": E_DENIED for n in ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup", "time")},
        **{f"clone_{n}": E_DENIED for n in ("newuser", "newpid", "newns", "newnet")},
        "clone3_newuser": {"ENOSYS"},  # clone3 is refused with ENOSYS so that libcs fall back to clone
        "fork_plain": {"OK"},
        **{f"setns_{n}": E_DENIED for n in ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup", "pidfd")},
    },
    "ptrace": {
        "ptrace_attach_other_uid": E_DENIED, "ptrace_seize_other_uid": E_DENIED,
        "process_vm_readv_other_uid": E_DENIED, "process_vm_writev_other_uid": E_DENIED,
        "proc_mem_other_uid": {"EACCES", "EPERM"}, "proc_environ_other_uid": {"EACCES", "EPERM"},
        "pidfd_open_other_uid": {"OK"}, "pidfd_getfd_other_uid": E_DENIED, "kcmp_other_uid": E_DENIED,
        "ptrace_attach_same_uid": E_DENIED, "process_vm_readv_same_uid": E_DENIED,
        "ptrace_traceme": E_DENIED,
        "kill_other_uid_in_container": {"OK"},
    },
    "devices": {
        **{k: E_DENIED for k in ("mknod_mem", "mknod_kmem", "mknod_sda", "mknod_vda", "mknod_fuse",
                                 "mknod_fuse_tmp", "mknod_kmsg", "mknod_null")},
        "mknod_fifo": {"OK"}, "open_dev_fuse": {"ENOENT"}, "open_dev_kmsg": {"ENOENT"},
    },
    "proc_sys": {
        # masked paths: /dev/null is bound over them (where this kernel has them at all)
        "read_proc_kcore": _masked("/proc/kcore"), "read_proc_keys": _masked("/proc/keys"),
        "read_proc_timer_list": _masked("/proc/timer_list"),
        "read_proc_kmsg": {"EACCES", "EPERM"},
        "syslog_read_all": E_DENIED,
        "sys_firmware_entries": {"(empty)", "EACCES", "ENOENT"},
        "read_sys_firmware_dsdt": {"ENOENT", "EACCES"}, "read_sys_firmware_dmi": {"ENOENT", "EACCES"},
        "write_sysrq_trigger": _ro("/proc/sysrq-trigger"), "write_core_pattern": _ro("/proc/sys/kernel/core_pattern"),
        "write_modprobe": _ro("/proc/sys/kernel/modprobe"), "write_proc_sys_hostname": E_RO,
        "write_sysrq_sysctl": _ro("/proc/sys/kernel/sysrq"), "write_ip_forward": E_RO,
        "write_drop_caches": E_RO,
        "write_attr_current": {"EINVAL", "EACCES", "EPERM", "EROFS", "ENOENT", "EOPNOTSUPP"},
        "write_attr_exec": {"EINVAL", "EACCES", "EPERM", "EROFS", "ENOENT", "EOPNOTSUPP"},
        "write_sys_uevent_helper": E_RO | {"ENOENT"}, "write_sys_lo_mtu": E_RO,
        "write_sys_thp": E_RO | {"ENOENT"}, "mkdir_sys_fs_cgroup": E_RO | {"ENOENT"},
        "oom_score_adj_lower": {"EACCES"},
    },
    "capabilities": {
        "capset_sys_admin": E_DENIED, "capset_sys_ptrace": E_DENIED, "capset_inheritable_sys_admin": E_DENIED,
        "ambient_raise_sys_admin": E_DENIED,
        "rlimit_nofile_raise": E_DENIED, "setpriority_minus20": {"EACCES", "EPERM"}, "sched_fifo": E_DENIED,
    },
    "kernel_surface": {
        **{k: E_DENIED for k in (
            "keyctl_join_session", "keyctl_get_session_id", "add_key", "request_key", "bpf_map_create",
            "io_uring_setup", "perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module",
            "delete_module", "userfaultfd", "iopl", "ioperm", "swapon", "acct", "vhangup",
            "personality_addr_no_randomize", "quotactl", "open_by_handle_at")},
    },
    "time_and_reboot": {
        "clock_settime": E_DENIED, "settimeofday": E_DENIED, "adjtimex_read": {"OK"},
        "adjtimex_set_freq": E_DENIED, "clock_adjtime_set_freq": E_DENIED,
        "reboot_cad_off": E_DENIED, "reboot_restart": E_DENIED,
        # the uts namespace belongs to the container's user namespace, but CAP_SYS_ADMIN is not granted: even
        # the container's own hostname stays (the host's is compared in test_host_unchanged)
        "sethostname": E_DENIED, "setdomainname": E_DENIED,
    },
    "network": {
        # CAP_NET_RAW is kept (Docker's and Garden's default): raw sockets in the container's own netns only
        "socket_raw_icmp": {"OK"}, "socket_packet": {"OK"},
        "socket_vsock": E_DENIED, "socket_alg": E_DENIED,
        "connect_host_ip": UNREACHABLE, "connect_loopback_host_port": {"ECONNREFUSED"},
        "connect_host_abstract": {"ECONNREFUSED"}, "shmget_host_key": {"ENOENT"},
    },
    "other_container": {
        "shmget_peer_key": {"ENOENT"}, "connect_peer_abstract": {"ECONNREFUSED"},
        "kill_peer_host_pid": {"ESRCH"}, "open_peer_root": {"ENOENT"}, "open_peer_secret": {"ENOENT"},
    },
    "setuid": {
        # a setuid-root binary / a binary with file capabilities run by uid 1000: no_new_privs, nothing gained
        "suid_ruid": {"1000"}, "suid_euid": {"1000"}, "suid_suid": {"1000"}, "suid_CapEff": {NO_CAPS},
        "suid_CapPrm": {NO_CAPS}, "suid_setuid0": E_DENIED, "suid_open_root_home": {"EACCES"},
        # file capabilities with the effective bit: the rootfs is mounted nosuid, so they are ignored and the
        # exec grants nothing (on a suid mount the kernel would refuse the exec under no_new_privs)
        "fcap_euid": {"1000"}, "fcap_CapEff": {NO_CAPS}, "fcap_CapPrm": {NO_CAPS}, "fcap_setuid0": E_DENIED,
        # without the effective bit the exec works and grants nothing
        "fcapnoeff_euid": {"1000"}, "fcapnoeff_CapEff": {NO_CAPS}, "fcapnoeff_CapPrm": {NO_CAPS},
        "fcapnoeff_setuid0": E_DENIED, "fcapnoeff_open_root_home": {"EACCES"},
    },
    "pids_limit": {
        "forkbomb_errno": {"EAGAIN"}, "forkbomb_kill_all": {"OK"}, "forkbomb_pids_after": {"1"},
        "fork_after_bomb": {"OK"}, "done": {"yes"},
    },
}


def _check(results: dict, expect: dict) -> list[str]:
    bad = []
    for name, allowed in expect.items():
        got = results.get(name, "<missing>")
        if got not in allowed:
            bad.append(f"{name}: got {got}, expected one of {sorted(allowed)}")
    return bad


def test_hostile_run_completes(main_run):
    p = main_run.proc
    print(p.stdout, p.stderr, main_run.exec_results, main_run.peer_logs_after, sep="\n")  # shown on failure / -s
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert main_run.r.get("done") == "yes"


@pytest.mark.parametrize("group", list(EXPECT))
def test_attempt_fails(main_run, group):
    bad = _check(main_run.r, EXPECT[group])
    assert not bad, f"{group}:\n  " + "\n  ".join(bad) + "\n--- output ---\n" + main_run.proc.stdout


def test_amd64_image_gets_no_i386_abi(main_run):
    """socketcall(2) carries socket(2)'s family in memory seccomp cannot read (and libseccomp allows i386's
    socketcall(SYS_SOCKET) outright for any conditional socket rule), so the AF_VSOCK/AF_ALG filter cannot hold
    for i386: an amd64 image gets no i386 system call at all. Its first one kills the thread (SIGSYS); where
    the kernel runs no i386 code, int 0x80 is a SIGSEGV."""
    r = main_run.r
    assert r.get("i386_abi") in ("unavailable-signal-31", "unavailable-signal-11"), r.get("i386_abi")
    assert not [k for k in r if k.startswith("i386_") and k != "i386_abi"], main_run.proc.stdout


# A linux/386 image: its C library makes every socket with socketcall (Debian 12's i386 glibc does), so it
# gets the i386 ABI, under the same filter otherwise. socketcall(SYS_SOCKET) is allowed whatever the family,
# as under Docker's default profile (docs/ARCHITECTURE.md, "Isolation and limits").
I386_IMAGE_EXPECT = {
    "i386_getpid": {"OK"}, "i386_socketcall_inet": {"OK"},
    "i386_socket_vsock": E_DENIED, "i386_unshare_user": E_DENIED, "i386_mount": E_DENIED,
    "i386_ptrace_traceme": E_DENIED, "i386_setns": E_DENIED,
}


def test_i386_image_gets_the_i386_abi_under_the_filter(sec, session_registry, hostile_bin):
    repo = f"sec/hostile386-{sec.token}:v1"
    session_registry.push(_hostile_image(hostile_bin, arch="386"), repo)
    ref = session_registry.ref(repo)
    sec("image", "pull", ref)
    name = sec.name("i386")
    p = sec("run", "--rm", "--name", name, "--entrypoint", "/hostile", ref, "i386", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    r = parse(p.stdout)
    if r.get("i386_abi") == "unavailable-signal-11":
        pytest.skip("this kernel runs no i386 code (int 0x80 faults): no i386 system call to try")
    assert r.get("i386_abi") == "available", p.stdout
    bad = _check(r, I386_IMAGE_EXPECT)
    assert not bad, "\n  ".join(bad) + "\n--- output ---\n" + p.stdout


def test_namespaces_are_not_the_hosts(main_run):
    r, before = main_run.r, main_run.before
    for n in CONTAINER_NAMESPACES:
        assert r[f"ns_{n}"] != before["ns"][n], n
        assert main_run.peer_ns[n] != before["ns"][n], n
        assert main_run.peer_ns[n] != r[f"ns_{n}"], f"{n} shared by two containers"
    # only the container's own processes are visible: pid 1, the fork-bomb leader, nothing of the host
    assert int(r["proc_pids"]) <= 3
    assert set(r["dev_entries"].split(",")) <= {"null", "zero", "full", "random", "urandom", "tty", "console",
                                                 "pts", "ptmx", "shm", "mqueue", "fd", "stdin", "stdout",
                                                 "stderr", "core"}, r["dev_entries"]
    assert set(r["netifs"].split(",")) <= {"lo", "eth0"} and "lo" in r["netifs"].split(",")
    assert r["hostname_after"] == main_run.doc["Id"][:12]  # its own uts namespace, named after it


def test_container_root_is_an_unprivileged_host_uid(main_run, sec):
    """Seen from the host: the container's processes run as uid/gid 1000000000 with the container's
    capability set, no_new_privs and seccomp, in namespaces of their own, in the container's cgroups."""
    st = dict(l.split(":", 1) for l in main_run.peer_status.splitlines() if ":" in l)
    assert st["Uid"].split() == [str(IDMAP_HOST_BASE)] * 4, st["Uid"]
    assert st["Gid"].split() == [str(IDMAP_HOST_BASE)] * 4, st["Gid"]
    assert st["CapEff"].strip() == CAPS and st["CapBnd"].strip() == CAPS
    assert st["NoNewPrivs"].strip() == "1" and st["Seccomp"].strip() == "2"
    assert main_run.peer_uid_map.split() == ["0", str(IDMAP_HOST_BASE), str(IDMAP_SIZE)]
    assert main_run.peer_gid_map.split() == ["0", str(IDMAP_HOST_BASE), str(IDMAP_SIZE)]
    assert f"/berth/{main_run.peer['Id']}" in main_run.peer_cgroup
    # in its own cgroup namespace the container sees its cgroup as "/", not the host's /berth/<id>
    assert main_run.r["cgroup_pids_path"] == "/"
    e = main_run.exec_results
    assert (e.get("exec_extra_fds"), e.get("exec_cwd")) == ("none", "/"), e  # nothing leaked by the runtime
    assert (e.get("exec_uid"), e.get("exec_CapEff"), e.get("exec_CapBnd"), e.get("exec_NoNewPrivs"),
            e.get("exec_Seccomp"), e.get("exec_unshare_user"), e.get("exec_mount_tmpfs")) == \
        ("0", CAPS, CAPS, "1", "2", "EPERM", "EPERM"), e


def test_host_unchanged(main_run):
    before, after = main_run.before, main_run.after
    for key in before:
        assert after[key] == before[key], f"{key} changed on the host:\nbefore {before[key]}\nafter  {after[key]}"
    mounts = _read("/proc/mounts")
    assert main_run.doc["Id"] not in mounts and main_run.peer["Id"] not in mounts  # the containers' own: gone
    assert abs(main_run.clock_after - main_run.clock_before) < 2.0, "the host's clock moved"
    # nothing of the container reached the host's listeners; its SysV segment is not on the host
    assert main_run.host_tcp_accepted == 0 and main_run.host_abs_accepted == 0
    host_keys = {int(l.split()[0]) for l in main_run.host_shm_after.splitlines()[1:]}
    assert main_run.peer_key not in host_keys and main_run.host_key in host_keys
    # the peer container was untouched: it accepted nothing and is still the one that was started
    assert not any(k == "victim_accepted" for k in main_run.peer_logs_after)


def test_fork_bomb_stays_inside_the_pids_limit(main_run):
    r, w = main_run.r, main_run.watch
    assert 10 <= int(r["forkbomb_peak_pids"]) <= 64, r["forkbomb_peak_pids"]
    assert main_run.doc["HostConfig"]["PidsLimit"] == 64
    assert main_run.doc["State"]["ExitCode"] == 0 and not main_run.doc["State"]["OOMKilled"]
    # the host kept starting processes promptly meanwhile
    assert not w.failures and w.runs > 0 and w.worst < 3.0, (w.worst, w.failures)


# --------------------------------------------------------------------------------------------------------
# separate containers
# --------------------------------------------------------------------------------------------------------

def test_setuid_binary_as_non_root_user(sec):
    """--user 1000 running a setuid-root binary (and one with file capabilities): no_new_privs keeps uid
    1000 and no capability is gained."""
    r, doc = sec.run("--user", "1000", entrypoint="/hostile-suid", cmd=["suidcheck", "user_", sec.token])
    res = parse(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {k: res.get(k) for k in ("user_ruid", "user_euid", "user_suid", "user_CapEff", "user_CapPrm",
                                    "user_NoNewPrivs", "user_setuid0", "user_open_root_home")} == {
        "user_ruid": "1000", "user_euid": "1000", "user_suid": "1000", "user_CapEff": NO_CAPS,
        "user_CapPrm": NO_CAPS, "user_NoNewPrivs": "1", "user_setuid0": "EPERM", "user_open_root_home": "EACCES"}
    # file capabilities: the rootfs is nosuid, so with the effective bit the exec works and grants nothing ...
    r, _ = sec.run("--user", "1000", entrypoint="/hostile-fcap", cmd=["suidcheck", "fcap_", sec.token])
    res = parse(r.stdout)
    assert (res.get("fcap_euid"), res.get("fcap_CapEff"), res.get("fcap_CapPrm"), res.get("fcap_setuid0")) == \
        ("1000", NO_CAPS, NO_CAPS, "EPERM"), r.stdout + r.stderr
    # ... and without it the same
    r, _ = sec.run("--user", "1000", entrypoint="/hostile-fcap-noeff", cmd=["suidcheck", "fcap_", sec.token])
    res = parse(r.stdout)
    assert (res.get("fcap_euid"), res.get("fcap_CapEff"), res.get("fcap_CapPrm"), res.get("fcap_setuid0")) == \
        ("1000", NO_CAPS, NO_CAPS, "EPERM"), r.stdout + r.stderr


def test_memory_past_the_limit_is_oom_killed(sec):
    watch = Responsiveness()
    watch.start()
    try:
        t0 = time.monotonic()
        r, doc = sec.run("-m", "32M", cmd=["memhog", sec.token])
        elapsed = time.monotonic() - t0
    finally:
        watch.stop()
    assert r.returncode == 137, r.stdout + r.stderr
    assert doc["State"]["OOMKilled"] and doc["State"]["ExitCode"] == 137
    mbs = [int(v) for k, v in (l.split(" ", 2)[1:] for l in r.stdout.splitlines() if l.startswith("R "))
           if k == "memhog_mb"]
    assert mbs and max(mbs) <= 32, mbs   # swap is limited too: no more than the limit was ever touched
    assert elapsed < 60 and not watch.failures and watch.worst < 3.0, (elapsed, watch.worst, watch.failures)


# --------------------------------------------------------------------------------------------------------
# disk quota, bridge networking, published ports
# --------------------------------------------------------------------------------------------------------

def test_disk_quota(sec):
    st0 = os.statvfs(sec.data)
    r, doc = sec.run("--disk", "64M", cmd=["diskfill", "/fill", sec.token], timeout=300)
    res = parse(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr      # the container survives and reports it
    assert res.get("disk_fill") == "EDQUOT", r.stdout  # "Disk quota exceeded"
    assert 32 <= int(res["disk_fill_mb"]) <= 64, res["disk_fill_mb"]
    assert res.get("disk_unlink") == "OK" and res.get("disk_write_after") == "OK", r.stdout
    assert doc["HostConfig"]["DiskQuota"] == 64 << 20
    # the host's file system did not fill up with it (the pool is sparse)
    st1 = os.statvfs(sec.data)
    assert st1.f_bavail * st1.f_frsize > st0.f_bavail * st0.f_frsize - (256 << 20)


def _need_network(sec, cid):
    d = sec.inspect(cid)
    ip = d.get("NetworkSettings", {}).get("IPAddress", "")
    assert ip, d.get("NetworkSettings")
    return ip, d["NetworkSettings"].get("Gateway") or "10.88.0.1"


def test_network_isolation(sec):
    """Two detached containers: neither reaches the other, nor a TCP service of the host (bound on 0.0.0.0
    or on the bridge's gateway address); each still reaches itself (the probe works)."""
    a = sec.detached(cmd=["victim", "0x5ec1a001", f"a-{sec.token}", "8080", sec.token])
    b = sec.detached(cmd=["victim", "0x5ec1a002", f"b-{sec.token}", "8080", sec.token])
    listeners = []
    try:
        ip_a, gw = _need_network(sec, a)
        ip_b, _ = _need_network(sec, b)
        assert ip_a != ip_b
        for cid in (a, b):
            wait_for(lambda: "R victim_ready yes" in sec.logs(cid), timeout=30, what="the victims")
        any_l, gw_l = _listener("0.0.0.0"), _listener(gw)
        listeners += [any_l, gw_l]
        p_any, p_gw = any_l.getsockname()[1], gw_l.getsockname()[1]
        host_ip = _host_ipv4()
        for src, own_ip, other_ip in ((b, ip_b, ip_a), (a, ip_a, ip_b)):
            r = sec("exec", src, "/hostile", "probe", f"self={own_ip}:8080", f"other={other_ip}:8080",
                    f"gw_any={gw}:{p_any}", f"gw_bound={gw}:{p_gw}", f"host_ip={host_ip}:{p_any}", check=False)
            res = parse(r.stdout)
            assert res.get("probe_done") == "yes", r.stdout + r.stderr
            assert res["self"] == "OK", res
            bad = {k: v for k, v in res.items() if k not in ("self", "probe_done") and v not in UNREACHABLE}
            assert not bad, f"reachable from {src[:12]}: {bad}"
        # CAP_NET_RAW lets a container send hand-made frames: a SYN to the host's 127.0.0.1 through the gateway
        # (accepted by a host with route_localnet=1, CVE-2020-8558), and straight to the other container's MAC
        loop_l = _listener("127.0.0.1")
        listeners.append(loop_l)
        mac_a = sec("exec", a, "/bin/cat", "/sys/class/net/eth0/address").stdout.strip()
        r = sec("exec", b, "/hostile", "l2syn", f"loopback=127.0.0.1:{loop_l.getsockname()[1]}@gw",
                f"loopback_any=127.0.0.1:{p_any}@gw", f"gw_any={gw}:{p_any}@gw", f"other_l2={ip_a}:8080@{mac_a}",
                check=False)
        res = parse(r.stdout)
        assert res.get("l2syn_done") == "yes", r.stdout + r.stderr
        assert not {k: v for k, v in res.items() if v == "synack"}, f"answered hand-made SYNs: {res}"
        assert _accepted(any_l) == 0 and _accepted(gw_l) == 0 and _accepted(loop_l) == 0
        # each victim was reached by itself only
        for cid in (a, b):
            assert sec.logs(cid).count("R victim_accepted tcp") == 1
    finally:
        for s in listeners:
            s.close()
        sec("rm", "-f", a, b, check=False)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_published_port_reachable_from_host(sec):
    port = 18080
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        port = _free_port()  # 18080 is taken on this host
    except OSError:
        pass
    cid = sec.detached("-p", f"{port}:8080", cmd=["victim", "0x5ec1a003", f"p-{sec.token}", "8080", sec.token])
    try:
        _need_network(sec, cid)
        wait_for(lambda: "R victim_ready yes" in sec.logs(cid), timeout=30, what="the service")

        def hello():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                    return c.recv(64)
            except OSError:
                return None
        assert wait_for(hello, timeout=15, what=f"127.0.0.1:{port}") == b"hello\n"
        assert sec.inspect(cid)["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"] == str(port)
    finally:
        sec("rm", "-f", cid, check=False)
    # the mapping is gone with the container
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_setuid_files_of_containers_give_host_users_nothing(sec):
    """Container root makes a setuid-root copy of a program in its writable layer (and the image has a
    setuid-root program too). On the host those files belong to uid 1000000000, never to root; a host user
    who finds them (the paths show in the world-readable /proc/mounts) must not be able to run them as
    that uid, which owns every container's files and processes."""
    cid = sec.detached(cmd=["victim", "0x5ec1a004", f"s-{sec.token}", "8080", sec.token])
    name = f"planted-{sec.token}"
    try:
        r = sec("exec", cid, "/hostile", "plant", f"/tmp/{name}", check=False)
        assert "R plant OK" in r.stdout, r.stdout + r.stderr
        paths = []
        for root, dirs, files in os.walk(sec.data):
            if name in files:
                paths.append(os.path.join(root, name))
        assert paths, "the planted file is nowhere under the data dir"
        # the merged root (an overlay mount in the host's mount namespace, if any) shows the image's files
        merged = [l.split()[1] for l in _read("/proc/mounts").splitlines()
                  if l.split()[0] == "overlay" and cid in l.split()[1]]
        paths += [os.path.join(m, "hostile-suid") for m in merged]
        as_nobody = dict(user=65534, group=65534, extra_groups=[], capture_output=True, text=True, timeout=30)
        mounts_seen = subprocess.run(["/bin/cat", "/proc/self/mounts"], **as_nobody).stdout
        holes = []
        for path in paths:
            st = os.stat(path)
            assert st.st_uid == IDMAP_HOST_BASE and st.st_gid == IDMAP_HOST_BASE, (path, st.st_uid)
            assert st.st_mode & 0o4000, oct(st.st_mode)
            try:
                p = subprocess.run([path, "suidcheck", "host_"], **as_nobody)
            except PermissionError:
                continue  # not even reachable: fine
            euid = parse(p.stdout).get("host_euid")
            if euid not in (None, "65534"):
                holes.append(f"host user nobody ran {path} with euid {euid}")
        assert not holes, "\n".join(holes) + (
            f"\n(the container's paths are readable by nobody in /proc/mounts: {cid in mounts_seen})")
    finally:
        sec("rm", "-f", cid, check=False)
