#pragma once

#include <string>
#include <string_view>

#include "pgproxy/base/result.h"

namespace pgproxy::auth {

// A SCRAM-SHA-256 verifier as PostgreSQL stores it (pg_authid.rolpassword):
// "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" (base64 fields).
struct ScramVerifier {
  unsigned iterations = 0;
  std::string salt;  // binary
  std::string stored_key;
  std::string server_key;

  static base::Result<ScramVerifier> parse(std::string_view text);
  // The verifier PostgreSQL would store for `password` (SASLprep'd as it does: saslprep.h).
  static ScramVerifier fromPassword(std::string_view password, std::string salt,
                                    unsigned iterations = 4096);
  std::string text() const;
};

// The server side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677, channel binding
// tls-server-end-point of RFC 5929) as PostgreSQL speaks it: the user name travels in the
// StartupMessage, so the n= attribute is ignored. Pure: the caller moves the messages.
//
// On success the exchange also yields the client's ClientKey (ClientProof XOR ClientSignature):
// with a verifier that is the backend's own, that key answers the backend's SCRAM challenge
// without the password.
class ScramServer {
 public:
  enum class Result { kContinue, kOk, kWrongPassword, kProtocolError };
  struct Step {
    Result result = Result::kProtocolError;
    std::string message;  // to the client: server-first / server-final; the error otherwise
  };

  // `nonce`: the server's part, printable without commas (randomNonce()). `channel_binding`: the
  // tls-server-end-point hash of pgproxy's certificate on this connection, empty without TLS
  // (then only SCRAM-SHA-256 is acceptable).
  ScramServer(ScramVerifier verifier, std::string nonce, std::string channel_binding);
  // An exchange for a user that does not exist: it runs to the end with a salt derived from the
  // user name and `mock_secret` (the same on every attempt, as PostgreSQL's mock salt), and fails
  // as a wrong password does, so that users cannot be enumerated.
  static ScramServer mock(std::string_view user, std::string_view mock_secret, std::string nonce,
                          std::string channel_binding);

  // The mechanisms to offer in AuthenticationSASL, "PLUS" first when channel binding is possible.
  bool offersPlus() const { return !channel_binding_.empty(); }
  // SASLInitialResponse: the chosen mechanism and the client-first-message.
  Step clientFirst(std::string_view mechanism, std::string_view client_first);
  // SASLResponse: the client-final-message.
  Step clientFinal(std::string_view client_final);
  // After kOk.
  const std::string& clientKey() const { return client_key_; }

  static constexpr std::size_t kMaxMessage = 1024;

 private:
  ScramVerifier verifier_;
  std::string nonce_;  // the whole nonce once the client's part is known
  std::string channel_binding_;
  bool mock_ = false;
  bool first_done_ = false;
  std::string cbind_input_;  // gs2 header + channel-binding data, as c= must carry it
  std::string client_first_bare_, server_first_;
  std::string client_key_;
};

}  // namespace pgproxy::auth
