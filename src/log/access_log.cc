#include "pgproxy/log/access_log.h"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

#include "pgproxy/base/json.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/line_sink.h"
#include "pgproxy/log/log.h"

namespace pgproxy::log {
namespace {

struct AccessState {
  enum class Target { kMainLog, kOff, kFile } target = Target::kMainLog;
  std::string path;
  int fd = -1;
  AccessFormat format = AccessFormat::kText;
  LineSink sink{64 * 1024};  // as the main log's: a stalled reader never stalls a session
};

AccessState& state() {
  // Never destroyed, like the main log's state: exit handlers flush it.
  static AccessState* s = new AccessState;
  return *s;
}

// Moves the sink to `fd` (-1: idle) and closes the previous file.
void switchTo(AccessState& s, int fd) {
  s.sink.flush();  // a last chance for the old descriptor
  s.sink.attach(fd);
  if (s.fd >= 0 && s.fd != fd) {
    ::close(s.fd);
  }
  s.fd = fd;
  s.sink.setWhat("access log \"" + s.path + "\"");
  detail::sinkReopened();
}

// Text values are quoted only where they can be empty or hold spaces.
void appendQuoted(std::string& out, std::string_view v) {
  out += '"';
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    out += (c == '"' || u < 0x20 || u >= 0x7f) ? '?' : c;
  }
  out += '"';
}

}  // namespace

std::string formatAccess(const AccessRecord& r, AccessFormat format, std::int64_t unix_ms) {
  // One list of fields drives both formats, so they cannot drift apart.
  enum class Kind { kNumber, kWord, kText };  // kText may be empty or hold spaces: quoted
  struct Field {
    const char* name;
    std::string_view value;
    Kind kind;
    bool optional = false;  // left out when empty
    bool omitted() const { return optional && value.empty(); }
  };
  std::string session = std::to_string(r.session), duration = std::to_string(r.duration_ms),
              up = std::to_string(r.bytes_up), down = std::to_string(r.bytes_down);
  const Field fields[] = {
      {"session", session, Kind::kNumber},
      {"client", r.client, Kind::kWord},
      {"mode", r.mode, Kind::kWord},
      {"sni", r.sni, Kind::kText},
      {"mapping", r.mapping, Kind::kText},
      {"backend", r.backend, Kind::kText},
      {"duration_ms", duration, Kind::kNumber},
      {"bytes_up", up, Kind::kNumber},
      {"bytes_down", down, Kind::kNumber},
      {"outcome", r.outcome, Kind::kWord},
      {"splice", r.splice, Kind::kWord, true},
  };
  std::string out;
  out.reserve(256);
  if (format == AccessFormat::kJson) {
    out += "{\"time\":";
    base::appendJsonString(out, base::isoTime(unix_ms));
    for (const Field& f : fields) {
      if (f.omitted()) {
        continue;
      }
      out += std::string(",\"") + f.name + "\":";
      if (f.kind == Kind::kNumber) {
        out += f.value;
      } else {
        base::appendJsonString(out, f.value);
      }
    }
    out += "}";
    return out;
  }
  if (unix_ms >= 0) {
    out += base::isoTime(unix_ms) + " ";
  }
  out += "access";
  for (const Field& f : fields) {
    if (f.omitted()) {
      continue;
    }
    out += std::string(" ") + f.name + "=";
    if (f.kind == Kind::kText) {
      appendQuoted(out, f.value);
    } else {
      out += f.value;
    }
  }
  return out;
}

base::Status configureAccessLog(const std::string& target, AccessFormat format) {
  AccessState& s = state();
  s.format = format;
  if (s.fd >= 0) {
    switchTo(s, -1);
  }
  s.path.clear();
  if (target != "" && target != "off") {
    s.target = AccessState::Target::kFile;
    s.path = target;
    return reopenAccessLog();
  }
  s.sink.abandon();  // lines that waited for the old file have nowhere to go now
  if (target.empty()) {
    s.target = AccessState::Target::kMainLog;
    return {};
  }
  s.target = AccessState::Target::kOff;
  return {};
}

base::Status reopenAccessLog() {
  AccessState& s = state();
  if (s.target != AccessState::Target::kFile) {
    return {};
  }
  int fd = ::open(s.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return base::Error{"cannot open access log \"" + s.path + "\": " + base::errnoText(errno)};
  }
  // Our own description: a FIFO's reader may stall.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  switchTo(s, fd);
  return {};
}

void writeAccess(const AccessRecord& r) {
  AccessState& s = state();
  if (s.target == AccessState::Target::kOff) {
    return;
  }
  std::int64_t ms = base::unixMs();
  if (s.target == AccessState::Target::kMainLog) {
    // The main log stamps its own time on text lines.
    LOG_INFO("%s", formatAccess(r, s.format, s.format == AccessFormat::kJson ? ms : -1).c_str());
    return;
  }
  std::string line = formatAccess(r, s.format, ms);
  line += '\n';
  detail::appendTo(s.sink, line);  // one write while the file takes it: lines never interleave
}

namespace detail {
LineSink& accessSink() {
  return state().sink;
}
}  // namespace detail

}  // namespace pgproxy::log
