#include "pgproxy/sql/read_only.h"

#include <gtest/gtest.h>

namespace pgproxy::sql {
namespace {

const ReadOnlyFunctions kNone;

bool standby(std::string_view sql, const ReadOnlyFunctions& f = kNone) {
  return classifyForSplit(sql, f).target == Target::kStandby;
}

TEST(ReadOnly, PlainReadsGoToAStandby) {
  EXPECT_TRUE(standby("SELECT 1"));
  EXPECT_TRUE(standby("select * from accounts where id = $1"));
  EXPECT_TRUE(standby("  SELECT a, b FROM t JOIN u ON (t.id = u.id) WHERE x IN (1, 2);"));
  EXPECT_TRUE(standby("SELECT count(*), max(balance), coalesce(sum(x), 0) FROM t GROUP BY y"));
  EXPECT_TRUE(standby("VALUES (1), (2)"));
  EXPECT_TRUE(standby("TABLE accounts"));
  EXPECT_TRUE(standby("SHOW search_path"));
  EXPECT_TRUE(standby("(SELECT 1) UNION ALL (SELECT 2)"));
  EXPECT_TRUE(standby("SELECT 1; SELECT 2;"));
  EXPECT_TRUE(standby("WITH x AS (SELECT 1 AS a) SELECT a FROM x"));
  EXPECT_TRUE(standby("SELECT CAST(x AS numeric(10, 2)), y::varchar(20) FROM t"));
  EXPECT_TRUE(standby("SELECT * FROM generate_series(1, 10) AS g(i)"));
  EXPECT_TRUE(standby("SELECT EXISTS (SELECT 1 FROM t WHERE a = ANY($1))"));
  EXPECT_TRUE(standby("SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t"));
  EXPECT_TRUE(standby("SELECT pg_catalog.now(), lower('X')"));
  // An ORM's typical statement.
  EXPECT_TRUE(standby(
      "SELECT \"users\".\"id\", \"users\".\"email\" FROM \"users\" WHERE \"users\".\"id\" = $1 "
      "LIMIT $2"));
}

TEST(ReadOnly, WritesLocksAndUnknownCallsGoToThePrimary) {
  EXPECT_FALSE(standby("INSERT INTO t VALUES (1)"));
  EXPECT_FALSE(standby("UPDATE t SET a = 1"));
  EXPECT_FALSE(standby("DELETE FROM t"));
  EXPECT_FALSE(standby("SELECT * FROM t FOR UPDATE"));
  EXPECT_FALSE(standby("SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED"));
  EXPECT_FALSE(standby("SELECT * FROM t FOR SHARE"));
  EXPECT_FALSE(standby("SELECT * FROM t FOR KEY SHARE"));
  EXPECT_FALSE(standby("SELECT * INTO newtable FROM t"));
  EXPECT_FALSE(standby("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"));
  EXPECT_FALSE(standby("WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT 1"));
  EXPECT_FALSE(standby("SELECT nextval('s')"));
  EXPECT_FALSE(standby("SELECT txid_current()"));
  EXPECT_FALSE(standby("SELECT my_func(1)"));
  EXPECT_FALSE(standby("SELECT app.refresh_cache()"));
  EXPECT_FALSE(standby("SELECT \"Count\"(*) FROM t"));  // quoted: case-sensitive, not count
  EXPECT_FALSE(standby("SELECT pg_advisory_lock(1)"));
  EXPECT_FALSE(standby("SELECT set_config('a.b', 'c', false)"));
  EXPECT_FALSE(standby("SELECT 1; UPDATE t SET a = 2"));
  EXPECT_FALSE(standby("COPY t TO STDOUT"));
  EXPECT_FALSE(standby("EXPLAIN ANALYZE DELETE FROM t"));
  EXPECT_FALSE(standby("LOCK TABLE t IN SHARE MODE"));
  EXPECT_FALSE(standby("CALL p()"));
  EXPECT_FALSE(standby("DO $$ BEGIN PERFORM 1; END $$"));
  EXPECT_FALSE(standby("BEGIN"));
  EXPECT_FALSE(standby("BEGIN; SELECT 1; COMMIT"));
  EXPECT_FALSE(standby(""));
  EXPECT_FALSE(standby("  -- nothing\n"));
  EXPECT_FALSE(standby("LISTEN ch"));
}

TEST(ReadOnly, LiteralsCommentsAndDollarQuotesHideNothing) {
  // Keywords inside literals and comments are not statements or calls.
  EXPECT_TRUE(standby("SELECT 'DELETE FROM t; UPDATE x' AS s"));
  EXPECT_TRUE(standby("SELECT $$ INSERT INTO t $$, $tag$ nextval('s') $tag$"));
  EXPECT_TRUE(standby("SELECT 1 /* FOR UPDATE */ -- ; DELETE FROM t\n"));
  EXPECT_TRUE(standby("SELECT E'it\\'s; UPDATE', \"weird;name\" FROM t"));
  EXPECT_TRUE(standby("SELECT 1 /* nested /* DELETE */ still comment */"));
  // And a statement hidden after a literal is still seen.
  EXPECT_FALSE(standby("SELECT 'a;b'; DELETE FROM t"));
  EXPECT_FALSE(standby("SELECT $x$ ; $x$; INSERT INTO t VALUES (1)"));
  // What the lexer cannot follow goes to the primary.
  EXPECT_FALSE(standby("SELECT 'unterminated"));
  EXPECT_FALSE(standby("SELECT 1 /* open"));
  EXPECT_FALSE(standby("SELECT $q$ open"));
}

TEST(ReadOnly, ReadOnlyTransactions) {
  EXPECT_TRUE(standby("BEGIN READ ONLY"));
  EXPECT_TRUE(standby("begin transaction read only; select 1"));
  EXPECT_TRUE(standby("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"));
  EXPECT_TRUE(standby("BEGIN; SET TRANSACTION READ ONLY; SELECT 1"));
  EXPECT_TRUE(standby("SET TRANSACTION READ ONLY"));
  EXPECT_FALSE(standby("BEGIN READ WRITE"));
  // A standby refuses serializable transactions ("cannot use serializable mode in a hot
  // standby"): those stay on the primary.
  EXPECT_FALSE(standby("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE"));
  EXPECT_FALSE(standby("BEGIN; SELECT 1; SET TRANSACTION READ ONLY"));
  SplitDecision d = classifyForSplit("BEGIN", kNone);
  EXPECT_TRUE(d.explicit_begin);
  d = classifyForSplit("BEGIN READ ONLY", kNone);
  EXPECT_FALSE(d.explicit_begin);
  // read_write_split: optimistic tries a plain BEGIN on a standby: only when nothing in the
  // same Query is known to need the primary.
  EXPECT_TRUE(classifyForSplit("start transaction; select 1; select 2", kNone).explicit_begin);
  EXPECT_TRUE(classifyForSplit("BEGIN ISOLATION LEVEL REPEATABLE READ", kNone).explicit_begin);
  EXPECT_FALSE(classifyForSplit("BEGIN; INSERT INTO t VALUES (1)", kNone).explicit_begin);
  EXPECT_FALSE(classifyForSplit("BEGIN; SELECT 1 FOR UPDATE", kNone).explicit_begin);
  EXPECT_FALSE(classifyForSplit("BEGIN ISOLATION LEVEL SERIALIZABLE", kNone).explicit_begin);
  EXPECT_FALSE(classifyForSplit("BEGIN READ WRITE", kNone).explicit_begin);
  EXPECT_FALSE(classifyForSplit("BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", kNone)
                   .explicit_begin);
  EXPECT_FALSE(classifyForSplit("SELECT 1; BEGIN", kNone).explicit_begin);
}

TEST(ReadOnly, HintsAndTheSessionSetting) {
  SplitDecision d = classifyForSplit("/* pgproxy: primary */ SELECT 1", kNone);
  EXPECT_EQ(d.target, Target::kPrimary);
  EXPECT_TRUE(d.hinted);
  EXPECT_FALSE(d.writes);  // what the text is, for read_after_write
  d = classifyForSplit("  /*pgproxy:standby*/ SELECT my_func()", kNone);
  EXPECT_TRUE(d.writes);  // an unknown call may write
  EXPECT_FALSE(classifyForSplit("SET search_path = a; RESET work_mem", kNone).writes);
  EXPECT_TRUE(classifyForSplit("SET x = 1; INSERT INTO t VALUES (1)", kNone).writes);
  EXPECT_TRUE(classifyForSplit("BEGIN", kNone).writes);
  EXPECT_FALSE(classifyForSplit("BEGIN READ ONLY", kNone).writes);
  EXPECT_EQ(d.target, Target::kStandby);
  EXPECT_TRUE(d.hinted);
  d = classifyForSplit("/* PGPROXY: Standby */ SELECT 1", kNone);
  EXPECT_TRUE(d.hinted);
  // Not a hint: not leading, or another word.
  EXPECT_FALSE(classifyForSplit("SELECT 1 /* pgproxy: primary */", kNone).hinted);
  EXPECT_FALSE(classifyForSplit("/* pgproxy: replica */ SELECT 1", kNone).hinted);

  d = classifyForSplit("SET pgproxy.route = primary", kNone);
  EXPECT_TRUE(d.sets_route);
  EXPECT_EQ(d.route, RouteSetting::kPrimary);
  EXPECT_EQ(d.target, Target::kPrimary);
  d = classifyForSplit("set session pgproxy.route to 'standby'", kNone);
  EXPECT_TRUE(d.sets_route);
  EXPECT_EQ(d.route, RouteSetting::kStandby);
  d = classifyForSplit("SET pgproxy.route = auto", kNone);
  EXPECT_EQ(d.route, RouteSetting::kAuto);
  d = classifyForSplit("RESET pgproxy.route", kNone);
  EXPECT_TRUE(d.sets_route);
  EXPECT_EQ(d.route, RouteSetting::kAuto);
  d = classifyForSplit("RESET ALL", kNone);
  EXPECT_TRUE(d.sets_route);
  EXPECT_FALSE(classifyForSplit("SET LOCAL pgproxy.route = primary", kNone).sets_route);
  EXPECT_FALSE(classifyForSplit("SET search_path = app", kNone).sets_route);
  EXPECT_FALSE(classifyForSplit("SET other.route = primary", kNone).sets_route);
}

TEST(ReadOnly, ConfiguredReadOnlyFunctions) {
  ReadOnlyFunctions f({"My_Func", "app.lookup", "similarity"});
  EXPECT_TRUE(standby("SELECT my_func(1)", f));
  EXPECT_TRUE(standby("SELECT MY_FUNC(1)", f));
  EXPECT_TRUE(standby("SELECT app.lookup($1)", f));
  EXPECT_TRUE(standby("SELECT APP.Lookup($1)", f));
  EXPECT_FALSE(standby("SELECT other.lookup($1)", f));
  EXPECT_FALSE(standby("SELECT app.my_func($1)", f));  // listed unqualified only
  EXPECT_TRUE(standby("SELECT similarity(a, b) FROM t", f));
  EXPECT_TRUE(standby("SELECT \"count\"(*) FROM t"));  // the same name as count
}

TEST(ReadOnly, HostileInputNeverCrashesOrBlowsUp) {
  std::string deep(10000, '(');
  EXPECT_FALSE(standby(deep));
  std::string many;
  for (int i = 0; i < 5000; ++i) {
    many += "SELECT 1;";
  }
  EXPECT_TRUE(standby(many));
  (void)standby(std::string("SELECT \0 1", 10));         // PostgreSQL ends the text at the NUL
  EXPECT_FALSE(standby("SELECT (1"));                    // unbalanced: PostgreSQL refuses it anyway
  EXPECT_FALSE(standby(std::string(200, 'x') + "(1)"));  // a name longer than any listed
  EXPECT_FALSE(standby("SELECT " + std::string(200, 'a') + "(1)"));
}

}  // namespace
}  // namespace pgproxy::sql
