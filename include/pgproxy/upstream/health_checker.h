#pragma once

#include "pgproxy/config/config.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::upstream {

// Active health checks, in one helper process the master forks (not once per worker): every
// `interval` each backend of each mapping with a health_check gets a TCP connect and an
// SSLRequest, and an answer of S or N (a PostgreSQL postmaster) within `timeout` is a success.
// Results go to the shared backend table with the mapping's fall/rise; a change of state is
// logged once. Runs until SIGTERM; returns the exit code.
int runHealthChecker(const config::Config& cfg, BackendTable& table);

}  // namespace pgproxy::upstream
