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

}  // namespace pgproxy::test
