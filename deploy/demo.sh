#!/bin/sh
# The demo: runs the most complete path that works today and says what it did.
set -eu
build=${1:-build}
echo "demo: corral $("$build"/corral version)"
echo "demo: components built: $(ls "$build"/bench 2>/dev/null | tr '\n' ' ')"
echo "demo: the end-to-end experiment demo is not built yet; running the unit tests instead."
tests/run-tests.sh "$build" unit
