#include "pgproxy/net/cidr.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

namespace pgproxy::net {
namespace {

sockaddr_storage addr(const char* text) {
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
  } else {
    EXPECT_EQ(inet_pton(AF_INET6, text, &v6->sin6_addr), 1) << text;
    v6->sin6_family = AF_INET6;
  }
  return ss;
}

bool in(const char* cidr, const char* a) {
  auto c = Cidr::parse(cidr);
  EXPECT_TRUE(c.has_value()) << cidr;
  sockaddr_storage ss = addr(a);
  return c && c->contains(reinterpret_cast<sockaddr*>(&ss));
}

TEST(Cidr, MatchesBlocksAndSingleAddresses) {
  EXPECT_TRUE(in("10.0.0.0/8", "10.200.3.4"));
  EXPECT_FALSE(in("10.0.0.0/8", "11.0.0.1"));
  EXPECT_TRUE(in("192.168.1.128/25", "192.168.1.200"));
  EXPECT_FALSE(in("192.168.1.128/25", "192.168.1.127"));
  EXPECT_TRUE(in("127.0.0.1", "127.0.0.1"));
  EXPECT_FALSE(in("127.0.0.1", "127.0.0.2"));
  EXPECT_TRUE(in("0.0.0.0/0", "203.0.113.9"));
  EXPECT_TRUE(in("2001:db8::/32", "2001:db8:1::5"));
  EXPECT_FALSE(in("2001:db8::/32", "2001:db9::5"));
  EXPECT_TRUE(in("::1", "::1"));
  // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
  EXPECT_TRUE(in("10.0.0.0/8", "::ffff:10.1.2.3"));
  EXPECT_FALSE(in("10.0.0.0/8", "::ffff:11.1.2.3"));
  EXPECT_FALSE(in("::/0", "10.1.2.3"));
  EXPECT_EQ(Cidr::parse("10.0.0.0/8")->text(), "10.0.0.0/8");
}

TEST(Cidr, MalformedBlocksAreRefused) {
  for (const char* bad : {"", "10.0.0.0/33", "10.0.0/8", "::/129", "10.1.2.3/8", "host.example",
                          "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/9", "1.2.3.4 "}) {
    EXPECT_FALSE(Cidr::parse(bad).has_value()) << bad;
  }
}

TEST(Cidr, DenyWinsAndAllowIsExclusive) {
  AccessList l;
  sockaddr_storage a = addr("10.1.2.3"), b = addr("192.0.2.1");
  EXPECT_TRUE(l.admits(reinterpret_cast<sockaddr*>(&a)));  // empty: everyone
  l.allow.push_back(*Cidr::parse("10.0.0.0/8"));
  EXPECT_TRUE(l.admits(reinterpret_cast<sockaddr*>(&a)));
  EXPECT_FALSE(l.admits(reinterpret_cast<sockaddr*>(&b)));
  l.deny.push_back(*Cidr::parse("10.1.0.0/16"));
  EXPECT_FALSE(l.admits(reinterpret_cast<sockaddr*>(&a)));
}

}  // namespace
}  // namespace pgproxy::net
