// TLS termination: pgproxy's own handshake with the client (with the certificate of the mapping
// its SNI chose), the StartupMessage read inside that session, and the optional TLS session
// with the backend. Once both sides are up the splice (splice.cc) moves the bytes, through
// SSL_read/SSL_write on the terminated sides.
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <cerrno>

#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/session/session.h"

namespace pgproxy::session {

void Session::startClientTls() {
  SSL_CTX* tls = ctx_.tls ? ctx_.tls->server(mapping_) : nullptr;
  if (!tls) {
    refuseTls(Outcome::kError, proto::kAlertInternalError, "no TLS context for this mapping");
    return;
  }
  std::string hello, unsent;
  client_fd_ = detach(client_, hello, unsent);
  client_ = nullptr;
  if (!unsent.empty()) {
    // The 'S' answer to the SSLRequest: a fresh socket's send buffer takes it at once.
    if (::send(client_fd_, unsent.data(), unsent.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(unsent.size())) {
      close(Outcome::kClientClosedEarly);
      return;
    }
  }
  client_ssl_ = SSL_new(tls);
  BIO* socket = BIO_new_socket(client_fd_, BIO_NOCLOSE);
  // The ClientHello was already read (and parsed for routing): OpenSSL reads it from memory
  // first, then the handshake continues on the socket (driveHandshake swaps the read side).
  BIO* buffered = BIO_new(BIO_s_mem());
  if (!client_ssl_ || !socket || !buffered) {
    BIO_free(socket);
    BIO_free(buffered);
    LOG_ERROR("session %llu: cannot set up TLS: %s", static_cast<unsigned long long>(id_),
              tls::opensslErrors().c_str());
    close(Outcome::kError);
    return;
  }
  BIO_write(buffered, hello.data(), static_cast<int>(hello.size()));
  BIO_set_mem_eof_return(buffered, -1);
  SSL_set_bio(client_ssl_, buffered, socket);
  SSL_set_accept_state(client_ssl_);
  setState(State::kTlsAccept);
  watchSockets();
  driveHandshake(true);
}

void Session::startBackendTls() {
  const auto& m = ctx_.config->mappings[mapping_];
  std::string unread, unsent;
  backend_fd_ = detach(backend_, unread, unsent);  // both empty: 'S' came alone
  backend_ = nullptr;
  backend_ssl_ = SSL_new(ctx_.tls->backend(mapping_));
  if (!backend_ssl_ || SSL_set_fd(backend_ssl_, backend_fd_) != 1) {
    backendFailed("cannot set up TLS: " + tls::opensslErrors(), EPROTO);
    return;
  }
  const std::string& name = m.backend_sni.empty() ? backend().host : m.backend_sni;
  bool ip = config::isIpLiteral(name);
  if (!ip) {
    SSL_set_tlsext_host_name(backend_ssl_, name.c_str());
  }
  if (m.backend_tls == config::BackendTls::kVerifyFull) {
    if (ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(backend_ssl_), name.c_str());
    } else {
      SSL_set1_host(backend_ssl_, name.c_str());
    }
  }
  SSL_set_connect_state(backend_ssl_);
  setState(State::kBackendTls);
  watchSockets();
  driveHandshake(false);
}

void Session::driveHandshake(bool client_side) {
  SSL* ssl = client_side ? client_ssl_ : backend_ssl_;
  event* readable = client_side ? client_read_ : backend_read_;
  event* writable = client_side ? client_write_ : backend_write_;
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(ssl);
    if (r == 1) {
      break;
    }
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ && client_side && !client_tls_on_socket_ &&
        BIO_ctrl_pending(SSL_get_rbio(ssl)) == 0) {
      BIO* socket = SSL_get_wbio(ssl);
      BIO_up_ref(socket);
      SSL_set0_rbio(ssl, socket);  // frees the drained memory BIO
      client_tls_on_socket_ = true;
      continue;
    }
    if (e == SSL_ERROR_WANT_READ) {
      event_del(writable);
      event_add(readable, nullptr);
      return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
      event_add(writable, nullptr);
      return;
    }
    std::string why = e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                          ? (errno ? base::errnoText(errno) : "connection closed by the peer")
                          : tls::opensslErrors();
    if (client_side) {
      LOG_INFO("session %llu: TLS handshake with %s (sni \"%s\") failed: %s",
               static_cast<unsigned long long>(id_), peer().c_str(), sni_.c_str(), why.c_str());
      close(Outcome::kTlsHandshakeFailed);
      return;
    }
    if (long v = SSL_get_verify_result(ssl); v != X509_V_OK) {
      why = std::string("certificate verify failed: ") + X509_verify_cert_error_string(v);
    }
    backendFailed("TLS handshake with the backend failed: " + why, EPROTO);
    return;
  }
  event_del(readable);
  event_del(writable);
  if (!client_side) {
    backendAnswered();
    backendReady();
    return;
  }
  LOG_DEBUG("session %llu: TLS with client established (%s, %s)",
            static_cast<unsigned long long>(id_), SSL_get_version(ssl), SSL_get_cipher_name(ssl));
  setState(State::kTlsStartup);
  auditConnect();  // now that the TLS session is there to describe
  event_add(client_read_, nullptr);
  readTlsStartup();  // it may have come in with the client's Finished
}

void Session::readTlsStartup() {
  for (;;) {
    proto::Preamble pre = proto::classifyPreamble(startup_);
    if (pre.kind == proto::PreambleKind::kInvalid) {
      LOG_INFO("session %llu: %s from %s inside TLS; closing", static_cast<unsigned long long>(id_),
               pre.reason, peer().c_str());
      close(Outcome::kProtocolError);
      return;
    }
    if (pre.kind == proto::PreambleKind::kCancelRequest) {
      cancel_request_.assign(startup_, 0, pre.consumed);
      startCancel();
      return;
    }
    if (pre.kind != proto::PreambleKind::kNeedMore) {
      if (!acceptStartup(pre, std::string_view(startup_).substr(0, pre.consumed))) {
        return;
      }
      if (std::string_view packet(startup_.data(), pre.consumed); wantsConsole(packet)) {
        startConsole(packet);
        return;
      }
      event_del(client_read_);  // nothing more is read until the backend is there
      connectBackend();
      return;
    }
    // classifyPreamble never needs more than kMaxStartupPacket bytes, so this stays bounded.
    char buf[4096];
    int err = 0;
    ssize_t n = readSide(true, buf, sizeof(buf), err);
    if (n == 0 || (n < 0 && err != EAGAIN && err != EINTR)) {
      close(Outcome::kClientClosedEarly);
      return;
    }
    if (n < 0) {
      return;  // the read event is armed
    }
    startup_.append(buf, static_cast<std::size_t>(n));
  }
}

}  // namespace pgproxy::session
