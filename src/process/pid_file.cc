#include "pgproxy/process/pid_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "pgproxy/base/text.h"

namespace pgproxy::process {
namespace {

bool isPgproxy(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string argv0;
  std::getline(in, argv0, '\0');
  return argv0.find("pgproxy") != std::string::npos;
}

}  // namespace

base::Result<pid_t> readLivePid(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return base::Error{"cannot read pid file \"" + path + "\": " + base::errnoText(errno) +
                       " (is pgproxy running?)"};
  }
  std::string text;
  std::getline(in, text);
  auto pid = base::parseUnsigned(text);
  if (!pid || *pid < 2 || *pid > 4194304) {
    return base::Error{"pid file \"" + path + "\" does not hold a process id"};
  }
  pid_t p = static_cast<pid_t>(*pid);
  if (::kill(p, 0) != 0 && errno == ESRCH) {
    return base::Error{"pid file \"" + path + "\" names process " + std::to_string(p) +
                       ", which is not running (stale pid file)"};
  }
  if (!isPgproxy(p)) {
    return base::Error{"pid file \"" + path + "\" names process " + std::to_string(p) +
                       ", which is not pgproxy"};
  }
  return p;
}

base::Status writePidFile(const std::string& path) {
  if (auto existing = readLivePid(path); existing.ok() && *existing != getpid()) {
    return base::Error{"pgproxy is already running with pid " + std::to_string(*existing) +
                       " (pid file \"" + path + "\")"};
  }
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return base::Error{"cannot write pid file \"" + tmp + "\": " + base::errnoText(errno)};
  }
  std::string text = std::to_string(getpid()) + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  // rename: readers never see a half-written file.
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return base::Error{"cannot write pid file \"" + path + "\": " + base::errnoText(errno)};
  }
  return {};
}

void removePidFile(const std::string& path, pid_t pid) {
  std::ifstream in(path);
  std::string text;
  std::getline(in, text);
  if (base::parseUnsigned(text) == static_cast<std::uint64_t>(pid)) {
    ::unlink(path.c_str());
  }
}

}  // namespace pgproxy::process
