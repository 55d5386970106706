#include "pgproxy/net/stream_io.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>

namespace pgproxy::net {
namespace {

// A failed SSL_read/SSL_write as the errno a plain socket would have given; 0 for a clean close.
int sslErrno(SSL* ssl, int ret, int syscall_default) {
  switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_ZERO_RETURN:
      return 0;  // close_notify (or EOF: SSL_OP_IGNORE_UNEXPECTED_EOF)
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return EAGAIN;
    case SSL_ERROR_SYSCALL:
      return errno ? errno : syscall_default;
    default:
      return EPROTO;
  }
}

}  // namespace

char* ioBuffer() {
  static char buffer[kIoChunk];
  return buffer;
}

Drain drainPending(int fd, SSL* ssl, std::string& pending, int& err) {
  while (!pending.empty()) {
    ssize_t w = streamWrite(fd, ssl, pending.data(), pending.size(), err);
    if (w > 0) {
      pending.erase(0, static_cast<std::size_t>(w));
      continue;
    }
    if (err == EINTR) {
      continue;
    }
    return wouldBlock(err) ? Drain::kBlocked : Drain::kFailed;
  }
  std::string().swap(pending);  // an idle connection keeps no buffer
  return Drain::kDone;
}

ssize_t streamRead(int fd, SSL* ssl, char* buf, std::size_t len, int& err) {
  if (!ssl) {
    ssize_t n = ::recv(fd, buf, len, 0);
    err = n < 0 ? errno : 0;
    return n;
  }
  ERR_clear_error();
  int n = SSL_read(ssl, buf, static_cast<int>(std::min<std::size_t>(len, INT_MAX)));
  if (n > 0) {
    return n;
  }
  err = sslErrno(ssl, n, ECONNRESET);
  return err == 0 ? 0 : -1;
}

ssize_t streamWrite(int fd, SSL* ssl, const char* buf, std::size_t len, int& err) {
  if (len == 0) {
    // Nothing to write succeeds, as send(2) does. SSL_write refuses a length of 0 (it returns 0
    // with SSL_ERROR_SYSCALL), which would read as the peer being gone.
    err = 0;
    return 0;
  }
  if (!ssl) {
    ssize_t n = ::send(fd, buf, len, MSG_NOSIGNAL);
    err = n < 0 ? errno : 0;
    return n;
  }
  ERR_clear_error();
  int n = SSL_write(ssl, buf, static_cast<int>(std::min<std::size_t>(len, INT_MAX)));
  if (n > 0) {
    return n;
  }
  err = sslErrno(ssl, n, EPIPE);
  if (err == 0) {
    err = EPROTO;  // close_notify while writing: the peer is gone
  }
  return -1;
}

}  // namespace pgproxy::net
