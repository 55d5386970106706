#pragma once

// What the SCRAM client and server share: the primitives of RFC 5802 with SHA-256 and the
// message attribute syntax. Pure functions.

#include <string>
#include <string_view>

namespace pgproxy::auth {

std::string hmacSha256(std::string_view key, std::string_view data);
std::string sha256(std::string_view data);
// PBKDF2-HMAC-SHA-256 of `password` (RFC 5802's Hi()), 32 bytes.
std::string saltedPassword(std::string_view password, std::string_view salt, unsigned iterations);
// Bytewise a XOR b (same length).
std::string xorBytes(std::string_view a, std::string_view b);
// Constant-time equality.
bool sameBytes(std::string_view a, std::string_view b);
// The value of the first "k=value" attribute of a SCRAM message.
bool scramAttribute(std::string_view msg, char key, std::string_view& value);

std::string base64Encode(std::string_view bytes);
// False when `text` is not valid base64.
bool base64Decode(std::string_view text, std::string& out);

}  // namespace pgproxy::auth
