// SessionState as a pure policy: statements in (as the tracker hands them over), ReadyForQuery
// statuses in, the client's and the server's settings and the pin out. Then the tracker with a
// SessionState as its hook, for DEALLOCATE of protocol-level names. (pool_session_state_test.cc
// checks the same through pgproxy against a real PostgreSQL.)
#include "pgproxy/pool/session_state.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "pgproxy/proto/wire.h"
#include "wire_test_util.h"

namespace pgproxy::pool {
namespace {

using Action = QueryVerdict::Action;
using test::parse;
using test::types;

struct Session {
  SessionState state;
  Params client, server;
  explicit Session(Params startup = {}, bool search_path_reported = false)
      : state(startup, search_path_reported), client(startup), server(startup) {}
  // One simple Query, answered with `status` (after an error when `error`).
  QueryVerdict query(const std::string& sql, char status = 'I', bool error = false) {
    QueryVerdict v = state.onQuery(sql);
    state.onUnitEnd();
    if (error) {
      state.onError();
    }
    state.ready(status, client, server);
    return v;
  }
  std::string get(const Params& p, const char* name) {
    const std::string* v = p.get(name);
    return v ? *v : "(none)";
  }
};

TEST(SessionState, SetOutsideATransactionIsCarried) {
  Session s;
  s.query("SET statement_timeout = '5s'");
  EXPECT_EQ(s.get(s.client, "statement_timeout"), "5s");
  EXPECT_EQ(s.get(s.server, "statement_timeout"), "5s");
  s.query("set Work_Mem TO 65536; SET lock_timeout TO DEFAULT");
  EXPECT_EQ(s.get(s.client, "work_mem"), "65536");
  // set_config with literals is a SET; with is_local true it ends with the transaction.
  s.query("SELECT set_config('myapp.user', 'alice', false), set_config('x.y', '1', true)");
  EXPECT_EQ(s.get(s.client, "myapp.user"), "alice");
  EXPECT_EQ(s.get(s.client, "x.y"), "(none)");
  EXPECT_EQ(*s.state.pinned(), '\0');
  // SET LOCAL needs nothing.
  s.query("SET LOCAL statement_timeout = 1");
  EXPECT_EQ(s.get(s.client, "statement_timeout"), "5s");
}

TEST(SessionState, ReportedParametersFollowParameterStatus) {
  Session s;
  s.query("SET application_name = 'x'; SET DateStyle = ISO");
  // Its value bound as a parameter: the server's report says what it is (psycopg does this).
  s.query("select set_config('application_name', $1, false)");
  EXPECT_TRUE(s.client.empty());
  EXPECT_STREQ(s.state.pinned(), "");
  // search_path is reported from PostgreSQL 18 only: before, its SET is carried like any other.
  s.query("SET search_path = app, public");
  EXPECT_EQ(s.get(s.client, "search_path"), "app, public");
  Session r({}, true);
  r.query("SET search_path = app, public");
  EXPECT_TRUE(r.client.empty());
}

TEST(SessionState, RolledBackTransactionsChangeNothing) {
  Session s;
  s.query("BEGIN", 'T');
  s.query("SET statement_timeout = 1000", 'T');
  s.query("ROLLBACK");
  EXPECT_TRUE(s.client.empty());
  // An error in the transaction: its COMMIT is a rollback.
  s.query("BEGIN; SET statement_timeout = 1000", 'T');
  s.query("SELECT 1/0", 'E', true);
  s.query("COMMIT");
  EXPECT_TRUE(s.client.empty());
  // An implicit transaction that fails.
  s.query("SET statement_timeout = 1000; SELECT 1/0", 'I', true);
  EXPECT_TRUE(s.client.empty());
  // A committed one.
  s.query("BEGIN", 'T');
  s.query("SET statement_timeout = 1000", 'T');
  s.query("COMMIT");
  EXPECT_EQ(s.get(s.client, "statement_timeout"), "1000");
}

TEST(SessionState, SavepointsUndoWhatFollowsThem) {
  Session s;
  s.query("BEGIN; SET a.x = 1; SAVEPOINT p1", 'T');
  s.query("SET a.y = 2; SAVEPOINT p2; SET a.z = 3", 'T');
  s.query("SELECT 1/0", 'E', true);
  s.query("ROLLBACK TO p2", 'T');  // the transaction goes on; a.z is undone
  s.query("RELEASE p1", 'T');
  s.query("COMMIT");
  EXPECT_EQ(s.get(s.client, "a.x"), "1");
  EXPECT_EQ(s.get(s.client, "a.y"), "2");
  EXPECT_EQ(s.get(s.client, "a.z"), "(none)");
  s.query("BEGIN; SAVEPOINT p; SET a.x = 5; ROLLBACK TO SAVEPOINT p; COMMIT");
  EXPECT_EQ(s.get(s.client, "a.x"), "1");
}

TEST(SessionState, PipelinedUnitsAreAnsweredInOrder) {
  Session s;
  // Both sent before either is answered: the first fails, the second is carried.
  s.state.onQuery("SET statement_timeout = 'bad'");
  s.state.onUnitEnd();
  s.state.onParse("SET lock_timeout = 100");  // extended protocol, up to its Sync
  s.state.onUnitEnd();
  s.state.onError();
  s.state.ready('I', s.client, s.server);
  EXPECT_TRUE(s.client.empty());
  s.state.ready('I', s.client, s.server);
  EXPECT_EQ(s.get(s.client, "lock_timeout"), "100");
  EXPECT_EQ(s.get(s.client, "statement_timeout"), "(none)");
}

TEST(SessionState, ResetGoesBackToTheStartupValue) {
  Params startup;
  startup.set("statement_timeout", "7s");
  Session s(startup);
  s.query("SET statement_timeout = 1; SET work_mem = '8MB'; SET ROLE app");
  EXPECT_EQ(s.get(s.client, "statement_timeout"), "1");
  s.query("RESET statement_timeout");
  EXPECT_EQ(s.get(s.client, "statement_timeout"), "7s");
  // The server went to its own default: the next link sets the client's again.
  EXPECT_EQ(s.get(s.server, "statement_timeout"), "(none)");
  s.query("RESET ALL");
  EXPECT_EQ(s.get(s.client, "work_mem"), "(none)");
  EXPECT_EQ(s.get(s.client, "role"), "app");  // RESET ALL leaves the role alone
  EXPECT_EQ(s.get(s.server, "role"), "app");
  s.query("DISCARD ALL");
  EXPECT_EQ(s.get(s.client, "role"), "(none)");
  EXPECT_EQ(s.get(s.client, "statement_timeout"), "7s");
  EXPECT_TRUE(s.server.empty());
}

TEST(SessionState, AdvisoryLocksPin) {
  Session s;
  s.query("SELECT pg_advisory_lock(1)");
  EXPECT_STREQ(s.state.pinned(), "a session advisory lock");
  s.query("SELECT pg_advisory_lock(2), pg_try_advisory_lock(3)");
  s.query("SELECT pg_advisory_unlock(1)");
  EXPECT_STRNE(s.state.pinned(), "");
  s.query("SELECT pg_advisory_unlock(2), pg_advisory_unlock(3)");
  EXPECT_STREQ(s.state.pinned(), "");
  // Transaction-level locks end with the transaction.
  s.query("SELECT pg_advisory_xact_lock(1)");
  EXPECT_STREQ(s.state.pinned(), "");
  // A session lock outlives a rollback; an unlock in a failed statement may not have run.
  s.query("BEGIN; SELECT pg_advisory_lock(9)", 'T');
  s.query("ROLLBACK");
  EXPECT_STRNE(s.state.pinned(), "");
  s.query("SELECT pg_advisory_unlock(9), 1/0", 'I', true);
  EXPECT_STRNE(s.state.pinned(), "");
  EXPECT_STREQ(s.state.takeProbe(), SessionState::kLockProbe);
  s.query("SELECT pg_advisory_unlock_all()");
  EXPECT_STREQ(s.state.pinned(), "");
  EXPECT_EQ(s.state.takeProbe(), nullptr);  // unlock_all leaves none: nothing to ask
  // The server's count is what counts: pg_try_advisory_lock may have taken nothing.
  s.query("SELECT pg_try_advisory_lock(5)");
  EXPECT_STRNE(s.state.pinned(), "");
  EXPECT_STREQ(s.state.takeProbe(), SessionState::kLockProbe);
  s.state.onOwnRow("0");
  EXPECT_STREQ(s.state.pinned(), "");
  s.query("SELECT pg_advisory_lock(id) FROM generate_series(1, 3) id");
  s.state.onOwnRow("3");
  s.query("SELECT pg_advisory_unlock(1)");
  s.state.onOwnRow("2");
  EXPECT_STRNE(s.state.pinned(), "");
  s.state.onOwnRow("not a count");
  EXPECT_STRNE(s.state.pinned(), "");
  s.query("SELECT pg_advisory_unlock_all()");
  // asyncpg's reset releases everything.
  s.query("SELECT pg_advisory_lock(1); LISTEN ch; DECLARE c CURSOR WITH HOLD FOR SELECT 1");
  EXPECT_STRNE(s.state.pinned(), "");
  s.query("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;");
  EXPECT_STREQ(s.state.pinned(), "");
}

TEST(SessionState, CursorsTempTablesListenAndOpaqueSettingsPin) {
  Session s;
  s.query("DECLARE c1 CURSOR WITH HOLD FOR SELECT 1");
  EXPECT_STREQ(s.state.pinned(), "a WITH HOLD cursor");
  s.query("CLOSE c1");
  EXPECT_STREQ(s.state.pinned(), "");
  // Declared in a transaction that rolled back: it never existed.
  s.query("BEGIN; DECLARE c2 CURSOR WITH HOLD FOR SELECT 1", 'T');
  s.query("ROLLBACK");
  EXPECT_STREQ(s.state.pinned(), "");
  s.query("CREATE TEMP TABLE t (a int)");
  EXPECT_STREQ(s.state.pinned(), "a temporary table");
  s.query("CREATE TEMP TABLE t2 (a int) ON COMMIT DROP");
  s.query("DISCARD TEMP");
  EXPECT_STREQ(s.state.pinned(), "");
  // LISTEN in a query of other statements runs on the server: it pins.
  s.query("LISTEN jobs; SELECT 1");
  EXPECT_STREQ(s.state.pinned(), "LISTEN");
  s.query("UNLISTEN jobs");
  EXPECT_STREQ(s.state.pinned(), "");
  s.query("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE");
  EXPECT_STRNE(s.state.pinned(), "");
  s.query("RESET ALL");
  EXPECT_STREQ(s.state.pinned(), "");
  s.query("SET x.y = INTERVAL '1' HOUR");  // a value pgproxy does not decode
  EXPECT_STRNE(s.state.pinned(), "");
  s.query("DISCARD ALL");
  s.query("SELECT set_config('x.y', $1, false)");  // not a literal
  EXPECT_STRNE(s.state.pinned(), "");
  s.query("DISCARD ALL");
  std::string many;
  for (int i = 0; i < 1100; ++i) {
    many += "SELECT 1;";
  }
  s.query(many);  // past what pgproxy looks at: what it did is not known
  EXPECT_STRNE(s.state.pinned(), "");
}

TEST(SessionState, ListenAloneIsAnsweredForTheHub) {
  Session s;
  QueryVerdict v = s.query("LISTEN jobs; listen \"Other\"");
  EXPECT_EQ(v.action, Action::kAnswer);
  EXPECT_EQ(v.reply, proto::buildMessage('C', std::string("LISTEN\0", 7)) +
                         proto::buildMessage('C', std::string("LISTEN\0", 7)));
  EXPECT_STREQ(s.state.pinned(), "");
  auto changes = s.state.takeHubChanges();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0], std::make_pair('+', std::string("jobs")));
  EXPECT_EQ(changes[1], std::make_pair('+', std::string("Other")));
  // Rolled back: never happened.
  s.query("BEGIN", 'T');
  s.query("LISTEN third", 'T');
  s.query("ROLLBACK");
  EXPECT_TRUE(s.state.takeHubChanges().empty());
  // UNLISTEN anywhere (asyncpg's reset) leaves the hub's channels.
  s.query("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;");
  changes = s.state.takeHubChanges();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].first, '*');
  // By the extended protocol too (psycopg), and a name cut as PostgreSQL cuts it.
  v = s.state.onParse("LISTEN " + std::string(70, 'c'));
  EXPECT_EQ(v.action, Action::kAnswer);
  s.state.onUnitEnd();
  s.state.ready('I', s.client, s.server);
  changes = s.state.takeHubChanges();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].second, std::string(63, 'c'));
}

// Memory stays bounded whatever a transaction does: past kMaxTransactionSteps its changes are
// one the client's server keeps (a pin), or nothing if it rolls back.
TEST(SessionState, ATransactionOfTooManyChangesPinsInsteadOfGrowing) {
  Session s;
  // A transaction of more than kMaxTransactionSteps statements, each `step` and a number.
  auto overflow = [&s](const std::string& step) {
    s.query("BEGIN", 'T');
    for (std::size_t i = 0; i <= SessionState::kMaxTransactionSteps / 64; ++i) {
      std::string sql;
      for (int k = 0; k < 64; ++k) {
        sql += step + std::to_string(k) + "; ";
      }
      s.query(sql, 'T');
    }
  };
  overflow("SAVEPOINT p; SET x.y = ");
  s.query("ROLLBACK");
  EXPECT_STREQ(s.state.pinned(), "");
  EXPECT_TRUE(s.client.empty());
  overflow("SET x.y = ");
  s.query("COMMIT");
  EXPECT_STRNE(s.state.pinned(), "");
}

TEST(SessionState, SqlPreparedStatementsAreRefused) {
  Session s;
  QueryVerdict v = s.query("PREPARE p (int) AS SELECT $1");
  EXPECT_EQ(v.action, Action::kRefuse);
  EXPECT_NE(v.reply.find("0A000"), std::string::npos);
  EXPECT_NE(v.reply.find("PREPARE of \"p\""), std::string::npos);
  v = s.query("SELECT 1; EXECUTE p(1)");
  EXPECT_EQ(v.action, Action::kRefuse);
  EXPECT_NE(v.reply.find("EXECUTE of \"p\""), std::string::npos);
  v = s.query("DEALLOCATE \"S_1\"");
  EXPECT_EQ(v.action, Action::kDeallocate);
  EXPECT_EQ(v.name, "S_1");
  v = s.query("DEALLOCATE x; SELECT 1");
  EXPECT_EQ(v.action, Action::kRefuse);
  EXPECT_EQ(s.query("DEALLOCATE ALL").action, Action::kForward);
  EXPECT_EQ(s.query("PREPARE TRANSACTION 'gid'").action, Action::kForward);
  EXPECT_EQ(s.state.onParse("PREPARE q AS SELECT 1").action, Action::kRefuse);
}

// ---- the tracker with a SessionState as its hook --------------------------------------------

std::string bindUnnamed() {
  return proto::buildMessage('B',
                             std::string("\0\0", 2) + test::u16(0) + test::u16(0) + test::u16(0));
}
std::string simpleQuery(const std::string& sql) {
  return proto::buildMessage('Q', sql + '\0');
}
TEST(SessionState, TrackerAnswersDeallocateOfAProtocolLevelName) {
  StatementRegistry registry;
  ServerStatements server(registry);
  PreparedTracker t(registry, 200);
  SessionState state({}, false);
  t.setQueryHook(&state);
  std::string up, down;
  ASSERT_TRUE(
      t.fromClient(parse("_pg3_0", "SELECT 1") + proto::buildMessage('S', ""), server, up, down));
  ASSERT_TRUE(t.fromServer(proto::buildMessage('1', "") + proto::buildMessage('Z', "I"), &server,
                           up, down));
  EXPECT_EQ(t.statements(), 1u);
  // Simple Query: the server runs an empty query; the client gets DEALLOCATE's reply.
  up.clear();
  down.clear();
  ASSERT_TRUE(t.fromClient(simpleQuery("DEALLOCATE _pg3_0"), server, up, down));
  EXPECT_EQ(up, simpleQuery(""));
  EXPECT_EQ(t.statements(), 0u);
  ASSERT_TRUE(t.fromServer(proto::buildMessage('I', "") + proto::buildMessage('Z', "I"), &server,
                           up, down));
  EXPECT_EQ(down, proto::buildMessage('C', std::string("DEALLOCATE\0", 11)) +
                      proto::buildMessage('Z', "I"));
  // The server's copy stays for the other clients that prepared the same text.
  EXPECT_EQ(server.size(), 1u);
  // Extended protocol (psycopg): Parse/Bind/Describe/Execute/Sync of "DEALLOCATE name".
  up.clear();
  down.clear();
  ASSERT_TRUE(
      t.fromClient(parse("s2", "SELECT 2") + proto::buildMessage('S', ""), server, up, down));
  ASSERT_TRUE(t.fromServer(proto::buildMessage('1', "") + proto::buildMessage('Z', "I"), &server,
                           up, down));
  up.clear();
  down.clear();
  ASSERT_TRUE(t.fromClient(
      parse("", "DEALLOCATE s2") + bindUnnamed() + proto::buildMessage('D', std::string("P\0", 2)) +
          proto::buildMessage('E', std::string("\0\0\0\0\0", 5)) + proto::buildMessage('S', ""),
      server, up, down));
  EXPECT_EQ(types(up), "PBDES");
  EXPECT_NE(up.find(parse("", "")), std::string::npos);
  EXPECT_EQ(t.statements(), 0u);
  down.clear();
  ASSERT_TRUE(t.fromServer(proto::buildMessage('1', "") + proto::buildMessage('2', "") +
                               proto::buildMessage('n', "") + proto::buildMessage('I', "") +
                               proto::buildMessage('Z', "I"),
                           &server, up, down));
  EXPECT_EQ(types(down), "12nCZ");
  // A name the client does not have: PostgreSQL's error, and nothing reaches the server.
  up.clear();
  down.clear();
  ASSERT_TRUE(t.fromClient(simpleQuery("DEALLOCATE nope"), server, up, down));
  ASSERT_TRUE(t.fromServer(
      proto::buildMessage('E', "SERROR\0C42601\0Mx\0\0") + proto::buildMessage('Z', "I"), &server,
      up, down));
  EXPECT_NE(down.find("26000"), std::string::npos);
  EXPECT_NE(down.find("prepared statement \"nope\" does not exist"), std::string::npos);
}

}  // namespace
}  // namespace pgproxy::pool
