#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Convergence at scale (issue 5), with simulated cells: build/bench/berth-converge-bench runs the
# controller's real store (SQLite, WAL, on disk under a temporary directory), its real convergence plan and
# executor and its real heartbeat handler (over HTTP) against BENCH_CELLS simulated cells (default 1,000)
# served by one in-process HTTP server, with BENCH_INSTANCES instances (default 100,000) of BENCH_APPS apps
# (default 1,000). It measures:
#   placement   one sweep that must place every instance: deciding, inserting the rows, committing, and the
#               PUTs to the cells (in parallel, one keep-alive connection per cell); instances/s
#   heartbeats  every cell reports all its instances (first: each turns RUNNING; then: nothing changed),
#               then only changes (none), as cells do between full reports
#   noop sweep  a full sweep over every instance with nothing to do (median of 5)
# and compares the no-op sweep with Diego's: operators alert when a convergence pass of 250,000 LRPs takes
# 10 s on a 16-core BBS (docs/performance.md); berth's goal is under 1 s for 100,000 on 2 cores.
# Prints a table and writes it to bench/out/converge-results.md. Needs no root and no network beyond
# 127.0.0.1.
#
# Environment: BENCH_OUT (default bench/out), BENCH_CELLS, BENCH_INSTANCES, BENCH_APPS, BENCH_COMMIT (the
# commit to report; default HEAD), CONVERGE_BENCH (default build/bench/berth-converge-bench).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${BENCH_OUT:-$REPO/bench/out}
CELLS=${BENCH_CELLS:-1000}
INSTANCES=${BENCH_INSTANCES:-100000}
APPS=${BENCH_APPS:-1000}
BIN=${CONVERGE_BENCH:-$REPO/build/bench/berth-converge-bench}
COMMIT=${BENCH_COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}

log() { printf '[converge] %s\n' "$*" >&2; }

[ -x "$BIN" ] || {
        log "building $BIN"
        ninja -C "$REPO/build" bench/berth-converge-bench >&2
}
mkdir -p "$OUT"
work=$(mktemp -d "$OUT/converge.XXXXXX")
trap 'rm -rf "$work"' EXIT

load0=$(cut -d' ' -f1 /proc/loadavg)
log "$CELLS cells, $INSTANCES instances, $APPS apps (load average $load0)"
"$BIN" --cells "$CELLS" --instances "$INSTANCES" --apps "$APPS" --dir "$work" >"$work/raw"
load1=$(cut -d' ' -f1 /proc/loadavg)

declare -A v
while read -r k val; do
        v[$k]=$val
done <"$work/raw"

ms() { awk -v s="$1" 'BEGIN { printf "%.0f", s * 1000 }'; }
# Diego: 250,000 LRPs in 10 s on 16 cores = 1,563 LRPs per core-second; berth: instances / (sweep * 2 cores).
per_core=$(awk -v n="$INSTANCES" -v s="${v[noop_sweep_s_median]}" 'BEGIN { printf "%.0f", n / (s * 2) }')
ratio=$(awk -v p="$per_core" 'BEGIN { printf "%.0f", p / (250000 / (10 * 16)) }')

report="$OUT/converge-results.md"
{
        echo "Convergence with simulated cells: $(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT, $(nproc) CPUs,"
        echo "load average $load0 at start, $load1 at end. $CELLS cells, $INSTANCES instances, $APPS apps."
        echo
        echo "| what | value |"
        echo "|---|---:|"
        echo "| placement sweep: decide | $(ms "${v[placement_plan_load_s]}") + $(ms "${v[placement_plan_decide_s]}") ms (load + plan) |"
        echo "| placement sweep: insert the instance rows | $(ms "${v[placement_plan_insert_s]}") ms |"
        echo "| placement sweep: commit | $(ms "${v[placement_plan_commit_s]}") ms |"
        echo "| placement sweep: PUTs to the cells (parallel, keep-alive per cell) | $(ms "${v[placement_puts_s]}") ms |"
        echo "| placement sweep: total | $(ms "${v[placement_total_s]}") ms |"
        echo "| **placement throughput** | **${v[placement_per_s]} instances/s** |"
        echo "| spread over the cells (min / max per cell) | ${v[per_cell_min]} / ${v[per_cell_max]} |"
        echo "| heartbeats, first round (every instance turns RUNNING), $CELLS cells | $(ms "${v[heartbeats_first_s]}") ms (${v[heartbeat_first_ms_mean]} ms each) |"
        echo "| heartbeats, steady state (nothing changed), $CELLS cells | $(ms "${v[heartbeats_steady_s]}") ms (${v[heartbeat_steady_ms_mean]} ms each, max ${v[heartbeat_steady_ms_max]} ms) |"
        echo "| heartbeat body (mean) | $((v[heartbeat_body_bytes_mean] / 1024)) KiB |"
        echo "| heartbeats listing only changes (none), $CELLS cells (what a cell sends between its full reports every 10 s) | $(ms "${v[heartbeats_delta_s]}") ms (${v[heartbeat_delta_ms_mean]} ms each, max ${v[heartbeat_delta_ms_max]} ms) |"
        echo "| **no-op sweep over $INSTANCES instances** (median of 5; min / max) | **$(ms "${v[noop_sweep_s_median]}") ms** ($(ms "${v[noop_sweep_s_min]}") / $(ms "${v[noop_sweep_s_max]}")) |"
        echo "| of which reading the store / deciding | $(ms "${v[noop_sweep_load_s]}") / $(ms "${v[noop_sweep_decide_s]}") ms |"
        echo "| instances per core-second in a no-op sweep: berth / Diego's alert threshold (250,000 in 10 s on 16 cores) | $per_core / 1563 = **${ratio}x** |"
} >"$report"
cat "$report"
