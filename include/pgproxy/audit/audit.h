#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/config/config.h"

// The audit log: security events (connect, auth, route, refuse, disconnect, statements, admin)
// as one JSON object per line, for a file or syslog.
//
// Every process that has events (the workers, the master for signals) formats them and sends
// each line as one datagram to the master's audit writer (audit/writer.h), the single writer of
// the sink: a datagram arrives whole or not at all, so a worker killed mid-event leaves no torn
// line, and lines of different workers never interleave. Sending never waits: when the
// writer's queue is full (a stalled disk or syslog) the event is dropped and counted
// (pgproxy_audit_dropped_total), never buffered without bound.
namespace pgproxy::audit {

// Every text field is cut to kMaxField bytes as written (escapes included), a statement's SQL to
// kMaxStatement bytes as sent (its escaped form always fits), and the event then says
// "truncated": true. So a line always fits kMaxLine, whatever a client sends (a 9 KB user name, a
// statement of control characters), and is never dropped for its size.
inline constexpr std::size_t kMaxField = 1024;
inline constexpr std::size_t kMaxStatement = 4096;
inline constexpr std::size_t kMaxStatementField = 6 * kMaxStatement;  // \u00XX for each byte
inline constexpr std::size_t kMaxLine = 64 * 1024;  // > 24 fields of kMaxField + the SQL

// One event, built field by field. Pure: formatting only.
class Event {
 public:
  // `kind`: connect, auth, route, refuse, disconnect, statement, admin.
  Event(std::string_view kind, std::int64_t unix_ms);
  explicit Event(std::string_view kind);  // now
  // `max`: kMaxField, or kMaxStatementField for the SQL.
  Event& text(std::string_view key, std::string_view value, std::size_t max = kMaxField);
  Event& number(std::string_view key, std::uint64_t value);
  Event& flag(std::string_view key, bool value);
  // Says "truncated": true (once) when the line is finished: the caller cut a value itself.
  Event& markTruncated() {
    truncated_ = true;
    return *this;
  }
  // The finished line, ending in '\n'; fields added after it are ignored.
  const std::string& line();

 private:
  std::string out_;
  bool done_ = false;
  bool truncated_ = false;
};

// This process's channel to the writer: the datagram socket (-1: none) and the settings the
// events follow. Called at start and on every new configuration.
void setChannel(int fd);
void configure(const config::AuditConfig& settings);
bool enabled();
const config::AuditConfig& settings();
// Shared-memory cells: where drops are counted, and the writer's "cannot write" flag.
void setCounters(std::atomic<std::uint64_t>* dropped, const std::atomic<std::int32_t>* failing);

// Sends the event; false when it was dropped (counted).
bool emit(Event& event);

// audit.fail: closed: whether a new session may start. False while the writer reports that it
// cannot write, or this process's last event could not be handed to it.
bool accepting();

// Drops counted in this process that no log line has reported yet (taken: reset).
std::uint64_t takeUnreported();

}  // namespace pgproxy::audit
