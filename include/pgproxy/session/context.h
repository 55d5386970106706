#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pgproxy/cancel/registry.h"
#include "pgproxy/config/config.h"
#include "pgproxy/limits/client_limits.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/metrics/recorder.h"
#include "pgproxy/plugin/host.h"
#include "pgproxy/pool/shared_pools.h"
#include "pgproxy/route/router.h"
#include "pgproxy/tls/contexts.h"
#include "pgproxy/upstream/backend_table.h"
#include "pgproxy/upstream/balancer.h"

struct event_base;
struct evdns_base;

namespace pgproxy::admin {
class Control;
}

namespace pgproxy::auth {
class SecretLookups;
}

namespace pgproxy::pool {
class PoolSet;
class SharedPools;
}  // namespace pgproxy::pool

namespace pgproxy::session {

class Session;

// What a worker lends its sessions: the loop, the config generation it serves, the router, the
// shared cancel registry, and the session list it keeps for draining.
struct Context {
  event_base* base = nullptr;
  evdns_base* dns = nullptr;
  const config::Config* config = nullptr;
  const route::Router* router = nullptr;
  const tls::Contexts* tls = nullptr;
  plugin::Host* plugins = nullptr;  // the Lua plugins (null: none)
  cancel::Registry* cancels = nullptr;
  metrics::Registry* metrics_registry = nullptr;
  upstream::BackendTable* backends = nullptr;
  limits::ClientLimits* client_limits = nullptr;
  pool::PoolSet* pools = nullptr;             // this worker's pools
  pool::SharedPools* shared_pools = nullptr;  // pool caps over all workers, attached to our slot
  auth::SecretLookups* secrets = nullptr;     // auth.query's lookups and cache; null without it
  admin::Control* control = nullptr;          // DISABLE, DRAIN BACKEND (console, REST API)
  std::vector<std::vector<std::size_t>> backend_slots;  // [mapping][backend] → table index
  std::vector<upstream::Balancer> balancers;            // one per mapping, this worker's state
  // The balancer's candidates, reused by every pick (a read/write split picks per transaction).
  std::vector<upstream::Candidate> candidates;
  std::uint64_t rng = 0x9e3779b97f4a7c15ull;  // random balance (seeded per worker)
  metrics::Recorder metrics;                  // this worker's slot
  std::vector<std::size_t> mapping_metric;    // config mapping index → metrics mapping index
  std::uint64_t next_session_id = 1;
  std::size_t active_sessions = 0;
  Session* sessions = nullptr;  // intrusive list head
  // Called after a session is destroyed (the worker exits when draining and this reaches zero).
  void (*on_session_closed)(Context*) = nullptr;
  // Called when a session leaves its handshake (the worker may resume accepting: max_handshakes).
  void (*on_handshake_done)(Context*) = nullptr;
  void* owner = nullptr;  // the worker, for the callbacks
  int master_pid = 0;     // the master that forked this worker (the console's RELOAD, SHUTDOWN)
  std::size_t metrics_slot = 0;  // this worker's slot: its part of the console's client ids
  // Per-worker budget for cancels fanned out to passthrough sessions (token bucket).
  double cancel_tokens = 0;
  std::uint64_t cancel_tokens_at_ms = 0;
};

}  // namespace pgproxy::session
