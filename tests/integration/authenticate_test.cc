// authenticate: true (issue 15): pgproxy authenticates clients itself and logs in to the backend
// for them, with real PostgreSQL 15 on the backend side checking every login. The backend's
// pg_hba.conf (pg_sandbox.sh) asks pgproxy_auth_scram for SCRAM, pgproxy_auth_md5 for md5 and
// pgproxy_auth_pw for a cleartext password.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <string>

#include "harness.h"
#include "pgproxy/auth/scram_server.h"

namespace pgproxy::it {
namespace {

// Certificates of the sandbox, and SQL on host1's cluster.
const auto& sb = sandboxFile;
const auto& query = queryHost1;

// The three users on host1, and an auth file holding what PostgreSQL itself stores for them
// (pg_authid.rolpassword: a SCRAM verifier and an md5 hash) or, for the cleartext user, the
// password.
std::string makeUsers() {
  query(
      "drop role if exists pgproxy_auth_scram; drop role if exists pgproxy_auth_md5; "
      "drop role if exists pgproxy_auth_pw; "
      "set password_encryption = 'scram-sha-256'; "
      "create role pgproxy_auth_scram login password 'scram-pw'; "
      "create role pgproxy_auth_pw login password 'clear-pw'; "
      "set password_encryption = 'md5'; "
      "create role pgproxy_auth_md5 login password 'md5-pw'");
  std::string dir = tempDir("pgproxy-auth");
  std::string users =
      "; what PostgreSQL stores, copied from pg_authid\n"
      "\"pgproxy_auth_scram\" \"" +
      query("select rolpassword from pg_authid where rolname = 'pgproxy_auth_scram'") +
      "\"\n\"pgproxy_auth_md5\" \"" +
      query("select rolpassword from pg_authid where rolname = 'pgproxy_auth_md5'") +
      "\"\n\"pgproxy_auth_pw\" \"clear-pw\"\n";
  writeFile(dir + "/users.txt", users);
  return dir + "/users.txt";
}

std::string config(const std::string& users, const std::string& type) {
  return "auth: {type: " + type + ", file: " + users +
         "}\n"
         "mappings:\n"
         "  - external: host1.example.com\n"
         "    internal: 127.0.0.1\n"
         "    port: {P1}\n"
         "    tls: terminate\n"
         "    certificate: " +
         sb("proxy-host1.crt") + "\n    key: " + sb("proxy-host1.key") +
         "\n"
         "    backend_tls: require\n"
         "    authenticate: true\n";
}

std::string viaProxy(const Proxy& proxy, const std::string& login) {
  return "host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=verify-full sslrootcert=" + sb("proxy-ca.crt") +
         " dbname=postgres connect_timeout=20 gssencmode=disable " + login;
}

const std::string kWho =
    "select current_user || ' ' || (select ssl from pg_stat_ssl where pid = pg_backend_pid())";

TEST(Authenticate, ScramClientsLogInAndPgproxyLogsInForThemWithoutThePassword) {
  std::string users = makeUsers();
  Proxy proxy(config(users, "scram-sha-256"));
  ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 2; }));
  auto workers = childrenOf(proxy.pid());
  const std::string scram = "user=pgproxy_auth_scram password=scram-pw";
  // libpq's default channel_binding=prefer: SCRAM-SHA-256-PLUS with pgproxy's certificate. The
  // backend leg is TLS too, and the backend checked pgproxy's answer to its own SCRAM challenge,
  // computed from the client's proof: pgproxy never held the password.
  EXPECT_EQ(psql(viaProxy(proxy, scram), kWho).output, "pgproxy_auth_scram true\n") << proxy.log();
  EXPECT_EQ(psql(viaProxy(proxy, scram + " channel_binding=require"), kWho).output,
            "pgproxy_auth_scram true\n")
      << proxy.log();
  EXPECT_EQ(psql(viaProxy(proxy, scram + " channel_binding=disable"), kWho).output,
            "pgproxy_auth_scram true\n");
  // A plaintext client of the same (default) mapping: SCRAM without channel binding.
  EXPECT_EQ(psql("host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                     " sslmode=disable dbname=postgres " + scram,
                 "select current_user")
                .output,
            "pgproxy_auth_scram\n");
  // A cleartext secret in the file answers the backend's cleartext request.
  EXPECT_EQ(psql(viaProxy(proxy, "user=pgproxy_auth_pw password=clear-pw"), kWho).output,
            "pgproxy_auth_pw true\n")
      << proxy.log();

  // Refusals in PostgreSQL's words; an unknown user cannot be told from a wrong password.
  auto wrong = psql(viaProxy(proxy, "user=pgproxy_auth_scram password=nope"), "select 1");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.output.find("password authentication failed for user \"pgproxy_auth_scram\""),
            std::string::npos)
      << wrong.output;
  auto unknown = psql(viaProxy(proxy, "user=nobody password=scram-pw"), "select 1");
  EXPECT_NE(unknown.output.find("password authentication failed for user \"nobody\""),
            std::string::npos)
      << unknown.output;
  // An md5 hash cannot check a SCRAM exchange: refused like a wrong password.
  auto md5 = psql(viaProxy(proxy, "user=pgproxy_auth_md5 password=md5-pw"), "select 1");
  EXPECT_NE(md5.output.find("password authentication failed for user \"pgproxy_auth_md5\""),
            std::string::npos)
      << md5.output;
  // The backend's own refusal after pgproxy's login reaches the client as PostgreSQL sent it.
  auto nodb = psql(viaProxy(proxy, scram)
                       .replace(viaProxy(proxy, scram).find("dbname=postgres"), 15, "dbname=nope"),
                   "select 1");
  EXPECT_NE(nodb.output.find("database \"nope\" does not exist"), std::string::npos) << nodb.output;

  // Cancel reaches the backend session pgproxy logged in.
  expectCancelWorks(viaProxy(proxy, scram));
  std::string log = proxy.log();
  EXPECT_NE(log.find("outcome=auth_failed"), std::string::npos) << log;
  EXPECT_NE(log.find("authentication of 127.0.0.1"), std::string::npos) << log;
  for (const char* secret : {"scram-pw", "clear-pw", "md5-pw"}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << secret;
  }
  EXPECT_EQ(childrenOf(proxy.pid()), workers);
}

TEST(Authenticate, Md5ClientsAndMd5Backends) {
  std::string users = makeUsers();
  Proxy proxy(config(users, "md5"));
  // md5 from the client, checked against PostgreSQL's md5 hash; the backend asks md5 too and
  // pgproxy answers it from the same hash.
  EXPECT_EQ(psql(viaProxy(proxy, "user=pgproxy_auth_md5 password=md5-pw"), kWho).output,
            "pgproxy_auth_md5 true\n")
      << proxy.log();
  // With md5 configured, a user whose secret is a SCRAM verifier still gets SCRAM, as in
  // PostgreSQL.
  EXPECT_EQ(psql(viaProxy(proxy, "user=pgproxy_auth_scram password=scram-pw"), kWho).output,
            "pgproxy_auth_scram true\n")
      << proxy.log();
  auto wrong = psql(viaProxy(proxy, "user=pgproxy_auth_md5 password=nope"), "select 1");
  EXPECT_NE(wrong.output.find("password authentication failed for user \"pgproxy_auth_md5\""),
            std::string::npos)
      << wrong.output;
}

TEST(Authenticate, TrustLetsAnyoneInAndTheBackendDecides) {
  Proxy proxy("auth: {type: trust}\n" +
              config("x", "trust").substr(config("x", "trust").find("mappings:")));
  EXPECT_EQ(psql(viaProxy(proxy, "user=postgres"), kWho).output, "postgres true\n") << proxy.log();
  // The backend still asks pgproxy_auth_scram for SCRAM, which pgproxy cannot answer without a
  // secret: a clear refusal naming what is missing.
  auto r = psql(viaProxy(proxy, "user=pgproxy_auth_scram password=scram-pw"), "select 1");
  EXPECT_NE(r.output.find("pgproxy could not log in to the backend for this user"),
            std::string::npos)
      << r.output;
}

// SASLprep (RFC 4013) as PostgreSQL applies it: the verifier pgproxy makes from a password (for
// a password in the auth file) equals the one PostgreSQL stored for it, with its salt, for
// passwords that SASLprep maps, normalizes, or leaves alone because it does not apply to them.
TEST(Authenticate, SaslPrepMatchesPostgresVerifiers) {
  query("drop role if exists pgproxy_auth_sasl; create role pgproxy_auth_sasl login");
  struct Case {
    const char* sql;  // the password as a U& literal, so that the SQL stays ASCII
    std::string password;
  };
  const Case cases[] = {
      {"I\\00ADX", "I\u00ADX"},                      // mapped to nothing
      {"\\2168", "\u2168"},                          // NFKC: IX
      {"\\00AA", "\u00AA"},                          // NFKC: a
      {"a\\00A0b\\3000c", "a\u00A0b\u3000c"},        // non-ASCII spaces
      {"\\FF21\\FF22\\FF23", "\uFF21\uFF22\uFF23"},  // fullwidth
      {"\\FB01x", "\uFB01x"},                        // a ligature
      {"cafe\\0301", "cafe\u0301"},                  // composition
      {"\\0627\\0031\\0628", "\u0627\u0031\u0628"},  // right to left, well formed
      {"\\FB2A", "\uFB2A"},                          // checked before normalization
      {"\\0627a\\0628", "\u0627a\u0628"},            // bidi violation: used as is
      {"x\\00AD", "x\u00AD"},                        // mapped, then NFKC of "x"
      {"\\00AD\\00AD", "\u00AD\u00AD"},              // nothing left: used as is
      {"\\+01F600", "\U0001F600"},                   // unassigned in Unicode 3.2: as is
      {"\\00AA\\0007", "\u00AA\u0007"},              // prohibited: as is
      {"a\\E000", "a\uE000"},                        // private use: as is
      {"plain", "plain"},
  };
  for (const auto& c : cases) {
    query("set password_encryption = 'scram-sha-256'; alter role pgproxy_auth_sasl password U&'" +
          std::string(c.sql) + "'");
    std::string stored =
        query("select rolpassword from pg_authid where rolname = 'pgproxy_auth_sasl'");
    auto v = auth::ScramVerifier::parse(stored);
    ASSERT_TRUE(v.ok()) << stored;
    EXPECT_EQ(auth::ScramVerifier::fromPassword(c.password, v->salt, v->iterations).text(), stored)
        << c.sql;
  }
}

// A password SASLprep changes, in the auth file as typed. With SCRAM the client proves it in any
// of its equivalent forms (libpq prepares it too, and pgproxy's verifier is made from the
// prepared form). pgproxy's own SCRAM login to the backend (which asks pgproxy_auth_sasl for
// SCRAM) prepares it as PostgreSQL did when it stored the verifier; an md5 client leg shows that
// leg alone, since md5 hashes the password as typed, in PostgreSQL as in pgproxy.
TEST(Authenticate, SaslPrepPasswordsLogInOnBothLegs) {
  const std::string typed = "pass\u00ADword\u2168";  // soft hyphen, ROMAN NUMERAL NINE
  query(
      "drop role if exists pgproxy_auth_sasl; set password_encryption = 'scram-sha-256'; "
      "create role pgproxy_auth_sasl login password U&'pass\\00ADword\\2168'");
  std::string dir = tempDir("pgproxy-sasl");
  writeFile(dir + "/users.txt", "\"pgproxy_auth_sasl\" \"" + typed + "\"\n");
  auto login = [&](const Proxy& proxy, const std::string& pw) {
    return psql(viaProxy(proxy, "user=pgproxy_auth_sasl password=" + pw), kWho).output;
  };
  const std::string ok = "pgproxy_auth_sasl true\n";
  const std::string refused = "password authentication failed for user \"pgproxy_auth_sasl\"";
  {
    Proxy proxy(config(dir + "/users.txt", "scram-sha-256"));
    for (const std::string& pw :
         {typed, std::string("passwordIX"), std::string("password\u2168")}) {
      EXPECT_EQ(login(proxy, pw), ok) << pw << "\n" << proxy.log();
    }
    EXPECT_NE(login(proxy, "passwordI").find(refused), std::string::npos);
  }
  {
    Proxy proxy(config(dir + "/users.txt", "md5"));
    EXPECT_EQ(login(proxy, typed), ok) << proxy.log();
    EXPECT_NE(login(proxy, "passwordIX").find(refused), std::string::npos);
  }
}

}  // namespace
}  // namespace pgproxy::it
