#include "pgproxy/upstream/login_probe.h"

#include "pgproxy/proto/wire.h"

namespace pgproxy::upstream {
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

LoginProbe::LoginProbe(std::string user, std::string password, std::string database)
    : user_(user), database_(std::move(database)), login_(user, credentials(std::move(password))) {}

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
    out.send += proto::buildMessage('Q', std::string("SELECT pg_is_in_recovery()") + '\0');
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
      // DataRow: Int16 columns, Int32 length, value ("t" or "f").
      role_ = body[6] == 't' ? Role::kStandby : Role::kPrimary;
    } else if (type == 'Z') {
      if (role_ == Role::kUnknown) {
        return failed("pg_is_in_recovery() returned no row");
      }
      Step s;
      s.kind = Step::kDone;
      s.role = role_;
      s.send = proto::buildMessage('X', "");
      return s;
    }
  }
  pending_.erase(0, pos);
  return {};
}

}  // namespace pgproxy::upstream
