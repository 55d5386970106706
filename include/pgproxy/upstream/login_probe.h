#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/auth/server_login.h"

namespace pgproxy::upstream {

enum class Role : std::int32_t { kUnknown = 0, kPrimary = 1, kStandby = 2 };
const char* roleName(Role r);

// A health check that logs in (trust, password, md5 or SCRAM-SHA-256) and asks
// pg_is_in_recovery(), to tell a primary from a standby, and a standby's replay lag. Pure: the
// checker moves the bytes. Holds at most one server message (bounded) while it waits for the rest.
class LoginProbe {
 public:
  static constexpr std::size_t kMaxMessage = 64 * 1024;

  // `with_lag`: also ask the replay lag (kLoginProbeQuery), for the mappings that use it
  // (read_write_split, max_replica_lag); otherwise only pg_is_in_recovery(), which any server
  // that speaks PostgreSQL's catalog answers.
  LoginProbe(std::string user, std::string password, std::string database, bool with_lag = true);
  // The StartupMessage.
  std::string start() const;

  struct Step {
    enum Kind { kContinue, kDone, kFailed } kind = kContinue;
    std::string send;  // bytes for the server (possibly empty)
    Role role = Role::kUnknown;
    std::int64_t lag_ms = -1;  // kDone: 0 on a primary; -1 when not asked or not known
    std::string error;         // kFailed: what went wrong (never the password)
    std::string sqlstate;      // kFailed on an ErrorResponse
  };
  Step feed(std::string_view bytes);

 private:
  std::string user_, database_;
  auth::ServerLogin login_;
  std::string pending_;  // after the login: the answer to the query
  bool queried_ = false;
  Role role_ = Role::kUnknown;
  std::int64_t lag_ms_ = -1;
  bool with_lag_ = true;
};

// The query the probe sends: whether the server is in recovery, and how far behind the replay
// is: 0 when everything received has been replayed (an idle primary makes no lag), else the age
// of the last transaction replayed (pg_wal_replay_pause() on a busy primary makes it grow).
extern const char* const kLoginProbeQuery;

}  // namespace pgproxy::upstream
