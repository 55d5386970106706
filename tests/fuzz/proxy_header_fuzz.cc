// Fuzzes the PROXY protocol header parser, which reads the first bytes of every connection on a
// listener with proxy_protocol: whatever it is given, it reads only what it was given, consumes
// no more than that, and a header it accepts rebuilds (as version 2) into one it reads the same.
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "pgproxy/proto/proxy_header.h"

extern const char* const kFuzzTargetName = "proxy_header";

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
    if (r.kind != ProxyHeader::Kind::kProxy || r.consumed != again.size() ||
        r.source.ss_family != h.source.ss_family) {
      __builtin_trap();
    }
    std::size_t n = h.source.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (std::memcmp(&r.source, &h.source, n) != 0 ||
        std::memcmp(&r.destination, &h.destination, n) != 0) {
      __builtin_trap();
    }
  }
  return 0;
}
