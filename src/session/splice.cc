// The splice: once the backend has accepted the session, bytes move both ways with plain
// recv/send (SSL_read/SSL_write on a side pgproxy terminates) through one buffer shared by the
// whole worker (a worker is one thread). Nothing is allocated per read; a session holds memory
// only for bytes its peer has not taken yet (at most one read's worth per direction), and while
// it does, it stops reading the other side.
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>

#include "pgproxy/audit/audit.h"
#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/stream_io.h"
#include "pgproxy/proto/redact.h"
#include "pgproxy/session/session.h"

namespace pgproxy::session {
namespace {

using net::kReadsPerWakeup;
using net::wouldBlock;

// TLS 1.3 encrypts alerts: a close_notify travels as an application-data record of 19 bytes (the
// 2-byte alert, its inner content type and a 16-byte AEAD tag). No PostgreSQL client data fits a
// record that short (its smallest message, 5 bytes, makes 22), so in passthrough that record is
// the client's goodbye.
constexpr std::uint32_t kTls13AlertRecord = 2 + 1 + 16;

}  // namespace

// Takes a bufferevent's socket and the bytes still in its buffers, then frees it without closing
// the socket.
int Session::detach(bufferevent* bev, std::string& unread, std::string& unsent) {
  int fd = bufferevent_getfd(bev);
  auto drain = [](evbuffer* buf, std::string& out) {
    std::size_t n = evbuffer_get_length(buf);
    out.resize(n);
    if (n > 0) {
      evbuffer_remove(buf, out.data(), n);
    }
  };
  drain(bufferevent_get_input(bev), unread);
  drain(bufferevent_get_output(bev), unsent);
  bufferevent_disable(bev, EV_READ | EV_WRITE);
  bufferevent_setfd(bev, -1);
  bufferevent_free(bev);
  return fd;
}

void Session::startSplice(std::string backend_first) {
  if (ctx_.config->idle_timeout_ms) {
    last_activity_ms_ = base::monotonicMs();
    armTimer(ctx_.config->idle_timeout_ms);
  } else if (timer_) {
    event_free(timer_);  // without idle_timeout, idle sessions hold no timer
    timer_ = nullptr;
  }
  setState(State::kSplice);
  addresses_.reset();  // an idle session keeps nothing of its connect
  endHandshake();
  ctx_.metrics.observe(metrics::Histogram::kHandshake, base::monotonicUs() - started_us_);
  ctx_.metrics.active(metricIndex(), 1);
  counted_active_ = true;
  ctx_.backends->addActive(backendSlot(), 1);

  std::string clientIn, clientOut, backendIn, backendOut;
  if (client_) {
    client_fd_ = detach(client_, clientIn, clientOut);
    client_ = nullptr;
  } else {
    clientIn.swap(startup_);  // terminated: the StartupMessage read inside TLS
  }
  if (backend_) {
    backend_fd_ = detach(backend_, backendIn, backendOut);
    backend_ = nullptr;
  }
  backendIn.insert(0, backend_first);

  if (mode_ == Mode::kPlaintext || terminated()) {
    scanning_key_ = true;
    if (ctx_.config->instance_id != 0) {
      // Several instances as one: the client sees pgproxy's own key, which names this instance,
      // so that a cancel sent to another instance comes here (cancel/registry.h).
      unsigned char key[8];
      RAND_bytes(key, sizeof(key));
      key_scanner_.rewriteTo(
          cancel::issuedPid(proto::readU32(reinterpret_cast<char*>(key)), ctx_.config->instance_id),
          proto::readU32(reinterpret_cast<char*>(key) + 4));
    }
    // Client messages are typed after the startup packet, which is the first thing forwarded.
    client_frames_ = proto::FrameTracker(proto::FrameTracker::Kind::kPgMessages, clientIn.size());
    checking_client_sasl_ = terminated() && !authenticated_;
    if (ctx_.config->idle_timeout_ms > 0) {
      backend_frames_ =
          std::make_unique<proto::FrameTracker>(proto::FrameTracker::Kind::kPgMessages);
    }
    bool statements =
        audit::enabled() && audit::settings().statements != config::AuditStatements::kNone;
    if (ctx_.config->log_protocol || statements) {
      Taps& t = taps();
      t.up = std::make_unique<proto::MessageFramer>(proto::MessageFramer::Framing::kPgMessages,
                                                    true, clientIn.size());
      if (ctx_.config->log_protocol) {
        t.down = std::make_unique<proto::MessageFramer>(proto::MessageFramer::Framing::kPgMessages,
                                                        false, 0);
      }
    }
  } else {
    cancel::BackendAddr addr{};
    socklen_t len = sizeof(addr);
    if (getpeername(backend_fd_, &addr.sa, &len) == 0) {
      cancel_slot_ = ctx_.cancels->claim(static_cast<std::int32_t>(getpid()));
      if (cancel_slot_ >= 0) {
        ctx_.cancels->publishPassthrough(
            cancel_slot_, net::clientKey(reinterpret_cast<const sockaddr*>(&client_addr_)), addr,
            ctx_.config->mappings[mapping_].backend_proxy_protocol);
      }
    }
  }
  watchSockets();

  // A backend that closes before its first byte (a listener closing with connections in its
  // backlog, a dying server) has seen nothing but this: another backend can be given the same
  // bytes. Kept only until the backend's first byte, and only when there is another backend.
  if (backendIn.empty() && ctx_.config->mappings[mapping_].backends.size() > 1) {
    replay_ = clientIn;
  }
  // What the handshake left behind goes first: the ClientHello or StartupMessage to the backend.
  if (!inspect(true, clientIn.data(), clientIn.size()) ||
      !inspect(false, backendIn.data(), backendIn.size())) {
    return;
  }
  to_backend_ += backendOut + clientIn;
  to_client_ += clientOut + backendIn;
  event_add(client_read_, nullptr);
  event_add(backend_read_, nullptr);
  if (!to_backend_.empty() && !flush(false)) {
    return;
  }
  if (!to_client_.empty()) {
    flush(true);
  }
}

void Session::watchSockets() {
  auto make = [&](event*& ev, int fd, short what) {
    if (!ev && fd >= 0) {
      ev = event_new(ctx_.base, fd, what | EV_PERSIST, onSocketEvent, this);
    }
  };
  make(client_read_, client_fd_, EV_READ);
  make(client_write_, client_fd_, EV_WRITE);
  make(backend_read_, backend_fd_, EV_READ);
  make(backend_write_, backend_fd_, EV_WRITE);
}

void Session::onSocketEvent(int fd, short what, void* arg) {
  auto* s = static_cast<Session*>(arg);
  bool client = fd == s->client_fd_;
  switch (s->state_) {
    case State::kSplice:
      if (what & EV_READ) {
        s->relay(client);
      } else {
        s->flush(client);
      }
      break;
    case State::kPooled:
      if (what & EV_READ) {
        s->readPooledClient();
      } else {
        s->flushPooledClient();
      }
      break;
    case State::kTlsAccept:
      s->driveHandshake(true);
      break;
    case State::kTlsStartup:
      s->readTlsStartup();
      break;
    case State::kBackendTls:
      if (client) {
        s->flushLogin(true);  // what authenticate: true still owes the client
      } else {
        s->driveHandshake(false);
      }
      break;
    case State::kConnecting:
    case State::kUpstreamSsl:
      if (client && (what & EV_WRITE)) {
        s->flushLogin(true);
      }
      break;
    case State::kConsole:
      if (what & EV_READ) {
        s->readConsole();
      } else {
        s->flushConsole();
      }
      break;
    case State::kClientAuth:
      if (what & EV_READ) {
        s->readClientAuth();
      } else {
        s->flushLogin(true);
      }
      break;
    case State::kServerLogin:
      if (client) {
        s->flushLogin(true);
      } else if (what & EV_READ) {
        s->readServerLogin();
      } else {
        s->flushLogin(false);
      }
      break;
    case State::kClosing:
      if (client && (what & EV_WRITE)) {
        s->flush(true);
      }
      break;
    default:
      break;
  }
}

ssize_t Session::readSide(bool client, char* buf, std::size_t len, int& err) {
  return net::streamRead(client ? client_fd_ : backend_fd_, client ? client_ssl_ : backend_ssl_,
                         buf, len, err);
}

ssize_t Session::writeSide(bool client, const char* buf, std::size_t len, int& err) {
  return net::streamWrite(client ? client_fd_ : backend_fd_, client ? client_ssl_ : backend_ssl_,
                          buf, len, err);
}

bool Session::relay(bool from_client) {
  SSL* ssl = from_client ? client_ssl_ : backend_ssl_;
  // Nothing of this direction is held any more: the kernel may take the session (or take this
  // direction back).
  auto idle = [&] {
    if (!from_client) {
      maybeEnterKernel();
    }
    kernelRearm(from_client);
    return true;
  };
  for (int i = 0; i < kReadsPerWakeup; ++i) {
    int err = 0;
    char* buffer = net::ioBuffer();
    ssize_t n = readSide(from_client, buffer, net::kIoChunk, err);
    if (n == 0) {
      return onSpliceEof(from_client);
    }
    if (n < 0) {
      if (wouldBlock(err)) {
        kernelRead(from_client, true);
        return idle();
      }
      if (err == EINTR) {
        continue;
      }
      if (!from_client && retryBeforeFirstByte(base::errnoText(err).c_str())) {
        return false;
      }
      spliceSocketError(from_client, err);
      return false;
    }
    kernelRead(from_client, static_cast<std::size_t>(n) < net::kIoChunk);
    if (ctx_.config->idle_timeout_ms) {
      last_activity_ms_ = base::monotonicMs();
    }
    if (!replay_.empty()) {
      // The backend answered (the session stays with it), or more than the first packet went
      // upstream: either way there is nothing to replay any more.
      std::string().swap(replay_);
    }
    if (!inspect(from_client, buffer, static_cast<std::size_t>(n))) {
      return false;
    }
    std::string_view bytes(buffer, static_cast<std::size_t>(n));
    if (from_client && checking_client_sasl_ && !checkClientFirst(bytes)) {
      return false;
    }
    std::string rewritten;
    if (!from_client && terminated() && sasl_filter_.active()) {
      // Authentication phase of a terminated session: AuthenticationSASL loses its -PLUS offer.
      sasl_filter_.feed(bytes, rewritten);
      bytes = rewritten;
      if (!sasl_filter_.active() && sasl_filter_.removedPlus()) {
        LOG_DEBUG("session %llu: SCRAM-SHA-256-PLUS withheld from the client (terminated TLS)",
                  static_cast<unsigned long long>(id_));
      }
      if (bytes.empty()) {
        continue;  // a partial message, held until the rest arrives
      }
    }
    if (!kernelMayWrite(from_client, static_cast<std::size_t>(n))) {
      // Read from a paused direction while what the kernel redirected earlier still waits for
      // the peer.
      (from_client ? to_backend_ : to_client_).append(bytes);
      kernelWait(from_client);
      return true;
    }
    ssize_t w = writeSide(!from_client, bytes.data(), bytes.size(), err);
    if (w < 0) {
      if (!wouldBlock(err)) {
        spliceSocketError(!from_client, err);
        return false;
      }
      w = 0;
    }
    kernelWrote(!from_client, static_cast<std::size_t>(w));
    if (static_cast<std::size_t>(w) < bytes.size()) {
      // The peer is slower than the sender: keep the rest and stop reading until it is taken.
      (from_client ? to_backend_ : to_client_).assign(bytes.substr(static_cast<std::size_t>(w)));
      event_del(from_client ? client_read_ : backend_read_);
      event_add(from_client ? backend_write_ : client_write_, nullptr);
      return true;
    }
    if (static_cast<std::size_t>(n) < net::kIoChunk && !(ssl && SSL_pending(ssl) > 0)) {
      return idle();  // the socket is most likely drained: skip the recv that would say EAGAIN
    }
  }
  return idle();
}

Session::WriteResult Session::writePending(bool to_client, int& err) {
  event* writable = to_client ? client_write_ : backend_write_;
  std::string& pending = to_client ? to_client_ : to_backend_;
  std::size_t before = pending.size();
  net::Drain drained = net::drainPending(to_client ? client_fd_ : backend_fd_,
                                         to_client ? client_ssl_ : backend_ssl_, pending, err);
  kernelWrote(to_client, before - pending.size());
  switch (drained) {
    case net::Drain::kBlocked:
      event_add(writable, nullptr);
      return WriteResult::kBlocked;
    case net::Drain::kFailed:
      return WriteResult::kFailed;
    case net::Drain::kDone:
      break;
  }
  if (writable) {
    event_del(writable);
  }
  return WriteResult::kDone;
}

bool Session::flush(bool to_client) {
  int err = 0;
  switch (writePending(to_client, err)) {
    case WriteResult::kBlocked:
      if (state_ != State::kClosing) {
        event_del(to_client ? backend_read_ : client_read_);  // backpressure
      }
      return true;
    case WriteResult::kFailed:
      if (state_ == State::kClosing) {
        close(outcome_);  // the client is gone before reading our refusal
        return false;
      }
      if (!to_client && retryBeforeFirstByte(base::errnoText(err).c_str())) {
        return false;  // a listener that closed with us in its backlog resets on the first send
      }
      spliceSocketError(to_client, err);
      return false;
    case WriteResult::kDone:
      break;
  }
  if (state_ == State::kClosing) {
    close(outcome_);  // a refusal inside TLS has been delivered
    return false;
  }
  if (to_client) {
    if (backend_eof_) {
      close(Outcome::kOk);  // the backend is gone and the client has everything it sent
      return false;
    }
    event_add(backend_read_, nullptr);
    kernelRearm(false);
  } else if (client_eof_) {
    if (backend_ssl_) {
      SSL_shutdown(backend_ssl_);
    }
    ::shutdown(backend_fd_, SHUT_WR);  // the client's half-close, passed on in order
  } else {
    event_add(client_read_, nullptr);
    kernelRearm(true);
  }
  return true;
}

bool Session::retryBeforeFirstByte(const char* why) {
  if (replay_.empty()) {
    return false;
  }
  const auto& m = ctx_.config->mappings[mapping_];
  std::size_t failedSlot = backendSlot();
  std::string failed = backend().key();
  if (ctx_.backends->recordFailure(failedSlot, m.health.enabled ? m.health.fall : 1, ECONNRESET,
                                   why)) {
    LOG_WARN("backend %s of \"%s\" is down: %s", failed.c_str(), m.external.c_str(), why);
  }
  if (!pickBackend()) {
    return false;
  }
  LOG_INFO("session %llu: backend %s %s; trying %s", static_cast<unsigned long long>(id_),
           failed.c_str(), why, backend().key().c_str());
  // Back to connecting, as if the splice had not started: undo what startSplice counted.
  if (counted_active_) {
    ctx_.metrics.active(metricIndex(), -1);
    ctx_.backends->addActive(failedSlot, -1);
    counted_active_ = false;
  }
  ctx_.cancels->release(cancel_slot_);
  cancel_slot_ = -1;
  bytes_up_ -= std::min<std::uint64_t>(bytes_up_, replay_.size());
  resetBackend();
  event_del(client_read_);
  event_del(client_write_);
  std::string().swap(to_backend_);
  startup_ = std::move(replay_);  // startSplice sends it first, as it did the first time
  replay_.clear();
  connectToBackend();
  return true;
}

bool Session::onSpliceEof(bool client_side) {
  if (client_side) {
    // Half-close: the backend gets our FIN once it has everything the client sent, and its
    // remaining output still reaches the client.
    client_eof_ = true;
    event_del(client_read_);
    if (to_backend_.empty() && kernelEofReady(true)) {
      if (backend_ssl_) {
        SSL_shutdown(backend_ssl_);  // close_notify before the FIN
      }
      ::shutdown(backend_fd_, SHUT_WR);
    }
    return true;
  }
  if (retryBeforeFirstByte("closed the connection before answering")) {
    return false;
  }
  // A PostgreSQL backend never half-closes: once it is gone, finish delivering and end.
  backend_eof_ = true;
  event_del(backend_read_);
  if (to_client_.empty() && kernelEofReady(false)) {
    close(Outcome::kOk);
    return false;
  }
  return true;
}

// A reset after either side has already said goodbye is how TLS sessions usually end (close_notify
// racing the FIN); only a reset mid-conversation is an error.
Outcome Session::spliceErrorOutcome() const {
  if (client_eof_ || backend_eof_ || kernelSawFin()) {
    return Outcome::kOk;
  }
  // A client that sent close_notify or Terminate ('X') has finished, whoever resets next: psql
  // resets when the server's last bytes are still unread, and a backend that exits on Terminate
  // with the client's close_notify unread in its socket resets instead of sending its FIN.
  bool goodbye = false;
  if (!client_frames_.lost()) {
    int last = client_frames_.lastType();
    goodbye = mode_ == Mode::kPlaintext || terminated()
                  ? last == 'X'
                  : last == 0x15 /* TLS 1.2 alert */ ||
                        (last == 0x17 && client_frames_.lastLength() == kTls13AlertRecord);
  }
  if (goodbye) {
    return Outcome::kOk;
  }
  return client_reset_ ? Outcome::kClientClosedEarly : Outcome::kError;
}

void Session::spliceSocketError(bool client_side, int err) {
  if (err == ETIMEDOUT) {
    // Only tcp_keepalive or tcp_user_timeout time out an established connection: the peer
    // vanished without a FIN or RST (a dead host, a dropped route, a firewall that forgot us).
    LOG_INFO("session %llu: %s %s stopped answering (tcp_keepalive / tcp_user_timeout); closing",
             static_cast<unsigned long long>(id_), client_side ? "client" : "backend",
             client_side ? peer().c_str() : backend().key().c_str());
    close(Outcome::kPeerTimeout);
    return;
  }
  LOG_DEBUG("session %llu: %s socket error: %s", static_cast<unsigned long long>(id_),
            client_side ? "client" : "backend", base::errnoText(err).c_str());
  client_reset_ = client_side;
  close(spliceErrorOutcome());
}

// Everything that looks at the bytes in flight: counters, the goodbye tracker, the cancel key of
// plaintext sessions, and the protocol log.
bool Session::inspect(bool from_client, char* data, std::size_t len) {
  if (len == 0) {
    return true;
  }
  std::string_view bytes(data, len);
  if (from_client) {
    bytes_up_ += bytes.size();
    ctx_.metrics.add(metricIndex(), metrics::MappingCounter::kBytesUp, bytes.size());
    client_frames_.feed(bytes);
  } else {
    bytes_down_ += bytes.size();
    ctx_.metrics.add(metricIndex(), metrics::MappingCounter::kBytesDown, bytes.size());
    if (backend_frames_) {
      backend_frames_->feed(bytes);
    }
    if (scanning_key_ &&
        key_scanner_.feed(data, len) != proto::BackendKeyScanner::State::kScanning) {
      scanning_key_ = false;
      if (key_scanner_.state() == proto::BackendKeyScanner::State::kFound) {
        publishBackendKey();
        key_scanner_ = proto::BackendKeyScanner();  // a 3.2 key's buffer is not kept all session
      } else if (key_scanner_.state() == proto::BackendKeyScanner::State::kInvalid) {
        // Not a PostgreSQL server (or a broken one): the client would only choke on it. The
        // bytes are dropped rather than relayed, and nothing is replayed elsewhere: the backend
        // answered, so it may have acted on the startup packet.
        char what[96];
        std::snprintf(what, sizeof(what), "message type 0x%02x during login",
                      static_cast<unsigned char>(key_scanner_.badType()));
        std::string why = "backend " + backend().key() +
                          " sent data that is not the PostgreSQL protocol (" + what + ")";
        LOG_WARN("session %llu: %s; closing", static_cast<unsigned long long>(id_), why.c_str());
        if (bytes_down_ == bytes.size()) {
          // Nothing of it reached the client yet: it can still read a proper error.
          refuse(Outcome::kProtocolError, proto::sqlstate::kProtocolViolation, "pgproxy: " + why);
        } else {
          close(Outcome::kProtocolError);
        }
        return false;
      }
    }
  }
  if (taps_) {
    tapMessages(from_client, bytes);
  }
  return true;
}

bool Session::checkClientFirst(std::string_view bytes) {
  constexpr std::size_t kCap = proto::SaslMechanismFilter::kMaxMessage + 5;
  std::string_view first = bytes;
  if (!client_first_.empty()) {
    client_first_.append(bytes.substr(0, kCap - std::min(kCap, client_first_.size())));
    first = client_first_;
  }
  proto::ScramClientFirst verdict = proto::checkSaslInitialResponse(first);
  if (verdict == proto::ScramClientFirst::kNeedMore && first.size() < kCap) {
    if (client_first_.empty()) {
      client_first_.assign(bytes);  // the rest of the message is still to come
    }
    return true;
  }
  checking_client_sasl_ = false;
  OPENSSL_cleanse(client_first_.data(), client_first_.size());  // may hold a password
  std::string().swap(client_first_);
  if (verdict != proto::ScramClientFirst::kBindingDowngrade || !sasl_filter_.removedPlus()) {
    return true;
  }
  const auto& m = ctx_.config->mappings[mapping_];
  refuse(Outcome::kProtocolError, proto::sqlstate::kInvalidAuthorization,
         "pgproxy terminates TLS for \"" + m.external +
             "\", so SCRAM channel binding cannot reach the backend",
         "Connect with channel_binding=disable, or use tls: passthrough for this mapping to keep "
         "channel binding end to end.");
  return false;
}

void Session::publishBackendKey() {
  cancel::BackendAddr addr{};
  socklen_t len = sizeof(addr);
  if (getpeername(backend_fd_, &addr.sa, &len) != 0) {
    return;
  }
  cancel_slot_ = ctx_.cancels->claim(static_cast<std::int32_t>(getpid()));
  if (cancel_slot_ < 0) {
    LOG_WARN("session %llu: cancel registry full; this session cannot be cancelled",
             static_cast<unsigned long long>(id_));
    return;
  }
  bool proxy = ctx_.config->mappings[mapping_].backend_proxy_protocol;
  if (key_scanner_.rewritten()) {
    // The client holds pgproxy's key: registered as a pooled client's is, linked to the server's.
    std::uint32_t pid = 0, key = 0;
    key_scanner_.issued(pid, key);
    std::string secret;
    proto::appendU32(secret, key);
    ctx_.cancels->publishPooled(cancel_slot_, pid, secret, proxy);
    ctx_.cancels->linkPooled(cancel_slot_, addr, key_scanner_.pid(),
                             proto::readU32(key_scanner_.key().data()));
    return;
  }
  ctx_.cancels->publishKey(cancel_slot_, key_scanner_.pid(), key_scanner_.key(), addr, proxy);
}

void Session::tapMessages(bool from_client, std::string_view bytes) {
  proto::MessageFramer* framer = from_client ? taps_->up.get() : taps_->down.get();
  if (!framer) {
    return;
  }
  bool log = ctx_.config->log_protocol;
  framer->feed(bytes, [&](const proto::MessageFramer::Message& m) {
    if (log) {
      logProtocol(from_client, m);
    }
    if (from_client && (m.type == 'Q' || m.type == 'P')) {
      auditStatement(m.type, m.length, m.text);
    }
  });
}

void Session::logProtocol(bool from_client, const proto::MessageFramer::Message& m) {
  // SQL can carry passwords (ALTER ROLE ... PASSWORD '...'): never logged as sent.
  const std::string sql = proto::redactPasswords(m.text);
  std::string text;
  for (char c : sql) {
    if (c == '\0') {
      text += "\\0";  // Parse: statement name, NUL, query
    } else {
      text += (static_cast<unsigned char>(c) < 0x20 || c == '"') ? ' ' : c;
    }
  }
  LOG_INFO("session %llu: protocol %s type=%c length=%u%s%s%s",
           static_cast<unsigned long long>(id_),
           from_client ? "client->backend" : "backend->client",
           std::isprint(static_cast<unsigned char>(m.type)) ? m.type : '?', m.length,
           text.empty() ? "" : " sql=\"", text.c_str(), text.empty() ? "" : "\"");
}

}  // namespace pgproxy::session
