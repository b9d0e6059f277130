#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Run every benchmark in bench/ (or the ones named: `bench/run.sh pull start`), one after another, and collect
# their reports. Each bench/<name>.sh is self-contained: it installs what it needs, starts its own servers
# on 127.0.0.1, measures berth and its peers side by side in the same run, prints a table with ratios and
# writes it to bench/out/<name>-results.md. `make bench` builds berth first and runs this.
#
#   pull   image pull and unpack against podman, skopeo+umoci and the igzip floor (issue 2)
#   start  berth run --rm x100 against crun on a prepared bundle and podman run --rm; berth run --rm's
#          time by phase; density of 250 detached containers (issue 3)
#   push   berth push of a cached image to the first 200 through the router, against podman run -d -p to the
#          first 200 from its published port (issue 4)
#   converge  convergence sweep, placement throughput and heartbeat cost with 1,000 simulated cells and
#          100,000 instances, against Diego's alert threshold (issue 5)
#   recover  kill -9 of an app's instance to the first 200 from its replacement through the router, taken
#          apart step by step, against the instance's own start and a crun floor (issue 5)
#   router wrk through berth's router against nginx and HAProxy proxying the same backend, and the backend
#          directly, at 1, 64 and 1,000 connections (issue 6)
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${BENCH_OUT:-$PWD/bench/out}
export BENCH_OUT=$OUT

if [ $# -gt 0 ]; then
        names=("$@")
else
        # The known ones in this order, then any other bench/*.sh.
        names=(pull start push converge recover router)
        for f in bench/*.sh; do
                n=$(basename "$f" .sh)
                [[ " run ${names[*]} " == *" $n "* ]] || names+=("$n")
        done
fi

failed=()
for n in "${names[@]}"; do
        [ -x "bench/$n.sh" ] || {
                echo "bench: no bench/$n.sh" >&2
                exit 2
        }
        printf '\n######## bench/%s.sh ########\n' "$n"
        if ! "bench/$n.sh"; then
                failed+=("$n")
        fi
done

printf '\n######## summary ########\n'
for n in "${names[@]}"; do
        if [[ " ${failed[*]} " == *" $n "* ]]; then
                echo "$n: FAILED"
        else
                echo "$n: $OUT/$n-results.md"
        fi
done
[ ${#failed[@]} -eq 0 ]
