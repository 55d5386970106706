// The seed's promise: each client lands on the server its TLS server name maps to.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "harness.h"

namespace pgproxy::it {
namespace {

const char* kTwoMappings = R"(mappings:
  - external: "host1.example.com"
    internal: "127.0.0.1"
    port: {P1}
  - external: "host2.example.com"
    internal: "localhost"
    port: {P2}
)";

TEST(Routing, SniSelectsBackendWithVerifyFull) {
  Proxy proxy(kTwoMappings);
  auto r1 = psql(proxy.tls("host1"), "show cluster_name");
  ASSERT_EQ(r1.exit_code, 0) << r1.output;
  EXPECT_EQ(r1.output, "host1\n");
  auto r2 = psql(proxy.tls("host2"), "show cluster_name");
  ASSERT_EQ(r2.exit_code, 0) << r2.output;
  EXPECT_EQ(r2.output, "host2\n");
  // The TLS session is end to end: the backend sees an SSL connection.
  auto ssl = psql(proxy.tls("host1"), "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
  EXPECT_EQ(ssl.output, "t\n");
}

TEST(Routing, CaseInsensitiveAndWildcard) {
  Proxy proxy(R"(mappings:
  - {external: "HOST1.example.com", internal: 127.0.0.1, port: {P1}}
  - {external: "*.example.com", internal: 127.0.0.1, port: {P2}}
)");
  auto exact = psql(proxy.tls("Host1"), "show cluster_name");
  EXPECT_EQ(exact.output, "host1\n") << exact.output;
  // Any other single label goes to the wildcard (its certificate is host2's: require mode).
  auto wild = psql(proxy.tls("tenant42", "require"), "show cluster_name");
  EXPECT_EQ(wild.output, "host2\n") << wild.output;
}

TEST(Routing, UnknownSniGetsUnrecognizedNameAlert) {
  Proxy proxy(kTwoMappings);
  auto r = psql(proxy.tls("nope", "require"), "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unrecognized name"), std::string::npos) << r.output;
  EXPECT_NE(proxy.log().find("no mapping for server name \"nope.example.com\""), std::string::npos);
  // The proxy keeps serving.
  EXPECT_EQ(psql(proxy.tls("host2"), "show cluster_name").output, "host2\n");
}

TEST(Routing, NoSniAndNoDefaultGetsAlert) {
  Proxy proxy(kTwoMappings);
  auto r = psql(proxy.tls("host1", "require") + " sslsni=0", "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unrecognized name"), std::string::npos) << r.output;
}

TEST(Routing, NoSniUsesDefault) {
  Proxy proxy(std::string("default: host2.example.com\n") + kTwoMappings);
  auto r = psql(proxy.tls("host1", "require") + " sslsni=0", "show cluster_name");
  EXPECT_EQ(r.output, "host2\n") << r.output;
}

TEST(Routing, PlaintextUsesDefaultMapping) {
  Proxy proxy(std::string("default: host2.example.com\n") + kTwoMappings);
  auto r = psql(proxy.plain(), "show cluster_name");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "host2\n");
}

TEST(Routing, PlaintextSingleMappingIsImpliedDefault) {
  Proxy proxy("mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n");
  EXPECT_EQ(psql(proxy.plain(), "show cluster_name").output, "host1\n");
}

TEST(Routing, GssEncRequestAnsweredN) {
  Proxy proxy(std::string("default: host1.example.com\n") + kTwoMappings);
  // Raw: GSSENCRequest → 'N', then a plaintext StartupMessage on the same connection.
  int fd = connectTcp(proxy.port());
  ASSERT_GE(fd, 0);
  std::string gss("\x00\x00\x00\x08\x04\xd2\x16\x30", 8);
  ASSERT_EQ(write(fd, gss.data(), gss.size()), 8);
  char answer = 0;
  ASSERT_EQ(read(fd, &answer, 1), 1);
  EXPECT_EQ(answer, 'N');
  std::string startup = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
  ASSERT_EQ(write(fd, startup.data(), startup.size()), static_cast<ssize_t>(startup.size()));
  char r = 0;
  ASSERT_EQ(read(fd, &r, 1), 1);
  EXPECT_EQ(r, 'R');  // AuthenticationOk from the real backend
  close(fd);
  // And psql with gssencmode=prefer works, over TLS and plaintext.
  std::string tls = proxy.tls("host2");
  tls.replace(tls.find("gssencmode=disable"), 18, "gssencmode=prefer");
  EXPECT_EQ(psql(tls, "show cluster_name").output, "host2\n");
  std::string plain = proxy.plain();
  plain.replace(plain.find("gssencmode=disable"), 18, "gssencmode=prefer");
  EXPECT_EQ(psql(plain, "show cluster_name").output, "host1\n");
}

TEST(Routing, DirectTlsWithAlpnReachesPostgres15) {
  Proxy proxy(kTwoMappings);
  auto r2 = directTls(proxy.port(), "host2.example.com", true);
  ASSERT_TRUE(r2.handshake_ok) << r2.error;
  EXPECT_EQ(r2.cluster, "host2");
  auto r1 = directTls(proxy.port(), "host1.example.com", true);
  ASSERT_TRUE(r1.handshake_ok) << r1.error;
  EXPECT_EQ(r1.cluster, "host1");
}

TEST(Routing, DirectTlsWithoutAlpnRefused) {
  Proxy proxy(kTwoMappings);
  auto r = directTls(proxy.port(), "host1.example.com", false);
  EXPECT_FALSE(r.handshake_ok);
  EXPECT_NE(r.error.find("no application protocol"), std::string::npos) << r.error;
}

TEST(Cancel, TlsSessionCancelledThroughProxy) {
  Proxy proxy(kTwoMappings, 2);
  // Several rounds: the cancel lands on either worker, whichever accepted the session.
  for (int i = 0; i < 3; ++i) {
    expectCancelWorks(proxy.tls("host1"));
  }
}

TEST(Cancel, PlaintextSessionCancelledThroughProxy) {
  Proxy proxy(std::string("default: host1.example.com\n") + kTwoMappings, 2);
  for (int i = 0; i < 3; ++i) {
    expectCancelWorks(proxy.plain());
  }
}

TEST(Cancel, BogusCancelIsClosedSilently) {
  Proxy proxy(kTwoMappings);
  int fd = connectTcp(proxy.port());
  std::string cancel("\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x01\x00\x00\x00\x02", 16);
  ASSERT_EQ(write(fd, cancel.data(), cancel.size()), 16);
  bool closed = false;
  std::string got = readUntilClose(fd, std::chrono::seconds(10), &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(got, "");
  close(fd);
}

}  // namespace
}  // namespace pgproxy::it
