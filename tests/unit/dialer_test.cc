#include "pgproxy/upstream/dialer.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace pgproxy::upstream {
namespace {

// A getaddrinfo-shaped answer built by hand.
struct Answer {
  std::vector<sockaddr_in> addrs;
  std::vector<evutil_addrinfo> nodes;
  void add(const char* ip, int port, int socktype = SOCK_STREAM) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    inet_pton(AF_INET, ip, &a.sin_addr);
    addrs.push_back(a);
    evutil_addrinfo n{};
    n.ai_family = AF_INET;
    n.ai_socktype = socktype;
    n.ai_addrlen = sizeof(sockaddr_in);
    nodes.push_back(n);
  }
  const evutil_addrinfo* list() {
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      nodes[i].ai_addr = reinterpret_cast<sockaddr*>(&addrs[i]);
      nodes[i].ai_next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
    }
    return nodes.empty() ? nullptr : nodes.data();
  }
};

std::vector<std::string> drain(AddressList& list) {
  std::vector<std::string> out;
  socklen_t len = 0;
  while (list.next(&len)) {
    out.push_back(list.current());
  }
  return out;
}

TEST(AddressList, KeepsTheResolverOrderWithoutDuplicatesOrDatagramEntries) {
  Answer a;
  a.add("127.0.0.3", 5432);
  a.add("127.0.0.3", 5432, SOCK_DGRAM);
  a.add("127.0.0.1", 5432);
  a.add("127.0.0.3", 5432);
  AddressList list;
  list.assign(a.list());
  EXPECT_EQ(list.size(), 2u);
  EXPECT_EQ(drain(list), (std::vector<std::string>{"127.0.0.3:5432", "127.0.0.1:5432"}));
  EXPECT_TRUE(list.exhausted());
  socklen_t len = 0;
  EXPECT_EQ(list.next(&len), nullptr);
}

TEST(AddressList, KeepsAtMostItsBoundAndStartsOverOnAssign) {
  Answer a;
  for (int i = 1; i <= 20; ++i) {
    a.add(("10.0.0." + std::to_string(i)).c_str(), 5432);
  }
  AddressList list;
  list.assign(a.list());
  EXPECT_EQ(list.size(), AddressList::kMax);
  EXPECT_EQ(drain(list).back(), "10.0.0." + std::to_string(AddressList::kMax) + ":5432");
  list.assign(nullptr);
  EXPECT_EQ(list.size(), 0u);
  EXPECT_TRUE(list.exhausted());
}

struct Owner {
  int calls = 0;
  int error = 0;
  AddressList list;
  Lookup* lookup = nullptr;
  static void done(void* arg, int err, const evutil_addrinfo* ai) {
    auto* o = static_cast<Owner*>(arg);
    ++o->calls;
    o->error = err;
    if (err == 0) {
      o->list.assign(ai);
    }
  }
};

TEST(Lookup, ANumericAddressIsAnsweredBeforeStartReturns) {
  event_base* base = event_base_new();
  evdns_base* dns = evdns_base_new(base, 0);
  Owner o;
  Lookup::start(&o.lookup, dns, "127.0.0.1", 6543, Owner::done, &o);
  EXPECT_EQ(o.lookup, nullptr);
  EXPECT_EQ(o.calls, 1);
  EXPECT_EQ(o.error, 0);
  EXPECT_EQ(drain(o.list), (std::vector<std::string>{"127.0.0.1:6543"}));
  evdns_base_free(dns, 1);  // 1: pending lookups get their callback and free themselves
  event_base_free(base);
}

// A nameserver that never answers keeps the lookup pending; cancelling it (the session closed)
// must never call the owner, even when the resolver's late callback runs.
TEST(Lookup, ACancelledLookupNeverCallsItsOwner) {
  int udp = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(udp, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  socklen_t len = sizeof(sa);
  getsockname(udp, reinterpret_cast<sockaddr*>(&sa), &len);
  event_base* base = event_base_new();
  evdns_base* dns = evdns_base_new(base, 0);
  std::string ns = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  ASSERT_EQ(evdns_base_nameserver_ip_add(dns, ns.c_str()), 0);
  Owner o;
  Lookup::start(&o.lookup, dns, "db.pgproxy.test", 5432, Owner::done, &o);
  ASSERT_NE(o.lookup, nullptr);
  // The query reached the nameserver: the lookup is really under way.
  char buf[512];
  event_base_loop(base, EVLOOP_NONBLOCK);
  EXPECT_GT(recv(udp, buf, sizeof(buf), 0), 0);
  o.lookup->cancel();
  EXPECT_EQ(o.lookup, nullptr);
  event_base_loop(base, EVLOOP_NONBLOCK);
  event_base_loop(base, EVLOOP_NONBLOCK);
  EXPECT_EQ(o.calls, 0);
  evdns_base_free(dns, 1);  // 1: pending lookups get their callback and free themselves
  event_base_free(base);
  close(udp);
}

}  // namespace
}  // namespace pgproxy::upstream
