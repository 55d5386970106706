#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgproxy::net {

// One address block, "10.0.0.0/8", "2001:db8::/32", or a single address ("192.0.2.7", "::1").
// IPv4-mapped IPv6 clients (::ffff:a.b.c.d, on a dual-stack listener) match IPv4 blocks.
struct Cidr {
  int family = AF_INET;  // AF_INET or AF_INET6
  std::uint8_t bytes[16] = {};
  unsigned prefix = 32;

  static std::optional<Cidr> parse(std::string_view text);
  bool contains(const sockaddr* addr) const;
  std::string text() const;
};

// An allow/deny pair as the configuration has it: deny wins; a non-empty allow list admits only
// what it names. Pure.
struct AccessList {
  std::vector<Cidr> allow, deny;
  bool empty() const { return allow.empty() && deny.empty(); }
  bool admits(const sockaddr* addr) const;
};

// A client's address as one 16-byte key: IPv6 as is, IPv4 mapped (::ffff:a.b.c.d), so the same
// client counts once whichever listener it came through.
in6_addr clientKey(const sockaddr* addr);

// "ADDR:PORT" ("[ADDR]:PORT" for IPv6; "unix" for anything else), for logs.
std::string formatAddress(const sockaddr* addr);

}  // namespace pgproxy::net
