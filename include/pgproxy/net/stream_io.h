#pragma once

// Reads and writes on a non-blocking socket, through its TLS session when pgproxy holds one, with
// the errno a plain socket would give: the splice's sides and the pool's server connections move
// their bytes through these two.

#include <sys/types.h>

#include <cerrno>
#include <cstddef>
#include <string>

typedef struct ssl_st SSL;

namespace pgproxy::net {

inline bool wouldBlock(int err) {
  return err == EAGAIN || err == EWOULDBLOCK;
}

// The buffer every socket read of a worker goes through (the splice, pooled clients, server
// connections). A worker is one thread and its reads never nest (each runs from its own socket
// event and consumes the bytes before returning), so one buffer serves all: nothing is allocated
// per read and a connection holds memory only for bytes its peer has not taken.
inline constexpr std::size_t kIoChunk = 64 * 1024;
char* ioBuffer();
// A busy connection yields to the others after this many reads per wakeup.
inline constexpr int kReadsPerWakeup = 4;
// Bytes a connection may hold for a slow peer before it stops reading the sender.
inline constexpr std::size_t kMaxAhead = 64 * 1024;

// >0 bytes, 0 at a clean EOF (TLS close_notify), -1 with `err` (EAGAIN: wait for readiness).
ssize_t streamRead(int fd, SSL* ssl, char* buf, std::size_t len, int& err);
// >0 bytes written (0 for `len` 0, over TLS too), -1 with `err` (EAGAIN: wait for the socket to
// take more).
ssize_t streamWrite(int fd, SSL* ssl, const char* buf, std::size_t len, int& err);

// Writes as much of `pending` as the socket takes, erasing what went out (and freeing the buffer
// once it is empty). kBlocked: the socket is full; kFailed: `err` says why.
enum class Drain { kDone, kBlocked, kFailed };
Drain drainPending(int fd, SSL* ssl, std::string& pending, int& err);

}  // namespace pgproxy::net
