// Session state through a transaction pool (issue 16): a client's SET of a parameter the server
// does not report follows it to every server it gets and never reaches another client; what
// cannot move between servers (session advisory locks, WITH HOLD cursors, temporary tables,
// LISTEN) keeps the client on its server until it is released, and pgproxy_pool_pinned_clients
// says so; SQL PREPARE / EXECUTE are refused with a clear error, and drivers' DEALLOCATE of their
// own protocol-level statements works. Each check also runs in session mode, where it must
// behave as on a direct connection.
//
// The database is this file's own (poolsession, owned by the harness's pool role).
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <set>
#include <string>

#include "harness.h"

namespace pgproxy::it {
namespace {

const std::string& authFile() {
  return poolRoleDatabase("poolsession");
}

// One worker, so that every client shares the same two servers.
// Waits for the connection's next notification, read as the client reads it (between its own
// queries); true when it came and is this one.
bool notified(Conn& c, const std::string& channel, const std::string& payload) {
  return eventually([&] {
    PQconsumeInput(c.c);
    PGnotify* n = PQnotifies(c.c);
    if (!n) {
      return false;
    }
    bool ok = n->relname == channel && n->extra == payload;
    PQfreemem(n);
    return ok;
  });
}

std::string config(const std::string& mode, int admin = 0) {
  std::string out;
  if (admin) {
    out = "admin: {listen: \"127.0.0.1:" + std::to_string(admin) + "\"}\n";
  }
  return out + "auth: {type: scram-sha-256, file: " + authFile() +
         "}\n"
         "mappings:\n"
         "  - external: host1.example.com\n"
         "    internal: 127.0.0.1\n"
         "    port: {P1}\n"
         "    pool: {mode: " +
         mode + ", size: 2}\n";
}

std::string dsn(const Proxy& proxy) {
  return "host=127.0.0.1 sslmode=disable gssencmode=disable connect_timeout=20 port=" +
         std::to_string(proxy.port()) + " dbname=poolsession user=pgproxy_pool password=scram-pw";
}

// pgproxy_pool_pinned_clients of this file's pool, or -1 when the series is missing.
long pinnedClients(int admin) {
  std::string body = httpGet(admin, "/metrics").body;
  const std::string key = "pgproxy_pool_pinned_clients{";
  for (std::size_t at = body.find(key); at != std::string::npos; at = body.find(key, at + 1)) {
    std::size_t end = body.find('\n', at);
    std::string line = body.substr(at, end - at);
    if (line.find("database=\"poolsession\"") != std::string::npos) {
      return std::stol(line.substr(line.rfind(' ') + 1));
    }
  }
  return -1;
}

TEST(PoolSessionState, SetFollowsItsClientAndNeverLeaks) {
  for (const char* mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    Proxy proxy(config(mode), 1);
    Conn a(dsn(proxy)), b(dsn(proxy));
    EXPECT_EQ(a.cmd("SET statement_timeout = '1234ms'"), "SET");
    // Rolled back: never happened.
    EXPECT_EQ(a.cmd("BEGIN"), "BEGIN");
    EXPECT_EQ(a.cmd("SET statement_timeout = '5s'"), "SET");
    EXPECT_EQ(a.cmd("ROLLBACK"), "ROLLBACK");
    // A savepoint rolled back to undoes what followed it; what came before it is committed.
    EXPECT_EQ(a.cmd("BEGIN; SET lock_timeout = '777ms'; SAVEPOINT s; SET lock_timeout = '1s'; "
                    "ROLLBACK TO s; COMMIT"),
              "COMMIT");
    const std::string show =
        "select pg_backend_pid(), current_setting('statement_timeout'), "
        "current_setting('lock_timeout')";
    std::set<std::string> a_pids;
    for (int i = 0; i < 6; ++i) {
      // B holds a server in a transaction: A runs on the other one. Then A runs again as B lets
      // its server go (in transaction mode it gets that one: idle servers are reused newest
      // first), so that A moves between both servers and B runs on servers A has used.
      EXPECT_EQ(b.cmd("BEGIN"), "BEGIN");
      std::string pb = b.cmd("select pg_backend_pid()");
      std::string ra = a.cmd(show);
      std::string pa = ra.substr(0, ra.find('|'));
      EXPECT_EQ(ra.substr(ra.find('|')), "|1234ms|777ms");
      EXPECT_NE(pa, pb);
      EXPECT_EQ(b.cmd("select current_setting('statement_timeout'), "
                      "current_setting('lock_timeout')"),
                "0|0");
      EXPECT_EQ(b.cmd("COMMIT"), "COMMIT");
      a_pids.insert(pa);
      ra = a.cmd(show);
      EXPECT_EQ(ra.substr(ra.find('|')), "|1234ms|777ms");
      a_pids.insert(ra.substr(0, ra.find('|')));
      EXPECT_EQ(b.cmd("select current_setting('statement_timeout')"), "0");
    }
    if (std::string(mode) == "transaction") {
      // A's settings went with it to both servers, and B (on both) never saw them.
      EXPECT_EQ(a_pids.size(), 2u);
    }
    // In force, not only shown.
    EXPECT_EQ(a.cmd("select pg_sleep(3)"), "ERROR:57014");
    EXPECT_EQ(a.cmd("RESET statement_timeout"), "RESET");
    EXPECT_EQ(a.cmd("select current_setting('statement_timeout')"), "0");
    // set_config is a SET too.
    EXPECT_EQ(a.cmd("select set_config('myapp.tenant', 't42', false)"), "t42");
    EXPECT_EQ(b.cmd("BEGIN"), "BEGIN");
    EXPECT_EQ(a.cmd("select current_setting('myapp.tenant')"), "t42");
    EXPECT_EQ(b.cmd("select current_setting('myapp.tenant', true)"), "");
    EXPECT_EQ(b.cmd("COMMIT"), "COMMIT");
    EXPECT_EQ(a.cmd("RESET ALL"), "RESET");
    EXPECT_EQ(
        a.cmd("select current_setting('lock_timeout'), current_setting('myapp.tenant', true)"),
        "0|");
  }
}

TEST(PoolSessionState, AdvisoryLockPinsUntilUnlocked) {
  int admin = freePort();
  Proxy proxy(config("transaction", admin), 1);
  Conn a(dsn(proxy)), b(dsn(proxy));
  EXPECT_TRUE(eventually([&] { return pinnedClients(admin) == 0; }));
  std::string pa = a.cmd("select pg_backend_pid() from (select pg_advisory_lock(42)) l");
  EXPECT_TRUE(eventually([&] { return pinnedClients(admin) == 1; })) << pinnedClients(admin);
  for (int i = 0; i < 4; ++i) {
    // B in a transaction takes the other server; A keeps its own between transactions.
    EXPECT_EQ(b.cmd("BEGIN"), "BEGIN");
    EXPECT_NE(b.cmd("select pg_backend_pid()"), pa);
    EXPECT_EQ(a.cmd("select pg_backend_pid()"), pa);
    EXPECT_EQ(b.cmd("select pg_try_advisory_lock(42)"), "f");
    EXPECT_EQ(b.cmd("COMMIT"), "COMMIT");
  }
  EXPECT_EQ(a.cmd("select pg_advisory_unlock(42)"), "t");
  EXPECT_TRUE(eventually([&] { return pinnedClients(admin) == 0; })) << pinnedClients(admin);
  // Released: B in a transaction on A's server leaves A the other one.
  EXPECT_EQ(b.cmd("BEGIN"), "BEGIN");
  std::string pb = b.cmd("select pg_backend_pid()");
  EXPECT_NE(a.cmd("select pg_backend_pid()"), pb);
  EXPECT_EQ(b.cmd("COMMIT"), "COMMIT");

  // A client that leaves holding a lock: its server is closed, never handed on with the lock.
  {
    Conn c(dsn(proxy));
    EXPECT_EQ(c.cmd("select pg_advisory_lock(43)"), "");
    EXPECT_TRUE(eventually([&] { return pinnedClients(admin) == 1; }));
  }
  EXPECT_TRUE(eventually([&] { return pinnedClients(admin) == 0; }));
  EXPECT_TRUE(eventually([&] { return a.cmd("select pg_try_advisory_lock(43)") == "t"; }));
  EXPECT_EQ(a.cmd("select pg_advisory_unlock_all()"), "");
  EXPECT_TRUE(eventually([&] { return pinnedClients(admin) == 0; }));
  EXPECT_NE(proxy.log().find("its client left it holding a session advisory lock"),
            std::string::npos)
      << proxy.log();
}

TEST(PoolSessionState, CursorsAndTempTablesPinListenDelivers) {
  for (const char* mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    int admin = freePort();
    Proxy proxy(config(mode, admin), 1);
    Conn a(dsn(proxy)), b(dsn(proxy));
    EXPECT_EQ(a.cmd("DECLARE c CURSOR WITH HOLD FOR select generate_series(1, 3)"),
              "DECLARE CURSOR");
    EXPECT_EQ(b.cmd("BEGIN"), "BEGIN");  // the other server, in transaction mode
    EXPECT_EQ(a.cmd("FETCH 1 FROM c"), "1");
    EXPECT_EQ(b.cmd("COMMIT"), "COMMIT");
    EXPECT_EQ(a.cmd("FETCH 1 FROM c"), "2");
    EXPECT_EQ(a.cmd("CLOSE c"), "CLOSE CURSOR");

    EXPECT_EQ(a.cmd("CREATE TEMP TABLE scratch (x int)"), "CREATE TABLE");
    EXPECT_EQ(a.cmd("INSERT INTO scratch VALUES (1), (2)"), "INSERT 0 2");
    EXPECT_EQ(b.cmd("BEGIN"), "BEGIN");
    EXPECT_EQ(a.cmd("select count(*) from scratch"), "2");
    EXPECT_EQ(b.cmd("COMMIT"), "COMMIT");
    EXPECT_EQ(a.cmd("DISCARD TEMP"), "DISCARD TEMP");

    EXPECT_EQ(a.cmd("LISTEN other; LISTEN jobs"), "LISTEN");
    EXPECT_EQ(b.cmd("BEGIN"), "BEGIN");
    EXPECT_EQ(b.cmd("NOTIFY jobs, 'j1'"), "NOTIFY");
    EXPECT_EQ(b.cmd("COMMIT"), "COMMIT");
    EXPECT_TRUE(notified(a, "jobs", "j1"));
    EXPECT_EQ(a.cmd("UNLISTEN *"), "UNLISTEN");

    // Pinned by a lock, listening through pgproxy's own listener: a notification reaches the
    // client while it idles, not at its next transaction.
    EXPECT_EQ(a.cmd("select pg_advisory_lock(7)"), "");
    EXPECT_EQ(a.cmd("LISTEN jobs"), "LISTEN");
    EXPECT_EQ(b.cmd("NOTIFY jobs, 'j2'"), "NOTIFY");
    EXPECT_TRUE(notified(a, "jobs", "j2")) << "a pinned idle client's notification waited";
    EXPECT_EQ(a.cmd("UNLISTEN *"), "UNLISTEN");
    // asyncpg's reset, as its pool sends it when a connection goes back.
    EXPECT_EQ(a.cmd("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;"), "RESET");
    EXPECT_TRUE(eventually([&] { return pinnedClients(admin) == 0; }));
  }
}

TEST(PoolSessionState, SqlPrepareIsRefusedClearly) {
  Proxy proxy(config("transaction"), 1);
  Conn a(dsn(proxy));
  PGresult* r = PQexec(a.c, "PREPARE p (int) AS SELECT $1");
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(r, PG_DIAG_SQLSTATE), "0A000");
  EXPECT_NE(std::string(PQresultErrorMessage(r)).find("PREPARE of \"p\""), std::string::npos)
      << PQresultErrorMessage(r);
  PQclear(r);
  EXPECT_EQ(a.cmd("EXECUTE p(1)"), "ERROR:0A000");
  // In a transaction the refusal fails it, as PostgreSQL's own error would.
  EXPECT_EQ(a.cmd("BEGIN"), "BEGIN");
  EXPECT_EQ(a.cmd("PREPARE q AS SELECT 1"), "ERROR:0A000");
  EXPECT_EQ(a.cmd("select 1"), "ERROR:25P02");
  EXPECT_EQ(a.cmd("ROLLBACK"), "ROLLBACK");
  // DEALLOCATE of a name the client prepared through the protocol is pgproxy's to answer.
  EXPECT_EQ(a.prepare("s1", "select 41 + 1"), "PGRES_COMMAND_OK");
  EXPECT_EQ(a.exec("s1", {}), "42");
  EXPECT_EQ(a.cmd("DEALLOCATE s1"), "DEALLOCATE");
  EXPECT_EQ(a.exec("s1", {}), "ERROR:26000");
  EXPECT_EQ(a.cmd("DEALLOCATE s1"), "ERROR:26000");
  EXPECT_EQ(a.prepare("s1", "select 43"), "PGRES_COMMAND_OK");  // the name is free again
  EXPECT_EQ(a.exec("s1", {}), "43");

  // In session mode the server is the client's: SQL PREPARE works as on a direct connection.
  Proxy session(config("session"), 1);
  Conn s(dsn(session));
  EXPECT_EQ(s.cmd("PREPARE p (int) AS SELECT $1 * 2"), "PREPARE");
  EXPECT_EQ(s.cmd("EXECUTE p(21)"), "42");
  EXPECT_EQ(s.cmd("DEALLOCATE p"), "DEALLOCATE");
}

// LISTEN through a transaction pool of two servers and two workers: 50 asyncpg clients listen on
// five channels (pgproxy's hub listens for them, on a connection of its own per worker), and
// 1,000 notifications sent through the same pool reach each listener of their channel exactly
// once, in order. Then the clients leave, and so does the hub's connection.
TEST(PoolSessionState, ListenFiftyClientsFiveChannels) {
  authFile();
  int admin = freePort();
  Proxy proxy(config("transaction", admin), 2);
  runClient(kPython, "client.py", R"PY(
import asyncio
import sys

import asyncpg

dsn = sys.argv[1]
CHANNELS = 5
PER_CHANNEL = 200


async def main():
    got = {}
    done = asyncio.Event()
    listeners = []

    def on_notify(k):
        def cb(conn, pid, channel, payload):
            got[k].append((channel, int(payload)))
            if all(len(v) >= PER_CHANNEL for v in got.values()):
                done.set()
        return cb

    for k in range(50):
        c = await asyncpg.connect(dsn, statement_cache_size=0)
        got[k] = []
        await c.add_listener("ch%d" % (k % CHANNELS), on_notify(k))
        listeners.append(c)
    sender = await asyncpg.connect(dsn)
    for i in range(PER_CHANNEL):
        for ch in range(CHANNELS):
            await sender.execute("SELECT pg_notify($1, $2)", "ch%d" % ch, str(i))
    await asyncio.wait_for(done.wait(), 60)
    await asyncio.sleep(0.5)  # nothing more may come: a duplicate would show now
    for k, items in got.items():
        want = [("ch%d" % (k % CHANNELS), i) for i in range(PER_CHANNEL)]
        assert items == want, (k, len(items), items[:3])
    # Between notifications the listeners still run transactions, on either server.
    for c in listeners[:5]:
        assert await c.fetchval("select 1") == 1
    for c in listeners:
        await c.close()
    await sender.close()
    print("ok")


asyncio.run(main())
)PY",
            {"postgresql://pgproxy_pool:scram-pw@127.0.0.1:" + std::to_string(proxy.port()) +
             "/poolsession?sslmode=disable"},
            proxy);
  // The hubs' connections go once nobody listens: only the pool's own remain.
  EXPECT_TRUE(eventually([&] {
    return queryHost1(
               "select count(*) from pg_stat_activity where datname = 'poolsession' and "
               "query ilike 'LISTEN%'") == "0";
  })) << proxy.log();
}

// When the hub cannot listen, its listeners are told with a FATAL, never left waiting for
// notifications that will not come: no connection can be opened (the database's cap is taken by
// the client's own server), and the hub's connection is lost (its backend terminated).
TEST(PoolSessionState, ListenFailuresEndTheListenersClearly) {
  authFile();
  {
    std::string cfg = config("transaction");
    cfg.replace(cfg.find("size: 2}"), 8, "size: 1, max_db_connections: 1}");
    Proxy proxy(cfg, 1);
    Conn a(dsn(proxy));
    // The FATAL follows the LISTEN's CommandComplete, so libpq reports it without its SQLSTATE.
    EXPECT_EQ(a.cmd("LISTEN capped").rfind("ERROR:", 0), 0u);
    EXPECT_EQ(PQstatus(a.c), CONNECTION_BAD);
    EXPECT_NE(std::string(PQerrorMessage(a.c)).find("no server connection can be opened to LISTEN"),
              std::string::npos)
        << PQerrorMessage(a.c);
  }
  {
    Proxy proxy(config("transaction"), 1);
    Conn a(dsn(proxy)), b(dsn(proxy));
    EXPECT_EQ(a.cmd("LISTEN lost"), "LISTEN");
    EXPECT_EQ(queryHost1("select count(*) from pg_stat_activity where datname = 'poolsession' and "
                         "query ilike 'LISTEN%'"),
              "1");
    queryHost1(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = "
        "'poolsession' and query ilike 'LISTEN%'");
    EXPECT_TRUE(eventually([&] {
      PQconsumeInput(a.c);
      return PQstatus(a.c) == CONNECTION_BAD ||
             std::string(PQerrorMessage(a.c)).find("lost the connection that listened") !=
                 std::string::npos;
    })) << PQerrorMessage(a.c)
        << proxy.log();
    EXPECT_NE(proxy.log().find("the LISTEN connection was lost"), std::string::npos);
    // The pool serves on; another client may listen again.
    EXPECT_EQ(b.cmd("LISTEN again"), "LISTEN");
    EXPECT_EQ(b.cmd("select 1"), "1");
  }
}

// psycopg 3 evicts from its statement cache with DEALLOCATE (extended protocol); asyncpg's pool
// resets each connection it takes back. Both through a transaction pool, 8 clients at once.
TEST(PoolSessionState, DriversDeallocateAndReset) {
  authFile();
  Proxy proxy(config("transaction"), 1);
  runClient(kPython, "client.py", R"PY(
import asyncio
import sys
import threading

import asyncpg
import psycopg

dsn = sys.argv[1]
errors = []


def psycopg_client(i):
    try:
        with psycopg.connect(dsn, prepare_threshold=0, autocommit=True) as c:
            c.prepared_max = 4  # evicts, and DEALLOCATEs, all the time
            c.execute("SET statement_timeout = '%ds'" % (10 + i))
            for k in range(40):
                assert c.execute("select %%s::int + %d" % k, (i,)).fetchone()[0] == i + k
                got = c.execute("select current_setting('statement_timeout')").fetchone()[0]
                assert got == "%ds" % (10 + i), got
            assert c.execute("select %s::int", (7,)).fetchone()[0] == 7
    except Exception as e:  # noqa: BLE001
        errors.append("psycopg %d: %r" % (i, e))


async def asyncpg_main():
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2)

    async def use(i):
        async with pool.acquire() as c:
            before = await c.fetchval("select current_setting('work_mem')")
            assert before == "4MB", before  # the last user's SET was reset
            await c.execute("SET work_mem = '%dMB'" % (8 + i))
            await c.execute("SELECT pg_advisory_lock($1)", 1000 + i)
            assert await c.fetchval("select current_setting('work_mem')") == "%dMB" % (8 + i)
        # Released: asyncpg ran its reset (unlock all, RESET ALL) through pgproxy.

    for i in range(20):
        await use(i)
    await asyncio.gather(*[use(i) for i in range(20)])
    await pool.close()


threads = [threading.Thread(target=psycopg_client, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
asyncio.run(asyncpg_main())
print("ok")
)PY",
            {"postgresql://pgproxy_pool:scram-pw@127.0.0.1:" + std::to_string(proxy.port()) +
             "/poolsession?sslmode=disable"},
            proxy);
}

}  // namespace
}  // namespace pgproxy::it
