// The audit log's pure parts (event lines, statement classes, literal redaction, JSON strings)
// and its writer, on real descriptors: whole lines, counted losses, the failing flag.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "pgproxy/audit/audit.h"
#include "pgproxy/audit/writer.h"
#include "pgproxy/base/json.h"
#include "pgproxy/proto/redact.h"
#include "pgproxy/sql/audit_class.h"

namespace pgproxy {
namespace {

using sql::AuditClass;
using sql::auditClass;

TEST(JsonString, EscapesControlsAndKeepsValidUtf8) {
  auto json = [](std::string_view s) {
    std::string out;
    base::appendJsonString(out, s);
    return out;
  };
  EXPECT_EQ(json("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(json("l1\nl2\r\t"), "\"l1\\nl2\\r\\t\"");
  EXPECT_EQ(json(std::string_view("\x01\x7f", 2)), "\"\\u0001\\u007f\"");
  EXPECT_EQ(json(std::string_view("nul\0", 4)), "\"nul\\u0000\"");
  EXPECT_EQ(json("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"");
  // Invalid UTF-8 (a lone continuation byte, a cut sequence, an overlong, a surrogate) becomes
  // U+FFFD, byte by byte: a line stays JSON whatever a client sent.
  EXPECT_EQ(json("\x80"), "\"\xEF\xBF\xBD\"");
  EXPECT_EQ(json("\xC3"), "\"\xEF\xBF\xBD\"");
  EXPECT_EQ(json("\xC0\xAF"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
  EXPECT_EQ(json("\xED\xA0\x80"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
  EXPECT_EQ(json("\xF4\x90\x80\x80"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
  EXPECT_EQ(base::isoTime(1'700'000'000'123), "2023-11-14T22:13:20.123Z");
  // A bound cuts before a character or escape that would pass it.
  std::string cut;
  EXPECT_FALSE(base::appendJsonString(cut, "ab\ncd", 3));
  EXPECT_EQ(cut, "\"ab\"");
  cut.clear();
  EXPECT_FALSE(base::appendJsonString(cut, "\xE2\x82\xAC\xE2\x82\xAC", 4));
  EXPECT_EQ(cut, "\"\xE2\x82\xAC\"");
  cut.clear();
  EXPECT_TRUE(base::appendJsonString(cut, "abc", 3));
}

TEST(AuditEvent, OneJsonObjectPerLine) {
  audit::Event e("connect", 1'700'000'000'000);
  e.number("session", 7).text("client", "127.0.0.1:5000").flag("truncated", true);
  EXPECT_EQ(e.line(),
            "{\"time\":\"2023-11-14T22:13:20.000Z\",\"event\":\"connect\",\"session\":7,"
            "\"client\":\"127.0.0.1:5000\",\"truncated\":true}\n");
  e.text("late", "ignored");  // finished: the line does not change
  EXPECT_EQ(e.line().find("late"), std::string::npos);
}

// Whatever a client sends, a line fits one datagram: each field is cut (at a character, never
// inside an escape) and the event says so.
TEST(AuditEvent, LongFieldsAreCutAndSaySo) {
  audit::Event e("connect", 0);
  e.text("user", std::string(9000, 'u')).text("sni", std::string(3000, '\x01'));
  e.text("sql", std::string(audit::kMaxStatement, '\n'), audit::kMaxStatementField);
  const std::string& line = e.line();
  EXPECT_LE(line.size(), audit::kMaxLine);
  EXPECT_NE(line.find("\"user\":\"" + std::string(audit::kMaxField, 'u') + "\""),
            std::string::npos);
  EXPECT_NE(line.find("\"sni\":\"" +
                      [] {
                        std::string s;
                        for (std::size_t i = 0; i < audit::kMaxField / 6; ++i) {
                          s += "\\u0001";
                        }
                        return s;
                      }() +
                      "\""),
            std::string::npos);
  // The whole statement's escaped form fits its own limit.
  std::string sql;
  for (std::size_t i = 0; i < audit::kMaxStatement; ++i) {
    sql += "\\n";
  }
  EXPECT_NE(line.find("\"sql\":\"" + sql + "\""), std::string::npos);
  EXPECT_EQ(line.substr(line.size() - 19), ",\"truncated\":true}\n");
  audit::Event whole("connect", 0);
  whole.text("user", "bob").markTruncated().markTruncated();
  EXPECT_EQ(whole.line().find("\"truncated\":true"), whole.line().rfind("\"truncated\""));
}

TEST(AuditClass, DdlWriteAndRead) {
  EXPECT_EQ(auditClass("CREATE TABLE t(i int)"), AuditClass::kDdl);
  EXPECT_EQ(auditClass("  alter role bob password 'x'"), AuditClass::kDdl);
  EXPECT_EQ(auditClass("/* c */ DROP DATABASE prod"), AuditClass::kDdl);
  EXPECT_EQ(auditClass("grant select on t to bob"), AuditClass::kDdl);
  EXPECT_EQ(auditClass("insert into t values (1)"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("UPDATE t SET i = 2"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("delete from t"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("TRUNCATE t"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("copy t from stdin"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("copy (select * from t) to stdout"), AuditClass::kRead);
  EXPECT_EQ(auditClass("copy t to stdout"), AuditClass::kRead);
  EXPECT_EQ(auditClass("with x as (delete from t returning *) select * from x"),
            AuditClass::kWrite);
  EXPECT_EQ(auditClass("select nextval('s')"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("select * from t for update"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("select * into t2 from t"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("select 1"), AuditClass::kRead);
  EXPECT_EQ(auditClass("(select 1)"), AuditClass::kRead);
  EXPECT_EQ(auditClass("begin; select 1; commit"), AuditClass::kRead);
  EXPECT_EQ(auditClass("SET search_path = a"), AuditClass::kRead);
  EXPECT_EQ(auditClass(""), AuditClass::kRead);
  // The highest class of a multi-statement Query.
  EXPECT_EQ(auditClass("select 1; insert into t values (1); select 2"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("insert into t values (1); drop table t"), AuditClass::kDdl);
  // Prefixes that run what follows.
  EXPECT_EQ(auditClass("explain select 1"), AuditClass::kRead);
  EXPECT_EQ(auditClass("explain insert into t values (1)"), AuditClass::kRead);
  EXPECT_EQ(auditClass("explain analyze insert into t values (1)"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("explain (analyze, buffers) delete from t"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("prepare p(int) as update t set i = $1"), AuditClass::kWrite);
  EXPECT_EQ(auditClass("prepare p as select 1"), AuditClass::kRead);
  EXPECT_EQ(auditClass("execute p(1)"), AuditClass::kWrite);
  // A keyword hidden in a literal or comment is not one; text the lexer cannot end is kWrite.
  EXPECT_EQ(auditClass("select 'drop table t'"), AuditClass::kRead);
  EXPECT_EQ(auditClass("select 1 -- ; drop table t"), AuditClass::kRead);
  EXPECT_EQ(auditClass("select 'unterminated"), AuditClass::kWrite);
  // A Parse body: name, NUL, query, NUL, parameter types.
  EXPECT_EQ(auditClass(std::string_view("delete from t\0\0\0", 16)), AuditClass::kWrite);
  EXPECT_STREQ(sql::auditClassName(AuditClass::kDdl), "ddl");
}

TEST(RedactLiterals, EveryLiteralAndNumberGoes) {
  using proto::redactLiterals;
  EXPECT_EQ(redactLiterals("select * from t where a = 'x' and b = 42 and c = 1.5e3"),
            "select * from t where a = ? and b = ? and c = ?");
  EXPECT_EQ(redactLiterals("insert into t1 values (E'a\\'b', $$c$$, $q$d$q$, X'ff', -7)"),
            "insert into t1 values (?, ?, ?, ?, -?)");
  EXPECT_EQ(redactLiterals("select $1, \"col'x\", t2.c3 from t2"),
            "select $1, \"col'x\", t2.c3 from t2");
  EXPECT_EQ(redactLiterals("alter role r password 'pw'"), "alter role r password ?");
  // standard_conforming_strings off: 'a\' or 1=1 --' is one literal there; both readings go.
  EXPECT_EQ(redactLiterals("select 'a\\' or secret = 1 --'"), "select ?");
  EXPECT_EQ(redactLiterals("select 'cut sho"), "select ?");
  EXPECT_EQ(redactLiterals("select /* '1' */ 2"), "select /* '1' */ ?");
}

class WriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgproxy-audit-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { EXPECT_EQ(std::system(("rm -rf " + dir_).c_str()), 0); }
  static std::string read(const std::string& path) {
    std::string out;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    char buf[4096];
    for (ssize_t n; fd >= 0 && (n = ::read(fd, buf, sizeof(buf))) > 0;) {
      out.append(buf, static_cast<std::size_t>(n));
    }
    if (fd >= 0) {
      close(fd);
    }
    return out;
  }
  std::string dir_;
};

TEST_F(WriterTest, WritesWholeLinesAndCountsWhatItCannot) {
  auto w = audit::Writer::create();
  ASSERT_TRUE(w.ok());
  std::atomic<std::uint64_t> written{0}, lost{0};
  std::atomic<std::int32_t> failing{0};
  w->setCounters(&written, &lost, &failing);
  config::AuditConfig settings;
  settings.file = dir_ + "/audit.log";
  ASSERT_TRUE(w->configure(settings).ok());
  for (const char* line : {"{\"a\":1}\n", "{\"b\":2}\n"}) {
    ASSERT_EQ(send(w->sendFd(), line, std::strlen(line), 0),
              static_cast<ssize_t>(std::strlen(line)));
  }
  send(w->sendFd(), "{\"torn\":", 8, 0);  // not a line: never written as it is
  w->drain();
  EXPECT_EQ(read(settings.file), "{\"a\":1}\n{\"b\":2}\n");
  EXPECT_EQ(written.load(), 2u);
  EXPECT_EQ(lost.load(), 1u);

  // A sink that refuses every byte (a full disk): lost, counted, and the failing flag is up
  // until a line is written again.
  settings.file = "/dev/full";
  ASSERT_TRUE(w->configure(settings).ok());
  send(w->sendFd(), "{\"c\":3}\n", 8, 0);
  w->drain();
  EXPECT_EQ(lost.load(), 2u);
  EXPECT_EQ(failing.load(), 1);
  std::string why;
  EXPECT_EQ(w->takeLost(why), 2u);
  EXPECT_NE(why.find("/dev/full"), std::string::npos) << why;
  EXPECT_EQ(w->takeLost(why), 0u);

  settings.file = dir_ + "/audit.log";
  ASSERT_TRUE(w->configure(settings).ok());
  send(w->sendFd(), "{\"d\":4}\n", 8, 0);
  w->drain();
  EXPECT_EQ(failing.load(), 0);
  EXPECT_EQ(read(settings.file), "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n");

  // A file that cannot be opened keeps the sink there was.
  settings.file = dir_ + "/no/such/dir/audit.log";
  EXPECT_FALSE(w->configure(settings).ok());
}

}  // namespace
}  // namespace pgproxy
