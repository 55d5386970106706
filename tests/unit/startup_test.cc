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
  EXPECT_EQ(p.consumed, 16u);
  EXPECT_EQ(p.cancel_pid, 1234u);
  EXPECT_EQ(p.cancel_key, std::string("\xde\xad\xbe\xef", 4));
}

// Protocol 3.2 (PostgreSQL 18): the key runs to the end of the packet, 4 to 256 bytes.
std::string cancelRequest(std::uint32_t pid, const std::string& key) {
  std::string out = packet(static_cast<std::uint32_t>(12 + key.size()), kCancelRequestCode);
  appendU32(out, pid);
  return out + key;
}

TEST(Preamble, CancelWithLongKeys) {
  for (std::size_t keyLen : {4u, 5u, 32u, 255u, 256u}) {
    std::string key;
    for (std::size_t i = 0; i < keyLen; ++i) {
      key.push_back(static_cast<char>(i * 7 + 1));
    }
    std::string cancel = cancelRequest(99, key);
    // Nothing is decided before the whole packet is in.
    for (std::size_t i = 0; i < cancel.size(); ++i) {
      EXPECT_EQ(classifyPreamble(cancel.substr(0, i)).kind, PreambleKind::kNeedMore) << keyLen;
    }
    // Bytes after it (none are expected, but a client may pipeline) are not part of it.
    std::string pipelined = cancel + "trailing";  // p.cancel_key views into it
    auto p = classifyPreamble(pipelined);
    ASSERT_EQ(p.kind, PreambleKind::kCancelRequest) << keyLen;
    EXPECT_EQ(p.consumed, 12 + keyLen);
    EXPECT_EQ(p.cancel_pid, 99u);
    EXPECT_EQ(p.cancel_key, key);
  }
}

TEST(Preamble, CancelWithWrongLengthIsInvalid) {
  // A key of 0 to 3 bytes, or longer than 256: refused as soon as the length word is in.
  for (std::uint32_t len : {8u, 12u, 13u, 15u, 12u + 257u, 1000u, 10004u}) {
    auto p = classifyPreamble(packet(len, kCancelRequestCode));
    EXPECT_EQ(p.kind, PreambleKind::kInvalid) << len;
    EXPECT_STREQ(p.reason, "invalid length of cancel request packet") << len;
  }
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
