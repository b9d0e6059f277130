#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# berth demo (issue 4's story): start a private registry on loopback, build a small web app image without
# Docker and push it there, start a whole single-node platform with `berth up` (controller, cell, router) in
# the background, log in as admin, enable the diego_docker feature flag, push the image as an app with 2
# instances, fetch it through the router, and print the URL and the next commands to try.
#
# Run it with `make demo` (which installs packages and builds first), or directly after `make deps all`.
# Needs root (containers: user namespaces, cgroups, mounts, a bridge and nftables rules of its own).
#
# Environment:
#   BERTH                  berth binary (default: build/berth)
#   BERTH_DEMO_DIR         work directory (default: a new /tmp/berth-demo.XXXXXX)
#   BERTH_DEMO_KEEP=1      leave the platform and the registry running afterwards, to try the next commands
#                          (otherwise everything is stopped and removed on exit)
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

[ "$(id -u)" = 0 ] || die "run as root (containers need user namespaces, cgroups, mounts, a bridge and nftables)"

# Tools the demo itself uses (Debian packages); `make deps` installs them already. busybox-static's
# /bin/busybox is what goes into the image: a dynamically linked busybox would not run there.
"$REPO/scripts/install-deps.sh" docker-registry umoci skopeo curl python3 busybox-static crun nftables iproute2
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
DATA=$DEMO/data          # berth up --data-dir
export BERTH_HOME=$DEMO/home   # the CLI's login and target
REG=$DEMO/registry       # registry config, storage and log
LAYOUT=$DEMO/oci         # OCI image layout built with umoci
BUNDLE=$DEMO/bundle      # umoci's unpacked bundle used to author layers
UP_LOG=$DEMO/up.log      # what berth up prints
REG_PID=""
UP_PID=""
# The demo's platform puts its containers on their own bridge, subnet and nftables table (removed at the end).
CFG=$DEMO/config.yaml
DEMO_BRIDGE=berthdemo0
DEMO_TABLE=berth_demo
APP=hello
# A reused BERTH_DEMO_DIR: start from scratch (only the demo's own entries are removed).
rm -rf "$DATA" "$BERTH_HOME" "$REG" "$LAYOUT" "$BUNDLE" "$UP_LOG"

stop_platform() {
        [ -n "$UP_PID" ] || return 0
        if kill -0 "$UP_PID" 2>/dev/null; then
                # berth up stops the router, the controller, then the cell, which stops every instance.
                kill -TERM "$UP_PID" 2>/dev/null || true
                local i
                for i in $(seq 600); do
                        kill -0 "$UP_PID" 2>/dev/null || break
                        sleep 0.1
                done
                if kill -0 "$UP_PID" 2>/dev/null; then
                        echo "demo: berth up did not stop within 60 s; killing it" >&2
                        kill -KILL "$UP_PID" 2>/dev/null || true
                fi
        fi
        wait "$UP_PID" 2>/dev/null || true
        UP_PID=""
}

cleanup() {
        local rc=$?
        trap - INT TERM
        if [ $rc -ne 0 ] && [ $rc -ne 130 ]; then
                if [ -s "$UP_LOG" ]; then
                        echo "demo: failed (exit $rc); berth up's log ends with:" >&2
                        tail -n 25 "$UP_LOG" >&2 || true
                fi
                if [ -s "$REG/registry.log" ]; then
                        echo "demo: the registry's log ends with:" >&2
                        # "blob unknown" lines are the normal answers to a push's existence checks.
                        grep -v 'blob unknown' "$REG/registry.log" | tail -n 10 >&2 || true
                fi
        fi
        rm -rf "$LAYOUT" "$BUNDLE"
        if [ "${BERTH_DEMO_KEEP:-0}" = 1 ] && [ $rc -eq 0 ]; then
                echo "demo: kept running: berth up (pid $UP_PID, log $UP_LOG), registry (pid $REG_PID), data in $DEMO"
                exit 0
        fi
        stop_platform
        if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
                kill "$REG_PID" 2>/dev/null || true
                wait "$REG_PID" 2>/dev/null || true
        fi
        # Whatever a killed platform may have left: its containers, bridge, nftables table, mounts.
        if [ -d "$DATA/cell" ] && [ -x "$BERTH" ]; then
                "$BERTH" --data-dir "$DATA" --config "$CFG" ps -aq 2>/dev/null |
                        xargs -r "$BERTH" --data-dir "$DATA" --config "$CFG" rm -f >/dev/null 2>&1 || true
                # the bridge, its rules and the ip_forward switch berth may have turned on
                "$BERTH" --data-dir "$DATA" --config "$CFG" network prune >/dev/null 2>&1 || true
        fi
        ip link del "$DEMO_BRIDGE" 2>/dev/null || true
        nft delete table inet "$DEMO_TABLE" 2>/dev/null || true
        grep " $DATA" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
        rm -rf "$DATA" "$BERTH_HOME" "$REG" "$CFG" "$UP_LOG"
        rmdir "$DEMO" 2>/dev/null || true
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
<p>Which instance answered: <a href="/cgi-bin/hello">/cgi-bin/hello</a></p>
EOF
mkdir -p "$R/www/cgi-bin"
cat >"$R/www/cgi-bin/hello" <<'EOF'
#!/bin/sh
# Which instance of which app answered (the platform sets CF_INSTANCE_INDEX and VCAP_APPLICATION).
printf 'Content-Type: text/plain\r\n\r\n'
app=$(echo "$VCAP_APPLICATION" | sed -n 's/.*"application_name":"\([^"]*\)".*/\1/p')
echo "Hello from app ${app:-?}, instance ${CF_INSTANCE_INDEX:-?} (container ${CF_INSTANCE_INTERNAL_IP:-?}, uid $(id -u))"
EOF
chmod 0755 "$R/www/cgi-bin/hello"
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

# --- the platform ---------------------------------------------------------------------------------------------
cat >"$CFG" <<EOF
cell:
  network:
    bridge: $DEMO_BRIDGE
    subnet: 10.215.0.0/24
    nft_table: $DEMO_TABLE
EOF
API_PORT=$(registry_free_port)
ROUTER_PORT=$(registry_free_port)
CELL_PORT=$(registry_free_port)
while [ "$ROUTER_PORT" = "$API_PORT" ] || [ "$CELL_PORT" = "$API_PORT" ] || [ "$CELL_PORT" = "$ROUTER_PORT" ]; do
        ROUTER_PORT=$(registry_free_port)
        CELL_PORT=$(registry_free_port)
done
API=http://127.0.0.1:$API_PORT
DOMAIN=apps.localhost
mkdir -p "$DATA" "$BERTH_HOME"
chmod 0711 "$DEMO" "$DATA" # containers' root (a shifted uid) must traverse to their root filesystems

bold "Starting the platform: berth up (controller, cell and router as child processes) in the background"
printf '$ %s\n' "berth --data-dir $DATA --config $CFG up --api-port $API_PORT --router-port $ROUTER_PORT --cell-port $CELL_PORT --domain $DOMAIN >$UP_LOG 2>&1 &"
"$BERTH" --data-dir "$DATA" --config "$CFG" up --api-port "$API_PORT" --router-port "$ROUTER_PORT" \
        --cell-port "$CELL_PORT" --domain "$DOMAIN" >"$UP_LOG" 2>&1 </dev/null &
UP_PID=$!
for _ in $(seq 600); do
        kill -0 "$UP_PID" 2>/dev/null || die "berth up exited early"
        curl -fsS -o /dev/null --max-time 2 "$API/v3/info" 2>/dev/null && break
        sleep 0.1
done
curl -fsS -o /dev/null --max-time 2 "$API/v3/info" || die "berth up's API did not answer within 60 s"
for _ in $(seq 100); do
        [ -s "$DATA/admin-password" ] && break
        sleep 0.1
done
[ -s "$DATA/admin-password" ] || die "no $DATA/admin-password"
echo "API $API is up (berth up pid $UP_PID); it printed:"
sed 's/^/  | /' "$UP_LOG" | head -n 20

bold "Logging in as admin (password in $DATA/admin-password) and enabling Docker images"
printf '$ %s\n' "berth login -a $API -u admin -p \"\$(cat $DATA/admin-password)\""
"$BERTH" login -a "$API" -u admin -p "$(cat "$DATA/admin-password")"
run "$BERTH" feature-flag diego_docker
run "$BERTH" enable-feature-flag diego_docker

bold "Pushing $IMAGE as app '$APP' with 2 instances"
START_NS=$(date +%s%N)
run "$BERTH" push "$APP" --docker-image "$IMAGE" -i 2 -m 64M -k 256M
HOST=$APP.$DOMAIN
URL=http://127.0.0.1:$ROUTER_PORT/
code=""
for _ in $(seq 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Host: $HOST" "$URL" 2>/dev/null || true)
        [ "$code" = 200 ] && break
        sleep 0.1
done
[ "$code" = 200 ] || die "the app did not answer 200 through the router (last status: ${code:-none})"
echo "first 200 through the router $((($(date +%s%N) - START_NS) / 1000000)) ms after the push began"
# The second instance may still be starting: wait until the router has sent a request to each (at most 30 s).
seen=""
for _ in $(seq 300); do
        out=$(curl -s --max-time 2 -H "Host: $HOST" "${URL}cgi-bin/hello" 2>/dev/null || true)
        case "$out" in *"instance 0 "*) seen="$seen 0" ;; *"instance 1 "*) seen="$seen 1" ;; esac
        case "$seen" in *0*1* | *1*0*) break ;; esac
        sleep 0.1
done
case "$seen" in *0*1* | *1*0*) ;; *) die "the router did not reach both instances within 30 s" ;; esac
echo "both instances answered through the router $((($(date +%s%N) - START_NS) / 1000000)) ms after the push began"

bold "Fetching it through the router (Host: $HOST): round-robin over the two instances"
run curl -fsS -H "Host: $HOST" "$URL"
for _ in 1 2 3 4; do
        run curl -fsS -H "Host: $HOST" "${URL}cgi-bin/hello"
done
run "$BERTH" apps
run "$BERTH" app "$APP"
printf '$ curl -si -H "Host: nope.%s" %s   (an unknown route)\n' "$DOMAIN" "$URL"
curl -si -H "Host: nope.$DOMAIN" "$URL" | head -n 4 || true

bold "Done"
CLI="BERTH_HOME=$BERTH_HOME $BERTH"
cat <<EOF
The app: http://$HOST:$ROUTER_PORT/   (from this host: curl -H "Host: $HOST" $URL)
The API: $API   admin password: $DATA/admin-password   berth up's log: $UP_LOG
EOF
if [ "${BERTH_DEMO_KEEP:-0}" = 1 ]; then
        cat <<EOF

The platform keeps running (berth up pid $UP_PID, registry pid $REG_PID). Next, try:
  $CLI app $APP                          # instances: state, cpu, memory, disk
  $CLI scale $APP -i 3
  curl -H "Host: $HOST" ${URL}cgi-bin/hello  # a few times: round-robin over the instances
  $CLI set-env $APP GREETING hi && $CLI restart $APP
  $CLI env $APP
  $CLI app-logs $APP --recent
  $CLI events $APP
  $CLI disable-feature-flag diego_docker # stops every Docker app within seconds; enable it to bring them back
  $CLI delete $APP -f
When finished: kill $UP_PID $REG_PID; rm -rf $DEMO
EOF
else
        cat <<EOF

The platform stops and everything is removed now. Run 'BERTH_DEMO_KEEP=1 make demo' to keep it running and try:
  berth app $APP;  berth scale $APP -i 3;  berth set-env $APP K V && berth restart $APP;  berth app-logs $APP
  berth events $APP;  berth disable-feature-flag diego_docker;  berth delete $APP -f
See docs/PLATFORM.md for the API and every command.
EOF
fi
