#pragma once

#include <string>

#include "pgproxy/base/result.h"
#include "pgproxy/config/config.h"
#include "pgproxy/process/cli.h"

namespace pgproxy::process {

// Runs pgproxy in the foreground as the master process (or detached with -d). Returns the exit
// code.
int runMaster(const Options& opts);

// `pgproxy -t`: prints one verdict line, returns the exit code.
int testConfig(const Options& opts);

// What -t checks of a configuration's text beyond its syntax: the files it names are readable,
// its TLS contexts build. The error lists every problem, one per line ("name:line:col: ..."
// where the loader knows where). Also the REST API's PUT /api/v1/config.
base::Result<config::Config> loadForServing(const std::string& text, const std::string& name);

// `pgproxy -s NAME`: signals the running master, returns the exit code.
int sendSignal(const Options& opts);

}  // namespace pgproxy::process
