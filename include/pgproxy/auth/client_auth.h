#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "pgproxy/auth/server_login.h"
#include "pgproxy/auth/user_list.h"

namespace pgproxy::auth {

// How pgproxy authenticates its clients (auth.type).
enum class ClientAuthType { kScramSha256, kMd5, kTrust, kCert };

// What the client's TLS session says about its certificate, for auth.type cert. The TLS
// handshake lets an unverified certificate through so that the client is refused with
// PostgreSQL's FATAL rather than a TLS alert; this is where that refusal is decided.
struct ClientCertificate {
  bool present = false;     // the client sent a certificate (never true without TLS)
  bool verified = false;    // it chains to auth.client_ca (SSL_get_verify_result is X509_V_OK)
  std::string why;          // !verified: OpenSSL's reason, for the log
  std::string common_name;  // the Subject's CN, UTF-8; empty when absent or malformed
};

// pgproxy's side of a client's authentication, as PostgreSQL runs it for the same pg_hba method
// and stored secret. Pure: the session moves the bytes. After success it says how to log in to
// the server for that client (ServerCredentials), without ever having needed the password when
// the secret is a SCRAM verifier.
//
// As PostgreSQL does: an md5 method with a SCRAM verifier runs SCRAM; a SCRAM method with an md5
// hash cannot succeed; an unknown user runs the whole exchange (a mock SCRAM salt, or a random
// md5 salt) and fails with the same message as a wrong password, so users cannot be enumerated.
class ClientAuth {
 public:
  struct Settings {
    ClientAuthType type = ClientAuthType::kScramSha256;
    // tls-server-end-point hash of pgproxy's certificate on this connection; empty without TLS.
    std::string channel_binding;
    std::string mock_secret;  // per process, random: the salt of mock exchanges
    // For the log when the user is unknown: where pgproxy looked.
    const char* unknown_user = "no such user in the auth file";
    ClientCertificate certificate{};  // kCert only
  };
  // `secret`: the user's entry, or nullptr for an unknown user.
  ClientAuth(std::string user, const UserSecret* secret, Settings settings);
  // A secret auth.query found: held for the exchange's life, whatever the cache does meanwhile.
  ClientAuth(std::string user, std::shared_ptr<const UserSecret> secret, Settings settings);

  struct Step {
    enum Kind { kContinue, kOk, kFailed } kind = kContinue;
    // To the client: an authentication request; on kOk with SCRAM, AuthenticationSASLFinal (the
    // caller sends AuthenticationOk once the server login succeeded); the FATAL on kFailed.
    std::string send;
    std::string log;  // kFailed: why, for the log only (the client is not told)
  };
  // The first authentication request (kOk at once for trust, and for cert when
  // checkCertificate accepts the client).
  Step start();
  // PostgreSQL's cert method: a verified certificate whose Subject CN is exactly `user`. kOk, or
  // kFailed with PostgreSQL's FATAL (28000) and the detail for the log.
  static Step checkCertificate(std::string_view user, const ClientCertificate& cert);
  // Bytes from the client: PasswordMessage / SASLInitialResponse / SASLResponse ('p').
  Step feed(std::string_view bytes);
  // After kOk: how to log in to the server as this user.
  ServerCredentials serverCredentials() const;
  const std::string& user() const { return user_; }

  static constexpr std::size_t kMaxMessage = 8 * 1024;

 private:
  enum class Phase { kStart, kMd5, kScramFirst, kScramFinal, kDone };
  Step onMessage(std::string_view body);
  Step fail();  // the wrong-password answer
  Step protocolError(const std::string& why);

  std::string user_;
  std::shared_ptr<const UserSecret> owned_;  // auth.query's secret, which secret_ points to
  const UserSecret* secret_;
  Settings settings_;
  Phase phase_ = Phase::kStart;
  std::string md5_salt_;
  ScramServer scram_;
  bool use_scram_ = false;
  std::string pending_;
};

}  // namespace pgproxy::auth
