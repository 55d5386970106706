// auth_query's pure parts: the messages that run the query, the parsing of the server's reply
// (well-formed and malformed), the whole exchange, and the cache's bounds. The same exchange
// against real PostgreSQL is in tests/integration/auth_query_test.cc.
#include "pgproxy/auth/secret_lookup.h"

#include <gtest/gtest.h>

#include <vector>

#include "pgproxy/proto/wire.h"
#include "wire_test_util.h"

namespace pgproxy::auth {
namespace {

using test::authReq;
using test::msg;

// A literal with its NULs, without the one the compiler adds.
template <std::size_t N>
std::string bin(const char (&s)[N]) {
  return std::string(s, N - 1);
}
std::string u16(std::uint16_t v) {
  return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
}
std::string u32(std::uint32_t v) {
  std::string s;
  proto::appendU32(s, v);
  return s;
}
// A DataRow with these columns; "\xff" alone stands for NULL.
std::string dataRow(const std::vector<std::string>& columns) {
  std::string body = u16(static_cast<std::uint16_t>(columns.size()));
  for (const auto& c : columns) {
    if (c == "\xff") {
      body += u32(0xFFFFFFFFu);
    } else {
      body += u32(static_cast<std::uint32_t>(c.size())) + c;
    }
  }
  return msg('D', body);
}
const std::string kHead = msg('1', "") + msg('2', "");
const std::string kTail = msg('C', std::string("SELECT 1\0", 9)) + msg('Z', "I");

struct Message {
  char type;
  std::string body;
};
std::vector<Message> split(const std::string& bytes) {
  std::vector<Message> out;
  std::size_t pos = 0;
  while (pos + 5 <= bytes.size()) {
    std::uint32_t len = proto::readU32(bytes.data() + pos + 1);
    out.push_back({bytes[pos], bytes.substr(pos + 5, len - 4)});
    pos += 1 + len;
  }
  EXPECT_EQ(pos, bytes.size());
  return out;
}

TEST(SecretQueryMessages, TheUserNameIsAParameterNeverPartOfTheSql) {
  const std::string sql = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1";
  const std::string user = "x'; DROP TABLE t; --\"";
  auto m = split(buildSecretQuery(sql, user));
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[0].type, 'P');
  // Unnamed statement, the SQL as configured, one parameter of a type the server infers.
  EXPECT_EQ(m[0].body, std::string("\0", 1) + sql + '\0' + u16(1) + u32(0));
  EXPECT_EQ(m[1].type, 'B');
  EXPECT_EQ(m[1].body, std::string("\0\0", 2) + u16(0) + u16(1) + u32(user.size()) + user + u16(0));
  EXPECT_EQ(m[2].type, 'E');
  EXPECT_EQ(m[2].body, std::string("\0", 1) + u32(0));
  EXPECT_EQ(m[3].type, 'S');
  EXPECT_EQ(m[3].body, "");
}

SecretReply::Step replyTo(const std::string& bytes) {
  SecretReply r;
  return r.feed(bytes);
}

TEST(SecretReply, OneRowGivesTheSecret) {
  std::string bytes = kHead + msg('N', "notice") + dataRow({"alice", "md5abc"}) + kTail;
  auto s = replyTo(bytes);
  EXPECT_EQ(s.kind, SecretReply::Step::kFound) << s.error;
  EXPECT_EQ(s.secret, "md5abc");
  // Byte by byte: the same.
  SecretReply r;
  SecretReply::Step last;
  for (char c : bytes) {
    last = r.feed(std::string(1, c));
    if (last.kind != SecretReply::Step::kContinue) {
      break;
    }
  }
  EXPECT_EQ(last.kind, SecretReply::Step::kFound);
  EXPECT_EQ(last.secret, "md5abc");
}

TEST(SecretReply, NoRowANullOrAnEmptySecretIsAnUnknownUser) {
  EXPECT_EQ(replyTo(kHead + msg('C', std::string("SELECT 0\0", 9)) + msg('Z', "I")).kind,
            SecretReply::Step::kAbsent);
  EXPECT_EQ(replyTo(kHead + dataRow({"alice", "\xff"}) + kTail).kind, SecretReply::Step::kAbsent);
  EXPECT_EQ(replyTo(kHead + dataRow({"alice", ""}) + kTail).kind, SecretReply::Step::kAbsent);
  // The user name column may be NULL (a function that returns only the secret's row).
  EXPECT_EQ(replyTo(kHead + dataRow({"\xff", "pw"}) + kTail).kind, SecretReply::Step::kFound);
}

TEST(SecretReply, TheServersErrorAndMisshapenResultsFailWithTheReason) {
  auto e =
      replyTo(msg('E', bin("SERROR\0C42P01\0Mrelation \"x\" does not exist\0\0")) + msg('Z', "I"));
  EXPECT_EQ(e.kind, SecretReply::Step::kFailed);
  EXPECT_EQ(e.sqlstate, "42P01");
  EXPECT_EQ(e.error, "auth.query failed: relation \"x\" does not exist (SQLSTATE 42P01)");
  auto two = replyTo(kHead + dataRow({"a", "x"}) + dataRow({"a", "y"}) + kTail);
  EXPECT_EQ(two.kind, SecretReply::Step::kFailed);
  EXPECT_EQ(two.error, "auth.query returned more than one row");
  auto three = replyTo(kHead + dataRow({"a", "x", "z"}) + kTail);
  EXPECT_NE(three.error.find("two columns (the user name and its secret); it returned 3"),
            std::string::npos);
  EXPECT_EQ(replyTo(kHead + dataRow({"a"}) + kTail).kind, SecretReply::Step::kFailed);
  EXPECT_EQ(replyTo(msg('I', "") + msg('Z', "I")).error, "auth.query is empty");
  EXPECT_NE(replyTo(msg('T', "")).error.find("unexpected message (type T)"), std::string::npos);
  EXPECT_NE(replyTo(msg('\x01', "")).error.find("(type 1)"), std::string::npos);
}

TEST(SecretReply, MalformedBytesFailAndNeverReadPastTheMessage) {
  const std::string malformed = "the server sent a malformed";
  // Lengths below 4 or above the bound.
  EXPECT_NE(replyTo(std::string("D\0\0\0\x03", 5)).error.find(malformed), std::string::npos);
  EXPECT_NE(replyTo("D" + u32(SecretReply::kMaxMessage + 1)).error.find(malformed),
            std::string::npos);
  // A column longer than its row, a truncated length, a row that goes on after its columns,
  // a row too short for its column count.
  EXPECT_NE(replyTo(msg('D', u16(2) + u32(1) + "a" + u32(100) + "b")).error.find(malformed),
            std::string::npos);
  EXPECT_NE(replyTo(msg('D', u16(2) + u32(1) + "a" + "\0\0")).error.find(malformed),
            std::string::npos);
  EXPECT_NE(replyTo(msg('D', u16(2) + u32(1) + "a" + u32(1) + "b" + "junk")).error.find(malformed),
            std::string::npos);
  EXPECT_NE(replyTo(msg('D', std::string(1, '\0'))).error.find(malformed), std::string::npos);
  EXPECT_NE(replyTo(msg('D', u16(2) + u32(0xFFFFFFFEu) + "a")).error.find(malformed),
            std::string::npos);
  // An incomplete message is waited for, not judged.
  EXPECT_EQ(replyTo(kHead + dataRow({"a", "b"}).substr(0, 9)).kind, SecretReply::Step::kContinue);
}

ServerCredentials password(const std::string& pw) {
  ServerCredentials c;
  c.kind = ServerCredentials::Kind::kPassword;
  c.password = pw;
  return c;
}

TEST(SecretQuery, LogsInThenRunsTheQueryAndReadsTheRow) {
  SecretQuery q({"pgproxy_auth", password("pw"), "postgres", "SELECT $1"}, "alice");
  EXPECT_EQ(q.start(), ServerLogin::startupPacket({{"user", "pgproxy_auth"},
                                                   {"database", "postgres"},
                                                   {"application_name", "pgproxy auth_query"}}));
  std::string send;
  auto s = q.feed(authReq(3), send);
  EXPECT_EQ(s.kind, SecretQuery::Step::kContinue);
  EXPECT_EQ(send, msg('p', std::string("pw\0", 3)));
  send.clear();
  // The greeting and, in the same read, the start of the reply (a server never sends it before
  // the query, but the exchange must not lose bytes that come with the ReadyForQuery).
  std::string greeting = authReq(0) + msg('S', std::string("a\0b\0", 4)) + msg('Z', "I");
  s = q.feed(greeting, send);
  EXPECT_EQ(s.kind, SecretQuery::Step::kContinue);
  EXPECT_EQ(send, buildSecretQuery("SELECT $1", "alice"));
  send.clear();
  s = q.feed(kHead + dataRow({"alice", "SCRAM-SHA-256$x"}) + kTail, send);
  EXPECT_EQ(s.kind, SecretQuery::Step::kFound);
  EXPECT_EQ(s.secret, "SCRAM-SHA-256$x");
  EXPECT_EQ(send, "");

  SecretQuery same({"pgproxy_auth", password("pw"), "postgres", "SELECT $1"}, "alice");
  std::string all = authReq(0) + msg('Z', "I") + kHead + dataRow({"alice", "pw2"}) + kTail;
  send.clear();
  s = same.feed(all, send);
  EXPECT_EQ(s.kind, SecretQuery::Step::kFound);
  EXPECT_EQ(s.secret, "pw2");
}

TEST(SecretQuery, ARefusedLoginNamesAuthUser) {
  SecretQuery q({"pgproxy_auth", password("pw"), "postgres", "q"}, "alice");
  std::string send;
  auto s = q.feed(msg('E', bin("SFATAL\0C28P01\0Mpassword authentication failed\0\0")), send);
  EXPECT_EQ(s.kind, SecretQuery::Step::kFailed);
  EXPECT_TRUE(q.loginFailed());
  EXPECT_EQ(s.sqlstate, "28P01");
  EXPECT_EQ(s.error,
            "pgproxy could not log in as auth.user \"pgproxy_auth\": password authentication "
            "failed (SQLSTATE 28P01)");
  // Without a password, a SCRAM request cannot be answered: said, not attempted.
  SecretQuery none({"pgproxy_auth", {}, "postgres", "q"}, "alice");
  s = none.feed(authReq(10, std::string("SCRAM-SHA-256\0\0", 15)), send);
  EXPECT_EQ(s.kind, SecretQuery::Step::kFailed);
  EXPECT_NE(s.error.find("SCRAM-SHA-256"), std::string::npos);
}

TEST(FileCredentials, APasswordOrAnMd5HashLogsInAVerifierCannot) {
  EXPECT_EQ(fileCredentials(*classifySecret("pw")).kind, ServerCredentials::Kind::kPassword);
  EXPECT_EQ(fileCredentials(*classifySecret("pw")).password, "pw");
  auto md5 = fileCredentials(*classifySecret("md5" + std::string(32, 'a')));
  EXPECT_EQ(md5.kind, ServerCredentials::Kind::kMd5Hash);
  EXPECT_EQ(md5.md5_hash, "md5" + std::string(32, 'a'));
  auto v = ScramVerifier::fromPassword("pw", "saltsaltsaltsalt", 16).text();
  EXPECT_EQ(fileCredentials(*classifySecret(v)).kind, ServerCredentials::Kind::kNone);
}

std::shared_ptr<const UserSecret> secret(const std::string& text) {
  return std::make_shared<const UserSecret>(*classifySecret(text));
}

TEST(SecretCache, EntriesExpireAfterTheTtl) {
  SecretCache c(1000);
  std::shared_ptr<const UserSecret> got;
  EXPECT_FALSE(c.get("0:alice", 0, got));
  c.put("0:alice", secret("pw"), 100);
  c.put("0:nobody", nullptr, 100);  // known absent
  ASSERT_TRUE(c.get("0:alice", 1099, got));
  EXPECT_EQ(got->text, "pw");
  ASSERT_TRUE(c.get("0:nobody", 1099, got));
  EXPECT_EQ(got, nullptr);
  EXPECT_FALSE(c.get("0:alice", 1100, got));  // expired, and dropped
  EXPECT_EQ(c.size(), 1u);
  // A new answer replaces the old one and its clock.
  c.put("0:nobody", secret("pw2"), 1500);
  ASSERT_TRUE(c.get("0:nobody", 2400, got));
  EXPECT_EQ(got->text, "pw2");
}

TEST(SecretCache, BoundedByCapacityLeastRecentlyUsedGoesFirst) {
  SecretCache c(60'000, 3);
  for (const char* k : {"a", "b", "c"}) {
    c.put(k, secret(k), 0);
  }
  std::shared_ptr<const UserSecret> got;
  EXPECT_TRUE(c.get("a", 1, got));  // a is used: b is now the oldest
  c.put("d", secret("d"), 2);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_FALSE(c.get("b", 3, got));
  for (const char* k : {"a", "c", "d"}) {
    EXPECT_TRUE(c.get(k, 3, got)) << k;
  }
  // A flood of names never grows it past the bound.
  for (int i = 0; i < 1000; ++i) {
    c.put("flood" + std::to_string(i), nullptr, 4);
  }
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(SecretCache::kDefaultCapacity, 10'000u);
}

TEST(SecretCache, ZeroTtlCachesNothing) {
  SecretCache c(0);
  c.put("a", secret("a"), 0);
  std::shared_ptr<const UserSecret> got;
  EXPECT_FALSE(c.get("a", 0, got));
  EXPECT_EQ(c.size(), 0u);
}

}  // namespace
}  // namespace pgproxy::auth
