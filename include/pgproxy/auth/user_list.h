#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pgproxy/auth/scram_server.h"
#include "pgproxy/base/result.h"

namespace pgproxy::auth {

// A user's secret as the auth file (or auth_query) gives it.
struct UserSecret {
  enum class Kind { kScram, kMd5, kPlain } kind = Kind::kPlain;
  std::string text;        // as written: the verifier, "md5" + 32 hex digits, or the password
  ScramVerifier verifier;  // kScram
};
// "SCRAM-SHA-256$..." is a verifier, "md5" + 32 hex digits an md5 hash, anything else a password.
base::Result<UserSecret> classifySecret(std::string_view text);

// The auth file: one user a line, `"user" "secret"`, as PgBouncer's userlist.txt (a `"` inside a
// field is written `""`). Blank lines and lines starting with `;` or `#` are comments. Anything
// else that does not parse is an error naming its line, as is a user listed twice.
class UserList {
 public:
  static constexpr std::size_t kMaxBytes = 16 * 1024 * 1024;
  static constexpr std::size_t kMaxField = 4096;

  static base::Result<UserList> parse(std::string_view text, std::string_view file_name);
  const UserSecret* find(std::string_view user) const;
  std::size_t size() const { return users_.size(); }

 private:
  std::unordered_map<std::string, UserSecret> users_;
};

}  // namespace pgproxy::auth
