// Connection limits and address filters (issue 9, first part).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::seconds;

// A plaintext StartupMessage from `source` (a 127.0.0.0/8 address); returns what came back
// before the close, and whether it was closed.
int connectFrom(const char* source, int port) {
  return connectTcp(port, source);
}

std::string startupFrom(const char* source, int port, bool* closed,
                        std::chrono::seconds wait = seconds(10)) {
  int fd = connectFrom(source, port);
  std::string startup = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
  (void)write(fd, startup.data(), startup.size());
  std::string answer = readUntilClose(fd, wait, closed);
  close(fd);
  return answer;
}

TEST(Limits, MaxConnectionsRefusesTheExcessWith53300) {
  Proxy proxy(
      "max_connections: 5\nmappings:\n"
      "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n"
      "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}, "
      "max_connections: 2}\n"
      "default: host1.example.com\n");
  std::vector<PGconn*> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(PQconnectdb(proxy.tls("host2").c_str()));
    ASSERT_EQ(PQstatus(held.back()), CONNECTION_OK) << PQerrorMessage(held.back());
  }
  // host2's own limit is reached (TLS passthrough: an alert); host1 still has room.
  auto third = psql(proxy.tls("host2"), "select 1");
  EXPECT_NE(third.exit_code, 0);
  EXPECT_NE(third.output.find("alert internal error"), std::string::npos) << third.output;
  for (int i = 0; i < 3; ++i) {
    held.push_back(PQconnectdb(proxy.plain().c_str()));
    ASSERT_EQ(PQstatus(held.back()), CONNECTION_OK) << PQerrorMessage(held.back());
  }
  // Five sessions in all: the sixth client reads PostgreSQL's own refusal.
  auto sixth = psql(proxy.plain(), "select 1");
  EXPECT_NE(sixth.exit_code, 0);
  EXPECT_NE(sixth.output.find("sorry, too many clients already"), std::string::npos)
      << sixth.output;
  bool closed = false;
  EXPECT_EQ(sqlstateOf(startupFrom("127.0.0.1", proxy.port(), &closed)), "53300");
  EXPECT_NE(proxy.log().find("outcome=too_many_clients"), std::string::npos);
  // A session that ends frees its place.
  PQfinish(held.back());
  held.pop_back();
  EXPECT_TRUE(eventually([&] { return psql(proxy.plain(), "select 7").output == "7\n"; }));
  for (PGconn* c : held) {
    PQfinish(c);
  }
}

TEST(Limits, AllowAndDenyAtAcceptAndPerMapping) {
  // Globally only 127.0.0.2 and 127.0.0.3 may connect, and 127.0.0.3 not to host2.
  Proxy proxy(
      "allow: [127.0.0.2/32, 127.0.0.3]\nmappings:\n"
      "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n"
      "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}, "
      "deny: 127.0.0.3}\n"
      "default: host2.example.com\n");
  bool closed = false;
  // 127.0.0.1 is not allowed: closed at accept, nothing read or sent.
  EXPECT_EQ(startupFrom("127.0.0.1", proxy.port(), &closed), "");
  EXPECT_TRUE(closed);
  auto viaPsql = psql(proxy.plain(), "select 1");
  EXPECT_NE(viaPsql.exit_code, 0);
  // 127.0.0.2 is served (the default mapping, host2); the session then waits for a query.
  std::string ok = startupFrom("127.0.0.2", proxy.port(), &closed, seconds(1));
  EXPECT_EQ(sqlstateOf(ok), "");
  EXPECT_NE(ok.find('R'), std::string::npos);  // authentication went on
  // 127.0.0.3 passes the global list but host2 denies it: FATAL 28000 naming the mapping.
  std::string denied = startupFrom("127.0.0.3", proxy.port(), &closed);
  EXPECT_EQ(sqlstateOf(denied), "28000");
  EXPECT_NE(denied.find("are not allowed for \"host2.example.com\""), std::string::npos);
  EXPECT_TRUE(eventually([&] { return proxy.log().find("outcome=denied") != std::string::npos; }))
      << proxy.log();
}

// A logged-in session from `source` (trust), held open: reads until ReadyForQuery. -1 when the
// proxy refused it; `answer` gets what came back.
int sessionFrom(const char* source, int port, std::string* answer) {
  return loginSession(port, answer, source);
}

TEST(Limits, MaxConnectionsPerClientCountsEachAddressOverAllMappings) {
  Proxy proxy(
      "max_connections_per_client: 2\nmappings:\n"
      "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n"
      "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}\n"
      "default: host1.example.com\n");
  std::string answer;
  int a = sessionFrom("127.0.0.2", proxy.port(), &answer);
  ASSERT_GE(a, 0) << answer;
  // The second one through the other mapping (TLS), from the same address: 127.0.0.1 is where
  // libpq connects from, so use it for both of these.
  PGconn* tls = PQconnectdb(proxy.tls("host2").c_str());
  ASSERT_EQ(PQstatus(tls), CONNECTION_OK) << PQerrorMessage(tls);
  int b = sessionFrom("127.0.0.1", proxy.port(), &answer);
  ASSERT_GE(b, 0) << answer;
  // 127.0.0.1 has two sessions now: the third is refused, with PostgreSQL's code.
  EXPECT_EQ(sessionFrom("127.0.0.1", proxy.port(), &answer), -1);
  EXPECT_EQ(sqlstateOf(answer), "53300");
  EXPECT_NE(answer.find("too many connections from 127.0.0.1 (max_connections_per_client 2)"),
            std::string::npos)
      << answer;
  auto r = psql(proxy.tls("host2"), "select 1");  // TLS passthrough: an alert
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("alert internal error"), std::string::npos) << r.output;
  // Another address still has room.
  int c = sessionFrom("127.0.0.2", proxy.port(), &answer);
  EXPECT_GE(c, 0) << answer;
  // A session that ends gives its place back.
  PQfinish(tls);
  EXPECT_TRUE(eventually([&] { return psql(proxy.plain(), "select 5").output == "5\n"; }));
  EXPECT_NE(proxy.log().find("outcome=client_limit"), std::string::npos);
  for (int fd : {a, b, c}) {
    if (fd >= 0) {
      close(fd);
    }
  }
}

// The wait the refusal names ("retry in N ms").
int retryMs(const std::string& answer) {
  auto at = answer.find("retry in ");
  return at == std::string::npos ? -1 : std::atoi(answer.c_str() + at + 9);
}

TEST(Limits, ConnectionRateRefusesTheBurstExcessAndRecovers) {
  // Three at once, then one every 3 s per address; host2 allows one a minute on top.
  Proxy proxy(
      "connection_rate: {per_client: 20/m, burst: 3}\nmappings:\n"
      "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n"
      "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}, "
      "connection_rate: 1/m}\n"
      "default: host1.example.com\n");
  std::string answer;
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    fds.push_back(sessionFrom("127.0.0.5", proxy.port(), &answer));
    ASSERT_GE(fds.back(), 0) << i << ": " << answer;
  }
  EXPECT_EQ(sessionFrom("127.0.0.5", proxy.port(), &answer), -1);
  EXPECT_EQ(sqlstateOf(answer), "53300");
  EXPECT_NE(answer.find("too many new connections from 127.0.0.5 (connection_rate 20/m, burst 3)"),
            std::string::npos)
      << answer;
  int wait = retryMs(answer);
  ASSERT_GT(wait, 0) << answer;
  ASSERT_LE(wait, 3001) << answer;
  // Other addresses have their own buckets.
  fds.push_back(sessionFrom("127.0.0.6", proxy.port(), &answer));
  EXPECT_GE(fds.back(), 0) << answer;
  // Refused attempts spent nothing: after the wait it was told, the client gets in.
  std::this_thread::sleep_for(std::chrono::milliseconds(wait + 50));
  fds.push_back(sessionFrom("127.0.0.5", proxy.port(), &answer));
  EXPECT_GE(fds.back(), 0) << answer;
  // host2's own rate (1/m, burst 1) through psql: the second connection is refused naming it.
  auto first = psql(proxy.tls("host2"), "select 1");
  EXPECT_EQ(first.exit_code, 0) << first.output;
  auto second = psql(proxy.tls("host2"), "select 1");
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(proxy.log().find("too many new connections from 127.0.0.1 to \"host2.example.com\""),
            std::string::npos);
  EXPECT_NE(proxy.log().find("outcome=rate_limited"), std::string::npos);
  for (int fd : fds) {
    if (fd >= 0) {
      close(fd);
    }
  }
}

// The value of a gauge without labels in a Prometheus text page, or -1.
long long gauge(const std::string& page, const std::string& name) {
  auto at = page.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::atoll(page.c_str() + at + name.size() + 2);
}

TEST(Limits, MaxHandshakesKeepsTheExcessInTheBacklog) {
  int admin = freePort();
  Proxy proxy("admin: {listen: \"127.0.0.1:" + std::to_string(admin) +
                  "\"}\nmax_handshakes: 4\nhandshake_timeout: 2s\nmappings:\n"
                  "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n",
              1);
  // Twelve clients that stall in their preamble: four hold the handshake places, the others
  // wait in the listen backlog (their connect succeeds: the kernel accepted them).
  std::vector<int> stalled;
  for (int i = 0; i < 12; ++i) {
    int fd = connectTcp(proxy.port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "\x00\x00", 2), 2);
    stalled.push_back(fd);
  }
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("max_handshakes (4) reached") != std::string::npos;
  })) << proxy.log();
  // Exactly four are in their handshake (one worker: no overshoot); the metric says so.
  EXPECT_TRUE(eventually([&] {
    return gauge(httpGet(admin, "/metrics").body, "pgproxy_connections_handshaking") == 4;
  }));
  // Every stalled one is eventually accepted and closed by handshake_timeout, four at a time,
  // and a real client behind them gets served.
  auto r = psql(proxy.plain(), "select 3");
  EXPECT_EQ(r.output, "3\n") << r.output;
  for (int fd : stalled) {
    bool closed = false;
    readUntilClose(fd, seconds(30), &closed);
    EXPECT_TRUE(closed);
    close(fd);
  }
}

TEST(Limits, LimitsChangeOnReload) {
  const std::string mappings =
      "mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n";
  Proxy proxy("connection_rate: {per_client: 1/h, burst: 1}\n" + mappings);
  std::string answer;
  int first = sessionFrom("127.0.0.7", proxy.port(), &answer);
  EXPECT_GE(first, 0) << answer;
  EXPECT_EQ(sessionFrom("127.0.0.7", proxy.port(), &answer), -1);
  EXPECT_EQ(sqlstateOf(answer), "53300");
  // Lifting the rate and capping sessions per client instead takes effect for new sessions.
  proxy.rewrite("max_connections_per_client: 2\n" + mappings);
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(
      eventually([&] { return proxy.log().find("generation 2 is serving") != std::string::npos; }));
  int second = sessionFrom("127.0.0.7", proxy.port(), &answer);
  EXPECT_GE(second, 0) << answer;
  // The session from before the reload still counts: this is the third.
  EXPECT_EQ(sessionFrom("127.0.0.7", proxy.port(), &answer), -1);
  EXPECT_NE(answer.find("max_connections_per_client 2"), std::string::npos) << answer;
  for (int fd : {first, second}) {
    if (fd >= 0) {
      close(fd);
    }
  }
}

}  // namespace
}  // namespace pgproxy::it
