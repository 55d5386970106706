// The splice: once the backend has accepted the session, bytes move both ways with plain
// recv/send through one buffer shared by the whole worker (a worker is one thread). Nothing is
// allocated per read; a session holds memory only for bytes its peer has not taken yet (at most
// one read's worth per direction), and while it does, it stops reading the other side.
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>

#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/session/session.h"

namespace pgproxy::session {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
// A busy session yields to the others after this many reads per wakeup.
constexpr int kReadsPerWakeup = 4;
char g_buffer[kReadChunk];

// Takes a bufferevent's socket and the bytes still in its buffers, then frees it without closing
// the socket.
int detach(bufferevent* bev, std::string& unread, std::string& unsent) {
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

bool wouldBlock(int err) {
  return err == EAGAIN || err == EWOULDBLOCK;
}

}  // namespace

void Session::startSplice() {
  if (timer_) {
    event_free(timer_);  // idle sessions hold no timer
    timer_ = nullptr;
  }
  setState(State::kSplice);
  ctx_.metrics.observe(metrics::Histogram::kHandshake, base::monotonicUs() - started_us_);
  ctx_.metrics.active(metricIndex(), 1);
  counted_active_ = true;

  std::string clientIn, clientOut, backendIn, backendOut;
  client_fd_ = detach(client_, clientIn, clientOut);
  client_ = nullptr;
  backend_fd_ = detach(backend_, backendIn, backendOut);
  backend_ = nullptr;

  if (mode_ == Mode::kPlaintext) {
    scanning_key_ = true;
    // Client messages are typed after the startup packet, which is the first thing forwarded.
    client_frames_ = proto::FrameTracker(proto::FrameTracker::Kind::kPgMessages, clientIn.size());
    if (ctx_.config->log_protocol) {
      log_up_ = std::make_unique<proto::MessageFramer>(proto::MessageFramer::Framing::kPgMessages,
                                                       true, clientIn.size());
      log_down_ = std::make_unique<proto::MessageFramer>(proto::MessageFramer::Framing::kPgMessages,
                                                         false, 0);
    }
  } else {
    cancel::BackendAddr addr{};
    socklen_t len = sizeof(addr);
    if (getpeername(backend_fd_, &addr.sa, &len) == 0) {
      cancel_slot_ = ctx_.cancels->claim(static_cast<std::int32_t>(getpid()));
      if (cancel_slot_ >= 0) {
        ctx_.cancels->publishPassthrough(
            cancel_slot_, cancel::clientKey(reinterpret_cast<const sockaddr*>(&client_addr_)),
            addr);
      }
    }
  }
  client_read_ = event_new(ctx_.base, client_fd_, EV_READ | EV_PERSIST, onSpliceReadable, this);
  client_write_ = event_new(ctx_.base, client_fd_, EV_WRITE | EV_PERSIST, onSpliceWritable, this);
  backend_read_ = event_new(ctx_.base, backend_fd_, EV_READ | EV_PERSIST, onSpliceReadable, this);
  backend_write_ = event_new(ctx_.base, backend_fd_, EV_WRITE | EV_PERSIST, onSpliceWritable, this);

  // What the handshake left behind goes first: the ClientHello or StartupMessage to the backend.
  inspect(true, clientIn);
  inspect(false, backendIn);
  to_backend_ = backendOut + clientIn;
  to_client_ = clientOut + backendIn;
  event_add(client_read_, nullptr);
  event_add(backend_read_, nullptr);
  if (!to_backend_.empty() && !flush(false)) {
    return;
  }
  if (!to_client_.empty()) {
    flush(true);
  }
}

void Session::onSpliceReadable(int fd, short, void* arg) {
  auto* s = static_cast<Session*>(arg);
  s->relay(fd == s->client_fd_);
}

void Session::onSpliceWritable(int fd, short, void* arg) {
  auto* s = static_cast<Session*>(arg);
  s->flush(fd == s->client_fd_);
}

bool Session::relay(bool from_client) {
  int from = from_client ? client_fd_ : backend_fd_;
  int to = from_client ? backend_fd_ : client_fd_;
  for (int i = 0; i < kReadsPerWakeup; ++i) {
    ssize_t n = ::recv(from, g_buffer, sizeof(g_buffer), 0);
    if (n == 0) {
      return onSpliceEof(from_client);
    }
    if (n < 0) {
      int err = errno;
      if (wouldBlock(err)) {
        return true;
      }
      if (err == EINTR) {
        continue;
      }
      LOG_DEBUG("session %llu: %s socket error: %s", static_cast<unsigned long long>(id_),
                from_client ? "client" : "backend", base::errnoText(err).c_str());
      client_reset_ = from_client;
      close(spliceErrorOutcome());
      return false;
    }
    std::string_view bytes(g_buffer, static_cast<std::size_t>(n));
    inspect(from_client, bytes);
    ssize_t w = ::send(to, g_buffer, bytes.size(), MSG_NOSIGNAL);
    if (w < 0) {
      int err = errno;
      if (!wouldBlock(err)) {
        LOG_DEBUG("session %llu: %s socket error: %s", static_cast<unsigned long long>(id_),
                  from_client ? "backend" : "client", base::errnoText(err).c_str());
        client_reset_ = !from_client;
        close(spliceErrorOutcome());
        return false;
      }
      w = 0;
    }
    if (static_cast<std::size_t>(w) < bytes.size()) {
      // The peer is slower than the sender: keep the rest and stop reading until it is taken.
      (from_client ? to_backend_ : to_client_).assign(bytes.substr(static_cast<std::size_t>(w)));
      event_del(from_client ? client_read_ : backend_read_);
      event_add(from_client ? backend_write_ : client_write_, nullptr);
      return true;
    }
    if (bytes.size() < sizeof(g_buffer)) {
      return true;  // the socket is most likely drained: skip the recv that would say EAGAIN
    }
  }
  return true;
}

bool Session::flush(bool to_client) {
  std::string& pending = to_client ? to_client_ : to_backend_;
  int fd = to_client ? client_fd_ : backend_fd_;
  event* writable = to_client ? client_write_ : backend_write_;
  while (!pending.empty()) {
    ssize_t w = ::send(fd, pending.data(), pending.size(), MSG_NOSIGNAL);
    if (w > 0) {
      pending.erase(0, static_cast<std::size_t>(w));
      continue;
    }
    int err = errno;
    if (w < 0 && wouldBlock(err)) {
      event_del(to_client ? backend_read_ : client_read_);
      event_add(writable, nullptr);
      return true;
    }
    if (w < 0 && err == EINTR) {
      continue;
    }
    client_reset_ = to_client;
    close(spliceErrorOutcome());
    return false;
  }
  std::string().swap(pending);  // an idle session keeps no buffer
  event_del(writable);
  if (to_client) {
    if (backend_eof_) {
      close(Outcome::kOk);  // the backend is gone and the client has everything it sent
      return false;
    }
    event_add(backend_read_, nullptr);
  } else if (client_eof_) {
    ::shutdown(backend_fd_, SHUT_WR);  // the client's half-close, passed on in order
  } else {
    event_add(client_read_, nullptr);
  }
  return true;
}

bool Session::onSpliceEof(bool client_side) {
  if (client_side) {
    // Half-close: the backend gets our FIN once it has everything the client sent, and its
    // remaining output still reaches the client.
    client_eof_ = true;
    event_del(client_read_);
    if (to_backend_.empty()) {
      ::shutdown(backend_fd_, SHUT_WR);
    }
    return true;
  }
  // A PostgreSQL backend never half-closes: once it is gone, finish delivering and end.
  backend_eof_ = true;
  event_del(backend_read_);
  if (to_client_.empty()) {
    close(Outcome::kOk);
    return false;
  }
  return true;
}

// A reset after either side has already said goodbye is how TLS sessions usually end (close_notify
// racing the FIN); only a reset mid-conversation is an error.
Outcome Session::spliceErrorOutcome() const {
  if (client_eof_ || backend_eof_) {
    return Outcome::kOk;
  }
  if (!client_reset_) {
    return Outcome::kError;
  }
  // A client that sent close_notify (TLS alert record) or Terminate ('X') and then reset is a
  // client that finished; psql does this when the server's last bytes are still unread.
  int last = client_frames_.lastType();
  bool goodbye = !client_frames_.lost() &&
                 (mode_ == Mode::kPlaintext ? last == 'X' : last == 0x15 /* alert */);
  return goodbye ? Outcome::kOk : Outcome::kClientClosedEarly;
}

// Everything that looks at the bytes in flight: counters, the goodbye tracker, the cancel key of
// plaintext sessions, and the protocol log.
void Session::inspect(bool from_client, std::string_view bytes) {
  if (bytes.empty()) {
    return;
  }
  if (from_client) {
    bytes_up_ += bytes.size();
    ctx_.metrics.add(metricIndex(), metrics::MappingCounter::kBytesUp, bytes.size());
    client_frames_.feed(bytes);
  } else {
    bytes_down_ += bytes.size();
    ctx_.metrics.add(metricIndex(), metrics::MappingCounter::kBytesDown, bytes.size());
    if (scanning_key_ && key_scanner_.feed(bytes) != proto::BackendKeyScanner::State::kScanning) {
      scanning_key_ = false;
      if (key_scanner_.state() == proto::BackendKeyScanner::State::kFound) {
        publishBackendKey();
      }
    }
  }
  if (log_up_) {
    logProtocol(from_client, bytes);
  }
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
  ctx_.cancels->publishKey(cancel_slot_, key_scanner_.pid(), key_scanner_.key(), addr);
}

void Session::logProtocol(bool from_client, std::string_view bytes) {
  proto::MessageFramer& framer = from_client ? *log_up_ : *log_down_;
  framer.feed(bytes, [&](const proto::MessageFramer::Message& m) {
    std::string text;
    for (char c : m.text) {
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
  });
}

}  // namespace pgproxy::session
