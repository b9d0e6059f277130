#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Container start benchmark (issue 3). Start a container that runs /bin/true and wait until it is gone,
# BENCH_STARTS times in sequence (default 100) per tool, side by side in the same run:
#   1. crun run of a prepared bundle       the floor: the very config.json berth writes for this image (user
#                                          namespace, the same six namespaces, seccomp, capabilities, mounts,
#                                          cgroup under /berth) on a plain directory rootfs (the image
#                                          exported, ids shifted as berth's store shifts them)
#   2. berth run --rm --network none IMAGE /bin/true
#                                          store lookup, overlay rootfs, process spec, berth-monitor, crun run
#                                          --detach, crun delete, removal: the same container as the floor's
#   3. berth run --rm IMAGE /bin/true      as a user types it (the bridge network, where berth has one)
#   4. podman run --rm IMAGE /bin/true     as a user types it (netavark bridge network, no user namespace)
#   5. podman run --rm --network none ...  the same without the network set-up
# and `berth --version` (process start alone). Per tool: mean, p50, p95, min, max and the total; ratios
# berth/crun (goal <= 1.5; --network none, as the floor) and podman/berth (goal >= 5; like with like).
#
# Then, with BENCH_PROFILE (default 1, needs perf): where the time of `berth run --rm` goes, from scheduler
# and syscall tracepoints (perf record -a, no ptrace), median of BENCH_PROFILE_RUNS runs.
#
# Then, with BENCH_DENSITY containers (default 250; 0 skips): that many idle containers started detached
# (`berth run -d IMAGE sleep 100000`; --network none when berth has no network yet) one after another: the
# time to start them all, and the host memory per container outside the app: the berth-monitor's PSS plus
# the kernel memory that grew with the containers (slab, stacks, page tables: mounts, namespaces, cgroups,
# pipes) minus the part charged to the containers' own cgroups; then `berth rm -f` of all of them. Skipped
# with a message when `berth run -d` says detached mode is unsupported.
#
# The image: busybox-static with its applets and /etc/passwd, one gzip layer (about 1 MB), built with umoci,
# pushed with skopeo to Debian's docker-registry on 127.0.0.1, pulled from there by berth and podman.
# Everything (the registry's storage, berth's data dir, podman's --root/--runroot/--tmpdir, the crun bundle)
# lives in a temporary directory under bench/out and is removed at the end, with every container and mount,
# and the network state podman's netavark adds (nftables tables, ipam db) when it was not there before.
#
# Environment: BERTH (default build/berth), BENCH_OUT (default bench/out), BENCH_STARTS (default 100),
# BENCH_ROUNDS (the runs of each tool are split over this many rounds, tools taking turns, default 5),
# BENCH_WARMUP (untimed starts per tool first, default 5), BENCH_TOOLS (default "crun berth-nonet berth
# podman podman-nonet"), BENCH_COMMIT (the berth commit to report; default: this repo's HEAD),
# BENCH_PROFILE (default 1), BENCH_PROFILE_RUNS (default 10), BENCH_DENSITY (default 250).
# Needs root. Everything listens on 127.0.0.1 only.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
BERTH=${BERTH:-$REPO/build/berth}
OUT=${BENCH_OUT:-$REPO/bench/out}
STARTS=${BENCH_STARTS:-100}
WARMUP=${BENCH_WARMUP:-5}
TOOLS=${BENCH_TOOLS:-crun berth-nonet berth podman podman-nonet}
PROFILE=${BENCH_PROFILE:-1}
PROFILE_RUNS=${BENCH_PROFILE_RUNS:-10}
DENSITY=${BENCH_DENSITY:-250}
ROUNDS=${BENCH_ROUNDS:-5}
# Debian's interpreter, not whatever shim is first in PATH.
PY=/usr/bin/python3
IDMAP_HOST_BASE=1000000000 # src/image/idmap.h: container id N is host id IDMAP_HOST_BASE + N
# podman's defaults (nofile 1048576, nproc 4194304) exceed this machine's hard limits, and root here has no
# CAP_SYS_RESOURCE to raise them: crun fails with "setrlimit RLIMIT_NOFILE: Operation not permitted".
# nofile as berth sets it; nproc: 1024 is what crun accepts here.
PODMAN_ULIMITS=(--ulimit nofile=16384:16384 --ulimit nproc=1024:1024)

BENCH_NAME=start
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
bench_init "namespaces, cgroups, mounts, podman's and berth's stores"

# --- packages --------------------------------------------------------------------------------------------------
need=(docker-registry skopeo umoci crun busybox-static python3 curl nftables iproute2)
has_tool podman || has_tool podman-nonet && need+=(podman)
[ "$PROFILE" = 0 ] || need+=(linux-perf)
"$REPO/scripts/install-deps.sh" "${need[@]}"

# --- scratch space and cleanup ---------------------------------------------------------------------------------
WORK=$(mktemp -d "$OUT/start.XXXXXX")
chmod 0711 "$WORK" # containers' root (host uid 1000000000) must traverse to their rootfs
D=$WORK/berth      # berth's data dir
# berth's cell network (once berth has one) on its own bridge, subnet and nftables table, as the e2e tests
# do, so that a berth platform on this host is never touched; both are removed at the end.
NET_BRIDGE=btbench$$
NET_TABLE=berth_bench_$$
mkdir -p "$D"
chmod 0711 "$D"
printf 'cell:\n  network:\n    bridge: %s\n    subnet: 10.214.0.0/16\n    nft_table: %s\n' \
        "$NET_BRIDGE" "$NET_TABLE" >"$D/config.yaml"
PODMAN_DIR=$WORK/podman
REG_PID=""
# What podman's netavark adds to the host (nftables tables through iptables-nft, its ipam db), removed at
# the end when it was not there before. (It also sets net.ipv4.ip_forward=1; that is restored too.)
NFT_BEFORE=$(nft list tables 2>/dev/null || true)
IPAM_DB=/run/containers/networks/ipam.db
IPAM_BEFORE=0
[ -e "$IPAM_DB" ] && IPAM_BEFORE=1
IP_FORWARD_BEFORE=$(cat /proc/sys/net/ipv4/ip_forward)

podman_() {
        podman --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/run" --tmpdir "$PODMAN_DIR/tmp" \
                --storage-driver overlay --cgroup-manager cgroupfs --events-backend file --log-level error "$@"
}

berth_rm_all() {
        [ -d "$D/cell" ] || return 0
        local ids
        ids=$("$BERTH" --data-dir "$D" ps -a -q 2>/dev/null || true)
        # shellcheck disable=SC2086
        [ -z "$ids" ] || "$BERTH" --data-dir "$D" rm -f $ids >/dev/null 2>&1 || true
}

cleanup() {
        local rc=$?
        set +e
        trap - INT TERM
        berth_rm_all
        if [ -d "$PODMAN_DIR/root" ]; then
                podman_ rm -a -f >/dev/null 2>&1
                podman_ rmi -a -f >/dev/null 2>&1
        fi
        local t
        while read -r t; do
                [ -n "$t" ] || continue
                grep -qxF "$t" <<<"$NFT_BEFORE" && continue
                # Only netavark's own tables (chains named NETAVARK* plus the base chains iptables-nft adds).
                # shellcheck disable=SC2086
                if ! nft list $t 2>/dev/null | grep -E '^\s+chain ' |
                        grep -vqE 'chain (NETAVARK[A-Z_-]*|INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) '; then
                        # shellcheck disable=SC2086
                        nft delete $t 2>/dev/null
                fi
        done < <(nft list tables 2>/dev/null)
        [ "$IPAM_BEFORE" = 1 ] || rm -f "$IPAM_DB"
        ip link del "$NET_BRIDGE" >/dev/null 2>&1
        nft delete table inet "$NET_TABLE" >/dev/null 2>&1
        echo "$IP_FORWARD_BEFORE" >/proc/sys/net/ipv4/ip_forward 2>/dev/null
        if [ -d "$WORK/crun/state" ]; then
                local c
                for c in "$WORK/crun/state"/*/; do
                        [ -d "$c" ] && crun --root "$WORK/crun/state" delete -f "$(basename "$c")" >/dev/null 2>&1
                done
        fi
        if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
                kill "$REG_PID"
                wait "$REG_PID" 2>/dev/null
        fi
        # Never delete through a mount.
        grep " $WORK" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l
        rm -rf "$WORK"
        exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the image: busybox-static, one layer ----------------------------------------------------------------------
# shellcheck source=scripts/lib/busybox.sh
. "$REPO/scripts/lib/busybox.sh"
build_image() {
        local layout=$WORK/layout bundle=$WORK/umoci-bundle r
        umoci init --layout "$layout"
        umoci new --image "$layout:start"
        umoci unpack --image "$layout:start" "$bundle" >/dev/null
        r=$bundle/rootfs
        busybox_rootfs "$r"
        mkdir -p "$r/www"
        printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/www:/bin/sh\n' >"$r/etc/passwd"
        printf 'root:x:0:\napp:x:1000:\n' >"$r/etc/group"
        echo '<h1>hello</h1>' >"$r/www/index.html"
        umoci repack --refresh-bundle --history.created_by "busybox-static" --image "$layout:start" "$bundle"
        umoci config --image "$layout:start" --config.env PATH=/bin --config.cmd /bin/sh
        skopeo copy --quiet --dest-tls-verify=false "oci:$layout:start" "docker://$REF"
        rm -rf "$bundle" "$layout"
}

# --- the crun floor's bundle: berth's own config.json, a plain directory rootfs --------------------------------
prepare_crun_bundle() {
        local b=$WORK/crun/bundle id
        mkdir -p "$b" "$WORK/crun/state"
        # A container berth creates (and keeps, no --rm) for this image and command: its bundle is the model.
        # --network none: a new network namespace with only loopback, as the floor has no network to set up
        # (and a bridge-attached container's namespace goes away with it).
        "$BERTH" --data-dir "$D" run --network none --name bench-model "$REF" /bin/true >/dev/null 2>&1 ||
                "$BERTH" --data-dir "$D" run --name bench-model "$REF" /bin/true
        id=$(readlink "$D/cell/names/bench-model")
        cp -p "$D/cell/containers/$id/config.json" "$D/cell/containers/$id/hosts" \
                "$D/cell/containers/$id/hostname" "$D/cell/containers/$id/resolv.conf" "$b/"
        "$BERTH" --data-dir "$D" rm bench-model >/dev/null
        "$BERTH" --data-dir "$D" image export "$REF" "$b/rootfs" >/dev/null
        # The rootfs as berth's store holds it (ids shifted into the containers' range), the config pointing
        # at it and at the bundle's copies of /etc/hosts, hostname, resolv.conf; the same cgroup parent.
        "$PY" - "$b" "$IDMAP_HOST_BASE" <<'EOF'
import json, os, sys
b, base = sys.argv[1], int(sys.argv[2])
for root, dirs, files in os.walk(os.path.join(b, "rootfs")):
    for n in [root] + [os.path.join(root, x) for x in dirs + files]:
        st = os.lstat(n)
        if st.st_uid < base:
            os.lchown(n, st.st_uid + base, st.st_gid + base)
p = os.path.join(b, "config.json")
c = json.load(open(p))
c["root"]["path"] = os.path.join(b, "rootfs")
c["process"]["args"] = ["/bin/true"]
for m in c["mounts"]:
    if m["type"] == "bind" and m["destination"] in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"):
        m["source"] = os.path.join(b, os.path.basename(m["destination"]))
c["linux"]["cgroupsPath"] = "/berth/bench-crun"
json.dump(c, open(p, "w"), indent=2)
EOF
}

# --- timing ----------------------------------------------------------------------------------------------------
declare -A NOTE
# time_loop FILE COUNT CMD...: run CMD COUNT times (stdin /dev/null, output to a log), appending the wall time
# of each run in microseconds to FILE. @N@ in CMD is replaced by the run number. Returns 1 at the first
# failure, with the error in $FAILED.
time_loop() {
        local file=$1 count=$2 i t0 t1
        shift 2
        local -a cmd
        for ((i = 1; i <= count; i++)); do
                cmd=("${@//@N@/$i}")
                t0=${EPOCHREALTIME/./}
                if ! "${cmd[@]}" </dev/null >"$WORK/cmd.log" 2>&1; then
                        FAILED="run $i: $(head -c 400 "$WORK/cmd.log" | tr '\n' ' ')"
                        return 1
                fi
                t1=${EPOCHREALTIME/./}
                [ -z "$file" ] || echo $((t1 - t0)) >>"$file"
        done
}

# run_tool NAME COUNT CMD...: COUNT timed runs appended to $WORK/NAME.us, after BENCH_WARMUP untimed ones the
# first time. A tool that failed once is not run again.
run_tool() {
        local name=$1 count=$2
        shift 2
        [ -z "${NOTE[$name]:-}" ] || return 0
        FAILED=""
        if [ -z "${WARMED[$name]:-}" ]; then
                log "$name: $WARMUP warm-up runs of: $*"
                WARMED[$name]=1
                time_loop "" "$WARMUP" "$@" || {
                        NOTE[$name]="failed at warm-up $FAILED"
                        log "$name: ${NOTE[$name]}"
                        return 0
                }
        fi
        if ! time_loop "$WORK/$name.us" "$count" "$@"; then
                NOTE[$name]="failed at $FAILED"
                log "$name: ${NOTE[$name]}"
                rm -f "$WORK/$name.us"
        fi
}

# --- profile: where berth run --rm spends its time -------------------------------------------------------------
profile_berth() {
        if ! command -v perf >/dev/null || [[ $(perf list 2>/dev/null) != *sched:sched_process_exec* ]]; then
                PROFILE_TEXT="(no profile: perf or its scheduler tracepoints are not available)"
                return
        fi
        local i events=sched:sched_process_exec,sched:sched_process_exit,sched:sched_process_fork
        events+=,syscalls:sys_enter_mkdir,syscalls:sys_enter_move_mount,syscalls:sys_enter_pivot_root
        events+=,syscalls:sys_enter_fsync,syscalls:sys_exit_fsync,syscalls:sys_enter_umount
        log "profile: $PROFILE_RUNS traced runs of berth run --rm ${PROFILE_NET[*]}"
        mkdir -p "$WORK/profile"
        for ((i = 1; i <= PROFILE_RUNS; i++)); do
                perf record -q -a -o "$WORK/profile/$i.data" -e "$events" -- \
                        "$BERTH" --data-dir "$D" run --rm "${PROFILE_NET[@]}" "$REF" /bin/true </dev/null >/dev/null 2>"$WORK/perf.log" ||
                        {
                                PROFILE_TEXT="(no profile: perf record failed: $(head -c 300 "$WORK/perf.log"))"
                                return
                        }
                perf script -i "$WORK/profile/$i.data" -F comm,pid,time,event,trace >"$WORK/profile/$i.txt" 2>/dev/null
        done
        PROFILE_TEXT=$("$PY" - "$WORK/profile" "$PROFILE_RUNS" <<'EOF'
import os, re, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
line_re = re.compile(r"^\s*(.*?)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$")
PHASES = [
    ("start", "mkdir", "berth process start (loader), store open, image lookup, cgroup check"),
    ("mkdir", "overlay", "container dir, rootfs record, upper/work dirs, overlay mount"),
    ("overlay", "fork_mon", "process spec, /etc files, config.json, container.json"),
    ("fork_mon", "crun_run", "fork + exec berth-monitor, monitor set-up, exec crun"),
    ("crun_run", "true", "crun run --detach until the container's exec (incl. crun's self re-exec)"),
    ("true", "crun_del", "/bin/true runs; crun run exits; the monitor reaps, writes state.json"),
    ("crun_del", "crun_del_exit", "crun delete -f (cgroups removed)"),
    ("crun_del_exit", "end", "removal (umount, rm -rf) and exit"),
]
runs, extras = [], []
for i in range(1, n + 1):
    ev = []
    for line in open(os.path.join(d, f"{i}.txt"), errors="replace"):
        m = line_re.match(line)
        if m:
            ev.append((float(m.group(3)) * 1000, int(m.group(2)), m.group(4), m.group(5)))
    ev.sort()
    top = next((pid for t, pid, e, a in ev if e == "sched:sched_process_exec" and a.startswith("filename=")
                and a.split()[0].endswith("/berth")), None)
    if top is None:
        continue
    mine, t = {top}, {}
    fs_open, fsync_ms, fsyncs, execs, crun_execs, berth_execs = {}, 0.0, 0, [], [], []
    for ts, pid, e, a in ev:
        if e == "sched:sched_process_fork":
            pp = int(re.search(r" pid=(\d+)", a).group(1))
            cp = int(re.search(r"child_pid=(\d+)", a).group(1))
            if pp in mine:
                mine.add(cp)
                t.setdefault(("fork", pp, cp), ts)
            continue
        if pid not in mine:
            continue
        if e == "sched:sched_process_exec":
            fn = a.split()[0][len("filename="):]
            execs.append(fn)
            if fn == "/bin/true":
                t.setdefault("true", ts)
            elif fn.endswith("/crun"):
                crun_execs.append((ts, pid))
            elif fn.endswith("/berth-monitor"):
                t.setdefault("mon_exec", ts)
                t["mon_pid"] = pid
            elif fn.endswith("/berth"):
                if pid == top and "start" not in t:
                    t["start"] = ts
                else:
                    berth_execs.append((ts, pid))
        elif e == "sched:sched_process_exit":
            t.setdefault(("exit", pid), ts)
        elif e == "syscalls:sys_enter_mkdir" and pid == top:
            t.setdefault("mkdir", ts)
        elif e == "syscalls:sys_enter_move_mount" and pid == top:
            t.setdefault("overlay", ts)
        elif e == "syscalls:sys_enter_fsync":
            fs_open[pid] = ts
        elif e == "syscalls:sys_exit_fsync" and pid in fs_open:
            fsync_ms += ts - fs_open.pop(pid)
            fsyncs += 1
    if "mon_pid" in t:
        t["fork_mon"] = next((v for k, v in t.items() if isinstance(k, tuple) and k[0] == "fork"
                              and k[2] == t["mon_pid"]), t.get("mon_exec"))
    if crun_execs:
        t["crun_run"] = crun_execs[0][0]
    dels = [(ts, p) for ts, p in crun_execs[1:] if ts > t.get("true", 1e18)]
    if dels:
        t["crun_del"] = dels[0][0]
        t["crun_del_exit"] = t.get(("exit", dels[0][1]))
    t["end"] = t.get(("exit", top))
    # --rm removal by a second berth process that the monitor executes (`berth rm`), if this berth does so.
    sub = None
    rm = [(ts, p) for ts, p in berth_execs if ts > (t.get("crun_del_exit") or 0)]
    if rm and t.get("end"):
        r0, rpid = rm[0]
        d2 = [(ts, p) for ts, p in crun_execs if ts > r0]
        r1 = d2[0][0] if d2 else None
        r2 = t.get(("exit", d2[0][1])) if d2 else None
        if r1 and r2:
            sub = (r0 - t["crun_del_exit"], r1 - r0, r2 - r1, t["end"] - r2)
    if all(t.get(k) is not None for k in ("start", "mkdir", "overlay", "fork_mon", "crun_run", "true",
                                          "crun_del", "crun_del_exit", "end")):
        runs.append([t[b] - t[a] for a, b, _ in PHASES] + [t["end"] - t["start"]])
        extras.append((fsyncs, fsync_ms, len(execs), len(crun_execs), len(berth_execs), sub))
if not runs:
    print("(no profile: the traced runs did not show the expected events)")
    sys.exit(0)
med = [statistics.median(r[k] for r in runs) for k in range(len(PHASES) + 1)]
print(f"Median of {len(runs)} traced runs (perf tracepoints, no ptrace; compare the total with the untraced p50 above):")
print()
print("| phase | ms |")
print("|---|---:|")
for (a, b, label), v in zip(PHASES, med):
    print(f"| {label} | {v:.1f} |")
subs = [e[5] for e in extras if e[5]]
if len(subs) * 2 > len(extras):
    labels = ["the monitor writes state.json, executes `berth rm` (--rm)",
              "`berth rm`: a second berth process start, store open, container lookup",
              "`berth rm`: a second crun delete -f (the container is already deleted)",
              "`berth rm`: umount, rm -rf; both berth processes exit"]
    for k, label in enumerate(labels):
        print(f"| &nbsp;&nbsp;of which: {label} | {statistics.median(x[k] for x in subs):.1f} |")
print(f"| **total** | **{med[-1]:.1f}** |")
fs = statistics.median(e[0] for e in extras)
fms = statistics.median(e[1] for e in extras)
ex = statistics.median(e[2] for e in extras)
cr = statistics.median(e[3] for e in extras)
be = statistics.median(e[4] for e in extras)
print()
print(f"Per run: {ex:g} program executions ({cr:g} of crun, each re-executing itself once more; "
      f"{be:g} more of berth), {fs:g} fsync calls taking {fms:.1f} ms in all.")
EOF
)
}

# --- density ---------------------------------------------------------------------------------------------------
meminfo() { # KEY... -> values in KiB
        local k
        for k in "$@"; do awk -v k="$k:" '$1 == k { print $2 }' /proc/meminfo; done
}
used_kib() { # MemTotal - MemFree - Buffers - Cached - SReclaimable, after dropping the page cache
        sync
        echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
        local v
        v=$(meminfo MemTotal MemFree Buffers Cached SReclaimable | tr '\n' ' ')
        # shellcheck disable=SC2086
        set -- $v
        echo $(($1 - $2 - $3 - $4 - $5))
}

density() {
        local n=$DENSITY i id t0 t1 out
        log "density: $n detached containers of $REF running sleep 100000"
        berth_rm_all
        # Detached mode may not exist yet in this berth: skip with its own words. The default network when
        # berth has one, else none.
        DENSITY_NET=()
        if ! out=$("$BERTH" --data-dir "$D" run -d "$REF" /bin/true 2>&1) && grep -qi network <<<"$out" &&
                "$BERTH" --data-dir "$D" run -d --network none "$REF" /bin/true >/dev/null 2>&1; then
                DENSITY_NET=(--network none)
                log "density: the default network failed (${out:0:200}); using --network none"
        fi
        if ! out=$("$BERTH" --data-dir "$D" run -d "${DENSITY_NET[@]}" "$REF" /bin/true 2>&1); then
                if grep -qiE 'detach|-d' <<<"$out" && grep -qiE 'unsupported|not supported|not implemented|unknown|unrecognized|invalid option' <<<"$out"; then
                        DENSITY_TEXT="(skipped: \`berth run -d\` is not supported by this berth: $(head -c 300 <<<"$out"))"
                        log "density: ${DENSITY_TEXT}"
                        return
                fi
                DENSITY_TEXT="(failed: \`berth run -d\`: $(head -c 300 <<<"$out"))"
                return
        fi
        berth_rm_all
        local before_used before_slab before_stack before_pt
        before_used=$(used_kib)
        read -r before_slab before_stack before_pt <<<"$(meminfo SUnreclaim KernelStack PageTables | tr '\n' ' ')"
        t0=${EPOCHREALTIME/./}
        for ((i = 1; i <= n; i++)); do
                if ! id=$("$BERTH" --data-dir "$D" run -d "${DENSITY_NET[@]}" "$REF" sleep 100000 2>"$WORK/cmd.log"); then
                        DENSITY_TEXT="(failed at container $i: $(head -c 300 "$WORK/cmd.log" | tr '\n' ' '))"
                        return
                fi
                echo "$id" >>"$WORK/density.ids"
        done
        t1=${EPOCHREALTIME/./}
        local start_us=$((t1 - t0))
        sleep 2 # let the last ones settle (the monitors' first log writes, crun's exits)
        local after_used after_slab after_stack after_pt
        after_used=$(used_kib)
        read -r after_slab after_stack after_pt <<<"$(meminfo SUnreclaim KernelStack PageTables | tr '\n' ' ')"
        # The monitors of this data dir: PSS and RSS (smaps_rollup), and the containers' cgroup charges.
        local mon=$WORK/density.monitors
        : >"$mon"
        local p
        for p in $(pgrep -x berth-monitor); do
                tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "--root $D/cell/runtime" || continue
                awk '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 } END { print r, p }' "/proc/$p/smaps_rollup" >>"$mon"
        done
        local cg=$WORK/density.cgroups
        : >"$cg"
        while read -r id; do
                local m=/sys/fs/cgroup/memory/berth/$id
                [ -r "$m/memory.usage_in_bytes" ] || m=/sys/fs/cgroup/berth/$id
                local usage kmem cache
                usage=$(cat "$m/memory.usage_in_bytes" 2>/dev/null || cat "$m/memory.current" 2>/dev/null || echo 0)
                kmem=$(cat "$m/memory.kmem.usage_in_bytes" 2>/dev/null || awk '$1 == "kernel" { print $2 }' "$m/memory.stat" 2>/dev/null || echo 0)
                cache=$(awk '$1 == "total_cache" || $1 == "file" { print $2; exit }' "$m/memory.stat" 2>/dev/null || echo 0)
                echo "$usage ${kmem:-0} ${cache:-0}" >>"$cg"
        done <"$WORK/density.ids"
        log "density: removing them (berth rm -f)"
        t0=${EPOCHREALTIME/./}
        # shellcheck disable=SC2046
        "$BERTH" --data-dir "$D" rm -f $(cat "$WORK/density.ids") >"$WORK/cmd.log" 2>&1 || true
        t1=${EPOCHREALTIME/./}
        local rm_us=$((t1 - t0))
        local left
        left=$(pgrep -x berth-monitor | while read -r p; do tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null; echo; done | grep -cF -- "--root $D/cell/runtime" || true)
        DENSITY_TEXT=$("$PY" - "$n" "$start_us" "$rm_us" "$mon" "$cg" "$before_used" "$after_used" \
                "$((after_slab - before_slab))" "$((after_stack - before_stack))" "$((after_pt - before_pt))" "$left" \
                "${DENSITY_NET[*]:+${DENSITY_NET[*]} }" <<'EOF'
import statistics, sys
n, start_us, rm_us = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
mon = [tuple(map(int, l.split())) for l in open(sys.argv[4]) if l.strip()]
cg = [tuple(map(int, l.split())) for l in open(sys.argv[5]) if l.strip()]
before, after = int(sys.argv[6]), int(sys.argv[7])
d_slab, d_stack, d_pt, left = (int(x) for x in sys.argv[8:12])
mib = lambda kib: kib / 1024
pss = statistics.mean(p for r, p in mon) if mon else 0
rss = statistics.mean(r for r, p in mon) if mon else 0
grow = (after - before) / n  # KiB per container, whole machine
app = statistics.mean((u - c) / 1024 for u, k, c in cg) if cg else 0  # KiB charged to the container, no page cache
kmem = statistics.mean(k / 1024 for u, k, c in cg) if cg else 0
kern = (d_slab + d_stack + d_pt) / n  # machine-wide, per container
# Outside the app: the monitor's pages, plus the kernel memory that grew with the containers minus the part
# charged to the containers' own cgroups (their processes' page tables, stacks, and the objects created in
# them). Slab, stacks and page tables move far less with other work on the machine than "used" does.
outside = pss + kern - kmem
print(f"| containers started (`berth run -d {sys.argv[12]}IMAGE sleep 100000`, one after another) | {n} |")
print(f"| time to start all | {start_us / 1e6:.1f} s ({start_us / n / 1000:.0f} ms each) |")
print(f"| berth-monitor per container: PSS (RSS) | {mib(pss):.2f} MiB ({mib(rss):.2f} MiB), {len(mon)} monitors |")
print(f"| kernel growth per container: unreclaimable slab + kernel stacks + page tables | {mib(kern):.2f} MiB ({mib(d_slab / n):.2f} + {mib(d_stack / n):.2f} + {mib(d_pt / n):.2f}) |")
print(f"| charged to the container's own memory cgroup, without page cache (of which kernel) | {mib(app):.2f} MiB ({mib(kmem):.2f} MiB) |")
print(f"| **host memory per container outside the app**: monitor PSS + kernel growth − the container's kernel charge | **{mib(outside):.2f} MiB** |")
print(f"| for reference: the machine's used memory growth per container (MemTotal − MemFree − Buffers − Cached − SReclaimable; moves with any other work) | {mib(grow):.2f} MiB |")
print(f"| `berth rm -f` of all | {rm_us / 1e6:.1f} s ({rm_us / n / 1000:.0f} ms each); monitors left: {left} |")
EOF
)
}

# --- run -------------------------------------------------------------------------------------------------------
# shellcheck source=scripts/lib/registry.sh
. "$REPO/scripts/lib/registry.sh"
registry_start "$WORK/registry" || die "docker-registry did not start"
PORT=$REG_PORT
REF=127.0.0.1:$PORT/bench/start:1
log "building and pushing $REF"
build_image >/dev/null
log "pulling $REF into berth ($D)"
"$BERTH" --data-dir "$D" image pull --quiet "$REF" >/dev/null
# The first container also moves controllers off cgroup2 on hybrid hosts (crun refuses them otherwise).
prepare_crun_bundle
if has_tool podman || has_tool podman-nonet; then
        log "pulling $REF into podman ($PODMAN_DIR)"
        podman_ pull --quiet --tls-verify=false "$REF" >/dev/null
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.5 else 1)" "${LOAD_START%% *}"; then
        log "warning: load average is $LOAD_START; results will be noisy"
fi
# BENCH_ROUNDS rounds, each tool's share of its BENCH_STARTS runs in sequence per round: other work on the
# machine then weighs on every tool alike.
declare -A WARMED
done_runs=0
for ((round = 1; round <= ROUNDS; round++)); do
        k=$(((STARTS - done_runs) / (ROUNDS - round + 1)))
        done_runs=$((done_runs + k))
        log "round $round of $ROUNDS: $k runs per tool"
        has_tool crun && run_tool crun "$k" crun --root "$WORK/crun/state" run --bundle "$WORK/crun/bundle" bench-@N@
        has_tool berth-nonet && run_tool berth-nonet "$k" "$BERTH" --data-dir "$D" run --rm --network none "$REF" /bin/true
        has_tool berth && run_tool berth "$k" "$BERTH" --data-dir "$D" run --rm "$REF" /bin/true
        has_tool podman && run_tool podman "$k" podman_ run --rm "${PODMAN_ULIMITS[@]}" "$REF" /bin/true
        has_tool podman-nonet && run_tool podman-nonet "$k" podman_ run --rm --network none "${PODMAN_ULIMITS[@]}" "$REF" /bin/true
        run_tool berth-version "$k" "$BERTH" --version
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
LEFT=$("$BERTH" --data-dir "$D" ps -a -q | wc -l)

PROFILE_TEXT="(profile not run: BENCH_PROFILE=0)"
# The profile follows the container the floor runs (--network none) when berth ran it.
PROFILE_NET=()
[ -s "$WORK/berth-nonet.us" ] && PROFILE_NET=(--network none)
if [ "$PROFILE" != 0 ] && { [ -s "$WORK/berth-nonet.us" ] || [ -s "$WORK/berth.us" ]; }; then
        profile_berth
fi
DENSITY_TEXT="(density not run: BENCH_DENSITY=0)"
[ "$DENSITY" = 0 ] || density

# --- report ----------------------------------------------------------------------------------------------------
stats() { # NAME -> "mean p50 p95 min max total_s" in ms, or nothing
        [ -s "$WORK/$1.us" ] || return 0
        "$PY" - "$WORK/$1.us" <<'EOF'
import math, statistics, sys
v = sorted(int(l) / 1000 for l in open(sys.argv[1]) if l.strip())
p = lambda q: v[max(0, math.ceil(q * len(v)) - 1)]
print(f"{statistics.mean(v):.1f} {statistics.median(v):.1f} {p(0.95):.1f} {v[0]:.1f} {v[-1]:.1f} {sum(v) / 1000:.2f} {len(v)}")
EOF
}
declare -A ST
for t in crun berth-nonet berth podman podman-nonet berth-version; do ST[$t]=$(stats "$t"); done
row() { # label tool
        local s=${ST[$2]:-}
        if [ -n "$s" ]; then
                # shellcheck disable=SC2086
                set -- "$1" $s
                printf '| %-44s | %7s | %7s | %7s | %7s | %7s | %6s s (%s) |\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8"
        else
                printf '| %-44s | %7s | %7s | %7s | %7s | %7s | %s |\n' "$1" - - - - - "${NOTE[$2]:-not run}"
        fi
}
field() { # tool index(1=mean, 2=p50, 3=p95)
        local s=${ST[$1]:-}
        [ -n "$s" ] && echo "$s" | cut -d' ' -f"$2"
}
ratio() { # a b -> a/b with 2 decimals, or n/a
        if [ -n "$1" ] && [ -n "$2" ]; then
                "$PY" -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}x' if b > 0 else 'n/a')" "$1" "$2"
        else
                echo n/a
        fi
}
ratios() { # label a b
        printf '    %-40s mean %6s   p50 %6s   p95 %6s\n' "$1" "$(ratio "$(field "$2" 1)" "$(field "$3" 1)")" \
                "$(ratio "$(field "$2" 2)" "$(field "$3" 2)")" "$(ratio "$(field "$2" 3)" "$(field "$3" 3)")"
}

REPORT=$OUT/start-results.md
{
        echo "## Start benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
        echo
        echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') (family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), model $(grep -m1 '^model\s' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')), $(nproc) cores, kernel $(uname -r)."
        echo "crun $(crun --version | sed -n 's/^crun version //p'), podman $(podman --version 2>/dev/null | sed 's/^podman version //'), berth $BERTH (commit $COMMIT)."
        echo "Image: busybox-static $(/bin/busybox | head -1 | cut -d' ' -f2), one gzip layer, from 127.0.0.1. Load average at start: $LOAD_START; at end: $LOAD_END."
        echo
        echo "Each: \`IMAGE /bin/true\` started and gone, $STARTS times in sequence per tool (in $ROUNDS rounds, the tools taking turns) after $WARMUP warm-up runs; milliseconds per container."
        echo
        echo "| what                                         |    mean |     p50 |     p95 |     min |     max | total (runs) |"
        echo "|----------------------------------------------|---------|---------|---------|---------|---------|--------------|"
        row "crun run, prepared bundle (floor)" crun
        row "berth run --rm --network none" berth-nonet
        row "berth run --rm" berth
        row "podman run --rm" podman
        row "podman run --rm --network none" podman-nonet
        row "berth --version (process start)" berth-version
        echo
        echo "Ratios (goal: berth/crun <= 1.5, podman/berth >= 5):"
        ratios "berth --network none / crun:" berth-nonet crun
        ratios "berth / crun:" berth crun
        ratios "podman / berth:" podman berth
        ratios "podman / berth, both --network none:" podman-nonet berth-nonet
        echo
        [ "$LEFT" = 0 ] || echo "Warning: $LEFT berth containers were left after the --rm runs."
        echo "### Where berth run --rm ${PROFILE_NET[*]} spends its time"
        echo
        echo "$PROFILE_TEXT"
        echo
        echo "### Density"
        echo
        if [[ $DENSITY_TEXT == \|* ]]; then
                echo "| what | value |"
                echo "|---|---|"
        fi
        echo "$DENSITY_TEXT"
} | tee "$REPORT"
log "report written to $REPORT"
