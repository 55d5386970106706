#include "pgproxy/auth/scram_common.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

namespace pgproxy::auth {

std::string hmacSha256(std::string_view key, std::string_view data) {
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

std::string saltedPassword(std::string_view password, std::string_view salt, unsigned iterations) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()),
                    static_cast<int>(salt.size()), static_cast<int>(iterations), EVP_sha256(),
                    SHA256_DIGEST_LENGTH, reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string xorBytes(std::string_view a, std::string_view b) {
  std::string out(a.size(), '\0');
  for (std::size_t k = 0; k < out.size() && k < b.size(); ++k) {
    out[k] = static_cast<char>(a[k] ^ b[k]);
  }
  return out;
}

bool sameBytes(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool scramAttribute(std::string_view msg, char key, std::string_view& value) {
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

}  // namespace pgproxy::auth
