#!/bin/sh
# Runs the CTest suites of a build directory and sums the CUnit results.
# usage: tests/run-tests.sh BUILD_DIR [unit|integration|all]
# Prints every suite's output (CUnit run summaries included) and ends with
# "N passed, N failed" (and skips, each with its reason above); exits 1 on failure.
set -u
build=${1:-build}
label=${2:-all}
log=$build/test-output.log

case $label in
  all) sel= ;;
  *) sel="-L $label" ;;
esac

# shellcheck disable=SC2086
ctest --test-dir "$build" $sel -j2 -V >"$log" 2>&1
rc=$?
# ctest -V prefixes each line with "<test number>: ".
sed -e 's/^[0-9]*: //' "$log"

sum() { grep -o "CORRAL-RESULT .*" "$log" | sed -n "s/.* $1=\([0-9]*\).*/\1/p" | awk '{s+=$1} END {print s+0}'; }
passed=$(sum passed)
failed=$(sum failed)
skipped=$(sum skipped)
# A suite that crashed or timed out reports no CORRAL-RESULT line: count it failed.
crashed=$(grep -c -E "^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*\*\*\*(Failed|Exception|Timeout)" "$log")
if [ "$crashed" -gt "$failed" ]; then failed=$crashed; fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi

echo
grep -E "SKIPPED " "$log" | sed -e 's/^[0-9]*: //' -e 's/^ */skipped: /'
echo "$passed passed, $failed failed, $skipped skipped"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
