#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <vector>

#include "pgproxy/admin/rest_api.h"
#include "pgproxy/config/config.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/pool/shared_pools.h"
#include "pgproxy/upstream/backend_table.h"

struct event_base;
struct evhttp;
struct evhttp_bound_socket;
struct evhttp_request;
struct evhttp_connection;
struct bufferevent;
typedef struct ssl_ctx_st SSL_CTX;

namespace pgproxy::admin {

// The admin HTTP endpoint, served by every worker from the admin socket the master bound:
// GET /metrics (Prometheus), /healthz, /readyz, and the REST API under /api/v1 (rest_api.h).
// Bounded requests (8 KiB of headers, 1 MiB of body for PUT /api/v1/config, 5 s), optional
// bearer token. It reads shared memory and sets the operators' switches: it never touches the
// data path.
class AdminServer {
 public:
  // `env.commands.sources` names the shared tables and the configuration (all set); `tls`:
  // HTTPS with this context (admin.certificate), else plain HTTP.
  AdminServer(event_base* base, int fd, ApiEnv env, SSL_CTX* tls = nullptr);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
  bool ok() const { return bound_ != nullptr; }

 private:
  static void handle(evhttp_request* req, void* arg);
  static bufferevent* plainConnection(event_base* base, void* ctx);
  static bufferevent* tlsConnection(event_base* base, void* ctx);
  void respond(evhttp_request* req);

  void api(evhttp_request* req, const std::string& path);
  // A request whose answer waits for the workers (SHOW CLIENTS, KILL ...).
  struct Pending {
    AdminServer* server = nullptr;
    evhttp_request* req = nullptr;
    evhttp_connection* conn = nullptr;
    ApiResponse response;
    std::unique_ptr<ControlGather> gather;
    std::unique_ptr<Poller> poller;
  };
  void send(evhttp_request* req, const ApiResponse& out);
  void answered(Pending* p, Gathered g);
  static void onClientGone(evhttp_connection* conn, void* arg);
  void forget(Pending* p);
  std::list<std::unique_ptr<Pending>> pending_;

  evhttp* http_ = nullptr;
  evhttp_bound_socket* bound_ = nullptr;
  ApiEnv env_;
  const config::Config& cfg_;
};

}  // namespace pgproxy::admin
