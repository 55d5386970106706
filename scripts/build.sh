#!/usr/bin/env bash
# Bootstraps (when needed), configures and builds into $BUILD_DIR (default: build).
# Extra configure arguments come from $CONFIGURE_ARGS, e.g. CONFIGURE_ARGS=--enable-sanitizers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
  ./bootstrap >/dev/null
fi
build=${BUILD_DIR:-build}
mkdir -p "$build"
cd "$build"
# shellcheck disable=SC2086
if [ ! -f Makefile ] || [ ../configure -nt Makefile ] || [ "$(cat .configure-args 2>/dev/null)" != "${CONFIGURE_ARGS:-}" ]; then
  ../configure --quiet ${CONFIGURE_ARGS:-}
  echo "${CONFIGURE_ARGS:-}" >.configure-args
fi
make -j"$(nproc)" --no-print-directory
