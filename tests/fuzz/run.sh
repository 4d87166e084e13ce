#!/bin/sh
# Runs every fuzzer in BUILD_DIR/tests/fuzz for a bounded time (FUZZ_SECONDS each, 60 by
# default), starting from its seed corpus tests/fuzz/corpus/<name less "fuzz_">/ and its
# dictionary <that>.dict when present. New inputs go to a scratch directory, never into
# the repository. Exits non-zero when a fuzzer finds a crash, a leak or a hang; the
# input that did it is kept as BUILD_DIR/fuzz-artifacts/<fuzzer>-crash-*.
# usage: tests/fuzz/run.sh BUILD_DIR
set -u
build=${1:?usage: tests/fuzz/run.sh BUILD_DIR}
secs=${FUZZ_SECONDS:-60}
here=$(cd "$(dirname "$0")" && pwd)
art=$build/fuzz-artifacts
mkdir -p "$art"
ran=0
bad=0
for f in "$build"/tests/fuzz/fuzz_*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    name=$(basename "$f")
    short=${name#fuzz_}
    work=$(mktemp -d)
    set -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="$art/$name-"
    [ -f "$here/corpus/$short.dict" ] && set -- "$@" -dict="$here/corpus/$short.dict"
    set -- "$@" "$work"
    [ -d "$here/corpus/$short" ] && set -- "$@" "$here/corpus/$short"
    echo "== $name (${secs}s)"
    "$f" "$@" >"$build/$name.log" 2>&1
    rc=$?
    ran=$((ran + 1))
    if [ "$rc" -ne 0 ]; then
        bad=$((bad + 1))
        tail -n 60 "$build/$name.log"
        echo "fuzz: $name FAILED (exit $rc); log $build/$name.log, inputs in $art"
    else
        grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE)" "$build/$name.log"
        echo "fuzz: $name clean"
    fi
    rm -rf "$work"
done
if [ "$ran" -eq 0 ]; then
    echo "fuzz: no fuzzers in $build/tests/fuzz (build the fuzz_all target)" >&2
    exit 1
fi
echo "fuzz: $ran fuzzer(s) ran, $bad found a problem"
[ "$bad" -eq 0 ]
