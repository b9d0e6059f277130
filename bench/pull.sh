#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Pull benchmark: a large two-layer gzip image from a registry on 127.0.0.1, pulled and unpacked cold by
# every tool in the same run, side by side:
#   1. igzip -dc of the layer blobs > /dev/null      the decompression floor (ISA-L), layers one after another
#   2. podman pull                                   containers/image + containers/storage (overlay driver)
#   3. skopeo copy to an OCI layout + umoci unpack   the other common way to get a rootfs
#   4. berth image pull                              cold: empty data dir
#   5. berth image pull again                        every layer cached; BENCH_REPULLS runs, median
# plus the peak RSS of each (GNU time). The page cache is dropped before each cold run.
#
# The image is built once from this machine's /usr (an OS-like layer) and generated data (an app-like
# layer) and cached as an OCI layout in bench/out/pull-image; the registry's storage is cached in
# bench/out/pull-registry. Delete bench/out to rebuild.
#
# Environment: BERTH (default build/berth), BENCH_OUT (default bench/out), BENCH_RUNS (cold runs per tool,
# default 3, the median is reported), BENCH_REPULLS (default 10), BENCH_TOOLS (default
# "igzip podman skopeo berth"), BENCH_LAYER1_MB (default 900), BENCH_LAYER2_MB (default 470).
# Needs root (page cache drop, podman's and berth's stores). Everything listens on 127.0.0.1 only.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
BERTH=${BERTH:-$REPO/build/berth}
OUT=${BENCH_OUT:-$REPO/bench/out}
RUNS=${BENCH_RUNS:-3}
REPULLS=${BENCH_REPULLS:-10}
TOOLS=${BENCH_TOOLS:-igzip podman skopeo berth}
LAYER1_MB=${BENCH_LAYER1_MB:-900}
LAYER2_MB=${BENCH_LAYER2_MB:-470}
IMAGE_VERSION=2 # bump when the recipe below changes: the cached image is rebuilt
LAYOUT=$OUT/pull-image
REGDIR=$OUT/pull-registry
REPO_TAG=bench/pull:$IMAGE_VERSION
# Debian's interpreter, not whatever shim is first in PATH (a pyenv shim costs ~100 ms a call).
PY=/usr/bin/python3

log() { printf '[pull] %s\n' "$*" >&2; }
die() {
        log "error: $*"
        exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (page cache drop, podman and berth stores)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LAYOUT=$OUT/pull-image
REGDIR=$OUT/pull-registry

# --- packages --------------------------------------------------------------------------------------------------
need=(docker-registry skopeo umoci podman isal time python3 curl pigz tar)
"$REPO/scripts/install-deps.sh" "${need[@]}"

# --- scratch space and cleanup ---------------------------------------------------------------------------------
# Every tool writes into the same file system (under bench/out) so that the disk is the same for all.
WORK=$(mktemp -d "$OUT/run.XXXXXX")
REG_PID=""
cleanup() {
        local rc=$?
        if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
                kill "$REG_PID" 2>/dev/null || true
                wait "$REG_PID" 2>/dev/null || true
        fi
        # Nothing here should be mounted (pulls do not mount), but never delete through a mount.
        if grep -q " $WORK" /proc/self/mounts; then
                grep " $WORK" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l || true
        fi
        rm -rf "$WORK"
        exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
elapsed() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

drop_caches() {
        sync
        if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
                [ -n "${WARNED_CACHE:-}" ] || log "warning: cannot drop the page cache; cold runs are warm-cache runs"
                WARNED_CACHE=1
        fi
}

# --- the image -------------------------------------------------------------------------------------------------
build_image() {
        local b=$OUT/pull-build
        rm -rf "$b" "$LAYOUT"
        mkdir -p "$b"
        log "building the benchmark image in $LAYOUT (once; cached afterwards)"

        # Layer 1, OS-like: this machine's /usr (libraries, share, binaries, headers) up to LAYER1_MB of file
        # data, each part taking its share in name order, with directories, symlinks, hardlinks, modes and
        # setuid bits as they are: shared libraries and tens of thousands of small files, like a real
        # distribution layer.
        "$PY" - "$b/layer1.list" "$LAYER1_MB" <<'EOF'
import os, stat, sys
out, budget = sys.argv[1], int(sys.argv[2]) << 20
shares = [("usr/lib", 0.50), ("usr/share", 0.30), ("usr/bin", 0.08), ("usr/sbin", 0.02),
          ("usr/include", 0.06), ("usr/libexec", 0.04)]
total = carry = 0
files = 0
with open(out, "w") as f:
    f.write("usr\n")
    for top, share in shares:
        allowed, used = budget * share + carry, 0
        for root, dirs, names in os.walk("/" + top):
            dirs.sort()
            if used >= allowed:
                break
            f.write(root[1:] + "\n")
            for name in sorted(names):
                p = os.path.join(root, name)
                st = os.lstat(p)
                if "\n" in p or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue  # sockets, fifos, devices are not in images
                if stat.S_ISREG(st.st_mode):
                    if st.st_size > 64 << 20:
                        continue  # a few huge libraries would crowd out everything else
                    used += st.st_size
                f.write(p[1:] + "\n")
                files += 1
                if used >= allowed:
                    break
        carry = max(0, allowed - used)  # a small part hands its unused share on
        total += used
print(f"layer 1: {total >> 20} MiB in {files} files and links from /usr", file=sys.stderr)
EOF
        tar -C / --format=gnu --numeric-owner --no-recursion -T "$b/layer1.list" -cf "$b/layer1.tar"
        # /usr may be smaller than the budget on a small machine: the generated layer makes up the rest.

        # Layer 2, app-like: deterministic generated data owned by uid 1000 under /app: incompressible
        # assets, Zipf-distributed text (logs, JSON), and many small source-like files.
        "$PY" - "$b/gen" "$LAYER2_MB" <<'EOF'
import os, random, sys
root, mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(20240601)
app = os.path.join(root, "app")
vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 11)))
         for _ in range(8000)]
weights = [1.0 / (i + 1) for i in range(len(vocab))]
def text(nbytes):
    words = rng.choices(vocab, weights, k=nbytes // 6 + 16)
    lines, cur = [], []
    for i, w in enumerate(words):
        cur.append(w)
        if len(cur) >= 12 and rng.random() < 0.2:
            lines.append(f'{{"ts":{1700000000 + i},"level":"info","msg":"{" ".join(cur)}"}}')
            cur = []
    return ("\n".join(lines) + "\n").encode()[:nbytes]
budget = mb << 20
assets, logs = budget * 38 // 100, budget * 46 // 100
small = budget - assets - logs
os.makedirs(os.path.join(app, "assets"))
n = 0
while assets > 0:
    size = min(assets, 4 << 20)
    with open(os.path.join(app, "assets", f"blob{n:04d}.bin"), "wb") as f:
        f.write(rng.randbytes(size))
    assets -= size; n += 1
os.makedirs(os.path.join(app, "data"))
n = 0
while logs > 0:
    size = min(logs, 512 << 10)
    with open(os.path.join(app, "data", f"events-{n:05d}.jsonl"), "wb") as f:
        f.write(text(size))
    logs -= size; n += 1
n = 0
while small > 0:
    d = os.path.join(app, "node_modules", f"pkg{n // 10:04d}", "lib")
    os.makedirs(d, exist_ok=True)
    size = min(small, rng.randint(512, 8192))
    with open(os.path.join(d, f"mod{n % 10}.js"), "wb") as f:
        f.write(b"// generated\n" + text(size))
    small -= size; n += 1
EOF
        tar -C "$b/gen" --format=gnu --sort=name --numeric-owner --owner=1000 --group=1000 \
                --mtime=@1700000000 -cf "$b/layer2.tar" app
        rm -rf "$b/gen"

        mkdir -p "$LAYOUT/blobs/sha256"
        local i
        for i in 1 2; do
                log "compressing layer $i ($(du -m "$b/layer$i.tar" | cut -f1) MB) with pigz -6"
                sha256sum "$b/layer$i.tar" | cut -d' ' -f1 >"$b/layer$i.diffid"
                stat -c %s "$b/layer$i.tar" >"$b/layer$i.usize"
                pigz -n -6 -c "$b/layer$i.tar" >"$b/layer$i.tar.gz"
                rm -f "$b/layer$i.tar"
        done

        # The OCI layout: blobs, config, manifest, index (tag "big").
        "$PY" - "$b" "$LAYOUT" "$(dpkg --print-architecture)" <<'EOF'
import hashlib, json, os, shutil, sys
b, layout, arch = sys.argv[1], sys.argv[2], sys.argv[3]
blobs = os.path.join(layout, "blobs", "sha256")
def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)
layers, diff_ids, info = [], [], []
for i in (1, 2):
    gz = os.path.join(b, f"layer{i}.tar.gz")
    h = hashlib.sha256()
    with open(gz, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    size = os.path.getsize(gz)
    shutil.move(gz, os.path.join(blobs, h.hexdigest()))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "digest": "sha256:" + h.hexdigest(), "size": size})
    diff_ids.append("sha256:" + open(os.path.join(b, f"layer{i}.diffid")).read().strip())
    info.append((size, int(open(os.path.join(b, f"layer{i}.usize")).read())))
config = {"architecture": arch, "os": "linux", "created": "2023-11-14T22:13:20Z",
          "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                     "User": "1000", "WorkingDir": "/app", "Cmd": ["/usr/bin/true"]},
          "rootfs": {"type": "layers", "diff_ids": diff_ids},
          "history": [{"created_by": "berth bench: files from /usr"},
                      {"created_by": "berth bench: generated app data"}]}
cd, cs = put(json.dumps(config, sort_keys=True).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers}
md, ms = put(json.dumps(manifest, sort_keys=True).encode())
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "big"}}]}, f)
with open(os.path.join(layout, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(layout, "bench-image.txt"), "w") as f:
    for i, (c, u) in enumerate(info):
        f.write(f"layer {i + 1}: {c / 1e6:.1f} MB gzip, {u / 1e6:.1f} MB tar\n")
    f.write(f"total: {sum(c for c, _ in info) / 1e6:.1f} MB gzip, {sum(u for _, u in info) / 1e6:.1f} MB tar\n")
    f.write(f"manifest: {md}\n")
EOF
        rm -rf "$b"
        echo "$IMAGE_VERSION $LAYER1_MB $LAYER2_MB" >"$LAYOUT/.complete"
}

if [ "$(cat "$LAYOUT/.complete" 2>/dev/null)" != "$IMAGE_VERSION $LAYER1_MB $LAYER2_MB" ]; then
        rm -rf "$REGDIR"
        build_image
fi
MANIFEST_DIGEST=$(sed -n 's/^manifest: //p' "$LAYOUT/bench-image.txt")
mapfile -t LAYER_BLOBS < <("$PY" -c '
import json, sys
layout = sys.argv[1]
idx = json.load(open(layout + "/index.json"))
m = json.load(open(layout + "/blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]))
for l in m["layers"]:
    print(layout + "/blobs/sha256/" + l["digest"].split(":")[1])' "$LAYOUT")
log "image: $(tr '\n' ';' <"$LAYOUT/bench-image.txt")"

# --- the registry (storage cached across runs) -------------------------------------------------------------------
# shellcheck source=scripts/lib/registry.sh
. "$REPO/scripts/lib/registry.sh"
registry_start "$REGDIR" || die "docker-registry did not start"
PORT=$REG_PORT
REF=127.0.0.1:$PORT/$REPO_TAG
have=$(curl -fsS -o /dev/null -w '%header{docker-content-digest}' -I \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://127.0.0.1:$PORT/v2/${REPO_TAG%%:*}/manifests/${REPO_TAG##*:}" 2>/dev/null || true)
if [ "$have" != "$MANIFEST_DIGEST" ]; then
        log "pushing the image to the registry (once; cached in $REGDIR)"
        skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:big" "docker://$REF"
fi
log "registry on 127.0.0.1:$PORT serves $REF ($MANIFEST_DIGEST)"

# --- the runs --------------------------------------------------------------------------------------------------
declare -A SECS RSS NOTE
record() { # tool seconds rss_kb
        SECS[$1]="${SECS[$1]:-} $2"
        RSS[$1]="${RSS[$1]:-} $3"
}
# timed TOOL CMD...: run under GNU time; records wall seconds and peak RSS of the largest process.
timed() {
        local tool=$1
        shift
        if /usr/bin/time -f '%e %M' -o "$WORK/time.out" "$@" >"$WORK/cmd.log" 2>&1; then
                read -r s kb <"$WORK/time.out"
                # GNU time's %e has 10 ms resolution; that is fine for runs of seconds.
                record "$tool" "$s" "$kb"
                return 0
        fi
        NOTE[$tool]="failed: $(grep -v '^Command exited' "$WORK/cmd.log" | tail -n 3 | tr '\n' ' ' | cut -c1-200)"
        return 1
}
has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }

run_igzip() {
        drop_caches
        timed igzip igzip -dc "${LAYER_BLOBS[@]}" || true
        # Not part of the floor: both layers at once, one per core (what a parallel puller could reach).
        drop_caches
        local t0 t1
        t0=$(now)
        local pids=() f
        for f in "${LAYER_BLOBS[@]}"; do
                igzip -dc "$f" >/dev/null &
                pids+=($!)
        done
        wait "${pids[@]}"
        t1=$(now)
        record igzip-par "$(elapsed "$t0" "$t1")" 0
}

run_podman() {
        local root=$WORK/podman
        drop_caches
        timed podman podman --root "$root/root" --runroot "$root/run" --storage-driver overlay \
                --events-backend file --cgroup-manager cgroupfs --log-level error \
                pull --tls-verify=false --quiet "$REF" || true
        podman --root "$root/root" --runroot "$root/run" --storage-driver overlay --events-backend file \
                --cgroup-manager cgroupfs --log-level error rmi -a -f >/dev/null 2>&1 || true
        rm -rf "$root"
}

run_skopeo() {
        local d=$WORK/umoci s1 t1 k1
        mkdir -p "$d"
        drop_caches
        if timed skopeo skopeo copy --quiet --src-tls-verify=false "docker://$REF" "oci:$d/layout:big" &&
                timed umoci umoci unpack --image "$d/layout:big" "$d/bundle"; then
                # skopeo+umoci = the sum of the two steps of this round.
                s1=$(echo "${SECS[skopeo]}" | awk '{print $NF}')
                t1=$(echo "${SECS[umoci]}" | awk '{print $NF}')
                k1=$(echo "${RSS[skopeo]} ${RSS[umoci]}" | awk '{m=0; for(i=NF-1;i<=NF;i++) if($i>m) m=$i; print m}')
                record skopeo+umoci "$("$PY" -c "print(f'{$s1 + $t1:.2f}')")" "$k1"
        else
                NOTE[skopeo+umoci]="${NOTE[skopeo]:-}${NOTE[umoci]:-}"
        fi
        rm -rf "$d"
}

run_berth() {
        local d=$WORK/berth
        if [ ! -x "$BERTH" ]; then
                NOTE[berth]="$BERTH not built (run make)"
                return
        fi
        drop_caches
        if ! timed berth "$BERTH" --data-dir "$d" image pull --quiet "$REF"; then
                rm -rf "$d"
                return
        fi
        # Re-pull with every layer cached: the whole command, process start to exit.
        local i t0 t1
        for ((i = 0; i < REPULLS; i++)); do
                t0=$EPOCHREALTIME
                if ! "$BERTH" --data-dir "$d" image pull --quiet "$REF" >"$WORK/cmd.log" 2>&1; then
                        NOTE[berth-repull]="failed: $(tail -n 2 "$WORK/cmd.log" | tr '\n' ' ')"
                        break
                fi
                t1=$EPOCHREALTIME
                record berth-repull "$("$PY" -c "print(f'{($t1 - $t0) * 1000:.1f}')")" 0
        done
        rm -rf "$d"
        # The floor under any re-pull: starting the binary at all (dynamic linking of libcurl, OpenSSL, ...).
        for ((i = 0; i < REPULLS; i++)); do
                t0=$EPOCHREALTIME
                "$BERTH" --version >/dev/null
                t1=$EPOCHREALTIME
                record berth-start "$("$PY" -c "print(f'{($t1 - $t0) * 1000:.1f}')")" 0
        done
}

# Other work on the machine skews every figure: record the load, warn when it is not idle.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.5 else 1)" "${LOAD_START%% *}"; then
        log "warning: load average is $LOAD_START; results will be noisy"
fi
for ((round = 1; round <= RUNS; round++)); do
        log "round $round of $RUNS"
        has_tool igzip && run_igzip
        has_tool podman && run_podman
        has_tool skopeo && run_skopeo
        has_tool berth && run_berth
done

# --- report ----------------------------------------------------------------------------------------------------
median() { # numbers... -> median (empty when none)
        "$PY" -c 'import statistics, sys; v = [float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):g}" if v else "")' "$@"
}
declare -A MED MAXRSS
for t in igzip igzip-par podman skopeo umoci skopeo+umoci berth berth-repull berth-start; do
        # shellcheck disable=SC2086
        MED[$t]=$(median ${SECS[$t]:-})
        # shellcheck disable=SC2086
        MAXRSS[$t]=$(median ${RSS[$t]:-})
done
ratio() { # a b -> a/b with 2 decimals, or n/a
        if [ -n "$1" ] && [ -n "$2" ]; then
                "$PY" -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}x' if b > 0 else 'n/a')" "$1" "$2"
        else
                echo n/a
        fi
}
fmt_rss() { if [ -n "${1:-}" ] && [ "$1" != 0 ]; then echo "$(($1 / 1024)) MiB"; else echo "-"; fi; }
row() { # label tool
        local v=${MED[$2]:-}
        if [ -n "$v" ]; then
                printf '| %-40s | %9s | %9s | %s\n' "$1" "$v" "$(fmt_rss "${MAXRSS[$2]:-}")" "${SECS[$2]# }"
        else
                printf '| %-40s | %9s | %9s | %s\n' "$1" "-" "-" "${NOTE[$2]:-not run}"
        fi
}

REPORT=$OUT/pull-results.md
{
        echo "## Pull benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r))"
        echo
        echo "Image (from 127.0.0.1, distribution $(dpkg-query -W -f='${Version}' docker-registry)):"
        sed 's/^/    /' "$LAYOUT/bench-image.txt"
        echo
        echo "Cold runs: page cache dropped before each; median of $RUNS. Load average at start: $LOAD_START;"
        echo "at end: $(cut -d' ' -f1-3 /proc/loadavg)."
        echo
        echo "| what                                     |   seconds |  peak RSS | each run"
        echo "|------------------------------------------|-----------|-----------|---------"
        row "igzip -dc, layers in sequence (floor)" igzip
        row "igzip -dc, both layers in parallel" igzip-par
        row "podman pull (overlay)" podman
        row "skopeo copy to OCI layout" skopeo
        row "umoci unpack" umoci
        row "skopeo copy + umoci unpack" skopeo+umoci
        row "berth image pull (cold)" berth
        if [ -n "${MED[berth-repull]:-}" ]; then
                # shellcheck disable=SC2086
                printf '| %-40s | %6s ms | %9s | %s\n' "berth re-pull, all cached (median)" \
                        "${MED[berth-repull]}" "-" "$("$PY" -c 'import sys; v = [float(x) for x in sys.argv[1:]]
print(f"{len(v)} runs, {min(v):g} to {max(v):g} ms")' ${SECS[berth-repull]})"
        else
                printf '| %-40s | %9s | %9s | %s\n' "berth re-pull, all cached" "-" "-" \
                        "${NOTE[berth-repull]:-not run}"
        fi
        if [ -n "${MED[berth-start]:-}" ]; then
                printf '| %-40s | %6s ms | %9s | %s\n' "berth --version (process start)" \
                        "${MED[berth-start]}" "-" "the floor under a re-pull"
        fi
        echo
        echo "Ratios (goal: podman/berth >= 4, berth/floor <= 2, re-pull < 50 ms):"
        echo "    podman / berth:            $(ratio "${MED[podman]:-}" "${MED[berth]:-}")"
        echo "    skopeo+umoci / berth:      $(ratio "${MED[skopeo+umoci]:-}" "${MED[berth]:-}")"
        echo "    berth / igzip floor:       $(ratio "${MED[berth]:-}" "${MED[igzip]:-}")"
        echo "    podman / igzip floor:      $(ratio "${MED[podman]:-}" "${MED[igzip]:-}")"
        echo "    skopeo+umoci / igzip floor: $(ratio "${MED[skopeo+umoci]:-}" "${MED[igzip]:-}")"
} | tee "$REPORT"
log "report written to $REPORT"
