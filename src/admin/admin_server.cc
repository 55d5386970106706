#include "pgproxy/admin/admin_server.h"

#include <event2/buffer.h>
#include <event2/http.h>

#include <cstring>
#include <string>

#include "config.h"
#include "pgproxy/admin/readiness.h"
#include "pgproxy/log/log.h"

namespace pgproxy::admin {
namespace {

constexpr std::size_t kMaxHeaders = 8192;
constexpr int kTimeoutSeconds = 5;

void reply(evhttp_request* req, int code, const char* reason, const char* type,
           const std::string& body) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", type);
  evhttp_add_header(headers, "Cache-Control", "no-store");
  evbuffer* buf = evbuffer_new();
  if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
    evbuffer_add(buf, body.data(), body.size());
  }
  evhttp_send_reply(req, code, reason, buf);
  evbuffer_free(buf);
}

// Constant time, so the token cannot be guessed byte by byte from response times.
bool tokenMatches(const char* header, const std::string& token) {
  std::string expected = "Bearer " + token;
  if (!header || std::strlen(header) != expected.size()) {
    return false;
  }
  unsigned char diff = 0;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(header[i] ^ expected[i]);
  }
  return diff == 0;
}

}  // namespace

AdminServer::AdminServer(event_base* base, int fd, const config::Config& cfg,
                         metrics::Registry& registry, const upstream::BackendTable& backends,
                         const std::vector<std::vector<std::size_t>>& backend_slots,
                         const pool::SharedPools* pools)
    : cfg_(cfg),
      registry_(registry),
      backends_(backends),
      backend_slots_(backend_slots),
      pools_(pools) {
  http_ = evhttp_new(base);
  evhttp_set_max_headers_size(http_, kMaxHeaders);
  evhttp_set_max_body_size(http_, 0);
  evhttp_set_timeout(http_, kTimeoutSeconds);
  // Every method reaches the handler, which answers 405 itself with an Allow header.
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                        EVHTTP_REQ_PATCH);
  evhttp_set_gencb(http_, handle, this);
  bound_ = evhttp_accept_socket_with_handle(http_, fd);
  if (!bound_) {
    LOG_ERROR("cannot serve the admin listener on inherited socket %d", fd);
  }
}

AdminServer::~AdminServer() {
  if (http_) {
    evhttp_free(http_);  // closes this worker's copy of the admin socket
  }
}

void AdminServer::handle(evhttp_request* req, void* arg) {
  static_cast<AdminServer*>(arg)->respond(req);
}

void AdminServer::respond(evhttp_request* req) {
  const char* path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
  std::string p = path ? path : "/";
  if (!cfg_.admin.token.empty() &&
      !tokenMatches(evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization"),
                    cfg_.admin.token)) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                      "Bearer realm=\"pgproxy\"");
    reply(req, 401, "Unauthorized", "text/plain; charset=utf-8", "bearer token required\n");
    return;
  }
  bool known = p == "/metrics" || p == "/healthz" || p == "/readyz";
  if (!known) {
    reply(req, 404, "Not Found", "text/plain; charset=utf-8",
          "not found: try /metrics, /healthz or /readyz\n");
    return;
  }
  auto method = evhttp_request_get_command(req);
  if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
    reply(req, 405, "Method Not Allowed", "text/plain; charset=utf-8", "use GET\n");
    return;
  }
  if (p == "/healthz") {
    reply(req, 200, "OK", "text/plain; charset=utf-8", "ok\n");
    return;
  }
  metrics::Snapshot snap = registry_.snapshot();
  snap.backends = upstream::sampleBackends(cfg_, backends_, backend_slots_);
  if (p == "/metrics" && !snap.consistent) {
    // Folds of exited workers' counts kept running: better no page than counts that go back.
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8",
          "metrics are being folded after a worker exit; retry\n");
    return;
  }
  if (p == "/metrics") {
    std::string body = metrics::renderPrometheus(snap, PACKAGE_VERSION);
    if (pools_) {
      pools_->render(body, cfg_.metrics.max_pools);
    }
    reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
    return;
  }
  Readiness r = readiness(snap, cfg_);
  reply(req, r.ready ? 200 : 503, r.ready ? "OK" : "Service Unavailable", "application/json",
        r.json());
}

}  // namespace pgproxy::admin
