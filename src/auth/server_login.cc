#include "pgproxy/auth/server_login.h"

#include <openssl/crypto.h>

#include "pgproxy/proto/startup.h"
#include "pgproxy/proto/wire.h"

namespace pgproxy::auth {
namespace {

std::string cstring(std::string_view s) {
  return std::string(s) + std::string(1, '\0');
}

ServerLogin::Step failed(std::string why) {
  ServerLogin::Step s;
  s.kind = ServerLogin::Step::kFailed;
  s.error = std::move(why);
  return s;
}

ScramClient scramFor(const ServerCredentials& c) {
  if (c.kind == ServerCredentials::Kind::kScramKeys) {
    return ScramClient::withKeys(c.client_key, c.server_key, c.salt, c.iterations, randomNonce());
  }
  return ScramClient(c.password, randomNonce());
}

}  // namespace

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

ServerLogin::ServerLogin(std::string user, ServerCredentials credentials)
    : user_(std::move(user)),
      credentials_(std::move(credentials)),
      scram_(scramFor(credentials_)) {}

std::string ServerLogin::startupPacket(
    const std::vector<std::pair<std::string, std::string>>& params) {
  return proto::buildStartup(proto::kProtocol3, params);
}

ServerLogin::Step ServerLogin::feed(std::string_view bytes) {
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
    Step s = onMessage(pending_[pos], std::string_view(pending_).substr(pos, 1 + len));
    pos += 1 + len;
    out.send += s.send;
    if (s.kind != Step::kContinue) {
      s.send = std::move(out.send);
      pending_.erase(0, pos);
      return s;
    }
  }
  pending_.erase(0, pos);
  if (pending_.size() > kMaxMessage + 5) {
    return failed("the server sent a malformed message");
  }
  return out;
}

ServerLogin::Step ServerLogin::onMessage(char type, std::string_view whole) {
  std::string_view body = whole.substr(5);
  Step s;
  if (type == 'E') {
    std::string code = errorField(body, 'C');
    s = failed(errorField(body, 'M') + " (SQLSTATE " + code + ")");
    s.sqlstate = code;
    s.response = std::string(whole);
    return s;
  }
  if (authenticated_) {
    if (greeting_.size() + whole.size() > kMaxGreeting) {
      return failed("the server's greeting is too long");
    }
    greeting_.append(whole);
    if (type == 'Z') {
      s.kind = Step::kReady;
    } else if (type != 'S' && type != 'K' && type != 'N') {
      return failed("the server sent an unexpected message after authentication");
    }
    return s;
  }
  if (type == 'N') {
    return s;  // a notice during authentication: nothing to act on
  }
  if (type != 'R' || body.size() < 4) {
    return failed("the server sent an unexpected message during authentication");
  }
  using Kind = ServerCredentials::Kind;
  const Kind kind = credentials_.kind;
  std::uint32_t code = proto::readU32(body.data());
  std::string_view data = body.substr(4);
  switch (code) {
    case 0:
      authenticated_ = true;
      return s;
    case 3:
      if (kind != Kind::kPassword) {
        return failed(
            "the server asks for a cleartext password, which pgproxy does not hold for "
            "this user");
      }
      s.send = proto::buildMessage('p', cstring(credentials_.password));
      return s;
    case 5:
      if (data.size() != 4) {
        return failed("malformed md5 authentication request");
      }
      if (kind == Kind::kPassword) {
        s.send = proto::buildMessage('p', cstring(md5Password(user_, credentials_.password, data)));
      } else if (kind == Kind::kMd5Hash) {
        s.send = proto::buildMessage('p', cstring(md5FromHash(credentials_.md5_hash, data)));
      } else {
        return failed(
            "the server asks for md5 authentication, which pgproxy cannot answer "
            "without this user's password or md5 hash");
      }
      return s;
    case 10: {
      if (kind != Kind::kPassword && kind != Kind::kScramKeys) {
        return failed(
            "the server asks for SCRAM-SHA-256 authentication, which pgproxy cannot "
            "answer without this user's password or SCRAM verifier");
      }
      if (std::string(data).find(std::string("SCRAM-SHA-256") + '\0') == std::string::npos) {
        return failed("the server offers no SASL mechanism pgproxy speaks");
      }
      std::string first = scram_.clientFirst();
      std::string initial = cstring("SCRAM-SHA-256");
      proto::appendU32(initial, static_cast<std::uint32_t>(first.size()));
      s.send = proto::buildMessage('p', initial + first);
      return s;
    }
    case 11: {
      auto final = scram_.clientFinal(data);
      if (!final) {
        return failed(final.error().message);
      }
      s.send = proto::buildMessage('p', *final);
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

}  // namespace pgproxy::auth
