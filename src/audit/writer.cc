#include "pgproxy/audit/writer.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>

#include "pgproxy/audit/audit.h"
#include "pgproxy/base/text.h"

namespace pgproxy::audit {
namespace {

// The kernel memory events may wait in (the socket's send buffer, shared by every sender): the
// bound on what a stalled sink can hold before events are dropped.
constexpr int kQueueBytes = 4 << 20;
// Lines written to a file in one write(2).
constexpr std::size_t kBatch = 64 * 1024;

}  // namespace

base::Result<Writer> Writer::create() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
    return base::Error{"cannot create the audit channel: " + base::errnoText(errno)};
  }
  // A socketpair's peers skip net.unix.max_dgram_qlen: the send buffer is the only bound.
  int size = kQueueBytes;
  if (setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) != 0) {
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  }
  Writer w;
  w.receive_.reset(sv[0]);
  w.send_.reset(sv[1]);
  return w;
}

void Writer::setCounters(std::atomic<std::uint64_t>* written, std::atomic<std::uint64_t>* lost,
                         std::atomic<std::int32_t>* failing) {
  written_counter_ = written;
  lost_counter_ = lost;
  failing_ = failing;
}

base::Status Writer::openFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return base::Error{"cannot open audit log \"" + path + "\": " + base::errnoText(errno)};
  }
  file_.reset(fd);
  return {};
}

base::Status Writer::configure(const config::AuditConfig& settings) {
  if (!settings.file.empty()) {
    if (settings.file != settings_.file || !file_.valid()) {
      if (auto st = openFile(settings.file); !st) {
        return st;
      }
    }
    syslog_.reset();
  } else if (!settings.syslog.empty()) {
    file_.reset();
    if (settings.syslog_socket != settings_.syslog_socket || !syslog_.valid()) {
      syslog_.reset();  // connected on the first line (the daemon may start later)
    }
    facility_ = config::syslogFacility(settings.syslog);
  } else {
    file_.reset();
    syslog_.reset();
  }
  settings_ = settings;
  return {};
}

base::Status Writer::reopen() {
  if (settings_.file.empty()) {
    return {};
  }
  return openFile(settings_.file);
}

void Writer::lost(std::uint64_t lines, const std::string& why) {
  if (lines == 0) {
    return;
  }
  lost_ += lines;
  lost_why_ = why;
  if (lost_counter_) {
    lost_counter_->fetch_add(lines, std::memory_order_relaxed);
  }
  if (failing_) {
    failing_->store(1, std::memory_order_relaxed);
  }
}

void Writer::recovered() {
  // Lines reach the sink again: audit.fail: closed lets sessions in.
  if (failing_) {
    failing_->store(0, std::memory_order_relaxed);
  }
}

std::uint64_t Writer::takeLost(std::string& why) {
  why = lost_why_;
  return std::exchange(lost_, 0);
}

std::size_t Writer::writeFile(const char* data, std::size_t len, std::size_t lines) {
  if (!file_.valid()) {
    lost(lines, "the audit log is not open");
    return 0;
  }
  // Where this batch starts: nothing else writes the file, so a short write can be cut back.
  off_t start = lseek(file_.get(), 0, SEEK_END);
  ssize_t n;
  do {
    n = ::write(file_.get(), data, len);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(len)) {
    recovered();
    return lines;
  }
  int err = n < 0 ? errno : ENOSPC;
  std::size_t kept = 0, whole = 0;
  for (std::size_t i = 0; n > 0 && i < static_cast<std::size_t>(n); ++i) {
    if (data[i] == '\n') {
      kept = i + 1;
      ++whole;
    }
  }
  if (n > 0 && static_cast<std::size_t>(n) != kept && start >= 0) {
    // Half a line on disk: no line is better than a torn one.
    if (ftruncate(file_.get(), start + static_cast<off_t>(kept)) != 0) {
      whole = 0;  // cannot tell what is there; count the batch lost
    }
  }
  lost(lines - whole, "audit log \"" + settings_.file + "\": " + base::errnoText(err));
  return whole;
}

bool Writer::sendSyslog(const char* line, std::size_t len) {
  if (!syslog_.valid()) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (fd < 0 || settings_.syslog_socket.size() >= sizeof(addr.sun_path)) {
      if (fd >= 0) {
        ::close(fd);
      }
      lost(1, "syslog socket \"" + settings_.syslog_socket + "\": cannot be used");
      return false;
    }
    std::memcpy(addr.sun_path, settings_.syslog_socket.data(), settings_.syslog_socket.size());
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      int err = errno;
      ::close(fd);
      lost(1, "syslog socket \"" + settings_.syslog_socket + "\": " + base::errnoText(err));
      return false;
    }
    syslog_.reset(fd);
  }
  // RFC 3164, as glibc's syslog(3) sends it: <PRI>TIMESTAMP TAG[PID]: MSG. Severity: info.
  time_t now = time(nullptr);
  tm local;
  localtime_r(&now, &local);
  char head[96];
  int h = std::snprintf(head, sizeof(head), "<%d>", facility_ * 8 + 6);
  h += static_cast<int>(
      strftime(head + h, sizeof(head) - static_cast<std::size_t>(h), "%b %e %H:%M:%S ", &local));
  h += std::snprintf(head + h, sizeof(head) - static_cast<std::size_t>(h),
                     "pgproxy-audit[%d]: ", static_cast<int>(getpid()));
  std::string msg(head, static_cast<std::size_t>(h));
  msg.append(line, len > 0 && line[len - 1] == '\n' ? len - 1 : len);
  if (send(syslog_.get(), msg.data(), msg.size(), MSG_DONTWAIT) ==
      static_cast<ssize_t>(msg.size())) {
    recovered();
    return true;
  }
  int err = errno;
  if (err != EAGAIN && err != EWOULDBLOCK) {
    syslog_.reset();  // the daemon restarted: connect again next time
  }
  lost(1, "syslog socket \"" + settings_.syslog_socket + "\": " + base::errnoText(err));
  return false;
}

void Writer::drain() {
  static char buf[kMaxLine + 1];
  std::string batch;
  std::size_t lines = 0, written = 0;
  auto flushBatch = [&] {
    if (lines > 0) {
      written += writeFile(batch.data(), batch.size(), lines);
    }
    batch.clear();
    lines = 0;
  };
  for (;;) {
    ssize_t n = recv(receive_.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) {
      break;
    }
    std::size_t len = static_cast<std::size_t>(n);
    if (len > kMaxLine || buf[len - 1] != '\n') {
      lost(1, "an audit event was malformed");  // a sender's bug: never written as it is
      continue;
    }
    if (!settings_.enabled()) {
      continue;  // sent before a reload turned the audit log off
    }
    if (!settings_.syslog.empty()) {
      written += sendSyslog(buf, len) ? 1 : 0;
      continue;
    }
    if (batch.size() + len > kBatch) {
      flushBatch();
    }
    batch.append(buf, len);
    ++lines;
  }
  flushBatch();
  if (written > 0 && written_counter_) {
    written_counter_->fetch_add(written, std::memory_order_relaxed);
  }
}

}  // namespace pgproxy::audit
