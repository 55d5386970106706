#include "pgproxy/auth/scram_client.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstdint>
#include <vector>

#include "pgproxy/auth/saslprep.h"
#include "pgproxy/base/text.h"

namespace pgproxy::auth {

ScramClient::ScramClient(std::string password, std::string nonce, std::string user)
    : password_(scramPassword(password)), nonce_(std::move(nonce)), user_(std::move(user)) {
  OPENSSL_cleanse(password.data(), password.size());
}

ScramClient ScramClient::withKeys(std::string client_key, std::string server_key, std::string salt,
                                  unsigned iterations, std::string nonce) {
  ScramClient c("", std::move(nonce));
  c.from_keys_ = true;
  c.client_key_ = std::move(client_key);
  c.server_key_ = std::move(server_key);
  c.key_salt_ = std::move(salt);
  c.key_iterations_ = iterations;
  return c;
}

std::string ScramClient::clientFirst() const {
  return "n,,n=" + user_ + ",r=" + nonce_;
}

base::Result<std::string> ScramClient::clientFinal(std::string_view server_first) {
  std::string_view r, s, i, m;
  if (scramAttribute(server_first, 'm', m)) {
    return base::Error{"the server requires a SCRAM extension pgproxy does not know"};
  }
  if (!scramAttribute(server_first, 'r', r) || !scramAttribute(server_first, 's', s) ||
      !scramAttribute(server_first, 'i', i)) {
    return base::Error{"malformed SCRAM server-first-message"};
  }
  if (r.size() <= nonce_.size() || r.substr(0, nonce_.size()) != nonce_) {
    return base::Error{"the server's SCRAM nonce does not extend ours"};
  }
  auto iterations = base::parseUnsigned(i);
  if (!iterations || *iterations < 1 || *iterations > kMaxIterations) {
    return base::Error{"SCRAM iteration count out of range"};
  }
  std::string salt;
  if (!base64Decode(s, salt) || salt.empty()) {
    return base::Error{"malformed SCRAM salt"};
  }
  if (from_keys_) {
    if (salt != key_salt_ || *iterations != key_iterations_) {
      return base::Error{
          "the server's SCRAM salt or iteration count differs from the verifier pgproxy holds for "
          "this user (the server's password was changed, or the verifier is not the server's)"};
    }
  } else {
    std::string salted = saltedPassword(password_, salt, static_cast<unsigned>(*iterations));
    client_key_ = hmacSha256(salted, "Client Key");
    server_key_ = hmacSha256(salted, "Server Key");
    OPENSSL_cleanse(salted.data(), salted.size());
  }
  std::string without_proof = "c=biws,r=" + std::string(r);  // biws = base64("n,,")
  auth_message_ = clientFirst().substr(3) + "," + std::string(server_first) + "," + without_proof;
  std::string signature = hmacSha256(sha256(client_key_), auth_message_);
  std::string proof = xorBytes(client_key_, signature);
  return without_proof + ",p=" + base64Encode(proof);
}

base::Status ScramClient::verifyServerFinal(std::string_view server_final) const {
  std::string_view v, e;
  if (scramAttribute(server_final, 'e', e)) {
    return base::Error{"the server rejected the SCRAM exchange: " + std::string(e)};
  }
  std::string got;
  if (auth_message_.empty() || !scramAttribute(server_final, 'v', v) || !base64Decode(v, got)) {
    return base::Error{"malformed SCRAM server-final-message"};
  }
  std::string expected = hmacSha256(server_key_, auth_message_);
  if (!sameBytes(got, expected)) {
    return base::Error{"the server's SCRAM signature is wrong (it does not know the password)"};
  }
  return {};
}

std::string randomNonce() {
  unsigned char bytes[18];
  RAND_bytes(bytes, sizeof(bytes));
  return base64Encode(std::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes)));
}

namespace {

std::string md5hex(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_md5(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (unsigned int k = 0; k < len; ++k) {
    hex += kHex[out[k] >> 4];
    hex += kHex[out[k] & 15];
  }
  return hex;
}

}  // namespace

std::string md5Password(std::string_view user, std::string_view password, std::string_view salt) {
  return md5FromHash("md5" + md5hex(std::string(password) + std::string(user)), salt);
}

std::string md5FromHash(std::string_view stored, std::string_view salt) {
  return "md5" + md5hex(std::string(stored.substr(3)) + std::string(salt));
}

}  // namespace pgproxy::auth
