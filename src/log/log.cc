#include "pgproxy/log/log.h"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <ctime>

#include "pgproxy/base/text.h"

namespace pgproxy::log {
namespace {

struct State {
  std::string role = "pgproxy";
  std::string path;  // empty: stderr
  int fd = STDERR_FILENO;
  bool debug = false;
};

State& state() {
  static State s;
  return s;
}

const char* levelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warning";
    case Level::kError:
      return "error";
  }
  return "?";
}

base::Result<int> openLogFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return base::Error{"cannot open log file \"" + path + "\": " + base::errnoText(errno)};
  }
  return fd;
}

}  // namespace

void setRole(const std::string& role) {
  state().role = role;
}
void setDebug(bool on) {
  state().debug = on;
}
bool debugEnabled() {
  return state().debug;
}

base::Status setFile(const std::string& path) {
  State& s = state();
  if (path.empty()) {
    if (s.fd != STDERR_FILENO) {
      ::close(s.fd);
    }
    s.fd = STDERR_FILENO;
    s.path.clear();
    return {};
  }
  auto fd = openLogFile(path);
  if (!fd) {
    return fd.error();
  }
  if (s.fd != STDERR_FILENO) {
    ::close(s.fd);
  }
  s.fd = *fd;
  s.path = path;
  return {};
}

base::Status reopen() {
  State& s = state();
  if (s.path.empty()) {
    return {};
  }
  return setFile(s.path);
}

void write(Level level, const char* fmt, ...) {
  State& s = state();
  char line[4096];
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm utc;
  gmtime_r(&tv.tv_sec, &utc);
  int n = std::snprintf(line, sizeof(line),
                        "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s %d] %s: ", utc.tm_year + 1900,
                        utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                        static_cast<long>(tv.tv_usec / 1000), s.role.c_str(),
                        static_cast<int>(getpid()), levelName(level));
  if (n < 0) {
    return;
  }
  std::size_t used = static_cast<std::size_t>(n);
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(line + used, sizeof(line) - used, fmt, ap);
  va_end(ap);
  if (m > 0) {
    used += static_cast<std::size_t>(m);
  }
  // Long lines are cut, never split, so a line stays one write.
  if (used > sizeof(line) - 2) {
    used = sizeof(line) - 2;
  }
  line[used++] = '\n';
  ssize_t ignored = ::write(s.fd, line, used);
  (void)ignored;
}

}  // namespace pgproxy::log
