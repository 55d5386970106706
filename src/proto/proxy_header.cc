#include "pgproxy/proto/proxy_header.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace pgproxy::proto {
namespace {

constexpr std::string_view kV2Signature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr std::string_view kV1Prefix("PROXY ");

// Whether `bytes` (possibly shorter) begins as `prefix` does.
bool startsAs(std::string_view bytes, std::string_view prefix) {
  std::size_t n = std::min(bytes.size(), prefix.size());
  return bytes.substr(0, n) == prefix.substr(0, n);
}

ProxyHeader invalid(int version, const char* reason) {
  ProxyHeader h;
  h.kind = ProxyHeader::Kind::kInvalid;
  h.version = version;
  h.reason = reason;
  return h;
}

void setV4(sockaddr_storage& out, const char* addr, const char* port) {
  auto* in = reinterpret_cast<sockaddr_in*>(&out);
  in->sin_family = AF_INET;
  std::memcpy(&in->sin_addr, addr, 4);
  std::memcpy(&in->sin_port, port, 2);  // both in network order
}

void setV6(sockaddr_storage& out, const char* addr, const char* port) {
  auto* in = reinterpret_cast<sockaddr_in6*>(&out);
  in->sin6_family = AF_INET6;
  std::memcpy(&in->sin6_addr, addr, 16);
  std::memcpy(&in->sin6_port, port, 2);
}

ProxyHeader parseV2(std::string_view bytes) {
  ProxyHeader h;
  h.version = 2;
  if (bytes.size() < 16) {
    return h;  // kNeedMore
  }
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(bytes[i]); };
  if ((byte(12) >> 4) != 2) {
    return invalid(2, "PROXY protocol v2 header with an unknown version");
  }
  unsigned command = byte(12) & 0x0f;
  unsigned family = byte(13) >> 4;
  unsigned transport = byte(13) & 0x0f;
  std::size_t length = (std::size_t{byte(14)} << 8) | byte(15);
  if (16 + length > kMaxProxyHeader) {
    return invalid(2, "PROXY protocol v2 header longer than pgproxy reads (4096 bytes)");
  }
  if (bytes.size() < 16 + length) {
    return h;
  }
  h.consumed = 16 + length;
  if (command == 0) {
    h.kind = ProxyHeader::Kind::kLocal;
    return h;
  }
  if (command != 1) {
    return invalid(2, "PROXY protocol v2 header with an unknown command");
  }
  if (transport > 1) {
    return invalid(2, "PROXY protocol v2 header for a datagram connection");
  }
  const char* block = bytes.data() + 16;
  if (family == 1) {
    if (length < 12) {
      return invalid(2, "PROXY protocol v2 header with a short IPv4 address block");
    }
    setV4(h.source, block, block + 8);
    setV4(h.destination, block + 4, block + 10);
    h.kind = ProxyHeader::Kind::kProxy;
    return h;
  }
  if (family == 2) {
    if (length < 36) {
      return invalid(2, "PROXY protocol v2 header with a short IPv6 address block");
    }
    setV6(h.source, block, block + 32);
    setV6(h.destination, block + 16, block + 34);
    h.kind = ProxyHeader::Kind::kProxy;
    return h;
  }
  if (family == 0 || family == 3) {
    // Unspecified, or AF_UNIX: no address pgproxy can use; the socket's stand, as the
    // specification asks.
    h.kind = ProxyHeader::Kind::kLocal;
    return h;
  }
  return invalid(2, "PROXY protocol v2 header with an unknown address family");
}

bool parsePort(std::string_view text, std::uint16_t& port) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) {
    return false;
  }
  unsigned v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) {
    return false;
  }
  port = htons(static_cast<std::uint16_t>(v));
  return true;
}

ProxyHeader parseV1(std::string_view bytes) {
  ProxyHeader h;
  h.version = 1;
  std::size_t end = bytes.substr(0, kMaxProxyV1).find("\r\n");
  if (end == std::string_view::npos) {
    if (bytes.size() >= kMaxProxyV1) {
      return invalid(1, "PROXY protocol v1 header without its CRLF in 107 bytes");
    }
    return h;  // kNeedMore
  }
  h.consumed = end + 2;
  std::string_view line = bytes.substr(kV1Prefix.size(), end - kV1Prefix.size());
  // Five words after PROXY: TCP4|TCP6, source, destination, source port, destination port.
  std::string_view words[5];
  std::size_t n = 0;
  while (!line.empty() && n < 5) {
    std::size_t sp = line.find(' ');
    words[n++] = line.substr(0, sp);
    line = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
  }
  if (n >= 1 && words[0] == "UNKNOWN") {
    h.kind = ProxyHeader::Kind::kLocal;
    return h;
  }
  if (n != 5 || !line.empty() || (words[0] != "TCP4" && words[0] != "TCP6")) {
    return invalid(1,
                   "PROXY protocol v1 header that is not TCP4, TCP6 or UNKNOWN with two "
                   "addresses and two ports");
  }
  int family = words[0] == "TCP4" ? AF_INET : AF_INET6;
  std::uint16_t ports[2];
  char text[2][INET6_ADDRSTRLEN + 1];
  for (int i = 0; i < 2; ++i) {
    if (words[1 + i].size() >= sizeof(text[i]) || !parsePort(words[3 + i], ports[i])) {
      return invalid(1, "PROXY protocol v1 header with a malformed address or port");
    }
    std::memcpy(text[i], words[1 + i].data(), words[1 + i].size());
    text[i][words[1 + i].size()] = '\0';
  }
  sockaddr_storage* out[2] = {&h.source, &h.destination};
  for (int i = 0; i < 2; ++i) {
    char addr[16];
    if (inet_pton(family, text[i], addr) != 1) {
      return invalid(1, "PROXY protocol v1 header with a malformed address or port");
    }
    const char* port = reinterpret_cast<const char*>(&ports[i]);
    if (family == AF_INET) {
      setV4(*out[i], addr, port);
    } else {
      setV6(*out[i], addr, port);
    }
  }
  h.kind = ProxyHeader::Kind::kProxy;
  return h;
}

// `addr` as 16 IPv6 bytes (IPv4 mapped) and its port; false for a family pgproxy cannot send.
bool asV6(const sockaddr* addr, unsigned char out[16], std::uint16_t& port) {
  if (addr->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    std::memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    std::memcpy(out + 12, &in->sin_addr, 4);
    port = in->sin_port;
    return true;
  }
  if (addr->sa_family == AF_INET6) {
    const auto* in = reinterpret_cast<const sockaddr_in6*>(addr);
    std::memcpy(out, &in->sin6_addr, 16);
    port = in->sin6_port;
    return true;
  }
  return false;
}

bool isMappedV4(const unsigned char a[16]) {
  static constexpr unsigned char kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(a, kPrefix, 12) == 0;
}

}  // namespace

ProxyHeader parseProxyHeader(std::string_view bytes) {
  if (startsAs(bytes, kV2Signature) && !bytes.empty()) {
    return bytes.size() < kV2Signature.size() ? ProxyHeader{} : parseV2(bytes);
  }
  if (startsAs(bytes, kV1Prefix) && !bytes.empty()) {
    if (bytes.size() < kV1Prefix.size()) {
      return ProxyHeader{};
    }
    return parseV1(bytes);
  }
  if (bytes.empty()) {
    return ProxyHeader{};
  }
  return invalid(0, "no PROXY protocol header (the listener requires one)");
}

std::string buildProxyV2(const sockaddr* source, const sockaddr* destination) {
  std::string out(kV2Signature);
  unsigned char src[16], dst[16];
  std::uint16_t sport = 0, dport = 0;
  if (!source || !destination || !asV6(source, src, sport) || !asV6(destination, dst, dport)) {
    out += std::string("\x20\x00\x00\x00", 4);  // LOCAL, unspecified, no addresses
    return out;
  }
  auto port = [&out](std::uint16_t p) {  // already in network order
    out.append(reinterpret_cast<const char*>(&p), 2);
  };
  if (isMappedV4(src) && isMappedV4(dst)) {
    out += std::string("\x21\x11\x00\x0c", 4);  // PROXY, TCP over IPv4, 12 bytes
    out.append(reinterpret_cast<const char*>(src + 12), 4);
    out.append(reinterpret_cast<const char*>(dst + 12), 4);
  } else {
    out += std::string("\x21\x21\x00\x24", 4);  // PROXY, TCP over IPv6, 36 bytes
    out.append(reinterpret_cast<const char*>(src), 16);
    out.append(reinterpret_cast<const char*>(dst), 16);
  }
  port(sport);
  port(dport);
  return out;
}

}  // namespace pgproxy::proto
