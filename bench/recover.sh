#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Recovery benchmark (issue 5: "a crashed instance is routable again within 100 ms plus its own start
# time"). A single-node `berth up` runs one app (1 instance) whose busybox httpd serves the instance's own
# CF_INSTANCE_GUID. BENCH_RUNS times (default 10) the script SIGKILLs every process of the instance's
# container from the host (the pids in its cgroup, as tests/e2e/test_platform_health.py does) and a client
# loop through the router (Host: APP.apps.localhost, a fresh connection per request, 1 ms apart) measures
# the time from the kill to the first 200 that names ANOTHER instance guid. Each recovery is then taken
# apart with the platform's own timestamps (one host clock, CLOCK_REALTIME everywhere):
#
#   exit detected        the cell's CELL line "Exit status 137 (...)" of the old instance (ns)
#   crash reported       the controller's request log line of the cell's POST .../events (written when the
#                        handler returns; ms)
#   restart decided      the controller's "restarting crashed instance OLD" (the scheduler's sweep; ms)
#   creation begins      the cell's "Creating container" of the new instance (the PUT arrived; ns)
#   created and started  "Successfully created container" (crun create + start, network; ns)
#   healthy              "Container became healthy" (the startup port check passed; ns)
#   RUNNING reported     the controller's first POST .../events line after "healthy" (ms)
#   table installed      the router's "route table N: ... endpoints" with the new endpoint (ms)
#   routable             the client's first 200 from the new instance
#
# The instance's own start time is "Creating container" -> "Container became healthy" (what the cell does
# to start it, including its health-check polling); the platform's overhead is the total minus that (goal:
# under 100 ms). For reference the same image is also started with crun directly from berth's own
# config.json (no network; as bench/start.sh's floor) until its port listens, once per run, interleaved.
#
# Crashes 1 and 2 of an instance index restart at once, the third after 30 s (Diego's restart calculator),
# so the app is restarted (untimed; a new process version, crash count 0) before every odd run after the
# first. Prints every run and the medians and writes bench/out/recover-results.md.
#
# Environment: BERTH (default build/berth), BENCH_OUT (default bench/out), BENCH_RUNS (default 10),
# BENCH_COMMIT (the commit to report; default HEAD), BENCH_LOG (a file to copy berth up's log to),
# BENCH_LOG_LEVEL (the platform's, default info). Needs root.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
BERTH=${BERTH:-$REPO/build/berth}
OUT=${BENCH_OUT:-$REPO/bench/out}
RUNS=${BENCH_RUNS:-10}
PY=/usr/bin/python3
IDMAP_HOST_BASE=1000000000 # src/image/idmap.h: container id N is host id IDMAP_HOST_BASE + N
DOMAIN=apps.localhost
APP=benchrecover

BENCH_NAME=recover
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
bench_init "containers, berth's store"

"$REPO/scripts/install-deps.sh" docker-registry skopeo umoci crun busybox-static python3 curl nftables iproute2

# --- scratch space and cleanup ---------------------------------------------------------------------------------
WORK=$(mktemp -d "$OUT/recover.XXXXXX")
chmod 0711 "$WORK" # containers' root (a shifted uid) must traverse to their rootfs
D=$WORK/berth
export BERTH_HOME=$WORK/home
mkdir -p "$D" "$BERTH_HOME"
chmod 0711 "$D"
NET_BRIDGE=btrec$$
NET_TABLE=berth_recover_$$
CFG=$WORK/config.yaml
printf 'cell:\n  network:\n    bridge: %s\n    subnet: 10.218.0.0/16\n    nft_table: %s\n' "$NET_BRIDGE" "$NET_TABLE" >"$CFG"
CRUN_STATE=$WORK/crun/state
REG_PID=""
UP_PID=""

cleanup() {
        local rc=$?
        set +e
        trap - INT TERM
        if [ -d "$CRUN_STATE" ]; then
                local c
                for c in "$CRUN_STATE"/*/; do
                        [ -d "$c" ] && crun --root "$CRUN_STATE" delete -f "$(basename "$c")" >/dev/null 2>&1
                done
        fi
        berth_up_stop
        [ -z "${BENCH_LOG:-}" ] || cp "$WORK/up.log" "$BENCH_LOG"
        if [ $rc -ne 0 ] && [ -s "$WORK/up.log" ]; then
                log "berth up's log ends with:"
                tail -n 30 "$WORK/up.log" >&2
        fi
        if [ -d "$D/cell" ]; then
                "$BERTH" --data-dir "$D" --config "$CFG" ps -aq 2>/dev/null |
                        xargs -r "$BERTH" --data-dir "$D" --config "$CFG" rm -f >/dev/null 2>&1
        fi
        ip link del "$NET_BRIDGE" >/dev/null 2>&1
        nft delete table inet "$NET_TABLE" >/dev/null 2>&1
        if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
                kill "$REG_PID"
                wait "$REG_PID" 2>/dev/null
        fi
        grep " $WORK" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l
        rmdir /sys/fs/cgroup/berth/recover-crun /sys/fs/cgroup/*/berth/recover-crun 2>/dev/null
        rm -rf "$WORK"
        exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the image: busybox httpd on 8080 serving the instance's guid ----------------------------------------------
# The guid goes to a page under /tmp; then httpd replaces the shell, so it is the container's only process.
# shellcheck disable=SC2016 # expanded by the container's shell
APP_CMD='mkdir -p /tmp/www && echo "${CF_INSTANCE_GUID:-none}" >/tmp/www/index.html && exec httpd -f -p "${PORT:-8080}" -h /tmp/www'
# shellcheck source=scripts/lib/busybox.sh
. "$REPO/scripts/lib/busybox.sh"
build_image() {
        local layout=$WORK/layout bundle=$WORK/umoci-bundle r
        umoci init --layout "$layout"
        umoci new --image "$layout:recover"
        umoci unpack --image "$layout:recover" "$bundle" >/dev/null
        r=$bundle/rootfs
        busybox_rootfs "$r"
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
        printf 'root:x:0:\n' >"$r/etc/group"
        umoci repack --refresh-bundle --history.created_by "busybox-static" --image "$layout:recover" "$bundle"
        umoci config --image "$layout:recover" --config.env PATH=/bin --config.exposedports 8080/tcp \
                --config.entrypoint /bin/sh --config.cmd -c --config.cmd "$APP_CMD"
        skopeo copy --quiet --dest-tls-verify=false "oci:$layout:recover" "docker://$REF"
        rm -rf "$bundle" "$layout"
}

# wait_200 URL HOST TIMEOUT_S: poll with curl until it answers 200; 1 on timeout.
wait_200() {
        local deadline=$((${EPOCHREALTIME/./} + $3 * 1000000)) code
        while [ "${EPOCHREALTIME/./}" -lt "$deadline" ]; do
                code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -H "Host: $2" "$1" 2>/dev/null || true)
                [ "$code" = 200 ] && return 0
                sleep 0.02
        done
        return 1
}


# The app's instances as "GUID STATE" lines (from `berth app --json`).
instances() {
        "$BERTH" app "$APP" --json 2>/dev/null |
                "$PY" -c 'import json, sys; [print(i["guid"], i["state"]) for i in json.load(sys.stdin)["instances"]]'
}

# wait_steady TIMEOUT_S: until the app has exactly one instance, RUNNING, and the router serves its guid;
# prints the guid.
wait_steady() {
        local deadline=$((SECONDS + $1)) lines body
        while [ $SECONDS -lt $deadline ]; do
                lines=$(instances || true)
                if [ "$(wc -l <<<"$lines")" = 1 ] && [[ $lines == *" RUNNING" ]]; then
                        body=$(curl -s --max-time 1 -H "Host: $APP.$DOMAIN" "$ROUTER" 2>/dev/null || true)
                        if [ "$body" = "${lines%% *}" ]; then
                                echo "$body"
                                return 0
                        fi
                fi
                sleep 0.05
        done
        return 1
}

# "ID MONITOR_PID CGROUP_DIR PIDS" of an instance's container: its id, its berth-monitor's pid, the directory
# of the cgroups of berth's containers (pids controller on cgroup v1) and the host pids of its processes (its
# cgroup's, comma-separated).
container_pids() {
        local id mon f pids
        read -r id mon < <("$BERTH" --data-dir "$D" --config "$CFG" ps -a --json |
                "$PY" -c 'import json, sys
for c in json.load(sys.stdin):
    if c.get("Name", "").lstrip("/") == "i-" + sys.argv[1]:
        print(c["Id"], c["State"].get("MonitorPid", 0))' "$1") || return 1
        for f in "/sys/fs/cgroup/pids/berth/$id/cgroup.procs" "/sys/fs/cgroup/berth/$id/cgroup.procs"; do
                # (cgroup files have no size: read them to see if they are empty)
                pids=$(paste -sd, "$f" 2>/dev/null) || continue
                if [ -n "$pids" ]; then
                        echo "$id $mon $(dirname "$(dirname "$f")") $pids"
                        return 0
                fi
        done
        return 1
}

# --- the crun floor's bundle: berth's own config.json for this image, a plain directory rootfs -----------------
prepare_crun_bundle() {
        local b=$WORK/crun/bundle id
        mkdir -p "$b" "$CRUN_STATE"
        "$BERTH" --data-dir "$D" --config "$CFG" run --network none --name recover-model --entrypoint /bin/true "$REF" \
                >/dev/null
        id=$(readlink "$D/cell/names/recover-model")
        cp -p "$D/cell/containers/$id/config.json" "$D/cell/containers/$id/hosts" \
                "$D/cell/containers/$id/hostname" "$D/cell/containers/$id/resolv.conf" "$b/"
        "$BERTH" --data-dir "$D" --config "$CFG" rm recover-model >/dev/null
        "$BERTH" --data-dir "$D" --config "$CFG" image export "$REF" "$b/rootfs" >/dev/null
        "$PY" - "$b" "$IDMAP_HOST_BASE" "$APP_CMD" <<'EOF'
import json, os, sys
b, base, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for root, dirs, files in os.walk(os.path.join(b, "rootfs")):
    for n in [root] + [os.path.join(root, x) for x in dirs + files]:
        st = os.lstat(n)
        if st.st_uid < base:
            os.lchown(n, st.st_uid + base, st.st_gid + base)
p = os.path.join(b, "config.json")
c = json.load(open(p))
c["root"]["path"] = os.path.join(b, "rootfs")
c["process"]["args"] = ["/bin/sh", "-c", cmd]
c["process"]["env"] = [e for e in c["process"].get("env", []) if not e.startswith("PORT=")] + [
    "PORT=8080", "CF_INSTANCE_GUID=crun-floor"]
for m in c["mounts"]:
    if m["type"] == "bind" and m["destination"] in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"):
        m["source"] = os.path.join(b, os.path.basename(m["destination"]))
c["linux"]["cgroupsPath"] = "/berth/recover-crun"
json.dump(c, open(p, "w"), indent=2)
EOF
}

# crun_floor: one `crun run --detach` of the bundle until its port 8080 listens (its network namespace's
# /proc/PID/net/tcp{,6}), then `crun delete -f`; prints the milliseconds.
crun_floor() {
        "$PY" - "$CRUN_STATE" "$WORK/crun/bundle" "$WORK/crun/pid" <<'EOF'
import os, subprocess, sys, time
state, bundle, pidfile = sys.argv[1:4]
try:
    os.unlink(pidfile)
except FileNotFoundError:
    pass
t0 = time.time()
subprocess.run(["crun", "--root", state, "run", "--detach", "--pid-file", pidfile, "--bundle", bundle,
                "recover-floor"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
pid = open(pidfile).read().strip()
listening, deadline = False, t0 + 10
while not listening and time.time() < deadline:
    for f in ("tcp", "tcp6"):
        try:
            for line in open(f"/proc/{pid}/net/{f}").readlines()[1:]:
                p = line.split()
                if p[1].endswith(":1F90") and p[3] == "0A":
                    listening = True
        except OSError:
            pass
    if not listening:
        time.sleep(0.0005)
t1 = time.time()
subprocess.run(["crun", "--root", state, "delete", "-f", "recover-floor"], check=True)
if not listening:
    sys.exit("the crun floor's httpd never listened")
print(f"{(t1 - t0) * 1000:.1f}")
EOF
}

# --- the client: kill, then poll through the router until another instance answers ------------------------------
# probe ROUTER_PORT HOST OLD_GUID OLD_ID MONITOR_PID CGROUP_DIR PIDS: prints one JSON object (times are seconds
# since the epoch). One thread notes when the old container's berth-monitor exits (its pidfd), another looks for the new container (a new directory in berth's containers/) and notes
# when its app listens on 8080 (its network namespace's /proc/PID/net/tcp{,6}), every 0.5 ms.
probe() {
        "$PY" - "$D/cell/containers" "$@" <<'EOF'
import json, os, select, signal, socket, sys, threading, time
ctrs, port, host, old, old_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
mon, cgdir, pids = int(sys.argv[6]), sys.argv[7], [int(p) for p in sys.argv[8].split(",")]
req = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()

def get():
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return -1, ""
    try:
        s.sendall(req)
        buf = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
    except OSError:
        return -2, ""
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if head.startswith(b"HTTP/") and len(parts) > 1 else 0
    return status, body.decode(errors="replace").strip()

def new_listening():
    for cid in os.listdir(ctrs):
        if cid == old_id:
            continue
        try:
            procs = open(f"{cgdir}/{cid}/cgroup.procs").read().split()
        except OSError:
            continue
        for pid in procs:
            for f in ("tcp", "tcp6"):
                try:
                    for line in open(f"/proc/{pid}/net/{f}").readlines()[1:]:
                        p = line.split()
                        if p[1].endswith(":1F90") and p[3] == "0A":
                            return True
                except OSError:
                    pass
    return False

t_listen, t_mon, stop = [None], [None], threading.Event()


def watch_listen():  # a thread of its own, so that its resolution does not depend on the requests' time
    while not stop.is_set() and t_listen[0] is None:
        if new_listening():
            t_listen[0] = time.time()
        time.sleep(0.0005)


mon_fd = os.pidfd_open(mon) if mon > 0 else -1


def watch_monitor():
    if mon_fd >= 0 and select.select([mon_fd], [], [], 60)[0]:
        t_mon[0] = time.time()


st, body = get()
if st != 200 or body != old:
    sys.exit(f"before the kill the router answered {st} {body!r}, not 200 {old}")
threads = [threading.Thread(target=watch_monitor, daemon=True), threading.Thread(target=watch_listen)]
threads[0].start()
t_kill = time.time()
for p in pids:
    os.kill(p, signal.SIGKILL)
threads[1].start()
t_down, codes, n = None, {}, 0
deadline = t_kill + 60
while True:
    st, body = get()
    t = time.time()
    n += 1
    key = str(st) if st != 200 else ("200-old" if body == old else "200-new")
    codes[key] = codes.get(key, 0) + 1
    if t_down is None and key != "200-old":
        t_down = t
    if key == "200-new":
        break
    if t > deadline:
        stop.set()
        sys.exit(f"no 200 from a new instance within 60 s ({codes})")
    time.sleep(0.001)
stop.set()
threads[1].join()
threads[0].join(1)
print(json.dumps({"t_kill": t_kill, "t_down": t_down, "t_listen": t_listen[0], "t_mon": t_mon[0], "t_200": t,
                  "new": body, "requests": n, "codes": codes}))
EOF
}

# --- set-up ----------------------------------------------------------------------------------------------------
# shellcheck source=scripts/lib/registry.sh
. "$REPO/scripts/lib/registry.sh"
registry_start "$WORK/registry" || die "docker-registry did not start"
REF=127.0.0.1:$REG_PORT/bench/recover:1
log "building and pushing $REF"
build_image >/dev/null

# Each line of its log has a millisecond timestamp; BENCH_LOG_LEVEL=debug adds the cell's steps.
berth_up "${BENCH_LOG_LEVEL:-info}"
log "pushing $APP (1 instance; the cell pulls the image)"
"$BERTH" push "$APP" --docker-image "$REF" >"$WORK/push.log" 2>&1 || {
        cat "$WORK/push.log" >&2
        die "berth push failed"
}
wait_200 "$ROUTER" "$APP.$DOMAIN" 60 || die "the app never answered 200 through the router"
log "preparing the crun floor's bundle"
prepare_crun_bundle
crun_floor >/dev/null || die "the crun floor failed" # warm-up

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$WORK/runs.jsonl"
: >"$WORK/floor.ms"
for ((i = 1; i <= RUNS; i++)); do
        if [ "$i" -gt 1 ] && [ $((i % 2)) = 1 ]; then
                # Crash 3 of an index would wait 30 s: a restart starts a new version with crash count 0.
                "$BERTH" restart "$APP" >/dev/null 2>&1 || die "run $i: berth restart failed"
        fi
        old=$(wait_steady 60) || die "run $i: the app is not steady (one RUNNING instance, routed)"
        read -r old_id mon cgdir pids < <(container_pids "$old") ||
                die "run $i: no processes found for instance $old"
        res=$(probe "$ROUTER_PORT" "$APP.$DOMAIN" "$old" "$old_id" "$mon" "$cgdir" "$pids") ||
                die "run $i: the probe failed"
        new=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["new"])' "$res")
        # The old instance's lines are read from the new one's log once the old one is deleted (the cell
        # keeps a deleted instance's lines for the next instance of its index).
        for _ in $(seq 200); do
                [ "$(instances | wc -l)" = 1 ] && break
                sleep 0.05
        done
        token=$(cat "$D/internal-token")
        curl -fsS --max-time 5 -H "Authorization: Bearer $token" \
                "http://127.0.0.1:$CELL_PORT/v1/lrps/$new/logs?tail=200" >"$WORK/cell.ndjson" ||
                die "run $i: reading the cell's log of $new failed"
        "$PY" - "$res" "$old" "$new" "$WORK/cell.ndjson" "$WORK/up.log" >>"$WORK/runs.jsonl" <<'EOF'
import datetime, json, re, sys
res, old, new, cellf, upf = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

def ts(s):  # RFC 3339 UTC with up to 9 decimals -> epoch seconds
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", s)
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return base.timestamp() + (float("0." + m.group(2)) if m.group(2) else 0.0)

r = dict(res, old=old)
cell = [json.loads(line) for line in open(cellf) if line.strip()]
for key, text in (("t_exit", "Exit status"), ("t_create", "Creating container"),
                  ("t_created", "Successfully created container"), ("t_healthy", "Container became healthy")):
    hits = [ts(x["time"]) for x in cell if x["source"].startswith("CELL/") and x["text"].startswith(text)]
    r[key] = hits[-1] if hits else None
# berth up's log: "<component> | <time> <level> <message>"
up = []
for line in open(upf, errors="replace"):
    m = re.match(r"^(\w+)\s*\| (\S+Z) (\w+)\s+(.*)$", line)
    if m:
        up.append((m.group(1), ts(m.group(2)), m.group(4)))

def first(after, comp, pred):
    for c, t, msg in up:
        if c == comp and after is not None and t >= after and pred(msg):
            return t
    return None

ev = lambda m: re.match(r"POST /internal/v1/cells/[^/ ]+/events ", m) is not None
# The log has millisecond stamps: compare against the cell's times truncated to the millisecond.
ms = lambda t: None if t is None else int(t * 1000) / 1000
r["t_crash_rep"] = first(ms(r["t_exit"]), "controller", ev)
r["t_decide"] = first(ms(r["t_exit"]), "controller", lambda m: m.startswith("restarting crashed instance " + old))
r["t_run_rep"] = first(ms(r["t_healthy"]), "controller", ev)
r["t_table"] = first(ms(r["t_healthy"]), "router",
                     lambda m: re.match(r"route table \d+: \d+ routes, [1-9]\d* endpoints", m) is not None)
print(json.dumps(r))
EOF
        floor=$(crun_floor) || die "run $i: the crun floor failed"
        echo "$floor" >>"$WORK/floor.ms"
        "$PY" - "$(tail -n 1 "$WORK/runs.jsonl")" "$i" "$floor" <<'EOF' >&2
import json, sys
r, i, floor = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
ms = lambda a, b: "?" if r.get(a) is None or r.get(b) is None else f"{(r[b] - r[a]) * 1000:.0f}"  # noqa: E731
print(f"[recover] run {i}: kill -> 200 from the new instance {ms('t_kill', 't_200')} ms; own start "
      f"{ms('t_create', 't_healthy')} ms (crun floor {float(floor):.0f} ms); exit seen {ms('t_kill', 't_exit')}, "
      f"restart decided {ms('t_exit', 't_decide')}, creation begins {ms('t_decide', 't_create')}, "
      f"listening -> healthy {ms('t_listen', 't_healthy')}, "
      f"RUNNING -> table {ms('t_healthy', 't_table')}, table -> 200 {ms('t_table', 't_200')} ms")
EOF
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ----------------------------------------------------------------------------------------------------
REPORT=$OUT/recover-results.md
"$PY" - "$WORK/runs.jsonl" "$WORK/floor.ms" "$(date -u +%Y-%m-%dT%H:%MZ)" "$COMMIT" "$(nproc)" "$REF" \
        "$LOAD_START" "$LOAD_END" <<'EOF' | tee "$REPORT"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
floor = [float(l) for l in open(sys.argv[2]) if l.strip()]
date, commit, ncpu, ref, load0, load1 = sys.argv[3:9]

def d(r, a, b):
    return None if r.get(a) is None or r.get(b) is None else (r[b] - r[a]) * 1000

def row(name, vals, bold=False):
    v = [x for x in vals if x is not None]
    if not v:
        return f"| {name} | - | - | {' '.join('?' for _ in vals)} |"
    med = f"{statistics.median(v):.0f}"
    if bold:
        med, name = f"**{med}**", f"**{name}**"
    return (f"| {name} | {med} | {min(v):.0f} / {max(v):.0f} | "
            + " ".join("?" if x is None else f"{x:.0f}" for x in vals) + " |")

phases = [
    ("kill → exit detected by the cell (`Exit status 137`)", "t_kill", "t_exit"),
    ("&nbsp;&nbsp;of which kill → the old berth-monitor exited (reaped, cgroups removed, state written)",
     "t_kill", "t_mon"),
    ("→ crash reported (controller handled the cell's event)", "t_exit", "t_crash_rep"),
    ("→ restart decided (scheduler sweep)", "t_crash_rep", "t_decide"),
    ("→ creation begins on the cell (PUT received, `Creating container`)", "t_decide", "t_create"),
    ("→ container created and started (`Successfully created container`)", "t_create", "t_created"),
    ("→ healthy (port check passed, `Container became healthy`)", "t_created", "t_healthy"),
    ("&nbsp;&nbsp;of which the app listening → healthy (the startup check's polling)", "t_listen", "t_healthy"),
    ("→ RUNNING reported (controller handled the cell's event)", "t_healthy", "t_run_rep"),
    ("→ route table installed by the router", "t_run_rep", "t_table"),
    ("→ first 200 from the new instance at the client", "t_table", "t_200"),
]
total = [d(r, "t_kill", "t_200") for r in runs]
own = [d(r, "t_create", "t_healthy") for r in runs]
over = [None if t is None or o is None else t - o for t, o in zip(total, own)]
print("## Recovery of a crashed instance (issue 5) — bench/recover.sh")
print()
print(f"{date}, commit {commit}, {ncpu} CPUs, {len(runs)} runs, image {ref} (busybox httpd,")
print(f"one instance, health check `port`). Load average at start {load0}, at end {load1}.")
print()
print("| ms | median | min / max | runs |")
print("|---|---:|---:|---|")
print(row("kill → first 200 from the new instance through the router", total, True))
print(row("the instance's own start (`Creating container` → `Container became healthy`)", own))
print(row("platform overhead (total − own start; goal < 100)", over, True))
app = [d(r, "t_create", "t_listen") for r in runs]
print(row("the app's start as seen from outside (`Creating container` → its port listening)", app))
print(row("platform overhead counting the startup check's polling delay too (total − that)",
          [None if t is None or a is None else t - a for t, a in zip(total, app)]))
print(row("crun floor: `crun run --detach` of berth's config.json (no network) → port listening", floor))
print(row("total − crun floor of the same run (the cell's start work counted as overhead too)",
          [None if t is None else t - f for t, f in zip(total, floor)]))
print(row("router noticed (first answer other than the old instance's 200)", [d(r, "t_kill", "t_down") for r in runs]))
print()
print("Where the time goes (each step from the previous one; one host clock; cell lines in ns, controller")
print("and router log lines in ms, written when the step has finished):")
print()
print("| ms | median | min / max | runs |")
print("|---|---:|---:|---|")
for name, a, b in phases:
    print(row(name, [d(r, a, b) for r in runs]))
print()
codes = {}
for r in runs:
    for k, v in r["codes"].items():
        codes[k] = codes.get(k, 0) + v
print("Client answers during the recoveries (all runs): "
      + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())) + ".")
EOF
log "report: $REPORT"
