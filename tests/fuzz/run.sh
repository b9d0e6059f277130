#!/bin/sh
# Run every libFuzzer harness in BUILD for SECONDS each, seeded with its corpus. Crashes land in
# tests/fuzz/regressions/<name>/ (fix the bug, keep the file: `make test` replays it from then on).
set -eu
build=${1:-build-fuzz}
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
status=0
for bin in "$build"/tests/fuzz/fuzz_*; do
        [ -f "$bin" ] && [ -x "$bin" ] || continue
        name=$(basename "$bin")
        short=${name#fuzz_}
        work=$(mktemp -d)
        mkdir -p "$here/regressions/$short"
        cp -r "$here/corpus/$short/." "$work/" 2>/dev/null || true
        dict=""
        [ -f "$here/$short.dict" ] && dict="-dict=$here/$short.dict"
        echo "== $name for ${seconds}s"
        # shellcheck disable=SC2086
        if ! "$bin" -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30 $dict \
                -artifact_prefix="$here/regressions/$short/" "$work" >"$work.log" 2>&1; then
                echo "$name found a problem; see $work.log and tests/fuzz/regressions/$short/"
                tail -20 "$work.log"
                status=1
        fi
        rm -rf "$work"
done
exit $status
