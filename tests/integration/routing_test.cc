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

// PostgreSQL 17 direct TLS: the first byte is a TLS record, with ALPN "postgresql". libpq 15
// cannot send it, so the test speaks it with OpenSSL and the wire protocol by hand.
struct DirectTlsResult {
  bool handshake_ok = false;
  std::string cluster;  // from SHOW cluster_name
  std::string error;
};

DirectTlsResult directTls(int port, const std::string& sni, bool with_alpn) {
  DirectTlsResult res;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(ctx, sandbox().ca().c_str(), nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL* ssl = SSL_new(ctx);
  int fd = connectTcp(port);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, sni.c_str());
  SSL_set1_host(ssl, sni.c_str());
  if (with_alpn) {
    static const unsigned char kAlpn[] = "\x0apostgresql";
    SSL_set_alpn_protos(ssl, kAlpn, 11);
  }
  if (SSL_connect(ssl) != 1) {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    res.error = buf;
  } else {
    res.handshake_ok = true;
    std::string startup = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
    SSL_write(ssl, startup.data(), static_cast<int>(startup.size()));
    std::string in;
    char buf[4096];
    auto readUntilReady = [&]() {
      while (true) {
        // Messages: type, length; stop after ReadyForQuery.
        std::size_t pos = 0;
        while (pos + 5 <= in.size()) {
          std::uint32_t len = (std::uint32_t(std::uint8_t(in[pos + 1])) << 24) |
                              (std::uint32_t(std::uint8_t(in[pos + 2])) << 16) |
                              (std::uint32_t(std::uint8_t(in[pos + 3])) << 8) |
                              std::uint8_t(in[pos + 4]);
          if (pos + 1 + len > in.size()) {
            break;
          }
          if (in[pos] == 'Z') {
            return true;
          }
          pos += 1 + len;
        }
        int n = SSL_read(ssl, buf, sizeof(buf));
        if (n <= 0) {
          return false;
        }
        in.append(buf, static_cast<std::size_t>(n));
      }
    };
    if (readUntilReady()) {
      in.clear();
      std::string q("Q");
      std::string sql = "show cluster_name";
      std::uint32_t len = htonl(static_cast<std::uint32_t>(4 + sql.size() + 1));
      q.append(reinterpret_cast<char*>(&len), 4);
      q += sql;
      q.push_back('\0');
      SSL_write(ssl, q.data(), static_cast<int>(q.size()));
      if (readUntilReady()) {
        // DataRow: 'D', len, ncols(2), col len(4), value.
        std::size_t d = in.find('D');
        if (d != std::string::npos && d + 11 <= in.size()) {
          std::uint32_t vlen;
          std::memcpy(&vlen, in.data() + d + 7, 4);
          vlen = ntohl(vlen);
          res.cluster = in.substr(d + 11, vlen);
        }
      }
    }
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return res;
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

// Ctrl-C in psql is PQcancel: a CancelRequest on a new, unencrypted connection.
void expectCancelWorks(const std::string& conninfo) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  ASSERT_EQ(PQsendQuery(conn, "select pg_sleep(30)"), 1);
  // Wait until the backend is really running the query before cancelling it.
  PGconn* watcher = PQconnectdb(direct(sandbox().port1).c_str());
  for (int i = 0; i < 200; ++i) {
    PGresult* r = PQexec(watcher,
                         "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)'"
                         " and state = 'active'");
    bool running = PQntuples(r) == 1 && std::string(PQgetvalue(r, 0, 0)) != "0";
    PQclear(r);
    if (running) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  PQfinish(watcher);
  PGcancel* cancel = PQgetCancel(conn);
  char err[256];
  EXPECT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  PQfreeCancel(cancel);
  PGresult* res = PQgetResult(conn);
  ASSERT_NE(res, nullptr);
  EXPECT_EQ(PQresultStatus(res), PGRES_FATAL_ERROR);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014") << PQresultErrorMessage(res);
  PQclear(res);
  while ((res = PQgetResult(conn)) != nullptr) {
    PQclear(res);
  }
  PQfinish(conn);
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
