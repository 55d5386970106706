#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgproxy/auth/scram_client.h"

namespace pgproxy::auth {

// How pgproxy proves a user's identity to a PostgreSQL server.
struct ServerCredentials {
  enum class Kind { kNone, kPassword, kMd5Hash, kScramKeys } kind = Kind::kNone;
  std::string password;  // kPassword: answers cleartext, md5 and SCRAM
  std::string md5_hash;  // kMd5Hash: "md5" + md5hex(password + user); answers md5 only
  // kScramKeys: the ClientKey a client proved to pgproxy and the verifier it was checked against
  // (see ScramClient::withKeys); answers SCRAM only.
  std::string client_key, server_key, salt;
  unsigned iterations = 0;
  bool operator==(const ServerCredentials&) const = default;
};

// Logs pgproxy in to a PostgreSQL server as `user`: answers the authentication requests with the
// credentials, then collects what the server says until its first ReadyForQuery (ParameterStatus,
// BackendKeyData, notices). Pure: the caller moves the bytes. Holds at most one bounded message
// and a bounded greeting.
class ServerLogin {
 public:
  static constexpr std::size_t kMaxMessage = 64 * 1024;
  static constexpr std::size_t kMaxGreeting = 64 * 1024;

  ServerLogin(std::string user, ServerCredentials credentials);
  // A protocol 3.0 StartupMessage with these parameters (user first).
  static std::string startupPacket(const std::vector<std::pair<std::string, std::string>>& params);

  struct Step {
    enum Kind { kContinue, kReady, kFailed } kind = kContinue;
    std::string send;      // bytes for the server (possibly empty)
    std::string error;     // kFailed: what went wrong (never a secret)
    std::string sqlstate;  // kFailed on the server's ErrorResponse
    std::string response;  // kFailed on the server's ErrorResponse: the whole message, to relay
  };
  Step feed(std::string_view bytes);

  // After kReady: the server's messages after AuthenticationOk, up to and including its
  // ReadyForQuery, as it sent them; and whatever followed in the same read (normally nothing).
  const std::string& greeting() const { return greeting_; }
  std::string takeLeftover() { return std::move(pending_); }

 private:
  Step onMessage(char type, std::string_view message);
  std::string user_;
  ServerCredentials credentials_;
  ScramClient scram_;
  std::string pending_;
  std::string greeting_;
  bool authenticated_ = false;
};

// The 'M' (message) or 'C' (SQLSTATE) field of an ErrorResponse or NoticeResponse body.
std::string errorField(std::string_view body, char field);

}  // namespace pgproxy::auth
