#include "pgproxy/upstream/connector.h"

#include <event2/event.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "pgproxy/base/text.h"
#include "pgproxy/config/config.h"
#include "pgproxy/net/listen_socket.h"
#include "pgproxy/proto/proxy_header.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/tls/contexts.h"

namespace pgproxy::upstream {

Connector::~Connector() {
  reset();
  if (timer_) {
    event_free(timer_);
  }
}

void Connector::reset() {
  if (lookup_) {
    lookup_->cancel();
  }
  if (io_) {
    event_free(io_);
    io_ = nullptr;
  }
  if (ssl_) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

ConnectTarget ownConnection(const config::Mapping& m, const config::Backend& b, SSL_CTX* tls) {
  ConnectTarget t;
  t.host = b.host;
  t.port = b.port;
  t.tls = m.tls == config::TlsMode::kTerminate ? tls : nullptr;
  t.tls_name = m.backend_sni.empty() ? b.host : m.backend_sni;
  t.verify_name = m.backend_tls == config::BackendTls::kVerifyFull;
  if (m.backend_proxy_protocol) {
    t.preamble = proto::buildProxyV2(nullptr, nullptr);  // no client of its own: LOCAL
  }
  return t;
}

void Connector::start(ConnectTarget target, Done done, void* owner) {
  target_ = std::move(target);
  done_ = done;
  owner_ = owner;
  phase_ = Phase::kResolving;
  addresses_ = std::make_unique<AddressList>();
  timer_ = evtimer_new(base_, onTimeout, this);
  timeval tv{static_cast<time_t>(cfg_.connect_timeout_ms / 1000),
             static_cast<suseconds_t>((cfg_.connect_timeout_ms % 1000) * 1000)};
  evtimer_add(timer_, &tv);
  Lookup::start(&lookup_, dns_, target_.host, target_.port, onResolved, this);
}

void Connector::onResolved(void* arg, int gai_error, const evutil_addrinfo* ai) {
  auto* c = static_cast<Connector*>(arg);
  if (gai_error == 0) {
    c->addresses_->assign(ai);
  }
  if (gai_error != 0 || c->addresses_->size() == 0) {
    c->fail(std::string("cannot resolve host name: ") +
                (gai_error ? evutil_gai_strerror(gai_error) : "no address"),
            EHOSTUNREACH);
    return;
  }
  c->nextAddress("");
}

void Connector::nextAddress(const std::string& why) {
  reset();
  socklen_t len = 0;
  const sockaddr* sa = addresses_->next(&len);
  if (!sa) {
    std::string what = why.empty() ? std::string("no address left") : why;
    if (addresses_->size() > 1) {
      what += " (tried its " + std::to_string(addresses_->size()) + " addresses)";
    }
    fail(what, ECONNREFUSED);
    return;
  }
  phase_ = Phase::kConnecting;
  fd_ = ::socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    fail("socket: " + base::errnoText(errno), errno);
    return;
  }
  if (::connect(fd_, sa, len) != 0 && errno != EINPROGRESS) {
    nextAddress(base::errnoText(errno));
    return;
  }
  arm(EV_WRITE);
}

void Connector::arm(short what) {
  if (!io_) {
    io_ = event_new(base_, fd_, what, onSocket, this);
  } else {
    event_del(io_);
    event_assign(io_, base_, fd_, what, onSocket, this);
  }
  event_add(io_, nullptr);
}

void Connector::onSocket(int, short, void* arg) {
  auto* c = static_cast<Connector*>(arg);
  switch (c->phase_) {
    case Phase::kConnecting: {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(c->fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        c->nextAddress(base::errnoText(err));
        return;
      }
      c->connected();
      return;
    }
    case Phase::kSslRequest:
      c->readSslAnswer();
      return;
    case Phase::kTls:
      c->driveTls();
      return;
    default:
      return;
  }
}

void Connector::connected() {
  net::tuneConnectedSocket(fd_, cfg_);
  // A fresh socket's send buffer takes a header (at most 52 bytes here) at once.
  if (!target_.preamble.empty() &&
      ::send(fd_, target_.preamble.data(), target_.preamble.size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(target_.preamble.size())) {
    fail("cannot send the PROXY protocol header: " + base::errnoText(errno), errno);
    return;
  }
  if (!target_.tls) {
    finish({});
    return;
  }
  // A fresh socket's send buffer takes the 8 bytes at once.
  std::string req = proto::buildSslRequest();
  if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    fail("cannot send the SSLRequest: " + base::errnoText(errno), errno);
    return;
  }
  phase_ = Phase::kSslRequest;
  arm(EV_READ);
}

void Connector::readSslAnswer() {
  char answer[2];
  ssize_t n = ::recv(fd_, answer, sizeof(answer), 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    arm(EV_READ);
    return;
  }
  if (n <= 0) {
    fail(n == 0 ? "the backend closed the connection during the TLS request"
                : base::errnoText(errno),
         n == 0 ? ECONNRESET : errno);
    return;
  }
  if (answer[0] != 'S') {
    fail(answer[0] == 'N' ? "the backend does not accept TLS (answered N to SSLRequest)"
                          : "the backend answered the SSLRequest with something other than S or N",
         EPROTO);
    return;
  }
  if (n > 1) {
    // CVE-2021-23222: anything after 'S' arrived before TLS and could be injected.
    fail("the backend sent unencrypted data after its SSL response", EPROTO);
    return;
  }
  ssl_ = SSL_new(target_.tls);
  if (!ssl_ || SSL_set_fd(ssl_, fd_) != 1) {
    fail("cannot set up TLS: " + tls::opensslErrors(), EPROTO);
    return;
  }
  const std::string& name = target_.tls_name;
  bool ip = config::isIpLiteral(name);
  if (!ip && !name.empty()) {
    SSL_set_tlsext_host_name(ssl_, name.c_str());
  }
  if (target_.verify_name) {
    if (ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str());
    } else {
      SSL_set1_host(ssl_, name.c_str());
    }
  }
  SSL_set_connect_state(ssl_);
  phase_ = Phase::kTls;
  driveTls();
}

void Connector::driveTls() {
  ERR_clear_error();
  errno = 0;
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    finish({});
    return;
  }
  int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ) {
    arm(EV_READ);
    return;
  }
  if (e == SSL_ERROR_WANT_WRITE) {
    arm(EV_WRITE);
    return;
  }
  std::string why = e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                        ? (errno ? base::errnoText(errno) : "connection closed by the peer")
                        : tls::opensslErrors();
  if (long v = SSL_get_verify_result(ssl_); v != X509_V_OK) {
    why = std::string("certificate verify failed: ") + X509_verify_cert_error_string(v);
  }
  fail("TLS handshake with the backend failed: " + why, EPROTO);
}

void Connector::onTimeout(int, short, void* arg) {
  auto* c = static_cast<Connector*>(arg);
  if (c->phase_ == Phase::kResolving) {
    c->fail("cannot resolve host name: no answer within connect_timeout", ETIMEDOUT);
    return;
  }
  c->fail("no answer within connect_timeout", ETIMEDOUT);
}

void Connector::finish(Result r) {
  evtimer_del(timer_);
  if (io_) {
    event_free(io_);
    io_ = nullptr;
  }
  r.fd = fd_;
  r.ssl = ssl_;
  fd_ = -1;
  ssl_ = nullptr;
  phase_ = Phase::kIdle;
  addresses_.reset();
  done_(owner_, std::move(r));
}

void Connector::fail(const std::string& why, int err) {
  evtimer_del(timer_);
  reset();
  phase_ = Phase::kIdle;
  Result r;
  r.error = why;
  r.err = err;
  done_(owner_, std::move(r));
}

}  // namespace pgproxy::upstream
