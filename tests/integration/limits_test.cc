// Connection limits and address filters (issue 9, first part).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::seconds;

// A plaintext StartupMessage from `source` (a 127.0.0.0/8 address); returns what came back
// before the close, and whether it was closed.
std::string startupFrom(const char* source, int port, bool* closed,
                        std::chrono::seconds wait = seconds(10)) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  inet_pton(AF_INET, source, &src.sin_addr);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<std::uint16_t>(port));
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)), 0);
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

}  // namespace
}  // namespace pgproxy::it
