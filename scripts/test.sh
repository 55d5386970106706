#!/usr/bin/env bash
# The whole test suite from a clean clone: installs what is missing, builds, runs `make check`
# (unit tests, integration tests against real PostgreSQL clusters, fuzz-corpus replays), and ends
# with the line "N passed, N failed". Exits non-zero on any failure or when no test ran.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || exit 1
scripts/build.sh || exit 1
build=${BUILD_DIR:-build}
rm -rf "$build/test-results"
(cd "$build" && make -j2 --no-print-directory check)
check=$?
if [ $check -ne 0 ]; then
  for log in "$build"/tests/*.log "$build"/tests/fuzz/*.log; do
    [ -f "$log" ] || continue
    grep -q "FAIL\|Failure\|ERROR" "$log" || continue
    # The assertions first: a failing test's own logs can be long enough to push them out of a tail.
    echo "==== $log: failed tests and their assertions"
    grep -E -A 12 ": Failure$|^\[  FAILED  \]" "$log" | grep -v "^20[0-9][0-9]-" | head -n 150
    echo "==== $log (tail)"
    tail -n 120 "$log"
  done
fi
# The Debian package test builds, installs and purges the .deb (needs root or sudo). A second,
# concurrent run (the sanitizer build) may leave it out with PGPROXY_SKIP_PACKAGE_TEST=1; CI never does.
mkdir -p "$build/tests/package"
if [ "${PGPROXY_SKIP_PACKAGE_TEST:-}" = 1 ]; then
  rm -f "$build/tests/package/deb_test.trs"
  echo "package test left out (PGPROXY_SKIP_PACKAGE_TEST=1)"
elif tests/package/deb_test.sh "$build" >"$build/tests/package/deb_test.log" 2>&1; then
  echo ":test-result: PASS" >"$build/tests/package/deb_test.trs"
  echo "PASS: tests/package/deb_test.sh"
else
  echo ":test-result: FAIL" >"$build/tests/package/deb_test.trs"
  echo "FAIL: tests/package/deb_test.sh"
  cat "$build/tests/package/deb_test.log"
fi
# Every libFuzzer target for a bounded time under ASan+UBSan (scripts/fuzz.sh; about 4 minutes).
# A second, concurrent run may leave it out with PGPROXY_SKIP_FUZZ=1; CI never does.
if [ "${PGPROXY_SKIP_FUZZ:-}" = 1 ]; then
  rm -rf "$build/tests/fuzz-run"
  echo "fuzzing left out (PGPROXY_SKIP_FUZZ=1)"
else
  scripts/fuzz.sh "$build/tests/fuzz-run"
fi
# The benchmark's smoke mode keeps the harness working; it judges no speed.
if timeout 900 bench/run.sh --smoke --json "$build/tests/bench/smoke.json" >"$build/tests/bench_smoke.log" 2>&1; then
  echo ":test-result: PASS" >"$build/tests/bench_smoke.trs"
  echo "PASS: bench/run.sh --smoke"
else
  echo ":test-result: FAIL" >"$build/tests/bench_smoke.trs"
  echo "FAIL: bench/run.sh --smoke"
  tail -n 60 "$build/tests/bench_smoke.log"
fi
scripts/test-summary.sh "$build"
summary=$?
[ $check -eq 0 ] && [ $summary -eq 0 ]
