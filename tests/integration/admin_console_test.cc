// The psql admin console (issue 17): the virtual database "pgproxy" on the data listener, with
// real psql and libpq clients, its rows checked against what PostgreSQL itself counts
// (pg_stat_activity) and its commands against where new sessions go.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <arpa/inet.h>
#include <signal.h>
#include <sys/socket.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

const auto& sb = sandboxFile;

// A console user: the pool role's auth file (SCRAM) names pgproxy_pool.
std::string consoleConfig(const std::string& mappings, const std::string& extra = "") {
  return "auth: {type: scram-sha-256, file: " + poolRoleDatabase("consoledb") +
         "}\n"
         "admin:\n  users: [pgproxy_pool]\n" +
         extra + "mappings:\n" + mappings;  // `extra`: more admin keys
}

std::string pooledMapping() {
  return "  - external: host1.example.com\n"
         "    internal: 127.0.0.1\n"
         "    port: {P1}\n"
         "    tls: terminate\n"
         "    certificate: " +
         sb("proxy-host1.crt") + "\n    key: " + sb("proxy-host1.key") +
         "\n"
         "    backend_tls: disable\n"
         "    pool: {mode: session, size: 10}\n";
}

// The console over the plaintext data listener (no mapping routes plaintext clients here: the
// console does not need one).
std::string plainConsole(const Proxy& proxy, const std::string& user = "pgproxy_pool",
                         const std::string& password = "scram-pw") {
  return "host=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=disable dbname=pgproxy user=" + user + " password=" + password +
         " connect_timeout=20 gssencmode=disable";
}

// The console through a terminated mapping's TLS name.
std::string tlsConsole(const Proxy& proxy) {
  return "host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=verify-full sslrootcert=" + sb("proxy-ca.crt") +
         " dbname=pgproxy user=pgproxy_pool password=scram-pw connect_timeout=20 "
         "gssencmode=disable";
}

std::string pooled(const Proxy& proxy) {
  return "host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=verify-full sslrootcert=" + sb("proxy-ca.crt") +
         " dbname=consoledb user=pgproxy_pool password=scram-pw connect_timeout=20 "
         "gssencmode=disable";
}

// Rows of a console query as psql prints them unaligned (-A -t): field separator '|'.
std::vector<std::vector<std::string>> rows(const std::string& conninfo, const std::string& sql) {
  CommandResult r = psql(conninfo, sql);
  EXPECT_EQ(r.exit_code, 0) << sql << ": " << r.output;
  std::vector<std::vector<std::string>> out;
  std::size_t at = 0;
  while (at < r.output.size()) {
    std::size_t end = r.output.find('\n', at);
    std::string line = r.output.substr(at, end == std::string::npos ? end : end - at);
    at = end == std::string::npos ? r.output.size() : end + 1;
    if (line.empty()) {
      continue;
    }
    std::vector<std::string> fields;
    std::size_t f = 0;
    for (;;) {
      std::size_t bar = line.find('|', f);
      fields.push_back(line.substr(f, bar == std::string::npos ? bar : bar - f));
      if (bar == std::string::npos) {
        break;
      }
      f = bar + 1;
    }
    out.push_back(std::move(fields));
  }
  return out;
}

// Why a connection was refused ("connected" when it was not).
std::string refusal(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  std::string out = PQstatus(c) == CONNECTION_OK ? "connected" : PQerrorMessage(c);
  PQfinish(c);
  return out;
}

int serverSessions() {
  return std::stoi(
      queryHost1("select count(*) from pg_stat_activity where usename = 'pgproxy_pool' and "
                 "datname = 'consoledb'"));
}

TEST(AdminConsole, ShowPoolsCountsWhatPostgresSees) {
  Proxy proxy(consoleConfig(pooledMapping()));
  std::vector<std::unique_ptr<Conn>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<Conn>(pooled(proxy)));
    ASSERT_EQ(clients.back()->one("select 1"), "1");
  }
  // Session mode: each client holds a server; PostgreSQL sees exactly those.
  ASSERT_TRUE(eventually([&] { return serverSessions() == 3; }));
  auto pools = rows(plainConsole(proxy),
                    "SHOW POOLS");  // mapping|backend|database|user|cl_waiting|cl_pinned|sv_...
  ASSERT_EQ(pools.size(), 1u);
  ASSERT_EQ(pools[0].size(), 11u);
  EXPECT_EQ(pools[0][0], "host1.example.com");
  EXPECT_EQ(pools[0][2], "consoledb");
  EXPECT_EQ(pools[0][3], "pgproxy_pool");
  EXPECT_EQ(std::stoi(pools[0][6]), serverSessions());  // sv_active
  EXPECT_EQ(pools[0][10], "session");
  // The same through the mapping's own TLS name, and the other views answer too.
  auto mappings = rows(tlsConsole(proxy), "show mappings");
  ASSERT_EQ(mappings.size(), 1u);
  EXPECT_EQ(mappings[0][0], "host1.example.com");
  EXPECT_EQ(mappings[0][2], "session");
  EXPECT_EQ(mappings[0][8], "3");  // current_connections: the three pooled clients
  auto backends = rows(plainConsole(proxy), "SHOW BACKENDS");
  ASSERT_EQ(backends.size(), 1u);
  EXPECT_EQ(backends[0][1], "127.0.0.1");
  EXPECT_EQ(backends[0][2], std::to_string(sandbox().port1));
  EXPECT_EQ(backends[0][6], "f");  // not drained
  for (const char* topic : {"STATS", "LIMITS", "GENERATIONS", "CONFIG", "VERSION"}) {
    EXPECT_FALSE(rows(plainConsole(proxy), std::string("SHOW ") + topic).empty()) << topic;
  }
  auto stats = rows(plainConsole(proxy), "SHOW STATS");
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_GE(std::stoi(stats[0][1]), 3);  // total_xact_count: the three selects at least
  clients.clear();
  ASSERT_TRUE(eventually([&] {
    auto p = rows(plainConsole(proxy), "SHOW POOLS");
    return !p.empty() && p[0][6] == "0";
  }));
}

TEST(AdminConsole, RefusesWhoIsNotAnAdminAndWhatIsNotACommand) {
  Proxy proxy(consoleConfig(pooledMapping()));
  std::string wrong = refusal(plainConsole(proxy, "pgproxy_pool", "not-the-password"));
  EXPECT_NE(wrong.find("password authentication failed"), std::string::npos) << wrong;
  std::string stranger = refusal(plainConsole(proxy, "postgres", "x"));
  EXPECT_NE(stranger.find("is not allowed (admin.users)"), std::string::npos) << stranger;

  Conn admin(plainConsole(proxy));
  ASSERT_EQ(PQstatus(admin.c), CONNECTION_OK) << PQerrorMessage(admin.c);
  PGresult* r = PQexec(admin.c, "select 1");
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42601");
  PQclear(r);
  // The extended protocol (what PQexecParams sends) is refused, and the session goes on.
  r = PQexecParams(admin.c, "SHOW VERSION", 0, nullptr, nullptr, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(r, PG_DIAG_SQLSTATE), "0A000");
  PQclear(r);
  EXPECT_NE(admin.one("SHOW VERSION").find("pgproxy"), std::string::npos);
  // The console is no ordinary database: pooled clients of other databases are unaffected.
  Conn app(pooled(proxy));
  EXPECT_EQ(app.one("select current_database()"), "consoledb");
}

TEST(AdminConsole, DisableRefusesNewClientsUntilEnable) {
  Proxy proxy(consoleConfig(pooledMapping()));
  Conn before(pooled(proxy));
  ASSERT_EQ(before.one("select 1"), "1");
  Conn admin(plainConsole(proxy));
  ASSERT_EQ(admin.cmd("DISABLE host1.example.com"), "DISABLE");
  std::string refused = refusal(pooled(proxy));
  EXPECT_NE(refused.find("is disabled"), std::string::npos) << refused;
  EXPECT_EQ(before.one("select 2"), "2");  // sessions already in go on
  auto m = rows(plainConsole(proxy), "SHOW MAPPINGS");
  EXPECT_EQ(m[0][4], "t");
  // The switch is in shared memory: it holds over a reload's new workers.
  std::string gen = rows(plainConsole(proxy), "SHOW GENERATIONS")[0][0];
  ASSERT_EQ(admin.cmd("RELOAD"), "RELOAD");
  ASSERT_TRUE(eventually([&] {
    auto g = rows(plainConsole(proxy), "SHOW GENERATIONS");
    return !g.empty() && g[0][0] != gen;
  }));
  EXPECT_NE(refusal(pooled(proxy)).find("is disabled"), std::string::npos);
  ASSERT_EQ(admin.cmd("ENABLE host1.example.com"), "ENABLE");
  Conn after(pooled(proxy));
  EXPECT_EQ(after.one("select 3"), "3");
  EXPECT_EQ(admin.cmd("DISABLE nosuch.example.com"), "ERROR:42704");
}

// Which cluster new plaintext sessions reach, over `n` of them.
std::map<std::string, int> spread(const Proxy& proxy, int n) {
  std::map<std::string, int> out;
  for (int i = 0; i < n; ++i) {
    Conn c(proxy.plain());
    out[PQstatus(c.c) == CONNECTION_OK ? c.one("show cluster_name") : PQerrorMessage(c.c)] += 1;
  }
  return out;
}

TEST(AdminConsole, DrainBackendMovesNewSessionsAndUndrainBringsThemBack) {
  // No auth block: the console trusts this host's connections only.
  Proxy proxy(
      "admin:\n  users: [postgres]\n"
      "default: db.example.com\nmappings:\n  - external: db.example.com\n    backends:\n"
      "      - {host: 127.0.0.1, port: {P1}}\n      - {host: 127.0.0.1, port: {P2}}\n");
  std::string console = "host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                        " sslmode=disable dbname=pgproxy user=postgres connect_timeout=20";
  auto both = spread(proxy, 20);
  EXPECT_GT(both["host1"], 0);
  EXPECT_GT(both["host2"], 0);
  EXPECT_EQ(both["host1"] + both["host2"], 20);
  Conn held(proxy.plain());  // a session on a backend about to be drained finishes its work
  std::string held_on = held.one("show cluster_name");
  std::string drained_port = std::to_string(held_on == "host1" ? sandbox().port1 : sandbox().port2);
  Conn admin(console);
  ASSERT_EQ(PQstatus(admin.c), CONNECTION_OK) << PQerrorMessage(admin.c);
  ASSERT_EQ(admin.cmd("DRAIN BACKEND 127.0.0.1:" + drained_port), "DRAIN BACKEND");
  auto after = spread(proxy, 20);
  EXPECT_EQ(after[held_on], 0);
  EXPECT_EQ(after[held_on == "host1" ? "host2" : "host1"], 20);
  EXPECT_EQ(held.one("select 7"), "7");
  bool listed = false;
  for (const auto& b : rows(console, "SHOW BACKENDS")) {
    listed |= b[2] == drained_port && b[6] == "t";
  }
  EXPECT_TRUE(listed);
  ASSERT_EQ(admin.cmd("UNDRAIN BACKEND 127.0.0.1:" + drained_port), "UNDRAIN BACKEND");
  auto back = spread(proxy, 20);
  EXPECT_GT(back["host1"], 0);
  EXPECT_GT(back["host2"], 0);
  // With every backend drained, new clients are told why.
  ASSERT_EQ(admin.cmd("DRAIN BACKEND 127.0.0.1:" + std::to_string(sandbox().port1)),
            "DRAIN BACKEND");
  ASSERT_EQ(admin.cmd("DRAIN BACKEND 127.0.0.1:" + std::to_string(sandbox().port2)),
            "DRAIN BACKEND");
  std::string none = refusal(proxy.plain());
  EXPECT_NE(none.find("every backend is drained"), std::string::npos) << none;
}

std::string pooledMappingIn(const std::string& mode) {
  std::string m = pooledMapping();
  return m.replace(m.find("mode: session"), 13, "mode: " + mode);
}

// Rows of SHOW CLIENTS whose column `col` is `value`.
int clientsWith(const std::string& console, std::size_t col, const std::string& value) {
  int n = 0;
  for (const auto& row : rows(console, "SHOW CLIENTS")) {
    n += row.size() > col && row[col] == value ? 1 : 0;
  }
  return n;
}

TEST(AdminConsole, ShowClientsAndServersListEveryWorkersSessions) {
  Proxy proxy(consoleConfig(pooledMapping()));
  std::vector<std::unique_ptr<Conn>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<Conn>(pooled(proxy)));
    ASSERT_EQ(clients.back()->one("select 1"), "1");
  }
  // id|worker|mapping|user|database|state|addr|port|tls|connect_time|backend|server|...
  auto list = rows(plainConsole(proxy), "SHOW CLIENTS");
  int pooled_rows = 0, console_rows = 0;
  std::set<std::string> workers;
  for (const auto& row : list) {
    ASSERT_EQ(row.size(), 14u);
    if (row[5] == "console") {
      ++console_rows;
      continue;
    }
    ++pooled_rows;
    workers.insert(row[1]);
    EXPECT_EQ(row[2], "host1.example.com");
    EXPECT_EQ(row[3], "pgproxy_pool");
    EXPECT_EQ(row[4], "consoledb");
    EXPECT_EQ(row[5], "active");  // session mode: each holds its server
    EXPECT_EQ(row[6], "127.0.0.1");
    EXPECT_EQ(row[8], "terminate");
    EXPECT_FALSE(row[11].empty());  // the server it holds
  }
  EXPECT_EQ(pooled_rows, 4);
  EXPECT_EQ(console_rows, 1);  // the console's own session
  // id|worker|mapping|backend|user|database|state|client|connect_time|close_needed
  auto servers = rows(plainConsole(proxy), "SHOW SERVERS");
  int active = 0;
  for (const auto& row : servers) {
    ASSERT_EQ(row.size(), 10u);
    active += row[6] == "active" ? 1 : 0;
    EXPECT_EQ(row[3], "127.0.0.1:" + std::to_string(sandbox().port1));
  }
  EXPECT_EQ(active, 4);
  EXPECT_EQ(static_cast<int>(servers.size()), serverSessions());
}

TEST(AdminConsole, KillAndKillClientCloseSessionsWithPostgresWords) {
  Proxy proxy(consoleConfig(pooledMappingIn("transaction")));
  std::vector<std::unique_ptr<Conn>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<Conn>(pooled(proxy)));
    ASSERT_EQ(clients.back()->one("select 1"), "1");
  }
  Conn admin(plainConsole(proxy));
  // One by its id first.
  std::string id;
  for (const auto& row : rows(plainConsole(proxy), "SHOW CLIENTS")) {
    if (row[5] != "console") {
      id = row[0];
      break;
    }
  }
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(admin.cmd("KILL_CLIENT " + id), "KILL_CLIENT");
  EXPECT_EQ(admin.cmd("KILL_CLIENT 999"), "ERROR:42704");
  ASSERT_TRUE(eventually([&] { return clientsWith(plainConsole(proxy), 5, "idle") == 2; }));
  // Then the whole mapping: idle pooled clients are told why, as PostgreSQL would.
  EXPECT_EQ(admin.cmd("KILL host1.example.com"), "KILL");
  int told = 0;
  for (auto& c : clients) {
    PGresult* r = PQexec(c->c, "select 2");
    std::string err = PQerrorMessage(c->c);
    told += err.find("administrator command") != std::string::npos ? 1 : 0;
    EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
  }
  EXPECT_EQ(told, 3);
  EXPECT_EQ(clientsWith(plainConsole(proxy), 2, "host1.example.com"), 0);
  EXPECT_EQ(admin.cmd("KILL nosuch.example.com"), "ERROR:42704");
}

TEST(AdminConsole, ReconnectReplacesTheServerConnections) {
  Proxy proxy(consoleConfig(pooledMappingIn("transaction")));
  Conn app(pooled(proxy));
  std::string before = app.one("select pg_backend_pid()");
  ASSERT_EQ(app.one("select pg_backend_pid()"), before);  // the pool keeps its server
  Conn admin(plainConsole(proxy));
  EXPECT_EQ(admin.cmd("RECONNECT host1.example.com"), "RECONNECT");
  std::string after = app.one("select pg_backend_pid()");
  EXPECT_NE(after, before);
  EXPECT_EQ(queryHost1("select count(*) from pg_stat_activity where pid = " + before), "0");
}

// Resumes a stopped worker whatever the test's outcome.
struct Stopped {
  pid_t pid;
  ~Stopped() { kill(pid, SIGCONT); }
};

TEST(AdminConsole, AStoppedWorkerIsNamedNotWaitedFor) {
  int http_port = freePort();
  std::string token_dir = tempDir("pgproxy-console-token");
  writeFile(token_dir + "/token", "tok\n");
  Proxy proxy(consoleConfig(pooledMapping(), "  listen: \"127.0.0.1:" + std::to_string(http_port) +
                                                 "\"\n  token_file: " + token_dir + "/token\n"));
  ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() >= 2; }));
  // The console session first: the worker it is on answers; the other one is then stopped.
  Conn admin(plainConsole(proxy));
  ASSERT_EQ(PQstatus(admin.c), CONNECTION_OK);
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  getsockname(PQsocket(admin.c), reinterpret_cast<sockaddr*>(&local), &len);
  const std::string port = std::to_string(ntohs(local.sin_port));
  pid_t own = 0;
  PGresult* r = PQexec(admin.c, "SHOW CLIENTS");
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK);
  for (int i = 0; i < PQntuples(r); ++i) {
    if (PQgetvalue(r, i, 7) == port) {  // the console's own row: its client port is ours
      own = std::stoi(PQgetvalue(r, i, 1));
    }
  }
  PQclear(r);
  ASSERT_NE(own, 0);
  pid_t other = 0;
  for (pid_t p : childrenOf(proxy.pid())) {
    if (p != own) {
      other = p;
    }
  }
  ASSERT_NE(other, 0);
  ASSERT_EQ(kill(other, SIGSTOP), 0);
  Stopped resume{other};
  std::string notice;
  PQsetNoticeProcessor(
      admin.c, [](void* arg, const char* m) { *static_cast<std::string*>(arg) += m; }, &notice);
  r = PQexec(admin.c, "SHOW CLIENTS");
  EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  EXPECT_NE(notice.find("worker " + std::to_string(other)), std::string::npos) << notice;
  EXPECT_NE(notice.find("before the deadline"), std::string::npos) << notice;
  // The API the same way: its answer lists the missing worker.
  auto api = httpGet(http_port, "/api/v1/clients", "Authorization: Bearer tok\r\n");
  EXPECT_EQ(api.status, 200) << api.body;
  EXPECT_NE(api.body.find("\"missing\":[{\"slot\":"), std::string::npos) << api.body;
  EXPECT_NE(api.body.find("\"pid\":" + std::to_string(other)), std::string::npos) << api.body;
}

TEST(AdminConsole, ShowGenerationsIsTheReloadHistory) {
  Proxy proxy(consoleConfig(pooledMapping()));
  // generation|state|workers|config_hash|started|serving_since|ended|detail
  ASSERT_TRUE(eventually([&] {
    auto g = rows(plainConsole(proxy), "SHOW GENERATIONS");
    return g.size() == 1 && g[0][0] == "1" && g[0][1] == "serving" && g[0][2] == "2";
  }));
  // A configuration that is not taken: a row of its own, saying why; generation 1 serves on.
  std::string good = readFile(proxy.configPath());
  writeFile(proxy.configPath(), good + "nonsense_key: 1\n");
  // RELOAD signals the master as the file is (pgproxy -s reload would check it first). psql
  // leaves at once: a console session open on generation 1 would keep it draining.
  rows(plainConsole(proxy), "RELOAD");
  ASSERT_TRUE(eventually([&] {
    auto g = rows(plainConsole(proxy), "SHOW GENERATIONS");
    return g.size() == 2 && g[0][1] == "refused";
  }));
  auto refused = rows(plainConsole(proxy), "SHOW GENERATIONS");
  EXPECT_EQ(refused[0][0], "");  // NULL: no generation was made
  EXPECT_NE(refused[0][7].find("nonsense_key"), std::string::npos) << refused[0][7];
  EXPECT_EQ(refused[1][1], "serving");
  // A good one: generation 2 serves, 1 drains and ends once its workers have left.
  writeFile(proxy.configPath(), good);
  rows(plainConsole(proxy), "RELOAD");
  ASSERT_TRUE(eventually([&] {
    auto g = rows(plainConsole(proxy), "SHOW GENERATIONS");
    return g.size() == 3 && g[0][0] == "2" && g[0][1] == "serving" && g[2][0] == "1" &&
           g[2][1] == "ended" && g[2][2] == "0" && !g[2][6].empty();
  })) << proxy.log();
}

TEST(AdminConsole, AConsolePortOfItsOwn) {
  int console_port = freePort();
  Proxy proxy(
      "admin:\n  users: [postgres]\n  console: \"127.0.0.1:" + std::to_string(console_port) +
      "\"\ndefault: db.example.com\nmappings:\n  - external: db.example.com\n"
      "    backends: [{host: 127.0.0.1, port: {P1}}]\n");
  // Whatever database it names, and with libpq's default sslmode=prefer (answered 'N').
  std::string console = "host=127.0.0.1 port=" + std::to_string(console_port) +
                        " dbname=postgres user=postgres connect_timeout=20";
  Conn c(console);
  EXPECT_NE(c.one("SHOW VERSION").find("pgproxy"), std::string::npos);
  EXPECT_EQ(c.one("select 1"), "ERROR:42601");  // the console, not PostgreSQL
  // The data port still reaches PostgreSQL for the same database name.
  Conn data(proxy.plain());
  EXPECT_EQ(data.one("select 1"), "1");
  // And both survive a reload.
  std::string gen = rows(console, "SHOW GENERATIONS")[0][0];
  rows(console, "RELOAD");
  ASSERT_TRUE(eventually([&] {
    auto g = rows(console, "SHOW GENERATIONS");
    return !g.empty() && g[0][0] != gen && g[0][1] == "serving";
  }));
  Conn after(console);
  EXPECT_NE(after.one("SHOW VERSION").find("pgproxy"), std::string::npos);
  std::string stranger = refusal(console + " user=nobody");
  EXPECT_NE(stranger.find("is not allowed (admin.users)"), std::string::npos) << stranger;
}

TEST(AdminConsole, PauseWaitsForTransactionsAndHoldsNewOnesUntilResume) {
  Proxy proxy(consoleConfig(pooledMappingIn("transaction")));
  Conn inside(pooled(proxy));
  ASSERT_EQ(inside.cmd("BEGIN"), "BEGIN");
  ASSERT_EQ(inside.one("select 1"), "1");  // holds its server until COMMIT
  Conn pauser(plainConsole(proxy));
  ASSERT_EQ(PQsendQuery(pauser.c, "PAUSE host1.example.com"), 1);
  // The switch is on at once (a positive signal), while PAUSE itself waits for the transaction.
  ASSERT_TRUE(eventually([&] { return rows(plainConsole(proxy), "SHOW MAPPINGS")[0][5] == "t"; }));
  // New clients log in during the pause, also on a worker whose pool has no server yet (it
  // opens one to learn the parameters), and their queries wait.
  std::vector<std::unique_ptr<Conn>> later;
  for (int i = 0; i < 4; ++i) {
    later.push_back(std::make_unique<Conn>(pooled(proxy)));
    ASSERT_EQ(PQstatus(later.back()->c), CONNECTION_OK);
    ASSERT_EQ(PQsendQuery(later.back()->c, ("select " + std::to_string(10 + i)).c_str()), 1);
  }
  ASSERT_TRUE(eventually([&] { return rows(plainConsole(proxy), "SHOW POOLS")[0][4] == "4"; }));
  ASSERT_EQ(PQconsumeInput(pauser.c), 1);
  EXPECT_EQ(PQisBusy(pauser.c), 1);  // the open transaction holds a server: PAUSE cannot be done
  ASSERT_EQ(inside.cmd("COMMIT"), "COMMIT");
  PGresult* r = PQgetResult(pauser.c);  // PAUSE returns once the transaction has ended
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK);
  EXPECT_STREQ(PQcmdStatus(r), "PAUSE");
  PQclear(r);
  while ((r = PQgetResult(pauser.c))) {
    PQclear(r);
  }
  EXPECT_EQ(rows(plainConsole(proxy), "SHOW POOLS")[0][4], "4");  // still held after the commit
  Conn admin(plainConsole(proxy));
  EXPECT_EQ(admin.cmd("RESUME host1.example.com"), "RESUME");
  for (int i = 0; i < 4; ++i) {
    r = PQgetResult(later[i]->c);
    ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK);
    EXPECT_EQ(std::string(PQgetvalue(r, 0, 0)), std::to_string(10 + i));
    PQclear(r);
    while ((r = PQgetResult(later[i]->c))) {
      PQclear(r);
    }
  }
  EXPECT_EQ(rows(plainConsole(proxy), "SHOW MAPPINGS")[0][5], "f");
  // A mapping without a pool cannot be paused; DISABLE is what it takes.
  EXPECT_EQ(admin.cmd("PAUSE nosuch.example.com"), "ERROR:42704");
}

}  // namespace
}  // namespace pgproxy::it
