#include "pgproxy/auth/server_login.h"

#include <gtest/gtest.h>

#include "pgproxy/auth/scram_server.h"
#include "pgproxy/proto/wire.h"
#include "wire_test_util.h"

namespace pgproxy::auth {
namespace {

using test::authReq;
using test::msg;

// The body of a SASL message from pgproxy: after the type, length, mechanism and its length.
std::string saslPayload(const std::string& m, bool initial) {
  std::size_t at = 5;
  if (initial) {
    at = m.find('\0', 5) + 1 + 4;
  }
  return m.substr(at);
}

TEST(ServerLogin, CollectsTheGreetingUntilReadyForQuery) {
  ServerLogin login("app", {});
  std::string greeting = msg('S', std::string("TimeZone\0UTC\0", 13)) +
                         msg('K', std::string(8, '\x01')) + msg('Z', "I");
  std::string server = authReq(0) + greeting + "X";
  ServerLogin::Step s;
  for (std::size_t i = 0; i < server.size() - 1; ++i) {  // byte by byte
    s = login.feed(server.substr(i, 1));
    if (s.kind != ServerLogin::Step::kContinue) {
      break;
    }
  }
  ASSERT_EQ(s.kind, ServerLogin::Step::kReady) << s.error;
  EXPECT_EQ(login.greeting(), greeting);
  EXPECT_EQ(login.takeLeftover(), "");
  ServerLogin again("app", {});
  EXPECT_EQ(again.feed(server).kind, ServerLogin::Step::kReady);
  EXPECT_EQ(again.takeLeftover(), "X");
}

TEST(ServerLogin, AnswersWithWhatItHoldsAndSaysWhatItLacks) {
  ServerCredentials md5;
  md5.kind = ServerCredentials::Kind::kMd5Hash;
  md5.md5_hash = "md5" + std::string(32, 'a');
  ServerLogin m("app", md5);
  auto s = m.feed(authReq(5, "salt"));
  EXPECT_EQ(s.send, msg('p', md5FromHash(md5.md5_hash, "salt") + '\0'));
  ServerLogin noClear("app", md5);
  s = noClear.feed(authReq(3));
  EXPECT_EQ(s.kind, ServerLogin::Step::kFailed);
  EXPECT_NE(s.error.find("cleartext password"), std::string::npos);
  ServerLogin noScram("app", md5);
  s = noScram.feed(authReq(10, std::string("SCRAM-SHA-256\0\0", 15)));
  EXPECT_NE(s.error.find("SCRAM-SHA-256 authentication"), std::string::npos) << s.error;
  ServerLogin none("app", {});
  EXPECT_EQ(none.feed(authReq(5, "salt")).kind, ServerLogin::Step::kFailed);
  EXPECT_NE(none.feed(authReq(7)).error.find("(7)"), std::string::npos);  // GSSAPI
}

TEST(ServerLogin, RelaysTheServersErrorResponseWhole) {
  ServerLogin login("app", {});
  std::string err = msg('E', std::string("SFATAL\0C3D000\0Mdatabase \"x\" does not exist\0\0", 44));
  auto s = login.feed(err);
  ASSERT_EQ(s.kind, ServerLogin::Step::kFailed);
  EXPECT_EQ(s.sqlstate, "3D000");
  EXPECT_EQ(s.response, err);
  EXPECT_EQ(s.error, "database \"x\" does not exist (SQLSTATE 3D000)");
  ServerLogin late("app", {});
  EXPECT_EQ(late.feed(authReq(0) + msg('D', "x")).kind, ServerLogin::Step::kFailed);
  ServerLogin huge("app", {});
  EXPECT_EQ(huge.feed(std::string("S\x7f\0\0\0", 5)).kind, ServerLogin::Step::kFailed);
}

// SCRAM with recovered keys against pgproxy's own SCRAM server holding the same verifier.
TEST(ServerLogin, ScramWithKeys) {
  ScramVerifier v = ScramVerifier::fromPassword("pw", "saltsaltsaltsalt");
  ServerCredentials c;
  c.kind = ServerCredentials::Kind::kScramKeys;
  c.client_key = hmacSha256(saltedPassword("pw", v.salt, v.iterations), "Client Key");
  c.server_key = v.server_key;
  c.salt = v.salt;
  c.iterations = v.iterations;
  ServerLogin login("app", c);
  ScramServer server(v, "srv", "");
  auto s = login.feed(authReq(10, std::string("SCRAM-SHA-256\0\0", 15)));
  ASSERT_EQ(s.kind, ServerLogin::Step::kContinue) << s.error;
  auto first = server.clientFirst("SCRAM-SHA-256", saslPayload(s.send, true));
  ASSERT_EQ(first.result, ScramServer::Result::kContinue) << first.message;
  s = login.feed(authReq(11, first.message));
  ASSERT_EQ(s.kind, ServerLogin::Step::kContinue) << s.error;
  auto final = server.clientFinal(saslPayload(s.send, false));
  ASSERT_EQ(final.result, ScramServer::Result::kOk) << final.message;
  s = login.feed(authReq(12, final.message) + authReq(0) + msg('Z', "I"));
  EXPECT_EQ(s.kind, ServerLogin::Step::kReady) << s.error;
  // A forged server signature fails the login.
  ServerLogin forged("app", c);
  ScramServer other(v, "srv", "");
  s = forged.feed(authReq(10, std::string("SCRAM-SHA-256\0\0", 15)));
  first = other.clientFirst("SCRAM-SHA-256", saslPayload(s.send, true));
  forged.feed(authReq(11, first.message));
  EXPECT_EQ(forged.feed(authReq(12, "v=" + base64Encode(std::string(32, 'x')))).kind,
            ServerLogin::Step::kFailed);
}

}  // namespace
}  // namespace pgproxy::auth
