#pragma once

// Reads and writes on a non-blocking socket, through its TLS session when pgproxy holds one, with
// the errno a plain socket would give: the splice's sides and the pool's server connections move
// their bytes through these two.

#include <sys/types.h>

#include <cstddef>

typedef struct ssl_st SSL;

namespace pgproxy::net {

// >0 bytes, 0 at a clean EOF (TLS close_notify), -1 with `err` (EAGAIN: wait for readiness).
ssize_t streamRead(int fd, SSL* ssl, char* buf, std::size_t len, int& err);
// >0 bytes written, -1 with `err` (EAGAIN: wait for the socket to take more).
ssize_t streamWrite(int fd, SSL* ssl, const char* buf, std::size_t len, int& err);

}  // namespace pgproxy::net
