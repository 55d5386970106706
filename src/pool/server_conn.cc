#include "pgproxy/pool/server_conn.h"

#include <event2/event.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/stream_io.h"
#include "pgproxy/pool/pool.h"
#include "pgproxy/session/context.h"

namespace pgproxy::pool {
using net::kReadsPerWakeup;
using net::wouldBlock;

ServerConn::ServerConn(Pool& pool, std::uint64_t id)
    : pool_(pool),
      id_(id),
      statements_(pool.set().statements()),
      created_ms_(base::monotonicMs()) {}

ServerConn::~ServerConn() {
  for (event* ev : {read_ev_, write_ev_}) {
    if (ev) {
      event_free(ev);
    }
  }
  if (ssl_) {
    SSL_free(ssl_);
  }
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

void ServerConn::setSharedState(ServerState s) {
  if (s == shared_state_) {
    return;
  }
  pool_.set().ctx().shared_pools->moveServer(pool_.sharedEntry(), shared_state_, s);
  shared_state_ = s;
}

void ServerConn::markIdle() {
  state_ = State::kIdle;
  idle_since_ms_ = base::monotonicMs();
}

void ServerConn::adoptState(const Params& base, const Params& reported, const Params& extras) {
  for (const Params* p : {&base, &reported}) {
    for (const auto& [name, value] : p->entries()) {
      if (isReportedSettable(name) && (p == &reported || !reported.get(name))) {
        params_.set(name, value);
      }
    }
  }
  extras_ = extras;
  digest_ = pool::stateDigest(params_, Params(), extras_);
}

void ServerConn::setExtras(Params extras) {
  extras_ = std::move(extras);
  digest_ = pool::stateDigest(params_, Params(), extras_);
}

void ServerConn::start() {
  session::Context& ctx = pool_.set().ctx();
  const auto& m = ctx.config->mappings[pool_.mapping()];
  const auto& b = m.backends[pool_.backend()];
  upstream::ConnectTarget t =
      upstream::ownConnection(m, b, ctx.tls ? ctx.tls->backend(pool_.mapping()) : nullptr);
  connector_ = std::make_unique<upstream::Connector>(ctx.base, ctx.dns, *ctx.config);
  connector_->start(std::move(t), onConnected, this);
}

void ServerConn::onConnected(void* arg, upstream::Connector::Result r) {
  auto* s = static_cast<ServerConn*>(arg);
  session::Context& ctx = s->pool_.set().ctx();
  const auto& m = ctx.config->mappings[s->pool_.mapping()];
  std::size_t slot = ctx.backend_slots[s->pool_.mapping()][s->pool_.backend()];
  if (r.fd < 0) {
    const std::string key = m.backends[s->pool_.backend()].key();
    if (ctx.backends->recordFailure(slot, m.health.enabled ? m.health.fall : 1, r.err, r.error)) {
      LOG_WARN("backend %s of \"%s\" is down: %s", key.c_str(), m.external.c_str(),
               r.error.c_str());
    }
    s->close("could not connect to backend " + key + ": " + r.error);
    return;
  }
  if (ctx.backends->recordSessionSuccess(slot, m.health.enabled)) {
    LOG_INFO("backend %s of \"%s\" is reachable again",
             m.backends[s->pool_.backend()].key().c_str(), m.external.c_str());
  }
  s->fd_ = r.fd;
  s->ssl_ = r.ssl;
  socklen_t len = sizeof(s->addr_);
  getpeername(s->fd_, &s->addr_.sa, &len);
  s->read_ev_ = event_new(ctx.base, s->fd_, EV_READ | EV_PERSIST, onSocket, s);
  s->write_ev_ = event_new(ctx.base, s->fd_, EV_WRITE | EV_PERSIST, onSocket, s);
  s->state_ = State::kLogin;
  s->login_ = std::make_unique<auth::ServerLogin>(s->pool_.user(), s->pool_.credentials());
  s->out_ = auth::ServerLogin::startupPacket(
      {{"user", s->pool_.user()}, {"database", s->pool_.database()}});
  event_add(s->read_ev_, nullptr);
  s->connector_.reset();  // we are inside its callback: it returns without touching itself
  s->flushOut();
}

void ServerConn::onSocket(int, short what, void* arg) {
  auto* s = static_cast<ServerConn*>(arg);
  if (what & EV_WRITE) {
    s->writable();
    return;
  }
  s->readable();
}

void ServerConn::readable() {
  for (int i = 0; i < kReadsPerWakeup; ++i) {
    int err = 0;
    char* buffer = net::ioBuffer();
    ssize_t n = net::streamRead(fd_, ssl_, buffer, net::kIoChunk, err);
    if (n == 0 || (n < 0 && !wouldBlock(err) && err != EINTR)) {
      const char* what = state_ == State::kIdle ? " while idle" : "";
      close(n == 0 ? std::string("the server closed the connection") + what
                   : "the server connection failed: " + base::errnoText(err));
      return;
    }
    if (n < 0) {
      return;
    }
    std::string_view bytes(buffer, static_cast<std::size_t>(n));
    switch (state_) {
      case State::kLogin:
        onLogin(bytes);
        return;  // the login is a few small messages: one read at a time
      case State::kInternal:
        onInternal(bytes);
        return;
      case State::kLinked:
        onLinked(bytes);
        return;
      case State::kIdle:
        onIdle(bytes);
        return;
      default:
        return;
    }
  }
}

bool ServerConn::stillIdle() {
  if (state_ != State::kIdle) {
    return state_ != State::kClosed;
  }
  // The loop may not have run since the server's last words came (a terminated backend's FATAL
  // and EOF): whatever is waiting on the socket is read now, so that a server that died while
  // idle is closed here and not linked to a client whose query it would lose.
  char byte;
  ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n != 0 && !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) {
    readable();
  }
  return state_ == State::kIdle;
}

void ServerConn::writable() {
  if (!flushOut()) {
    return;
  }
  if (out_.empty() && state_ == State::kLinked && client_) {
    client_->serverDrained();
  }
}

bool ServerConn::flushOut() {
  int err = 0;
  switch (net::drainPending(fd_, ssl_, out_, err)) {
    case net::Drain::kBlocked:
      event_add(write_ev_, nullptr);
      return true;
    case net::Drain::kFailed:
      close("cannot write to the server: " + base::errnoText(err));
      return false;
    case net::Drain::kDone:
      event_del(write_ev_);
      return true;
  }
  return true;
}

void ServerConn::recordParam(std::string_view body) {
  std::string_view name, value;
  if (parseParameterStatus(body, name, value)) {
    params_.set(name, value);
    digest_ = pool::stateDigest(params_, Params(), extras_);
  }
}

void ServerConn::onLogin(std::string_view bytes) {
  auth::ServerLogin::Step step = login_->feed(bytes);
  out_ += step.send;
  if (step.kind == auth::ServerLogin::Step::kFailed) {
    std::string error = step.response;
    bool refused = !error.empty();
    if (!refused) {
      error =
          proto::buildFatal(proto::sqlstate::kInvalidAuthorization,
                            "pgproxy could not log in to the backend for this user: " + step.error);
    }
    LOG_WARN("pool %s: login failed: %s", pool_.describe().c_str(),
             refused ? auth::errorField(std::string_view(error).substr(5), 'M').c_str()
                     : step.error.c_str());
    login_.reset();
    fail(step.error, std::move(error), refused);
    return;
  }
  if (!flushOut()) {
    return;
  }
  if (step.kind != auth::ServerLogin::Step::kReady) {
    return;
  }
  // The greeting: ParameterStatus (the server's state) and BackendKeyData (for cancels).
  proto::MessageFramer greeting(proto::MessageFramer::Framing::kPgMessages, std::string_view("SK"),
                                0);
  greeting.feed(login_->greeting(), [&](const proto::MessageFramer::Message& m) {
    if (m.type == 'S' && m.length - 4 == m.text.size()) {
      recordParam(m.text);
    } else if (m.type == 'K' && m.text.size() >= 8) {
      backend_pid_ = proto::readU32(m.text.data());
      backend_key_ = proto::readU32(m.text.data() + 4);
    }
  });
  bool leftover = !login_->takeLeftover().empty();
  login_.reset();
  if (leftover) {
    close("the server sent data after its ReadyForQuery");
    return;
  }
  state_ = State::kIdle;
  pool_.serverUp(this);
}

void ServerConn::attach(PoolClient* client, const std::string& sync) {
  client_ = client;
  granted_to = nullptr;
  setSharedState(ServerState::kActive);
  if (sync.empty()) {
    state_ = State::kLinked;
    client->linked({});
    return;
  }
  state_ = State::kInternal;
  internal_error_.clear();
  out_ += proto::buildMessage('Q', std::string(sync) + '\0');
  flushOut();
}

void ServerConn::runInternal(const std::string& query, bool for_check_) {
  state_ = State::kInternal;
  for_check = for_check_;
  setSharedState(ServerState::kUsed);
  internal_error_.clear();
  out_ += proto::buildMessage('Q', query + '\0');
  flushOut();
}

void ServerConn::onInternal(std::string_view bytes) {
  bool done = false;
  std::size_t used = framer_.feedUntil(bytes, [&](const proto::MessageFramer::Message& m) {
    if (m.type == 'S' && m.length - 4 == m.text.size()) {
      recordParam(m.text);
    } else if (m.type == 'E' && internal_error_.empty()) {
      std::string sqlstate = auth::errorField(m.text, 'C');
      internal_error_ =
          proto::buildFatal(sqlstate.empty() ? "XX000" : sqlstate, auth::errorField(m.text, 'M'));
    } else if (m.type == 'Z' && !m.text.empty()) {
      last_status_ = m.text[0];
      done = true;
      return false;
    }
    return true;
  });
  if (framer_.lost() || (done && used != bytes.size())) {
    close("the server's reply to pgproxy's query did not frame");
    return;
  }
  if (done) {
    internalDone();
  }
}

void ServerConn::internalDone() {
  if (client_) {
    // The client's state is set (or could not be): the link is up.
    state_ = State::kLinked;
    std::string error = std::move(internal_error_);
    internal_error_.clear();
    client_->linked(std::move(error));
    return;
  }
  if (!internal_error_.empty() || last_status_ != 'I') {
    const char* which = for_check ? "server_check_query" : "server_reset_query";
    std::string why = internal_error_.empty()
                          ? std::string("it left a transaction open")
                          : auth::errorField(std::string_view(internal_error_).substr(5), 'M');
    close(std::string(which) + " failed: " + why);
    return;
  }
  state_ = State::kIdle;
  pool_.serverIdle(this);
}

bool ServerConn::send(std::string_view bytes) {
  if (state_ == State::kClosed) {
    return true;
  }
  if (out_.empty()) {
    int err = 0;
    ssize_t w = net::streamWrite(fd_, ssl_, bytes.data(), bytes.size(), err);
    if (w < 0 && !wouldBlock(err) && err != EINTR) {
      close("cannot write to the server: " + base::errnoText(err));
      return true;
    }
    bytes.remove_prefix(w > 0 ? static_cast<std::size_t>(w) : 0);
    if (bytes.empty()) {
      return true;
    }
    event_add(write_ev_, nullptr);
  }
  out_.append(bytes);
  return out_.size() < net::kMaxAhead;
}

void ServerConn::resumeReading() {
  if (reading_paused_ && state_ == State::kLinked) {
    reading_paused_ = false;
    event_add(read_ev_, nullptr);
  }
}

void ServerConn::onLinked(std::string_view bytes) {
  bool pause = false;
  while (!bytes.empty()) {
    bool ready = false;
    char status = 'I';
    PoolClient* client = client_;
    ++busy_;
    std::size_t used = framer_.feedUntil(bytes, [&](const proto::MessageFramer::Message& m) {
      if (m.type == 'S' && m.length - 4 == m.text.size()) {
        recordParam(m.text);
        std::string_view name, value;
        if (parseParameterStatus(m.text, name, value) && client_) {
          client_->serverParam(name, value);
        }
      } else if (m.type == 'Z' && !m.text.empty()) {
        status = m.text[0];
        ready = true;
        return false;
      }
      return true;
    });
    if (framer_.lost()) {
      --busy_;
      close("the server's messages did not frame");
      return;
    }
    if (ready) {
      last_status_ = status;
    }
    // The client always takes the bytes (at most one read's worth beyond its bound); false asks
    // us to stop reading until it has written them. A ReadyForQuery goes last, after the client
    // has decided what it means: in statement mode a transaction's 'T' is replaced by the refusal.
    constexpr std::size_t kReadyLength = 6;
    std::size_t held = ready ? std::min(used, kReadyLength) : 0;
    pause |= client_ && !client_->fromServer(bytes.substr(0, used - held), held > 0);
    Release r = Release::kKeep;
    if (ready && client_) {
      r = client_->ready(status);
      if (r != Release::kStatementInTransaction && client_ == client) {
        pause |= !client->fromServer(bytes.substr(used - held, held), false);
      }
    }
    bytes.remove_prefix(used);
    --busy_;
    if (client_ != client || !client_) {
      // The client left during a callback: what it had in flight is lost with it.
      client_ = nullptr;
      close("its client left");
      return;
    }
    if (r == Release::kKeep) {
      continue;
    }
    client_ = nullptr;
    if (r == Release::kStatementInTransaction) {
      close("a transaction was opened in statement pooling mode");
      return;
    }
    if (!bytes.empty()) {
      close("the server sent data after the transaction ended");
      return;
    }
    pool_.release(this);
    return;
  }
  if (pause) {
    reading_paused_ = true;
    event_del(read_ev_);
  }
}

void ServerConn::onIdle(std::string_view bytes) {
  // An idle server has nothing to say; a notice before it goes (an administrator's
  // pg_terminate_backend, idle_session_timeout) is logged with the close.
  std::string why = "the server sent data while idle";
  if (!bytes.empty() && bytes[0] == 'E' && bytes.size() > 5) {
    why += ": " + auth::errorField(bytes.substr(5), 'M');
  }
  close(why);
}

void ServerConn::detach(bool client_quiet, const char* holding) {
  client_ = nullptr;
  if (state_ == State::kClosed || busy_ > 0) {
    return;  // in a callback: the caller sees the client gone and closes
  }
  if (*holding) {
    close(std::string("its client left it holding ") + holding);
    return;
  }
  if (client_quiet && state_ == State::kLinked && last_status_ == 'I' && framer_.atBoundary() &&
      out_.empty()) {
    pool_.release(this);
    return;
  }
  close("its client left in the middle of a transaction");
}

void ServerConn::close(const std::string& why) {
  fail(why, {}, false);
}

void ServerConn::fail(const std::string& why, std::string waiter_error, bool refused) {
  if (state_ == State::kClosed) {
    return;
  }
  // As PgBouncer does: every server close says why, the routine ones (idle timeout, lifetime)
  // included, since an operator matching backend logs needs each.
  LOG_INFO("pool %s: server connection %llu closed: %s", pool_.describe().c_str(),
           static_cast<unsigned long long>(id_), why.c_str());
  bool logged_in = state_ == State::kIdle || state_ == State::kLinked;
  bool starting = state_ == State::kConnecting || state_ == State::kLogin;
  state_ = State::kClosed;
  connector_.reset();  // possibly inside its callback, which touches nothing after calling us
  for (event* ev : {read_ev_, write_ev_}) {
    if (ev) {
      event_del(ev);
    }
  }
  if (logged_in && fd_ >= 0 && out_.empty()) {
    // Terminate, best effort, so that the server does not log an unexpected EOF.
    int err = 0;
    (void)net::streamWrite(fd_, ssl_, "X\0\0\0\4", 5, err);
  }
  if (ssl_ && SSL_is_init_finished(ssl_)) {
    SSL_shutdown(ssl_);
  }
  PoolClient* client = client_;
  client_ = nullptr;
  if (client) {
    client->serverLost(why);
  }
  if (starting) {
    if (waiter_error.empty()) {
      waiter_error = proto::buildFatal(proto::sqlstate::kConnectionFailure, why);
    }
    pool_.serverLoginFailed(this, std::move(waiter_error), refused);
    return;
  }
  pool_.serverGone(this);
}

}  // namespace pgproxy::pool
