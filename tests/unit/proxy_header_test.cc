#include "pgproxy/proto/proxy_header.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <string>

#include "pgproxy/net/cidr.h"

namespace pgproxy::proto {
namespace {

using Kind = ProxyHeader::Kind;

const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

std::string addr(const sockaddr_storage& a) {
  return net::formatAddress(reinterpret_cast<const sockaddr*>(&a));
}

TEST(ProxyHeader, Version1Tcp4Tcp6AndUnknown) {
  std::string line = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 5400\r\n";
  ProxyHeader h = parseProxyHeader(line + "rest");
  ASSERT_EQ(h.kind, Kind::kProxy) << h.reason;
  EXPECT_EQ(h.version, 1);
  EXPECT_EQ(h.consumed, line.size());
  EXPECT_EQ(addr(h.source), "192.0.2.7:56324");
  EXPECT_EQ(addr(h.destination), "198.51.100.1:5400");
  h = parseProxyHeader("PROXY TCP6 2001:db8::7 ::1 1 65535\r\n");
  ASSERT_EQ(h.kind, Kind::kProxy) << h.reason;
  EXPECT_EQ(addr(h.source), "[2001:db8::7]:1");
  EXPECT_EQ(addr(h.destination), "[::1]:65535");
  h = parseProxyHeader("PROXY UNKNOWN whatever follows\r\nX");
  EXPECT_EQ(h.kind, Kind::kLocal);
  EXPECT_EQ(h.consumed, 32u);
  // Split over reads: every prefix asks for more.
  for (std::size_t n = 0; n < line.size(); ++n) {
    EXPECT_EQ(parseProxyHeader(line.substr(0, n)).kind, Kind::kNeedMore) << n;
  }
}

TEST(ProxyHeader, Version1Malformed) {
  for (const char* bad : {
           "PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",         // a port missing
           "PROXY TCP4 192.0.2.7 198.51.100.1 56324 5400 9\r\n",  // a word too many
           "PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",         // IPv6 under TCP4
           "PROXY TCP4 192.0.2.7 198.51.100.1 65536 5400\r\n",    // port out of range
           "PROXY TCP4 192.0.2.7 198.51.100.1 0123 5400\r\n",     // leading zero
           "PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n",          // two spaces
           "PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
           "PROXY TCP4 192.0.2.7 198.51.100.1 -1 2\r\n",
       }) {
    EXPECT_EQ(parseProxyHeader(bad).kind, Kind::kInvalid) << bad;
  }
  // No CRLF within 107 bytes: not a header.
  EXPECT_EQ(parseProxyHeader("PROXY " + std::string(120, 'x')).kind, Kind::kInvalid);
  // Anything else where a header must be: a StartupMessage, an SSLRequest, a ClientHello.
  EXPECT_EQ(parseProxyHeader(std::string("\0\0\0\x08\x04\xd2\x16\x2f", 8)).kind, Kind::kInvalid);
  EXPECT_EQ(parseProxyHeader("\x16\x03\x01").kind, Kind::kInvalid);
  EXPECT_EQ(parseProxyHeader("").kind, Kind::kNeedMore);
  EXPECT_EQ(parseProxyHeader("PRO").kind, Kind::kNeedMore);
}

TEST(ProxyHeader, Version2Inet6LocalAndTlvs) {
  sockaddr_in src{}, dst{};
  src.sin_family = dst.sin_family = AF_INET;
  inet_pton(AF_INET, "192.0.2.7", &src.sin_addr);
  inet_pton(AF_INET, "198.51.100.1", &dst.sin_addr);
  src.sin_port = htons(56324);
  dst.sin_port = htons(5400);
  std::string v4 =
      buildProxyV2(reinterpret_cast<sockaddr*>(&src), reinterpret_cast<sockaddr*>(&dst));
  EXPECT_EQ(v4.size(), 28u);
  ProxyHeader h = parseProxyHeader(v4 + "\x16\x03\x01");
  ASSERT_EQ(h.kind, Kind::kProxy) << h.reason;
  EXPECT_EQ(h.version, 2);
  EXPECT_EQ(h.consumed, 28u);
  EXPECT_EQ(addr(h.source), "192.0.2.7:56324");
  EXPECT_EQ(addr(h.destination), "198.51.100.1:5400");
  for (std::size_t n = 0; n < v4.size(); ++n) {
    EXPECT_EQ(parseProxyHeader(v4.substr(0, n)).kind, Kind::kNeedMore) << n;
  }
  // TLVs after the addresses (an AWS VPC endpoint id, ALPN): skipped with the header.
  std::string tlv = v4;
  tlv[15] = static_cast<char>(12 + 7);
  tlv += std::string("\x01\x00\x04h2ab", 7);
  h = parseProxyHeader(tlv);
  ASSERT_EQ(h.kind, Kind::kProxy);
  EXPECT_EQ(h.consumed, tlv.size());

  sockaddr_in6 s6{};
  s6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "2001:db8::7", &s6.sin6_addr);
  s6.sin6_port = htons(1);
  std::string v6 =
      buildProxyV2(reinterpret_cast<sockaddr*>(&s6), reinterpret_cast<sockaddr*>(&dst));
  h = parseProxyHeader(v6);
  ASSERT_EQ(h.kind, Kind::kProxy);
  EXPECT_EQ(h.consumed, 16u + 36u);
  EXPECT_EQ(addr(h.source), "[2001:db8::7]:1");
  EXPECT_EQ(addr(h.destination), "[::ffff:198.51.100.1]:5400");

  std::string local = buildProxyV2(nullptr, nullptr);
  EXPECT_EQ(local, kSig + std::string("\x20\x00\x00\x00", 4));
  h = parseProxyHeader(local);
  EXPECT_EQ(h.kind, Kind::kLocal);
  EXPECT_EQ(h.consumed, 16u);
}

TEST(ProxyHeader, Version2Malformed) {
  auto v2 = [](const std::string& rest) { return kSig + rest; };
  EXPECT_EQ(parseProxyHeader(v2(std::string("\x11\x11\x00\x00", 4))).kind, Kind::kInvalid);
  EXPECT_EQ(parseProxyHeader(v2(std::string("\x22\x11\x00\x00", 4))).kind, Kind::kInvalid);
  EXPECT_EQ(parseProxyHeader(v2(std::string("\x21\x12\x00\x0c", 4) + std::string(12, 'a'))).kind,
            Kind::kInvalid);  // UDP
  EXPECT_EQ(parseProxyHeader(v2(std::string("\x21\x11\x00\x08", 4) + std::string(8, 'a'))).kind,
            Kind::kInvalid);  // a short IPv4 block
  EXPECT_EQ(parseProxyHeader(v2(std::string("\x21\x21\x00\x0c", 4) + std::string(12, 'a'))).kind,
            Kind::kInvalid);  // a short IPv6 block
  EXPECT_EQ(parseProxyHeader(v2(std::string("\x21\x41\x00\x00", 4))).kind, Kind::kInvalid);
  EXPECT_EQ(parseProxyHeader(v2(std::string("\x21\x11\xff\xff", 4))).kind, Kind::kInvalid);
  // Unix sockets and unspecified: the socket's addresses stand.
  EXPECT_EQ(parseProxyHeader(v2(std::string("\x21\x00\x00\x00", 4))).kind, Kind::kLocal);
  EXPECT_EQ(parseProxyHeader(v2(std::string("\x21\x31\x00\xd8", 4) + std::string(216, 'a'))).kind,
            Kind::kLocal);
  // A signature that goes wrong part way is not a header.
  EXPECT_EQ(parseProxyHeader(std::string("\r\n\r\nX", 5)).kind, Kind::kInvalid);
}

}  // namespace
}  // namespace pgproxy::proto
