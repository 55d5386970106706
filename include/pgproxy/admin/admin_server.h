#pragma once

#include <cstddef>
#include <vector>

#include "pgproxy/config/config.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/pool/shared_pools.h"
#include "pgproxy/upstream/backend_table.h"

struct event_base;
struct evhttp;
struct evhttp_bound_socket;
struct evhttp_request;

namespace pgproxy::admin {

// The admin HTTP endpoint, served by every worker from the admin socket the master bound:
// GET /metrics (Prometheus), /healthz, /readyz. Bounded requests (8 KiB of headers, no body,
// 5 s), optional bearer token. It only reads shared memory: it never touches the data path.
class AdminServer {
 public:
  AdminServer(event_base* base, int fd, const config::Config& cfg, metrics::Registry& registry,
              const upstream::BackendTable& backends,
              const std::vector<std::vector<std::size_t>>& backend_slots,
              const pool::SharedPools* pools = nullptr);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
  bool ok() const { return bound_ != nullptr; }

 private:
  static void handle(evhttp_request* req, void* arg);
  void respond(evhttp_request* req);

  evhttp* http_ = nullptr;
  evhttp_bound_socket* bound_ = nullptr;
  const config::Config& cfg_;
  metrics::Registry& registry_;
  const upstream::BackendTable& backends_;
  const std::vector<std::vector<std::size_t>>& backend_slots_;
  const pool::SharedPools* pools_;
};

}  // namespace pgproxy::admin
