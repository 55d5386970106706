#include "pgproxy/log/log.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/line_sink.h"

namespace pgproxy::log {
namespace {

// Per log and process: a few hundred lines, enough to ride out a reader's hiccup; beyond it lines
// are dropped rather than the event loop waiting.
constexpr std::size_t kSinkBytes = 64 * 1024;
// How long an exiting process waits for a stalled log to take what it buffered.
constexpr int kExitDrainMs = 1000;

struct State {
  std::string role = "pgproxy";
  std::string path;  // empty: stderr
  int fd = -1;       // ours to close (a log file, or a private description of stderr), or -1
  bool debug = false;
  bool attached = false;
  bool reporting = false;
  void (*pending_hook)() = nullptr;
  LineSink sink{kSinkBytes};
};

State& state();

// A private open file description of stderr where the kernel allows one (pipes, FIFOs,
// terminals): O_NONBLOCK on the inherited one would change it for every process sharing it, such
// as the shell that started pgproxy. A socket needs none (MSG_DONTWAIT); a regular file never
// waits.
int privateStderr() {
  struct stat st;
  if (fstat(STDERR_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) {
    int fd = ::open("/proc/self/fd/2", O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0) {
      return fd;
    }
  }
  return -1;
}

void discardInherited() {
  // A forked child: its parent writes what was waiting.
  state().sink.discard();
  detail::accessSink().discard();
}

void drainAtExit() {
  drain(kExitDrainMs);
}

State& state() {
  // Never destroyed: lines logged from other static destructors and atexit handlers still work.
  static State* s = new State;
  if (!s->attached) {
    s->attached = true;
    s->sink.setWhat("the log");
    s->fd = privateStderr();
    s->sink.attach(s->fd >= 0 ? s->fd : STDERR_FILENO);
    pthread_atfork(nullptr, nullptr, discardInherited);
    std::atexit(drainAtExit);
  }
  return *s;
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
  // Our own description (shared only with our children): a FIFO's reader may stall.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

// Switches the main sink to `fd` (ours to close later, or -1 for the original stderr).
void switchTo(State& s, int fd, const std::string& path) {
  s.sink.flush();  // a last chance for the old descriptor
  s.sink.attach(fd >= 0 ? fd : STDERR_FILENO);
  if (s.fd >= 0 && s.fd != fd) {
    ::close(s.fd);
  }
  s.fd = fd;
  s.path = path;
  detail::sinkReopened();
}

void reportDrops() {
  State& s = state();
  if (s.reporting) {
    return;
  }
  s.reporting = true;
  for (LineSink* sink : {&s.sink, &detail::accessSink()}) {
    if (!sink->pending()) {
      if (std::uint64_t n = sink->takeDropped()) {
        write(Level::kWarn, "dropped %llu lines: %s was not writable (a stalled reader)",
              static_cast<unsigned long long>(n), sink->what().c_str());
      }
    }
  }
  s.reporting = false;
}

}  // namespace

namespace detail {

void appendTo(LineSink& sink, std::string_view line) {
  State& s = state();
  bool was = sink.pending();
  sink.append(line);
  if (!was && sink.pending() && s.pending_hook) {
    s.pending_hook();
  }
  reportDrops();
}

void sinkReopened() {
  State& s = state();
  if (s.pending_hook) {
    s.pending_hook();
  }
}

}  // namespace detail

int pendingFds(int fds[2]) {
  int n = 0;
  for (LineSink* sink : {&state().sink, &detail::accessSink()}) {
    if (sink->pending() && sink->fd() >= 0) {
      fds[n++] = sink->fd();
    }
  }
  return n;
}

void flushPending() {
  state().sink.flush();
  detail::accessSink().flush();
  reportDrops();
}

void setPendingHook(void (*hook)()) {
  state().pending_hook = hook;
}

void drain(int timeout_ms) {
  std::uint64_t deadline = base::monotonicMs() + static_cast<std::uint64_t>(timeout_ms);
  for (;;) {
    flushPending();
    int fds[2];
    int n = pendingFds(fds);
    std::uint64_t now = base::monotonicMs();
    if (n == 0 || now >= deadline) {
      break;
    }
    pollfd p[2];
    for (int i = 0; i < n; ++i) {
      p[i] = {fds[i], POLLOUT, 0};
    }
    poll(p, static_cast<nfds_t>(n), static_cast<int>(deadline - now));
  }
  state().sink.abandon();
  detail::accessSink().abandon();
}

void setDropCounters(std::atomic<std::uint64_t>* main, std::atomic<std::uint64_t>* access) {
  state().sink.setDropCounter(main);
  detail::accessSink().setDropCounter(access);
}

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
    switchTo(s, s.path.empty() ? s.fd : privateStderr(), "");
    return {};
  }
  auto fd = openLogFile(path);
  if (!fd) {
    return fd.error();
  }
  switchTo(s, *fd, path);
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
  detail::appendTo(s.sink, std::string_view(line, used));
}

}  // namespace pgproxy::log
