#!/usr/bin/env bash
# The TLS passthrough suites again with `splice: kernel` (the main integration run uses the
# default, user), so both ways of moving a passthrough session's bytes pass the same tests. Needs
# the BPF program to load (root, as under CI); pgproxy refuses to start otherwise, and the tests
# fail.
set -u
export PGPROXY_TEST_SPLICE=kernel
if [ -n "${GTEST_OUTPUT:-}" ]; then
  export GTEST_OUTPUT="${GTEST_OUTPUT}kernel_splice.sh.xml"  # its own file beside integration_tests'
fi
exec "$(dirname "${PGPROXY_BIN:-build/pgproxy}")/tests/integration_tests" \
  --gtest_filter='Routing.*:Cancel.*:Data.*:Splice.*:Workers.*:Timeouts.*:Backends.*:Hostile.*'
