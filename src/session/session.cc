#include "pgproxy/session/session.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <time.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <vector>

#include "pgproxy/admin/console.h"
#include "pgproxy/admin/control.h"
#include "pgproxy/audit/audit.h"
#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/access_log.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/listen_socket.h"
#include "pgproxy/pool/pool.h"
#include "pgproxy/proto/proxy_header.h"
#include "pgproxy/proto/startup.h"
#include "pgproxy/route/startup_route.h"
#include "pgproxy/session/pooled.h"
#include "pgproxy/tls/client_hello.h"

namespace pgproxy::session {
namespace {

// Raw bytes a ClientHello may take on the wire, records headers included.
constexpr std::size_t kMaxHelloWire = 64 * 1024;
// A refusal or cancel that the peer does not read is dropped after this long.
constexpr std::uint64_t kFlushTimeoutMs = 5000;
constexpr std::uint64_t kCancelTargetTimeoutMs = 5000;
// Cancels fanned out to passthrough sessions (we cannot see their keys) are rate-limited per
// worker, so a flood of bogus cancels cannot become a flood of connections to the backends.
constexpr double kCancelFanoutPerSecond = 50;
constexpr std::size_t kMaxCancelTargets = config::kMaxPeers + 1;

std::uint64_t nowUs() {
  return base::monotonicUs();
}

}  // namespace

void Session::accept(Context& ctx, int fd, const sockaddr* addr, int addrlen, bool console_only,
                     const config::ListenAddress* proxied) {
  // Global deny/allow: closed before a byte is read (a flood of these must not fill the log).
  // On a proxy_protocol listener only the named balancers may say whose a connection is; the
  // global lists then apply to the client the header names (readProxyHeader).
  bool admitted = proxied ? std::any_of(proxied->proxy_protocol_from.begin(),
                                        proxied->proxy_protocol_from.end(),
                                        [addr](const net::Cidr& c) { return c.contains(addr); })
                          : ctx.config->access.admits(addr);
  if (!admitted) {
    ::close(fd);
    ctx.metrics.add(metrics::Counter::kAccepted);
    ctx.metrics.closed(metrics::kUnknownMapping, Outcome::kDenied);
    LOG_DEBUG("connection from %s denied at accept%s", net::formatAddress(addr).c_str(),
              proxied ? " (not in proxy_protocol_from)" : "");
    auditDeniedAtAccept(addr, proxied ? "not in proxy_protocol_from" : "denied by allow/deny");
    return;
  }
  // Owned by ctx's list; deletes itself in close().
  Session* s = new Session(ctx, fd, addr, addrlen);
  s->console_only_ = console_only;
  s->proxy_header_due_ = proxied != nullptr;
}

Session::Session(Context& ctx, int fd, const sockaddr* addr, int addrlen)
    : ctx_(ctx), id_(ctx.next_session_id++), started_us_(nowUs()) {
  std::memcpy(&client_addr_, addr,
              std::min<std::size_t>(static_cast<std::size_t>(addrlen), sizeof(client_addr_)));
  next_ = ctx_.sessions;
  if (next_) {
    next_->prev_ = this;
  }
  ctx_.sessions = this;
  ++ctx_.active_sessions;
  ctx_.metrics.add(metrics::Counter::kAccepted);
  ctx_.metrics.gauge(metrics::Gauge::kActive, 1);
  ctx_.metrics.gauge(metrics::Gauge::kHandshaking, 1);
  handshaking_ = true;
  net::tuneConnectedSocket(fd, *ctx_.config);
  client_ = bufferevent_socket_new(ctx_.base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!client_) {
    ::close(fd);
    LOG_ERROR("session %llu: bufferevent_socket_new failed", static_cast<unsigned long long>(id_));
    close(Outcome::kError);
    return;
  }
  bufferevent_setcb(client_, onClientRead, onClientWrite, onClientEvent, this);
  // Until the splice starts we only ever need one startup packet or one ClientHello.
  bufferevent_setwatermark(client_, EV_READ, 0, kMaxHelloWire);
  bufferevent_enable(client_, EV_READ);
  armTimer(ctx_.config->handshake_timeout_ms);
  LOG_DEBUG("session %llu: accepted from %s", static_cast<unsigned long long>(id_), peer().c_str());
}

Session::~Session() {
  if (lookup_) {
    lookup_->cancel();
  }
  if (pooled_) {
    endPooled();
  }
  if (secret_wait_) {
    ctx_.secrets->cancel(*secret_wait_);
  }
  ctx_.cancels->release(cancel_slot_);
  ctx_.metrics.gauge(metrics::Gauge::kActive, -1);
  endHandshake();
  if (admitted_) {
    ctx_.metrics.admitted(metricIndex(), -1);
  }
  if (client_counted_) {
    ctx_.client_limits->removeSession(
        net::clientKey(reinterpret_cast<const sockaddr*>(&client_addr_)));
  }
  if (counted_active_) {
    ctx_.metrics.active(metricIndex(), -1);
    ctx_.backends->addActive(backendSlot(), -1);
  }
  if (timer_) {
    event_free(timer_);
  }
  if (backend_) {
    bufferevent_free(backend_);
  }
  if (client_) {
    bufferevent_free(client_);
  }
  for (SSL* ssl : {client_ssl_, backend_ssl_}) {
    if (ssl) {
      if (SSL_is_init_finished(ssl)) {
        SSL_shutdown(ssl);  // close_notify, best effort: the socket is closed right after
      }
      SSL_free(ssl);
    }
  }
  for (event* ev : {client_read_, client_write_, backend_read_, backend_write_}) {
    if (ev) {
      event_free(ev);
    }
  }
  for (int fd : {client_fd_, backend_fd_}) {
    if (fd >= 0) {
      ::close(fd);
    }
  }
  if (prev_) {
    prev_->next_ = next_;
  } else {
    ctx_.sessions = next_;
  }
  if (next_) {
    next_->prev_ = prev_;
  }
  --ctx_.active_sessions;
}

std::string Session::peer() const {
  return net::formatAddress(reinterpret_cast<const sockaddr*>(&client_addr_));
}

const char* Session::modeName() const {
  if (terminated()) {
    return "terminate";
  }
  switch (mode_) {
    case Mode::kPassthrough:
      return "passthrough";
    case Mode::kDirectTls:
      return "direct";
    case Mode::kPlaintext:
      return "plaintext";
    case Mode::kCancel:
      return "cancel";
    case Mode::kUnknown:
      break;
  }
  return "none";
}

std::size_t Session::metricIndex() const {
  return mapping_ == SIZE_MAX ? metrics::kUnknownMapping : ctx_.mapping_metric[mapping_];
}

void Session::setState(State s) {
  LOG_DEBUG("session %llu: state %d -> %d", static_cast<unsigned long long>(id_),
            static_cast<int>(state_), static_cast<int>(s));
  state_ = s;
}

void Session::armTimer(std::uint64_t ms) {
  if (!timer_) {
    timer_ = evtimer_new(ctx_.base, onTimer, this);
  }
  timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  evtimer_add(timer_, &tv);
}

// ---- client side ----------------------------------------------------------------------------

void Session::onClientRead(bufferevent*, void* arg) {
  auto* s = static_cast<Session*>(arg);
  switch (s->state_) {
    case State::kPreamble:
      s->handlePreamble();
      break;
    case State::kClientHello:
      s->handleClientHello();
      break;
    default:
      break;  // reading is disabled in the other states (the splice reads sockets directly)
  }
}

void Session::onClientWrite(bufferevent*, void* arg) {
  auto* s = static_cast<Session*>(arg);
  bool empty = evbuffer_get_length(bufferevent_get_output(s->client_)) == 0;
  if (s->state_ == State::kClosing) {
    if (empty) {
      s->close(s->outcome_);
    }
    return;
  }
}

void Session::onClientEvent(bufferevent*, short what, void* arg) {
  auto* s = static_cast<Session*>(arg);
  if (what & BEV_EVENT_ERROR) {
    LOG_DEBUG("session %llu: client socket error: %s", static_cast<unsigned long long>(s->id_),
              base::errnoText(EVUTIL_SOCKET_ERROR()).c_str());
  }
  s->close(Outcome::kClientClosedEarly);
}

bool Session::readProxyHeader() {
  evbuffer* in = bufferevent_get_input(client_);
  std::size_t look = std::min(evbuffer_get_length(in), proto::kMaxProxyHeader);
  const char* p = reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ssize_t>(look)));
  proto::ProxyHeader h = proto::parseProxyHeader(std::string_view(p ? p : "", p ? look : 0));
  switch (h.kind) {
    case proto::ProxyHeader::Kind::kNeedMore:
      return false;
    case proto::ProxyHeader::Kind::kInvalid:
      // Not PostgreSQL's protocol yet: nothing to answer in, as PostgreSQL behind HAProxy.
      LOG_INFO("session %llu: %s, from %s; closing", static_cast<unsigned long long>(id_), h.reason,
               peer().c_str());
      close(Outcome::kProtocolError);
      return false;
    case proto::ProxyHeader::Kind::kLocal:
      break;  // the balancer's own connection (its health check): its address stands
    case proto::ProxyHeader::Kind::kProxy:
      LOG_DEBUG("session %llu: PROXY v%d header from %s: client %s",
                static_cast<unsigned long long>(id_), h.version, peer().c_str(),
                net::formatAddress(reinterpret_cast<const sockaddr*>(&h.source)).c_str());
      client_addr_ = h.source;
      proxied_to_ = std::make_unique<sockaddr_storage>(h.destination);
      break;
  }
  evbuffer_drain(in, h.consumed);
  proxy_header_due_ = false;
  if (!ctx_.config->access.admits(reinterpret_cast<const sockaddr*>(&client_addr_))) {
    LOG_DEBUG("connection from %s (PROXY header) denied", peer().c_str());
    close(Outcome::kDenied);
    return false;
  }
  return true;
}

void Session::handlePreamble() {
  evbuffer* in = bufferevent_get_input(client_);
  if (proxy_header_due_ && !readProxyHeader()) {
    return;
  }
  while (state_ == State::kPreamble) {
    std::size_t len = evbuffer_get_length(in);
    std::size_t look = std::min(len, proto::kMaxStartupPacket);
    if (look == 0) {
      return;
    }
    const char* p = reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ssize_t>(look)));
    proto::Preamble pre = proto::classifyPreamble(std::string_view(p, look));
    switch (pre.kind) {
      case proto::PreambleKind::kNeedMore:
        return;
      case proto::PreambleKind::kInvalid:
        LOG_INFO("session %llu: %s from %s; closing", static_cast<unsigned long long>(id_),
                 pre.reason, peer().c_str());
        close(Outcome::kProtocolError);
        return;
      case proto::PreambleKind::kGssEncRequest:
        // pgproxy has no GSSAPI: 'N' tells the client to go on with TLS or plaintext.
        evbuffer_drain(in, 8);
        bufferevent_write(client_, "N", 1);
        continue;
      case proto::PreambleKind::kSslRequest: {
        evbuffer_drain(in, 8);
        if (console_only_) {
          // The console port speaks plaintext (HTTPS is admin.listen's): 'N', as PostgreSQL
          // without ssl, and a client with sslmode=prefer goes on in the clear.
          bufferevent_write(client_, "N", 1);
          continue;
        }
        if (evbuffer_get_length(in) > 0 && *evbuffer_pullup(in, 1) != proto::kTlsHandshakeRecord) {
          // CVE-2021-23214: bytes sent before our answer could be injected by a man in the middle.
          LOG_WARN(
              "session %llu: received unencrypted data after SSL request from %s; closing "
              "(possible man-in-the-middle attack)",
              static_cast<unsigned long long>(id_), peer().c_str());
          close(Outcome::kProtocolError);
          return;
        }
        bufferevent_write(client_, "S", 1);
        mode_ = Mode::kPassthrough;
        setState(State::kClientHello);
        handleClientHello();
        return;
      }
      case proto::PreambleKind::kDirectTls:
        if (console_only_) {
          LOG_INFO("session %llu: TLS from %s on the console port, which is plaintext; closing",
                   static_cast<unsigned long long>(id_), peer().c_str());
          close(Outcome::kProtocolError);
          return;
        }
        mode_ = Mode::kDirectTls;
        setState(State::kClientHello);
        handleClientHello();
        return;
      case proto::PreambleKind::kCancelRequest:
        cancel_request_.assign(p, pre.consumed);  // `p` is gone once drained
        evbuffer_drain(in, pre.consumed);
        startCancel();
        return;
      case proto::PreambleKind::kStartup: {
        mode_ = Mode::kPlaintext;
        if (!acceptStartup(pre, std::string_view(p, pre.consumed))) {
          return;
        }
        if (console_only_) {
          startConsole(std::string_view(p, pre.consumed));  // whatever database it names
          return;
        }
        if (ctx_.config->tls.require) {
          refuse(Outcome::kTlsRequired, proto::sqlstate::kInvalidAuthorization,
                 "pgproxy requires TLS: this connection is not encrypted",
                 "Connect with sslmode=require (or verify-full).");
          return;
        }
        if (wantsConsole(std::string_view(p, pre.consumed))) {
          startConsole(std::string_view(p, pre.consumed));
          return;
        }
        auto route = ctx_.router->routeNoSni();
        if (!route) {
          refuse(Outcome::kNoRoute, proto::sqlstate::kRejectedConnection,
                 "pgproxy routes connections by TLS server name, and this connection is not "
                 "using TLS",
                 "Connect with sslmode=require (or verify-full) and the host name of your "
                 "database, or configure a \"default\" mapping.");
          return;
        }
        // The startup packet stays buffered; the splice forwards it unchanged.
        bufferevent_disable(client_, EV_READ);
        routeWithPlugins(*route);
        return;
      }
    }
  }
}

bool Session::acceptStartup(const proto::Preamble& pre, std::string_view packet) {
  std::uint32_t major = pre.code >> 16, minor = pre.code & 0xffff;
  if (pre.kind != proto::PreambleKind::kStartup || major != 3) {
    // Also an SSLRequest or GSSENCRequest inside TLS, as PostgreSQL answers it.
    refuse(Outcome::kProtocolError, proto::sqlstate::kFeatureNotSupported,
           "unsupported frontend protocol " + std::to_string(major) + "." + std::to_string(minor) +
               ": server supports 3.0 to 3.0");
    return false;
  }
  proto::StartupParams params;
  proto::StartupError err = proto::parseStartup(packet, params);
  if (err == proto::StartupError::kBadLayout) {
    refuse(Outcome::kProtocolError, proto::sqlstate::kProtocolViolation,
           "invalid startup packet layout: expected terminator as last byte");
    return false;
  }
  if (err == proto::StartupError::kNoUser) {
    refuse(Outcome::kProtocolError, proto::sqlstate::kInvalidAuthorization,
           "no PostgreSQL user name specified in startup packet");
    return false;
  }
  auditStartup(params);
  LOG_DEBUG("session %llu: %s startup user=\"%s\" database=\"%s\"",
            static_cast<unsigned long long>(id_), modeName(), params.get("user").c_str(),
            params.get("database").c_str());
  return true;
}

void Session::handleClientHello() {
  evbuffer* in = bufferevent_get_input(client_);
  std::size_t len = evbuffer_get_length(in);
  if (len == 0) {
    return;
  }
  std::size_t look = std::min(len, kMaxHelloWire);
  const char* p = reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ssize_t>(look)));
  tls::ClientHelloInfo info;
  tls::ParseResult r = tls::parseClientHello(std::string_view(p, look), info);
  if (r.status == tls::ParseStatus::kNeedMore) {
    if (look >= kMaxHelloWire) {
      refuseTls(Outcome::kProtocolError, 50 /* decode_error */,
                "ClientHello did not fit in 64 KiB");
    }
    return;
  }
  if (r.status == tls::ParseStatus::kError) {
    refuseTls(Outcome::kProtocolError, 50 /* decode_error */,
              std::string("malformed TLS ClientHello: ") + r.error);
    return;
  }
  sni_ = info.sni;
  if (mode_ == Mode::kDirectTls && !info.alpn_postgresql) {
    // PostgreSQL 17 requires ALPN "postgresql" on direct TLS connections (protocol confusion).
    refuseTls(Outcome::kProtocolError, proto::kAlertNoApplicationProtocol,
              "direct TLS connection without ALPN \"postgresql\"");
    return;
  }
  auto route = sni_.empty() ? ctx_.router->routeNoSni() : ctx_.router->routeSni(sni_);
  if (!route) {
    refuseTls(sni_.empty() ? Outcome::kNoRoute : Outcome::kUnknownSni,
              proto::kAlertUnrecognizedName,
              sni_.empty() ? "TLS client sent no server name and no default mapping is set"
                           : "no mapping for server name \"" + sni_ + "\"");
    return;
  }
  bufferevent_disable(client_, EV_READ);  // the ClientHello waits in the buffer for the backend
  routeWithPlugins(*route);
}

// ---- backend side ---------------------------------------------------------------------------

void Session::routeTo(std::size_t mapping) {
  mapping_ = mapping;
  const auto& m = ctx_.config->mappings[mapping];
  LOG_DEBUG("session %llu: %s sni=\"%s\" -> mapping \"%s\"", static_cast<unsigned long long>(id_),
            modeName(), sni_.c_str(), m.external.c_str());
  if (!m.access.admits(reinterpret_cast<const sockaddr*>(&client_addr_))) {
    std::string why = "connections from " + peer() + " are not allowed for \"" + m.external + "\"";
    if (mode_ == Mode::kPlaintext) {
      refuse(Outcome::kDenied, proto::sqlstate::kInvalidAuthorization, "pgproxy: " + why);
    } else {
      refuseTls(Outcome::kDenied, proto::kAlertAccessDenied, why);
    }
    return;
  }
  if (m.tls == config::TlsMode::kTerminate && state_ == State::kClientHello) {
    startClientTls();  // the backend is connected once the StartupMessage has arrived
    return;
  }
  auditConnect();
  connectBackend();
}

const config::Backend& Session::backend() const {
  return templated_ ? *templated_ : ctx_.config->mappings[mapping_].backends[backend_index_];
}

std::size_t Session::backendSlot() const {
  if (templated_) {
    return upstream::kNoBackend;  // one template, many servers: no shared state to keep
  }
  const auto& slots = ctx_.backend_slots[mapping_];
  return backend_index_ < slots.size() ? slots[backend_index_] : upstream::kNoBackend;
}

bool Session::drained(std::size_t backend) const {
  return ctx_.control && ctx_.control->drained(ctx_.backend_slots[mapping_][backend]);
}

bool Session::routeStartup() {
  routed_ = true;
  const auto& m = ctx_.config->mappings[mapping_];
  role_ = m.role;
  bool sees_startup = mode_ == Mode::kPlaintext || terminated();
  if (m.templated) {
    std::string host = route::expandTemplate(m.internal, sni_);
    if (host.empty()) {
      std::string why = "mapping \"" + m.external +
                        "\" names its backend after the first label of the TLS server name, and "
                        "this connection sent " +
                        (sni_.empty() ? std::string("none") : "\"" + sni_ + "\"");
      if (sees_startup) {
        refuse(Outcome::kNoRoute, proto::sqlstate::kRejectedConnection, "pgproxy: " + why);
      } else {
        refuseTls(Outcome::kNoRoute, proto::kAlertUnrecognizedName, why);
      }
      return false;
    }
    templated_ = std::make_unique<config::Backend>(config::Backend{host, m.port, 1, m.mark});
  }
  if (!sees_startup) {
    // A passthrough session's StartupMessage is the backend's to read: the mapping's own
    // backends (the loader makes sure it has some when it has routes).
    route_backends_ = route::ownBackends(m);
    return true;
  }
  std::size_t consumed = 0;
  proto::StartupParams params = pendingStartup(consumed);
  route::Decision d = route::decide(m, params.version, params.params);
  switch (d.kind) {
    case route::Decision::Kind::kNoDatabase:
      // PostgreSQL's own words and code, so clients and tools say what they always say.
      refuse(Outcome::kNoRoute, "3D000", "database \"" + d.database + "\" does not exist");
      return false;
    case route::Decision::Kind::kBadAttrs:
      refuse(Outcome::kProtocolError, "22023",
             "invalid value for parameter \"target_session_attrs\": \"" + d.bad_value + "\"",
             "Valid values are \"any\", \"read-write\", \"read-only\", \"primary\", "
             "\"standby\" and \"prefer-standby\".");
      return false;
    case route::Decision::Kind::kRouted:
      break;
  }
  route_backends_ = d.backends;
  role_ = d.role;
  prefer_standby_ = d.prefer_standby;
  if (d.route != route::Decision::kOwn) {
    LOG_DEBUG("session %llu: database \"%s\" -> route %zu of \"%s\" (line %d)",
              static_cast<unsigned long long>(id_), d.database.c_str(), d.route + 1,
              m.external.c_str(), m.routes[d.route].mark.line);
  }
  if (!d.startup.empty()) {
    replaceStartup(consumed, d.startup);
  }
  return true;
}

proto::StartupParams Session::pendingStartup(std::size_t& consumed) {
  std::string_view packet;
  evbuffer* in = client_ ? bufferevent_get_input(client_) : nullptr;
  if (in) {  // plaintext: the StartupMessage waits in the bufferevent
    std::size_t len = std::min(evbuffer_get_length(in), proto::kMaxStartupPacket);
    packet = std::string_view(
        reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ssize_t>(len))), len);
  } else {
    packet = startup_;
  }
  proto::Preamble pre = proto::classifyPreamble(packet);
  consumed = pre.consumed;
  proto::StartupParams params;
  (void)proto::parseStartup(packet.substr(0, pre.consumed), params);  // acceptStartup checked it
  return params;
}

void Session::replaceStartup(std::size_t consumed, const std::string& packet) {
  if (evbuffer* in = client_ ? bufferevent_get_input(client_) : nullptr) {
    evbuffer_drain(in, consumed);
    evbuffer_prepend(in, packet.data(), packet.size());
  } else {
    startup_.replace(0, consumed, packet);
  }
}

std::string Session::peerHost() const {
  std::string p = peer();
  return p.substr(0, std::min(p.size(), p.rfind(':')));
}

bool Session::pickBackend() {
  if (prefer_standby_ && pickBackendInRole(config::BackendRole::kStandby)) {
    return true;
  }
  return pickBackendInRole(role_);
}

bool Session::pickBackendInRole(config::BackendRole role) {
  if (templated_) {
    if (tried_) {
      return false;  // one server: nothing else to try
    }
    tried_ = 1;
    backend_index_ = 0;
    return true;
  }
  auto pick = chooseBackend(role, tried_);
  if (!pick) {
    return false;
  }
  backend_index_ = *pick;
  tried_ |= 1ull << *pick;
  return true;
}

std::optional<std::size_t> Session::chooseBackend(config::BackendRole role, std::uint64_t exclude) {
  const auto& m = ctx_.config->mappings[mapping_];
  std::vector<upstream::Candidate>& c = ctx_.candidates;
  c.assign(m.backends.size(), upstream::Candidate{});
  std::uint64_t now = base::monotonicMs();
  auto usable = [&](std::size_t i) {
    return !(exclude & (1ull << i)) && (route_backends_ & (1ull << i)) && !drained(i);
  };
  for (std::size_t i = 0; i < c.size(); ++i) {
    std::size_t slot = ctx_.backend_slots[mapping_][i];
    c[i].weight = m.backends[i].weight;
    c[i].active = ctx_.backends->active(slot);
    bool down =
        ctx_.backends->health(slot) == upstream::Health::kDown &&
        (m.health.enabled || !ctx_.backends->retryDue(slot, now, upstream::kPassiveRetryMs));
    bool roleOk = role == config::BackendRole::kAny ||
                  ctx_.backends->role(slot) == (role == config::BackendRole::kPrimary
                                                    ? upstream::Role::kPrimary
                                                    : upstream::Role::kStandby);
    // A standby further behind than max_replica_lag serves no one who asked for a standby
    // (an unknown lag, before the first logged-in check, does not count against it).
    bool behind = role == config::BackendRole::kStandby && m.max_replica_lag_ms > 0 &&
                  ctx_.backends->lagMs(slot) > static_cast<std::int64_t>(m.max_replica_lag_ms);
    c[i].eligible = usable(i) && !down && roleOk && !behind;
  }
  // xorshift64: cheap and good enough to spread sessions (random balance).
  ctx_.rng ^= ctx_.rng << 13;
  ctx_.rng ^= ctx_.rng >> 7;
  ctx_.rng ^= ctx_.rng << 17;
  auto pick = ctx_.balancers[mapping_].pick(m.balance, c, ctx_.rng);
  if (!pick && !m.health.enabled) {
    // Without active checks only a session can show that a down backend is back: try them.
    // A role still needs a check that saw it: without one no backend qualifies.
    for (std::size_t i = 0; i < c.size(); ++i) {
      c[i].eligible = usable(i) && role == config::BackendRole::kAny;
    }
    pick = ctx_.balancers[mapping_].pick(m.balance, c, ctx_.rng);
  }
  return pick;
}

void Session::endHandshake() {
  if (!handshaking_) {
    return;
  }
  handshaking_ = false;
  ctx_.metrics.gauge(metrics::Gauge::kHandshaking, -1);
  if (ctx_.on_handshake_done) {
    ctx_.on_handshake_done(&ctx_);
  }
}

void Session::idleTimeout() {
  // Where the client reads PostgreSQL messages and the backend's last one is complete, it gets
  // what PostgreSQL's idle_session_timeout sends; a passthrough client's stream is the backend's
  // TLS session, so it only sees the close.
  if (backend_frames_ && backend_frames_->atBoundary() && to_client_.empty() && !backend_eof_) {
    refuse(Outcome::kIdleTimeout, proto::sqlstate::kIdleSessionTimeout,
           "terminating connection due to idle-session timeout",
           "pgproxy closed the session after " + std::to_string(ctx_.config->idle_timeout_ms) +
               " ms without traffic (idle_timeout).");
    return;
  }
  close(Outcome::kIdleTimeout);
}

// Limits that need the mapping, checked once per session just before its first backend connect:
// the checks without side effects first, then the token buckets, so that a session refused by a
// count spends no token (one refused by its mapping's rate has spent its global token).
bool Session::admit() {
  if (!auditAdmits()) {
    return false;
  }
  const config::Config& cfg = *ctx_.config;
  const auto& m = cfg.mappings[mapping_];
  std::uint64_t global = cfg.max_connections, mine = m.max_connections;
  bool over =
      (global && ctx_.metrics_registry->admitted() >= static_cast<std::int64_t>(global)) ||
      (mine && ctx_.metrics_registry->admitted(metricIndex()) >= static_cast<std::int64_t>(mine));
  if (over) {
    // PostgreSQL's own words and code, so clients and poolers treat it as they know to.
    failSession(Outcome::kTooManyClients, "sorry, too many clients already",
                proto::sqlstate::kTooManyConnections);
    return false;
  }
  const in6_addr key = net::clientKey(reinterpret_cast<const sockaddr*>(&client_addr_));
  if (cfg.max_connections_per_client &&
      ctx_.client_limits->sessions(key) >= cfg.max_connections_per_client) {
    failSession(Outcome::kClientLimit,
                "too many connections from " + peerHost() + " (max_connections_per_client " +
                    std::to_string(cfg.max_connections_per_client) + ")",
                proto::sqlstate::kTooManyConnections);
    return false;
  }
  auto now = static_cast<std::uint32_t>(base::monotonicMs());
  // A mapping's buckets are keyed by its metrics index, which follows its name across reloads.
  for (std::uint32_t scope : {0u, static_cast<std::uint32_t>(metricIndex()) + 1}) {
    const config::Rate& rate = scope == 0 ? cfg.connection_rate : m.connection_rate;
    std::uint32_t wait = 0;
    if (rate.enabled() && !ctx_.client_limits->takeToken(key, scope, rate, now, &wait)) {
      std::string unit = rate.period_ms == 1000 ? "s" : rate.period_ms == 60'000 ? "m" : "h";
      failSession(Outcome::kRateLimited,
                  "too many new connections from " + peerHost() +
                      (scope ? " to \"" + m.external + "\"" : "") + " (connection_rate " +
                      std::to_string(rate.count) + "/" + unit + ", burst " +
                      std::to_string(rate.burst) + "); retry in " + std::to_string(wait) + " ms",
                  proto::sqlstate::kTooManyConnections);
      return false;
    }
  }
  ctx_.metrics.admitted(metricIndex(), 1);
  admitted_ = true;
  client_counted_ = ctx_.client_limits->addSession(key);
  return true;
}

void Session::connectBackend() {
  if (!authenticated_ && ctx_.control && ctx_.control->disabled(metricIndex())) {
    // PgBouncer's DISABLE: new clients are refused, sessions already in go on. Checked once the
    // StartupMessage is in (terminated sessions: after the TLS handshake), so that the client
    // can read why; the console, on the same name, is still reachable.
    const std::string why = "mapping \"" + ctx_.config->mappings[mapping_].external +
                            "\" is disabled (DISABLE from the console)";
    if (mode_ == Mode::kPlaintext || terminated()) {
      refuse(Outcome::kDenied, proto::sqlstate::kCannotConnectNow, "pgproxy: " + why,
             "An operator took it out of service; ENABLE brings it back.");
    } else {
      refuseTls(Outcome::kDenied, proto::kAlertAccessDenied, why);
    }
    return;
  }
  if (!routed_ && ctx_.plugins && ctx_.plugins->has(plugin::Hook::kStartup) &&
      (mode_ == Mode::kPlaintext || terminated()) && !pluginStartup()) {
    return;
  }
  if (!routed_ && !routeStartup()) {
    return;
  }
  if (ctx_.config->mappings[mapping_].authenticate && !authenticated_) {
    if (mode_ != Mode::kPlaintext && !terminated()) {
      // A passthrough default mapping that pools its plaintext clients: a TLS client's bytes are
      // its own session with the backend, which pgproxy cannot authenticate or pool.
      refuseTls(Outcome::kDenied, proto::kAlertAccessDenied,
                "mapping \"" + ctx_.config->mappings[mapping_].external +
                    "\" authenticates (or pools) its clients, which a TLS passthrough session "
                    "cannot be; connect without TLS");
      return;
    }
    startClientAuth();  // connectBackend runs again once the client is authenticated
    return;
  }
  if (!admitted_ && !admit()) {
    return;
  }
  if (!pickBackend()) {
    const auto& m = ctx_.config->mappings[mapping_];
    std::string what = role_ == config::BackendRole::kAny       ? "backend"
                       : role_ == config::BackendRole::kPrimary ? "primary backend"
                                                                : "standby backend";
    std::size_t drained_count = 0, group = 0;
    for (std::size_t i = 0; i < m.backends.size(); ++i) {
      if (route_backends_ & (1ull << i)) {
        ++group;
        drained_count += drained(i) ? 1 : 0;
      }
    }
    std::string why = group > 0 && drained_count == group
                          ? std::string("every backend is drained (DRAIN BACKEND)")
                      : role_ != config::BackendRole::kAny
                          ? "none of its backends is up in that role"
                      : group == 1 ? std::string("its backend is down")
                                   : "all " + std::to_string(group) + " backends are down";
    failSession(
        Outcome::kBackendUnreachable,
        "no " + what + " for \"" + m.external + "\" is available: " + why + " (health checks)",
        proto::sqlstate::kCannotConnectNow);
    return;
  }
  connectToBackend();
}

void Session::connectToBackend() {
  const auto& b = backend();
  LOG_DEBUG("session %llu: connecting to %s", static_cast<unsigned long long>(id_),
            b.key().c_str());
  setState(State::kConnecting);
  connect_started_us_ = nowUs();
  armTimer(ctx_.config->connect_timeout_ms);
  if (!addresses_) {
    addresses_ = std::make_unique<upstream::AddressList>();
  }
  // The answer may come before start() returns, and end the session: nothing may touch `this`
  // after the call.
  upstream::Lookup::start(&lookup_, ctx_.dns, b.host, b.port, onResolved, this);
}

void Session::onResolved(void* arg, int gai_error, const evutil_addrinfo* ai) {
  auto* s = static_cast<Session*>(arg);
  if (gai_error == 0) {
    s->addresses_->assign(ai);
  }
  if (gai_error != 0 || s->addresses_->size() == 0) {
    s->backendFailed(std::string("cannot resolve host name: ") +
                         (gai_error ? evutil_gai_strerror(gai_error) : "no address"),
                     EHOSTUNREACH);
    return;
  }
  s->connectNextAddress();
}

void Session::connectNextAddress() {
  socklen_t len = 0;
  const sockaddr* sa = addresses_->next(&len);
  if (backend_) {
    bufferevent_free(backend_);
  }
  // Each address gets the whole connect_timeout, as each host address does in libpq.
  armTimer(ctx_.config->connect_timeout_ms);
  backend_ = bufferevent_socket_new(ctx_.base, -1, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(backend_, onBackendRead, nullptr, onBackendEvent, this);
  bufferevent_enable(backend_, EV_READ);
  // Errors arrive through onBackendEvent, possibly before this returns: nothing may touch `this`
  // after the call.
  if (bufferevent_socket_connect(backend_, sa, static_cast<int>(len)) != 0 &&
      state_ == State::kConnecting) {
    onBackendEvent(backend_, BEV_EVENT_ERROR, this);
  }
}

void Session::backendAnswered() {
  ctx_.metrics.observe(metrics::Histogram::kBackendConnect, nowUs() - connect_started_us_);
  const auto& m = ctx_.config->mappings[mapping_];
  if (ctx_.backends->recordSessionSuccess(backendSlot(), m.health.enabled)) {
    LOG_INFO("backend %s of \"%s\" is reachable again", backend().key().c_str(),
             m.external.c_str());
  }
}

std::string Session::proxyHeader() const {
  // The client's address, and the one it connected to (as a PROXY header named them, if one
  // did).
  sockaddr_storage local{};
  if (proxied_to_) {
    local = *proxied_to_;
  } else {
    socklen_t len = sizeof(local);
    int fd = client_ ? bufferevent_getfd(client_) : client_fd_;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
      local.ss_family = AF_UNSPEC;
    }
  }
  return proto::buildProxyV2(reinterpret_cast<const sockaddr*>(&client_addr_),
                             reinterpret_cast<const sockaddr*>(&local));
}

void Session::onBackendConnected() {
  net::tuneConnectedSocket(bufferevent_getfd(backend_), *ctx_.config);
  if (audit::enabled()) {
    auditRoute(backend().key(), routeReason());
  }
  if (ctx_.config->mappings[mapping_].backend_proxy_protocol) {
    std::string header = proxyHeader();  // before anything else
    bufferevent_write(backend_, header.data(), header.size());
  }
  if (mode_ == Mode::kPlaintext || (terminated() && !ctx_.tls->backend(mapping_))) {
    backendAnswered();
    backendReady();
    return;
  }
  setState(State::kUpstreamSsl);
  std::string req = proto::buildSslRequest();
  bufferevent_write(backend_, req.data(), req.size());
}

void Session::handleUpstreamSsl() {
  evbuffer* in = bufferevent_get_input(backend_);
  std::size_t len = evbuffer_get_length(in);
  if (len == 0) {
    return;
  }
  char answer = static_cast<char>(*evbuffer_pullup(in, 1));
  if (answer == 'S' && len == 1) {
    evbuffer_drain(in, 1);
    if (terminated()) {
      startBackendTls();
      return;
    }
    backendAnswered();
    startSplice();
    return;
  }
  const std::string key = backend().key();
  if (answer == 'S') {
    // CVE-2021-23222: anything after 'S' arrived before TLS and could be injected.
    failSession(Outcome::kTlsRefusedByBackend,
                "backend " + key + " sent unencrypted data after its SSL response");
    return;
  }
  failSession(Outcome::kTlsRefusedByBackend,
              "backend " + key +
                  (answer == 'N' ? " does not accept TLS (answered N to SSLRequest)"
                                 : " answered the SSLRequest with something other than S or N"));
}

void Session::onBackendRead(bufferevent*, void* arg) {
  auto* s = static_cast<Session*>(arg);
  switch (s->state_) {
    case State::kUpstreamSsl:
      s->handleUpstreamSsl();
      break;
    case State::kCancelling:
      evbuffer_drain(bufferevent_get_input(s->backend_), SIZE_MAX);
      break;
    default:
      // Nothing is expected from the backend before we spoke; drop it with the session.
      if (s->state_ == State::kConnecting) {
        evbuffer_drain(bufferevent_get_input(s->backend_), SIZE_MAX);
      }
      break;
  }
}

void Session::onBackendEvent(bufferevent*, short what, void* arg) {
  auto* s = static_cast<Session*>(arg);
  if (s->state_ == State::kCancelling) {
    if (what & BEV_EVENT_CONNECTED) {
      // The client's own bytes: a 3.2 key reaches the backend whole, whatever its length.
      if (s->cancel_proxy_[s->cancel_next_ - 1]) {
        // The canceling client's address: a passthrough cancel is matched by it down there.
        std::string header = s->proxyHeader();
        bufferevent_write(s->backend_, header.data(), header.size());
      }
      bufferevent_write(s->backend_, s->cancel_request_.data(), s->cancel_request_.size());
      return;
    }
    // The backend closes the cancel connection once it has acted on it (or on error): next one.
    s->nextCancelTarget();
    return;
  }
  if (s->state_ == State::kConnecting && (what & BEV_EVENT_CONNECTED)) {
    s->onBackendConnected();
    return;
  }
  if (s->state_ != State::kConnecting && s->state_ != State::kUpstreamSsl) {
    return;
  }
  std::string why;
  int err = EVUTIL_SOCKET_ERROR();
  if (what & BEV_EVENT_EOF) {
    why = "backend closed the connection during the TLS request";
    err = ECONNRESET;
  } else {
    why = base::errnoText(err);
  }
  if (s->state_ == State::kConnecting && s->addresses_ && !s->addresses_->exhausted()) {
    // A name with several addresses: the next one, as libpq does.
    LOG_INFO("session %llu: backend %s: address %s failed (%s); trying the next address",
             static_cast<unsigned long long>(s->id_), s->backend().key().c_str(),
             s->addresses_->current().c_str(), why.c_str());
    s->connectNextAddress();
    return;
  }
  if (s->addresses_ && s->addresses_->size() > 1) {
    why += " (tried its " + std::to_string(s->addresses_->size()) + " addresses)";
  }
  s->backendFailed(why, err);
}

void Session::resetBackend() {
  if (lookup_) {
    lookup_->cancel();
  }
  addresses_.reset();
  if (backend_) {
    bufferevent_free(backend_);
    backend_ = nullptr;
  }
  if (backend_ssl_) {
    SSL_free(backend_ssl_);
    backend_ssl_ = nullptr;
  }
  for (event** ev : {&backend_read_, &backend_write_}) {
    if (*ev) {
      event_free(*ev);
      *ev = nullptr;
    }
  }
  if (backend_fd_ >= 0) {
    ::close(backend_fd_);
    backend_fd_ = -1;
  }
}

void Session::backendFailed(const std::string& why, int err) {
  const auto& m = ctx_.config->mappings[mapping_];
  const std::string key = backend().key();
  if (ctx_.backends->recordFailure(backendSlot(), m.health.enabled ? m.health.fall : 1, err, why)) {
    LOG_WARN("backend %s of \"%s\" is down: %s", key.c_str(), m.external.c_str(), why.c_str());
  }
  // Nothing of the client's has reached a backend yet: another backend can take the session.
  resetBackend();
  if (pickBackend()) {
    LOG_INFO("session %llu: backend %s failed (%s); trying %s",
             static_cast<unsigned long long>(id_), key.c_str(), why.c_str(),
             backend().key().c_str());
    connectToBackend();
    return;
  }
  failSession(Outcome::kBackendUnreachable,
              m.backends.size() == 1
                  ? "could not connect to backend for \"" + m.external + "\" (" + key + "): " + why
                  : "could not connect to any backend for \"" + m.external + "\" (last tried " +
                        key + "): " + why);
}

void Session::failSession(Outcome why, const std::string& message, const char* sqlstate) {
  if (mode_ == Mode::kPlaintext || terminated()) {
    refuse(why, sqlstate, message);
  } else {
    refuseTls(why, proto::kAlertInternalError, message);
  }
}

// ---- cancel ---------------------------------------------------------------------------------

void Session::startCancel() {
  endHandshake();
  mode_ = Mode::kCancel;
  setState(State::kCancelling);
  if (client_) {
    bufferevent_disable(client_, EV_READ);
  } else if (client_read_) {
    event_del(client_read_);  // a CancelRequest sent inside TLS (terminate)
  }
  const std::uint32_t pid = proto::readU32(cancel_request_.data() + 8);
  const std::string_view key = std::string_view(cancel_request_).substr(12);
  cancel_targets_ = std::make_unique<cancel::BackendAddr[]>(kMaxCancelTargets);
  cancel::Registry::Target target;
  if (ctx_.cancels->findByKey(pid, key, target)) {
    if (target.pooled) {
      // pgproxy's own key: the server linked to that client now gets a cancel with its key;
      // a client between transactions has nothing running to cancel.
      cancel_count_ = target.linked ? 1 : 0;
      cancel_request_ = proto::buildCancelRequest(target.server_pid, target.server_key);
    } else {
      cancel_count_ = 1;
    }
    cancel_targets_[0] = target.backend;
    cancel_proxy_[0] = target.proxy_header;
  } else {
    std::uint64_t now = base::monotonicMs();
    ctx_.cancel_tokens =
        std::min(kCancelFanoutPerSecond,
                 ctx_.cancel_tokens + static_cast<double>(now - ctx_.cancel_tokens_at_ms) *
                                          kCancelFanoutPerSecond / 1000);
    ctx_.cancel_tokens_at_ms = now;
    unsigned instance = cancel::instanceOfPid(pid);
    if (instance != 0 && instance != ctx_.config->instance_id) {
      // Another instance's key: that instance holds the session.
      cancel_count_ = cancelPeers(instance);
    } else if (ctx_.cancel_tokens >= 1) {
      ctx_.cancel_tokens -= 1;
      // Room is kept for every peer when they are asked too.
      std::size_t room = kMaxCancelTargets - (instance == 0 ? ctx_.config->peers.size() : 0);
      cancel_count_ = ctx_.cancels->findByClient(
          net::clientKey(reinterpret_cast<const sockaddr*>(&client_addr_)), cancel_targets_.get(),
          room, cancel_proxy_);
      if (instance == 0) {
        // A server's own key (or a passthrough session's, inside TLS) this instance does not
        // hold: any peer may.
        cancel_count_ = cancelPeers(0);
      }
    } else {
      ctx_.metrics.add(metrics::Counter::kCancelDropped);
      LOG_WARN("session %llu: cancel request from %s dropped: cancel rate limit reached",
               static_cast<unsigned long long>(id_), peer().c_str());
    }
  }
  if (cancel_count_ > 0) {
    ctx_.metrics.add(metrics::Counter::kCancelForwarded);
  } else {
    ctx_.metrics.add(metrics::Counter::kCancelUnmatched);
  }
  LOG_DEBUG("session %llu: cancel request for pid %u (%zu-byte key) goes to %zu backend(s)",
            static_cast<unsigned long long>(id_), pid, key.size(), cancel_count_);
  nextCancelTarget();
}

std::size_t Session::cancelPeers(unsigned id) {
  // One hop: a cancel a peer forwarded is never forwarded again, so instances that list each
  // other cannot pass one around.
  const in6_addr sender = net::clientKey(reinterpret_cast<const sockaddr*>(&client_addr_));
  for (const config::Peer& p : ctx_.config->peers) {
    sockaddr_storage ss{};
    if (net::toSockaddr(p.address, ss) != 0) {
      const in6_addr peer = net::clientKey(reinterpret_cast<const sockaddr*>(&ss));
      if (std::memcmp(&sender, &peer, sizeof(peer)) == 0) {
        return cancel_count_;
      }
    }
  }
  std::size_t n = cancel_count_;
  for (const config::Peer& p : ctx_.config->peers) {
    sockaddr_storage ss{};
    if ((id == 0 || p.id == id) && n < kMaxCancelTargets && net::toSockaddr(p.address, ss) != 0) {
      std::memcpy(&cancel_targets_[n], &ss, sizeof(cancel::BackendAddr));
      cancel_proxy_[n++] = false;
    }
  }
  if (n > cancel_count_) {
    LOG_DEBUG("session %llu: cancel request goes to %zu peer instance(s)",
              static_cast<unsigned long long>(id_), n - cancel_count_);
  }
  return n;
}

void Session::nextCancelTarget() {
  if (backend_) {
    bufferevent_free(backend_);
    backend_ = nullptr;
  }
  if (cancel_next_ >= cancel_count_) {
    // Like PostgreSQL: the cancel connection is closed with nothing sent, after the cancel went
    // out.
    close(Outcome::kCancel);
    return;
  }
  cancel::BackendAddr& target = cancel_targets_[cancel_next_++];
  armTimer(kCancelTargetTimeoutMs);
  backend_ = bufferevent_socket_new(ctx_.base, -1, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(backend_, onBackendRead, nullptr, onBackendEvent, this);
  bufferevent_enable(backend_, EV_READ);
  if (bufferevent_socket_connect(backend_, &target.sa, static_cast<int>(addrLen(target))) != 0) {
    nextCancelTarget();
  }
}

// ---- closing --------------------------------------------------------------------------------

void Session::onTimer(int, short, void* arg) {
  auto* s = static_cast<Session*>(arg);
  switch (s->state_) {
    case State::kPreamble:
    case State::kClientHello:
    case State::kTlsAccept:
    case State::kTlsStartup:
    case State::kClientAuth:
      // Like PostgreSQL's authentication_timeout: close silently.
      LOG_INFO("session %llu: handshake timeout for %s", static_cast<unsigned long long>(s->id_),
               s->peer().c_str());
      s->close(Outcome::kHandshakeTimeout);
      break;
    case State::kSecretLookup:
      // Unlike the client's own slowness, this one is pgproxy's: say so. The lookup goes on and
      // fills the cache for the next login.
      s->ctx_.secrets->cancel(*s->secret_wait_);
      s->secret_wait_.reset();
      s->secretLookupFailed("no answer within handshake_timeout",
                            proto::sqlstate::kConnectionFailure, Outcome::kHandshakeTimeout);
      break;
    case State::kConnecting:
      if (s->lookup_) {
        s->backendFailed("cannot resolve host name: no answer within connect_timeout", ETIMEDOUT);
        break;
      }
      [[fallthrough]];
    case State::kUpstreamSsl: {
      errno = ETIMEDOUT;
      EVUTIL_SET_SOCKET_ERROR(ETIMEDOUT);
      onBackendEvent(s->backend_, BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT, s);
      break;
    }
    case State::kBackendTls:
      s->backendFailed("TLS handshake with the backend timed out", ETIMEDOUT);
      break;
    case State::kServerLogin:
      s->serverLoginFailed("no answer within connect_timeout", "");
      break;
    case State::kCancelling:
      s->nextCancelTarget();
      break;
    case State::kClosing:
      s->close(s->outcome_);
      break;
    case State::kPooled:
    case State::kConsole:
      break;  // pooled and console sessions hold no timer (the pool times pooled waits)
    case State::kSplice: {
      // idle_timeout: the timer is re-armed lazily, not on every byte. Bytes the kernel moved
      // count as traffic too (they never woke this worker).
      if (s->syncKernelBytes()) {
        s->last_activity_ms_ = base::monotonicMs();
      }
      std::uint64_t idle = base::monotonicMs() - s->last_activity_ms_;
      std::uint64_t limit = s->ctx_.config->idle_timeout_ms;
      if (limit == 0) {
        break;  // not armed without idle_timeout; nothing to enforce
      }
      if (idle + 1 < limit) {
        s->armTimer(limit - idle);
        break;
      }
      LOG_INFO(
          "session %llu: no traffic from %s or its backend for %llu ms (idle_timeout); closing",
          static_cast<unsigned long long>(s->id_), s->peer().c_str(),
          static_cast<unsigned long long>(idle));
      s->idleTimeout();
      break;
    }
  }
}

void Session::refuse(Outcome why, const char* sqlstate, const std::string& message,
                     const std::string& hint) {
  LOG_INFO("session %llu: refused %s: %s (SQLSTATE %s)", static_cast<unsigned long long>(id_),
           peer().c_str(), message.c_str(), sqlstate);
  auditRefuse(why, sqlstate, message, -1);
  sendLastWords(why, proto::buildFatal(sqlstate, message, hint));
}

void Session::refuseTls(Outcome why, std::uint8_t alert, const std::string& log_message) {
  LOG_INFO("session %llu: refused %s (%s, sni \"%s\"): %s; sending TLS alert %u",
           static_cast<unsigned long long>(id_), peer().c_str(), modeName(), sni_.c_str(),
           log_message.c_str(), alert);
  auditRefuse(why, nullptr, log_message, alert);
  sendLastWords(why, proto::buildTlsAlert(alert));
}

void Session::sendLastWords(Outcome why, std::string bytes) {
  if (pooled_) {
    unlinkPooled();  // nothing more goes to or comes from a server for this client
  }
  if (client_) {
    bufferevent_write(client_, bytes.data(), bytes.size());
    closeAfterFlush(why);
    return;
  }
  // The client's socket has left its bufferevent: the splice started (a retry after the first
  // backend closed, or a terminated session). The splice's writer delivers the bytes, then
  // closes.
  outcome_ = why;
  setState(State::kClosing);
  if (backend_) {
    bufferevent_free(backend_);
    backend_ = nullptr;
  }
  for (event* ev : {client_read_, backend_read_, backend_write_}) {
    if (ev) {
      event_del(ev);
    }
  }
  to_client_ += bytes;
  armTimer(kFlushTimeoutMs);
  flush(true);
}

void Session::closeAfterFlush(Outcome why) {
  outcome_ = why;
  setState(State::kClosing);
  if (backend_) {
    bufferevent_free(backend_);
    backend_ = nullptr;
  }
  bufferevent_disable(client_, EV_READ);
  if (evbuffer_get_length(bufferevent_get_output(client_)) == 0) {
    close(why);
    return;
  }
  bufferevent_setwatermark(client_, EV_WRITE, 0, 0);
  armTimer(kFlushTimeoutMs);
}

void Session::shutdown() {
  close(Outcome::kShutdown);
}

void Session::close(Outcome why) {
  bool kernel = leaveKernel();  // first: the bytes the kernel moved count below
  std::string client = peer();
  std::string backendKey;
  const char* mapping = "";
  if (mapping_ != SIZE_MAX) {
    mapping = ctx_.config->mappings[mapping_].external.c_str();
    backendKey = tried_ ? backend().key() : "";
  }
  log::AccessRecord rec;
  rec.session = id_;
  rec.client = client;
  rec.mode = modeName();
  rec.sni = sni_;
  rec.mapping = mapping;
  rec.backend = backendKey;
  rec.duration_ms = (nowUs() - started_us_) / 1000;
  rec.bytes_up = bytes_up_;
  rec.bytes_down = bytes_down_;
  rec.outcome = metrics::outcomeName(why);
  rec.splice = kernel ? "kernel" : "";
  log::writeAccess(rec);
  auditDisconnect(why);
  pluginDisconnect(why);
  ctx_.metrics.closed(metricIndex(), why);
  Context& ctx = ctx_;
  delete this;
  if (ctx.on_session_closed) {
    ctx.on_session_closed(&ctx);
  }
}

}  // namespace pgproxy::session
