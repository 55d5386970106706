#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "pgproxy/base/result.h"

namespace pgproxy::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// One process-wide logger. Each line is written with a single write(2) so lines from the master and
// the workers never interleave inside a line when they share a file opened with O_APPEND.
// The descriptor is non-blocking (a private description of a pipe or terminal on stderr, send with
// MSG_DONTWAIT on a socket such as journald's): a line it cannot take now waits in a bounded
// buffer (LineSink) that the process's loop flushes when the descriptor is writable, and lines
// that do not fit are dropped, counted, and reported by a line once the log drains.
void setRole(const std::string& role);  // "master", "worker 3", ... shown on every line
void setDebug(bool on);
bool debugEnabled();
// Empty path means stderr. Returns an error (and keeps the previous target) when the file can't
// open.
base::Status setFile(const std::string& path);
// Reopens the current file (after logrotate moved it); no-op for stderr.
base::Status reopen();

void write(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// For the process's loop. Descriptors (at most 2: the log and the access log) with lines waiting:
// watch them for writability, then call flushPending().
int pendingFds(int fds[2]);
void flushPending();
// Called when lines start waiting or a log is reopened, so an event loop can (re)watch them.
void setPendingHook(void (*hook)());
// Before exit: writes what waits, for at most `timeout_ms`; the rest is dropped and counted.
// Also run by atexit.
void drain(int timeout_ms);
// Where dropped lines are counted besides the notice (shared-memory metrics); null: nowhere.
void setDropCounters(std::atomic<std::uint64_t>* main, std::atomic<std::uint64_t>* access);

}  // namespace pgproxy::log

#define PGPROXY_LOG(level, ...) ::pgproxy::log::write(::pgproxy::log::Level::level, __VA_ARGS__)
#define LOG_DEBUG(...)                    \
  do {                                    \
    if (::pgproxy::log::debugEnabled()) { \
      PGPROXY_LOG(kDebug, __VA_ARGS__);   \
    }                                     \
  } while (0)
#define LOG_INFO(...) PGPROXY_LOG(kInfo, __VA_ARGS__)
#define LOG_WARN(...) PGPROXY_LOG(kWarn, __VA_ARGS__)
#define LOG_ERROR(...) PGPROXY_LOG(kError, __VA_ARGS__)
