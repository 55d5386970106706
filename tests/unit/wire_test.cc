#include "pgproxy/proto/wire.h"

#include <gtest/gtest.h>

namespace pgproxy::proto {
namespace {

TEST(Wire, FatalErrorResponseLayout) {
  std::string e = buildFatal("08P01", "bad thing", "do this");
  ASSERT_GE(e.size(), 5u);
  EXPECT_EQ(e[0], 'E');
  EXPECT_EQ(readU32(e.data() + 1), e.size() - 1);
  std::string body = e.substr(5);
  EXPECT_NE(body.find(std::string("SFATAL\0", 7)), std::string::npos);
  EXPECT_NE(body.find(std::string("VFATAL\0", 7)), std::string::npos);
  EXPECT_NE(body.find(std::string("C08P01\0", 7)), std::string::npos);
  EXPECT_NE(body.find(std::string("Mbad thing\0", 11)), std::string::npos);
  EXPECT_NE(body.find(std::string("Hdo this\0", 9)), std::string::npos);
  EXPECT_EQ(body.back(), '\0');
  EXPECT_EQ(body[body.size() - 2], '\0');
}

TEST(Wire, SslRequestAndAlert) {
  std::string r = buildSslRequest();
  EXPECT_EQ(r.size(), 8u);
  EXPECT_EQ(readU32(r.data()), 8u);
  EXPECT_EQ(readU32(r.data() + 4), 80877103u);
  std::string a = buildTlsAlert(kAlertUnrecognizedName);
  EXPECT_EQ(a, std::string("\x15\x03\x03\x00\x02\x02\x70", 7));
}

std::string msg(char type, const std::string& body) {
  std::string out(1, type);
  appendU32(out, static_cast<std::uint32_t>(body.size() + 4));
  return out + body;
}

TEST(EachWholeMessage, GivesWholeMessagesAndStopsAtAPartOrWhenTold) {
  std::string buf = msg('Q', std::string("BEGIN\0", 6)) + buildMessage('S', "") + msg('Z', "T");
  std::string partial = buf + std::string(
                                  "D\0\0\0\x10"
                                  "ab",
                                  7);
  std::size_t at = 0;
  std::string types;
  EXPECT_TRUE(eachWholeMessage(partial, at, [&](char type, std::string_view body) {
    types += type;
    EXPECT_EQ(type == 'Q' ? 6u : type == 'S' ? 0u : 1u, body.size());
    return true;
  }));
  EXPECT_EQ(types, "QSZ");
  EXPECT_EQ(at, buf.size());  // the DataRow is not whole yet
  // Told to stop: `at` is just past the message that said so.
  at = 0;
  types.clear();
  EXPECT_TRUE(eachWholeMessage(buf, at, [&](char type, std::string_view) {
    types += type;
    return type != 'S';
  }));
  EXPECT_EQ(types, "QS");
  EXPECT_EQ(at, buf.size() - 6);
  // A length below 4 is not protocol 3; a header cut short waits; a huge length waits too.
  at = 0;
  EXPECT_FALSE(eachWholeMessage(std::string("Q\0\0\0\x03", 5), at,
                                [](char, std::string_view) { return true; }));
  at = 0;
  EXPECT_TRUE(
      eachWholeMessage(std::string("Q\0\0", 3), at, [](char, std::string_view) { return true; }));
  EXPECT_EQ(at, 0u);
  EXPECT_TRUE(eachWholeMessage(std::string("Q\xff\xff\xff\xff", 5), at,
                               [](char, std::string_view) { return true; }));
  EXPECT_EQ(at, 0u);
}

TEST(BackendKeyScanner, FindsKeyAcrossChunks) {
  std::string key;
  appendU32(key, 4242);
  appendU32(key, 0x01020304);
  std::string stream = msg('R', std::string(4, '\0')) + msg('S', std::string("a\0b\0", 4)) +
                       msg('K', key) + msg('Z', "I");
  for (std::size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    BackendKeyScanner s;
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      s.feed(std::string_view(stream).substr(i, chunk));
    }
    ASSERT_EQ(s.state(), BackendKeyScanner::State::kFound) << chunk;
    EXPECT_EQ(s.pid(), 4242u);
    EXPECT_EQ(s.key(), std::string("\x01\x02\x03\x04", 4));
  }
}

// instance_id: the client gets pgproxy's key in place of the server's, wherever the message is
// split; the scanner still learns the server's. A 3.2 key (longer than 4 bytes) is left alone.
TEST(BackendKeyScanner, RewritesAProtocol30KeyInPlace) {
  std::string key, mine;
  appendU32(key, 4242);
  appendU32(key, 0x01020304);
  appendU32(mine, 0x01000007);
  appendU32(mine, 0xa1b2c3d4);
  std::string head = msg('R', std::string(4, '\0')) + msg('S', std::string("a\0b\0", 4));
  std::string stream = head + msg('K', key) + msg('Z', "I");
  std::string want = head + msg('K', mine) + msg('Z', "I");
  for (std::size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    BackendKeyScanner s;
    s.rewriteTo(0x01000007, 0xa1b2c3d4);
    std::string out = stream;
    for (std::size_t i = 0; i < out.size(); i += chunk) {
      s.feed(out.data() + i, std::min(chunk, out.size() - i));
    }
    ASSERT_EQ(s.state(), BackendKeyScanner::State::kFound) << chunk;
    EXPECT_TRUE(s.rewritten());
    EXPECT_EQ(out, want) << chunk;
    EXPECT_EQ(s.pid(), 4242u);
    EXPECT_EQ(s.key(), std::string("\x01\x02\x03\x04", 4));
  }
  std::string longKey = msg('K', std::string("\0\0\x03\x09", 4) + std::string(32, 'k'));
  std::string out = head + longKey;
  BackendKeyScanner s;
  s.rewriteTo(1, 2);
  s.feed(out.data(), out.size());
  EXPECT_EQ(s.state(), BackendKeyScanner::State::kFound);
  EXPECT_FALSE(s.rewritten());
  EXPECT_EQ(out, head + longKey);
  // Without rewriteTo, the mutable feed changes nothing.
  BackendKeyScanner plain;
  out = stream;
  plain.feed(out.data(), out.size());
  EXPECT_FALSE(plain.rewritten());
  EXPECT_EQ(out, stream);
}

// Protocol 3.2 (PostgreSQL 18): BackendKeyData carries a key of 4 to 256 bytes.
TEST(BackendKeyScanner, LongKeysOfProtocol32) {
  for (std::size_t keyLen : {4u, 32u, 256u}) {
    std::string key;
    for (std::size_t i = 0; i < keyLen; ++i) {
      key.push_back(static_cast<char>(255 - i));
    }
    std::string body;
    appendU32(body, 777);
    std::string stream = msg('R', std::string(4, '\0')) +
                         msg('v', std::string("\0\x03\0\x02\0\0\0\0", 8)) + msg('K', body + key) +
                         msg('Z', "I");
    for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{13}, stream.size()}) {
      BackendKeyScanner s;
      for (std::size_t i = 0; i < stream.size(); i += chunk) {
        s.feed(std::string_view(stream).substr(i, chunk));
      }
      ASSERT_EQ(s.state(), BackendKeyScanner::State::kFound) << keyLen << "/" << chunk;
      EXPECT_EQ(s.pid(), 777u);
      EXPECT_EQ(s.key(), key) << keyLen << "/" << chunk;
    }
  }
}

TEST(BackendKeyScanner, KeyLengthsOutsideTheProtocolAreInvalid) {
  for (std::size_t keyLen : {0u, 1u, 3u, 257u, 1000u}) {
    std::string body;
    appendU32(body, 777);
    BackendKeyScanner s;
    s.feed(msg('R', std::string(4, '\0')) + msg('K', body + std::string(keyLen, 'k')));
    EXPECT_EQ(s.state(), BackendKeyScanner::State::kInvalid) << keyLen;
    EXPECT_EQ(s.badType(), 'K');
  }
  // Decided from the header alone: a huge length is refused before its body arrives.
  BackendKeyScanner big;
  big.feed(std::string("K\x00\x00\x01\x0d", 5));  // 269: 4-byte pid, 257-byte key
  EXPECT_EQ(big.state(), BackendKeyScanner::State::kInvalid);
}

TEST(BackendKeyScanner, StopsAtReadyOrError) {
  BackendKeyScanner a;
  a.feed(msg('Z', "I"));
  EXPECT_EQ(a.state(), BackendKeyScanner::State::kDone);
  BackendKeyScanner b;
  b.feed(msg('E', std::string("SFATAL\0\0", 8)));
  EXPECT_EQ(b.state(), BackendKeyScanner::State::kDone);
}

TEST(BackendKeyScanner, GarbageIsInvalid) {
  for (std::string bad :
       {std::string("R\xff\xff\xff\xff", 5), msg('K', "short"), std::string("R\x00\x00\x00\x02", 5),
        msg('D', "row before login"), std::string("HTTP/1.1 400 Bad Request\r\n")}) {
    BackendKeyScanner a;
    a.feed(bad);
    EXPECT_EQ(a.state(), BackendKeyScanner::State::kInvalid) << bad;
  }
  // After a valid message, too; an ErrorResponse without any field is still a message.
  BackendKeyScanner b;
  b.feed(msg('R', std::string("\0\0\0\0", 4)) + std::string("\x01\x02\x03\x04\x05", 5));
  EXPECT_EQ(b.state(), BackendKeyScanner::State::kInvalid);
  BackendKeyScanner c;
  c.feed(msg('E', std::string("\0", 1)));
  EXPECT_EQ(c.state(), BackendKeyScanner::State::kDone);
  BackendKeyScanner d;
  d.feed(msg('v', std::string("\0\0\0\0\0\0\0\0", 8)) + msg('N', std::string("\0", 1)));
  EXPECT_EQ(d.state(), BackendKeyScanner::State::kScanning);
}

}  // namespace
}  // namespace pgproxy::proto

namespace pgproxy::proto {
namespace {

TEST(FrameTracker, TlsRecordsAcrossChunks) {
  std::string app(
      "\x17\x03\x03\x00\x03"
      "abc",
      8);
  std::string alert("\x15\x03\x03\x00\x02\x01\x00", 7);
  std::string stream = app + app + alert;
  for (std::size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    FrameTracker t(FrameTracker::Kind::kTlsRecords);
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      t.feed(std::string_view(stream).substr(i, chunk));
    }
    EXPECT_EQ(t.lastType(), 0x15) << chunk;
    EXPECT_EQ(t.lastLength(), 2u) << chunk;
  }
}

// TLS 1.3 hides the alert type: what tells a close_notify from data is the record's length (19:
// alert, inner type, AEAD tag), which the tracker keeps with the type.
TEST(FrameTracker, Tls13RecordsKeepTheirLength) {
  std::string terminate = std::string("\x17\x03\x03\x00\x16", 5) + std::string(22, 'x');
  std::string close_notify = std::string("\x17\x03\x03\x00\x13", 5) + std::string(19, 'y');
  FrameTracker t(FrameTracker::Kind::kTlsRecords);
  t.feed(terminate);
  EXPECT_EQ(t.lastType(), 0x17);
  EXPECT_EQ(t.lastLength(), 22u);
  t.feed(close_notify.substr(0, 10));
  EXPECT_EQ(t.lastLength(), 22u);  // a record counts once it is whole
  t.feed(close_notify.substr(10));
  EXPECT_EQ(t.lastLength(), 19u);
}

TEST(FrameTracker, PgMessagesAfterStartupSkip) {
  std::string startup(12, '\0');
  std::string q = std::string("Q\x00\x00\x00\x05", 5) + "x";  // length 5: 1 byte of body
  std::string terminate("X\x00\x00\x00\x04", 5);
  FrameTracker t(FrameTracker::Kind::kPgMessages, startup.size());
  t.feed(startup + q);
  EXPECT_EQ(t.lastType(), 'Q');
  t.feed(terminate);
  EXPECT_EQ(t.lastType(), 'X');
  EXPECT_FALSE(t.lost());
  FrameTracker bad(FrameTracker::Kind::kPgMessages);
  bad.feed(std::string("Q\x00\x00\x00\x01", 5));
  EXPECT_TRUE(bad.lost());
}

}  // namespace
}  // namespace pgproxy::proto

namespace pgproxy::proto {
namespace {

TEST(MessageFramer, CapturesQueryAndParseNeverPasswords) {
  auto msg = [](char type, const std::string& body) {
    std::string out(1, type);
    appendU32(out, static_cast<std::uint32_t>(body.size() + 4));
    return out + body;
  };
  std::string startup(9, '\0');
  std::string stream = startup + msg('p', std::string("hunter2\0", 8)) +
                       msg('Q', std::string("select 1\0", 9)) +
                       msg('P', std::string("s1\0select $1\0\0\0", 16)) + msg('X', "");
  for (std::size_t chunk = 1; chunk <= stream.size(); ++chunk) {
    MessageFramer f(MessageFramer::Framing::kPgMessages, true, startup.size());
    std::vector<std::string> seen;
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      f.feed(std::string_view(stream).substr(i, chunk), [&](const MessageFramer::Message& m) {
        seen.push_back(std::string(1, m.type) + ":" + std::to_string(m.length) + ":" +
                       std::string(m.text));
      });
    }
    ASSERT_EQ(seen.size(), 4u) << chunk;
    EXPECT_EQ(seen[0], "p:12:");  // the password is never captured
    EXPECT_EQ(seen[1], std::string("Q:13:select 1\0", 14));
    EXPECT_EQ(seen[2].substr(0, 7), "P:20:s1");
    EXPECT_EQ(seen[3], "X:4:");
  }
}

TEST(MessageFramer, CapsCaptureAndStopsOnBadLength) {
  std::string big(5000, 'x');
  std::string q("Q");
  appendU32(q, static_cast<std::uint32_t>(big.size() + 4));
  MessageFramer f(MessageFramer::Framing::kPgMessages, true, 0);
  std::size_t captured = 0;
  f.feed(q + big, [&](const MessageFramer::Message& m) { captured = m.text.size(); });
  EXPECT_EQ(captured, MessageFramer::kMaxCapture);
  MessageFramer bad(MessageFramer::Framing::kPgMessages, false, 0);
  bad.feed(std::string("Z\x00\x00\x00\x02", 5), [](const MessageFramer::Message&) {});
  EXPECT_TRUE(bad.lost());
}

}  // namespace
}  // namespace pgproxy::proto
