#!/usr/bin/env bash
# Runs every libFuzzer target (FUZZ_TARGETS in Makefile.am) for $FUZZ_SECONDS (default 60) under
# ASan+UBSan, starting from its checked-in corpus, two at a time (the machine has two cores and
# nothing else runs meanwhile). Builds them with clang in $FUZZ_BUILD_DIR (default build-fuzz).
# Writes an automake-style result per target into RESULTS_DIR (argument; default
# build/tests/fuzz-run) so scripts/test-summary.sh counts them. A crash input is kept there as
# TARGET-crash-* and its log tail printed; add it to tests/fuzz/corpus/TARGET once fixed.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
build=${FUZZ_BUILD_DIR:-build-fuzz}
out=${1:-build/tests/fuzz-run}
read -r -a targets <<<"$(sed -n 's/^FUZZ_TARGETS = //p' Makefile.am)"
rm -rf "$out"
mkdir -p "$build" "$out"
out=$(cd "$out" && pwd)

result() {  # target PASS|FAIL
  printf ':test-result: %s\n' "$2" >"$out/fuzz_$1.trs"
  echo "$2: fuzz $1 (${seconds}s)"
}

if [ ! -f "$build/Makefile" ] || [ configure -nt "$build/Makefile" ]; then
  if ! (cd "$build" && ../configure --quiet CC=clang CXX=clang++ --enable-fuzzing) \
    >"$out/configure.log" 2>&1; then
    cat "$out/configure.log"
    for t in "${targets[@]}"; do result "$t" FAIL; done
    exit 1
  fi
fi
programs=()
for t in "${targets[@]}"; do programs+=("tests/fuzz/${t}_fuzz"); done
if ! make -C "$build" -j2 --no-print-directory "${programs[@]}" >"$out/build.log" 2>&1; then
  tail -n 60 "$out/build.log"
  for t in "${targets[@]}"; do result "$t" FAIL; done
  exit 1
fi

run() {  # target
  local t=$1 work
  work=$(mktemp -d)
  # New inputs go to a scratch directory first: the checked-in corpus is only read.
  if "$build/tests/fuzz/${t}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/$t-" "$work" "tests/fuzz/corpus/$t" \
    >"$out/$t.log" 2>&1; then
    result "$t" PASS
  else
    result "$t" FAIL
    tail -n 40 "$out/$t.log"
  fi
  rm -rf "$work"
}

status=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run "${targets[$i]}" &
  first=$!
  if [ $((i + 1)) -lt ${#targets[@]} ]; then
    run "${targets[$((i + 1))]}"
  fi
  wait $first
done
grep -q FAIL "$out"/*.trs && status=1
exit $status
