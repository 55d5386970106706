// Read/write split (issue 18): a PostgreSQL 15 primary with two streaming standbys the tests
// build; transactions the classifier proves read-only go to a standby, everything else to the
// primary, hints and SET pgproxy.route override it, read_after_write keeps a client's reads on
// the primary after its write, and max_replica_lag takes a standby whose replay is paused out
// of the reads until it catches up.
#include <gtest/gtest.h>

#include <string>

#include "harness.h"

namespace pgproxy::it {
namespace {

struct Clusters {
  int primary = 0, standby1 = 0, standby2 = 0;
};

// Built once for the file: a primary (cluster "wp") and two standbys ("wr1", "wr2"), with the
// table the tests write.
const Clusters& clusters() {
  static Clusters c = [] {
    Clusters out;
    out.primary = freePort();
    out.standby1 = freePort();
    out.standby2 = freePort();
    auto r = sandboxCommand("primary", {"wp", std::to_string(out.primary)});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = psql(direct(out.primary),
             "CREATE TABLE ledger (id bigserial PRIMARY KEY, client int, n int); "
             "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'SELECT 1'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    for (auto [name, port] : {std::pair{"wr1", out.standby1}, std::pair{"wr2", out.standby2}}) {
      r = sandboxCommand("standby", {name, std::to_string(port), std::to_string(out.primary)});
      EXPECT_EQ(r.exit_code, 0) << r.output;
    }
    return out;
  }();
  return c;
}

// A pooled transaction-mode mapping over the three, split; `extra` adds mapping keys.
std::string splitConfig(const std::string& extra, int admin_port = 0) {
  const Clusters& c = clusters();
  std::string admin =
      admin_port ? "admin: {listen: \"127.0.0.1:" + std::to_string(admin_port) + "\"}\n" : "";
  return admin +
         "auth: {type: trust}\n"
         "mappings:\n"
         "  - external: db.example.com\n"
         "    backends:\n"
         "      - {host: 127.0.0.1, port: " +
         std::to_string(c.primary) +
         "}\n      - {host: 127.0.0.1, port: " + std::to_string(c.standby1) +
         "}\n      - {host: 127.0.0.1, port: " + std::to_string(c.standby2) +
         "}\n"
         "    health_check: {interval: 200ms, timeout: 2s, fall: 1, rise: 1, user: postgres}\n"
         "    pool: {mode: transaction, size: 6}\n"
         "    read_write_split: true\n" +
         extra;
}

std::string info(const Proxy& proxy) {
  return "host=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=disable user=postgres dbname=postgres connect_timeout=20 gssencmode=disable";
}

const char* kWhere = "SELECT current_setting('cluster_name')";

// Waits until the health checks know both standbys (a read lands on each).
void waitForRoles(const Proxy& proxy) {
  // Until the first check has found the primary, sessions are refused ("no backend ... is
  // available"): Conn would count that as a failure, psql only says it.
  EXPECT_TRUE(eventually([&] { return psql(info(proxy), "select 1").exit_code == 0; }))
      << proxy.log();
  bool seen1 = false, seen2 = false;
  EXPECT_TRUE(eventually([&] {
    Conn c(info(proxy));
    for (int i = 0; i < 8; ++i) {
      std::string at = c.one(kWhere);
      seen1 = seen1 || at == "wr1";
      seen2 = seen2 || at == "wr2";
    }
    return seen1 && seen2;
  })) << proxy.log();
}

TEST(Split, AThousandMixedTransactionsWritesOnThePrimaryReadsOnTheStandbys) {
  Proxy proxy(splitConfig("    read_after_write: off\n"));
  waitForRoles(proxy);
  const Clusters& c = clusters();
  std::string before = psql(direct(c.primary), "SELECT count(*) FROM ledger").output;
  // 20 clients, 50 transactions each: a third write (an INSERT on its own, or an explicit
  // transaction around two), the rest read (simple and extended protocol, a CTE, an aggregate,
  // BEGIN READ ONLY). Every read reports the cluster that answered it.
  runClient(kPython, "split_mixed.py", R"PY(
import sys, threading, collections
import psycopg
conninfo = sys.argv[1]
where = collections.Counter()
errors = []
writes = [0]
lock = threading.Lock()
def client(k):
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for i in range(50):
                if i % 3 == 0:
                    if i % 2 == 0:
                        conn.execute("INSERT INTO ledger (client, n) VALUES (%s, %s)", (k, i))
                        w = 1
                    else:
                        with conn.transaction():
                            conn.execute("INSERT INTO ledger (client, n) VALUES (%s, %s)", (k, i))
                            conn.execute("INSERT INTO ledger (client, n) VALUES (%s, %s)", (k, -i))
                        w = 2
                    with lock:
                        writes[0] += w
                    continue
                kind = i % 4
                if kind == 0:
                    row = conn.execute("SELECT current_setting('cluster_name'), count(*) FROM ledger WHERE client = %s", (k,)).fetchone()
                elif kind == 1:
                    row = conn.execute("WITH x AS (SELECT max(id) AS m FROM ledger) SELECT current_setting('cluster_name'), m FROM x").fetchone()
                elif kind == 2:
                    conn.execute("BEGIN READ ONLY")
                    row = conn.execute("SELECT current_setting('cluster_name')").fetchone()
                    conn.execute("COMMIT")
                else:
                    row = conn.execute("SELECT current_setting('cluster_name') /* ; DELETE FROM ledger */").fetchone()
                with lock:
                    where[row[0]] += 1
    except Exception as e:
        with lock:
            errors.append(repr(e))
threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
for t in threads: t.start()
for t in threads: t.join()
print("where", dict(where), "writes", writes[0], "errors", errors[:3])
assert not errors, errors
assert where["wp"] == 0, where          # no proven read ran on the primary
assert where["wr1"] > 50 and where["wr2"] > 50, where   # both standbys took reads
print("writes", writes[0])
print("ok")
)PY",
            {info(proxy)}, proxy);
  // Every write landed on the primary and nothing was lost: 17 single inserts and 17 double
  // ones per client of the 50 (i % 3 == 0: 17 values, alternating).
  std::string after = psql(direct(c.primary), "SELECT count(*) FROM ledger").output;
  int added = std::stoi(after) - std::stoi(before);
  EXPECT_EQ(added, 20 * (9 * 1 + 8 * 2)) << before << " -> " << after;
  // The standbys have them too once replayed: the writes went through the primary.
  EXPECT_TRUE(eventually(
      [&] { return psql(direct(c.standby1), "SELECT count(*) FROM ledger").output == after; }));
}

TEST(Split, HintsTheSessionSettingAndReadAfterWrite) {
  Proxy proxy(splitConfig("    read_after_write: 30s\n    read_only_functions: [bump]\n"));
  waitForRoles(proxy);
  Conn c(info(proxy));
  // The cluster that answered: the first column.
  auto on = [&](const std::string& sql) {
    std::string row = c.one(sql);
    return row.substr(0, row.find('|'));
  };
  EXPECT_NE(on(kWhere), "wp");
  EXPECT_EQ(on(std::string("/* pgproxy: primary */ ") + kWhere), "wp");
  EXPECT_NE(on("SELECT current_setting('cluster_name'), bump()"), "wp");  // read_only_functions
  {
    // A call that writes (a sequence): the primary; on a connection of its own, as the write
    // keeps that client's reads on the primary for read_after_write.
    Conn w(info(proxy));
    EXPECT_EQ(w.one("SELECT current_setting('cluster_name') || nextval('ledger_id_seq') * 0"),
              "wp0");
  }
  // Quoted: PRIMARY is a reserved word, and the server parses the SET too.
  EXPECT_EQ(c.cmd("SET pgproxy.route = 'primary'"), "SET");
  EXPECT_EQ(on(kWhere), "wp");
  EXPECT_NE(on(std::string("/* pgproxy: standby */ ") + kWhere), "wp");  // a hint beats it
  EXPECT_EQ(c.cmd("RESET pgproxy.route"), "RESET");
  EXPECT_NE(on(kWhere), "wp");
  // BEGIN READ ONLY: the whole transaction on a standby.
  EXPECT_EQ(c.cmd("BEGIN READ ONLY"), "BEGIN");
  EXPECT_NE(on(kWhere), "wp");
  EXPECT_EQ(on("SELECT pg_is_in_recovery()"), "t");
  EXPECT_EQ(c.cmd("COMMIT"), "COMMIT");
  // Plain BEGIN: the primary (the statements to come are unknown).
  EXPECT_EQ(c.cmd("BEGIN"), "BEGIN");
  EXPECT_EQ(on(kWhere), "wp");
  EXPECT_EQ(c.cmd("COMMIT"), "COMMIT");
  // read_after_write: after this client's write, its reads stay on the primary (30 s here) and
  // see the write; another client's reads do not stay.
  EXPECT_EQ(c.cmd("INSERT INTO ledger (client, n) VALUES (-1, -1)"), "INSERT 0 1");
  EXPECT_EQ(on(kWhere), "wp");
  EXPECT_EQ(on("SELECT count(*) > 0 FROM ledger WHERE client = -1"), "t");
  Conn other(info(proxy));
  EXPECT_NE(other.one(kWhere), "wp");
  // A standby never sees a write: no 25006 for anything the client sends.
  EXPECT_EQ(other.cmd("UPDATE ledger SET n = n WHERE client = -1"), "UPDATE 1");
}

// What the client set follows it to the standbys: reported parameters (rebased on the standby
// pool's welcome), other settings, and its named prepared statements.
TEST(Split, TheClientsStateFollowsItToTheStandbys) {
  Proxy proxy(splitConfig("    read_after_write: off\n"));
  waitForRoles(proxy);
  Conn c(info(proxy));
  EXPECT_EQ(c.cmd("SET application_name = 'split-app'"), "SET");
  EXPECT_EQ(c.cmd("SET work_mem = '7MB'"), "SET");
  EXPECT_EQ(c.prepare("where", "SELECT current_setting('cluster_name'), $1::int + 1"),
            "PGRES_COMMAND_OK");
  for (int i = 0; i < 6; ++i) {
    std::string row = c.one(
        "SELECT current_setting('cluster_name'), current_setting('application_name'), "
        "current_setting('work_mem')");
    EXPECT_TRUE(row == "wr1|split-app|7MB" || row == "wr2|split-app|7MB") << row;
    std::string got = c.exec("where", {"41"});
    EXPECT_TRUE(got == "wr1|42" || got == "wr2|42") << got;
  }
}

// No standby among the backends (or none up): the reads run on the primary, nothing refused.
TEST(Split, WithoutAStandbyReadsRunOnThePrimary) {
  std::string cfg = splitConfig("    read_after_write: off\n");
  // The primary alone: the two standby lines go.
  for (int port : {clusters().standby1, clusters().standby2}) {
    std::string line = "      - {host: 127.0.0.1, port: " + std::to_string(port) + "}\n";
    cfg.erase(cfg.find(line), line.size());
  }
  Proxy proxy(cfg);
  EXPECT_TRUE(eventually([&] { return psql(info(proxy), kWhere).output == "wp\n"; }))
      << proxy.log();
  Conn c(info(proxy));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(c.one(kWhere), "wp");
  }
}

// A SCRAM client: the standby's pool logs in with what the client proved to pgproxy, as the
// home pool does (the bench found a standby pool that had no credentials at all).
TEST(Split, AScramClientsReadsLogInToTheStandbyWithItsProof) {
  const Clusters& c = clusters();
  auto r = psql(direct(c.primary),
                "SET password_encryption = 'scram-sha-256'; "
                "CREATE ROLE pgproxy_pool LOGIN PASSWORD 'scram-pw'; "
                "GRANT SELECT, INSERT ON ledger TO pgproxy_pool; "
                "GRANT USAGE ON SEQUENCE ledger_id_seq TO pgproxy_pool");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string verifier =
      psql(direct(c.primary), "SELECT rolpassword FROM pg_authid WHERE rolname = 'pgproxy_pool'")
          .output;
  verifier.erase(verifier.find_last_not_of('\n') + 1);
  std::string dir = tempDir("pgproxy-split-scram");
  writeFile(dir + "/users.txt", "\"pgproxy_pool\" \"" + verifier + "\"\n");
  std::string cfg = splitConfig("    read_after_write: off\n");
  cfg.replace(cfg.find("auth: {type: trust}"), 19,
              "auth: {type: scram-sha-256, file: " + dir + "/users.txt}");
  Proxy proxy(cfg);
  std::string conninfo = "host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                         " sslmode=disable user=pgproxy_pool password=scram-pw dbname=postgres "
                         "connect_timeout=20 gssencmode=disable";
  bool standby = false;
  EXPECT_TRUE(eventually([&] {
    Conn conn(conninfo);
    std::string at = conn.one(kWhere);
    standby = at == "wr1" || at == "wr2";
    return standby;
  })) << proxy.log();
  Conn conn(conninfo);
  for (int i = 0; i < 6; ++i) {
    std::string at = conn.one(kWhere);
    EXPECT_TRUE(at == "wr1" || at == "wr2") << at << proxy.log();
  }
  EXPECT_EQ(conn.cmd("INSERT INTO ledger (client, n) VALUES (-3, 0)"), "INSERT 0 1");
  run({"rm", "-rf", dir});
}

TEST(Split, ALaggingStandbyStopsTakingReadsAndGetsThemBackWhenItCatchesUp) {
  int admin = freePort();
  Proxy proxy(splitConfig("    read_after_write: off\n    max_replica_lag: 1s\n", admin));
  waitForRoles(proxy);
  const Clusters& c = clusters();
  auto lag = [&](int port) {
    std::string m = httpGet(admin, "/metrics").body;
    std::string key =
        "pgproxy_backend_replica_lag_seconds{mapping=\"db.example.com\",backend=\""
        "127.0.0.1:" +
        std::to_string(port) + "\"} ";
    std::size_t at = m.find(key);
    return at == std::string::npos ? -1.0 : std::stod(m.substr(at + key.size()));
  };
  EXPECT_TRUE(eventually([&] { return lag(c.standby1) == 0.0 && lag(c.primary) == 0.0; }))
      << httpGet(admin, "/metrics").body;
  ASSERT_EQ(psql(direct(c.standby1), "SELECT pg_wal_replay_pause()").exit_code, 0);
  // Writes on the primary that wr1 does not replay: its lag grows past 1 s.
  EXPECT_TRUE(eventually([&] {
    psql(direct(c.primary), "INSERT INTO ledger (client, n) VALUES (-2, 0)");
    return lag(c.standby1) > 1.0;
  })) << lag(c.standby1);
  // From the next check on, reads go to wr2 only.
  EXPECT_TRUE(eventually([&] {
    Conn r(info(proxy));
    for (int i = 0; i < 12; ++i) {
      if (r.one(kWhere) != "wr2") {
        return false;
      }
    }
    return true;
  }));
  ASSERT_EQ(psql(direct(c.standby1), "SELECT pg_wal_replay_resume()").exit_code, 0);
  EXPECT_TRUE(eventually([&] { return lag(c.standby1) == 0.0; }));
  EXPECT_TRUE(eventually([&] {
    Conn r(info(proxy));
    for (int i = 0; i < 12; ++i) {
      if (r.one(kWhere) == "wr1") {
        return true;
      }
    }
    return false;
  }));
}

// read_write_split: optimistic: a transaction begun with a plain BEGIN runs on a standby; when
// the standby refuses a write before any result reached the client, pgproxy rolls it back and
// runs the transaction again on the primary, and the client sees only the primary's answers.
std::string optimisticConfig(int admin_port) {
  std::string cfg = splitConfig("    read_after_write: off\n", admin_port);
  std::string from = "read_write_split: true";
  cfg.replace(cfg.find(from), from.size(), "read_write_split: optimistic");
  return cfg;
}

long long retries(int admin) {
  return scrapeMetric(admin, "pgproxy_split_retries_total");
}

TEST(Split, OptimisticBeginTriesAStandbyAndRunsAWriteAgainOnThePrimary) {
  int admin = freePort();
  Proxy proxy(optimisticConfig(admin));
  waitForRoles(proxy);
  const Clusters& c = clusters();
  auto rows = [&](int client) {
    return psql(direct(c.primary),
                "SELECT count(*), coalesce(sum(n), 0) FROM ledger WHERE client = " +
                    std::to_string(client))
        .output;
  };
  Conn conn(info(proxy));
  // A transaction that only reads: on a standby, begun with a plain BEGIN.
  EXPECT_EQ(conn.cmd("BEGIN"), "BEGIN");
  std::string at = conn.one(kWhere);
  EXPECT_TRUE(at == "wr1" || at == "wr2") << at;
  EXPECT_EQ(conn.one("SELECT pg_is_in_recovery()"), "t");
  EXPECT_EQ(conn.cmd("COMMIT"), "COMMIT");
  EXPECT_EQ(retries(admin), 0);

  // BEGIN, then a write: the standby's 25006 never reaches the client; the write runs once,
  // on the primary, and the transaction goes on there.
  EXPECT_EQ(conn.cmd("BEGIN"), "BEGIN");
  EXPECT_EQ(conn.cmd("INSERT INTO ledger (client, n) VALUES (-7, 1)"), "INSERT 0 1");
  EXPECT_EQ(conn.one(kWhere), "wp");
  EXPECT_EQ(conn.cmd("COMMIT"), "COMMIT");
  EXPECT_EQ(rows(-7), "1|1\n");
  EXPECT_EQ(retries(admin), 1);

  // Several batches before the write (no result among them): all run again on the primary,
  // their answers not repeated; what they set is in force there, and a session-level SET made
  // in the transaction follows the client after it commits.
  EXPECT_EQ(conn.cmd("BEGIN"), "BEGIN");
  EXPECT_EQ(conn.cmd("SET LOCAL work_mem = '3MB'"), "SET");
  EXPECT_EQ(conn.cmd("SET application_name = 'optimistic-app'"), "SET");
  EXPECT_EQ(conn.cmd("UPDATE ledger SET n = n + 1 WHERE client = -7"), "UPDATE 1");
  EXPECT_EQ(conn.one("SELECT current_setting('cluster_name'), current_setting('work_mem'), "
                     "current_setting('application_name')"),
            "wp|3MB|optimistic-app");
  EXPECT_EQ(conn.cmd("COMMIT"), "COMMIT");
  EXPECT_EQ(rows(-7), "1|2\n");
  EXPECT_EQ(retries(admin), 2);
  EXPECT_EQ(std::string(PQparameterStatus(conn.c, "application_name")), "optimistic-app");
  for (int i = 0; i < 4; ++i) {
    std::string row = conn.one(
        "SELECT current_setting('cluster_name'), current_setting('application_name'), "
        "current_setting('work_mem')");
    EXPECT_TRUE(row == "wr1|optimistic-app|4MB" || row == "wr2|optimistic-app|4MB") << row;
  }

  // A result reached the client before the write: what it read came from the standby, so the
  // transaction cannot move; the client gets the standby's 25006 and the transaction fails.
  EXPECT_EQ(conn.cmd("BEGIN"), "BEGIN");
  EXPECT_NE(conn.one(kWhere), "wp");
  EXPECT_EQ(conn.cmd("INSERT INTO ledger (client, n) VALUES (-7, 100)"), "ERROR:25006");
  EXPECT_EQ(conn.cmd("ROLLBACK"), "ROLLBACK");
  EXPECT_EQ(rows(-7), "1|2\n");
  EXPECT_EQ(retries(admin), 2);

  // Named statements the transaction prepares (libpq: Parse and Sync, then Bind and Execute)
  // are prepared again on the primary, under the same names, and stay the client's.
  EXPECT_EQ(conn.cmd("BEGIN"), "BEGIN");
  EXPECT_EQ(conn.prepare("bump7", "UPDATE ledger SET n = n + $1::int WHERE client = -7"),
            "PGRES_COMMAND_OK");
  EXPECT_EQ(conn.exec("bump7", {"5"}), "PGRES_COMMAND_OK");
  EXPECT_EQ(conn.cmd("COMMIT"), "COMMIT");
  EXPECT_EQ(rows(-7), "1|7\n");
  EXPECT_EQ(retries(admin), 3);
  EXPECT_EQ(conn.exec("bump7", {"-5"}), "PGRES_COMMAND_OK");
  EXPECT_EQ(rows(-7), "1|2\n");

  // Past 64 KiB of the transaction's bytes pgproxy keeps no more: a refusal is the client's.
  EXPECT_EQ(conn.cmd("BEGIN"), "BEGIN");
  EXPECT_EQ(conn.cmd("/* " + std::string(70 << 10, 'x') + " */ SET LOCAL work_mem = '5MB'"), "SET");
  EXPECT_EQ(conn.cmd("INSERT INTO ledger (client, n) VALUES (-7, 100)"), "ERROR:25006");
  EXPECT_EQ(conn.cmd("ROLLBACK"), "ROLLBACK");
  EXPECT_EQ(retries(admin), 3);

  // A session advisory lock taken in a transaction tried on a standby keeps the client there
  // (said in the log): its writes fail until it lets go, then run on the primary again.
  EXPECT_EQ(conn.cmd("BEGIN"), "BEGIN");
  EXPECT_EQ(conn.one("SELECT pg_advisory_lock(77) IS NULL"), "f");
  EXPECT_EQ(conn.cmd("COMMIT"), "COMMIT");
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("a standby, between transactions (a session advisory lock)") !=
           std::string::npos;
  })) << proxy.log();
  EXPECT_EQ(conn.cmd("INSERT INTO ledger (client, n) VALUES (-7, 100)"), "ERROR:25006");
  EXPECT_EQ(conn.one("SELECT pg_advisory_unlock(77)"), "t");

  // The session goes on: a write outside a transaction runs on the primary as before.
  EXPECT_EQ(conn.cmd("INSERT INTO ledger (client, n) VALUES (-7, 10)"), "INSERT 0 1");
  EXPECT_EQ(rows(-7), "2|12\n");
}

// Real drivers, many at once: psycopg's transactions (BEGIN as a simple Query, the statements
// in the extended protocol) from 10 clients. Reads stay on the standbys, every write lands on the
// primary exactly once, and only read-then-write transactions see 25006.
TEST(Split, OptimisticTransactionsFromManyClientsLoseAndDoubleNothing) {
  int admin = freePort();
  Proxy proxy(optimisticConfig(admin));
  waitForRoles(proxy);
  const Clusters& c = clusters();
  runClient(kPython, "split_optimistic.py", R"PY(
import sys, threading, collections
import psycopg
conninfo = sys.argv[1]
where = collections.Counter()
written = collections.Counter()
late = [0]
errors = []
lock = threading.Lock()
def client(k):
    try:
        with psycopg.connect(conninfo) as conn:   # not autocommit: psycopg sends BEGIN
            for i in range(30):
                kind = i % 3
                if kind == 0:
                    row = conn.execute("SELECT current_setting('cluster_name')").fetchone()
                    conn.commit()
                    with lock:
                        where[row[0]] += 1
                elif kind == 1:
                    # From its 6th run psycopg prepares the statement (a named Parse) in the
                    # transaction tried on the standby.
                    conn.execute("INSERT INTO ledger (client, n) VALUES (%s, %s), (%s, %s)",
                                 (1000 + k, i, 1000 + k, -i))
                    row = conn.execute("SELECT current_setting('cluster_name')").fetchone()
                    conn.commit()
                    assert row[0] == "wp", row
                    with lock:
                        written[k] += 2
                else:
                    conn.execute("SELECT 1").fetchone()
                    try:
                        conn.execute("INSERT INTO ledger (client, n) VALUES (%s, %s)", (1000 + k, 5))
                        raise AssertionError("a write after a read ran on a standby")
                    except psycopg.errors.ReadOnlySqlTransaction:
                        conn.rollback()
                        with lock:
                            late[0] += 1
    except Exception as e:
        with lock:
            errors.append(repr(e))
threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
for t in threads: t.start()
for t in threads: t.join()
print("where", dict(where), "written", sum(written.values()), "late", late[0], "errors", errors[:3])
assert not errors, errors
assert where["wp"] == 0, where
assert late[0] == 100, late
print("ok")
)PY",
            {info(proxy)}, proxy);
  // 10 clients x 10 transactions x 2 rows, each once, and none of the refused ones.
  EXPECT_EQ(psql(direct(c.primary),
                 "SELECT count(*), sum(n), count(*) FILTER (WHERE n = 5) FROM ledger "
                 "WHERE client >= 1000")
                .output,
            "200|0|0\n");
  EXPECT_EQ(retries(admin), 100);
}

}  // namespace
}  // namespace pgproxy::it
