#include "pgproxy/auth/scram_client.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstdint>
#include <vector>

#include "pgproxy/base/text.h"

namespace pgproxy::auth {
namespace {

std::string hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string sha256(std::string_view data) {
  unsigned char out[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out);
  return std::string(reinterpret_cast<char*>(out), sizeof(out));
}

// "k=value" attributes of a SCRAM message, in order.
bool attribute(std::string_view msg, char key, std::string_view& value) {
  std::size_t pos = 0;
  while (pos <= msg.size()) {
    std::size_t comma = msg.find(',', pos);
    std::string_view part =
        msg.substr(pos, comma == std::string_view::npos ? msg.npos : comma - pos);
    if (part.size() >= 2 && part[0] == key && part[1] == '=') {
      value = part.substr(2);
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    pos = comma + 1;
  }
  return false;
}

}  // namespace

std::string base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

bool base64Decode(std::string_view text, std::string& out) {
  if (text.size() % 4 != 0) {
    return false;
  }
  out.assign(3 * text.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) {
    return false;
  }
  std::size_t pad = 0;
  for (std::size_t i = text.size(); i > 0 && text[i - 1] == '=' && pad < 2; --i) {
    ++pad;
  }
  out.resize(static_cast<std::size_t>(n) - pad);
  return true;
}

ScramClient::ScramClient(std::string password, std::string nonce, std::string user)
    : password_(std::move(password)), nonce_(std::move(nonce)), user_(std::move(user)) {}

std::string ScramClient::clientFirst() const {
  return "n,,n=" + user_ + ",r=" + nonce_;
}

base::Result<std::string> ScramClient::clientFinal(std::string_view server_first) {
  std::string_view r, s, i, m;
  if (attribute(server_first, 'm', m)) {
    return base::Error{"the server requires a SCRAM extension pgproxy does not know"};
  }
  if (!attribute(server_first, 'r', r) || !attribute(server_first, 's', s) ||
      !attribute(server_first, 'i', i)) {
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
  salted_password_.assign(SHA256_DIGEST_LENGTH, '\0');
  PKCS5_PBKDF2_HMAC(password_.data(), static_cast<int>(password_.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()),
                    static_cast<int>(salt.size()), static_cast<int>(*iterations), EVP_sha256(),
                    SHA256_DIGEST_LENGTH,
                    reinterpret_cast<unsigned char*>(salted_password_.data()));
  std::string without_proof = "c=biws,r=" + std::string(r);  // biws = base64("n,,")
  auth_message_ = clientFirst().substr(3) + "," + std::string(server_first) + "," + without_proof;
  std::string client_key = hmac(salted_password_, "Client Key");
  std::string signature = hmac(sha256(client_key), auth_message_);
  std::string proof(client_key.size(), '\0');
  for (std::size_t k = 0; k < proof.size(); ++k) {
    proof[k] = static_cast<char>(client_key[k] ^ signature[k]);
  }
  OPENSSL_cleanse(client_key.data(), client_key.size());
  return without_proof + ",p=" + base64Encode(proof);
}

base::Status ScramClient::verifyServerFinal(std::string_view server_final) const {
  std::string_view v, e;
  if (attribute(server_final, 'e', e)) {
    return base::Error{"the server rejected the SCRAM exchange: " + std::string(e)};
  }
  std::string got;
  if (salted_password_.empty() || !attribute(server_final, 'v', v) || !base64Decode(v, got)) {
    return base::Error{"malformed SCRAM server-final-message"};
  }
  std::string expected = hmac(hmac(salted_password_, "Server Key"), auth_message_);
  if (got.size() != expected.size() ||
      CRYPTO_memcmp(got.data(), expected.data(), expected.size()) != 0) {
    return base::Error{"the server's SCRAM signature is wrong (it does not know the password)"};
  }
  return {};
}

std::string randomNonce() {
  unsigned char bytes[18];
  RAND_bytes(bytes, sizeof(bytes));
  return base64Encode(std::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes)));
}

std::string md5Password(std::string_view user, std::string_view password, std::string_view salt) {
  auto md5hex = [](std::string_view data) {
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
  };
  return "md5" + md5hex(md5hex(std::string(password) + std::string(user)) + std::string(salt));
}

}  // namespace pgproxy::auth
