#include "pgproxy/proto/startup.h"

#include <gtest/gtest.h>

#include "pgproxy/proto/wire.h"

namespace pgproxy::proto {
namespace {

std::string packet(std::uint32_t len, std::uint32_t code, const std::string& body = "") {
  std::string out;
  appendU32(out, len);
  appendU32(out, code);
  return out + body;
}

std::string startup(const std::string& params, std::uint32_t version = kProtocol3) {
  std::string body = params + std::string(1, '\0');
  return packet(static_cast<std::uint32_t>(8 + body.size()), version, body);
}

TEST(Preamble, NeedsMoreUntilEightBytes) {
  std::string ssl = packet(8, kSslRequestCode);
  for (std::size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(classifyPreamble(ssl.substr(0, i)).kind, PreambleKind::kNeedMore) << i;
  }
  auto p = classifyPreamble(ssl);
  EXPECT_EQ(p.kind, PreambleKind::kSslRequest);
  EXPECT_EQ(p.consumed, 8u);
}

TEST(Preamble, GssAndCancel) {
  EXPECT_EQ(classifyPreamble(packet(8, kGssEncRequestCode)).kind, PreambleKind::kGssEncRequest);
  std::string cancel = packet(16, kCancelRequestCode);
  appendU32(cancel, 1234);
  appendU32(cancel, 0xdeadbeef);
  EXPECT_EQ(classifyPreamble(cancel.substr(0, 12)).kind, PreambleKind::kNeedMore);
  auto p = classifyPreamble(cancel);
  ASSERT_EQ(p.kind, PreambleKind::kCancelRequest);
  EXPECT_EQ(p.cancel_pid, 1234u);
  EXPECT_EQ(p.cancel_key, 0xdeadbeefu);
}

TEST(Preamble, CancelWithWrongLengthIsInvalid) {
  EXPECT_EQ(classifyPreamble(packet(20, kCancelRequestCode, std::string(12, 'x'))).kind,
            PreambleKind::kInvalid);
  EXPECT_EQ(classifyPreamble(packet(12, kSslRequestCode, "xxxx")).kind, PreambleKind::kInvalid);
}

TEST(Preamble, DirectTls) {
  EXPECT_EQ(classifyPreamble(std::string("\x16\x03\x01", 3)).kind, PreambleKind::kDirectTls);
}

TEST(Preamble, BadLengthsCloseWithoutReading) {
  for (std::uint32_t len : {0u, 4u, 7u, 10005u, 0x7fffffffu, 0xffffffffu}) {
    auto p = classifyPreamble(packet(len, kProtocol3));
    EXPECT_EQ(p.kind, PreambleKind::kInvalid) << len;
    // PostgreSQL decides on the length word alone; so do we.
    EXPECT_EQ(classifyPreamble(packet(len, kProtocol3).substr(0, 4)).kind, PreambleKind::kInvalid)
        << len;
  }
  // 10001 is within PostgreSQL's bound (10000 after the length word): it waits for the rest.
  EXPECT_EQ(classifyPreamble(packet(10001, kProtocol3)).kind, PreambleKind::kNeedMore);
  // Decided from the first byte, before 8 bytes arrive: no waiting for garbage.
  EXPECT_EQ(classifyPreamble("GET / HTTP/1.1").kind, PreambleKind::kInvalid);
  EXPECT_EQ(classifyPreamble(std::string("\x7f", 1)).kind, PreambleKind::kInvalid);
}

TEST(Preamble, StartupWaitsForWholePacket) {
  std::string s = startup(std::string("user\0bob\0", 9));
  EXPECT_EQ(classifyPreamble(s.substr(0, s.size() - 1)).kind, PreambleKind::kNeedMore);
  auto p = classifyPreamble(s + "extra");
  ASSERT_EQ(p.kind, PreambleKind::kStartup);
  EXPECT_EQ(p.consumed, s.size());
  EXPECT_EQ(p.code, kProtocol3);
}

TEST(Preamble, MaxSizeStartupAccepted) {
  std::string body(10004 - 8, 'a');
  auto p = classifyPreamble(packet(10004, kProtocol3, body));
  EXPECT_EQ(p.kind, PreambleKind::kStartup);
}

TEST(Startup, ParsesParams) {
  std::string s = startup(std::string("user\0bob\0database\0db1\0", 22));
  StartupParams params;
  ASSERT_EQ(parseStartup(s, params), StartupError::kNone);
  EXPECT_EQ(params.get("user"), "bob");
  EXPECT_EQ(params.get("database"), "db1");
  EXPECT_EQ(params.version, kProtocol3);
}

TEST(Startup, MissingTerminator) {
  std::string body("user\0bob\0", 9);
  std::string s = packet(static_cast<std::uint32_t>(8 + body.size()), kProtocol3, body);
  StartupParams params;
  EXPECT_EQ(parseStartup(s, params), StartupError::kBadLayout);
  std::string noNul = packet(12, kProtocol3, "user");
  EXPECT_EQ(parseStartup(noNul, params), StartupError::kBadLayout);
  std::string keyOnly = packet(14, kProtocol3, std::string("user\0\0", 6));
  EXPECT_EQ(parseStartup(keyOnly, params), StartupError::kBadLayout);  // "" value, no terminator
  std::string keyNoValue = packet(13, kProtocol3, std::string("user\0", 5));
  EXPECT_EQ(parseStartup(keyNoValue, params), StartupError::kBadLayout);
}

TEST(Startup, NoUser) {
  StartupParams params;
  EXPECT_EQ(parseStartup(startup(std::string("database\0x\0", 11)), params), StartupError::kNoUser);
  EXPECT_EQ(parseStartup(startup(""), params), StartupError::kNoUser);
}

TEST(Startup, DuplicateKeysAndBinaryValuesDoNotCrash) {
  std::string s = startup(std::string("user\0a\0user\0\xff\xfe\0", 15));
  StartupParams params;
  EXPECT_EQ(parseStartup(s, params), StartupError::kNone);
}

}  // namespace
}  // namespace pgproxy::proto
