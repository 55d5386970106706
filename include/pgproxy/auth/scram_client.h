#pragma once

#include <string>
#include <string_view>

#include "pgproxy/auth/scram_common.h"
#include "pgproxy/base/result.h"

namespace pgproxy::auth {

// The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, without channel
// binding (GS2 header "n,,"; the user name travels in the StartupMessage, so n= is empty). Pure:
// the caller moves the messages. The password is SASLprep'd as libpq does (saslprep.h), so that it
// proves the keys of the verifier PostgreSQL stored for it.
class ScramClient {
 public:
  // `nonce`: printable, no comma (randomNonce() makes one). `user` stays empty for PostgreSQL;
  // RFC 7677's test vector names one.
  ScramClient(std::string password, std::string nonce, std::string user = "");
  // Logs in without the password: with the ClientKey a client proved (ScramServer::clientKey())
  // and the ServerKey of the verifier it was checked against. The backend must hold the same
  // verifier: its salt and iteration count must be `salt` and `iterations`.
  static ScramClient withKeys(std::string client_key, std::string server_key, std::string salt,
                              unsigned iterations, std::string nonce);
  std::string clientFirst() const;
  // The answer to the server-first-message, or why the server's message is unacceptable.
  base::Result<std::string> clientFinal(std::string_view server_first);
  // Checks the server's proof that it knows the password too.
  base::Status verifyServerFinal(std::string_view server_final) const;

  static constexpr unsigned kMaxIterations = 1'000'000;  // a hostile server cannot pin the CPU

 private:
  std::string password_, nonce_, user_;
  std::string auth_message_;
  // Binary, 32 bytes each: from the password once clientFinal succeeded, or given (withKeys).
  std::string client_key_, server_key_;
  bool from_keys_ = false;
  std::string key_salt_;  // withKeys: the salt and iterations the keys belong to
  unsigned key_iterations_ = 0;
};

// 18 random bytes, base64: a client nonce.
std::string randomNonce();
// PostgreSQL's md5 password answer: "md5" + md5hex(md5hex(password + user) + salt).
std::string md5Password(std::string_view user, std::string_view password, std::string_view salt);
// The same answer from the stored hash "md5" + md5hex(password + user) (pg_authid, auth file).
std::string md5FromHash(std::string_view stored, std::string_view salt);

}  // namespace pgproxy::auth
