// Lua plugins against real clusters and clients: the two example plugins (a per-tenant allow-list
// from a file, a query deny-list that also tags queries), every hook and answer, and the safety
// nets (instruction budget, memory cap, a raising hook) failing one session, never the worker.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::seconds;

std::string sb(const std::string& file) {
  return sandbox().dir + "/" + file;
}

// An example plugin of the source tree, by absolute path (the config file lives elsewhere).
std::string example(const std::string& name) {
  std::string dir = srcdir();
  if (dir.empty() || dir[0] != '/') {
    char cwd[4096];
    dir = std::string(getcwd(cwd, sizeof(cwd)) ? cwd : ".") + "/" + dir;
  }
  return dir + "/etc/pgproxy/plugins/" + name;
}

long long counter(int admin, const std::string& name) {
  return scrapeMetric(admin, "pgproxy_plugin_counter{name=\"" + name + "\"}");
}

TEST(Plugins, TenantAllowListFromAFile) {
  std::string dir = tempDir("pgproxy-plugin-allow");
  std::string allow = dir + "/tenants.allow";
  writeFile(allow,
            "# tenant  networks\n"
            "host1.example.com 127.0.0.1/32\n"
            "host2.example.com 10.0.0.0/8   # not this machine\n"
            "plain.example.com 127.0.0.2\n");
  int admin = freePort();
  Proxy proxy("plugins:\n  - file: " + example("tenant_allowlist.lua") +
              "\n    config: {file: " + allow +
              "}\n"
              "admin: {listen: \"127.0.0.1:" +
              std::to_string(admin) +
              "\"}\n"
              "default: plain.example.com\n"
              "mappings:\n"
              "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n"
              "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}\n"
              "  - {external: plain.example.com, internal: 127.0.0.1, port: {P1}}\n");
  EXPECT_EQ(psql(proxy.tls("host1"), "select 1").output, "1\n");
  // TLS passthrough: refused with a TLS alert (the client cannot read a FATAL there).
  auto r = psql(proxy.tls("host2"), "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("access denied"), std::string::npos) << r.output;
  // Plaintext: the plugin's words and SQLSTATE.
  r = psql(proxy.plain(), "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("connections from 127.0.0.1 are not on the allow-list of "
                          "\"plain.example.com\""),
            std::string::npos)
      << r.output;
  std::string answer;
  int fd = loginSession(proxy.port(), &answer, "127.0.0.2");
  EXPECT_GE(fd, 0) << answer;
  if (fd >= 0) {
    close(fd);
  }
  EXPECT_EQ(counter(admin, "allowlist_allowed"), 2);
  EXPECT_EQ(counter(admin, "allowlist_denied"), 2);

  // Edit the file and reload: the new lists apply.
  writeFile(allow, "host1.example.com 127.0.0.1/32\nhost2.example.com 127.0.0.0/8\n");
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] { return psql(proxy.tls("host2"), "select 1").exit_code == 0; }))
      << proxy.log();
  // A malformed line refuses the reload, naming the line; the lists in force stay.
  writeFile(allow, "host1.example.com 127.0.0.1/32\nhost2.example.com 300.1.2.3/8\n");
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] { return proxy.log().find("tenants.allow:2:") != std::string::npos; }))
      << proxy.log();
  EXPECT_EQ(psql(proxy.tls("host2"), "select 1").output, "1\n");
  run({"rm", "-rf", dir});
}

TEST(Plugins, QueryDenyListRefusesAndAnnotates) {
  const std::string& users = poolRoleDatabase("plugindb");
  int admin = freePort();
  Proxy proxy("plugins:\n  - file: " + example("query_denylist.lua") +
              "\n    config: {deny: [\"drop database\", \"alter system\"], annotate: true}\n"
              "admin: {listen: \"127.0.0.1:" +
              std::to_string(admin) +
              "\"}\n"
              "auth: {type: scram-sha-256, file: " +
              users +
              "}\n"
              "mappings:\n"
              "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}, tls: terminate,"
              " certificate: " +
              sb("proxy-host1.crt") + ", key: " + sb("proxy-host1.key") +
              ", backend_tls: disable, pool: {mode: transaction, size: 2}}\n");
  std::string conninfo =
      "host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
      " sslmode=verify-full sslrootcert=" + sb("proxy-ca.crt") +
      " dbname=plugindb user=pgproxy_pool password=scram-pw "
      "connect_timeout=20 gssencmode=disable";
  {
    // The server runs the query with the plugin's comment in front.
    Conn c(conninfo);
    EXPECT_EQ(c.one("select current_query()"),
              "/* user=pgproxy_pool client=127.0.0.1 */ select current_query()");
    EXPECT_EQ(c.prepare("q", "select current_query() as q, $1::int as n"), "PGRES_COMMAND_OK");
    EXPECT_EQ(c.exec("q", {"7"}),
              "/* user=pgproxy_pool client=127.0.0.1 */ select current_query() as q, $1::int as "
              "n|7");
  }
  {
    // Comments, case and spacing do not hide a statement from the list; the session ends with
    // the plugin's SQLSTATE, and nothing reached the server.
    // (libpq reports the FATAL's text, then the closed connection: its SQLSTATE is read in
    // psql's verbose form.)
    auto pr = run({"psql", "-X", "-v", "VERBOSITY=verbose", "-c",
                   "DROP /* sneaky */  Database plugindb", conninfo});
    EXPECT_NE(pr.output.find("FATAL:  42501: pgproxy: this statement is not allowed through the "
                             "proxy (drop database)"),
              std::string::npos)
        << pr.output;
  }
  {
    // The extended protocol: refused at Parse (libpq's PQprepare).
    Conn c(conninfo);
    EXPECT_NE(c.prepare("a", "alter system set work_mem = '1MB'"), "PGRES_COMMAND_OK");
    EXPECT_NE(std::string(PQerrorMessage(c.c)).find("not allowed through the proxy (alter system)"),
              std::string::npos)
        << PQerrorMessage(c.c);
  }
  {
    // A query on_query cannot see whole (over 1 MiB) is refused, not passed unchecked.
    Conn c(conninfo);
    EXPECT_NE(c.one("select '" + std::string((1 << 20) + 10, 'x') + "'"), "x");
    EXPECT_NE(std::string(PQerrorMessage(c.c)).find("longer than 1 MiB"), std::string::npos)
        << PQerrorMessage(c.c);
  }
  EXPECT_EQ(queryHost1("select count(*) from pg_database where datname = 'plugindb'"), "1");
  EXPECT_EQ(counter(admin, "denylist_refused"), 2);
  EXPECT_NE(proxy.log().find("plugin query_denylist.lua: refused for pgproxy_pool"),
            std::string::npos)
      << proxy.log();
}

TEST(Plugins, EveryHookAnswerAndSafetyNet) {
  std::string dir = tempDir("pgproxy-plugin-hooks");
  std::string file = dir + "/hooks.lua";
  writeFile(file, R"LUA(
function on_startup(info, params)
  local app = params.application_name
  if app == "loop" then while true do end end
  if app == "hog" then
    local t = {}
    for i = 1, 1000 do t[i] = string.rep("x", 1000000) .. i end
  end
  if app == "raise" then error("boom") end
  if app == "deny" then return { deny = "go away, " .. info.user, sqlstate = "28P01" } end
  if app == "rename" then return { params = { application_name = "renamed" } } end
  if app == "elsewhere" then return { route = "other.example.com" } end
  if app == "nowhere" then return { route = "missing.example.com" } end
  return nil
end
function on_disconnect(info, stats)
  if stats.outcome == "ok" and stats.bytes_up > 0 then pgproxy.counter("closed_ok", 1) end
end
)LUA");
  int admin = freePort();
  Proxy proxy("plugins:\n  - {file: " + file +
              ", max_instructions: 100000, max_memory: 8MB}\n"
              "admin: {listen: \"127.0.0.1:" +
              std::to_string(admin) +
              "\"}\n"
              "default: plain.example.com\n"
              "mappings:\n"
              "  - {external: plain.example.com, internal: 127.0.0.1, port: {P1}}\n"
              "  - {external: other.example.com, internal: 127.0.0.1, port: {P2}}\n");
  auto workers = childrenOf(proxy.pid());
  auto as = [&](const std::string& app) {
    return psql(proxy.plain() + " application_name=" + app,
                "select current_setting('application_name') || ' ' || "
                "current_setting('port')");
  };
  for (const char* app : {"loop", "hog", "raise", "nowhere"}) {
    auto r = as(app);
    EXPECT_NE(r.exit_code, 0) << app;
    EXPECT_NE(r.output.find("plugin hooks.lua failed; see pgproxy's log"), std::string::npos)
        << app << ": " << r.output;
  }
  auto r = as("deny");
  EXPECT_NE(r.output.find("go away, postgres"), std::string::npos) << r.output;
  EXPECT_EQ(as("rename").output, "renamed " + std::to_string(sandbox().port1) + "\n");
  EXPECT_EQ(as("elsewhere").output, "elsewhere " + std::to_string(sandbox().port2) + "\n");
  EXPECT_EQ(as("plain").output, "plain " + std::to_string(sandbox().port1) + "\n");
  // The workers that ran the failing hooks still serve: none was replaced.
  EXPECT_EQ(childrenOf(proxy.pid()), workers);
  std::string log = proxy.log();
  EXPECT_NE(log.find("instruction budget (max_instructions) exceeded"), std::string::npos) << log;
  EXPECT_NE(log.find("memory cap (max_memory) reached"), std::string::npos) << log;
  EXPECT_NE(log.find("boom"), std::string::npos) << log;
  EXPECT_NE(log.find("which is no mapping's external name"), std::string::npos) << log;
  EXPECT_TRUE(eventually([&] { return counter(admin, "closed_ok") == 3; }))
      << counter(admin, "closed_ok");
  // A plugin that does not compile is the configuration's error: pgproxy -t says where.
  writeFile(dir + "/bad.lua", "function on_connect(info) return end end\n");
  writeFile(dir + "/bad.yaml", "plugins: [{file: " + dir +
                                   "/bad.lua}]\nmappings: [{external: a.example.com, internal: "
                                   "127.0.0.1}]\n");
  auto t = run({proxyBinary(), "-t", "-c", dir + "/bad.yaml"});
  EXPECT_NE(t.exit_code, 0);
  EXPECT_NE(t.output.find("bad.lua"), std::string::npos) << t.output;
  run({"rm", "-rf", dir});
}

}  // namespace
}  // namespace pgproxy::it
