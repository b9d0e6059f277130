#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Push benchmark (issue 4): the time from `berth push APP --docker-image REF` of an image the cell already
# has in its store to the first 200 answered through the router (`curl -H "Host: APP.apps.localhost"`),
# BENCH_PUSHES times (default 5; the app is deleted, and its route seen gone, between runs), against
# `podman run -d -p 127.0.0.1:P:8080 REF` of the same image (already in podman's store) to the first 200
# from its published port, in the same run. Both poll with the same curl loop. Prints per-run times, the
# medians and the ratio podman/berth, and how long `berth push` itself took (it returns once an instance
# is running); writes the table to bench/out/push-results.md.
#
# The image: busybox-static serving a page with busybox httpd on 8080 (EXPOSE 8080/tcp), one gzip layer,
# built with umoci, pushed with skopeo to Debian's docker-registry on 127.0.0.1; berth's cell pulls it on a
# first (untimed) push, podman with `podman pull --tls-verify=false`. The platform is a `berth up` with its
# own data dir, ports, bridge, subnet and nftables table under a temporary directory in bench/out, stopped
# and removed at the end with the registry, podman's store and the network state podman's netavark adds.
#
# Environment: BERTH (default build/berth), BENCH_OUT (default bench/out), BENCH_PUSHES (default 5),
# BENCH_TOOLS (default "berth podman"), BENCH_COMMIT (the commit to report; default HEAD). Needs root.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
BERTH=${BERTH:-$REPO/build/berth}
OUT=${BENCH_OUT:-$REPO/bench/out}
PUSHES=${BENCH_PUSHES:-5}
TOOLS=${BENCH_TOOLS:-berth podman}
PY=/usr/bin/python3
PODMAN_ULIMITS=(--ulimit nofile=16384:16384 --ulimit nproc=1024:1024) # see bench/start.sh
DOMAIN=apps.localhost
APP=benchpush

BENCH_NAME=push
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
bench_init "containers, podman's and berth's stores"

need=(docker-registry skopeo umoci crun busybox-static python3 curl nftables iproute2)
has_tool podman && need+=(podman)
"$REPO/scripts/install-deps.sh" "${need[@]}"

# --- scratch space and cleanup ---------------------------------------------------------------------------------
WORK=$(mktemp -d "$OUT/push.XXXXXX")
chmod 0711 "$WORK" # containers' root (a shifted uid) must traverse to their rootfs
D=$WORK/berth
export BERTH_HOME=$WORK/home
mkdir -p "$D" "$BERTH_HOME"
chmod 0711 "$D"
NET_BRIDGE=btpush$$
NET_TABLE=berth_push_$$
CFG=$WORK/config.yaml
printf 'cell:\n  network:\n    bridge: %s\n    subnet: 10.217.0.0/16\n    nft_table: %s\n' "$NET_BRIDGE" "$NET_TABLE" >"$CFG"
PODMAN_DIR=$WORK/podman
REG_PID=""
UP_PID=""
NFT_BEFORE=$(nft list tables 2>/dev/null || true)
IPAM_DB=/run/containers/networks/ipam.db
IPAM_BEFORE=0
[ -e "$IPAM_DB" ] && IPAM_BEFORE=1
IP_FORWARD_BEFORE=$(cat /proc/sys/net/ipv4/ip_forward)

podman_() {
        podman --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/run" --tmpdir "$PODMAN_DIR/tmp" \
                --storage-driver overlay --cgroup-manager cgroupfs --events-backend file --log-level error "$@"
}

cleanup() {
        local rc=$?
        set +e
        trap - INT TERM
        berth_up_stop
        if [ $rc -ne 0 ] && [ -s "$WORK/up.log" ]; then
                log "berth up's log ends with:"
                tail -n 30 "$WORK/up.log" >&2
        fi
        if [ -d "$D/cell" ]; then
                "$BERTH" --data-dir "$D" --config "$CFG" ps -aq 2>/dev/null |
                        xargs -r "$BERTH" --data-dir "$D" --config "$CFG" rm -f >/dev/null 2>&1
        fi
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
        if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
                kill "$REG_PID"
                wait "$REG_PID" 2>/dev/null
        fi
        grep " $WORK" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l
        rm -rf "$WORK"
        exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the image: busybox httpd on 8080 --------------------------------------------------------------------------
# shellcheck source=scripts/lib/busybox.sh
. "$REPO/scripts/lib/busybox.sh"
build_image() {
        local layout=$WORK/layout bundle=$WORK/umoci-bundle r
        umoci init --layout "$layout"
        umoci new --image "$layout:push"
        umoci unpack --image "$layout:push" "$bundle" >/dev/null
        r=$bundle/rootfs
        busybox_rootfs "$r"
        mkdir -p "$r/www"
        printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/www:/bin/sh\n' >"$r/etc/passwd"
        printf 'root:x:0:\napp:x:1000:\n' >"$r/etc/group"
        echo '<h1>hello</h1>' >"$r/www/index.html"
        umoci repack --refresh-bundle --history.created_by "busybox-static" --image "$layout:push" "$bundle"
        umoci config --image "$layout:push" --config.env PATH=/bin --config.exposedports 8080/tcp \
                --config.entrypoint /bin/httpd --config.cmd -f --config.cmd -p --config.cmd 8080 \
                --config.cmd -h --config.cmd /www
        skopeo copy --quiet --dest-tls-verify=false "oci:$layout:push" "docker://$REF"
        rm -rf "$bundle" "$layout"
}

# wait_200 URL [HOST] TIMEOUT_S: poll with curl until it answers 200; 1 on timeout.
wait_200() {
        local url=$1 host=$2 deadline=$((${EPOCHREALTIME/./} + $3 * 1000000)) code
        local -a h=()
        [ -z "$host" ] || h=(-H "Host: $host")
        while [ "${EPOCHREALTIME/./}" -lt "$deadline" ]; do
                code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "${h[@]}" "$url" 2>/dev/null || true)
                [ "$code" = 200 ] && return 0
                sleep 0.005
        done
        return 1
}
# wait_code URL HOST CODE TIMEOUT_S
wait_code() {
        local deadline=$((${EPOCHREALTIME/./} + $4 * 1000000)) code
        while [ "${EPOCHREALTIME/./}" -lt "$deadline" ]; do
                code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -H "Host: $2" "$1" 2>/dev/null || true)
                [ "$code" = "$3" ] && return 0
                sleep 0.02
        done
        return 1
}


# --- set-up ----------------------------------------------------------------------------------------------------
# shellcheck source=scripts/lib/registry.sh
. "$REPO/scripts/lib/registry.sh"
registry_start "$WORK/registry" || die "docker-registry did not start"
REF=127.0.0.1:$REG_PORT/bench/push:1
log "building and pushing $REF"
build_image >/dev/null

declare -A NOTE
if has_tool berth; then
        berth_up ""
        log "berth: first push (pulls the image into the cell's store; not timed)"
        "$BERTH" push "$APP" --docker-image "$REF" >"$WORK/push.log" 2>&1 || {
                cat "$WORK/push.log" >&2
                die "the first berth push failed"
        }
        wait_200 "$ROUTER" "$APP.$DOMAIN" 60 || die "the first push never answered 200 through the router"
        "$BERTH" delete "$APP" -f >/dev/null
        wait_code "$ROUTER" "$APP.$DOMAIN" 404 30 || die "the route of the deleted app did not go"
fi
if has_tool podman; then
        log "pulling $REF into podman ($PODMAN_DIR)"
        podman_ pull --quiet --tls-verify=false "$REF" >/dev/null
        PODMAN_PORT=$(free_port)
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$WORK/berth.ms"
: >"$WORK/berth-cmd.ms"
: >"$WORK/podman.ms"
for ((i = 1; i <= PUSHES; i++)); do
        if has_tool berth && [ -z "${NOTE[berth]:-}" ]; then
                t0=${EPOCHREALTIME/./}
                if "$BERTH" push "$APP" --docker-image "$REF" >"$WORK/push.log" 2>&1; then
                        t1=${EPOCHREALTIME/./}
                        if wait_200 "$ROUTER" "$APP.$DOMAIN" 60; then
                                t2=${EPOCHREALTIME/./}
                                echo "$(((t2 - t0) / 1000))" >>"$WORK/berth.ms"
                                echo "$(((t1 - t0) / 1000))" >>"$WORK/berth-cmd.ms"
                                log "berth run $i: first 200 after $(((t2 - t0) / 1000)) ms (push returned after $(((t1 - t0) / 1000)) ms)"
                        else
                                NOTE[berth]="run $i: no 200 through the router within 60 s"
                        fi
                else
                        NOTE[berth]="run $i: push failed: $(tail -c 300 "$WORK/push.log" | tr '\n' ' ')"
                fi
                "$BERTH" delete "$APP" -f >/dev/null 2>&1 || true
                wait_code "$ROUTER" "$APP.$DOMAIN" 404 30 || NOTE[berth]="run $i: the route did not go after delete"
        fi
        if has_tool podman && [ -z "${NOTE[podman]:-}" ]; then
                t0=${EPOCHREALTIME/./}
                if podman_ run -d --name bench-push "${PODMAN_ULIMITS[@]}" -p "127.0.0.1:$PODMAN_PORT:8080" "$REF" \
                        >"$WORK/podman.log" 2>&1; then
                        if wait_200 "http://127.0.0.1:$PODMAN_PORT/" "" 60; then
                                t2=${EPOCHREALTIME/./}
                                echo "$(((t2 - t0) / 1000))" >>"$WORK/podman.ms"
                                log "podman run $i: first 200 after $(((t2 - t0) / 1000)) ms"
                        else
                                NOTE[podman]="run $i: no 200 within 60 s"
                        fi
                else
                        NOTE[podman]="run $i: podman run failed: $(tail -c 300 "$WORK/podman.log" | tr '\n' ' ')"
                fi
                podman_ rm -f bench-push >/dev/null 2>&1 || true
        fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ----------------------------------------------------------------------------------------------------
median() { # FILE -> median in ms (or empty)
        [ -s "$1" ] || return 0
        "$PY" -c 'import statistics, sys; v = [float(l) for l in open(sys.argv[1]) if l.strip()]; print(f"{statistics.median(v):.0f}")' "$1"
}
runs() { [ -s "$1" ] && paste -sd' ' "$1" || echo "-"; }
MB=$(median "$WORK/berth.ms")
MC=$(median "$WORK/berth-cmd.ms")
MP=$(median "$WORK/podman.ms")
RATIO=n/a
if [ -n "$MB" ] && [ -n "$MP" ]; then
        RATIO=$("$PY" -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}x")' "$MB" "$MP")
fi
REPORT=$OUT/push-results.md
{
        echo "## Push to first 200 through the router (issue 4) — bench/push.sh"
        echo
        echo "$(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT, $PUSHES runs each, image $REF (busybox httpd, EXPOSE 8080)."
        echo "Load average at start $LOAD_START, at end $LOAD_END."
        echo
        echo "| what | median ms | runs (ms) |"
        echo "|---|---:|---|"
        echo "| \`berth push\` (cached image) → first 200 through the router | ${MB:--} | $(runs "$WORK/berth.ms") ${NOTE[berth]:-} |"
        echo "| &nbsp;&nbsp;of which \`berth push\` itself (returns once an instance runs) | ${MC:--} | $(runs "$WORK/berth-cmd.ms") |"
        echo "| \`podman run -d -p\` (cached image) → first 200 from the published port | ${MP:--} | $(runs "$WORK/podman.ms") ${NOTE[podman]:-} |"
        echo
        echo "berth/podman (medians): **$RATIO** (goal: berth under 1 s; Cloud Foundry takes tens of seconds)."
} | tee "$REPORT"
log "report: $REPORT"
[ -z "${NOTE[berth]:-}" ] && [ -z "${NOTE[podman]:-}" ]
