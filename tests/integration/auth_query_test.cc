// auth.query (issue 15): users who are not in pgproxy's auth file get their secret from the
// backend, through an authenticate mapping and a pooled one, with real PostgreSQL 15 checking
// every login on both legs. pg_sandbox.sh's pg_hba.conf asks pgproxy_authq (who runs the query)
// and pgproxy_aq_scram for SCRAM and pgproxy_aq_md5 for md5, so pgproxy's backend logins for
// looked-up users are checked too, never trusted.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

const auto& sb = sandboxFile;
const auto& query = queryHost1;

// The query user (a password in the file, SCRAM on the backend, no superuser) and the looked-up
// users (in pg_authid only). The lookup goes through a SECURITY DEFINER function, as the docs
// recommend, so pgproxy_authq reads pg_shadow without being a superuser.
std::string makeUsers() {
  query(
      "drop function if exists public.pgproxy_lookup(name); "
      "drop role if exists pgproxy_authq; drop role if exists pgproxy_aq_scram; "
      "drop role if exists pgproxy_aq_md5; "
      "set password_encryption = 'scram-sha-256'; "
      "create role pgproxy_authq login password 'authq-pw'; "
      "create role pgproxy_aq_scram login password 'aq-pw'; "
      "set password_encryption = 'md5'; "
      "create role pgproxy_aq_md5 login password 'aq-md5-pw'");
  query(
      "create or replace function public.pgproxy_lookup(u name) "
      "returns table (usename name, passwd text) language sql security definer "
      "set search_path = pg_catalog "
      "as 'select usename, passwd from pg_catalog.pg_shadow where usename = u'; "
      "revoke all on function public.pgproxy_lookup(name) from public; "
      "grant execute on function public.pgproxy_lookup(name) to pgproxy_authq");
  std::string dir = tempDir("pgproxy-authq");
  writeFile(dir + "/users.txt", "\"pgproxy_authq\" \"authq-pw\"\n");
  return dir + "/users.txt";
}

const std::string kQuery = "SELECT usename, passwd FROM public.pgproxy_lookup($1)";

// An authenticate mapping (host1.example.com, TLS to the backend) and a pooled one
// (host2.example.com) on the same cluster; `auth` is the inside of the auth block.
std::string config(const std::string& auth, const std::string& extra = "",
                   const std::string& port = "{P1}") {
  return "auth: {" + auth + "}\n" + extra +
         "mappings:\n"
         "  - external: host1.example.com\n"
         "    internal: 127.0.0.1\n"
         "    port: " +
         port +
         "\n"
         "    tls: terminate\n"
         "    certificate: " +
         sb("proxy-host1.crt") + "\n    key: " + sb("proxy-host1.key") +
         "\n"
         "    backend_tls: require\n"
         "    authenticate: true\n"
         "  - external: host2.example.com\n"
         "    internal: 127.0.0.1\n"
         "    port: " +
         port +
         "\n"
         "    tls: terminate\n"
         "    certificate: " +
         sb("proxy-host2.crt") + "\n    key: " + sb("proxy-host2.key") +
         "\n"
         "    backend_tls: disable\n"
         "    pool: {mode: session, size: 4}\n";
}

std::string authBlock(const std::string& users, const std::string& more = "") {
  return "type: scram-sha-256, file: " + users + ", query: \"" + kQuery +
         "\", user: pgproxy_authq" + more;
}

std::string via(const Proxy& proxy, const std::string& host, const std::string& login) {
  return "host=" + host + ".example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=verify-full sslrootcert=" + sb("proxy-ca.crt") +
         " dbname=postgres connect_timeout=20 gssencmode=disable " + login;
}

const std::string kFound = "pgproxy_auth_query_lookups_total{result=\"found\"}";
const std::string kAbsent = "pgproxy_auth_query_lookups_total{result=\"absent\"}";
const std::string kFailed = "pgproxy_auth_query_lookups_total{result=\"failed\"}";
const std::string kHits = "pgproxy_auth_query_cache_hits_total";
const std::string kWho =
    "select current_user || ' ' || coalesce((select ssl::text from pg_stat_ssl where pid = "
    "pg_backend_pid()), '')";

TEST(Authenticate, AuthQueryLetsInUsersWhoAreOnlyInTheBackend) {
  std::string users = makeUsers();
  Proxy proxy(config(authBlock(users)));
  const std::string scram = "user=pgproxy_aq_scram password=aq-pw";
  // Through the authenticate mapping: SCRAM with the verifier auth.query returned, then the
  // backend checks pgproxy's login for the client (made from the client's proof) over TLS.
  EXPECT_EQ(psql(via(proxy, "host1", scram), kWho).output, "pgproxy_aq_scram true\n")
      << proxy.log();
  // Through the pool: the same secret; the pool's server logs in with it.
  EXPECT_EQ(psql(via(proxy, "host2", scram), kWho).output, "pgproxy_aq_scram false\n")
      << proxy.log();
  // The query user itself is in the file, and is never looked up.
  EXPECT_EQ(psql(via(proxy, "host1", "user=pgproxy_authq password=authq-pw"), "select 1").output,
            "1\n");

  // A wrong password, and a user the backend does not know either: PostgreSQL's words, the same
  // for both, whichever mapping.
  for (const char* host : {"host1", "host2"}) {
    auto wrong = psql(via(proxy, host, "user=pgproxy_aq_scram password=nope"), "select 1");
    EXPECT_NE(wrong.exit_code, 0);
    EXPECT_NE(wrong.output.find("FATAL:  password authentication failed for user "
                                "\"pgproxy_aq_scram\""),
              std::string::npos)
        << wrong.output;
    auto unknown = psql(via(proxy, host, "user=pgproxy_aq_nobody password=aq-pw"), "select 1");
    EXPECT_NE(unknown.exit_code, 0);
    EXPECT_NE(unknown.output.find("FATAL:  password authentication failed for user "
                                  "\"pgproxy_aq_nobody\""),
              std::string::npos)
        << unknown.output;
  }
  // A role without a password (NULL in pg_shadow) is an unknown user too.
  query("drop role if exists pgproxy_aq_nopw; create role pgproxy_aq_nopw login");
  auto nopw = psql(via(proxy, "host1", "user=pgproxy_aq_nopw password=x"), "select 1");
  EXPECT_NE(nopw.output.find("password authentication failed for user \"pgproxy_aq_nopw\""),
            std::string::npos)
      << nopw.output;
  query("drop role pgproxy_aq_nopw");
  // A name that would be SQL if it were pasted into the query is only ever a parameter.
  auto odd = psql(via(proxy, "host1", "user='x\\' or \\'1\\'=\\'1' password=aq-pw"), "select 1");
  EXPECT_NE(odd.output.find("password authentication failed for user \"x' or '1'='1\""),
            std::string::npos)
      << odd.output;
  std::string log = proxy.log();
  EXPECT_NE(log.find("no such user in the auth file or by auth.query"), std::string::npos) << log;
  for (const char* secret : {"aq-pw", "authq-pw", "SCRAM-SHA-256$"}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << secret;
  }
}

// A route's users are looked up on the route's cluster: here the mapping's own backend (host2)
// does not know them, and a lookup asked of it would refuse the login.
TEST(Authenticate, AuthQueryAsksTheClusterTheSessionIsRoutedTo) {
  std::string users = makeUsers();
  Proxy proxy("auth: {" + authBlock(users) +
              "}\n"
              "mappings:\n"
              "  - external: db.example.com\n"
              "    internal: 127.0.0.1\n"
              "    port: {P2}\n"
              "    authenticate: true\n"
              "    routes:\n"
              "      - match: {user: \"pgproxy_aq_*\"}\n"
              "        backends: [{host: 127.0.0.1, port: {P1}}]\n");
  auto r = psql("host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                    " sslmode=disable user=pgproxy_aq_scram password=aq-pw dbname=postgres "
                    "connect_timeout=20",
                "select current_user || ' ' || current_setting('cluster_name')");
  EXPECT_EQ(r.output, "pgproxy_aq_scram host1\n") << proxy.log();
}

TEST(Authenticate, AuthQueryServesMd5Secrets) {
  std::string users = makeUsers();
  Proxy proxy(
      config("type: md5, file: " + users + ", query: \"" + kQuery + "\", user: pgproxy_authq"));
  // md5 from the client against the hash auth.query returned; the backend asks md5 and pgproxy
  // answers from the same hash.
  for (const char* host : {"host1", "host2"}) {
    EXPECT_EQ(
        psql(via(proxy, host, "user=pgproxy_aq_md5 password=aq-md5-pw"), "select current_user")
            .output,
        "pgproxy_aq_md5\n")
        << proxy.log();
  }
  auto wrong = psql(via(proxy, "host1", "user=pgproxy_aq_md5 password=nope"), "select 1");
  EXPECT_NE(wrong.output.find("password authentication failed for user \"pgproxy_aq_md5\""),
            std::string::npos)
      << wrong.output;
}

// Logins whose lookup fails get a FATAL that says pgproxy could not look the user up (the reason,
// which names backends and auth.user, goes to the log only); users of the file are not affected.
TEST(Authenticate, AuthQueryFailuresAreClearFatals) {
  std::string users = makeUsers();
  const std::string scram = "user=pgproxy_aq_scram password=aq-pw";
  const std::string said = "pgproxy could not look up the secret of user \"pgproxy_aq_scram\"";
  {
    // auth.user's password in the file is wrong: the backend refuses pgproxy's own login.
    std::string dir = tempDir("pgproxy-authq-bad");
    writeFile(dir + "/users.txt", "\"pgproxy_authq\" \"not-the-password\"\n");
    Proxy proxy(config(authBlock(dir + "/users.txt")));
    for (const char* host : {"host1", "host2"}) {
      auto r = psql(via(proxy, host, scram), "select 1");
      EXPECT_NE(r.exit_code, 0);
      EXPECT_NE(r.output.find("FATAL:  " + said + " (auth.query); see pgproxy's log"),
                std::string::npos)
          << r.output;
    }
    // The access log line is written as the session closes, after the client has read its FATAL.
    EXPECT_TRUE(
        eventually([&] { return proxy.log().find("outcome=auth_failed") != std::string::npos; }));
    std::string log = proxy.log();
    EXPECT_NE(log.find("pgproxy could not log in as auth.user \"pgproxy_authq\": password "
                       "authentication failed for user \"pgproxy_authq\" (SQLSTATE 28P01)"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("outcome=auth_failed"), std::string::npos) << log;
    EXPECT_EQ(log.find("not-the-password"), std::string::npos);
  }
  {
    // The query fails on the server.
    Proxy proxy(config("type: scram-sha-256, file: " + users +
                       ", query: \"SELECT usename, passwd FROM nowhere WHERE usename = $1\", "
                       "user: pgproxy_authq"));
    auto r = psql(via(proxy, "host1", scram), "select 1");
    EXPECT_NE(r.output.find(said), std::string::npos) << r.output;
    EXPECT_NE(proxy.log().find("auth.query failed: relation \"nowhere\" does not exist (SQLSTATE "
                               "42P01)"),
              std::string::npos)
        << proxy.log();
  }
  {
    // No backend answers.
    Proxy proxy(config(authBlock(users), "", "{DEAD}"));
    auto r = psql(via(proxy, "host1", scram), "select 1");
    EXPECT_NE(r.output.find(said), std::string::npos) << r.output;
    EXPECT_NE(proxy.log().find("could not connect to backend 127.0.0.1:"), std::string::npos)
        << proxy.log();
    EXPECT_TRUE(eventually([&] {
      return proxy.log().find("outcome=backend_unreachable") != std::string::npos;
    })) << proxy.log();
  }
  {
    // A lookup slower than handshake_timeout: the client is told, not dropped in silence.
    Proxy proxy(config("type: scram-sha-256, file: " + users +
                           ", query: \"SELECT s.usename, s.passwd FROM "
                           "public.pgproxy_lookup($1) s, pg_sleep(3)\", user: pgproxy_authq",
                       "handshake_timeout: 1s\n"));
    auto r = psql(via(proxy, "host1", scram), "select 1");
    EXPECT_NE(r.output.find(said), std::string::npos) << r.output;
    EXPECT_NE(proxy.log().find("no answer within handshake_timeout"), std::string::npos)
        << proxy.log();
  }
}

TEST(Authenticate, AuthQueryCachesAndSharesLookups) {
  std::string users = makeUsers();
  int admin = 0;
  // Each proxy its own admin port: counters start at zero with each master.
  auto adminBlock = [&] {
    admin = freePort();
    return "admin: {listen: \"127.0.0.1:" + std::to_string(admin) + "\"}\n";
  };
  const std::string scram = "user=pgproxy_aq_scram password=aq-pw";
  {
    // One worker, so that one cache sees every login: a burst of logins asks the backend once.
    Proxy proxy(config(authBlock(users, ", cache: 1h"), adminBlock()), 1);
    for (int i = 0; i < 6; ++i) {
      EXPECT_EQ(psql(via(proxy, i % 2 ? "host1" : "host2", scram), "select 1").output, "1\n")
          << proxy.log();
    }
    // Unknown users are remembered too.
    for (int i = 0; i < 3; ++i) {
      (void)psql(via(proxy, "host1", "user=pgproxy_aq_nobody password=x"), "select 1");
    }
    // Each mapping asks once for itself (their backends could be different clusters).
    EXPECT_EQ(scrapeMetric(admin, kFound), 2) << httpGet(admin, "/metrics").body;
    EXPECT_EQ(scrapeMetric(admin, kAbsent), 1);
    EXPECT_EQ(scrapeMetric(admin, kHits), 6);
    EXPECT_EQ(scrapeMetric(admin, kFailed), 0);

    // A password change in PostgreSQL: until the cache expires pgproxy keeps checking the old
    // secret, so the new password is refused and the old one still logs in (the pool's server,
    // logged in before the change, serves it).
    query(
        "set password_encryption = 'scram-sha-256'; alter role pgproxy_aq_scram password 'aq-pw2'");
    EXPECT_EQ(psql(via(proxy, "host2", scram), "select 1").output, "1\n") << proxy.log();
    auto fresh = psql(via(proxy, "host2", "user=pgproxy_aq_scram password=aq-pw2"), "select 1");
    EXPECT_NE(fresh.output.find("password authentication failed"), std::string::npos)
        << fresh.output;
    EXPECT_EQ(scrapeMetric(admin, kFound), 2);
  }
  query("set password_encryption = 'scram-sha-256'; alter role pgproxy_aq_scram password 'aq-pw'");
  {
    // A short cache: after a change the new password works once the entry has expired.
    Proxy proxy(config(authBlock(users, ", cache: 1s"), adminBlock()), 1);
    EXPECT_EQ(psql(via(proxy, "host1", scram), "select 1").output, "1\n") << proxy.log();
    query(
        "set password_encryption = 'scram-sha-256'; alter role pgproxy_aq_scram password 'aq-pw2'");
    EXPECT_TRUE(eventually([&] {
      return psql(via(proxy, "host1", "user=pgproxy_aq_scram password=aq-pw2"), "select 1")
                 .output == "1\n";
    })) << proxy.log();
    auto old = psql(via(proxy, "host1", scram), "select 1");
    EXPECT_NE(old.output.find("password authentication failed"), std::string::npos) << old.output;
  }
  query("set password_encryption = 'scram-sha-256'; alter role pgproxy_aq_scram password 'aq-pw'");
  {
    // No cache, and a slow query: logins that arrive while a lookup runs wait for it instead of
    // starting their own.
    Proxy proxy(config("type: scram-sha-256, file: " + users +
                           ", query: \"SELECT s.usename, s.passwd FROM "
                           "public.pgproxy_lookup($1) s, pg_sleep(2)\", user: pgproxy_authq, "
                           "cache: 0",
                       adminBlock()),
                1);
    std::vector<std::thread> clients;
    std::vector<std::string> outputs(5);
    for (int i = 0; i < 5; ++i) {
      clients.emplace_back(
          [&, i] { outputs[i] = psql(via(proxy, "host1", scram), "select 1").output; });
    }
    for (auto& t : clients) {
      t.join();
    }
    for (const auto& out : outputs) {
      EXPECT_EQ(out, "1\n") << proxy.log();
    }
    EXPECT_EQ(scrapeMetric(admin, kFound), 1) << proxy.log();
    EXPECT_EQ(scrapeMetric(admin, kHits), 0);
  }
}

}  // namespace
}  // namespace pgproxy::it
