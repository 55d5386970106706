#pragma once

#include <vector>

#include "pgproxy/admin/control.h"
#include "pgproxy/cancel/registry.h"
#include "pgproxy/config/config.h"
#include "pgproxy/limits/client_limits.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/plugin/host.h"
#include "pgproxy/pool/shared_pools.h"
#include "pgproxy/tls/contexts.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::process {

struct WorkerSpec {
  const config::Config* config = nullptr;
  const tls::Contexts* tls = nullptr;  // built by the master with the config
  plugin::Host* plugins = nullptr;     // likewise (null: none); each worker has its own copy
  std::vector<int> listen_fds;         // inherited from the master
  std::vector<int> console_fds;        // likewise: admin.console, every connection the console
  // Of listen_fds, those whose connections start with a PROXY protocol header, with their
  // listen entry (proxy_protocol_from).
  std::vector<std::pair<int, config::ListenAddress>> proxy_listeners;
  cancel::Registry* cancels = nullptr;
  metrics::Registry* metrics = nullptr;
  upstream::BackendTable* backends = nullptr;
  limits::ClientLimits* client_limits = nullptr;
  // Counted in worker slot `metrics_slot`.
  pool::SharedPools* pools = nullptr;
  admin::Control* control = nullptr;  // DISABLE, DRAIN BACKEND: the operators' switches
  int admin_fd = -1;                  // the admin HTTP socket, when configured
  int ready_fd = -1;  // the worker writes one byte here once its listeners are armed
  unsigned slot = 0;
  unsigned generation = 0;
  std::size_t metrics_slot = 0;  // reserved by the master for this worker
  std::size_t limits_table = 0;  // likewise
};

// Runs one worker's event loop until it is told to stop; returns the process exit code.
// SIGTERM: close everything now. SIGQUIT: stop accepting, exit when the last session ends.
int runWorker(const WorkerSpec& spec);

}  // namespace pgproxy::process
