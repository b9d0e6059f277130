# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# What the bench scripts share. Sourced after they set BENCH_NAME, REPO, BERTH and OUT (and TOOLS for
# has_tool).

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
die() {
        log "error: $*"
        exit 1
}
has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }

# bench_init WHY: root is required (WHY says for what); BERTH must be built; BERTH and OUT become absolute;
# COMMIT is the commit reported, taken now (HEAD may move while the benchmark runs).
bench_init() {
        [ "$(id -u)" = 0 ] || die "run as root ($1)"
        [ -x "$BERTH" ] || die "$BERTH is not built (run make, or set BERTH)"
        BERTH=$(cd "$(dirname "$BERTH")" && pwd)/$(basename "$BERTH")
        mkdir -p "$OUT"
        OUT=$(cd "$OUT" && pwd)
        COMMIT=${BENCH_COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}
        if [ -z "${BENCH_COMMIT:-}" ] &&
                [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
                COMMIT="$COMMIT (work tree modified)"
        fi
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# berth_up [LOG_LEVEL]: `berth up` on data dir D with config CFG and DOMAIN on free ports (sets API_PORT,
# ROUTER_PORT, CELL_PORT, API and ROUTER, the router's base URL), in the background (UP_PID; its log
# WORK/up.log, BERTH_LOG_LEVEL=LOG_LEVEL when given); waits for the API and the admin password, logs in and
# enables diego_docker.
berth_up() {
        API_PORT=$(free_port)
        ROUTER_PORT=$(free_port)
        CELL_PORT=$(free_port)
        API=http://127.0.0.1:$API_PORT
        ROUTER=http://127.0.0.1:$ROUTER_PORT/
        log "starting berth up (data dir $D, API $API, router $ROUTER)"
        env ${1:+BERTH_LOG_LEVEL="$1"} "$BERTH" --data-dir "$D" --config "$CFG" up --api-port "$API_PORT" \
                --router-port "$ROUTER_PORT" --cell-port "$CELL_PORT" --domain "$DOMAIN" \
                >"$WORK/up.log" 2>&1 </dev/null &
        UP_PID=$!
        for _ in $(seq 600); do
                kill -0 "$UP_PID" 2>/dev/null || die "berth up exited"
                curl -fsS -o /dev/null --max-time 2 "$API/v3/info" 2>/dev/null && break
                sleep 0.1
        done
        for _ in $(seq 100); do
                [ -s "$D/admin-password" ] && break
                sleep 0.1
        done
        "$BERTH" login -a "$API" -u admin -p "$(cat "$D/admin-password")" >/dev/null
        "$BERTH" enable-feature-flag diego_docker >/dev/null
}

# berth_up_stop: SIGTERM to berth up (it drains its cell), SIGKILL after 60 s.
berth_up_stop() {
        if [ -n "${UP_PID:-}" ] && kill -0 "$UP_PID" 2>/dev/null; then
                kill -TERM "$UP_PID"
                for _ in $(seq 600); do
                        kill -0 "$UP_PID" 2>/dev/null || break
                        sleep 0.1
                done
                kill -0 "$UP_PID" 2>/dev/null && kill -KILL "$UP_PID"
                wait "$UP_PID" 2>/dev/null
        fi
}
