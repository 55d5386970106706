#include "pgproxy/auth/secret_lookup.h"

#include "pgproxy/proto/wire.h"

namespace pgproxy::auth {
namespace {

std::string cstring(std::string_view s) {
  return std::string(s) + std::string(1, '\0');
}

void appendU16(std::string& out, std::uint16_t v) {
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v & 0xff);
}

std::uint16_t readU16(const char* p) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(p[0]) << 8 |
                                    static_cast<unsigned char>(p[1]));
}

SecretReply::Step failed(std::string why, std::string sqlstate = "") {
  SecretReply::Step s;
  s.kind = SecretReply::Step::kFailed;
  s.error = std::move(why);
  s.sqlstate = std::move(sqlstate);
  return s;
}

}  // namespace

ServerCredentials fileCredentials(const UserSecret& secret) {
  ServerCredentials c;
  switch (secret.kind) {
    case UserSecret::Kind::kPlain:
      c.kind = ServerCredentials::Kind::kPassword;
      c.password = secret.text;
      break;
    case UserSecret::Kind::kMd5:
      c.kind = ServerCredentials::Kind::kMd5Hash;
      c.md5_hash = secret.text;
      break;
    case UserSecret::Kind::kScram:
      break;
  }
  return c;
}

std::string buildSecretQuery(std::string_view sql, std::string_view user) {
  // Parse: the unnamed statement, one parameter whose type the server infers (0), as libpq's
  // PQexecParams does; the query's own text decides, so $1 = usename becomes a name.
  std::string parse = cstring("") + cstring(sql);
  appendU16(parse, 1);
  proto::appendU32(parse, 0);
  // Bind: the unnamed portal, the parameter in text format, results in text format.
  std::string bind = cstring("") + cstring("");
  appendU16(bind, 0);
  appendU16(bind, 1);
  proto::appendU32(bind, static_cast<std::uint32_t>(user.size()));
  bind.append(user);
  appendU16(bind, 0);
  // Execute: every row (the reply checks that there is at most one).
  std::string execute = cstring("");
  proto::appendU32(execute, 0);
  return proto::buildMessage('P', parse) + proto::buildMessage('B', bind) +
         proto::buildMessage('E', execute) + proto::buildMessage('S', "");
}

SecretReply::Step SecretReply::feed(std::string_view bytes) {
  pending_.append(bytes);
  std::size_t pos = 0;
  Step out;
  while (pending_.size() - pos >= 5) {
    std::uint32_t len = proto::readU32(pending_.data() + pos + 1);
    if (len < 4 || len > kMaxMessage) {
      return failed("the server sent a malformed message");
    }
    if (pending_.size() - pos < 1 + static_cast<std::size_t>(len)) {
      break;
    }
    out = onMessage(pending_[pos], std::string_view(pending_).substr(pos + 5, len - 4));
    pos += 1 + len;
    if (out.kind != Step::kContinue) {
      pending_.clear();
      return out;
    }
  }
  pending_.erase(0, pos);
  return out;
}

SecretReply::Step SecretReply::onMessage(char type, std::string_view body) {
  switch (type) {
    case '1':  // ParseComplete
    case '2':  // BindComplete
    case 'C':  // CommandComplete
    case 'N':  // NoticeResponse
    case 'S':  // ParameterStatus
    case 'A':  // NotificationResponse
      return {};
    case 'E': {
      std::string code = errorField(body, 'C');
      return failed("auth.query failed: " + errorField(body, 'M') + " (SQLSTATE " + code + ")",
                    code);
    }
    case 'I':
      return failed("auth.query is empty");
    case 'D': {
      if (++rows_ > 1) {
        return failed("auth.query returned more than one row");
      }
      if (body.size() < 2) {
        return failed("the server sent a malformed DataRow");
      }
      std::uint16_t columns = readU16(body.data());
      if (columns != 2) {
        return failed(
            "auth.query must return two columns (the user name and its secret); it "
            "returned " +
            std::to_string(columns));
      }
      std::size_t pos = 2;
      for (int column = 0; column < 2; ++column) {
        if (body.size() - pos < 4) {
          return failed("the server sent a malformed DataRow");
        }
        std::uint32_t n = proto::readU32(body.data() + pos);
        pos += 4;
        if (n == 0xFFFFFFFFu) {  // NULL
          if (column == 1) {
            null_secret_ = true;
          }
          continue;
        }
        if (n > body.size() - pos) {
          return failed("the server sent a malformed DataRow");
        }
        if (column == 1) {
          secret_.assign(body.substr(pos, n));
        }
        pos += n;
      }
      if (pos != body.size()) {
        return failed("the server sent a malformed DataRow");
      }
      return {};
    }
    case 'Z': {
      Step s;
      // No row, or a role without a password (NULL): the user cannot log in with one, so it is
      // refused as an unknown user is.
      if (rows_ == 0 || null_secret_ || secret_.empty()) {
        s.kind = Step::kAbsent;
      } else {
        s.kind = Step::kFound;
        s.secret = std::move(secret_);
      }
      return s;
    }
    default:
      return failed(std::string("the server sent an unexpected message (type ") +
                    (type >= 0x20 && type < 0x7f
                         ? std::string(1, type)
                         : std::to_string(static_cast<unsigned char>(type))) +
                    ") in reply to auth.query");
  }
}

SecretQuery::SecretQuery(Settings settings, std::string user)
    : settings_(std::move(settings)),
      user_(std::move(user)),
      login_(std::make_unique<ServerLogin>(settings_.login_user, settings_.credentials)) {}

std::string SecretQuery::start() const {
  // application_name names pgproxy in pg_stat_activity and the server's log.
  return ServerLogin::startupPacket({{"user", settings_.login_user},
                                     {"database", settings_.database},
                                     {"application_name", "pgproxy auth_query"}});
}

SecretQuery::Step SecretQuery::feed(std::string_view bytes, std::string& send) {
  if (!login_) {
    return reply_.feed(bytes);
  }
  ServerLogin::Step step = login_->feed(bytes);
  send += step.send;
  if (step.kind == ServerLogin::Step::kFailed) {
    Step s;
    s.kind = Step::kFailed;
    s.error =
        "pgproxy could not log in as auth.user \"" + settings_.login_user + "\": " + step.error;
    s.sqlstate = step.sqlstate;
    return s;
  }
  if (step.kind != ServerLogin::Step::kReady) {
    return {};
  }
  std::string leftover = login_->takeLeftover();
  login_.reset();
  send += buildSecretQuery(settings_.sql, user_);
  if (leftover.empty()) {
    return {};
  }
  return reply_.feed(leftover);
}

bool SecretCache::get(const std::string& key, std::uint64_t now_ms,
                      std::shared_ptr<const UserSecret>& secret) {
  auto it = index_.find(key);
  if (it == index_.end()) {
    return false;
  }
  if (now_ms >= it->second->expires_ms) {
    lru_.erase(it->second);
    index_.erase(it);
    return false;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  secret = it->second->secret;
  return true;
}

void SecretCache::put(const std::string& key, std::shared_ptr<const UserSecret> secret,
                      std::uint64_t now_ms) {
  if (ttl_ms_ == 0 || capacity_ == 0) {
    return;  // auth.cache: 0: every login asks
  }
  auto it = index_.find(key);
  if (it != index_.end()) {
    it->second->secret = std::move(secret);
    it->second->expires_ms = now_ms + ttl_ms_;
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.push_front(Entry{key, std::move(secret), now_ms + ttl_ms_});
  index_.emplace(key, lru_.begin());
  if (index_.size() > capacity_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
}

}  // namespace pgproxy::auth
