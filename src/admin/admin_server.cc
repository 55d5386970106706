#include "pgproxy/admin/admin_server.h"

#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <openssl/ssl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config.h"
#include "pgproxy/admin/dashboard.h"
#include "pgproxy/admin/readiness.h"
#include "pgproxy/log/log.h"

namespace pgproxy::admin {
namespace {

constexpr std::size_t kMaxHeaders = 8192;
constexpr std::size_t kMaxBody = 1024 * 1024;  // a configuration file
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

AdminServer::AdminServer(event_base* base, int fd, ApiEnv env, SSL_CTX* tls)
    : env_(std::move(env)), cfg_(*env_.commands.sources.config) {
  http_ = evhttp_new(base);
  evhttp_set_bevcb(http_, tls ? tlsConnection : plainConnection, tls);
  evhttp_set_max_headers_size(http_, kMaxHeaders);
  evhttp_set_max_body_size(http_, kMaxBody);
  evhttp_set_timeout(http_, kTimeoutSeconds);
  // Every method reaches the handler, which answers 405 itself with an Allow header.
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                        EVHTTP_REQ_PATCH);
  evhttp_set_gencb(http_, handle, this);
  // A worker retiring on a reload frees its evhttp at once: what the kernel has taken is still
  // delivered after close, what evhttp still held is not, so a page larger than one write would
  // arrive torn. Connections inherit the listener's send buffer, made room for a whole page (up
  // to net.core.wmem_max), and write it in one call (plainConnection, tlsConnection).
  int sndbuf = 1 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  bound_ = evhttp_accept_socket_with_handle(http_, fd);
  if (!bound_) {
    LOG_ERROR("cannot serve the admin listener on inherited socket %d", fd);
  }
}

AdminServer::~AdminServer() {
  for (auto& p : pending_) {
    evhttp_connection_set_closecb(p->conn, nullptr, nullptr);
  }
  pending_.clear();
  if (http_) {
    evhttp_free(http_);  // closes this worker's copy of the admin socket
  }
}

namespace {
// libevent writes at most 16 KiB per call by default; a /metrics page is larger.
bufferevent* writesWholePages(bufferevent* bev) {
  if (bev) {
    bufferevent_set_max_single_write(bev, 1 << 20);
  }
  return bev;
}
}  // namespace

bufferevent* AdminServer::plainConnection(event_base* base, void*) {
  return writesWholePages(bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE));
}

bufferevent* AdminServer::tlsConnection(event_base* base, void* ctx) {
  SSL* ssl = SSL_new(static_cast<SSL_CTX*>(ctx));
  if (!ssl) {
    return nullptr;  // evhttp drops the connection
  }
  return writesWholePages(bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                         BEV_OPT_CLOSE_ON_FREE));
}

void AdminServer::handle(evhttp_request* req, void* arg) {
  static_cast<AdminServer*>(arg)->respond(req);
}

void AdminServer::respond(evhttp_request* req) {
  const char* path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
  std::string p = path ? path : "/";
  if (p == "/" || p == "/index.html") {
    auto method = evhttp_request_get_command(req);
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
      reply(req, 405, "Method Not Allowed", "text/plain; charset=utf-8", "use GET\n");
      return;
    }
    // Its script is inline and it talks to this origin only.
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Security-Policy",
                      "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'");
    reply(req, 200, "OK", "text/html; charset=utf-8", std::string(dashboardPage()));
    return;
  }
  if (!cfg_.admin.token.empty() &&
      !tokenMatches(evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization"),
                    cfg_.admin.token)) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                      "Bearer realm=\"pgproxy\"");
    reply(req, 401, "Unauthorized", "text/plain; charset=utf-8", "bearer token required\n");
    return;
  }
  if (p.rfind("/api/v1/", 0) == 0) {
    api(req, p.substr(7));
    return;
  }
  bool known = p == "/metrics" || p == "/healthz" || p == "/readyz";
  if (!known) {
    reply(req, 404, "Not Found", "text/plain; charset=utf-8",
          "not found: try /metrics, /healthz, /readyz or /api/v1/openapi.json\n");
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
  const Sources& src = env_.commands.sources;
  metrics::Snapshot snap = src.metrics->snapshot();
  snap.backends = upstream::sampleBackends(cfg_, *src.backends, *src.backend_slots);
  if (p == "/metrics" && !snap.consistent) {
    // Folds of exited workers' counts kept running: better no page than counts that go back.
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8",
          "metrics are being folded after a worker exit; retry\n");
    return;
  }
  if (p == "/metrics") {
    std::string body = metrics::renderPrometheus(snap, PACKAGE_VERSION);
    if (src.pools) {
      src.pools->render(body, cfg_.metrics.max_pools);
    }
    reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
    return;
  }
  Readiness r = readiness(snap, cfg_);
  reply(req, r.ready ? 200 : 503, r.ready ? "OK" : "Service Unavailable", "application/json",
        r.json());
}

void AdminServer::api(evhttp_request* req, const std::string& path) {
  ApiRequest r;
  switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET:
      r.method = ApiRequest::Method::kGet;
      break;
    case EVHTTP_REQ_HEAD:
      r.method = ApiRequest::Method::kHead;
      break;
    case EVHTTP_REQ_POST:
      r.method = ApiRequest::Method::kPost;
      break;
    case EVHTTP_REQ_PUT:
      r.method = ApiRequest::Method::kPut;
      break;
    default:
      r.method = ApiRequest::Method::kOther;
      break;
  }
  // Names in the path may be percent-encoded ("%5B::1%5D:5432").
  std::size_t decoded_len = 0;
  char* decoded = evhttp_uridecode(path.c_str(), 0, &decoded_len);
  if (!decoded) {
    reply(req, 400, "Bad Request", "application/json", "{\"error\":\"bad path\"}");
    return;
  }
  r.path.assign(decoded, decoded_len);
  std::free(decoded);
  const char* query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
  r.query = query ? query : "";
  evbuffer* in = evhttp_request_get_input_buffer(req);
  r.body.resize(evbuffer_get_length(in));
  evbuffer_copyout(in, r.body.data(), r.body.size());
  r.token_configured = !cfg_.admin.token.empty();
  r.authorized = r.token_configured;  // respond() refused the request without it
  char host[64] = "";
  ev_uint16_t port = 0;
  char* peer = nullptr;
  evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &port);
  std::snprintf(host, sizeof(host), "%s:%u", peer ? peer : "?", static_cast<unsigned>(port));
  env_.commands.who = std::string("the REST API from ") + host;
  ApiResponse out = handleApi(r, env_);
  if (out.ask || out.until) {
    // The workers answer within their deadline; the request waits for them without holding the
    // loop. A client that hangs up meanwhile cancels it (the request is gone with it).
    auto pending = std::make_unique<Pending>();
    Pending* p = pending.get();
    p->server = this;
    p->req = req;
    p->conn = evhttp_request_get_connection(req);
    p->response = std::move(out);
    pending_.push_back(std::move(pending));
    evhttp_connection_set_closecb(p->conn, onClientGone, p);
    auto done = [p](Gathered g) { p->server->answered(p, std::move(g)); };
    // execute() asks for neither without the means to answer (ask_workers, poll_until).
    if (p->response.ask) {
      p->gather = env_.commands.ask_workers(*p->response.ask, done);
    } else {
      p->poller = env_.commands.poll_until(p->response.until, [done] { done(Gathered{}); });
    }
    return;
  }
  send(req, out);
}

void AdminServer::send(evhttp_request* req, const ApiResponse& out) {
  if (!out.allow.empty()) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", out.allow.c_str());
  }
  const char* reason = out.status == 200 ? "OK" : out.status < 500 ? "Client Error" : "Error";
  reply(req, out.status, reason, "application/json", out.body + "\n");
}

void AdminServer::answered(Pending* p, Gathered g) {
  evhttp_connection_set_closecb(p->conn, nullptr, nullptr);
  send(p->req, completeApi(p->response, g));
  forget(p);
}

void AdminServer::onClientGone(evhttp_connection*, void* arg) {
  auto* p = static_cast<Pending*>(arg);
  p->server->forget(p);
}

void AdminServer::forget(Pending* p) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->get() == p) {
      pending_.erase(it);  // destroys the gather (may be the caller: it touches nothing after)
      return;
    }
  }
}

}  // namespace pgproxy::admin
