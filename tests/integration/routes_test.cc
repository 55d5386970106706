// Routing by what the client asks for (issue 18): routes on database, user and application_name
// with globs and a database rewrite, 3D000 for a database no route knows, target_session_attrs,
// and wildcard mappings whose backend is named after the client's server name.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <string>

#include "harness.h"

namespace pgproxy::it {
namespace {

// Creates what `exists` does not find (psql -c has no \gexec).
void ensure(int port, const std::string& exists, const std::string& create) {
  auto r = psql(direct(port), "SELECT count(*) FROM " + exists);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  if (r.output.find('1') == 0) {
    return;
  }
  r = psql(direct(port), create);
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

void createDatabase(int port, const std::string& name) {
  ensure(port, "pg_database WHERE datname = '" + name + "'", "CREATE DATABASE " + name);
}

void createRole(int port, const std::string& name) {
  ensure(port, "pg_roles WHERE rolname = '" + name + "'", "CREATE ROLE " + name + " LOGIN");
}

// A route-only terminated mapping: billing is billing_prod on host2, analytics_* goes to host2
// for report* users and to host1 for the others, rt_* to host1; nothing else exists.
std::string routedConfig() {
  return "mappings:\n"
         "  - external: db.example.com\n"
         "    tls: terminate\n"
         "    certificate: " +
         sandboxFile("proxy-wild.crt") + "\n    key: " + sandboxFile("proxy-wild.key") +
         "\n    backend_tls: disable\n"
         "    routes:\n"
         "      - match: {database: billing}\n"
         "        backends: [{host: 127.0.0.1, port: {P2}}]\n"
         "        database: billing_prod\n"
         "      - match: {database: \"analytics_*\", user: \"report*\"}\n"
         "        backends: [{host: 127.0.0.1, port: {P2}}]\n"
         "      - match: {database: \"analytics_*\"}\n"
         "        backends: [{host: 127.0.0.1, port: {P1}}]\n"
         "      - match: {database: \"rt_*\"}\n"
         "        backends: [{host: 127.0.0.1, port: {P1}}]\n";
}

std::string viaTls(const Proxy& proxy, const std::string& user, const std::string& db,
                   const std::string& extra = "") {
  return "host=db.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=verify-full sslrootcert=" + sandboxFile("proxy-ca.crt") + " user=" + user +
         " dbname=" + db + " connect_timeout=20 gssencmode=disable " + extra;
}

std::string viaPlain(const Proxy& proxy, const std::string& user, const std::string& db,
                     const std::string& extra = "") {
  return "host=127.0.0.1 port=" + std::to_string(proxy.port()) + " sslmode=disable user=" + user +
         " dbname=" + db + " connect_timeout=20 gssencmode=disable " + extra;
}

// Where a session landed: its database and the cluster (its cluster_name is the host label).
std::string where(const std::string& conninfo) {
  Conn c(conninfo);
  return c.one("SELECT current_database() || '@' || current_setting('cluster_name')");
}

// The error a refused connection gets, with its SQLSTATE.
std::string refusal(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  std::string out = PQstatus(c) == CONNECTION_OK ? "connected" : PQerrorMessage(c);
  PQfinish(c);
  return out;
}

TEST(Routes, DatabasesOnTwoClustersByNameGlobsARewriteAndNoSuchDatabase) {
  createDatabase(sandbox().port2, "billing_prod");
  createDatabase(sandbox().port1, "analytics_eu");
  createDatabase(sandbox().port2, "analytics_eu");
  createDatabase(sandbox().port1, "rt_app");
  createRole(sandbox().port2, "report_1");
  Proxy proxy(routedConfig());

  // TLS (the StartupMessage read inside pgproxy's TLS) and plaintext (read from the socket, as
  // the only mapping is the default) take the same routes.
  for (bool tls : {true, false}) {
    SCOPED_TRACE(tls ? "tls" : "plaintext");
    auto via = [&](const std::string& user, const std::string& db, const std::string& extra = "") {
      return tls ? viaTls(proxy, user, db, extra) : viaPlain(proxy, user, db, extra);
    };
    // The rewrite: the client asked for billing, the backend was asked for billing_prod.
    EXPECT_EQ(where(via("postgres", "billing")), "billing_prod@host2");
    // Both globs of a route must match: report_1 goes to host2, postgres falls through to host1.
    EXPECT_EQ(where(via("report_1", "analytics_eu")), "analytics_eu@host2");
    EXPECT_EQ(where(via("postgres", "analytics_eu")), "analytics_eu@host1");
    EXPECT_EQ(where(via("postgres", "rt_app")), "rt_app@host1");
    // No route, no backends of the mapping's own: PostgreSQL's words and code.
    std::string e = refusal(via("postgres", "nosuch"));
    EXPECT_NE(e.find("database \"nosuch\" does not exist"), std::string::npos) << e;
    // target_session_attrs in options is pgproxy's to read: the backend never sees it
    // (PostgreSQL would refuse an unknown parameter).
    EXPECT_EQ(where(via("postgres", "rt_app", "options='-c target_session_attrs=any'")),
              "rt_app@host1");
    e = refusal(via("postgres", "rt_app", "options='-c target_session_attrs=sometimes'"));
    EXPECT_NE(e.find("invalid value for parameter \"target_session_attrs\": \"sometimes\""),
              std::string::npos)
        << e;
    // Asked for a standby where no check knows roles: refused, saying so.
    e = refusal(via("postgres", "rt_app", "options='-c target_session_attrs=read-only'"));
    EXPECT_NE(e.find("no standby backend for \"db.example.com\" is available"), std::string::npos)
        << e;
  }
  // The 3D000 is an ErrorResponse with that code.
  int fd = connectTcp(proxy.port());
  ASSERT_GE(fd, 0);
  std::string hello = startupPacket({{"user", "postgres"}, {"database", "nosuch"}});
  ASSERT_EQ(write(fd, hello.data(), hello.size()), static_cast<ssize_t>(hello.size()));
  bool closed = false;
  std::string reply = readUntilClose(fd, std::chrono::seconds(20), &closed);
  close(fd);
  EXPECT_TRUE(closed);
  EXPECT_EQ(sqlstateOf(reply), "3D000");
}

TEST(Routes, APooledRouteKeysItsPoolByTheRewrittenDatabase) {
  const std::string& auth = poolRoleDatabase("routes_pool");
  Proxy proxy("auth: {type: scram-sha-256, file: " + auth +
              "}\n"
              "mappings:\n"
              "  - external: db.example.com\n"
              "    internal: 127.0.0.1\n"
              "    port: {P2}\n"
              "    pool: {mode: transaction, size: 2}\n"
              "    routes:\n"
              "      - match: {database: app}\n"
              "        backends: [{host: 127.0.0.1, port: {P1}}]\n"
              "        database: routes_pool\n");
  std::string info = "host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                     " sslmode=disable user=pgproxy_pool password=scram-pw dbname=app "
                     "connect_timeout=20 gssencmode=disable";
  Conn a(info);
  EXPECT_EQ(a.one("SELECT current_database() || '@' || current_setting('cluster_name')"),
            "routes_pool@host1");
  // target_session_attrs is not a setting a pooled server is given either.
  Conn b(info + " options='-c target_session_attrs=any -c work_mem=5MB'");
  EXPECT_EQ(b.one("SHOW work_mem"), "5MB");
  EXPECT_EQ(b.one("SELECT current_database()"), "routes_pool");
}

// Its own primary and streaming standby: target_session_attrs (where the config says any) and a
// route's role choose between them by what the logged-in health checks saw.
TEST(Routes, TargetSessionAttrsAndARouteRoleChooseThePrimaryOrAStandby) {
  int primaryPort = freePort(), standbyPort = freePort();
  ASSERT_EQ(sandboxCommand("primary", {"tp", std::to_string(primaryPort)}).exit_code, 0);
  auto standby =
      sandboxCommand("standby", {"ts", std::to_string(standbyPort), std::to_string(primaryPort)});
  ASSERT_EQ(standby.exit_code, 0) << standby.output;
  Proxy proxy(
      "mappings:\n  - external: db.example.com\n    backends:\n"
      "      - {host: 127.0.0.1, port: " +
      std::to_string(primaryPort) +
      "}\n      - {host: 127.0.0.1, port: " + std::to_string(standbyPort) +
      "}\n    health_check: {interval: 200ms, timeout: 2s, fall: 1, rise: 1, user: "
      "postgres}\n    routes:\n"
      "      - {match: {application_name: \"report*\"}, role: standby}\n");
  const std::string sql = "SELECT current_setting('cluster_name') || ' ' || pg_is_in_recovery()";
  auto at = [&](const std::string& extra) {
    auto r = psql(viaPlain(proxy, "postgres", "postgres", extra), sql);
    return r.exit_code == 0 ? r.output : "error: " + r.output;
  };
  // Once the checks have seen both roles, each ask lands where it must, every time.
  EXPECT_TRUE(eventually([&] {
    return at("options='-c target_session_attrs=read-only'") == "ts true\n" &&
           at("options='-c target_session_attrs=read-write'") == "tp false\n";
  })) << at("options='-c target_session_attrs=read-only'")
      << proxy.log();
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(at("options='-c target_session_attrs=primary'"), "tp false\n");
    EXPECT_EQ(at("options='-c target_session_attrs=standby'"), "ts true\n");
    EXPECT_EQ(at("options='-c target_session_attrs=prefer-standby'"), "ts true\n");
    EXPECT_EQ(at("application_name=report_daily"), "ts true\n");
    // The route's role is the config's: a client of that route cannot ask itself onto the primary.
    EXPECT_EQ(at("application_name=report_daily options='-c target_session_attrs=read-write'"),
              "ts true\n");
  }
  // With the standby gone, prefer-standby falls back to the primary; standby asks are refused.
  ASSERT_EQ(sandboxCommand("stop-one", {"ts"}).exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    return at("options='-c target_session_attrs=prefer-standby'") == "tp false\n";
  })) << proxy.log();
  EXPECT_NE(at("options='-c target_session_attrs=standby'")
                .find("no standby backend for \"db.example.com\" is available"),
            std::string::npos);
  sandboxCommand("stop-one", {"tp"});
  run({"rm", "-rf", sandbox().dir + "/tp", sandbox().dir + "/ts"});
}

TEST(Routes, AWildcardNamesEachTenantsBackendAfterItsLabel) {
  // A cluster on two loopback addresses: the template sends "1.tpl..." to 127.0.0.1 and
  // "2.tpl..." to 127.0.0.2, and the server says which address each session reached.
  int port = freePort();
  auto r = sandboxCommand("primary", {"tpl", std::to_string(port), "127.0.0.1,127.0.0.2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Proxy proxy(
      "mappings:\n"
      "  - {external: \"*.tpl.example.com\", internal: \"127.0.0.$1\", port: " +
      std::to_string(port) +
      "}\n"
      "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n");
  for (std::string tenant : {"1", "2"}) {
    // TLS passthrough: the backend's own TLS session, end to end.
    std::string info = "host=" + tenant +
                       ".tpl.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
                       " sslmode=require user=postgres dbname=postgres connect_timeout=20 "
                       "gssencmode=disable";
    Conn c(info);
    EXPECT_EQ(c.one("SELECT host(inet_server_addr()) || ' ' || current_setting('cluster_name')"),
              "127.0.0." + tenant + " tpl");
  }
  // A label that names no server fails like an unreachable backend, for that tenant only.
  std::string e =
      refusal("host=3.tpl.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
              " sslmode=require user=postgres dbname=postgres connect_timeout=20");
  EXPECT_NE(e, "connected");
  EXPECT_TRUE(eventually([&] { return proxy.log().find("127.0.0.3") != std::string::npos; }))
      << proxy.log();
  EXPECT_EQ(refusal(proxy.tls("host1")), "connected");
  {
    // The only mapping is the default: a plaintext client reaches it with no server name to
    // take the label from, and is told so.
    Proxy only("mappings:\n  - {external: \"*.tpl.example.com\", internal: \"127.0.0.$1\", port: " +
               std::to_string(port) + "}\n");
    std::string why = refusal("host=127.0.0.1 port=" + std::to_string(only.port()) +
                              " sslmode=disable user=postgres dbname=postgres connect_timeout=20");
    EXPECT_NE(why.find("names its backend after the first label of the TLS server name, and this "
                       "connection sent none"),
              std::string::npos)
        << why;
  }
  sandboxCommand("stop-one", {"tpl"});
  run({"rm", "-rf", sandbox().dir + "/tpl"});
}

}  // namespace
}  // namespace pgproxy::it
