#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/base/result.h"

namespace pgproxy::log {

// One line per connection, written when it closes.
struct AccessRecord {
  std::uint64_t session = 0;
  std::string_view client;  // "address:port"
  std::string_view mode;    // passthrough, direct, plaintext, cancel, none
  std::string_view sni;
  std::string_view mapping;  // external name, empty when none was chosen
  std::string_view backend;  // "host:port", empty when none was chosen
  std::uint64_t duration_ms = 0;
  std::uint64_t bytes_up = 0;    // client → backend
  std::uint64_t bytes_down = 0;  // backend → client
  std::string_view outcome;
  std::string_view splice;  // "kernel" for a session spliced in the kernel; else left out
};

enum class AccessFormat { kText, kJson };

// Pure: the line for a record (without the trailing newline). `unix_ms` is the wall-clock time;
// a negative value leaves the time out of a text line.
std::string formatAccess(const AccessRecord& r, AccessFormat format, std::int64_t unix_ms);

// Where access lines go: "" → the main log, "off" → nowhere, else a file (reopened with reopen()).
base::Status configureAccessLog(const std::string& target, AccessFormat format);
void writeAccess(const AccessRecord& r);
base::Status reopenAccessLog();

}  // namespace pgproxy::log
