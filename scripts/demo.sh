#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# berth demo: start a private registry on loopback, build a small busybox image without Docker, push it,
# then pull it with berth's image store and show it (ls, inspect, export).
#
# Run it with `make demo` (which installs packages and builds first), or directly after `make deps all`.
# Needs root (berth's store shifts ownership into the user-namespace range and sets trusted.* xattrs).
#
# Environment:
#   BERTH                  berth binary (default: build/berth)
#   BERTH_DEMO_DIR         work directory (default: a new /tmp/berth-demo.XXXXXX)
#   BERTH_DEMO_KEEP=1      keep the berth data dir and the exported rootfs afterwards (the registry always stops)
#   BERTH_DEMO_SKIP_BERTH=1  stop after pushing the image (checks the registry and image build alone)
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
BERTH=${BERTH:-$REPO/build/berth}
PY=/usr/bin/python3 # Debian's, not a shim earlier in PATH

bold() { if [ -t 1 ]; then printf '\n\033[1m==> %s\033[0m\n' "$*"; else printf '\n==> %s\n' "$*"; fi; }
die() {
        echo "demo: $*" >&2
        exit 1
}
# Show a command, then run it.
run() {
        local a out="$"
        for a in "$@"; do
                if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=" $a"; else out+=" '$a'"; fi
        done
        printf '%s\n' "$out"
        "$@"
}

[ "$(id -u)" = 0 ] || die "run as root (berth's image store writes host-shifted ownership and trusted.* xattrs)"

# Tools the demo itself uses (Debian packages); `make deps` installs them already. busybox-static's
# /bin/busybox is what goes into the image: a dynamically linked busybox would not run there.
"$REPO/scripts/install-deps.sh" docker-registry umoci skopeo curl python3 busybox-static
if [ "${BERTH_DEMO_SKIP_BERTH:-0}" != 1 ] && [ ! -x "$BERTH" ]; then
        die "$BERTH not found: run 'make' first (or 'make demo')"
fi

# --- work directory and cleanup ----------------------------------------------------------------------------
if [ -n "${BERTH_DEMO_DIR:-}" ]; then
        DEMO=$BERTH_DEMO_DIR
        mkdir -p "$DEMO"
else
        DEMO=$(mktemp -d /tmp/berth-demo.XXXXXX)
fi
DATA=$DEMO/data          # berth --data-dir
ROOTFS=$DEMO/rootfs      # berth image export target
REG=$DEMO/registry       # registry config, storage and log
LAYOUT=$DEMO/oci         # OCI image layout built with umoci
BUNDLE=$DEMO/bundle      # umoci's unpacked bundle used to author layers
REG_PID=""
# The demo's containers get their own bridge, subnet and nftables table (removed at the end).
CFG=$DEMO/config.yaml
DEMO_BRIDGE=berthdemo0
DEMO_TABLE=berth_demo
# A reused BERTH_DEMO_DIR: start from scratch (only the demo's own entries are removed).
rm -rf "$DATA" "$ROOTFS" "$REG" "$LAYOUT" "$BUNDLE"

cleanup() {
        local rc=$?
        if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
                kill "$REG_PID" 2>/dev/null || true
                wait "$REG_PID" 2>/dev/null || true
        fi
        if [ $rc -ne 0 ] && [ $rc -ne 130 ] && [ -s "$REG/registry.log" ]; then
                echo "demo: failed (exit $rc); the registry's log ends with:" >&2
                # "blob unknown" lines are the normal answers to a push's existence checks.
                grep -v 'blob unknown' "$REG/registry.log" | tail -n 10 >&2 || true
        fi
        rm -rf "$REG" "$LAYOUT" "$BUNDLE" "$DEMO/hello.tar" "$DEMO/inspect.json"
        if [ "${BERTH_DEMO_KEEP:-0}" = 1 ]; then
                echo "demo: kept $DATA and $ROOTFS"
        else
                # The demo's containers, its bridge and nftables table, the data dir's own mounts.
                if [ -d "$DATA/cell" ] && [ -x "$BERTH" ]; then
                        "$BERTH" --data-dir "$DATA" --config "$CFG" ps -aq 2>/dev/null |
                                xargs -r "$BERTH" --data-dir "$DATA" --config "$CFG" rm -f >/dev/null 2>&1 || true
                fi
                ip link del "$DEMO_BRIDGE" 2>/dev/null || true
                nft delete table inet "$DEMO_TABLE" 2>/dev/null || true
                umount "$DATA/cell/netns" "$DATA/cell/disk" 2>/dev/null || true
                rm -rf "$DATA" "$ROOTFS" "$CFG"
                rmdir "$DEMO" 2>/dev/null || true
        fi
        exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a private registry on 127.0.0.1 --------------------------------------------------------------------------



bold "Starting a private registry (Debian's docker-registry) on 127.0.0.1"
# shellcheck source=scripts/lib/registry.sh
. "$REPO/scripts/lib/registry.sh"
registry_start "$REG" || die "docker-registry did not start"
PORT=$REG_PORT
REGISTRY=127.0.0.1:$PORT
echo "registry: http://$REGISTRY (storage $REG/storage, pid $REG_PID)"

# --- build a sample image without Docker ---------------------------------------------------------------------
# Two layers: busybox with its applets, users and groups; then a small web root served by busybox httpd.
bold "Building demo/hello:1 with umoci (busybox-static, two layers)"
run umoci init --layout "$LAYOUT"
run umoci new --image "$LAYOUT:demo"
run umoci unpack --image "$LAYOUT:demo" "$BUNDLE"
R=$BUNDLE/rootfs
# shellcheck source=scripts/lib/busybox.sh
. "$REPO/scripts/lib/busybox.sh"
busybox_rootfs "$R"
mkdir -p "$R/home/app"
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:demo app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
app:x:1000:
nogroup:x:65534:
EOF
chown 1000:1000 "$R/home/app"
run umoci repack --refresh-bundle --history.created_by "busybox-static $(/bin/busybox | head -1 | cut -d' ' -f2)" \
        --image "$LAYOUT:demo" "$BUNDLE"

mkdir -p "$R/www"
cat >"$R/www/index.html" <<'EOF'
<!doctype html>
<title>hello from berth</title>
<h1>Hello from a berth demo image</h1>
EOF
chown -R 1000:1000 "$R/www"
run umoci repack --refresh-bundle --history.created_by "web root" --image "$LAYOUT:demo" "$BUNDLE"

run umoci config --image "$LAYOUT:demo" --author "berth demo" \
        --config.user app --config.workingdir /www --config.env PORT=8080 --config.exposedports 8080/tcp \
        --config.entrypoint /bin/httpd --config.cmd -f --config.cmd -p --config.cmd 8080 \
        --config.cmd -h --config.cmd /www
run umoci stat --image "$LAYOUT:demo"

bold "Pushing it to the registry with skopeo"
IMAGE=$REGISTRY/demo/hello:1
run skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:demo" "docker://$IMAGE"
run curl -fsS "http://$REGISTRY/v2/demo/hello/tags/list"
echo

if [ "${BERTH_DEMO_SKIP_BERTH:-0}" = 1 ]; then
        bold "BERTH_DEMO_SKIP_BERTH=1: registry and image are ready; stopping before berth"
        exit 0
fi

# --- berth's image store --------------------------------------------------------------------------------------
# Registries on loopback may be reached over plain HTTP without any configuration (as Docker allows).
bold "Pulling it with berth (download, verify, decompress and unpack each layer in one pass)"
run "$BERTH" --data-dir "$DATA" image pull "$IMAGE"

bold "Listing the store"
run "$BERTH" --data-dir "$DATA" image ls

bold "Inspecting the image (summary of 'berth image inspect' JSON)"
printf '$ %s\n' "$BERTH --data-dir $DATA image inspect $IMAGE"
"$BERTH" --data-dir "$DATA" image inspect "$IMAGE" >"$DEMO/inspect.json"
"$PY" - "$DEMO/inspect.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
cfg = doc.get("config") or {}
c = cfg.get("config") or {}  # the image config's container settings
print(f"  references  {', '.join(doc.get('references') or [])}")
print(f"  digest      {doc.get('digest')}  ({doc.get('media_type')})")
print(f"  platform    {doc.get('platform')}  created {doc.get('created')}")
print(f"  entrypoint  {c.get('Entrypoint')}  cmd {c.get('Cmd')}")
print(f"  user        {c.get('User')}  workdir {c.get('WorkingDir')}  ports {sorted((c.get('ExposedPorts') or {}).keys())}")
print(f"  size        {doc.get('size')} bytes compressed, {doc.get('unpacked_size')} unpacked")
for i, l in enumerate(doc.get("layers") or []):
    print(f"  layer {i}     {str(l.get('digest'))[:19]}...  {l.get('size')} -> {l.get('unpacked_size')} bytes,"
          f" chain {str(l.get('chain_id'))[7:19]}")
EOF
rm -f "$DEMO/inspect.json"

bold "The store keeps one unpacked copy per layer, owned by host ids 1000000000 + the image's ids"
run ls "$DATA/image/layers"
for layer in "$DATA"/image/layers/*/diff; do
        run ls -ln "$layer"
done

bold "Exporting its filesystem (ownership shifted back to the image's own ids)"
run "$BERTH" --data-dir "$DATA" image export "$IMAGE" "$ROOTFS"
run ls -ln "$ROOTFS" "$ROOTFS/www"
run stat -c '%A %u:%g %s %n' "$ROOTFS/bin/busybox" "$ROOTFS/bin/sh" "$ROOTFS/tmp"
run "$BERTH" --data-dir "$DATA" image export "$IMAGE" "$DEMO/hello.tar"
printf '$ tar --numeric-owner -tvf %s | grep -E ...\n' "$DEMO/hello.tar"
# grep reads everything (head would close the pipe early and pipefail would report tar's SIGPIPE).
tar --numeric-owner -tvf "$DEMO/hello.tar" | grep -E ' (\./)?(bin/busybox|bin/sh -> busybox|etc/passwd|tmp/|www/|www/index.html)$'

# --- berth's cell -------------------------------------------------------------------------------------------
cat >"$CFG" <<EOF
cell:
  network:
    bridge: $DEMO_BRIDGE
    subnet: 10.215.0.0/24
    nft_table: $DEMO_TABLE
EOF
APP_PORT=$(registry_free_port)
B() { "$BERTH" --data-dir "$DATA" --config "$CFG" "$@"; }

bold "Running it as a container: its own user namespace, network, memory limit and disk quota"
printf '$ %s\n' "berth run -d --name hello -p 127.0.0.1:$APP_PORT:8080 -m 64M --disk 64M $IMAGE"
B run -d --name hello -p "127.0.0.1:$APP_PORT:8080" -m 64M --disk 64M "$IMAGE"
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$APP_PORT/" 2>/dev/null && break; sleep 0.05; done
run curl -fsS "http://127.0.0.1:$APP_PORT/"
printf '$ berth ps\n'; B ps
printf '$ berth exec hello id\n'; B exec hello id
printf '$ berth logs hello\n'; B logs hello
printf '$ berth inspect hello   (summary)\n'
B inspect hello >"$DEMO/ctr.json"
"$PY" - "$DEMO/ctr.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))[0]
st, n, hc, u = d["State"], d["NetworkSettings"], d["HostConfig"], d["Usage"]
print("  state %s, pid %s, supervised %s, ip %s, ports %s"
      % (st["Status"], st["Pid"], st["Supervised"], n["IPAddress"], n["Ports"]))
print("  limits: memory %d MiB, pids %s, disk %d MiB, cpu shares %s"
      % (hc["Memory"] >> 20, hc["PidsLimit"], hc["DiskQuota"] >> 20, hc["CpuShares"]))
print("  usage:  memory %d KiB, pids %s, disk %d KiB"
      % (u.get("memory_bytes", 0) >> 10, u.get("pids"), u.get("disk_bytes", 0) >> 10))
EOF
rm -f "$DEMO/ctr.json"
printf '$ ps -o user,pid,cmd -C httpd   (the app seen from the host: uid 1000000000 + its own)\n'
ps -o user:12,pid,cmd -C httpd || true
printf '$ berth stop hello && berth rm hello\n'; B stop hello >/dev/null && B rm hello >/dev/null
printf '$ berth ps -a\n'; B ps -a

bold "Done"
if [ "${BERTH_DEMO_KEEP:-0}" = 1 ]; then
        cat <<EOF
The data dir is kept. Try:
  $BERTH --data-dir $DATA --config $CFG run --rm $IMAGE /bin/sh -c 'id; ip -4 addr show eth0'
  $BERTH --data-dir $DATA image ls --json
  $BERTH --data-dir $DATA image inspect $IMAGE
  $BERTH --data-dir $DATA image rm $IMAGE
  $BERTH --data-dir $DATA image prune
  rm -rf $DEMO                                       # when finished
EOF
else
        cat <<EOF
The demo's registry and data dir are removed on exit (BERTH_DEMO_KEEP=1 keeps the data dir). Next, try:
  $BERTH --data-dir /tmp/b image pull docker.io/library/busybox      # needs network access to Docker Hub
  $BERTH --data-dir /tmp/b image ls
  $BERTH --data-dir /tmp/b image export busybox /tmp/busybox-rootfs
  $BERTH run --rm -p 8080:80 nginx:1.25                               # needs Docker Hub too
  $BERTH image --help                                                  # every image command
See docs/image-store.md for the whole command set and the config file.
EOF
fi
