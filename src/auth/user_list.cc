#include "pgproxy/auth/user_list.h"

#include <cctype>

namespace pgproxy::auth {
namespace {

bool isHex32(std::string_view s) {
  if (s.size() != 32) {
    return false;
  }
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

void skipBlanks(std::string_view line, std::size_t& i) {
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) {
    ++i;
  }
}

// A double-quoted field starting at line[i]; "" stands for one quote.
base::Result<std::string> quoted(std::string_view line, std::size_t& i) {
  if (i >= line.size() || line[i] != '"') {
    return base::Error{"expected a double-quoted field"};
  }
  std::string out;
  for (++i; i < line.size(); ++i) {
    if (line[i] == '"') {
      if (i + 1 < line.size() && line[i + 1] == '"') {
        out += '"';
        ++i;
        continue;
      }
      ++i;
      return out;
    }
    if (out.size() >= UserList::kMaxField) {
      return base::Error{"field longer than " + std::to_string(UserList::kMaxField) + " bytes"};
    }
    out += line[i];
  }
  return base::Error{"unterminated double-quoted field"};
}

}  // namespace

base::Result<UserSecret> classifySecret(std::string_view text) {
  UserSecret s;
  s.text = std::string(text);
  if (text.substr(0, 14) == "SCRAM-SHA-256$") {
    auto v = ScramVerifier::parse(text);
    if (!v.ok()) {
      return v.error();
    }
    s.kind = UserSecret::Kind::kScram;
    s.verifier = std::move(*v);
  } else if (text.size() == 35 && text.substr(0, 3) == "md5" && isHex32(text.substr(3))) {
    s.kind = UserSecret::Kind::kMd5;
  } else if (text.empty()) {
    return base::Error{"empty secret"};
  }
  return s;
}

base::Result<UserList> UserList::parse(std::string_view text, std::string_view file_name) {
  if (text.size() > kMaxBytes) {
    return base::Error{std::string(file_name) + ": larger than " + std::to_string(kMaxBytes) +
                       " bytes"};
  }
  UserList list;
  std::size_t lineNo = 0;
  while (!text.empty()) {
    ++lineNo;
    std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == text.npos ? std::string_view() : text.substr(nl + 1);
    std::size_t i = 0;
    skipBlanks(line, i);
    if (i == line.size() || line[i] == ';' || line[i] == '#') {
      continue;
    }
    auto where = [&] { return std::string(file_name) + ":" + std::to_string(lineNo) + ": "; };
    auto user = quoted(line, i);
    if (!user.ok()) {
      return base::Error{where() + "user: " + user.error().message};
    }
    skipBlanks(line, i);
    auto secret = quoted(line, i);
    if (!secret.ok()) {
      return base::Error{where() + "secret of \"" + *user + "\": " + secret.error().message};
    }
    skipBlanks(line, i);
    if (i != line.size()) {
      return base::Error{where() + "unexpected text after the secret of \"" + *user + "\""};
    }
    if (user->empty()) {
      return base::Error{where() + "empty user name"};
    }
    auto classified = classifySecret(*secret);
    if (!classified.ok()) {
      return base::Error{where() + "secret of \"" + *user + "\": " + classified.error().message};
    }
    if (!list.users_.emplace(std::move(*user), std::move(*classified)).second) {
      return base::Error{where() + "user listed twice"};
    }
  }
  return list;
}

const UserSecret* UserList::find(std::string_view user) const {
  auto it = users_.find(std::string(user));
  return it == users_.end() ? nullptr : &it->second;
}

}  // namespace pgproxy::auth
