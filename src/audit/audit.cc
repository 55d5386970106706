#include "pgproxy/audit/audit.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "pgproxy/base/json.h"
#include "pgproxy/log/log.h"

namespace pgproxy::audit {
namespace {

struct Channel {
  int fd = -1;
  config::AuditConfig settings;
  std::atomic<std::uint64_t>* dropped = nullptr;
  const std::atomic<std::int32_t>* failing = nullptr;
  bool last_failed = false;
  std::uint64_t unreported = 0;
};

Channel& channel() {
  static Channel* c = new Channel;  // never destroyed: sessions may close during exit
  return *c;
}

}  // namespace

Event::Event(std::string_view kind, std::int64_t unix_ms) {
  out_.reserve(256);
  out_ += "{\"time\":";
  base::appendJsonString(out_, base::isoTime(unix_ms));
  out_ += ",\"event\":";
  base::appendJsonString(out_, kind);
}

Event::Event(std::string_view kind) : Event(kind, base::unixMs()) {}

Event& Event::text(std::string_view key, std::string_view value, std::size_t max) {
  if (!done_) {
    out_ += ',';
    base::appendJsonString(out_, key);
    out_ += ':';
    if (!base::appendJsonString(out_, value, std::min(max, kMaxStatementField))) {
      truncated_ = true;
    }
  }
  return *this;
}

Event& Event::number(std::string_view key, std::uint64_t value) {
  if (!done_) {
    out_ += ',';
    base::appendJsonString(out_, key);
    out_ += ':';
    out_ += std::to_string(value);
  }
  return *this;
}

Event& Event::flag(std::string_view key, bool value) {
  if (!done_) {
    out_ += ',';
    base::appendJsonString(out_, key);
    out_ += value ? ":true" : ":false";
  }
  return *this;
}

const std::string& Event::line() {
  if (!done_) {
    out_ += truncated_ ? ",\"truncated\":true}\n" : "}\n";
    done_ = true;
  }
  return out_;
}

void setChannel(int fd) {
  channel().fd = fd;
}

void configure(const config::AuditConfig& settings) {
  channel().settings = settings;
}

bool enabled() {
  const Channel& c = channel();
  return c.fd >= 0 && c.settings.enabled();
}

const config::AuditConfig& settings() {
  return channel().settings;
}

void setCounters(std::atomic<std::uint64_t>* dropped, const std::atomic<std::int32_t>* failing) {
  channel().dropped = dropped;
  channel().failing = failing;
}

bool emit(Event& event) {
  Channel& c = channel();
  if (!enabled()) {
    return true;
  }
  const std::string& line = event.line();
  // One datagram per line; never waits (the writer's queue is the bound).
  ssize_t n = line.size() <= kMaxLine ? send(c.fd, line.data(), line.size(), MSG_DONTWAIT)
                                      : (errno = EMSGSIZE, -1);
  if (n == static_cast<ssize_t>(line.size())) {
    c.last_failed = false;
    if (c.unreported > 0) {
      LOG_WARN("audit: %llu event(s) were dropped: the audit writer could not take them",
               static_cast<unsigned long long>(c.unreported));
      c.unreported = 0;
    }
    return true;
  }
  c.last_failed = true;
  ++c.unreported;
  if (c.dropped) {
    c.dropped->fetch_add(1, std::memory_order_relaxed);
  }
  return false;
}

bool accepting() {
  const Channel& c = channel();
  if (!enabled() || !c.settings.fail_closed) {
    return true;
  }
  return !c.last_failed && !(c.failing && c.failing->load(std::memory_order_relaxed) != 0);
}

std::uint64_t takeUnreported() {
  std::uint64_t n = channel().unreported;
  channel().unreported = 0;
  return n;
}

}  // namespace pgproxy::audit
