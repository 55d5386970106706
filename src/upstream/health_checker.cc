#include "pgproxy/upstream/health_checker.h"

#include "pgproxy/base/clock.h"

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
#include "pgproxy/proto/proxy_header.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/upstream/dialer.h"
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
  bool with_lag = false;      // the mapping uses the replay lag (read_write_split, max_replica_lag)
  bool proxy_header = false;  // backend_proxy_protocol: a LOCAL header goes first
  event* timer = nullptr;     // the next check, or the deadline of the one running
  Lookup* lookup = nullptr;
  AddressList addresses;  // tried in turn until one accepts the connection
  bool connected = false;
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
  if (p.lookup) {
    p.lookup->cancel();
  }
  p.connected = false;
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
  p.table->noteCheck(p.slot, base::wallClockMs());
  if (ok) {
    if (p.table->recordCheckSuccess(p.slot, p.hc.rise)) {
      LOG_INFO("backend %s of \"%s\" is up again (health check)", key.c_str(), p.mapping.c_str());
    }
  } else if (p.table->recordFailure(p.slot, p.hc.fall, err, "health check: " + why)) {
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
  if (p.with_lag) {
    // Only the probes that ask: a mapping without lag rules sharing the backend must not blank
    // what another mapping's probe measured.
    p.table->setLag(p.slot, s.lag_ms);
  }
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

void connectNext(Probe& p);

void onEvent(bufferevent* bev, short what, void* arg) {
  auto& p = *static_cast<Probe*>(arg);
  if (what & BEV_EVENT_CONNECTED) {
    p.connected = true;
    std::string req = p.proxy_header ? proto::buildProxyV2(nullptr, nullptr) : std::string();
    req += p.login ? p.login->start() : proto::buildSslRequest();
    bufferevent_write(bev, req.data(), req.size());
    return;
  }
  if (!p.connected && !p.addresses.exhausted()) {
    connectNext(p);  // a name with several addresses: the next one, as libpq does
    return;
  }
  int err = EVUTIL_SOCKET_ERROR();
  std::string why;
  if (what & BEV_EVENT_EOF) {
    why = "closed the connection without answering";
    err = ECONNRESET;
  } else {
    why = base::errnoText(err);
  }
  finish(p, false, why, err);
}

void connectNext(Probe& p) {
  socklen_t len = 0;
  const sockaddr* sa = p.addresses.next(&len);
  if (p.bev) {
    bufferevent_free(p.bev);
  }
  p.bev = bufferevent_socket_new(p.base, -1, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(p.bev, p.login ? onLoginRead : onRead, nullptr, onEvent, &p);
  bufferevent_enable(p.bev, EV_READ);
  // Errors may be reported through onEvent before this returns.
  if (bufferevent_socket_connect(p.bev, sa, static_cast<int>(len)) != 0) {
    onEvent(p.bev, BEV_EVENT_ERROR, &p);
  }
}

void onResolved(void* arg, int gai_error, const evutil_addrinfo* ai) {
  auto& p = *static_cast<Probe*>(arg);
  if (gai_error == 0) {
    p.addresses.assign(ai);
  }
  if (gai_error != 0 || p.addresses.size() == 0) {
    finish(p, false,
           std::string("cannot resolve host name: ") +
               (gai_error ? evutil_gai_strerror(gai_error) : "no address"),
           EHOSTUNREACH);
    return;
  }
  connectNext(p);
}

void onTimer(evutil_socket_t, short, void* arg) {
  auto& p = *static_cast<Probe*>(arg);
  if (p.bev || p.lookup) {
    finish(p, false, "no answer within " + std::to_string(p.hc.timeout_ms) + " ms", ETIMEDOUT);
    return;
  }
  if (p.ssl) {
    release(p);  // the courtesy handshake took too long; the answer was already counted
    return;
  }
  if (!p.hc.user.empty()) {
    p.login = std::make_unique<LoginProbe>(p.hc.user, p.password, p.hc.database, p.with_lag);
  }
  timeval tv = toTimeval(p.hc.timeout_ms);
  evtimer_add(p.timer, &tv);
  // The answer may come before start() returns.
  Lookup::start(&p.lookup, p.dns, p.backend.host, p.backend.port, onResolved, &p);
}

void onStop(evutil_socket_t, short, void* arg) {
  event_base_loopbreak(static_cast<event_base*>(arg));
}

// `pgproxy -s reopen`: the master forwards SIGUSR1 so that, after logrotate, this process's lines
// go to the new file like everyone else's.
void onReopen(evutil_socket_t, short, void*) {
  if (auto st = log::reopen(); !st) {
    LOG_ERROR("%s", st.error().message.c_str());
  }
  LOG_DEBUG("log file reopened");
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
      p->with_lag = m.read_write_split || m.max_replica_lag_ms > 0;
      p->proxy_header = m.backend_proxy_protocol;
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
  for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) {
    event* ev = evsignal_new(base, sig, sig == SIGUSR1 ? onReopen : onStop, base);
    evsignal_add(ev, nullptr);
    signals.push_back(ev);
  }
  std::signal(SIGHUP, SIG_IGN);
  std::signal(SIGUSR2, SIG_IGN);
  // Forked with the master's signals blocked (their default actions would kill us); the handlers
  // are in place now.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  event_base_dispatch(base);
  for (auto& p : probes) {
    release(*p);
    event_free(p->timer);
  }
  SSL_CTX_free(tls);
  // Freeing a signal event restores the default action (fatal for SIGUSR1): block them first.
  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) {
    sigaddset(&handled, sig);
  }
  sigprocmask(SIG_BLOCK, &handled, nullptr);
  for (event* ev : signals) {
    event_free(ev);
  }
  log_flusher.reset();      // what is still waiting is drained at exit, without the loop
  evdns_base_free(dns, 1);  // 1: pending lookups get their callback and free themselves
  event_base_free(base);
  return 0;
}

}  // namespace pgproxy::upstream
