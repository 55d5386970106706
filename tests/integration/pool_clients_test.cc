// Client libraries through a transaction pool (issue 15): psql, pgbench (simple and extended
// protocol), psycopg 3, asyncpg and node-postgres run as real programs against PostgreSQL 15
// through a pooled mapping, each over TLS (verify-full against pgproxy's CA) and in plaintext (a
// pooled mapping that is the only one is the default mapping, so plaintext clients reach it).
//
// Every library runs with its defaults, named prepared statements included (psycopg's
// prepare_threshold, asyncpg's statement cache, which pgproxy follows from server to server:
// pool_prepared_test.cc has the thorough tests). pg_stat_activity on the backend is the witness
// that no more server sessions than the pool's size served them.
//
// The database is this file's own (poolclients, owned by the harness's pool role), so these tests
// and pool_test.cc's run in one binary in any order.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

// This file's database, created once per binary: the auth file of the pool's role.
const std::string& authFile() {
  return poolRoleDatabase("poolclients");
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

// libpq's conninfo (psql, pgbench, psycopg).
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

// The CA a client verifies pgproxy with, or "" for plaintext.
std::string caFor(const Transport& t) {
  return t.tls ? sandboxFile("proxy-ca.crt") : "";
}

// SQL as the superuser in poolclients, directly on the backend; the output without its newlines.
std::string queryDb(const std::string& sql) {
  auto r = psql("host=127.0.0.1 port=" + std::to_string(sandbox().port1) +
                    " sslmode=disable user=postgres dbname=poolclients",
                sql);
  EXPECT_EQ(r.exit_code, 0) << sql << ": " << r.output;
  while (!r.output.empty() && r.output.back() == '\n') {
    r.output.pop_back();
  }
  return r.output;
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

// pgbench's TPC-B-like transactions with the simple and the extended protocol (-M extended binds
// unnamed statements), eight clients over three servers, through TLS and plaintext. Every
// transaction is processed and none fails, and the ledger adds up: each one added the same delta
// to an account, a teller and a branch and logged it in pgbench_history.
TEST(PoolClients, PgbenchSimpleAndExtended) {
  authFile();
  auto init = run({"pgbench", "-i", "-q", "-s", "1",
                   "host=127.0.0.1 port=" + std::to_string(sandbox().port1) +
                       " user=pgproxy_pool password=scram-pw dbname=poolclients"});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  expectNoServers();
  constexpr int kSize = 3;
  Proxy proxy(config(kSize));
  SessionPeak peak;
  int transactions = 0;
  for (const Transport& t : kTransports) {
    for (const char* mode : {"simple", "extended"}) {
      SCOPED_TRACE(std::string(t.name) + " -M " + mode);
      auto r =
          run({"pgbench", "-n", "-M", mode, "-c", "8", "-j", "2", "-t", "100", conninfo(proxy, t)},
              std::chrono::seconds(300));
      EXPECT_EQ(r.exit_code, 0) << r.output << proxy.log();
      EXPECT_NE(r.output.find("processed: 800/800"), std::string::npos) << r.output;
      EXPECT_NE(r.output.find("number of failed transactions: 0 "), std::string::npos) << r.output;
      transactions += 800;
    }
  }
  expectWithinPool(peak, kSize);
  EXPECT_EQ(queryDb("select count(*) from pgbench_history"), std::to_string(transactions));
  EXPECT_EQ(queryDb("select (select sum(abalance) from pgbench_accounts) = s and "
                    "(select sum(tbalance) from pgbench_tellers) = s and "
                    "(select sum(bbalance) from pgbench_branches) = s "
                    "from (select sum(delta) as s from pgbench_history) h"),
            "t");
}

// psycopg 3 with its defaults: autocommit off, parameters bound by the server, a query run five
// times on a connection prepared as a named statement.
TEST(PoolClients, Psycopg3) {
  authFile();
  expectNoServers();
  constexpr int kSize = 2;
  Proxy proxy(config(kSize));
  SessionPeak peak;
  for (const Transport& t : kTransports) {
    SCOPED_TRACE(t.name);
    runClient(kPython, "client.py", R"PY(
import io
import sys
import threading

import psycopg
from psycopg import sql

dsn = sys.argv[1]


def connect():
    return psycopg.connect(dsn)


with connect() as c:
    got = c.execute("select %s::int + 1, %s::text, %s::int", (41, "x", None)).fetchone()
    assert got == (42, "x", None), got
    c.execute("drop table if exists pc_items")
    c.execute("create table pc_items (id int primary key, name text)")
    c.commit()

    with c.cursor() as cur:
        for i in range(20):
            cur.execute("insert into pc_items values (%s, %s)", (i, "item %d" % i))
        cur.executemany("insert into pc_items values (%s, %s)",
                        [(i, "many %d" % i) for i in range(20, 40)])
    c.commit()
    got = c.execute("select count(*), sum(id) from pc_items").fetchone()
    assert got == (40, sum(range(40))), got
    c.commit()

    # A transaction rolled back, one committed with transaction().
    c.execute("insert into pc_items values (100, 'rolled back')")
    c.rollback()
    with c.transaction():
        c.execute("insert into pc_items values (%s, %s)", (101, "committed"))
    got = c.execute("select array_agg(id order by id) from pc_items where id >= 100").fetchone()
    assert got == ([101],), got
    c.commit()

    # An error inside a transaction: the rest of it fails until the rollback, then all is well.
    c.execute("insert into pc_items values (200, 'lost with the error')")
    try:
        c.execute("select 1/0")
        raise SystemExit("no error")
    except psycopg.errors.DivisionByZero:
        pass
    try:
        c.execute("select 1")
        raise SystemExit("the failed transaction went on")
    except psycopg.errors.InFailedSqlTransaction:
        pass
    c.rollback()
    got = c.execute("select count(*) from pc_items where id = 200").fetchone()
    assert got == (0,), got
    c.commit()

    # COPY FROM STDIN and COPY TO STDOUT, a few MB each way.
    pad = "x" * 100
    with c.cursor() as cur:
        with cur.copy("copy pc_items (id, name) from stdin") as copy:
            for i in range(1000, 31000):
                copy.write_row((i, "%s %d" % (pad, i)))
    c.commit()
    out = io.BytesIO()
    with c.cursor() as cur:
        with cur.copy("copy (select id, name from pc_items where id >= 1000 order by id) "
                      "to stdout") as copy:
            for data in copy:
                out.write(bytes(data))
    c.commit()
    lines = out.getvalue().decode().splitlines()
    want = ["%d\t%s %d" % (i, pad, i) for i in range(1000, 31000)]
    assert lines == want, (len(lines), lines[:2])

    # Pipeline mode: many queries, one Sync; then results fetched inside the block (psycopg
    # sends a flush request and reads them before the Sync that ends the block).
    with c.pipeline():
        curs = [c.execute("select %s::int * 2", (i,)) for i in range(20)]
    got = [cur.fetchone()[0] for cur in curs]
    assert got == [i * 2 for i in range(20)], got
    c.commit()
    for i in range(5):
        with c.pipeline():
            got = c.execute("select %s::int * 3", (i,)).fetchone()[0]
            assert got == i * 3, got
        c.commit()

# Six connections over a pool of two servers, each in its own thread. A session-level setting
# follows its client from server to server; SET LOCAL and a temporary table (on commit drop) are
# its own inside its transaction and gone after it, on whichever server the next one runs.
errors = []


def worker(n):
    try:
        with connect() as c:
            c.execute("select set_config('application_name', %s, false)", ("client%d" % n,))
            c.commit()
            for i in range(25):
                tag = "w%d-%d" % (n, i)
                c.execute(sql.SQL("set local pgproxy.tag = {}").format(sql.Literal(tag)))
                c.execute("create temp table mine (x int) on commit drop")
                c.execute("insert into mine select generate_series(1, %s)", (n + 1,))
                got = c.execute(
                    "select current_setting('pgproxy.tag'), current_setting('application_name'),"
                    " (select sum(x)::int from mine), %s::int", (i,)).fetchone()
                want = (tag, "client%d" % n, (n + 1) * (n + 2) // 2, i)
                assert got == want, (got, want)
                c.commit()
                got = c.execute(
                    "select coalesce(current_setting('pgproxy.tag', true), ''),"
                    " current_setting('application_name'),"
                    " to_regclass('pg_temp.mine') is null").fetchone()
                assert got == ("", "client%d" % n, True), got
                c.commit()
    except BaseException as e:
        errors.append("client %d: %r" % (n, e))


threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
print("ok")
)PY",
              {conninfo(proxy, t)}, proxy);
  }
  expectWithinPool(peak, kSize);
}

// asyncpg with its defaults: every query a named statement in its per-connection cache.
TEST(PoolClients, Asyncpg) {
  authFile();
  expectNoServers();
  constexpr int kSize = 2;
  Proxy proxy(config(kSize));
  SessionPeak peak;
  for (const Transport& t : kTransports) {
    SCOPED_TRACE(t.name);
    std::string port = std::to_string(proxy.port());
    std::string dsn = t.tls ? "postgresql://pgproxy_pool:scram-pw@host1.example.com:" + port +
                                  "/poolclients?sslmode=verify-full&sslrootcert=" + caFor(t)
                            : "postgresql://pgproxy_pool:scram-pw@127.0.0.1:" + port +
                                  "/poolclients?sslmode=disable";
    runClient(kPython, "client.py", R"PY(
import asyncio
import io
import socket
import sys
from decimal import Decimal

import asyncpg

# host1.example.com is pgproxy on loopback, which this machine's resolver does not know (libpq
# gets hostaddr=); asyncpg verifies the certificate against the name in the DSN.
_getaddrinfo = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: _getaddrinfo(
    "127.0.0.1" if host == "host1.example.com" else host, *a, **k)

dsn = sys.argv[1]
KW = dict()  # asyncpg's defaults


async def main():
    c = await asyncpg.connect(dsn, **KW)
    assert await c.fetchval("select $1::int + 1", 41) == 42
    row = await c.fetchrow("select $1::text as s, $2::int[] as a, $3::numeric as n",
                           "x", [1, 2], Decimal("1.5"))
    assert (row["s"], row["a"], row["n"]) == ("x", [1, 2], Decimal("1.5")), row
    await c.execute("drop table if exists pa_items")
    await c.execute("create table pa_items (id int primary key, name text)")
    await c.executemany("insert into pa_items values ($1, $2)",
                        [(i, "item %d" % i) for i in range(50)])
    assert await c.fetchval("select count(*) from pa_items") == 50

    # A transaction committed; one rolled back by an error inside it.
    async with c.transaction():
        await c.execute("insert into pa_items values ($1, $2)", 100, "committed")
    try:
        async with c.transaction():
            await c.execute("insert into pa_items values ($1, $2)", 101, "rolled back")
            await c.execute("select 1/0")
        raise SystemExit("no error")
    except asyncpg.DivisionByZeroError:
        pass
    got = [r["id"] for r in await c.fetch("select id from pa_items where id >= $1 order by id",
                                          100)]
    assert got == [100], got

    # A statement prepared in one transaction and run in others; a cursor; records copied in.
    stmt = await c.prepare("select $1::int * 7")
    assert [await stmt.fetchval(i) for i in range(5)] == [0, 7, 14, 21, 28]
    async with c.transaction():
        await c.execute("create temp table pa_recs (id int, name text) on commit drop")
        await c.copy_records_to_table("pa_recs", records=[(i, "rec %d" % i) for i in range(100)])
        got = [r["id"] async for r in c.cursor(
            "select id from pa_recs where id >= $1 order by id", 97)]
    assert got == [97, 98, 99], got

    # COPY in and out.
    data = "".join("%d\tcopied %d\n" % (i, i) for i in range(1000, 6000)).encode()
    await c.copy_to_table("pa_items", source=io.BytesIO(data))
    out = io.BytesIO()
    await c.copy_from_query("select id, name from pa_items where id >= 1000 order by id",
                            output=out)
    assert out.getvalue() == data, out.getvalue()[:100]
    await c.close()

    # Six pooled connections over two servers, sixty transactions at once, each with its own
    # SET LOCAL and temporary table.
    pool = await asyncpg.create_pool(dsn, min_size=6, max_size=6, **KW)

    async def one(i):
        async with pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("select set_config('pgproxy.tag', $1, true)", "t%d" % i)
                await conn.execute("create temp table mine (x int) on commit drop")
                await conn.execute("insert into mine values ($1)", i)
                return await conn.fetchrow(
                    "select current_setting('pgproxy.tag') as t, (select sum(x)::int from mine)"
                    " as s, $1::int * 2 as d", i)

    got = await asyncio.gather(*[one(i) for i in range(60)])
    for i, r in enumerate(got):
        assert (r["t"], r["s"], r["d"]) == ("t%d" % i, i, 2 * i), (i, r)
    await pool.close()
    print("ok")


asyncio.run(main())
)PY",
              {dsn}, proxy);
  }
  expectWithinPool(peak, kSize);
}

// node-postgres with its defaults: a parameterized query is an unnamed statement unless the query
// config names one. It comes from npm (scripts/install-deps.sh): Debian's node-pg needs Debian's
// own nodejs, which a machine with another Node.js cannot install beside it.
TEST(PoolClients, NodePostgres) {
  authFile();
  const char* prefix = std::getenv("PGPROXY_NODE_PREFIX");
  std::string modules =
      std::string(prefix ? prefix : "/usr/local/lib/pgproxy-test-node") + "/node_modules";
  ASSERT_EQ(access((modules + "/pg/package.json").c_str(), R_OK), 0)
      << "node-postgres is missing: scripts/install-deps.sh installs it into " << modules;
  expectNoServers();
  constexpr int kSize = 2;
  Proxy proxy(config(kSize));
  SessionPeak peak;
  for (const Transport& t : kTransports) {
    SCOPED_TRACE(t.name);
    runClient({"env", "NODE_PATH=" + modules, "node"}, "client.js", R"JS(
const fs = require('fs');
const assert = require('assert');
const { Client, Pool } = require('pg');

const [port, ca] = process.argv.slice(2);
// pgproxy on loopback; over TLS the certificate is checked for host1.example.com.
const config = {
  host: '127.0.0.1', port: Number(port), user: 'pgproxy_pool', password: 'scram-pw',
  database: 'poolclients',
  ssl: ca ? { ca: fs.readFileSync(ca), servername: 'host1.example.com' } : false,
};

async function expectError(promise, code) {
  try {
    await promise;
  } catch (e) {
    assert.strictEqual(e.code, code, e.message);
    return;
  }
  throw new Error('no error ' + code);
}

async function main() {
  const c = new Client(config);
  await c.connect();
  let r = await c.query('select $1::int + 1 as n, $2::text as s, $3::jsonb as j', [41, 'x', { a: 1 }]);
  assert.deepStrictEqual(r.rows, [{ n: 42, s: 'x', j: { a: 1 } }]);
  await c.query('drop table if exists pn_items');
  await c.query('create table pn_items (id int primary key, name text)');
  for (let i = 0; i < 20; i++) {
    await c.query('insert into pn_items values ($1, $2)', [i, 'item ' + i]);
  }

  // A transaction committed, one rolled back, one with an error inside it.
  await c.query('begin');
  await c.query('insert into pn_items values ($1, $2)', [100, 'committed']);
  await c.query('commit');
  await c.query('begin');
  await c.query('insert into pn_items values ($1, $2)', [101, 'rolled back']);
  await c.query('rollback');
  await c.query('begin');
  await c.query('insert into pn_items values ($1, $2)', [102, 'lost with the error']);
  await expectError(c.query('select 1/0'), '22012');
  await expectError(c.query('select $1::int', [1]), '25P02');
  await c.query('rollback');
  r = await c.query('select count(*)::int as n, array_agg(id order by id) filter (where id >= 100) as big from pn_items');
  assert.deepStrictEqual(r.rows, [{ n: 21, big: [100] }]);
  await c.end();

  // A pool of six clients over two servers, sixty transactions at once, each with its own
  // SET LOCAL and temporary table.
  const pool = new Pool({ ...config, max: 6 });
  async function one(i) {
    const client = await pool.connect();
    try {
      await client.query('begin');
      await client.query("select set_config('pgproxy.tag', $1, true)", ['t' + i]);
      await client.query('create temp table mine (x int) on commit drop');
      await client.query('insert into mine values ($1), ($2)', [i, i + 1]);
      const res = await client.query(
        "select current_setting('pgproxy.tag') as t, (select sum(x)::int from mine) as s, $1::int * 2 as d", [i]);
      await client.query('commit');
      return res.rows[0];
    } finally {
      client.release();
    }
  }
  const got = await Promise.all([...Array(60).keys()].map(one));
  got.forEach((row, i) => assert.deepStrictEqual(row, { t: 't' + i, s: 2 * i + 1, d: 2 * i }));
  // Queries on the pool itself, each on whichever client is free.
  const sums = await Promise.all([...Array(30).keys()].map((i) => pool.query('select $1::int * 3 as n', [i])));
  sums.forEach((res, i) => assert.strictEqual(res.rows[0].n, 3 * i));
  await pool.end();
  console.log('ok');
}

main().catch((e) => { console.error(e); process.exit(1); });
)JS",
              {std::to_string(proxy.port()), caFor(t)}, proxy);
  }
  expectWithinPool(peak, kSize);
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

// A pipeline far larger than one read: over TLS the client's small records arrive many per read
// (pgproxy reads ahead, so they wait in OpenSSL's buffer where epoll cannot see them) while the
// server holds pgproxy back; every query must still be answered, in order.
TEST(PoolClients, LargePipelineIsAnsweredInOrder) {
  authFile();
  expectNoServers();
  constexpr int kQueries = 20000;
  Proxy proxy(config(1));
  for (const Transport& t : kTransports) {
    SCOPED_TRACE(t.name);
    PGconn* c = PQconnectdb(conninfo(proxy, t).c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
    ASSERT_EQ(PQenterPipelineMode(c), 1);
    ASSERT_EQ(PQsetnonblocking(c, 1), 0);
    int sent = 0, received = 0;
    bool synced = false;
    auto readResults = [&]() -> bool {
      if (!PQconsumeInput(c)) {
        return false;
      }
      while (received < sent && !PQisBusy(c)) {
        PGresult* r = PQgetResult(c);
        if (!r) {
          continue;  // the end of one query's results
        }
        EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(c);
        EXPECT_EQ(std::string(PQgetvalue(r, 0, 0)), std::to_string(received));
        ++received;
        PQclear(r);
      }
      return true;
    };
    // Sends and reads interleaved (libpq's advice for large pipelines): neither side's buffers
    // fill up waiting for the other.
    bool done = false;
    while (!done) {
      while (sent < kQueries) {
        std::string value = std::to_string(sent);
        const char* values[] = {value.c_str()};
        if (PQsendQueryParams(c, "select $1::int", 1, nullptr, values, nullptr, nullptr, 0) != 1) {
          break;
        }
        // A flush per query: one small TLS record each, so that one read brings many.
        ASSERT_GE(PQflush(c), 0) << PQerrorMessage(c);
        if (++sent % 500 == 0) {
          break;
        }
      }
      if (sent == kQueries && !synced) {
        ASSERT_EQ(PQpipelineSync(c), 1);
        synced = true;
      }
      ASSERT_GE(PQflush(c), 0) << PQerrorMessage(c);
      pollfd pfd{PQsocket(c), POLLIN, 0};
      int ready = poll(&pfd, 1, 20000);
      ASSERT_GE(ready, 0);
      ASSERT_TRUE(ready > 0 || received == sent)
          << "no answer in 20 s with " << received << " of " << sent << " answered";
      ASSERT_TRUE(readResults()) << PQerrorMessage(c);
      done = synced && received == kQueries && PQflush(c) == 0;
      if (done) {
        // Then the Sync's own result, after the last query's end.
        PGresult* r = nullptr;
        while (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
          PQclear(r);
          while (PQisBusy(c)) {
            pollfd wait{PQsocket(c), POLLIN, 0};
            ASSERT_EQ(poll(&wait, 1, 20000), 1) << "no ReadyForQuery after the last query";
            ASSERT_TRUE(PQconsumeInput(c));
          }
          r = PQgetResult(c);
        }
        PQclear(r);
      }
    }
    EXPECT_EQ(received, kQueries);
    ASSERT_EQ(PQsetnonblocking(c, 0), 0);
    EXPECT_EQ(PQexitPipelineMode(c), 1) << PQerrorMessage(c);
    PQfinish(c);
  }
}

// {T}: the table of one psql process; {DIR}: where the CSV files are.
constexpr const char* kPsqlScript = R"SQL(\set ON_ERROR_STOP off
drop table if exists {T};
create table {T} (id int primary key, name text);
\copy {T} from '{DIR}/in.csv' with (format csv)
begin;
insert into {T} values (1000, 'committed');
set local application_name = 'psql-local';
select 'local: ' || current_setting('application_name');
commit;
select 'after: ' || current_setting('application_name');
begin;
insert into {T} values (1001, 'rolled back');
rollback;
select 1/0;
insert into {T} values (1, 'duplicate');
begin;
insert into {T} values (1002, 'lost with the error');
select 1/0;
select 'not run';
rollback;
select 'count: ' || count(*) || ' sum: ' || sum(id) from {T};
\copy (select id, name from {T} where id > 490 order by id) to '{DIR}/{T}.out' with (format csv)
select 'done';
)SQL";

// psql running a script: \copy both ways, a transaction committed and one rolled back, and
// errors with ON_ERROR_STOP off (psql goes on with the next statement), three psql processes at
// once over two servers, each with its own table.
TEST(PoolClients, PsqlScript) {
  authFile();
  expectNoServers();
  constexpr int kSize = 2;
  Proxy proxy(config(kSize));
  SessionPeak peak;
  std::string dir = tempDir("pgproxy-pool-psql");
  std::string rows;
  for (int i = 1; i <= 500; ++i) {
    rows += std::to_string(i) + ",\"row, " + std::to_string(i) + "\"\n";
  }
  writeFile(dir + "/in.csv", rows);
  for (const Transport& t : kTransports) {
    SCOPED_TRACE(t.name);
    std::vector<std::thread> threads;
    std::vector<CommandResult> results(3);
    for (int n = 0; n < 3; ++n) {
      std::string table = "pp_items_" + std::string(t.tls ? "tls" : "plain") + std::to_string(n);
      std::string script = dir + "/" + table + ".sql";
      std::string text = kPsqlScript;
      for (auto [from, to] : {std::pair<std::string, std::string>{"{T}", table}, {"{DIR}", dir}}) {
        for (std::size_t at = text.find(from); at != std::string::npos;
             at = text.find(from, at + to.size())) {
          text.replace(at, from.size(), to);
        }
      }
      writeFile(script, text);
      threads.emplace_back([&results, n, script, &proxy, &t] {
        results[n] = run({"psql", "-X", "-A", "-t", "-q", "-d",
                          conninfo(proxy, t) + " application_name=psql", "-f", script});
      });
    }
    for (auto& th : threads) {
      th.join();
    }
    for (int n = 0; n < 3; ++n) {
      std::string table = "pp_items_" + std::string(t.tls ? "tls" : "plain") + std::to_string(n);
      const std::string& out = results[n].output;
      // ON_ERROR_STOP off: the errors are reported and psql exits 0.
      EXPECT_EQ(results[n].exit_code, 0) << out << proxy.log();
      for (const char* want :
           {"\nlocal: psql-local\n", "\nafter: psql\n", "ERROR:  division by zero",
            "duplicate key value violates unique constraint",
            "current transaction is aborted, commands ignored until end of transaction block",
            "\ncount: 501 sum: 126250\n", "\ndone\n"}) {
        EXPECT_NE(("\n" + out).find(want), std::string::npos) << want << " in\n" << out;
      }
      EXPECT_EQ(out.find("not run"), std::string::npos) << out;
      std::string copied;
      for (int i = 491; i <= 500; ++i) {
        copied += std::to_string(i) + ",\"row, " + std::to_string(i) + "\"\n";
      }
      copied += "1000,committed\n";
      EXPECT_EQ(readFile(dir + "/" + table + ".out"), copied);
    }
  }
  expectWithinPool(peak, kSize);
  run({"rm", "-rf", dir});
}

}  // namespace
}  // namespace pgproxy::it
