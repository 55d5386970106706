#include "pgproxy/net/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "pgproxy/base/text.h"

namespace pgproxy::net {

std::optional<Cidr> Cidr::parse(std::string_view text) {
  Cidr c;
  std::string addr(text.substr(0, text.find('/')));
  if (inet_pton(AF_INET, addr.c_str(), c.bytes) == 1) {
    c.family = AF_INET;
    c.prefix = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), c.bytes) == 1) {
    c.family = AF_INET6;
    c.prefix = 128;
  } else {
    return std::nullopt;
  }
  if (std::size_t slash = text.find('/'); slash != std::string_view::npos) {
    auto p = base::parseUnsigned(text.substr(slash + 1));
    if (!p || *p > c.prefix) {
      return std::nullopt;
    }
    c.prefix = static_cast<unsigned>(*p);
  }
  // Host bits set ("10.1.2.3/8") are almost always a typo for a different block: refuse them.
  for (unsigned bit = c.prefix; bit < (c.family == AF_INET ? 32u : 128u); ++bit) {
    if (c.bytes[bit / 8] & (0x80 >> (bit % 8))) {
      return std::nullopt;
    }
  }
  return c;
}

bool Cidr::contains(const sockaddr* addr) const {
  const std::uint8_t* a = nullptr;
  if (addr->sa_family == AF_INET && family == AF_INET) {
    a = reinterpret_cast<const std::uint8_t*>(
        &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr);
  } else if (addr->sa_family == AF_INET6) {
    const auto* v6 = &reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr;
    if (family == AF_INET6) {
      a = v6->s6_addr;
    } else if (IN6_IS_ADDR_V4MAPPED(v6)) {
      a = v6->s6_addr + 12;
    }
  }
  if (!a) {
    return false;
  }
  unsigned full = prefix / 8, rest = prefix % 8;
  if (std::memcmp(a, bytes, full) != 0) {
    return false;
  }
  if (rest == 0) {
    return true;
  }
  std::uint8_t mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (a[full] & mask) == (bytes[full] & mask);
}

std::string Cidr::text() const {
  char buf[INET6_ADDRSTRLEN] = "";
  inet_ntop(family, bytes, buf, sizeof(buf));
  return std::string(buf) + "/" + std::to_string(prefix);
}

bool AccessList::admits(const sockaddr* addr) const {
  for (const auto& c : deny) {
    if (c.contains(addr)) {
      return false;
    }
  }
  if (allow.empty()) {
    return true;
  }
  for (const auto& c : allow) {
    if (c.contains(addr)) {
      return true;
    }
  }
  return false;
}

in6_addr clientKey(const sockaddr* addr) {
  in6_addr out{};
  if (addr->sa_family == AF_INET6) {
    out = reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr;
  } else if (addr->sa_family == AF_INET) {
    out.s6_addr[10] = 0xff;
    out.s6_addr[11] = 0xff;
    std::memcpy(&out.s6_addr[12], &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr, 4);
  }
  return out;
}

std::string formatAddress(const sockaddr* addr) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (addr->sa_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(ntohs(v4->sin_port));
  }
  if (addr->sa_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(v6->sin6_port));
  }
  return "unix";
}

}  // namespace pgproxy::net
