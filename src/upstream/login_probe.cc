#include "pgproxy/upstream/login_probe.h"

#include "pgproxy/proto/wire.h"

namespace pgproxy::upstream {
namespace {

std::string message(char type, std::string_view body) {
  std::string out(1, type);
  proto::appendU32(out, static_cast<std::uint32_t>(4 + body.size()));
  out.append(body);
  return out;
}

std::string cstring(std::string_view s) {
  return std::string(s) + std::string(1, '\0');
}

// A field ('M' message, 'C' code) of an ErrorResponse body.
std::string errorField(std::string_view body, char field) {
  std::size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    std::size_t end = body.find('\0', pos + 1);
    if (end == std::string_view::npos) {
      break;
    }
    if (body[pos] == field) {
      return std::string(body.substr(pos + 1, end - pos - 1));
    }
    pos = end + 1;
  }
  return "";
}

LoginProbe::Step failed(std::string why, std::string sqlstate = "") {
  LoginProbe::Step s;
  s.kind = LoginProbe::Step::kFailed;
  s.error = std::move(why);
  s.sqlstate = std::move(sqlstate);
  return s;
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
    : user_(std::move(user)),
      password_(std::move(password)),
      database_(std::move(database)),
      scram_(password_, auth::randomNonce()) {}

std::string LoginProbe::start() const {
  std::string body;
  proto::appendU32(body, 3u << 16);
  body += cstring("user") + cstring(user_) + cstring("database") + cstring(database_) +
          cstring("application_name") + cstring("pgproxy health check") + std::string(1, '\0');
  std::string out;
  proto::appendU32(out, static_cast<std::uint32_t>(4 + body.size()));
  return out + body;
}

LoginProbe::Step LoginProbe::feed(std::string_view bytes) {
  pending_.append(bytes);
  Step out;
  std::size_t pos = 0;
  while (pending_.size() - pos >= 5) {
    std::uint32_t len = proto::readU32(pending_.data() + pos + 1);
    if (len < 4 || len > kMaxMessage) {
      return failed("the server sent a malformed message");
    }
    if (pending_.size() - pos < 1 + static_cast<std::size_t>(len)) {
      break;
    }
    char type = pending_[pos];
    Step s = onMessage(type, std::string_view(pending_).substr(pos + 5, len - 4));
    pos += 1 + len;
    out.send += s.send;
    if (s.kind != Step::kContinue) {
      s.send = out.send;
      return s;
    }
  }
  pending_.erase(0, pos);
  return out;
}

LoginProbe::Step LoginProbe::onMessage(char type, std::string_view body) {
  Step s;
  if (type == 'E') {
    std::string code = errorField(body, 'C');
    return failed(errorField(body, 'M') + " (SQLSTATE " + code + ")", code);
  }
  if (type == 'R') {
    if (body.size() < 4) {
      return failed("malformed authentication request");
    }
    std::uint32_t code = proto::readU32(body.data());
    std::string_view data = body.substr(4);
    switch (code) {
      case 0:
        authenticated_ = true;
        return s;
      case 3:
        s.send = message('p', cstring(password_));
        return s;
      case 5:
        if (data.size() != 4) {
          return failed("malformed md5 authentication request");
        }
        s.send = message('p', cstring(auth::md5Password(user_, password_, data)));
        return s;
      case 10: {
        if (std::string(data).find(std::string("SCRAM-SHA-256") + '\0') == std::string::npos) {
          return failed("the server offers no SASL mechanism pgproxy speaks");
        }
        std::string first = scram_.clientFirst();
        std::string body10 = cstring("SCRAM-SHA-256");
        proto::appendU32(body10, static_cast<std::uint32_t>(first.size()));
        s.send = message('p', body10 + first);
        return s;
      }
      case 11: {
        auto final = scram_.clientFinal(data);
        if (!final) {
          return failed(final.error().message);
        }
        s.send = message('p', *final);
        return s;
      }
      case 12:
        if (auto st = scram_.verifyServerFinal(data); !st) {
          return failed(st.error().message);
        }
        return s;
      default:
        return failed("the server asks for an authentication method pgproxy does not speak (" +
                      std::to_string(code) + ")");
    }
  }
  if (type == 'D' && queried_ && body.size() >= 7) {
    // DataRow: Int16 columns, Int32 length, value ("t" or "f").
    role_ = body[6] == 't' ? Role::kStandby : Role::kPrimary;
    return s;
  }
  if (type == 'Z') {
    if (!authenticated_) {
      return failed("ReadyForQuery before authentication");
    }
    if (!queried_) {
      queried_ = true;
      s.send = message('Q', cstring("SELECT pg_is_in_recovery()"));
      return s;
    }
    if (role_ == Role::kUnknown) {
      return failed("pg_is_in_recovery() returned no row");
    }
    s.kind = Step::kDone;
    s.role = role_;
    s.send = message('X', "");
    return s;
  }
  return s;  // ParameterStatus, BackendKeyData, notices, RowDescription, CommandComplete
}

}  // namespace pgproxy::upstream
