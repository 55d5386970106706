// PROXY protocol (issue 19): a listener behind a load balancer reads the header the balancer
// puts in front of each connection, and the client it names is the session's: limits, allow/deny
// and the access log use it. Only the balancers named in proxy_protocol_from may send one.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "harness.h"
#include "pgproxy/proto/proxy_header.h"

namespace pgproxy::it {
namespace {

using std::chrono::seconds;

sockaddr_in v4(const char* address, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, address, &a.sin_addr);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  return a;
}

std::string v2Header(const char* client, int client_port, int proxy_port) {
  sockaddr_in src = v4(client, client_port), dst = v4("127.0.0.1", proxy_port);
  return proto::buildProxyV2(reinterpret_cast<sockaddr*>(&src), reinterpret_cast<sockaddr*>(&dst));
}

std::string startup() {
  return startupPacket({{"user", "postgres"}, {"database", "postgres"}});
}

// Sends `preamble` and a StartupMessage on a new connection to `port`; the fd of a session that
// logged in (-1 when refused), with what came back in `answer`.
int sessionWith(int port, const std::string& preamble, std::string* answer) {
  return loginSession(port, answer, nullptr, preamble);
}

struct Ports {
  int proxied = freePort();    // proxy_protocol, from 127.0.0.1
  int untrusted = freePort();  // proxy_protocol, from 10.0.0.0/8 only
};

std::string config(const Ports& p, const std::string& extra) {
  return "listen:\n  - {address: 127.0.0.1, port: {PORT}}\n"
         "  - {address: 127.0.0.1, port: " +
         std::to_string(p.proxied) +
         ", proxy_protocol: true, proxy_protocol_from: [127.0.0.1, \"::1\"]}\n"
         "  - {address: 127.0.0.1, port: " +
         std::to_string(p.untrusted) +
         ", proxy_protocol: true, proxy_protocol_from: 10.0.0.0/8}\n" + extra +
         "default: host1.example.com\nmappings:\n"
         "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}, deny: 192.0.2.66}\n";
}

TEST(ProxyProtocol, TheHeadersClientIsTheSessionsInLogsLimitsAndAccessLists) {
  Ports p;
  Proxy proxy(config(p, "deny: [198.51.100.0/24]\nmax_connections_per_client: 1\n"));
  std::string answer;
  // Version 2, as HAProxy's send-proxy-v2 and the cloud balancers send it.
  int a = sessionWith(p.proxied, v2Header("192.0.2.7", 40001, p.proxied), &answer);
  ASSERT_GE(a, 0) << answer << proxy.log();
  // Version 1 (text), from another client.
  int b = sessionWith(p.proxied, "PROXY TCP4 203.0.113.9 127.0.0.1 40002 5400\r\n", &answer);
  ASSERT_GE(b, 0) << answer << proxy.log();
  // max_connections_per_client counts the named client: 192.0.2.7 has its one session.
  EXPECT_EQ(sessionWith(p.proxied, v2Header("192.0.2.7", 40003, p.proxied), &answer), -1);
  EXPECT_EQ(sqlstateOf(answer), "53300");
  EXPECT_NE(answer.find("too many connections from 192.0.2.7"), std::string::npos) << answer;
  // The global deny list, read once the header is: closed, nothing said.
  bool closed = false;
  int fd = connectTcp(p.proxied);
  std::string denied = v2Header("198.51.100.4", 40004, p.proxied) + startup();
  ASSERT_EQ(write(fd, denied.data(), denied.size()), static_cast<ssize_t>(denied.size()));
  EXPECT_EQ(readUntilClose(fd, std::chrono::milliseconds(10000), &closed), "");
  EXPECT_TRUE(closed);
  close(fd);
  // A mapping's deny list: PostgreSQL's 28000, naming the client the header named.
  EXPECT_EQ(sessionWith(p.proxied, v2Header("192.0.2.66", 40005, p.proxied), &answer), -1);
  EXPECT_EQ(sqlstateOf(answer), "28000");
  EXPECT_NE(answer.find("connections from 192.0.2.66"), std::string::npos) << answer;
  // A LOCAL header (the balancer's own health check): its address stands.
  int local = sessionWith(p.proxied, proto::buildProxyV2(nullptr, nullptr), &answer);
  ASSERT_GE(local, 0) << answer;
  close(local);
  close(a);
  close(b);
  for (const char* client : {"client=192.0.2.7:40001 ", "client=203.0.113.9:40002 ",
                             "client=198.51.100.4:40004 ", "client=192.0.2.66:40005 "}) {
    EXPECT_TRUE(eventually([&] { return proxy.log().find(client) != std::string::npos; }))
        << client << "\n"
        << proxy.log();
  }
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("client=127.0.0.1:") != std::string::npos;  // the LOCAL one
  }));
  // The plain listener beside it still takes libpq as ever.
  EXPECT_EQ(psql(proxy.plain(), "show cluster_name").output, "host1\n");
}

TEST(ProxyProtocol, OnlyTheBalancersMaySendAHeaderAndItMustBeThere) {
  Ports p;
  Proxy proxy(config(p, ""));
  bool closed = false;
  // From an address not in proxy_protocol_from: closed at accept, before a byte is read.
  int fd = connectTcp(p.untrusted);
  std::string bytes = v2Header("192.0.2.7", 40001, p.untrusted) + startup();
  (void)!write(fd, bytes.data(), bytes.size());
  EXPECT_EQ(readUntilClose(fd, std::chrono::milliseconds(10000), &closed), "");
  EXPECT_TRUE(closed);
  close(fd);
  // No header where one must be (a client that bypassed the balancer): closed, logged.
  fd = connectTcp(p.proxied);
  bytes = startup();
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  EXPECT_EQ(readUntilClose(fd, std::chrono::milliseconds(10000), &closed), "");
  EXPECT_TRUE(closed);
  close(fd);
  // A broken header: closed, logged.
  fd = connectTcp(p.proxied);
  bytes = "PROXY TCP4 192.0.2.7 nonsense 1 2\r\n" + startup();
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  EXPECT_EQ(readUntilClose(fd, std::chrono::milliseconds(10000), &closed), "");
  EXPECT_TRUE(closed);
  close(fd);
  // A header split over many writes is read whole.
  fd = connectTcp(p.proxied);
  bytes = v2Header("192.0.2.8", 40009, p.proxied);
  for (char c : bytes) {
    ASSERT_EQ(write(fd, &c, 1), 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  bytes = startup();
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  std::string answer;
  EXPECT_TRUE(readUntilReady(fd, &answer, seconds(10))) << answer;
  close(fd);
  EXPECT_TRUE(eventually([&] {
    std::string log = proxy.log();
    return log.find("no PROXY protocol header (the listener requires one)") != std::string::npos &&
           log.find("PROXY protocol v1 header with a malformed address or port") !=
               std::string::npos &&
           log.find("client=192.0.2.8:40009 ") != std::string::npos;
  })) << proxy.log();
}

// Two pgproxy instances in a row, as a front tier behind which another proxy listens: A sends
// PROXY v2 headers to B's proxy_protocol listener (backend_proxy_protocol: v2), so B sees the
// client A saw. A client's session, TLS passthrough end to end, a cancel, a pooled mapping's
// server connections and A's logged-in health checks all cross B.
TEST(ProxyProtocol, AFrontPgproxyTellsTheNextOneWhoseConnectionItIs) {
  int b_proxied = freePort();
  Proxy b(
      "listen:\n  - {address: 127.0.0.1, port: {PORT}}\n"
      "  - {address: 127.0.0.1, port: " +
      std::to_string(b_proxied) +
      ", proxy_protocol: true, proxy_protocol_from: 127.0.0.1}\n"
      "default: host1.example.com\nmappings:\n"
      "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n");
  const std::string to_b =
      "internal: 127.0.0.1, port: " + std::to_string(b_proxied) + ", backend_proxy_protocol: v2";
  int admin = freePort();
  Proxy a("admin: {listen: \"127.0.0.1:" + std::to_string(admin) +
          "\"}\n"
          "auth: {type: trust}\n"
          "default: host1.example.com\nmappings:\n"
          "  - {external: host1.example.com, " +
          to_b + ", health_check: {interval: 200ms, user: postgres}}\n");
  // A plaintext client of A's from 127.0.0.2: B logs that address, not A's.
  int fd = connectTcp(a.port(), "127.0.0.2");
  ASSERT_GE(fd, 0);
  std::string bytes = startup();
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  std::string answer;
  EXPECT_TRUE(readUntilReady(fd, &answer, seconds(10))) << answer << a.log() << b.log();
  close(fd);
  EXPECT_TRUE(eventually([&] {
    std::string log = b.log();
    return log.find("client=127.0.0.2:") != std::string::npos &&
           log.find("mapping=\"host1.example.com\"") != std::string::npos;
  })) << b.log();
  // TLS passthrough through both: the header goes before the client's TLS bytes.
  EXPECT_EQ(psql(a.tls("host1"), "show cluster_name").output, "host1\n") << a.log() << b.log();
  // A cancel through A reaches the backend through B (with a header: B matches it).
  expectCancelWorks(a.plain());
  // A's logged-in health checks cross B with a LOCAL header (B would close them otherwise).
  EXPECT_TRUE(eventually([&] {
    return httpGet(admin, "/metrics")
               .body.find("pgproxy_backend_up{mapping=\"host1.example.com\",backend=\"127.0.0.1:" +
                          std::to_string(b_proxied) + "\"} 1") != std::string::npos;
  }));
  EXPECT_EQ(b.log().find("no PROXY protocol header"), std::string::npos) << b.log();

  // A pooled mapping's server connections serve many clients: they send LOCAL headers.
  Proxy pooled(
      "auth: {type: trust}\ndefault: host1.example.com\nmappings:\n"
      "  - {external: host1.example.com, " +
      to_b + ", authenticate: true, pool: {mode: transaction, size: 2}}\n");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(psql(pooled.plain(), "show cluster_name").output, "host1\n") << pooled.log();
  }
  EXPECT_EQ(b.log().find("no PROXY protocol header"), std::string::npos) << b.log();
}

}  // namespace
}  // namespace pgproxy::it
