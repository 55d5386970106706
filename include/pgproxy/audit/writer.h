#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "pgproxy/base/result.h"
#include "pgproxy/base/unique_fd.h"
#include "pgproxy/config/config.h"

namespace pgproxy::audit {

// The master's end of the audit channel (audit.h): the one process that writes the sink, so that
// lines are whole and never interleave. Each datagram is one line. A file line is written whole or
// not at all: a short write (a full disk) is cut back to the last whole line with ftruncate, which
// is safe because nothing else writes the file. Syslog lines are datagrams to the local syslog
// socket, sent without waiting. Lines that cannot be written are lost and counted; the shared
// `failing` flag (audit.fail: closed) is set until a line is written again.
class Writer {
 public:
  static base::Result<Writer> create();
  Writer(Writer&&) = default;
  Writer& operator=(Writer&&) = default;

  // The datagram socket every process sends its events on (inherited by the workers).
  int sendFd() const { return send_.get(); }
  // Readable when events wait (the master's poll loop watches it).
  int receiveFd() const { return receive_.get(); }

  // Opens what `settings` name (the file, or the syslog socket); the previous sink stays in use
  // when that fails.
  base::Status configure(const config::AuditConfig& settings);
  // -s reopen: the same file again (log rotation).
  base::Status reopen();
  // Writes every event waiting on the socket.
  void drain();

  void setCounters(std::atomic<std::uint64_t>* written, std::atomic<std::uint64_t>* lost,
                   std::atomic<std::int32_t>* failing);
  // Lines lost since the last call, and why the last one was, for the log line that reports them.
  std::uint64_t takeLost(std::string& why);

 private:
  Writer() = default;
  base::Status openFile(const std::string& path);
  // One batch of whole lines; returns how many of them reached the sink.
  std::size_t writeFile(const char* data, std::size_t len, std::size_t lines);
  bool sendSyslog(const char* line, std::size_t len);
  void lost(std::uint64_t lines, const std::string& why);
  void recovered();

  base::UniqueFd send_, receive_;
  base::UniqueFd file_;
  base::UniqueFd syslog_;
  config::AuditConfig settings_;
  int facility_ = 16;
  std::uint64_t lost_ = 0;
  std::string lost_why_;
  std::atomic<std::uint64_t>* written_counter_ = nullptr;
  std::atomic<std::uint64_t>* lost_counter_ = nullptr;
  std::atomic<std::int32_t>* failing_ = nullptr;
};

}  // namespace pgproxy::audit
