// Clients through a transaction pool (issue 15), each over TLS (verify-full against pgproxy's CA)
// and in plaintext (a pooled mapping that is the only one is the default mapping, so plaintext
// clients reach it). pg_stat_activity on the backend is the witness that no more server sessions
// than the pool's size served them.
//
// The database is this file's own (poolclients, owned by the harness's pool role), so these tests
// and pool_test.cc's run in one binary in any order.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "harness.h"

namespace pgproxy::it {
namespace {

// This file's database, created once per binary: the auth file of the pool's role.
const std::string& authFile() {
  static const std::string users = [] {
    const std::string& path = poolRoleAuthFile();
    queryHost1("drop database if exists poolclients");
    queryHost1("create database poolclients owner pgproxy_pool");
    return path;
  }();
  return users;
}

// One terminated mapping with a transaction pool of `size` servers (for all workers together).
std::string config(int size) {
  return "auth: {type: scram-sha-256, file: " + authFile() +
         "}\n"
         "mappings:\n"
         "  - external: host1.example.com\n"
         "    internal: 127.0.0.1\n"
         "    port: {P1}\n"
         "    tls: terminate\n"
         "    certificate: " +
         sandboxFile("proxy-host1.crt") + "\n    key: " + sandboxFile("proxy-host1.key") +
         "\n"
         "    backend_tls: disable\n"
         "    pool: {mode: transaction, size: " +
         std::to_string(size) + "}\n";
}

// How a client reaches pgproxy: TLS verified against pgproxy's CA for host1.example.com (which
// the test machine does not resolve: libpq gets hostaddr=, the other clients the address), or
// plaintext.
struct Transport {
  const char* name;
  bool tls;
};
constexpr Transport kTransports[] = {{"tls", true}, {"plaintext", false}};

// libpq's conninfo.
std::string conninfo(const Proxy& proxy, const Transport& t) {
  std::string c = "port=" + std::to_string(proxy.port()) +
                  " dbname=poolclients user=pgproxy_pool password=scram-pw connect_timeout=20 "
                  "gssencmode=disable ";
  if (t.tls) {
    return c + "host=host1.example.com hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=" +
           sandboxFile("proxy-ca.crt");
  }
  return c + "host=127.0.0.1 sslmode=disable";
}

const char* kSessionsSql =
    "select count(*) from pg_stat_activity where usename = 'pgproxy_pool' and "
    "datname = 'poolclients'";

// Server sessions of the pool's role in poolclients, as PostgreSQL counts them.
int serverSessions() {
  return std::stoi(queryHost1(kSessionsSql));
}

// The most server sessions pg_stat_activity showed while it lived (sampled every 10 ms on a
// superuser connection of its own, which the count leaves out).
class SessionPeak {
 public:
  SessionPeak() : conn_(PQconnectdb(direct(sandbox().port1).c_str())) {
    EXPECT_EQ(PQstatus(conn_), CONNECTION_OK) << PQerrorMessage(conn_);
    thread_ = std::thread([this] {
      while (!done_) {
        PGresult* r = PQexec(conn_, kSessionsSql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
          int n = std::atoi(PQgetvalue(r, 0, 0));
          peak_ = std::max(peak_.load(), n);
          ++samples_;
        }
        PQclear(r);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  ~SessionPeak() {
    stop();
    PQfinish(conn_);
  }
  SessionPeak(const SessionPeak&) = delete;
  SessionPeak& operator=(const SessionPeak&) = delete;
  int stop() {
    done_ = true;
    if (thread_.joinable()) {
      thread_.join();
    }
    return peak_;
  }
  int samples() const { return samples_; }

 private:
  PGconn* conn_;
  std::atomic<bool> done_{false};
  std::atomic<int> peak_{0};
  std::atomic<int> samples_{0};
  std::thread thread_;
};

// A test starts with no server session of an earlier test's pgproxy left on the backend (a closed
// connection's backend exits a moment after pgproxy has gone).
void expectNoServers() {
  ASSERT_TRUE(eventually([] { return serverSessions() == 0; }))
      << serverSessions() << " server sessions left from an earlier test";
}

// After a client ran: the pool's servers are still there, never more than its size, and the
// peak pg_stat_activity showed while the client ran was within the size too.
void expectWithinPool(SessionPeak& peak, int size) {
  int most = peak.stop();
  EXPECT_GT(peak.samples(), 0);
  int now = serverSessions();
  EXPECT_GE(now, 1) << "the pool kept no server";
  EXPECT_LE(now, size);
  EXPECT_LE(most, size) << "more server sessions than the pool's size";
}

// libpq's pipeline mode with a flush request: the client reads each query's results before it
// sends the Sync, so the server answers the Sync with a ReadyForQuery alone. pgproxy once handed
// the client the empty rest of that read before the ReadyForQuery, and over TLS SSL_write refuses
// a length of 0, which read as the client being gone: the session was closed (psycopg's pipelines
// and any error reply, which PostgreSQL flushes ahead of its ReadyForQuery, met it too).
TEST(PoolClients, LibpqPipelineSyncAnsweredAlone) {
  authFile();
  expectNoServers();
  constexpr int kSize = 2;
  Proxy proxy(config(kSize));
  SessionPeak peak;
  for (const Transport& t : kTransports) {
    SCOPED_TRACE(t.name);
    PGconn* c = PQconnectdb(conninfo(proxy, t).c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
    ASSERT_EQ(PQenterPipelineMode(c), 1);
    for (int i = 0; i < 5; ++i) {
      std::string value = std::to_string(i);
      const char* values[] = {value.c_str()};
      ASSERT_EQ(PQsendQueryParams(c, "select $1::int * 2", 1, nullptr, values, nullptr, nullptr, 0),
                1);
      ASSERT_EQ(PQsendFlushRequest(c), 1);
      ASSERT_EQ(PQflush(c), 0);
      PGresult* r = PQgetResult(c);
      ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(c) << proxy.log();
      EXPECT_EQ(std::string(PQgetvalue(r, 0, 0)), std::to_string(2 * i));
      PQclear(r);
      ASSERT_EQ(PQgetResult(c), nullptr);  // the end of this query's results
      ASSERT_EQ(PQpipelineSync(c), 1);
      r = PQgetResult(c);
      EXPECT_EQ(PQresultStatus(r), PGRES_PIPELINE_SYNC) << PQerrorMessage(c) << proxy.log();
      PQclear(r);
    }
    EXPECT_EQ(PQexitPipelineMode(c), 1) << PQerrorMessage(c);
    PGresult* r = PQexec(c, "select 'still linked'");
    EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(c);
    PQclear(r);
    PQfinish(c);
  }
  expectWithinPool(peak, kSize);
}

}  // namespace
}  // namespace pgproxy::it
