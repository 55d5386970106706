// TLS termination (issue 7): pgproxy's own certificates (from the sandbox's second CA), backend
// TLS modes checked on the backend with pg_stat_ssl, ALPN, SCRAM channel binding, CVE-2021-23214,
// certificate rotation by reload, and tls.require.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <string>

#include "harness.h"

namespace pgproxy::it {
namespace {

std::string sb(const std::string& file) {
  return sandbox().dir + "/" + file;
}

// A terminate mapping; `extra` adds keys inside the flow mapping.
std::string terminate(const std::string& external, const std::string& port,
                      const std::string& extra) {
  return "  - {external: \"" + external + "\", internal: 127.0.0.1, port: " + port +
         ", tls: terminate" + (extra.empty() ? "" : ", " + extra) + "}\n";
}

std::string certKeys(const std::string& name) {
  return "certificate: " + sb(name + ".crt") + ", key: " + sb(name + ".key");
}

// verify-full against pgproxy's own CA.
std::string viaProxy(const Proxy& proxy, const std::string& host, const std::string& extra = "") {
  return "host=" + host + " hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=verify-full sslrootcert=" + sb("proxy-ca.crt") +
         " user=postgres dbname=postgres connect_timeout=20 gssencmode=disable " + extra;
}

// The subject line of the certificate pgproxy serves for `sni`, via openssl s_client's
// PostgreSQL STARTTLS.
std::string servedCertificate(int port, const std::string& sni) {
  auto r =
      run({"sh", "-c",
           "echo | openssl s_client -starttls postgres -connect 127.0.0.1:" + std::to_string(port) +
               " -servername " + sni + " 2>/dev/null | openssl x509 -noout -subject -serial"},
          std::chrono::seconds(30));
  return r.output;
}

std::string serialOf(const std::string& certFile) {
  return run({"openssl", "x509", "-noout", "-subject", "-serial", "-in", certFile}).output;
}

TEST(Terminate, PerHostCertificatesWildcardAndPassthroughOnOneListener) {
  Proxy proxy("mappings:\n" +
              terminate("host1.example.com", "{P1}",
                        certKeys("proxy-host1") + ", backend_tls: verify-full, backend_ca: " +
                            sb("ca.crt") + ", backend_sni: host1.example.com") +
              terminate("*.example.com", "{P1}", certKeys("proxy-wild")) +
              "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}\n");
  // Each name gets its own certificate, the wildcard one for names only it matches.
  EXPECT_EQ(servedCertificate(proxy.port(), "host1.example.com"), serialOf(sb("proxy-host1.crt")));
  EXPECT_EQ(servedCertificate(proxy.port(), "db7.example.com"), serialOf(sb("proxy-wild.crt")));
  // verify-full against pgproxy's CA, and the backend sees TLS (verify-full / require).
  const std::string sql =
      "select current_setting('cluster_name') || ' ' || ssl from pg_stat_ssl "
      "where pid = pg_backend_pid()";
  EXPECT_EQ(psql(viaProxy(proxy, "host1.example.com"), sql).output, "host1 true\n");
  EXPECT_EQ(psql(viaProxy(proxy, "db7.example.com"), sql).output, "host1 true\n");
  // host2 is passthrough on the same listener: the backend's own certificate and CA.
  auto pass = psql(proxy.tls("host2"), "show cluster_name");
  EXPECT_EQ(pass.output, "host2\n");
  // Verifying pgproxy's terminating certificate with the backends' CA fails on the client.
  std::string wrongCa = viaProxy(proxy, "host1.example.com");
  wrongCa.replace(wrongCa.find(sb("proxy-ca.crt")), sb("proxy-ca.crt").size(), sandbox().ca());
  auto bad = psql(wrongCa, "select 1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("certificate verify failed"), std::string::npos) << bad.output;
  EXPECT_NE(proxy.log().find("mode=terminate"), std::string::npos) << proxy.log();
}

TEST(Terminate, BackendTlsModesAsTheBackendSeesThem) {
  Proxy proxy("tls: {" + certKeys("proxy-wild") + "}\nmappings:\n" +
              terminate("disable.example.com", "{P1}", "backend_tls: disable") +
              terminate("require.example.com", "{P1}", "backend_tls: require") +
              terminate("full.example.com", "{P1}",
                        "backend_tls: verify-full, backend_ca: " + sb("ca.crt") +
                            ", backend_sni: host1.example.com") +
              terminate("ca.example.com", "{P1}",
                        "backend_tls: verify-ca, backend_ca: " + sb("ca.crt") +
                            ", backend_sni: wrong.example.com") +
              terminate("wrongca.example.com", "{P1}",
                        "backend_tls: verify-full, backend_ca: " + sb("proxy-ca.crt") +
                            ", backend_sni: host1.example.com") +
              terminate("wrongname.example.com", "{P1}",
                        "backend_tls: verify-full, backend_ca: " + sb("ca.crt") +
                            ", backend_sni: wrong.example.com"));
  const std::string sql = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
  EXPECT_EQ(psql(viaProxy(proxy, "disable.example.com"), sql).output, "f\n");
  EXPECT_EQ(psql(viaProxy(proxy, "require.example.com"), sql).output, "t\n");
  EXPECT_EQ(psql(viaProxy(proxy, "full.example.com"), sql).output, "t\n");
  // verify-ca checks the chain only, not the name.
  EXPECT_EQ(psql(viaProxy(proxy, "ca.example.com"), sql).output, "t\n");
  for (const char* host : {"wrongca.example.com", "wrongname.example.com"}) {
    auto r = psql(viaProxy(proxy, host), sql);
    EXPECT_NE(r.exit_code, 0) << host;
    EXPECT_NE(r.output.find("could not connect to backend"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("certificate verify failed"), std::string::npos) << r.output;
  }
}

TEST(Terminate, DirectTlsNeedsAlpnPostgresql) {
  Proxy proxy("mappings:\n" + terminate("host1.example.com", "{P1}", certKeys("proxy-host1")) +
              "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}\n");
  auto term = directTls(proxy.port(), "host1.example.com", true, sb("proxy-ca.crt"));
  ASSERT_TRUE(term.handshake_ok) << term.error;
  EXPECT_EQ(term.cluster, "host1");
  auto pass = directTls(proxy.port(), "host2.example.com", true);
  ASSERT_TRUE(pass.handshake_ok) << pass.error;
  EXPECT_EQ(pass.cluster, "host2");
  auto noAlpn = directTls(proxy.port(), "host1.example.com", false, sb("proxy-ca.crt"));
  EXPECT_FALSE(noAlpn.handshake_ok);
  EXPECT_NE(noAlpn.error.find("no application protocol"), std::string::npos) << noAlpn.error;
}

// SCRAM channel binding cannot cross a TLS termination: the binding would be to pgproxy's
// certificate. With a plaintext backend leg the backend cannot bind either, so default clients
// (channel_binding=prefer) log in; with a TLS backend leg, SCRAM's downgrade protection makes the
// backend refuse a client that could have bound, and pgproxy refuses it first, saying why.
TEST(Terminate, ScramChannelBindingAcrossTermination) {
  ASSERT_EQ(psql(direct(sandbox().port1),
                 "set password_encryption = 'scram-sha-256'; drop role if exists pgproxy_scram; "
                 "create role pgproxy_scram login password 'scram-secret'")
                .exit_code,
            0);
  Proxy proxy("tls: {" + certKeys("proxy-wild") + "}\nmappings:\n" +
              terminate("tlsleg.example.com", "{P1}", "backend_tls: require") +
              terminate("plainleg.example.com", "{P1}", "backend_tls: disable"));
  std::string login = "user=pgproxy_scram password=scram-secret channel_binding=";
  auto as = [&](const std::string& host, const std::string& binding) {
    return psql(viaProxy(proxy, host, login + binding), "select current_user");
  };
  EXPECT_EQ(as("plainleg.example.com", "prefer").output, "pgproxy_scram\n");
  EXPECT_EQ(as("tlsleg.example.com", "disable").output, "pgproxy_scram\n");
  auto prefer = as("tlsleg.example.com", "prefer");
  EXPECT_NE(prefer.exit_code, 0);
  EXPECT_NE(prefer.output.find("SCRAM channel binding cannot reach the backend"), std::string::npos)
      << prefer.output;
  EXPECT_NE(prefer.output.find("channel_binding=disable"), std::string::npos) << prefer.output;
  for (const char* host : {"tlsleg.example.com", "plainleg.example.com"}) {
    auto require = as(host, "require");
    EXPECT_NE(require.exit_code, 0) << host;
    EXPECT_NE(require.output.find("channel binding is required, but server did not offer"),
              std::string::npos)
        << require.output;
  }
  // Directly (TLS to PostgreSQL itself) the same user does bind the channel.
  auto end2end =
      psql("host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(sandbox().port1) +
               " sslmode=verify-full sslrootcert=" + sandbox().ca() + " dbname=postgres " + login +
               "require",
           "select current_user");
  EXPECT_EQ(end2end.output, "pgproxy_scram\n");
  EXPECT_EQ(proxy.log().find("scram-secret"), std::string::npos);
}

TEST(Terminate, UnencryptedBytesAfterSslRequestNeverReachTheBackend) {
  Proxy proxy("mappings:\n" + terminate("host1.example.com", "{P1}", certKeys("proxy-host1")));
  int fd = connectTcp(proxy.port());
  ASSERT_GE(fd, 0);
  std::string req;
  const unsigned char sslRequest[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
  req.append(reinterpret_cast<const char*>(sslRequest), 8);
  req += startupPacket({{"user", "postgres"}, {"database", "postgres"}});
  ASSERT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  bool closed = false;
  std::string answer = readUntilClose(fd, std::chrono::seconds(10), &closed);
  close(fd);
  EXPECT_TRUE(closed);
  EXPECT_EQ(answer.find('S'), std::string::npos) << "pgproxy must not answer S";
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("outcome=protocol_error") != std::string::npos;
  })) << proxy.log();
  EXPECT_EQ(proxy.log().find("mapping=\"host1.example.com\""), std::string::npos) << proxy.log();
}

TEST(Terminate, CertificateRotationByReload) {
  std::string dir = tempDir("pgproxy-rotate");
  auto install = [&](const std::string& name) {
    ASSERT_EQ(run({"cp", sb(name + ".crt"), dir + "/host1.crt"}).exit_code, 0);
    ASSERT_EQ(run({"cp", sb(name + ".key"), dir + "/host1.key"}).exit_code, 0);
  };
  install("proxy-host1");
  std::string body =
      "mappings:\n" + terminate("host1.example.com", "{P1}",
                                "certificate: " + dir + "/host1.crt, key: " + dir + "/host1.key");
  Proxy proxy(body);
  ASSERT_EQ(servedCertificate(proxy.port(), "host1.example.com"), serialOf(sb("proxy-host1.crt")));
  PGconn* old = PQconnectdb(viaProxy(proxy, "host1.example.com").c_str());
  ASSERT_EQ(PQstatus(old), CONNECTION_OK) << PQerrorMessage(old);

  install("proxy-host1b");
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    return servedCertificate(proxy.port(), "host1.example.com") == serialOf(sb("proxy-host1b.crt"));
  }));
  PGresult* r = PQexec(old, "select 42");
  EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(old);
  PQclear(r);

  // A broken path fails the reload; the certificate already loaded keeps serving.
  proxy.rewrite("mappings:\n" +
                terminate("host1.example.com", "{P1}",
                          "certificate: " + dir + "/missing.crt, key: " + dir + "/host1.key"));
  proxy.signal("reload");
  EXPECT_TRUE(eventually([&] { return proxy.log().find("missing.crt") != std::string::npos; }))
      << proxy.log();
  EXPECT_EQ(servedCertificate(proxy.port(), "host1.example.com"), serialOf(sb("proxy-host1b.crt")));
  EXPECT_EQ(psql(viaProxy(proxy, "host1.example.com"), "show cluster_name").output, "host1\n");
  r = PQexec(old, "select 43");
  EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(old);
  PQclear(r);
  PQfinish(old);
  // -t loads the certificates too.
  auto t = run({proxyBinary(), "-t", "-c", proxy.configPath()});
  EXPECT_NE(t.exit_code, 0);
  EXPECT_NE(t.output.find("missing.crt"), std::string::npos) << t.output;
  run({"rm", "-rf", dir});
}

TEST(Terminate, CancelIsRoutedExactlyAndProtocolLogSeesInsideTls) {
  Proxy proxy("debug: true\nlog_protocol: true\nmappings:\n" +
              terminate("host1.example.com", "{P1}", certKeys("proxy-host1")));
  // A second session from the same client address: a fan-out (what passthrough must do) would
  // send the cancel to both backends; the key pgproxy read inside TLS picks exactly one.
  PGconn* other = PQconnectdb(viaProxy(proxy, "host1.example.com").c_str());
  ASSERT_EQ(PQstatus(other), CONNECTION_OK) << PQerrorMessage(other);
  expectCancelWorks(viaProxy(proxy, "host1.example.com"));
  PQfinish(other);
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("goes to 1 backend(s)") != std::string::npos;
  })) << proxy.log();
  EXPECT_EQ(proxy.log().find("goes to 2 backend(s)"), std::string::npos) << proxy.log();
  EXPECT_NE(proxy.log().find("sql=\"select pg_sleep(30)"), std::string::npos) << proxy.log();
}

TEST(Terminate, TlsRequireRefusesPlaintextWith28000) {
  Proxy proxy("tls: {require: true}\nmappings:\n" +
              terminate("host1.example.com", "{P1}", certKeys("proxy-host1")));
  auto r = psql(proxy.plain(), "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("pgproxy requires TLS"), std::string::npos) << r.output;
  int fd = connectTcp(proxy.port());
  ASSERT_GE(fd, 0);
  std::string startup = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
  ASSERT_EQ(write(fd, startup.data(), startup.size()), static_cast<ssize_t>(startup.size()));
  bool closed = false;
  std::string answer = readUntilClose(fd, std::chrono::seconds(10), &closed);
  close(fd);
  EXPECT_EQ(sqlstateOf(answer), "28000");
  // TLS clients are served.
  EXPECT_EQ(psql(viaProxy(proxy, "host1.example.com"), "show cluster_name").output, "host1\n");
}

}  // namespace
}  // namespace pgproxy::it
