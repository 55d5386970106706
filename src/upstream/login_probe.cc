#include "pgproxy/upstream/login_probe.h"

#include <algorithm>

#include "pgproxy/base/text.h"
#include "pgproxy/proto/wire.h"

namespace pgproxy::upstream {

// GREATEST(0, ...): a standby's clock a little ahead of the primary's must not read as a
// negative lag.
const char* const kLoginProbeQuery =
    "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 "
    "ELSE GREATEST(0, (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)"
    "::bigint) END";

namespace {

LoginProbe::Step failed(std::string why, std::string sqlstate = "") {
  LoginProbe::Step s;
  s.kind = LoginProbe::Step::kFailed;
  s.error = std::move(why);
  s.sqlstate = std::move(sqlstate);
  return s;
}

auth::ServerCredentials credentials(std::string password) {
  auth::ServerCredentials c;
  if (!password.empty()) {
    c.kind = auth::ServerCredentials::Kind::kPassword;
    c.password = std::move(password);
  }
  return c;
}

}  // namespace

const char* roleName(Role r) {
  switch (r) {
    case Role::kPrimary:
      return "primary";
    case Role::kStandby:
      return "standby";
    case Role::kUnknown:
      break;
  }
  return "unknown";
}

LoginProbe::LoginProbe(std::string user, std::string password, std::string database, bool with_lag)
    : user_(user),
      database_(std::move(database)),
      login_(user, credentials(std::move(password))),
      with_lag_(with_lag) {}

std::string LoginProbe::start() const {
  return auth::ServerLogin::startupPacket(
      {{"user", user_}, {"database", database_}, {"application_name", "pgproxy health check"}});
}

LoginProbe::Step LoginProbe::feed(std::string_view bytes) {
  if (!queried_) {
    auth::ServerLogin::Step s = login_.feed(bytes);
    if (s.kind == auth::ServerLogin::Step::kFailed) {
      return failed(s.error, s.sqlstate);
    }
    Step out;
    out.send = std::move(s.send);
    if (s.kind == auth::ServerLogin::Step::kContinue) {
      return out;
    }
    queried_ = true;
    out.send += proto::buildMessage(
        'Q', std::string(with_lag_ ? kLoginProbeQuery : "SELECT pg_is_in_recovery()") + '\0');
    bytes = {};
    pending_ = login_.takeLeftover();
    Step rest = feed(bytes);
    rest.send = out.send + rest.send;
    return rest;
  }
  pending_.append(bytes);
  std::size_t pos = 0;
  while (pending_.size() - pos >= 5) {
    std::uint32_t len = proto::readU32(pending_.data() + pos + 1);
    if (len < 4 || len > auth::ServerLogin::kMaxMessage) {
      return failed("the server sent a malformed message");
    }
    if (pending_.size() - pos < 1 + static_cast<std::size_t>(len)) {
      break;
    }
    char type = pending_[pos];
    std::string_view body = std::string_view(pending_).substr(pos + 5, len - 4);
    pos += 1 + len;
    if (type == 'E') {
      std::string code = auth::errorField(body, 'C');
      return failed(auth::errorField(body, 'M') + " (SQLSTATE " + code + ")", code);
    }
    if (type == 'D' && body.size() >= 7) {
      // DataRow: Int16 columns, then each column's Int32 length (-1: NULL) and value.
      role_ = body[6] == 't' ? Role::kStandby : Role::kPrimary;
      std::size_t at = 2 + 4 +
                       static_cast<std::size_t>(std::max<std::int32_t>(
                           0, static_cast<std::int32_t>(proto::readU32(body.data() + 2))));
      lag_ms_ = -1;
      if (body.size() >= at + 4) {
        auto n = static_cast<std::int32_t>(proto::readU32(body.data() + at));
        std::string_view v = body.substr(at + 4);
        auto ms = n > 0 && static_cast<std::size_t>(n) <= v.size()
                      ? base::parseUnsigned(v.substr(0, static_cast<std::size_t>(n)))
                      : std::nullopt;
        lag_ms_ = ms && *ms <= static_cast<std::uint64_t>(INT64_MAX)
                      ? static_cast<std::int64_t>(*ms)
                      : -1;
      }
    } else if (type == 'Z') {
      if (role_ == Role::kUnknown) {
        return failed("pg_is_in_recovery() returned no row");
      }
      Step s;
      s.kind = Step::kDone;
      s.role = role_;
      s.lag_ms = !with_lag_ ? -1 : role_ == Role::kPrimary ? 0 : lag_ms_;
      s.send = proto::buildMessage('X', "");
      return s;
    }
  }
  pending_.erase(0, pos);
  return {};
}

}  // namespace pgproxy::upstream
