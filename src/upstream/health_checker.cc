#include "pgproxy/upstream/health_checker.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/log/loop_flusher.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/upstream/login_probe.h"

namespace pgproxy::upstream {
namespace {

struct Probe {
  event_base* base = nullptr;
  evdns_base* dns = nullptr;
  BackendTable* table = nullptr;
  std::size_t slot = kNoBackend;
  std::string mapping;
  config::Backend backend;
  config::HealthCheck hc;
  event* timer = nullptr;  // the next check, or the deadline of the one running
  bufferevent* bev = nullptr;
  // After an 'S' the check has its answer, but a postmaster logs "could not accept SSL
  // connection" for a client that then just closes. So the probe completes a TLS handshake
  // (nothing verified, nothing sent) and ends it with close_notify, which PostgreSQL does not log,
  // as it does not log a connection that closes after 'N'.
  SSL_CTX* tls = nullptr;
  SSL* ssl = nullptr;
  int fd = -1;
  event* io = nullptr;
  // Logged-in checks (health_check.user): the password, read once from password_file.
  std::unique_ptr<LoginProbe> login;
  std::string password;
};

timeval toTimeval(std::uint64_t ms) {
  return timeval{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
}

void release(Probe& p) {
  if (p.bev) {
    bufferevent_free(p.bev);
    p.bev = nullptr;
  }
  if (p.io) {
    event_free(p.io);
    p.io = nullptr;
  }
  if (p.ssl) {
    SSL_free(p.ssl);
    p.ssl = nullptr;
  }
  if (p.fd >= 0) {
    ::close(p.fd);
    p.fd = -1;
  }
  p.login.reset();
  timeval tv = toTimeval(p.hc.interval_ms);
  evtimer_add(p.timer, &tv);
}

void record(Probe& p, bool ok, const std::string& why, int err) {
  const std::string key = p.backend.key();
  if (ok) {
    if (p.table->recordCheckSuccess(p.slot, p.hc.rise)) {
      LOG_INFO("backend %s of \"%s\" is up again (health check)", key.c_str(), p.mapping.c_str());
    }
  } else if (p.table->recordFailure(p.slot, p.hc.fall, err)) {
    LOG_WARN("backend %s of \"%s\" is down: health check: %s", key.c_str(), p.mapping.c_str(),
             why.c_str());
  } else {
    LOG_DEBUG("health check of %s failed: %s", key.c_str(), why.c_str());
  }
}

void finish(Probe& p, bool ok, const std::string& why, int err) {
  record(p, ok, why, err);
  release(p);
}

// The polite end of a check that got 'S' (see Probe): drive the handshake, then close_notify.
void onTlsIo(evutil_socket_t, short, void* arg) {
  auto& p = *static_cast<Probe*>(arg);
  ERR_clear_error();
  int r = SSL_do_handshake(p.ssl);
  if (r != 1) {
    int e = SSL_get_error(p.ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      event_del(p.io);
      event_assign(p.io, p.base, p.fd, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE, onTlsIo, &p);
      event_add(p.io, nullptr);
      return;
    }
    ERR_clear_error();
    release(p);  // the answer was already counted; this was only courtesy
    return;
  }
  SSL_shutdown(p.ssl);  // a small record: the socket's empty send buffer takes it at once
  release(p);
}

// Logged-in check: feed the server's bytes to the LoginProbe and send what it answers.
void onLoginRead(bufferevent* bev, void* arg) {
  auto& p = *static_cast<Probe*>(arg);
  evbuffer* in = bufferevent_get_input(bev);
  std::size_t n = evbuffer_get_length(in);
  std::string bytes(n, '\0');
  evbuffer_remove(in, bytes.data(), n);
  LoginProbe::Step s = p.login->feed(bytes);
  if (s.kind == LoginProbe::Step::kContinue) {
    bufferevent_write(bev, s.send.data(), s.send.size());
    return;
  }
  if (s.kind == LoginProbe::Step::kFailed) {
    finish(p, false, s.error, s.sqlstate == "57P03" ? EAGAIN : EPROTO);
    return;
  }
  // Terminate goes out directly: freeing the bufferevent would drop a queued write.
  (void)::send(bufferevent_getfd(bev), s.send.data(), s.send.size(), MSG_NOSIGNAL);
  Role before = p.table->setRole(p.slot, s.role);
  if (before != s.role && before != Role::kUnknown) {
    LOG_WARN("backend %s of \"%s\" is now %s (was %s)", p.backend.key().c_str(), p.mapping.c_str(),
             roleName(s.role), roleName(before));
  }
  finish(p, true, "", 0);
}

void onRead(bufferevent* bev, void* arg) {
  auto& p = *static_cast<Probe*>(arg);
  char answer = 0;
  bufferevent_read(bev, &answer, 1);
  if (answer != 'S' || !p.tls) {
    bool ok = answer == 'S' || answer == 'N';
    finish(p, ok, ok ? "" : "answered the SSLRequest with something other than S or N", EPROTO);
    return;
  }
  record(p, true, "", 0);
  p.fd = bufferevent_getfd(bev);
  bufferevent_setfd(bev, -1);
  bufferevent_free(bev);
  p.bev = nullptr;
  p.ssl = SSL_new(p.tls);
  if (!p.ssl || SSL_set_fd(p.ssl, p.fd) != 1) {
    release(p);
    return;
  }
  SSL_set_connect_state(p.ssl);
  p.io = event_new(p.base, p.fd, EV_WRITE, onTlsIo, &p);
  onTlsIo(p.fd, EV_WRITE, &p);  // the deadline timer still runs: a stuck handshake is released
}

void onEvent(bufferevent* bev, short what, void* arg) {
  auto& p = *static_cast<Probe*>(arg);
  if (what & BEV_EVENT_CONNECTED) {
    std::string req = p.login ? p.login->start() : proto::buildSslRequest();
    bufferevent_write(bev, req.data(), req.size());
    return;
  }
  int err = EVUTIL_SOCKET_ERROR();
  std::string why;
  if (int dnsErr = bufferevent_socket_get_dns_error(bev); dnsErr != 0) {
    why = std::string("cannot resolve host name: ") + evutil_gai_strerror(dnsErr);
  } else if (what & BEV_EVENT_EOF) {
    why = "closed the connection without answering";
    err = ECONNRESET;
  } else {
    why = base::errnoText(err);
  }
  finish(p, false, why, err);
}

void onTimer(evutil_socket_t, short, void* arg) {
  auto& p = *static_cast<Probe*>(arg);
  if (p.bev) {
    finish(p, false, "no answer within " + std::to_string(p.hc.timeout_ms) + " ms", ETIMEDOUT);
    return;
  }
  if (p.ssl) {
    release(p);  // the courtesy handshake took too long; the answer was already counted
    return;
  }
  p.bev = bufferevent_socket_new(p.base, -1, BEV_OPT_CLOSE_ON_FREE);
  if (!p.hc.user.empty()) {
    p.login = std::make_unique<LoginProbe>(p.hc.user, p.password, p.hc.database);
  }
  bufferevent_setcb(p.bev, p.login ? onLoginRead : onRead, nullptr, onEvent, &p);
  bufferevent_enable(p.bev, EV_READ);
  timeval tv = toTimeval(p.hc.timeout_ms);
  evtimer_add(p.timer, &tv);
  // Errors may be reported through onEvent before this returns.
  bufferevent_socket_connect_hostname(p.bev, p.dns, AF_UNSPEC, p.backend.host.c_str(),
                                      p.backend.port);
}

void onStop(evutil_socket_t, short, void* arg) {
  event_base_loopbreak(static_cast<event_base*>(arg));
}

// The health user's password: the first line of password_file.
std::string readPassword(const config::HealthCheck& hc, const std::string& mapping) {
  if (hc.password_file.empty()) {
    return "";
  }
  FILE* f = std::fopen(hc.password_file.c_str(), "r");
  if (!f) {
    LOG_ERROR("health checks of \"%s\": cannot read password_file \"%s\": %s", mapping.c_str(),
              hc.password_file.c_str(), base::errnoText(errno).c_str());
    return "";
  }
  char buf[1024];
  std::string line = std::fgets(buf, sizeof(buf), f) ? buf : "";
  std::fclose(f);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
    line.pop_back();
  }
  OPENSSL_cleanse(buf, sizeof(buf));
  return line;
}

}  // namespace

int runHealthChecker(const config::Config& cfg, BackendTable& table) {
  std::signal(SIGPIPE, SIG_IGN);
  event_base* base = event_base_new();
  if (!base) {
    return 1;
  }
  auto log_flusher = std::make_unique<log::LoopFlusher>(base);
  evdns_base* dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
  if (!dns) {
    dns = evdns_base_new(base, 0);
    evdns_base_load_hosts(dns, nullptr);
  }
  SSL_CTX* tls = SSL_CTX_new(TLS_client_method());
  if (tls) {
    SSL_CTX_set_verify(tls, SSL_VERIFY_NONE, nullptr);
  }
  std::vector<std::unique_ptr<Probe>> probes;
  for (const auto& m : cfg.mappings) {
    if (!m.health.enabled) {
      continue;
    }
    for (const auto& b : m.backends) {
      auto p = std::make_unique<Probe>();
      p->base = base;
      p->dns = dns;
      p->table = &table;
      p->slot = table.find(b.key());
      p->mapping = m.external;
      p->backend = b;
      p->hc = m.health;
      p->tls = tls;
      p->password = readPassword(m.health, m.external);
      p->timer = evtimer_new(base, onTimer, p.get());
      timeval now{0, 0};
      evtimer_add(p->timer, &now);
      probes.push_back(std::move(p));
    }
  }
  LOG_INFO("health checker running: %zu backend check(s)", probes.size());
  std::vector<event*> signals;
  for (int sig : {SIGTERM, SIGINT, SIGQUIT}) {
    event* ev = evsignal_new(base, sig, onStop, base);
    evsignal_add(ev, nullptr);
    signals.push_back(ev);
  }
  std::signal(SIGHUP, SIG_IGN);
  std::signal(SIGUSR1, SIG_IGN);
  event_base_dispatch(base);
  for (auto& p : probes) {
    release(*p);
    event_free(p->timer);
  }
  SSL_CTX_free(tls);
  for (event* ev : signals) {
    event_free(ev);
  }
  log_flusher.reset();  // what is still waiting is drained at exit, without the loop
  evdns_base_free(dns, 0);
  event_base_free(base);
  return 0;
}

}  // namespace pgproxy::upstream
