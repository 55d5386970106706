// Connection pooling (issue 15): clients authenticated by pgproxy share a few server connections
// per (backend, user, database), with real PostgreSQL 15 behind and real clients (libpq, psql,
// pgbench) in front. pg_stat_activity on the backend is the witness of what the pool does.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

// Certificates of the sandbox, and SQL on host1's cluster.
const auto& sb = sandboxFile;
const auto& query = queryHost1;

// The pool's user (SCRAM on the backend, shared with pool_clients_test.cc) and its database,
// with pgbench's tables.
struct PoolUser {
  std::string users;
};

const PoolUser& poolUser() {
  static const PoolUser u = [] {
    const std::string& users = poolRoleAuthFile();
    query("drop database if exists pooldb");
    query("create database pooldb owner pgproxy_pool");
    auto init = run({"pgbench", "-i", "-q", "-s", "1",
                     "host=127.0.0.1 port=" + std::to_string(sandbox().port1) +
                         " user=pgproxy_pool password=scram-pw dbname=pooldb"});
    EXPECT_EQ(init.exit_code, 0) << init.output;
    return PoolUser{users};
  }();
  return u;
}

// A second user of pooldb, whose secret PostgreSQL stores as an md5 hash; its auth file line.
std::string md5UserLine() {
  static const std::string line = [] {
    query("drop role if exists pgproxy_pool_md5");
    query("set password_encryption = 'md5'; create role pgproxy_pool_md5 login password 'md5-pw'");
    return "\"pgproxy_pool_md5\" \"" +
           query("select rolpassword from pg_authid where rolname = 'pgproxy_pool_md5'") + "\"\n";
  }();
  return line;
}

std::string config(const std::string& pool) {
  return "auth: {type: scram-sha-256, file: " + poolUser().users +
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
         "    pool: " +
         pool + "\n";
}

std::string viaProxy(const Proxy& proxy, const std::string& extra = "") {
  return "host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=verify-full sslrootcert=" + sb("proxy-ca.crt") +
         " dbname=pooldb user=pgproxy_pool password=scram-pw connect_timeout=20 "
         "gssencmode=disable " +
         extra;
}

int serverSessionsOf(const std::string& user) {
  return std::stoi(query("select count(*) from pg_stat_activity where usename = '" + user + "'"));
}

// Server sessions of the pool's user on the backend, as PostgreSQL counts them.
int serverSessions() {
  return std::stoi(
      query("select count(*) from pg_stat_activity where usename = 'pgproxy_pool' and "
            "datname = 'pooldb'"));
}

std::string one(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  std::string out;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
    out = PQgetvalue(r, 0, 0);
  } else if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
    // The connection's message holds a FATAL that came before the close, which the result's
    // may not.
    out = std::string("error: ") + PQresultErrorMessage(r) + PQerrorMessage(c);
  }
  PQclear(r);
  return out;
}

TEST(Pool, TransactionModeHoldsTheCapAcrossWorkers) {
  poolUser();
  Proxy proxy(config("{mode: transaction, size: 10}"));
  ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 2; }));
  std::atomic<bool> done{false};
  std::atomic<int> most{0};
  std::thread watcher([&] {
    while (!done) {
      int n = serverSessions();
      int seen = most.load();
      while (n > seen && !most.compare_exchange_weak(seen, n)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  auto bench = run({"pgbench", "-n", "-S", "-c", "200", "-j", "2", "-t", "20", viaProxy(proxy)},
                   std::chrono::seconds(300));
  done = true;
  watcher.join();
  EXPECT_EQ(bench.exit_code, 0) << bench.output << proxy.log();
  EXPECT_NE(bench.output.find("number of failed transactions: 0"), std::string::npos)
      << bench.output;
  EXPECT_NE(bench.output.find("processed: 4000/4000"), std::string::npos) << bench.output;
  EXPECT_GT(most.load(), 0);
  EXPECT_LE(most.load(), 10) << "more server sessions than the pool's size";
  // The servers stay for the next clients.
  EXPECT_GT(serverSessions(), 0);
  EXPECT_LE(serverSessions(), 10);
}

TEST(Pool, SessionStateFollowsItsClientFromServerToServer) {
  poolUser();
  Proxy proxy(config("{mode: transaction, size: 1}"), 1);
  PGconn* a = PQconnectdb(viaProxy(proxy, "application_name=client_a").c_str());
  PGconn* b = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(a), CONNECTION_OK) << PQerrorMessage(a) << proxy.log();
  ASSERT_EQ(PQstatus(b), CONNECTION_OK) << PQerrorMessage(b);
  const std::string base = one(b, "show timezone");
  ASSERT_NE(base, "America/New_York");
  EXPECT_EQ(one(a, "set timezone = 'America/New_York'"), "");
  // One server for both: B's query runs on the server A just changed, which gets B's state back
  // first; then A's state again for A.
  EXPECT_EQ(one(b, "show timezone"), base);
  EXPECT_EQ(one(a, "show timezone"), "America/New_York");
  EXPECT_EQ(one(b, "show application_name"), "");
  EXPECT_EQ(one(a, "show application_name"), "client_a");
  EXPECT_EQ(std::string(PQparameterStatus(a, "TimeZone")), "America/New_York");
  // Inside a transaction the server is A's alone; B waits for it.
  EXPECT_EQ(one(a, "begin"), "");
  EXPECT_EQ(one(a, "set local timezone = 'Asia/Tokyo'"), "");
  std::string pid_a = one(a, "select pg_backend_pid()::text");
  EXPECT_EQ(PQsendQuery(b, "select pg_backend_pid()::text"), 1);
  EXPECT_EQ(one(a, "commit"), "");
  PGresult* r = PQgetResult(b);
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  EXPECT_EQ(std::string(PQgetvalue(r, 0, 0)), pid_a);  // the same server, after A's commit
  PQclear(r);
  while ((r = PQgetResult(b)) != nullptr) {
    PQclear(r);
  }
  EXPECT_EQ(one(a, "show timezone"), "America/New_York");
  EXPECT_EQ(serverSessions(), 1);
  PQfinish(a);
  PQfinish(b);
}

TEST(Pool, LoginsRefusedInPostgresWords) {
  poolUser();
  Proxy proxy(config("{mode: transaction, size: 2}"));
  auto wrong =
      psql(viaProxy(proxy).replace(viaProxy(proxy).find("password=scram-pw"), 17, "password=nope"),
           "select 1");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.output.find("password authentication failed for user \"pgproxy_pool\""),
            std::string::npos)
      << wrong.output;
  auto ok = psql(viaProxy(proxy, "channel_binding=require"), "select current_user");
  EXPECT_EQ(ok.output, "pgproxy_pool\n") << ok.output << proxy.log();
  // The backend refuses a database that does not exist: the client reads PostgreSQL's words.
  auto nodb =
      psql(viaProxy(proxy).replace(viaProxy(proxy).find("dbname=pooldb"), 13, "dbname=nope"),
           "select 1");
  EXPECT_NE(nodb.output.find("database \"nope\" does not exist"), std::string::npos) << nodb.output;
}

TEST(Pool, CancelReachesTheServerOfTheClientOnly) {
  poolUser();
  Proxy proxy(config("{mode: transaction, size: 2}"));
  // expectCancelWorks runs pg_sleep on host1 and cancels it with the key pgproxy handed out.
  std::string conninfo = viaProxy(proxy);
  PGconn* conn = PQconnectdb(conninfo.c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  ASSERT_EQ(PQsendQuery(conn, "select pg_sleep(30)"), 1);
  ASSERT_TRUE(eventually([] {
    return query(
               "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and "
               "state = 'active'") == "1";
  }));
  PGcancel* cancel = PQgetCancel(conn);
  char err[256];
  EXPECT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  PGresult* res = PQgetResult(conn);
  ASSERT_NE(res, nullptr);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014") << PQresultErrorMessage(res);
  PQclear(res);
  while ((res = PQgetResult(conn)) != nullptr) {
    PQclear(res);
  }
  // Between transactions the client has no server: its cancel must not hit another client's.
  PGconn* other = PQconnectdb(conninfo.c_str());
  ASSERT_EQ(PQstatus(other), CONNECTION_OK);
  ASSERT_EQ(PQsendQuery(other, "select pg_sleep(2)"), 1);
  ASSERT_TRUE(eventually([] {
    return query(
               "select count(*) from pg_stat_activity where query = 'select pg_sleep(2)' and "
               "state = 'active'") == "1";
  }));
  EXPECT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  res = PQgetResult(other);
  EXPECT_EQ(PQresultStatus(res), PGRES_TUPLES_OK) << PQresultErrorMessage(res);
  PQclear(res);
  while ((res = PQgetResult(other)) != nullptr) {
    PQclear(res);
  }
  PQfreeCancel(cancel);
  PQfinish(other);
  PQfinish(conn);
}

TEST(Pool, StatementModeRefusesTransactionsAndSessionModeResets) {
  poolUser();
  {
    Proxy proxy(config("{mode: statement, size: 1}"), 1);
    PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
    EXPECT_EQ(one(c, "select 41 + 1"), "42");
    std::string err = one(c, "begin");
    EXPECT_NE(err.find("transaction blocks are not allowed in statement pooling mode"),
              std::string::npos)
        << err;
    PQfinish(c);
    // The server that was left in a transaction is not given to anyone: a new one serves.
    PGconn* d = PQconnectdb(viaProxy(proxy).c_str());
    ASSERT_EQ(PQstatus(d), CONNECTION_OK) << PQerrorMessage(d);
    EXPECT_EQ(one(d, "select 1"), "1");
    PQfinish(d);
  }
  Proxy proxy(config("{mode: session, size: 1}"), 1);
  PGconn* a = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(a), CONNECTION_OK) << PQerrorMessage(a);
  EXPECT_EQ(one(a, "create temp table mine (x int)"), "");
  std::string pid = one(a, "select pg_backend_pid()::text");
  PQfinish(a);
  // The same server, after DISCARD ALL: the temporary table is gone.
  PGconn* b = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(b), CONNECTION_OK) << PQerrorMessage(b);
  EXPECT_EQ(one(b, "select pg_backend_pid()::text"), pid);
  EXPECT_EQ(one(b, "select count(*)::text from pg_tables where tablename = 'mine'"), "0");
  PQfinish(b);
}

// pgbench inserts one ledger row per transaction through a transaction pool while five reloads
// change the pool's size and the number of workers: the old generation keeps serving its clients
// until they leave, and nothing is lost.
TEST(Pool, NothingLostUnderReloads) {
  poolUser();
  const std::string owner = "host=127.0.0.1 port=" + std::to_string(sandbox().port1) +
                            " user=pgproxy_pool password=scram-pw dbname=pooldb";
  ASSERT_EQ(psql(owner,
                 "drop table if exists ledger; create table ledger(id bigserial primary key, "
                 "c int, t timestamptz default now())")
                .exit_code,
            0);
  Proxy proxy(config("{mode: transaction, size: 4}"));
  std::string dir = tempDir("pgproxy-pool-ledger");
  writeFile(dir + "/ledger.sql", "INSERT INTO ledger(c) VALUES (:client_id);\n");
  const int clients = 8, perClient = 300;
  CommandResult bench;
  std::thread runner([&] {
    bench = run({"pgbench", "-n", "-c", std::to_string(clients), "-j", "2", "-t",
                 std::to_string(perClient), "-f", dir + "/ledger.sql", viaProxy(proxy)},
                std::chrono::seconds(600));
  });
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    proxy.rewrite(config(i % 2 ? "{mode: transaction, size: 4}" : "{mode: transaction, size: 3}"),
                  i % 2 ? 2 : 1);
    auto r = proxy.signal("reload");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  runner.join();
  const int n = clients * perClient;
  EXPECT_EQ(bench.exit_code, 0) << bench.output << proxy.log();
  EXPECT_NE(bench.output.find("processed: " + std::to_string(n) + "/" + std::to_string(n)),
            std::string::npos)
      << bench.output;
  EXPECT_NE(bench.output.find("number of failed transactions: 0"), std::string::npos);
  EXPECT_EQ(psql(owner, "select count(*) from ledger").output, std::to_string(n) + "\n");
  EXPECT_EQ(proxy.log().find("reload failed"), std::string::npos);
  // Old generations give their servers back once their clients have left: the cap holds.
  EXPECT_TRUE(eventually([] { return serverSessions() <= 4; })) << serverSessions();
  run({"rm", "-rf", dir});
}

// A worker killed with servers checked out: its clients fail, the master folds its share of the
// caps out of shared memory, and the new worker's clients get the whole pool again.
TEST(Pool, KilledWorkerGivesItsCapsBack) {
  poolUser();
  Proxy proxy(config("{mode: transaction, size: 2, query_wait_timeout: 10s}"), 1);
  ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 1; }));
  pid_t worker = childrenOf(proxy.pid())[0];
  PGconn* a = PQconnectdb(viaProxy(proxy).c_str());
  PGconn* b = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(a), CONNECTION_OK) << PQerrorMessage(a) << proxy.log();
  ASSERT_EQ(PQstatus(b), CONNECTION_OK) << PQerrorMessage(b);
  EXPECT_EQ(one(a, "begin"), "");
  EXPECT_EQ(one(b, "begin"), "");
  EXPECT_EQ(one(a, "select 1"), "1");
  EXPECT_EQ(one(b, "select 1"), "1");
  ASSERT_EQ(kill(worker, SIGKILL), 0);
  EXPECT_NE(one(a, "select 1"), "1");  // its clients fail
  PQfinish(a);
  PQfinish(b);
  ASSERT_TRUE(eventually([&] {
    auto kids = childrenOf(proxy.pid());
    return kids.size() == 1 && kids[0] != worker;
  }));
  // Both servers at once again, through the new worker: the dead one's counts are gone.
  PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
  PGconn* d = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
  ASSERT_EQ(PQstatus(d), CONNECTION_OK) << PQerrorMessage(d);
  EXPECT_EQ(one(c, "begin"), "");
  EXPECT_EQ(one(d, "begin"), "");
  EXPECT_EQ(one(c, "select 2"), "2");
  EXPECT_EQ(one(d, "select 3"), "3") << proxy.log();
  PQfinish(c);
  PQfinish(d);
}

// The waits and the server's life: a client that cannot get a server in query_wait_timeout is
// told so; an idle server past server_idle_timeout is closed; a server that died while idle (an
// administrator's pg_terminate_backend) is noticed and replaced, and no client sees it.
TEST(Pool, WaitTimeoutIdleTimeoutAndDeadServers) {
  poolUser();
  Proxy proxy(config("{mode: transaction, size: 1, query_wait_timeout: 1s, "
                     "server_idle_timeout: 2s}"),
              1);
  PGconn* a = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(a), CONNECTION_OK) << PQerrorMessage(a) << proxy.log();
  EXPECT_EQ(one(a, "begin"), "");
  PGconn* b = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(b), CONNECTION_OK) << PQerrorMessage(b);
  std::string waited = one(b, "select 1");
  EXPECT_NE(waited.find("query_wait_timeout"), std::string::npos) << waited;
  PQfinish(b);
  EXPECT_EQ(one(a, "commit"), "");
  // The server idles in the pool; killed from outside, it is replaced for the next query.
  std::string pid = one(a, "select pg_backend_pid()::text");
  EXPECT_EQ(query("select pg_terminate_backend(" + pid + ")::text"), "true");
  EXPECT_TRUE(eventually([&] { return proxy.log().find("while idle") != std::string::npos; }))
      << proxy.log();
  EXPECT_EQ(one(a, "select 2"), "2");
  EXPECT_NE(one(a, "select pg_backend_pid()::text"), pid);
  // Unused for server_idle_timeout: closed (the client stays connected).
  EXPECT_TRUE(eventually([] { return serverSessions() == 0; })) << serverSessions();
  EXPECT_EQ(one(a, "select 3"), "3");
  PQfinish(a);
}

// md5: the client proves the password against PostgreSQL's md5 hash, and pgproxy answers the
// backend's md5 challenge from the same hash.
TEST(Pool, Md5ClientsShareServers) {
  poolUser();
  std::string dir = tempDir("pgproxy-pool-md5");
  writeFile(dir + "/users.txt", md5UserLine());
  const std::string cfg = config("{mode: transaction, size: 1}");
  Proxy proxy(
      "auth: {type: md5, file: " + dir + "/users.txt}\n" + cfg.substr(cfg.find("mappings:")), 1);
  std::string login = viaProxy(proxy);
  login.replace(login.find("user=pgproxy_pool password=scram-pw"), 35,
                "user=pgproxy_pool_md5 password=md5-pw");
  for (int i = 0; i < 3; ++i) {
    auto r = psql(login, "select current_user || ' ' || pg_backend_pid()");
    EXPECT_EQ(r.exit_code, 0) << r.output << proxy.log();
    EXPECT_EQ(r.output.rfind("pgproxy_pool_md5 ", 0), 0u) << r.output;
  }
  EXPECT_EQ(serverSessionsOf("pgproxy_pool_md5"), 1);
  auto wrong = psql(login.replace(login.find("password=md5-pw"), 15, "password=nope"), "select 1");
  EXPECT_NE(wrong.output.find("password authentication failed for user \"pgproxy_pool_md5\""),
            std::string::npos)
      << wrong.output;
  run({"rm", "-rf", dir});
}

// Two workers, one server for the pool: whichever worker holds it idle gives it up when the
// other's client waits, so every client is served well before query_wait_timeout. (The kernel
// spreads the connections over the workers; with twelve clients both get some.)
TEST(Pool, AnIdleServerOfAnotherWorkerServesAWaitingClient) {
  poolUser();
  Proxy proxy(config("{mode: transaction, size: 1, query_wait_timeout: 5s}"), 2);
  ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 2; }));
  std::vector<PGconn*> conns;
  for (int i = 0; i < 12; ++i) {
    PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
    conns.push_back(c);
    EXPECT_EQ(one(c, "select " + std::to_string(i)), std::to_string(i)) << proxy.log();
  }
  for (int round = 0; round < 2; ++round) {
    for (std::size_t i = 0; i < conns.size(); ++i) {
      EXPECT_EQ(one(conns[i], "select " + std::to_string(i)), std::to_string(i));
    }
  }
  // A server given up has left pgproxy's count at once; its backend process exits just after.
  EXPECT_TRUE(eventually([] { return serverSessions() == 1; })) << serverSessions();
  for (PGconn* c : conns) {
    PQfinish(c);
  }
}

// reserve_size: a client that has waited reserve_timeout gets a server beyond size.
// max_db_connections: two users' pools of one database share its cap.
TEST(Pool, ReserveAfterTimeoutAndDatabaseCap) {
  poolUser();
  {
    Proxy proxy(config("{mode: transaction, size: 1, reserve_size: 1, reserve_timeout: 300ms}"), 1);
    PGconn* a = PQconnectdb(viaProxy(proxy).c_str());
    PGconn* b = PQconnectdb(viaProxy(proxy).c_str());
    ASSERT_EQ(PQstatus(a), CONNECTION_OK) << PQerrorMessage(a) << proxy.log();
    ASSERT_EQ(PQstatus(b), CONNECTION_OK) << PQerrorMessage(b);
    EXPECT_EQ(one(a, "begin"), "");
    EXPECT_EQ(one(a, "select 1"), "1");
    // A still holds the pool's one server: B is served by the reserve.
    EXPECT_EQ(one(b, "select 2"), "2") << proxy.log();
    EXPECT_EQ(serverSessions(), 2);
    EXPECT_EQ(one(a, "commit"), "");
    PQfinish(a);
    PQfinish(b);
  }
  // Both users of pooldb: SCRAM for one, md5 for the other, one cap for the database.
  std::string dir = tempDir("pgproxy-pool-db");
  writeFile(dir + "/users.txt", readFile(poolUser().users) + md5UserLine());
  const std::string cfg = config("{mode: transaction, size: 5, max_db_connections: 1}");
  const int admin = freePort();
  Proxy proxy("auth: {type: md5, file: " + dir + "/users.txt}\nadmin: {listen: \"127.0.0.1:" +
                  std::to_string(admin) + "\"}\n" + cfg.substr(cfg.find("mappings:")),
              1);
  std::string md5 = viaProxy(proxy);
  md5.replace(md5.find("user=pgproxy_pool password=scram-pw"), 35,
              "user=pgproxy_pool_md5 password=md5-pw");
  PGconn* a = PQconnectdb(viaProxy(proxy).c_str());
  PGconn* b = PQconnectdb(md5.c_str());
  ASSERT_EQ(PQstatus(a), CONNECTION_OK) << PQerrorMessage(a) << proxy.log();
  ASSERT_EQ(PQstatus(b), CONNECTION_OK) << PQerrorMessage(b) << proxy.log();
  EXPECT_EQ(one(a, "begin"), "");
  EXPECT_EQ(one(a, "select 1"), "1");
  ASSERT_EQ(PQsendQuery(b, "select current_user"), 1);
  // B waits: the database's one connection is A's. It is B's once A's transaction ends (A's
  // idle server is given up for B's pool).
  ASSERT_TRUE(eventually([&] {
    return httpGet(admin, "/metrics")
               .body.find(
                   "pgproxy_pool_clients_waiting{mapping=\"host1.example.com\",backend="
                   "\"127.0.0.1:" +
                   std::to_string(sandbox().port1) +
                   "\",user=\"pgproxy_pool_md5\",database=\"pooldb\"} 1") != std::string::npos;
  })) << httpGet(admin, "/metrics").body;
  EXPECT_EQ(std::stoi(query("select count(*) from pg_stat_activity where datname = 'pooldb' and "
                            "usename like 'pgproxy_pool%'")),
            1);
  EXPECT_EQ(one(a, "commit"), "");
  PGresult* r = PQgetResult(b);
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r) << proxy.log();
  EXPECT_EQ(std::string(PQgetvalue(r, 0, 0)), "pgproxy_pool_md5");
  PQclear(r);
  while ((r = PQgetResult(b)) != nullptr) {
    PQclear(r);
  }
  PQfinish(a);
  PQfinish(b);
  run({"rm", "-rf", dir});
}

// 10,000 plaintext clients, logged in and idle, over one server connection: what each costs
// pgproxy is its session (the client's state is what differs from its pool's), not a backend.
TEST(Pool, TenThousandIdleClientsOverOneServer) {
  ScopedAsanOption no_quarantine("quarantine_size_mb=0");
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  const int clients = 10'000;
  ASSERT_GE(rl.rlim_cur, static_cast<rlim_t>(clients + 200)) << "fd limit too low";
  query("drop role if exists pgproxy_idle");
  query("create role pgproxy_idle login");  // trusted by the sandbox's catch-all hba line
  const int admin = freePort();
  // The only mapping is the default: plaintext clients reach it, and its pool serves them.
  Proxy proxy("auth: {type: trust}\nadmin: {listen: \"127.0.0.1:" + std::to_string(admin) +
                  "\"}\nmappings:\n  - {external: idle.example.com, internal: 127.0.0.1, port: "
                  "{P1}, pool: {mode: transaction, size: 1}}\n",
              1);
  const std::string startup = startupPacket({{"user", "pgproxy_idle"}, {"database", "postgres"}});
  auto login = [&](int fd) {
    std::string got;
    return write(fd, startup.data(), startup.size()) == static_cast<ssize_t>(startup.size()) &&
           readUntilReady(fd, &got);
  };
  // The pool's first client brings up its server; the baseline is taken with it.
  int first = connectTcp(proxy.port());
  ASSERT_TRUE(login(first)) << proxy.log();
  const long rss_before = proxyRss(proxy);
  const int fds_before = proxyFds(proxy);
  std::vector<int> fds;
  fds.reserve(clients);
  for (int i = 0; i < clients; ++i) {
    int fd = connectTcp(proxy.port());
    ASSERT_GE(fd, 0) << i;
    ASSERT_TRUE(login(fd)) << "client " << i << "\n" << proxy.log().substr(0, 4000);
    fds.push_back(fd);
  }
  const long rss_after = proxyRss(proxy);
  const double per_client = (rss_after - rss_before) * 1024.0 / clients;
  RecordProperty("rss_bytes_per_idle_pooled_client", std::to_string(per_client));
  std::printf("RSS per idle pooled client: %.0f bytes\n", per_client);
#ifdef __SANITIZE_ADDRESS__
  // ASan's redzones and shadow memory multiply every allocation; the goal is the plain build's.
  const double limit = 8192;
#else
  const double limit = 2048;  // issue 15: at most 2 KiB per idle pooled client
#endif
  EXPECT_LE(per_client, limit) << rss_before << " KiB before, " << rss_after << " KiB after";
  EXPECT_EQ(serverSessionsOf("pgproxy_idle"), 1);
  // The pool's metrics say the same: one server, and no client waiting.
  auto metrics = httpGet(admin, "/metrics");
  EXPECT_NE(metrics.body.find("pgproxy_pool_server_connections{mapping=\"idle.example.com\","),
            std::string::npos)
      << metrics.body.substr(0, 3000);
  EXPECT_NE(metrics.body.find("user=\"pgproxy_idle\",database=\"postgres\",state=\"idle\"} 1"),
            std::string::npos)
      << metrics.body.substr(metrics.body.find("pgproxy_pool"), 3000);
  // One of them still works.
  const std::string q = std::string("Q\0\0\0\x0dselect 1\0", 14);
  ASSERT_EQ(write(fds[clients / 2], q.data(), q.size()), static_cast<ssize_t>(q.size()));
  std::string got;
  EXPECT_TRUE(readUntilReady(fds[clients / 2], &got));
  EXPECT_NE(got.find(std::string("D\0\0\0\x0b\0\x01\0\0\0\x01"
                                 "1",
                                 12)),
            std::string::npos);
  for (int fd : fds) {
    close(fd);
  }
  close(first);
  EXPECT_TRUE(eventually([&] { return proxyFds(proxy) <= fds_before - 1; }))
      << proxyFds(proxy) << " fds, " << fds_before << " with one client";
}

}  // namespace
}  // namespace pgproxy::it
