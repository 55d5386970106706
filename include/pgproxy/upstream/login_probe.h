#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/auth/server_login.h"

namespace pgproxy::upstream {

enum class Role : std::int32_t { kUnknown = 0, kPrimary = 1, kStandby = 2 };
const char* roleName(Role r);

// A health check that logs in (trust, password, md5 or SCRAM-SHA-256) and asks
// SELECT pg_is_in_recovery(), to tell a primary from a standby. Pure: the checker moves the
// bytes. Holds at most one server message (bounded) while it waits for the rest.
class LoginProbe {
 public:
  static constexpr std::size_t kMaxMessage = 64 * 1024;

  LoginProbe(std::string user, std::string password, std::string database);
  // The StartupMessage.
  std::string start() const;

  struct Step {
    enum Kind { kContinue, kDone, kFailed } kind = kContinue;
    std::string send;  // bytes for the server (possibly empty)
    Role role = Role::kUnknown;
    std::string error;     // kFailed: what went wrong (never the password)
    std::string sqlstate;  // kFailed on an ErrorResponse
  };
  Step feed(std::string_view bytes);

 private:
  std::string user_, database_;
  auth::ServerLogin login_;
  std::string pending_;  // after the login: the answer to the query
  bool queried_ = false;
  Role role_ = Role::kUnknown;
};

}  // namespace pgproxy::upstream
