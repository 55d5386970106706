// Named prepared statements through a transaction pool (issue 16): a client's statements follow
// it from server to server, replies come in the order PostgreSQL gives them (checked against
// PostgreSQL itself: the same pipelines run directly and through pgproxy must produce the same
// results), and the drivers that prepare by default (pgbench -M prepared, asyncpg, psycopg 3 with
// prepare_threshold=0, node-postgres with named queries) run unchanged.
//
// The database is this file's own (poolprepared, owned by the harness's pool role).
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <cstdlib>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

const std::string& authFile() {
  return poolRoleDatabase("poolprepared");
}

// One mapping (the default one, so plaintext reaches it) with a pool of `size` servers.
std::string config(const std::string& mode, int size, int prepared = 200) {
  return "auth: {type: scram-sha-256, file: " + authFile() +
         "}\n"
         "mappings:\n"
         "  - external: host1.example.com\n"
         "    internal: 127.0.0.1\n"
         "    port: {P1}\n"
         "    pool: {mode: " +
         mode + ", size: " + std::to_string(size) +
         ", prepared_statements: " + std::to_string(prepared) + "}\n";
}

std::string viaProxy(const Proxy& proxy) {
  return "host=127.0.0.1 sslmode=disable gssencmode=disable connect_timeout=20 port=" +
         std::to_string(proxy.port()) + " dbname=poolprepared user=pgproxy_pool password=scram-pw";
}

std::string viaDirect() {
  return "host=127.0.0.1 sslmode=disable gssencmode=disable port=" +
         std::to_string(sandbox().port1) +
         " dbname=poolprepared user=pgproxy_pool password=scram-pw";
}

// Sends what `send` queues in pipeline mode (it ends each batch with PQpipelineSync) and
// records every result up to the `syncs`-th sync: status, SQLSTATE, first value; "|" where a
// query's results end.
std::vector<std::string> pipeline(PGconn* c, const std::function<void(PGconn*)>& send, int syncs) {
  std::vector<std::string> out;
  EXPECT_EQ(PQenterPipelineMode(c), 1);
  send(c);
  int seen = 0;
  int nulls = 0;  // in a row: libpq has nothing more to give
  while (seen < syncs && nulls < 3) {
    PGresult* r = PQgetResult(c);
    if (!r) {
      ++nulls;
      out.push_back("|");
      continue;
    }
    nulls = 0;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_PIPELINE_SYNC) {
      ++seen;
      out.push_back("SYNC");
      PQclear(r);
      continue;
    }
    if (st == PGRES_COMMAND_OK && PQnfields(r) > 0) {
      // A Describe: the field count and the first field's name.
      out.push_back("DESCRIBED:" + std::to_string(PQnfields(r)) + ":" + PQfname(r, 0));
      PQclear(r);
      continue;
    }
    out.push_back(Conn::outcome(r));
  }
  EXPECT_EQ(PQexitPipelineMode(c), 1) << PQerrorMessage(c);
  return out;
}

void prepared(PGconn* c, const char* name, std::vector<const char*> args) {
  EXPECT_EQ(
      PQsendQueryPrepared(c, name, static_cast<int>(args.size()), args.data(), nullptr, nullptr, 0),
      1);
}

// A tour of what can go wrong with named statements in one pipeline each: a duplicate name, a
// name that does not exist, an error that makes the server skip the rest up to the Sync (a
// Parse skipped there creates nothing), a Parse in a failed transaction, one text under two
// names, a Describe, DEALLOCATE ALL.
std::vector<std::string> tour(PGconn* c) {
  auto sync = [](PGconn* conn) { EXPECT_EQ(PQpipelineSync(conn), 1); };
  auto params = [](PGconn* conn, const char* sql) {
    EXPECT_EQ(PQsendQueryParams(conn, sql, 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  };
  return pipeline(
      c,
      [&](PGconn* conn) {
        PQsendPrepare(conn, "s1", "select $1::int * 2", 1, nullptr);
        prepared(conn, "s1", {"21"});
        sync(conn);
        PQsendPrepare(conn, "s1", "select $1::int * 2", 1, nullptr);  // already exists
        prepared(conn, "s1", {"1"});                                  // skipped
        sync(conn);
        prepared(conn, "s1", {"5"});
        sync(conn);
        prepared(conn, "nosuch", {"1"});
        prepared(conn, "s1", {"2"});
        sync(conn);
        PQsendDescribePrepared(conn, "s1");
        sync(conn);
        PQsendPrepare(conn, "s2", "select 1/$1::int as q", 1, nullptr);
        prepared(conn, "s2", {"0"});                        // division by zero
        PQsendPrepare(conn, "s3", "select 3", 0, nullptr);  // skipped: s3 never exists
        sync(conn);
        prepared(conn, "s3", {});
        sync(conn);
        prepared(conn, "s2", {"4"});
        sync(conn);
        params(conn, "begin");
        params(conn, "select 1/0");
        sync(conn);
        PQsendPrepare(conn, "s4", "select 4", 0, nullptr);  // in a failed transaction: 25P02
        sync(conn);
        params(conn, "rollback");
        sync(conn);
        PQsendPrepare(conn, "s4", "select 4", 0, nullptr);  // exists only now
        prepared(conn, "s4", {});
        sync(conn);
        PQsendPrepare(conn, "s5", "select $1::int * 2", 1, nullptr);  // s1's text
        prepared(conn, "s5", {"8"});
        prepared(conn, "s1", {"9"});
        sync(conn);
        params(conn, "deallocate all");
        sync(conn);
        prepared(conn, "s1", {"1"});
        sync(conn);
        PQsendPrepare(conn, "s1", "select $1::int * 3", 1, nullptr);  // free again
        prepared(conn, "s1", {"3"});
        sync(conn);
      },
      16);
}

// Both result lists side by side from the first difference: gtest truncates long vectors.
std::string firstDifference(const std::vector<std::string>& got,
                            const std::vector<std::string>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i])
    ++i;
  if (i == got.size() && i == want.size())
    return "";
  std::string out = "first difference at result " + std::to_string(i) + ":\n";
  for (size_t j = i > 8 ? i - 8 : 0; j < std::max(got.size(), want.size()) && j < i + 8; ++j) {
    out += "  got " + (j < got.size() ? got[j] : "-") + "  want " +
           (j < want.size() ? want[j] : "-") + "\n";
  }
  return out;
}

TEST(PoolPrepared, RepliesMatchPostgresInOrderAndErrors) {
  authFile();
  Conn direct(viaDirect());
  std::vector<std::string> want = tour(direct.c);
  ASSERT_GT(want.size(), 30u);
  for (const char* mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    Proxy proxy(config(mode, 2));
    Conn through(viaProxy(proxy));
    EXPECT_EQ(through.one("select 1"), "1");
    std::vector<std::string> got = tour(through.c);
    EXPECT_EQ(firstDifference(got, want), "") << proxy.log();
    if (std::string(mode) == "session") {
      continue;  // each client has a server of its own: nothing more to see
    }
    // The same again on a client whose every batch lands on a server the statements are new to:
    // another client holds the other one in a transaction between them.
    Conn other(viaProxy(proxy));
    Conn again(viaProxy(proxy));
    EXPECT_EQ(other.one("begin"), "PGRES_COMMAND_OK");
    EXPECT_EQ(other.one("select 1"), "1");
    got = tour(again.c);
    EXPECT_EQ(firstDifference(got, want), "") << proxy.log();
    EXPECT_EQ(other.one("commit"), "PGRES_COMMAND_OK");
  }
}

// A statement prepared once is executed on whichever server the client gets: with another
// client holding the most recently used server in a transaction, each execution lands on the
// other one, so the client's executions see both servers.
TEST(PoolPrepared, StatementsFollowTheClientAcrossServers) {
  authFile();
  Proxy proxy(config("transaction", 2), 1);  // one worker: both clients share its pool
  Conn a(viaProxy(proxy));
  Conn b(viaProxy(proxy));
  ASSERT_EQ(a.prepare("pid", "select pg_backend_pid(), $1::int * 2"), "PGRES_COMMAND_OK");
  ASSERT_EQ(a.prepare("add", "select $1::int + $2::int"), "PGRES_COMMAND_OK");
  std::set<std::string> pids;
  for (int i = 0; i < 10; ++i) {
    std::string r = a.exec("pid", {std::to_string(i)});
    ASSERT_EQ(r.substr(r.find('|') + 1), std::to_string(2 * i)) << r << proxy.log();
    pids.insert(r.substr(0, r.find('|')));
    ASSERT_EQ(b.one("begin"), "PGRES_COMMAND_OK");
    std::string held = b.one("select pg_backend_pid()");
    r = a.exec("pid", {std::to_string(i)});
    ASSERT_EQ(r.substr(r.find('|') + 1), std::to_string(2 * i)) << r << proxy.log();
    EXPECT_NE(r.substr(0, r.find('|')), held) << "two clients on one server";
    pids.insert(r.substr(0, r.find('|')));
    EXPECT_EQ(a.exec("add", {std::to_string(i), "100"}), std::to_string(i + 100));
    ASSERT_EQ(b.one("commit"), "PGRES_COMMAND_OK");
  }
  EXPECT_EQ(pids.size(), 2u) << "the statements never changed server";
}

// Each server keeps at most prepared_statements: a client using more than that many, round
// robin, gets each evicted statement prepared again where it runs, with the right results.
TEST(PoolPrepared, EvictionKeepsEveryStatementWorking) {
  authFile();
  Proxy proxy(config("transaction", 1, 3), 1);
  Conn a(viaProxy(proxy));
  Conn b(viaProxy(proxy));
  for (int s = 0; s < 8; ++s) {
    ASSERT_EQ(a.prepare("e" + std::to_string(s), "select $1::int + " + std::to_string(s * 1000)),
              "PGRES_COMMAND_OK");
    ASSERT_EQ(b.prepare("f" + std::to_string(s), "select $1::int + " + std::to_string(s * 1000)),
              "PGRES_COMMAND_OK");
  }
  for (int round = 0; round < 4; ++round) {
    for (int s = 0; s < 8; ++s) {
      EXPECT_EQ(a.exec("e" + std::to_string(s), {std::to_string(round)}),
                std::to_string(s * 1000 + round));
      EXPECT_EQ(b.exec("f" + std::to_string(7 - s), {std::to_string(round)}),
                std::to_string((7 - s) * 1000 + round));
    }
  }
  // The one server holds no more than three of pgproxy's statements.
  EXPECT_EQ(a.one("select count(*) from pg_prepared_statements where name like 'pgproxy_%'"), "3");
}

// DDL between executions: PostgreSQL refuses to run a prepared statement whose result type
// changed ("cached plan must not change result type"), on a direct connection for as long as the
// statement lives. Through the pool, outside a transaction, pgproxy prepares the statement afresh
// and runs the client's batch again: the client never sees the error. Inside a transaction the
// error aborted it, so the client sees it, once per server that had the old copy.
TEST(PoolPrepared, AlterTableBetweenExecutions) {
  authFile();
  Proxy proxy(config("transaction", 2));
  Conn a(viaProxy(proxy));
  Conn b(viaProxy(proxy));
  ASSERT_EQ(a.one("drop table if exists pp_alter"), "PGRES_COMMAND_OK");
  ASSERT_EQ(a.one("create table pp_alter (id int)"), "PGRES_COMMAND_OK");
  ASSERT_EQ(a.one("insert into pp_alter values (1)"), "PGRES_COMMAND_OK");
  ASSERT_EQ(a.prepare("all", "select * from pp_alter"), "PGRES_COMMAND_OK");
  ASSERT_EQ(b.prepare("all", "select * from pp_alter"), "PGRES_COMMAND_OK");
  // Both servers get the statement: b's transaction holds one while a runs on the other.
  ASSERT_EQ(b.one("begin"), "PGRES_COMMAND_OK");
  EXPECT_EQ(b.exec("all", {}), "1");
  EXPECT_EQ(a.exec("all", {}), "1");
  ASSERT_EQ(b.one("commit"), "PGRES_COMMAND_OK");
  EXPECT_EQ(a.exec("all", {}), "1");

  ASSERT_EQ(a.one("alter table pp_alter add column extra text default 'x'"), "PGRES_COMMAND_OK");
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(a.exec("all", {}), "1|x") << proxy.log();
    EXPECT_EQ(b.exec("all", {}), "1|x") << proxy.log();
  }

  ASSERT_EQ(a.one("alter table pp_alter add column more int default 2"), "PGRES_COMMAND_OK");
  int errors = 0;
  std::string r;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(a.one("begin"), "PGRES_COMMAND_OK");
    r = a.exec("all", {});
    if (r == "ERROR:0A000") {
      ++errors;
      ASSERT_EQ(a.one("rollback"), "PGRES_COMMAND_OK");
      continue;
    }
    EXPECT_EQ(r, "1|x|2");
    ASSERT_EQ(a.one("commit"), "PGRES_COMMAND_OK");
  }
  EXPECT_GE(errors, 1) << "in a transaction the error is the client's";
  EXPECT_LE(errors, 2) << "once per server with the old copy";
  EXPECT_EQ(r, "1|x|2");
}

// pgbench's TPC-B-like transactions with named prepared statements (-M prepared) and with the
// extended protocol (-M extended), 64 clients over 2 servers and 2 workers; in transaction and
// session mode. Every transaction is processed and the ledger adds up.
TEST(PoolPrepared, Pgbench64ClientsPreparedAndExtended) {
  authFile();
  auto init = run({"pgbench", "-i", "-q", "-s", "1", viaDirect()});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  int transactions = 0;
  for (const char* pool_mode : {"transaction", "session"}) {
    Proxy proxy(config(pool_mode, 2));
    for (const char* mode : {"prepared", "extended"}) {
      SCOPED_TRACE(std::string(pool_mode) + " -M " + mode);
      // A thread per client: pgbench 15 prepares with the blocking PQprepare, so a thread whose
      // second client waits for a server its first client holds (in a transaction) would wait
      // for ever, through any pool smaller than its clients.
      auto r =
          run({"pgbench", "-n", "-M", mode, "-c", "64", "-j", "64", "-t", "20", viaProxy(proxy)},
              std::chrono::seconds(300));
      EXPECT_EQ(r.exit_code, 0) << r.output << proxy.log();
      EXPECT_NE(r.output.find("processed: 1280/1280"), std::string::npos) << r.output;
      EXPECT_NE(r.output.find("tps = "), std::string::npos) << r.output;
      transactions += 1280;
    }
  }
  Conn d(viaDirect());
  EXPECT_EQ(d.one("select count(*) from pgbench_history"), std::to_string(transactions));
  EXPECT_EQ(d.one("select (select sum(abalance) from pgbench_accounts) = s and "
                  "(select sum(tbalance) from pgbench_tellers) = s and "
                  "(select sum(bbalance) from pgbench_branches) = s "
                  "from (select sum(delta) as s from pgbench_history) h"),
            "t");
}

std::string dsn(const Proxy& proxy) {
  return "postgresql://pgproxy_pool:scram-pw@127.0.0.1:" + std::to_string(proxy.port()) +
         "/poolprepared?sslmode=disable";
}

// asyncpg with all its defaults: every query is a named statement, cached per connection (at
// most 100, the rest Closed as they age). Twenty connections, 1,200 mixed statements at once.
TEST(PoolPrepared, AsyncpgDefaults) {
  authFile();
  for (const char* mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    Proxy proxy(config(mode, 2));
    runClient(kPython, "client.py", R"PY(
import asyncio
import sys

import asyncpg

dsn = sys.argv[1]


async def client(i):
    c = await asyncpg.connect(dsn)
    table = "pa_t%d" % i
    await c.execute("drop table if exists %s" % table)
    await c.execute("create table %s (id int primary key, v text)" % table)
    for k in range(20):
        # Statements of their own text per iteration: the cache of 100 fills and Closes some.
        assert await c.fetchval("select $1::int + %d" % k, i) == i + k
        await c.execute("insert into %s values ($1, $2)" % table, k, "v%d" % k)
        row = await c.fetchrow("select id, v from %s where id = $1" % table, k)
        assert (row["id"], row["v"]) == (k, "v%d" % k), row
        async with c.transaction():
            await c.execute("update %s set v = $2 where id = $1" % table, k, "w%d" % k)
        try:
            async with c.transaction():
                await c.execute("update %s set v = 'lost' where id = $1" % table, k)
                await c.fetchval("select 1 / $1::int", 0)
            raise SystemExit("no error")
        except asyncpg.DivisionByZeroError:
            pass
        assert await c.fetchval("select v from %s where id = $1" % table, k) == "w%d" % k
    assert await c.fetchval("select count(*) from %s" % table) == 20
    await c.execute("drop table %s" % table)
    await c.close()


async def main():
    await asyncio.gather(*[client(i) for i in range(20)])
    # In session mode each pooled connection keeps a server: no more of them than servers.
    size = 4 if sys.argv[2] == "transaction" else 2
    pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
    got = await asyncio.gather(*[pool.fetchval("select $1::int * 3", i) for i in range(40)])
    assert got == [3 * i for i in range(40)], got
    await pool.close()
    print("ok")


asyncio.run(main())
)PY",
              {dsn(proxy), mode}, proxy);
  }
}

// psycopg 3 with prepare_threshold=0: every statement is prepared on its first run.
TEST(PoolPrepared, Psycopg3PrepareEverything) {
  authFile();
  for (const char* mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    Proxy proxy(config(mode, 2));
    runClient(kPython, "client.py", R"PY(
import sys
import threading

import psycopg

dsn = sys.argv[1]
errors = []


def client(i):
    try:
        with psycopg.connect(dsn, prepare_threshold=0, autocommit=True) as c:
            t = "pp_t%d" % i
            c.execute("drop table if exists %s" % t)
            c.execute("create table %s (id int primary key, v text)" % t)
            for k in range(20):
                assert c.execute("select %%s::int + %d" % k, (i,)).fetchone()[0] == i + k
                c.execute("insert into %s values (%%s, %%s)" % t, (k, "v%d" % k))
                with c.transaction():
                    c.execute("update %s set v = %%s where id = %%s" % t, ("w%d" % k, k))
                try:
                    with c.transaction():
                        c.execute("select 1 / %s::int", (0,))
                    raise SystemExit("no error")
                except psycopg.errors.DivisionByZero:
                    pass
                assert c.execute("select v from %s where id = %%s" % t, (k,)).fetchone()[0] \
                    == "w%d" % k
            assert c.execute("select count(*) from %s" % t).fetchone()[0] == 20
            c.execute("drop table %s" % t)
    except BaseException as e:  # noqa
        errors.append((i, repr(e)))


threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
print("ok")
)PY",
              {dsn(proxy)}, proxy);
  }
}

// node-postgres with named queries (`name:` in the query config): prepared once per connection
// and bound by name afterwards.
TEST(PoolPrepared, NodePostgresNamedQueries) {
  authFile();
  const char* prefix = std::getenv("PGPROXY_NODE_PREFIX");
  std::string modules =
      std::string(prefix ? prefix : "/usr/local/lib/pgproxy-test-node") + "/node_modules";
  ASSERT_EQ(access((modules + "/pg/package.json").c_str(), R_OK), 0)
      << "node-postgres is missing: scripts/install-deps.sh installs it into " << modules;
  for (const char* mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    Proxy proxy(config(mode, 2));
    runClient({"env", "NODE_PATH=" + modules, "node"}, "client.js", R"JS(
const assert = require('assert');
const { Client } = require('pg');
const port = Number(process.argv[2]);

async function one(i) {
  const c = new Client({ host: '127.0.0.1', port, user: 'pgproxy_pool', password: 'scram-pw',
                         database: 'poolprepared' });
  await c.connect();
  const t = 'pn_t' + i;
  await c.query('drop table if exists ' + t);
  await c.query('create table ' + t + ' (id int primary key, v text)');
  for (let k = 0; k < 20; k++) {
    let r = await c.query({ name: 'add', text: 'select $1::int + $2::int as n', values: [i, k] });
    assert.strictEqual(r.rows[0].n, i + k);
    await c.query({ name: 'ins' + t, text: 'insert into ' + t + ' values ($1, $2)', values: [k, 'v' + k] });
    await c.query('begin');
    await c.query({ name: 'upd' + t, text: 'update ' + t + ' set v = $2 where id = $1', values: [k, 'w' + k] });
    await c.query('commit');
    r = await c.query({ name: 'get' + t, text: 'select v from ' + t + ' where id = $1', values: [k] });
    assert.strictEqual(r.rows[0].v, 'w' + k);
  }
  const r = await c.query('select count(*)::int as n from ' + t);
  assert.strictEqual(r.rows[0].n, 20);
  await c.query('drop table ' + t);
  await c.end();
}

Promise.all([...Array(20).keys()].map(one)).then(() => console.log('ok'),
  (e) => { console.error(e); process.exit(1); });
)JS",
              {std::to_string(proxy.port())}, proxy);
  }
}

// pgjdbc with prepareThreshold=1: every statement is a named server-side statement from its
// second execution (S_1, S_2, ...), the driver's own cache of 256 closing the oldest. Twenty
// threads, 50 iterations of mixed statements each (1,000 per kind), in both pool modes.
TEST(PoolPrepared, PgjdbcPrepareThresholdOne) {
  authFile();
  ASSERT_EQ(access("/usr/share/java/postgresql.jar", R_OK), 0)
      << "pgjdbc is missing: scripts/install-deps.sh installs libpostgresql-jdbc-java";
  for (const char* mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    Proxy proxy(config(mode, 2));
    runClient({"java", "-cp", "/usr/share/java/postgresql.jar"}, "Client.java", R"JAVA(
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;

public class Client {
  static void check(boolean ok, String what) {
    if (!ok) throw new AssertionError(what);
  }

  static void run(String url, int i) throws Exception {
    try (Connection c = DriverManager.getConnection(url)) {
      String t = "pj_t" + i;
      try (Statement s = c.createStatement()) {
        s.execute("drop table if exists " + t);
        s.execute("create table " + t + " (id int primary key, v text)");
        s.execute("SET statement_timeout = '" + (30 + i) + "s'");
      }
      PreparedStatement add = c.prepareStatement("select ?::int + ?::int");
      PreparedStatement ins = c.prepareStatement("insert into " + t + " values (?, ?)");
      PreparedStatement get = c.prepareStatement("select v from " + t + " where id = ?");
      PreparedStatement upd = c.prepareStatement("update " + t + " set v = ? where id = ?");
      PreparedStatement timeout = c.prepareStatement("select current_setting('statement_timeout')");
      for (int k = 0; k < 50; k++) {
        add.setInt(1, i);
        add.setInt(2, k);
        try (ResultSet r = add.executeQuery()) {
          check(r.next() && r.getInt(1) == i + k, "add");
        }
        ins.setInt(1, k);
        ins.setString(2, "v" + k);
        check(ins.executeUpdate() == 1, "insert");
        c.setAutoCommit(false);
        upd.setString(1, "w" + k);
        upd.setInt(2, k);
        check(upd.executeUpdate() == 1, "update");
        c.commit();
        // A failed transaction, rolled back: its update is gone.
        upd.setString(1, "lost");
        upd.executeUpdate();
        try (Statement s = c.createStatement()) {
          s.executeQuery("select 1 / 0");
          throw new AssertionError("no error");
        } catch (SQLException e) {
          check("22012".equals(e.getSQLState()), e.toString());
        }
        c.rollback();
        c.setAutoCommit(true);
        get.setInt(1, k);
        try (ResultSet r = get.executeQuery()) {
          check(r.next() && ("w" + k).equals(r.getString(1)), "get");
        }
        try (ResultSet r = timeout.executeQuery()) {
          check(r.next() && (30 + i + "s").equals(r.getString(1)), "the client's SET");
        }
      }
      // A batch, then the count.
      for (int k = 100; k < 120; k++) {
        ins.setInt(1, k);
        ins.setString(2, "b" + k);
        ins.addBatch();
      }
      ins.executeBatch();
      try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("select count(*) from " + t)) {
        check(r.next() && r.getInt(1) == 70, "count");
      }
      try (Statement s = c.createStatement()) {
        s.execute("drop table " + t);
      }
    }
  }

  public static void main(String[] args) throws Exception {
    String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/poolprepared?user=pgproxy_pool"
        + "&password=scram-pw&sslmode=disable&prepareThreshold=1&gssEncMode=disable";
    ExecutorService pool = Executors.newFixedThreadPool(20);
    List<Future<?>> done = new ArrayList<>();
    for (int i = 0; i < 20; i++) {
      final int n = i;
      done.add(pool.submit(() -> { run(url, n); return null; }));
    }
    for (Future<?> f : done) {
      f.get();
    }
    pool.shutdown();
    System.out.println("ok");
  }
}
)JAVA",
              {std::to_string(proxy.port())}, proxy);
  }
}

}  // namespace
}  // namespace pgproxy::it
