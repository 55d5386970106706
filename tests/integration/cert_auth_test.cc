// auth.type cert: clients of a terminated, pooled mapping log in with a client certificate that
// pgproxy verifies against auth.client_ca, whose CN must be the user; psql (libpq) on the client
// side and real PostgreSQL 15 behind, which sees the user pgproxy logged in as. pg_hba.conf
// (pg_sandbox.sh) asks pgproxy_cert_md5 for md5 and trusts pgproxy_cert.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>

#include "harness.h"

namespace pgproxy::it {
namespace {

const auto& sb = sandboxFile;
const auto& query = queryHost1;

// A CA and client certificates made with the openssl CLI, as a site would.
struct ClientPki {
  std::string dir;
  std::string ca() const { return dir + "/clients-ca.crt"; }
  std::string otherCa() const { return dir + "/other-ca.crt"; }
  // conninfo parameters presenting certificate `name` (no such file: no certificate).
  std::string present(const std::string& name) const {
    return " sslcert=" + dir + "/" + name + ".crt sslkey=" + dir + "/" + name + ".key";
  }
};

void openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run(argv);
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

void makeCa(const std::string& dir, const std::string& name) {
  openssl({"req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-days", "30", "-keyout", dir + "/" + name + ".key", "-out",
           dir + "/" + name + ".crt", "-subj", "/CN=" + name});
}

// A client certificate whose Subject CN is `cn`, signed by `ca`.
void makeClientCert(const std::string& dir, const std::string& name, const std::string& cn,
                    const std::string& ca) {
  const std::string base = dir + "/" + name;
  openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-keyout", base + ".key", "-out", base + ".csr", "-subj", "/O=pgproxy tests/CN=" + cn});
  writeFile(base + ".ext", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  openssl({"x509", "-req", "-in", base + ".csr", "-CA", dir + "/" + ca + ".crt", "-CAkey",
           dir + "/" + ca + ".key", "-CAcreateserial", "-days", "30", "-out", base + ".crt",
           "-extfile", base + ".ext"});
  ::chmod((base + ".key").c_str(), 0600);  // libpq refuses a key others can read
}

const ClientPki& pki() {
  static const ClientPki p = [] {
    ClientPki out{tempDir("pgproxy-cert")};
    makeCa(out.dir, "clients-ca");
    makeCa(out.dir, "other-ca");
    makeClientCert(out.dir, "md5user", "pgproxy_cert_md5", "clients-ca");
    makeClientCert(out.dir, "trusted", "pgproxy_cert", "clients-ca");
    makeClientCert(out.dir, "stranger", "pgproxy_cert", "other-ca");
    return out;
  }();
  return p;
}

// pgproxy_cert_md5 has an md5 hba line on the backend, and its hash in the auth file: pgproxy
// logs in with it. pgproxy_cert is not in the file: the backend trusts it.
const std::string& authFile() {
  static const std::string path = [] {
    query(
        "drop role if exists pgproxy_cert_md5; drop role if exists pgproxy_cert; "
        "set password_encryption = 'md5'; "
        "create role pgproxy_cert_md5 login password 'cert-md5-pw'; "
        "create role pgproxy_cert login");
    std::string out = pki().dir + "/users.txt";
    writeFile(out, "\"pgproxy_cert_md5\" \"" +
                       query("select rolpassword from pg_authid where rolname = "
                             "'pgproxy_cert_md5'") +
                       "\"\n");
    return out;
  }();
  return path;
}

std::string config(const std::string& users, const std::string& client_ca,
                   const std::string& authenticating = "pool: {mode: transaction, size: 2}") {
  return "auth: {type: cert, client_ca: " + client_ca + ", file: " + users +
         "}\n"
         "mappings:\n"
         "  - external: host1.example.com\n"
         "    internal: 127.0.0.1\n"
         "    port: {P1}\n"
         "    tls: terminate\n"
         "    certificate: " +
         sb("proxy-host1.crt") + "\n    key: " + sb("proxy-host1.key") +
         "\n"
         "    backend_tls: disable\n"
         "    " +
         authenticating + "\n";
}

std::string viaProxy(const Proxy& proxy, const std::string& user, const std::string& cert) {
  return "host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=verify-full sslrootcert=" + sb("proxy-ca.crt") + pki().present(cert) +
         " user=" + user + " dbname=postgres connect_timeout=20 gssencmode=disable";
}

const std::string kWho = "select session_user";
const std::string kNeedsCert = "connection requires a valid client certificate";

TEST(CertAuth, TheCertificateCnIsTheUserAndPgproxyLogsInAsTrustWould) {
  const std::string users = authFile();
  Proxy proxy(config(users, pki().ca()));
  // The backend sees the certificate's user: pgproxy answered its md5 request with the file's
  // hash for pgproxy_cert_md5, and pgproxy_cert needed nothing (trust on the backend).
  auto md5 = psql(viaProxy(proxy, "pgproxy_cert_md5", "md5user"), kWho);
  EXPECT_EQ(md5.exit_code, 0) << md5.output << proxy.log();
  EXPECT_EQ(md5.output, "pgproxy_cert_md5\n") << proxy.log();
  auto trusted = psql(viaProxy(proxy, "pgproxy_cert", "trusted"), kWho);
  EXPECT_EQ(trusted.output, "pgproxy_cert\n") << trusted.output << proxy.log();
  // The pool's server connection is the backend's witness of who logged in.
  EXPECT_EQ(query("select count(*) > 0 from pg_stat_activity where usename = 'pgproxy_cert_md5'"),
            "t");

  // A verified certificate naming someone else.
  auto wrong = psql(viaProxy(proxy, "pgproxy_cert", "md5user"), kWho);
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.output.find("FATAL:  certificate authentication failed for user "
                              "\"pgproxy_cert\""),
            std::string::npos)
      << wrong.output;
  // No certificate: the handshake completes and the login is refused in PostgreSQL's words.
  auto none = psql(viaProxy(proxy, "pgproxy_cert", "no-such-file"), kWho);
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.output.find("FATAL:  " + kNeedsCert), std::string::npos) << none.output;
  // The right CN, from a CA pgproxy does not know.
  auto stranger = psql(viaProxy(proxy, "pgproxy_cert", "stranger"), kWho);
  EXPECT_NE(stranger.exit_code, 0);
  EXPECT_NE(stranger.output.find("FATAL:  " + kNeedsCert), std::string::npos) << stranger.output;
  // A plaintext client of the (default) mapping has no certificate to show.
  auto plain = psql("host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                        " sslmode=disable user=pgproxy_cert dbname=postgres",
                    kWho);
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_NE(plain.output.find("FATAL:  " + kNeedsCert), std::string::npos) << plain.output;

  // The log says why each was refused; the client heard only the FATAL.
  std::string log;
  ASSERT_TRUE(eventually([&] {
    log = proxy.log();
    return log.find("authentication of 127.0.0.1") != std::string::npos &&
           log.find("did not verify") != std::string::npos;
  })) << log;
  EXPECT_NE(log.find("provided user name (pgproxy_cert) and the certificate's common name "
                     "(pgproxy_cert_md5) do not match"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("the client presented no certificate"), std::string::npos) << log;
  // OpenSSL's reason: the issuer of the leaf is not in client_ca.
  EXPECT_NE(log.find("did not verify against auth.client_ca: unable to verify the first "
                     "certificate"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("outcome=auth_failed"), std::string::npos) << log;
}

// authenticate: true without a pool: the same check, then pgproxy's own login for the session.
TEST(CertAuth, AuthenticateWithoutAPool) {
  const std::string users = authFile();
  Proxy proxy(config(users, pki().ca(), "authenticate: true"));
  EXPECT_EQ(psql(viaProxy(proxy, "pgproxy_cert_md5", "md5user"), kWho).output, "pgproxy_cert_md5\n")
      << proxy.log();
  auto wrong = psql(viaProxy(proxy, "pgproxy_cert_md5", "trusted"), kWho);
  EXPECT_NE(wrong.output.find("certificate authentication failed for user \"pgproxy_cert_md5\""),
            std::string::npos)
      << wrong.output;
  auto stranger = psql(viaProxy(proxy, "pgproxy_cert", "stranger"), kWho);
  EXPECT_NE(stranger.output.find(kNeedsCert), std::string::npos) << stranger.output;
}

// A reload with another client_ca: new sessions are checked against the new file.
TEST(CertAuth, AReloadSwitchesTheClientCa) {
  const std::string users = authFile();
  Proxy proxy(config(users, pki().ca()));
  EXPECT_EQ(psql(viaProxy(proxy, "pgproxy_cert", "trusted"), kWho).output, "pgproxy_cert\n")
      << proxy.log();
  proxy.rewrite(config(users, pki().otherCa()));
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    return psql(viaProxy(proxy, "pgproxy_cert", "stranger"), kWho).output == "pgproxy_cert\n";
  })) << proxy.log();
  auto old = psql(viaProxy(proxy, "pgproxy_cert", "trusted"), kWho);
  EXPECT_NE(old.output.find(kNeedsCert), std::string::npos) << old.output;
  // An unreadable client_ca fails the reload (pgproxy -s checks the file before it signals),
  // naming the line, and the previous CA keeps serving.
  proxy.rewrite(config(users, pki().dir + "/missing-ca.crt"));
  auto bad = proxy.signal("reload");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find(":6:31: cannot read auth.client_ca \"" + pki().dir +
                            "/missing-ca.crt\": No such file or directory"),
            std::string::npos)
      << bad.output;
  EXPECT_EQ(psql(viaProxy(proxy, "pgproxy_cert", "stranger"), kWho).output, "pgproxy_cert\n")
      << proxy.log();
}

// The audit log's connect event names the client certificate's subject, and its auth event the
// cert method and the user the certificate proved.
TEST(CertAuth, TheAuditLogNamesTheClientCertificate) {
  std::string dir = tempDir("pgproxy-cert-audit");
  std::string log = dir + "/audit.log";
  Proxy proxy("audit: {file: " + log + "}\n" + config(authFile(), pki().ca()));
  auto r = psql(viaProxy(proxy, "pgproxy_cert", "trusted"), kWho);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(eventually([&] { return readFile(log).find("\"disconnect\"") != std::string::npos; }))
      << readFile(log);
  std::string text = readFile(log);
  EXPECT_NE(text.find("\"client_certificate\":\"CN=pgproxy_cert,O=pgproxy tests\""),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\"user\":\"pgproxy_cert\",\"database\":\"postgres\",\"method\":\"cert\","
                      "\"result\":\"ok\""),
            std::string::npos)
      << text;
  run({"rm", "-rf", dir});
}

}  // namespace
}  // namespace pgproxy::it
