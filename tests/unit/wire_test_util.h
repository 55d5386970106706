#pragma once

// Protocol messages for unit tests that play a PostgreSQL server or client.

#include <cstdint>
#include <string>

#include "pgproxy/proto/wire.h"

namespace pgproxy::test {

inline std::string msg(char type, const std::string& body) {
  return proto::buildMessage(type, body);
}

// An authentication request ('R') with its code and data.
inline std::string authReq(std::uint32_t code, const std::string& rest = {}) {
  std::string b;
  proto::appendU32(b, code);
  return msg('R', b + rest);
}

// The extended protocol's messages, as a client sends them.
inline std::string u16(unsigned v) {
  return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
}
inline std::string parse(const std::string& name, const std::string& query) {
  return proto::buildMessage('P', name + '\0' + query + '\0' + u16(0));
}
inline std::string bind(const std::string& name) {
  return proto::buildMessage('B', std::string("\0", 1) + name + '\0' + u16(0) + u16(0) + u16(0));
}
inline std::string sync() {
  return proto::buildMessage('S', "");
}

// The message types of a framed stream, in order.
inline std::string types(const std::string& bytes) {
  std::string out;
  for (std::size_t i = 0; i + 5 <= bytes.size();) {
    out += bytes[i];
    i += 1 + proto::readU32(bytes.data() + i + 1);
  }
  return out;
}

}  // namespace pgproxy::test
