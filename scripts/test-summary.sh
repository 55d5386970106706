#!/usr/bin/env bash
# Counts test results in a build directory: GoogleTest XML for the gtest programs, automake's .trs
# for the others (a gtest program that crashed or leaked after its tests counts one more failure).
# Prints "N passed, N failed"; exits 1 if anything failed or nothing ran.
build=${1:-build}
passed=0
failed=0
for trs in $(find "$build/tests" -name '*.trs' 2>/dev/null | sort); do
  name=$(basename "$trs" .trs)
  result=$(sed -n 's/^:test-result: //p' "$trs" | head -n 1)
  xml="$build/test-results/$name.xml"
  if [ -f "$xml" ]; then
    header=$(grep -m1 '<testsuites ' "$xml")
    tests=$(sed -n 's/.*<testsuites tests="\([0-9]*\)".*/\1/p' <<<"$header")
    fails=$(sed -n 's/.* failures="\([0-9]*\)".*/\1/p' <<<"$header")
    errors=$(sed -n 's/.* errors="\([0-9]*\)".*/\1/p' <<<"$header")
    disabled=$(sed -n 's/.* disabled="\([0-9]*\)".*/\1/p' <<<"$header")
    skipped=$(grep -c '<skipped' "$xml")
    bad=$((fails + errors + skipped))
    passed=$((passed + tests - disabled - bad))
    failed=$((failed + bad))
    if [ "$result" != PASS ] && [ $bad -eq 0 ]; then
      failed=$((failed + 1))
    fi
  elif [ "$result" = PASS ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
