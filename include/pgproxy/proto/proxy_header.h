#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pgproxy::proto {

// The PROXY protocol header a load balancer (HAProxy, an AWS NLB, another pgproxy) puts in front
// of a connection to say whose it is: version 2 (binary) and version 1 (text), as HAProxy's
// proxy-protocol.txt defines them. Pure: bytes in, the addresses out.
struct ProxyHeader {
  enum class Kind : std::uint8_t {
    kNeedMore,  // a prefix of a header: read more
    kInvalid,   // not a PROXY header, or a broken one (`reason`)
    kLocal,     // v2 LOCAL, v1 UNKNOWN: the balancer's own connection (a health check); the
                // socket's addresses stand
    kProxy,     // a client's connection: `source` and `destination` are its addresses
  };
  Kind kind = Kind::kNeedMore;
  std::size_t consumed = 0;  // the header's length, TLVs included (kLocal, kProxy)
  int version = 0;           // 1 or 2, once known
  sockaddr_storage source{};
  sockaddr_storage destination{};
  const char* reason = "";
};

// The longest header pgproxy reads: v1's 107 bytes; v2's 16 bytes and its address block, whose
// TLVs may take it up to kMaxProxyHeader (a longer one is refused).
inline constexpr std::size_t kMaxProxyV1 = 107;
inline constexpr std::size_t kMaxProxyHeader = 4096;

ProxyHeader parseProxyHeader(std::string_view bytes);

// A version 2 header saying that a connection from `source` to `destination` is proxied
// (both IPv4 or both IPv6; an IPv4-mapped IPv6 address is sent as IPv4 when the other one is
// IPv4 too); with `source` nullptr, a LOCAL header (pgproxy's own connection: a health check, a
// pool's server login).
std::string buildProxyV2(const sockaddr* source, const sockaddr* destination);

}  // namespace pgproxy::proto
