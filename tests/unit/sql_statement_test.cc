#include "pgproxy/sql/statement.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace pgproxy::sql {
namespace {

Statement one(std::string_view sql) {
  auto s = split(sql);
  EXPECT_EQ(s.statements.size(), 1u) << sql;
  EXPECT_FALSE(s.truncated);
  return s.statements.empty() ? Statement{} : s.statements[0];
}

std::vector<Kind> kinds(std::string_view sql) {
  std::vector<Kind> out;
  for (const auto& st : split(sql).statements) {
    out.push_back(st.kind);
  }
  return out;
}

TEST(SqlStatement, SplitsAtTopLevelSemicolons) {
  auto s = split("  SELECT 1 ;\n SET work_mem = '1MB';SELECT (1;2)  ");
  ASSERT_EQ(s.statements.size(), 3u);
  EXPECT_EQ(s.statements[0].text, "SELECT 1");
  EXPECT_EQ(s.statements[1].text, "SET work_mem = '1MB'");
  EXPECT_EQ(s.statements[1].kind, Kind::kSet);
  EXPECT_EQ(s.statements[2].text, "SELECT (1;2)");  // a ';' inside parentheses does not split
  EXPECT_EQ(split(";;SELECT 1;;").statements.size(), 1u);  // empty statements are skipped
}

TEST(SqlStatement, SemicolonsInsideCommentsAndLiteralsDoNotSplit) {
  const char* cases[] = {
      "SELECT 1 -- ; SET x = 1\n",
      "SELECT 1 /* ; /* nested ; */ still a comment ; SET x = 1 */",
      "SELECT \"a;\"\"b\" FROM t",
      "SELECT 'a;''; SET x = 1'",
      "SELECT E'\\'; SET x = 1'",
      "SELECT e'a\\\\'",
      "SELECT U&'\\0041;' UESCAPE '!'",
      "SELECT U&\"a;b\"",
      "SELECT $$ ; SET x = 1 $$",
      "SELECT $tag$ ; $$ ; $t$ ; $tag$",
      "SELECT $_1$ ; $_1$",
      "SELECT B'01', X'ff', N'a;b'",
  };
  for (const char* sql : cases) {
    auto s = split(sql);
    ASSERT_EQ(s.statements.size(), 1u) << sql;
    EXPECT_EQ(s.statements[0].kind, Kind::kOther) << sql;
    EXPECT_EQ(s.statements[0].text, std::string_view(sql).substr(0, s.statements[0].text.size()));
  }
  // The comment ends the statement's text where its last token does.
  EXPECT_EQ(one("SELECT 1 -- x").text, "SELECT 1");
}

TEST(SqlStatement, ParametersAreNotDollarQuotes) {
  auto s = split("SELECT $1; SET x = 1; SELECT $2$3");
  ASSERT_EQ(s.statements.size(), 3u);
  EXPECT_EQ(s.statements[1].kind, Kind::kSet);
  // An identifier may hold '$': it does not open a quote either.
  EXPECT_EQ(split("SELECT a$$b; SET x = 1").statements.size(), 2u);
}

TEST(SqlStatement, KeywordsInsideLiteralsAreNotStatements) {
  EXPECT_EQ(one("SELECT 'SET x = 1'").kind, Kind::kOther);
  EXPECT_EQ(one("/* BEGIN */ SELECT 1").kind, Kind::kOther);
  EXPECT_EQ(one("-- BEGIN\nCOMMIT").kind, Kind::kCommit);
  EXPECT_EQ(one("\"set\" x").kind, Kind::kOther);  // a quoted identifier is never a keyword
}

TEST(SqlStatement, EmptyInput) {
  for (const char* sql : {"", "   ", "-- only\n", "/* a */ /* b */", ";", " ; ; "}) {
    auto s = split(sql);
    ASSERT_EQ(s.statements.size(), 1u) << sql;
    EXPECT_EQ(s.statements[0].kind, Kind::kEmpty) << sql;
    EXPECT_TRUE(s.statements[0].text.empty());
  }
}

TEST(SqlStatement, SetForms) {
  auto st = one("SET statement_timeout TO 1");
  EXPECT_EQ(st.kind, Kind::kSet);
  EXPECT_EQ(st.name, "statement_timeout");
  EXPECT_EQ(st.value, "1");

  st = one("set Work_Mem = 'a' ;");
  EXPECT_EQ(st.kind, Kind::kSet);
  EXPECT_EQ(st.name, "work_mem");
  EXPECT_EQ(st.value, "'a'");

  st = one("SET SESSION statement_timeout = '5s'");
  EXPECT_EQ(st.kind, Kind::kSet);
  EXPECT_EQ(st.name, "statement_timeout");
  EXPECT_EQ(st.value, "'5s'");

  st = one("SET search_path = \"$user\", public");
  EXPECT_EQ(st.kind, Kind::kSet);
  EXPECT_EQ(st.name, "search_path");
  EXPECT_EQ(st.value, "\"$user\", public");

  st = one("SET \"MyExt\".Setting TO -1");
  EXPECT_EQ(st.name, "MyExt.setting");
  EXPECT_EQ(st.value, "-1");

  st = one("SET TIME ZONE 'Europe/Paris'");
  EXPECT_EQ(st.kind, Kind::kSet);
  EXPECT_EQ(st.name, "timezone");
  EXPECT_EQ(st.value, "'Europe/Paris'");

  st = one("SET SCHEMA 'app'");
  EXPECT_EQ(st.name, "search_path");
  EXPECT_EQ(st.value, "'app'");
  EXPECT_EQ(one("SET NAMES 'UTF8'").name, "client_encoding");
  st = one("SET ROLE app_reader");
  EXPECT_EQ(st.kind, Kind::kSet);
  EXPECT_EQ(st.name, "role");

  EXPECT_EQ(one("SET LOCAL statement_timeout = 1").kind, Kind::kSetLocal);
  EXPECT_EQ(one("SET LOCAL TIME ZONE 'UTC'").kind, Kind::kSetLocal);
  EXPECT_EQ(one("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").kind, Kind::kSetLocal);
  EXPECT_EQ(one("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").kind, Kind::kSetOther);
  EXPECT_EQ(one("SET").kind, Kind::kOther);
  EXPECT_EQ(one("SET x y").kind, Kind::kOther);
}

TEST(SqlStatement, SetToDefaultIsReset) {
  for (const char* sql :
       {"SET work_mem TO DEFAULT", "SET work_mem = default", "RESET work_mem", "reset WORK_MEM"}) {
    auto st = one(sql);
    EXPECT_EQ(st.kind, Kind::kReset) << sql;
    EXPECT_EQ(st.name, "work_mem") << sql;
  }
  EXPECT_EQ(one("SET TIME ZONE LOCAL").kind, Kind::kReset);
  EXPECT_EQ(one("RESET TIME ZONE").name, "timezone");
  EXPECT_EQ(one("SET ROLE NONE").kind, Kind::kReset);
  EXPECT_EQ(one("RESET ALL").kind, Kind::kResetAll);
  EXPECT_EQ(one("RESET").kind, Kind::kOther);
}

TEST(SqlStatement, PreparedStatements) {
  auto st = one("PREPARE Foo (int, text) AS SELECT $1, $2");
  EXPECT_EQ(st.kind, Kind::kPrepare);
  EXPECT_EQ(st.name, "foo");
  st = one("EXECUTE \"Foo\"(1, 'a')");
  EXPECT_EQ(st.kind, Kind::kExecute);
  EXPECT_EQ(st.name, "Foo");
  st = one("DEALLOCATE foo");
  EXPECT_EQ(st.kind, Kind::kDeallocate);
  EXPECT_EQ(st.name, "foo");
  st = one("DEALLOCATE PREPARE foo");
  EXPECT_EQ(st.kind, Kind::kDeallocate);
  EXPECT_EQ(st.name, "foo");
  EXPECT_EQ(one("DEALLOCATE ALL").kind, Kind::kDeallocateAll);
  EXPECT_EQ(one("DEALLOCATE PREPARE ALL").kind, Kind::kDeallocateAll);
  // A statement called "prepare": DEALLOCATE PREPARE with nothing after names it.
  st = one("DEALLOCATE prepare");
  EXPECT_EQ(st.kind, Kind::kDeallocate);
  EXPECT_EQ(st.name, "prepare");
  // Two-phase commit is not a prepared statement.
  EXPECT_EQ(one("PREPARE TRANSACTION 'gid'").kind, Kind::kOther);
  EXPECT_EQ(one("COMMIT PREPARED 'gid'").kind, Kind::kOther);
  EXPECT_EQ(one("ROLLBACK PREPARED 'gid'").kind, Kind::kOther);
}

TEST(SqlStatement, DiscardListenCursorsTempTables) {
  EXPECT_EQ(one("DISCARD ALL").kind, Kind::kDiscardAll);
  EXPECT_EQ(one("discard temp").kind, Kind::kDiscardTemp);
  EXPECT_EQ(one("DISCARD TEMPORARY").kind, Kind::kDiscardTemp);
  EXPECT_EQ(one("DISCARD PLANS").kind, Kind::kDiscardOther);
  auto st = one("LISTEN \"Chan\"");
  EXPECT_EQ(st.kind, Kind::kListen);
  EXPECT_EQ(st.name, "Chan");
  st = one("UNLISTEN chan");
  EXPECT_EQ(st.kind, Kind::kUnlisten);
  EXPECT_EQ(st.name, "chan");
  EXPECT_EQ(one("UNLISTEN *").kind, Kind::kUnlistenAll);

  st = one("DECLARE C1 CURSOR WITH HOLD FOR SELECT 1");
  EXPECT_EQ(st.kind, Kind::kDeclareHold);
  EXPECT_EQ(st.name, "c1");
  EXPECT_EQ(one("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1").kind, Kind::kDeclareHold);
  EXPECT_EQ(one("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1").kind, Kind::kOther);
  EXPECT_EQ(one("DECLARE c CURSOR FOR SELECT 1").kind, Kind::kOther);
  // "with hold" after FOR belongs to the query (a CTE named hold), not to the cursor.
  EXPECT_EQ(one("DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold").kind,
            Kind::kOther);
  st = one("CLOSE c1");
  EXPECT_EQ(st.kind, Kind::kClose);
  EXPECT_EQ(st.name, "c1");
  EXPECT_EQ(one("CLOSE ALL").kind, Kind::kCloseAll);

  for (const char* sql :
       {"CREATE TEMP TABLE t (a int)", "CREATE TEMPORARY TABLE t AS SELECT 1",
        "CREATE GLOBAL TEMP TABLE t (a int)", "create local temporary view v as select 1",
        "CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "CREATE TEMP SEQUENCE s",
        "CREATE TABLE pg_temp.t (a int)", "CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS",
        "SELECT 1 AS a INTO TEMP t", "SELECT 1 AS a INTO TEMPORARY TABLE t"}) {
    EXPECT_EQ(one(sql).kind, Kind::kCreateTemp) << sql;
  }
  // Gone at commit: nothing outlives the transaction.
  EXPECT_EQ(one("CREATE TEMP TABLE t (a int) ON COMMIT DROP").kind, Kind::kOther);
  EXPECT_EQ(one("CREATE TABLE t (a int)").kind, Kind::kOther);
  EXPECT_EQ(one("CREATE TABLE temp (a int)").kind, Kind::kOther);
}

TEST(SqlStatement, TransactionControl) {
  EXPECT_EQ(kinds("BEGIN; START TRANSACTION ISOLATION LEVEL SERIALIZABLE; BEGIN WORK"),
            (std::vector<Kind>{Kind::kBegin, Kind::kBegin, Kind::kBegin}));
  EXPECT_EQ(kinds("COMMIT; END; commit work; COMMIT AND CHAIN"),
            (std::vector<Kind>{Kind::kCommit, Kind::kCommit, Kind::kCommit, Kind::kCommit}));
  EXPECT_EQ(
      kinds("ROLLBACK; ABORT; ROLLBACK WORK; ROLLBACK TRANSACTION"),
      (std::vector<Kind>{Kind::kRollback, Kind::kRollback, Kind::kRollback, Kind::kRollback}));
  EXPECT_EQ(kinds("ROLLBACK TO SAVEPOINT a; ROLLBACK TO a; ROLLBACK WORK TO a"),
            (std::vector<Kind>{Kind::kRollbackTo, Kind::kRollbackTo, Kind::kRollbackTo}));
}

TEST(SqlStatement, AdvisoryLocks) {
  auto st = one("SELECT pg_advisory_lock(1), pg_catalog.pg_try_advisory_lock_shared(2)");
  EXPECT_TRUE(st.advisory_lock);
  EXPECT_EQ(st.advisory_locks, 2);
  EXPECT_FALSE(st.advisory_unlock);
  st = one("SELECT x, PG_ADVISORY_UNLOCK (1) FROM t");
  EXPECT_TRUE(st.advisory_unlock);
  EXPECT_EQ(st.advisory_unlocks, 1);
  EXPECT_TRUE(one("SELECT pg_advisory_unlock_all()").advisory_unlock_all);
  EXPECT_TRUE(one("SELECT pg_advisory_unlock_shared(1)").advisory_unlock);
  // Transaction-level locks end with the transaction.
  st = one("SELECT pg_advisory_xact_lock(1), pg_try_advisory_xact_lock_shared(2)");
  EXPECT_FALSE(st.advisory_lock);
  // Not a call: in a string, a comment, a quoted identifier that is a column, no parenthesis.
  for (const char* sql : {"SELECT 'pg_advisory_lock(1)'", "SELECT 1 /* pg_advisory_lock(1) */",
                          "SELECT 1 -- pg_advisory_lock(1)\n", "SELECT $$pg_advisory_lock(1)$$",
                          "SELECT pg_advisory_lock FROM t", "SELECT pg_advisory_locks(1)"}) {
    EXPECT_FALSE(one(sql).advisory_lock) << sql;
  }
  // In a DO block's body it is a string pgproxy does not look into.
  EXPECT_FALSE(one("DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$").advisory_lock);
}

TEST(SqlStatement, SetConfig) {
  auto st = one("SELECT set_config('work_mem', '64MB', false)");
  EXPECT_TRUE(st.set_config);
  ASSERT_EQ(st.config_calls.size(), 1u);
  EXPECT_EQ(st.config_calls[0].name, "work_mem");
  EXPECT_EQ(st.config_calls[0].value, "64MB");
  EXPECT_FALSE(st.set_config_opaque);

  st =
      one("SELECT pg_catalog.set_config('search_path', '\"$user\", public', FALSE),"
          " set_config(E'a.b', $x$it''s$x$, 'off')");
  ASSERT_EQ(st.config_calls.size(), 2u);
  EXPECT_EQ(st.config_calls[0].value, "\"$user\", public");
  EXPECT_EQ(st.config_calls[1].name, "a.b");
  EXPECT_EQ(st.config_calls[1].value, "it''s");

  // Transaction-local: nothing to track.
  st = one("SELECT set_config('work_mem', '64MB', true)");
  EXPECT_FALSE(st.set_config);
  EXPECT_FALSE(one("SELECT set_config('work_mem', '64MB', 'on')").set_config);

  // A named parameter set to a value only the server knows (a reported one, such as
  // application_name, is then followed through ParameterStatus).
  for (const char* sql : {"SELECT set_config('work_mem', $1, false)",
                          "SELECT set_config('work_mem', '1' || 'MB', false)",
                          "SELECT set_config('work_mem', '1MB', $3)",
                          "SELECT set_config('work_mem', E'\\x41', false)"}) {
    st = one(sql);
    EXPECT_TRUE(st.set_config) << sql;
    EXPECT_FALSE(st.set_config_opaque) << sql;
    ASSERT_EQ(st.config_calls.size(), 1u) << sql;
    EXPECT_EQ(st.config_calls[0].name, "work_mem");
    EXPECT_FALSE(st.config_calls[0].value_known) << sql;
  }
  // Session-level and not even the name known: of unknown effect.
  for (const char* sql : {"SELECT set_config(name, '1', false) FROM t",
                          "SELECT set_config('a', set_config('b', '1', false), false)",
                          "SELECT set_config('work_mem', '1MB'"}) {
    st = one(sql);
    EXPECT_TRUE(st.set_config) << sql;
    EXPECT_TRUE(st.set_config_opaque) << sql;
  }
  EXPECT_FALSE(one("SELECT 'set_config(''a'', ''b'', false)'").set_config);
}

TEST(SqlStatement, CreateFunctionBeginAtomicHoldsSemicolons) {
  auto s = split(
      "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true "
      "THEN 1 END; END; SET x = 1");
  ASSERT_EQ(s.statements.size(), 2u);
  EXPECT_EQ(s.statements[1].kind, Kind::kSet);
  // Outside a routine, BEGIN is a statement of its own.
  EXPECT_EQ(kinds("BEGIN; SET x = 1; END"),
            (std::vector<Kind>{Kind::kBegin, Kind::kSet, Kind::kCommit}));
}

TEST(SqlStatement, MalformedInputNeverReadsPastTheEnd) {
  // Unterminated constructs run to the end of the input; the statement before them is intact.
  for (const char* tail : {"'abc", "E'abc\\", "E'abc\\'", "\"abc", "$$abc", "$t$abc $t",
                           "/* abc /* */", "U&'abc", "-- abc"}) {
    std::string sql = std::string("SET x = 1; SELECT ") + tail;
    auto s = split(sql);
    ASSERT_EQ(s.statements.size(), 2u) << sql;
    EXPECT_EQ(s.statements[0].kind, Kind::kSet);
    EXPECT_LE(s.statements[1].text.data() + s.statements[1].text.size(), sql.data() + sql.size());
  }
  // A statement with an unterminated construct is refused by PostgreSQL as a whole, so it names
  // nothing: the fuzzer found `RESET ", ` naming `, ` while its trimmed text named `,`.
  for (const char* sql : {"RESET \", ", "SET x = 'a", "LISTEN \"ch", "PREPARE p AS $$x",
                          "SET x = 1 /* open", "DEALLOCATE E'p"}) {
    auto s = split(sql);
    ASSERT_EQ(s.statements.size(), 1u) << sql;
    EXPECT_EQ(s.statements[0].kind, Kind::kOther) << sql;
    EXPECT_EQ(s.statements[0].name, "") << sql;
    auto again = split(s.statements[0].text);
    EXPECT_EQ(again.statements[0].kind, Kind::kOther) << sql;
  }
  // NUL bytes are ordinary characters to the lexer.
  std::string nul("SELECT '\0;'; SET x\0 = 1", 24);
  auto s = split(nul);
  ASSERT_EQ(s.statements.size(), 2u);
  EXPECT_EQ(s.statements[1].kind, Kind::kOther);  // "x\0" is not a name and '=' then
  // A lone '$' and other stray bytes.
  EXPECT_EQ(split("$ ; $").statements.size(), 2u);
  EXPECT_EQ(split(std::string("\xff\xfe;\x80", 4)).statements.size(), 2u);
}

TEST(SqlStatement, HugeInputAndTruncation) {
  std::string big;
  for (int i = 0; i < 100000; ++i) {
    big += "SELECT 1;";
  }
  auto s = split(big);
  EXPECT_EQ(s.statements.size(), 64u);
  EXPECT_TRUE(s.truncated);
  s = split(big, 3);
  EXPECT_EQ(s.statements.size(), 3u);
  EXPECT_TRUE(s.truncated);
  s = split("SELECT 1; SELECT 2", 2);
  EXPECT_EQ(s.statements.size(), 2u);
  EXPECT_FALSE(s.truncated);
  s = split("SELECT 1", 0);
  EXPECT_TRUE(s.statements.empty());
  EXPECT_TRUE(s.truncated);

  // One statement of a million tokens: its calls are still found past the first tokens.
  std::string wide = "SELECT ";
  for (int i = 0; i < 200000; ++i) {
    wide += "1, ";
  }
  wide += "pg_advisory_lock(7)";
  auto st = one(wide);
  EXPECT_TRUE(st.advisory_lock);
  EXPECT_EQ(st.text.size(), wide.size());
  // A huge nesting depth is a counter, not recursion.
  std::string deep(500000, '(');
  EXPECT_EQ(split(deep + "; SET x = 1").statements.size(), 1u);
}

TEST(SqlStatement, FoldAndQuoteIdentifiers) {
  EXPECT_EQ(foldIdentifier("FooBar"), "foobar");
  EXPECT_EQ(foldIdentifier("\"FooBar\""), "FooBar");
  EXPECT_EQ(foldIdentifier("\"a\"\"b\""), "a\"b");
  EXPECT_EQ(foldIdentifier("U&\"Ab\""), "Ab");
  EXPECT_EQ(quoteIdentifier("a\"b"), "\"a\"\"b\"");
  EXPECT_EQ(foldIdentifier(quoteIdentifier("We\"ird name")), "We\"ird name");
}

TEST(SqlStatement, Savepoints) {
  auto one = [](const char* sql) { return split(sql).statements.at(0); };
  EXPECT_EQ(one("SAVEPOINT s1").kind, Kind::kSavepoint);
  EXPECT_EQ(one("SAVEPOINT s1").name, "s1");
  EXPECT_EQ(one("savepoint \"My Point\"").name, "My Point");
  EXPECT_EQ(one("ROLLBACK TO s1").kind, Kind::kRollbackTo);
  EXPECT_EQ(one("ROLLBACK TO s1").name, "s1");
  EXPECT_EQ(one("rollback work to savepoint S1").name, "s1");
  EXPECT_EQ(one("ROLLBACK TRANSACTION TO SAVEPOINT s1").kind, Kind::kRollbackTo);
  EXPECT_EQ(one("ROLLBACK TO savepoint").name, "savepoint");  // a savepoint named "savepoint"
  EXPECT_EQ(one("RELEASE s1").kind, Kind::kRelease);
  EXPECT_EQ(one("RELEASE SAVEPOINT s1").name, "s1");
  EXPECT_EQ(one("ROLLBACK").kind, Kind::kRollback);
  EXPECT_EQ(one("ROLLBACK PREPARED 'x'").kind, Kind::kOther);
}

TEST(SqlStatement, SettingValues) {
  auto value = [](std::string_view sql) {
    auto s = split(sql).statements.at(0);
    std::string out;
    EXPECT_TRUE(settingValue(s.value, out)) << sql;
    return out;
  };
  EXPECT_EQ(value("SET statement_timeout = 5000"), "5000");
  EXPECT_EQ(value("SET statement_timeout TO '5s'"), "5s");
  EXPECT_EQ(value("SET work_mem = E'64\\'MB'"), "64'MB");
  EXPECT_EQ(value("SET lock_timeout = $$1min$$"), "1min");
  EXPECT_EQ(value("SET x.y = -1"), "-1");
  EXPECT_EQ(value("SET x.y = +1.5"), "+1.5");
  EXPECT_EQ(value("SET enable_seqscan = OFF"), "off");
  EXPECT_EQ(value("SET ROLE \"Alice\""), "Alice");
  EXPECT_EQ(value("SET search_path = a, \"B c\", 'd'"), "a, \"B c\", d");
  EXPECT_EQ(value("SET x.y = 'it''s'"), "it's");
  std::string out;
  for (const char* v : {"", "INTERVAL '1' HOUR", "1 2", "'a", ",", "a,", "- a", "--1", "U&'x'",
                        "U&\"x\"", "B'101'", "E'\\101'", "(1)", "1 /* open"}) {
    EXPECT_FALSE(settingValue(v, out)) << v;
  }
}

}  // namespace
}  // namespace pgproxy::sql
