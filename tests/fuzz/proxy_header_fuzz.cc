// Fuzzes the PROXY protocol header parser, which reads the first bytes of every connection on a
// listener with proxy_protocol: whatever it is given, it reads only what it was given, consumes
// no more than that, and a header it accepts rebuilds (as version 2) into one it reads the same.
#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "pgproxy/proto/proxy_header.h"

extern const char* const kFuzzTargetName = "proxy_header";

namespace {
// An address as 16 IPv6 bytes (IPv4 mapped) and its port (network order).
std::array<unsigned char, 18> normalized(const sockaddr_storage& a) {
  std::array<unsigned char, 18> out{};
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    out[10] = out[11] = 0xff;
    std::memcpy(out.data() + 12, &in->sin_addr, 4);
    std::memcpy(out.data() + 16, &in->sin_port, 2);
  } else {
    const auto* in = reinterpret_cast<const sockaddr_in6*>(&a);
    std::memcpy(out.data(), &in->sin6_addr, 16);
    std::memcpy(out.data() + 16, &in->sin6_port, 2);
  }
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using pgproxy::proto::ProxyHeader;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ProxyHeader h = pgproxy::proto::parseProxyHeader(bytes);
  if (h.consumed > bytes.size() || h.reason == nullptr) {
    __builtin_trap();
  }
  // Every strict prefix of a header it accepts asks for more: a header split over reads is read
  // the same as one that came whole.
  if ((h.kind == ProxyHeader::Kind::kProxy || h.kind == ProxyHeader::Kind::kLocal) &&
      h.consumed <= 256) {
    for (std::size_t n = 1; n < h.consumed; ++n) {
      if (pgproxy::proto::parseProxyHeader(bytes.substr(0, n)).kind !=
          ProxyHeader::Kind::kNeedMore) {
        __builtin_trap();
      }
    }
  }
  if (h.kind == ProxyHeader::Kind::kProxy) {
    std::string again =
        pgproxy::proto::buildProxyV2(reinterpret_cast<const sockaddr*>(&h.source),
                                     reinterpret_cast<const sockaddr*>(&h.destination));
    ProxyHeader r = pgproxy::proto::parseProxyHeader(again);
    if (r.kind != ProxyHeader::Kind::kProxy || r.consumed != again.size()) {
      __builtin_trap();
    }
    // The same addresses and ports; IPv4-mapped IPv6 ones may come back as IPv4 (the builder
    // sends IPv4 when both are), so both sides are compared as 16 bytes and a port.
    auto same = [](const sockaddr_storage& a, const sockaddr_storage& b) {
      return std::memcmp(normalized(a).data(), normalized(b).data(), 18) == 0;
    };
    if (!same(r.source, h.source) || !same(r.destination, h.destination)) {
      __builtin_trap();
    }
  }
  return 0;
}
