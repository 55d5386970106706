#pragma once

#include <string>

#include "pgproxy/base/result.h"

namespace pgproxy::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// One process-wide logger. Each line is written with a single write(2) so lines from the master and
// the workers never interleave inside a line when they share a file opened with O_APPEND.
void setRole(const std::string& role);  // "master", "worker 3", ... shown on every line
void setDebug(bool on);
bool debugEnabled();
// Empty path means stderr. Returns an error (and keeps the previous target) when the file can't
// open.
base::Status setFile(const std::string& path);
// Reopens the current file (after logrotate moved it); no-op for stderr.
base::Status reopen();

void write(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

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
