#pragma once

#include "pgproxy/process/cli.h"

namespace pgproxy::process {

// Runs pgproxy in the foreground as the master process (or detached with -d). Returns the exit
// code.
int runMaster(const Options& opts);

// `pgproxy -t`: prints one verdict line, returns the exit code.
int testConfig(const Options& opts);

// `pgproxy -s NAME`: signals the running master, returns the exit code.
int sendSignal(const Options& opts);

}  // namespace pgproxy::process
