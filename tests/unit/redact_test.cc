#include "pgproxy/proto/redact.h"

#include <gtest/gtest.h>

#include <string>

namespace pgproxy::proto {
namespace {

TEST(RedactPasswords, RoleStatements) {
  EXPECT_EQ(redactPasswords("ALTER ROLE bob PASSWORD 'secret'"), "ALTER ROLE bob PASSWORD '***'");
  EXPECT_EQ(redactPasswords("alter user bob with encrypted password 'secret' valid until 'x'"),
            "alter user bob with encrypted password '***' valid until 'x'");
  EXPECT_EQ(redactPasswords("CREATE ROLE bob LOGIN PASSWORD 'secret';"),
            "CREATE ROLE bob LOGIN PASSWORD '***';");
  EXPECT_EQ(redactPasswords("create user \"Bob\" PaSsWoRd 'secret' createdb"),
            "create user \"Bob\" PaSsWoRd '***' createdb");
  // psql's \password sends the verifier, which is as good as the password to an attacker.
  EXPECT_EQ(redactPasswords("ALTER USER bob PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi'"),
            "ALTER USER bob PASSWORD '***'");
  EXPECT_EQ(redactPasswords("ALTER ROLE bob PASSWORD NULL"), "ALTER ROLE bob PASSWORD NULL");
}

TEST(RedactPasswords, EveryLiteralForm) {
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD E'se\\'cr''et' LOGIN"),
            "ALTER ROLE r PASSWORD '***' LOGIN");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD e'x'"), "ALTER ROLE r PASSWORD '***'");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD $$sec'ret$$ LOGIN"),
            "ALTER ROLE r PASSWORD '***' LOGIN");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD $pw$a $$ b$pw$ LOGIN"),
            "ALTER ROLE r PASSWORD '***' LOGIN");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD U&'d\\0061t' LOGIN"),
            "ALTER ROLE r PASSWORD '***' LOGIN");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD N'x' LOGIN"),
            "ALTER ROLE r PASSWORD '***' LOGIN");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD 'it''s' LOGIN"),
            "ALTER ROLE r PASSWORD '***' LOGIN");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD 12345"), "ALTER ROLE r PASSWORD '***'");
}

TEST(RedactPasswords, CommentsAndCase) {
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD /* a 'comment' */ 'secret'"),
            "ALTER ROLE r PASSWORD /* a 'comment' */ '***'");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD -- note\n  'secret'"),
            "ALTER ROLE r PASSWORD -- note\n  '***'");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD /* outer /* inner */ still */ 'secret'"),
            "ALTER ROLE r PASSWORD /* outer /* inner */ still */ '***'");
  // The word inside a comment, a string or another identifier is not the keyword.
  EXPECT_EQ(redactPasswords("select 1 /* password */ , 'x'"), "select 1 /* password */ , 'x'");
  EXPECT_EQ(redactPasswords("select 'password', 'x'"), "select 'password', 'x'");
  EXPECT_EQ(redactPasswords("set password_encryption = 'scram-sha-256'"),
            "set password_encryption = 'scram-sha-256'");
  EXPECT_EQ(redactPasswords("select my_password 'x'"), "select my_password 'x'");
  EXPECT_EQ(redactPasswords("select \"PASSWORD\" 'x'"), "select \"PASSWORD\" 'x'");
  // A comment that looks like the start of a literal does not swallow the statement.
  EXPECT_EQ(redactPasswords("ALTER ROLE a PASSWORD 'x'; -- it's\nALTER ROLE b PASSWORD 'y'"),
            "ALTER ROLE a PASSWORD '***'; -- it's\nALTER ROLE b PASSWORD '***'");
}

TEST(RedactPasswords, OptionsAndComparisons) {
  EXPECT_EQ(redactPasswords("CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password "
                            "'secret')"),
            "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password '***')");
  EXPECT_EQ(redactPasswords("ALTER USER MAPPING FOR bob SERVER s OPTIONS (SET \"password\" 'x')"),
            "ALTER USER MAPPING FOR bob SERVER s OPTIONS (SET \"password\" '***')");
  EXPECT_EQ(redactPasswords("update users set password = 'hash' where id = 1"),
            "update users set password = '***' where id = 1");
  EXPECT_EQ(redactPasswords("select * from t where password='x' or name = 'y'"),
            "select * from t where password='***' or name = 'y'");
  // Only one '=' and nothing else may come between.
  EXPECT_EQ(redactPasswords("select password || 'x'"), "select password || 'x'");
}

TEST(RedactPasswords, SeveralStatementsAndParseMessages) {
  EXPECT_EQ(redactPasswords("ALTER ROLE a PASSWORD 'x'; ALTER ROLE b PASSWORD 'y'; select 'z'"),
            "ALTER ROLE a PASSWORD '***'; ALTER ROLE b PASSWORD '***'; select 'z'");
  // Parse: statement name, NUL, query, NUL, then binary parameter types. A quote in the name
  // does not run into the query.
  std::string parse("it's\0ALTER ROLE r PASSWORD 'secret'\0\0\0", 38);
  std::string want("it's\0ALTER ROLE r PASSWORD '***'\0\0\0", 35);
  EXPECT_EQ(redactPasswords(parse), want);
}

TEST(RedactPasswords, UnterminatedAndMalformed) {
  // Cut short (log_protocol captures at most 1 KiB): redacted to the end.
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD 'secr"), "ALTER ROLE r PASSWORD '***'");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD E'sec\\'"), "ALTER ROLE r PASSWORD '***'");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD $x$secret"), "ALTER ROLE r PASSWORD '***'");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD /* open 'secret'"),
            "ALTER ROLE r PASSWORD /* open 'secret'");  // all comment: nothing is a literal
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD"), "ALTER ROLE r PASSWORD");
  EXPECT_EQ(redactPasswords("PASSWORD '"), "PASSWORD '***'");
  EXPECT_EQ(redactPasswords("PASSWORD $"), "PASSWORD $");
  EXPECT_EQ(redactPasswords("PASSWORD $1"), "PASSWORD $1");
  EXPECT_EQ(redactPasswords(""), "");
  EXPECT_EQ(redactPasswords("'"), "'");
  EXPECT_EQ(redactPasswords(std::string("\xff\xfe PASSWORD 'x' \x80", 17)),
            std::string("\xff\xfe PASSWORD '***' \x80", 19));
}

// With standard_conforming_strings off a backslash escapes a quote in a plain literal; with it on
// it does not. Either way, nothing of the secret may show.
TEST(RedactPasswords, BackslashesCannotHideTheSecret) {
  // On: the literal is 'abc\' and "secret'" follows; off: the literal runs to the end.
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD 'abc\\' secret'"),
            "ALTER ROLE r PASSWORD '***'");
  EXPECT_EQ(redactPasswords("ALTER ROLE r PASSWORD 'a\\'' LOGIN"), "ALTER ROLE r PASSWORD '***'");
  // Off: 'x\'' is one literal and the ALTER that follows is code; on it would be inside a string.
  EXPECT_EQ(redactPasswords("select 'x\\''; ALTER ROLE r PASSWORD 'secret'"),
            "select 'x\\''; ALTER ROLE r PASSWORD '***'");
}

}  // namespace
}  // namespace pgproxy::proto
