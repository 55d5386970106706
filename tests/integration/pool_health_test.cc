// The health and the life of pooled server connections (issue 15): the check query before an
// idle server is lent, servers that died while idle, server_idle_timeout, server_lifetime,
// min_size, and a backend marked down by health checks. Real PostgreSQL 15 behind;
// pg_stat_activity on the backend is the witness of what the pool opened and closed.
//
// The database is this file's own (poolhealth, owned by the harness's pool role), so these tests
// and the other pool files' run in one binary in any order.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <set>
#include <string>
#include <thread>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const auto& query = queryHost1;

// This file's database, created once per binary, with a table the check query writes to: the
// auth file of the pool's role.
const std::string& authFile() {
  static const std::string users = [] {
    const std::string& path = poolRoleAuthFile();
    query("drop database if exists poolhealth");
    query("create database poolhealth owner pgproxy_pool");
    auto r =
        psql(direct(sandbox().port1) + " user=pgproxy_pool password=scram-pw dbname=poolhealth",
             "create table checks (at timestamptz default now())");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return path;
  }();
  return users;
}

// The only mapping (so plaintext clients reach it), pooled with `pool`, in front of `port` (the
// cluster of host1 unless a test puts something between).
std::string config(const std::string& pool, const std::string& port = "{P1}",
                   const std::string& extra = "") {
  return "auth: {type: scram-sha-256, file: " + authFile() +
         "}\n"
         "mappings:\n"
         "  - external: poolhealth.example.com\n"
         "    internal: 127.0.0.1\n"
         "    port: " +
         port + "\n" + extra + "    pool: " + pool + "\n";
}

std::string viaProxy(const Proxy& proxy) {
  return "host=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=disable dbname=poolhealth user=pgproxy_pool password=scram-pw "
         "connect_timeout=20 gssencmode=disable";
}

// The pool's server sessions on the backend, as PostgreSQL lists them.
std::set<std::string> serverPids() {
  std::string out = query(
      "select coalesce(string_agg(pid::text, ' ' order by pid), '') from pg_stat_activity "
      "where usename = 'pgproxy_pool' and datname = 'poolhealth'");
  std::set<std::string> pids;
  for (std::size_t at = 0; at < out.size();) {
    std::size_t end = out.find(' ', at);
    if (end == std::string::npos) {
      end = out.size();
    }
    pids.insert(out.substr(at, end - at));
    at = end + 1;
  }
  return pids;
}

std::string one(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  std::string out;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
    out = PQgetvalue(r, 0, 0);
  } else if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
    out = std::string("error: ") + PQresultErrorMessage(r) + PQerrorMessage(c);
  }
  PQclear(r);
  return out;
}

// The reply to a query sent earlier with PQsendQuery: its one value, or the error.
std::string reply(PGconn* c) {
  std::string out;
  bool first = true;
  while (PGresult* r = PQgetResult(c)) {
    if (first) {
      out = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0
                ? std::string(PQgetvalue(r, 0, 0))
                : std::string("error: ") + PQresultErrorMessage(r) + PQerrorMessage(c);
      first = false;
    }
    PQclear(r);
  }
  return out;
}

bool gone(const std::string& pid) {
  return query("select count(*) from pg_stat_activity where pid = " + pid) == "0";
}

// The server of a client idles in the pool; an administrator terminates its backend; the client's
// next query runs, on a new server, with no error (the check query, and the close of a server
// that speaks while idle, both see to it).
TEST(PoolHealth, ServerTerminatedWhileIdleIsReplacedWithoutAnError) {
  Proxy proxy(config("{mode: transaction, size: 2, server_check_delay: 100ms}"), 1);
  PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
  const std::string pid = one(c, "select pg_backend_pid()::text");
  ASSERT_EQ(serverPids(), std::set<std::string>{pid});
  EXPECT_EQ(query("select pg_terminate_backend(" + pid + ")::text"), "true");
  ASSERT_TRUE(eventually([&] { return gone(pid); }));
  const std::string next = one(c, "select pg_backend_pid()::text");
  EXPECT_EQ(next.find("error"), std::string::npos) << next << proxy.log();
  EXPECT_NE(next, pid);
  EXPECT_EQ(serverPids(), std::set<std::string>{next});
  PQfinish(c);
}

// The check query runs on a server idle longer than server_check_delay, before the client's
// query: the client's own query sees the row the check inserted.
TEST(PoolHealth, CheckQueryRunsBeforeAnIdleServerIsLent) {
  Proxy proxy(config("{mode: transaction, size: 1, server_check_delay: 100ms, "
                     "server_check_query: \"insert into checks default values\"}"),
              1);
  PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
  EXPECT_EQ(one(c, "delete from checks"), "");
  // A fresh login is not checked; nor is a server idle for less than the delay.
  const std::string before = one(c, "select count(*)::text from checks");
  ASSERT_TRUE(before == "0" || before == "1") << before;
  // Idle for longer than server_check_delay (a precondition, not the assertion).
  std::this_thread::sleep_for(milliseconds(300));
  const std::string after = one(c, "select count(*)::text from checks");
  EXPECT_EQ(std::stoi(after), std::stoi(before) + 1) << after << proxy.log();
  PQfinish(c);
}

// A server that fails its check is closed, and the client it was checked for gets another one
// without an error: a check that dies (it terminates its own backend), and one that errs.
TEST(PoolHealth, ServerFailingItsCheckIsReplacedWithoutAnError) {
  struct Case {
    const char* check;
    const char* closed;  // why the log says server 1 was closed
  };
  for (const Case& k : {Case{"select pg_terminate_backend(pg_backend_pid())",
                             "server connection 1 closed: the server closed the connection"},
                        Case{"select 1/0",
                             "server connection 1 closed: server_check_query "
                             "failed: division by zero"}}) {
    SCOPED_TRACE(k.check);
    Proxy proxy(config(std::string("{mode: transaction, size: 1, server_check_delay: 100ms, "
                                   "server_check_query: \"") +
                       k.check + "\"}"),
                1);
    PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
    const std::string pid = one(c, "select pg_backend_pid()::text");  // a fresh login: no check
    std::this_thread::sleep_for(milliseconds(300));  // idle past server_check_delay
    const std::string next = one(c, "select pg_backend_pid()::text");
    EXPECT_EQ(next.find("error"), std::string::npos) << next << proxy.log();
    EXPECT_NE(next, pid);
    EXPECT_TRUE(eventually([&] { return gone(pid); }));
    EXPECT_NE(proxy.log().find(k.closed), std::string::npos) << proxy.log();
    PQfinish(c);
  }
}

// A server that died while idle, before pgproxy's loop saw it go: the worker is stopped while the
// client's query arrives and the backend is terminated, so that on waking it reads the client's
// query first and finds the dead server idle in its pool. With a check (server_check_delay 0) or
// without one (server_check_delay 1h), the client gets a new server and no error: nothing of the
// client's had been sent.
TEST(PoolHealth, ServerThatDiedUnseenWhileIdleIsNotLent) {
  for (const char* delay : {"0", "1h"}) {
    SCOPED_TRACE(std::string("server_check_delay ") + delay);
    Proxy proxy(
        config(std::string("{mode: transaction, size: 2, server_check_delay: ") + delay + "}"), 1);
    ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 1; }));
    const pid_t worker = childrenOf(proxy.pid())[0];
    PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
    const std::string pid = one(c, "select pg_backend_pid()::text");
    ASSERT_EQ(kill(worker, SIGSTOP), 0);
    ASSERT_EQ(PQsendQuery(c, "select pg_backend_pid()::text"), 1);
    ASSERT_EQ(PQflush(c), 0);
    EXPECT_EQ(query("select pg_terminate_backend(" + pid + ")::text"), "true");
    bool died = eventually([&] { return gone(pid); });
    ASSERT_EQ(kill(worker, SIGCONT), 0);
    ASSERT_TRUE(died);
    const std::string next = reply(c);
    EXPECT_EQ(next.find("error"), std::string::npos) << next << proxy.log();
    EXPECT_NE(next, pid);
    EXPECT_EQ(one(c, "select 1"), "1");
    // Closed on the server's last words, read before it was lent.
    EXPECT_NE(proxy.log().find("server connection 1 closed: the server sent data while idle: "
                               "terminating connection due to administrator command"),
              std::string::npos)
        << proxy.log();
    PQfinish(c);
  }
}

// A server lost while pgproxy sets a client's state on it (the sync query, before anything of the
// client's is sent) is replaced for that client, which sees no error. The backend is a second
// pgproxy in front of host1's cluster: its worker is stopped once the pool's server has been lent
// (the sync query waits unanswered), then killed; its master starts a new worker for the next
// server.
TEST(PoolHealth, ServerLostWhileTakingTheClientsStateIsReplaced) {
  authFile();
  const int front_port = freePort();
  Proxy front("mappings:\n  - {external: x.example.com, internal: 127.0.0.1, port: {P1}}\n", 1, "",
              front_port);
  ASSERT_TRUE(eventually([&] { return childrenOf(front.pid()).size() == 1; }));
  const pid_t front_worker = childrenOf(front.pid())[0];
  const int admin = freePort();
  Proxy proxy("admin: {listen: \"127.0.0.1:" + std::to_string(admin) + "\"}\n" +
                  config("{mode: transaction, size: 1}", std::to_string(front_port)),
              1);
  PGconn* a = PQconnectdb((viaProxy(proxy) + " application_name=a").c_str());
  PGconn* b = PQconnectdb((viaProxy(proxy) + " application_name=b").c_str());
  ASSERT_EQ(PQstatus(a), CONNECTION_OK) << PQerrorMessage(a) << proxy.log();
  ASSERT_EQ(PQstatus(b), CONNECTION_OK) << PQerrorMessage(b) << proxy.log();
  const std::string pid = one(a, "select pg_backend_pid()::text");  // the server is in A's state
  ASSERT_EQ(kill(front_worker, SIGSTOP), 0);
  ASSERT_EQ(PQsendQuery(b, "select current_setting('application_name')"), 1);
  // B has the server (pgproxy's query setting B's application_name waits for an answer).
  bool lent = eventually([&] {
    return httpGet(admin, "/metrics").body.find("database=\"poolhealth\",state=\"active\"} 1") !=
           std::string::npos;
  });
  kill(front_worker, SIGKILL);
  ASSERT_TRUE(lent) << httpGet(admin, "/metrics").body;
  EXPECT_EQ(reply(b), "b") << proxy.log();
  EXPECT_NE(proxy.log().find("lost before the link was up"), std::string::npos) << proxy.log();
  EXPECT_EQ(one(a, "select current_setting('application_name')"), "a");
  EXPECT_TRUE(eventually([&] { return gone(pid); }));
  PQfinish(a);
  PQfinish(b);
}

// server_idle_timeout closes an idle server; min_size keeps that many open and warm all the same
// (the idle timeout closes servers down to min_size, not below).
TEST(PoolHealth, IdleTimeoutClosesServersDownToMinSize) {
  {
    Proxy proxy(config("{mode: transaction, size: 2, server_idle_timeout: 200ms}"), 1);
    PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
    const std::string pid = one(c, "select pg_backend_pid()::text");
    EXPECT_EQ(serverPids(), std::set<std::string>{pid});
    EXPECT_TRUE(eventually([] { return serverPids().empty(); }, seconds(10))) << proxy.log();
    EXPECT_NE(proxy.log().find("closed: server_idle_timeout reached"), std::string::npos);
    // The client stays, and gets a new server when it wants one.
    EXPECT_EQ(one(c, "select 1"), "1");
    PQfinish(c);
  }
  Proxy proxy(config("{mode: transaction, size: 4, min_size: 2, server_idle_timeout: 200ms}"), 1);
  PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
  EXPECT_EQ(one(c, "select 1"), "1");
  PQfinish(c);  // min_size is kept with no client at all
  ASSERT_TRUE(eventually([] { return serverPids().size() == 2; }, seconds(10))) << proxy.log();
  // Warm means the same two, through several rounds of the pool's maintenance (once a second)
  // past their idle timeout: none closed and reopened.
  const std::set<std::string> warm = serverPids();
  for (int i = 0; i < 25; ++i) {
    std::this_thread::sleep_for(milliseconds(100));
    ASSERT_EQ(serverPids(), warm) << proxy.log();
  }
  EXPECT_EQ(proxy.log().find("server_idle_timeout reached"), std::string::npos) << proxy.log();
}

// server_lifetime: a server older than that is closed when idle, never while its client is in a
// transaction; after the commit it is closed and the next transaction gets a new one.
TEST(PoolHealth, LifetimeEndsServersOnlyBetweenTransactions) {
  Proxy proxy(config("{mode: transaction, size: 2, server_lifetime: 300ms}"), 1);
  PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
  // Idle in the pool past its lifetime: closed by the pool's maintenance.
  const std::string idle = one(c, "select pg_backend_pid()::text");
  EXPECT_TRUE(eventually([&] { return gone(idle); }, seconds(10))) << proxy.log();
  // In a transaction across its lifetime and more than one maintenance round: kept.
  EXPECT_EQ(one(c, "begin"), "");
  const std::string held = one(c, "select pg_backend_pid()::text");
  EXPECT_NE(held, idle);
  EXPECT_EQ(one(c, "select pg_sleep(1.5)"), "");
  EXPECT_EQ(one(c, "select pg_backend_pid()::text"), held) << proxy.log();
  EXPECT_EQ(one(c, "commit"), "");
  // Released past its lifetime: closed at once, and the next transaction has a new server.
  EXPECT_TRUE(eventually([&] { return gone(held); }, seconds(10))) << proxy.log();
  const std::string next = one(c, "select pg_backend_pid()::text");
  EXPECT_EQ(next.find("error"), std::string::npos) << next << proxy.log();
  EXPECT_NE(next, held);
  EXPECT_NE(proxy.log().find("closed: server_lifetime reached"), std::string::npos);
  PQfinish(c);
}

// min_size: once the pool has a client (whose login gives pgproxy the credentials), it opens
// min_size servers and keeps them; a server lost while idle is replaced.
TEST(PoolHealth, MinSizeOpensAndKeepsServers) {
  Proxy proxy(config("{mode: transaction, size: 5, min_size: 3}"), 1);
  PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
  EXPECT_EQ(one(c, "select 1"), "1");
  ASSERT_TRUE(eventually([] { return serverPids().size() == 3; }, seconds(15))) << proxy.log();
  const std::string victim = *serverPids().begin();
  EXPECT_EQ(query("select pg_terminate_backend(" + victim + ")::text"), "true");
  EXPECT_TRUE(eventually(
      [&] {
        auto pids = serverPids();
        return pids.size() == 3 && !pids.count(victim);
      },
      seconds(15)))
      << proxy.log();
  EXPECT_EQ(one(c, "select 2"), "2");
  EXPECT_LE(serverPids().size(), 3u);
  PQfinish(c);
}

// A backend that health checks mark down takes its idle pool servers with it. The backend is a
// second pgproxy in front of host1's cluster: when it quits, it stops listening (the checks fail)
// but keeps the sessions it has (a long shutdown_timeout), so only the pool can close its server.
TEST(PoolHealth, BackendMarkedDownDropsItsIdleServers) {
  authFile();
  const int front_port = freePort();
  auto front = std::make_unique<Proxy>(
      "shutdown_timeout: 2m\nmappings:\n  - {external: x.example.com, internal: 127.0.0.1, port: "
      "{P1}}\n",
      1, "", front_port);
  Proxy proxy(
      config("{mode: transaction, size: 2, server_idle_timeout: off}", std::to_string(front_port),
             "    health_check: {interval: 100ms, timeout: 100ms, fall: 1, rise: 1}\n"),
      1);
  PGconn* c = PQconnectdb(viaProxy(proxy).c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c) << proxy.log();
  const std::string pid = one(c, "select pg_backend_pid()::text");
  ASSERT_EQ(serverPids(), std::set<std::string>{pid});
  auto quit = front->signal("quit");
  ASSERT_EQ(quit.exit_code, 0) << quit.output;
  EXPECT_TRUE(eventually([&] { return gone(pid); }, seconds(15))) << proxy.log() << front->log();
  EXPECT_NE(proxy.log().find("closed: the backend is marked down"), std::string::npos)
      << proxy.log();
  // With its last session gone, the front pgproxy finishes quitting.
  EXPECT_GE(front->waitExit(seconds(20)), 0) << front->log();
  front.reset();
  // Back on the same port: up again after a successful check, and the pool serves from it.
  front = std::make_unique<Proxy>(
      "mappings:\n  - {external: x.example.com, internal: 127.0.0.1, port: {P1}}\n", 1, "",
      front_port);
  EXPECT_TRUE(eventually([&] { return proxy.log().find("is up again") != std::string::npos; }))
      << proxy.log();
  const std::string next = one(c, "select pg_backend_pid()::text");
  EXPECT_EQ(next.find("error"), std::string::npos) << next << proxy.log();
  EXPECT_EQ(serverPids(), std::set<std::string>{next});
  PQfinish(c);
}

}  // namespace
}  // namespace pgproxy::it
