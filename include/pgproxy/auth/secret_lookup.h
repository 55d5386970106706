#pragma once

// auth_query, the pure parts: the exchange with a PostgreSQL server that fetches the secret of a
// user who is not in the auth file (log in as auth.user, run auth.query with the user name as
// $1, read its one row), and the cache of what it returned. The I/O that moves the bytes is
// secret_fetch.h.

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pgproxy/auth/server_login.h"
#include "pgproxy/auth/user_list.h"

namespace pgproxy::auth {

// How pgproxy logs in to a server as a user of the auth file on its own behalf (auth.user): a
// password answers every method, an md5 hash answers md5. A SCRAM verifier cannot log in (that
// takes the password, or a client's proof), so it gives kNone and the server's SCRAM request
// fails with a clear error.
ServerCredentials fileCredentials(const UserSecret& secret);

// Parse, Bind, Execute and Sync for `sql` with one text parameter, `user`: the name travels as a
// parameter value, never inside the SQL, so no name can change what the query does.
std::string buildSecretQuery(std::string_view sql, std::string_view user);

// The server's answer to buildSecretQuery, up to its ReadyForQuery. Bounded: one message of at
// most kMaxMessage bytes is held at a time.
class SecretReply {
 public:
  static constexpr std::size_t kMaxMessage = 64 * 1024;

  struct Step {
    enum Kind { kContinue, kFound, kAbsent, kFailed } kind = kContinue;
    std::string secret;    // kFound: the second column, as the server sent it
    std::string error;     // kFailed: what went wrong (the server's message, or ours)
    std::string sqlstate;  // kFailed on the server's ErrorResponse
  };
  Step feed(std::string_view bytes);

 private:
  Step onMessage(char type, std::string_view body);
  std::string pending_;
  std::size_t rows_ = 0;
  bool null_secret_ = false;
  std::string secret_;
};

// The whole exchange on one server connection: the StartupMessage as auth.user (start()), its
// login, the query, the row. Pure: the caller moves the bytes.
class SecretQuery {
 public:
  struct Settings {
    std::string login_user;  // auth.user
    ServerCredentials credentials;
    std::string database;  // auth.database
    std::string sql;       // auth.query
  };
  SecretQuery(Settings settings, std::string user);

  // The first bytes for the server.
  std::string start() const;
  using Step = SecretReply::Step;
  // Bytes from the server; `send` gets what goes back (the login's answers, then the query).
  Step feed(std::string_view bytes, std::string& send);
  // After kFailed: whether the server refused auth.user's login (else the query failed).
  bool loginFailed() const { return login_ != nullptr; }

 private:
  Settings settings_;
  std::string user_;
  std::unique_ptr<ServerLogin> login_;  // until the server is ready for the query
  SecretReply reply_;
};

// What auth.query said about each user, for auth.cache: user → secret, or known to be absent.
// Bounded twice: entries expire `ttl_ms` after they were stored, and past `capacity` the least
// recently used one is dropped, so a flood of made-up user names costs at most `capacity`
// entries. Keys are opaque (the caller puts the mapping in them).
class SecretCache {
 public:
  static constexpr std::size_t kDefaultCapacity = 10'000;

  explicit SecretCache(std::uint64_t ttl_ms, std::size_t capacity = kDefaultCapacity)
      : ttl_ms_(ttl_ms), capacity_(capacity) {}
  // True when a fresh entry exists: `secret` is the user's, or nullptr for a user auth.query did
  // not find. An expired entry is dropped.
  bool get(const std::string& key, std::uint64_t now_ms, std::shared_ptr<const UserSecret>& secret);
  void put(const std::string& key, std::shared_ptr<const UserSecret> secret, std::uint64_t now_ms);
  std::size_t size() const { return index_.size(); }

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const UserSecret> secret;
    std::uint64_t expires_ms;
  };
  std::uint64_t ttl_ms_;
  std::size_t capacity_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

}  // namespace pgproxy::auth
