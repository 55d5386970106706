#include "pgproxy/upstream/login_probe.h"

#include <gtest/gtest.h>

#include "pgproxy/proto/wire.h"
#include "wire_test_util.h"

namespace pgproxy::upstream {
namespace {

using test::authReq;
using test::msg;

std::string ready() {
  return msg('Z', "I");
}
std::string row(const std::string& v) {
  std::string b;
  b += std::string("\0\x01", 2);
  proto::appendU32(b, static_cast<std::uint32_t>(v.size()));
  return msg('D', b + v);
}

TEST(LoginProbe, TrustLoginThenRoleByteByByte) {
  LoginProbe p("health", "", "postgres");
  std::string startup = p.start();
  EXPECT_NE(startup.find(std::string("user\0health\0", 12)), std::string::npos);
  std::string server = authReq(0) + msg('S', std::string("a\0b\0", 4)) + ready();
  std::string sent;
  LoginProbe::Step s;
  for (char c : server) {
    s = p.feed(std::string(1, c));
    sent += s.send;
    ASSERT_EQ(s.kind, LoginProbe::Step::kContinue);
  }
  EXPECT_EQ(sent, msg('Q', std::string(kLoginProbeQuery) + '\0'));
  s = p.feed(msg('T', "...") + row("t") + msg('C', std::string("SELECT 1\0", 9)) + ready());
  EXPECT_EQ(s.kind, LoginProbe::Step::kDone);
  EXPECT_EQ(s.role, Role::kStandby);
  EXPECT_EQ(s.send, msg('X', ""));
}

// The probe's row: in recovery, then the lag in ms (NULL: -1 length).
std::string row2(const std::string& recovery, const char* lag) {
  std::string b("\0\x02", 2);
  proto::appendU32(b, static_cast<std::uint32_t>(recovery.size()));
  b += recovery;
  if (lag) {
    proto::appendU32(b, static_cast<std::uint32_t>(std::string(lag).size()));
    b += lag;
  } else {
    proto::appendU32(b, 0xffffffffu);
  }
  return msg('D', b);
}

TEST(LoginProbe, ReplicaLagFromTheSecondColumn) {
  auto probe = [](const std::string& answer) {
    LoginProbe p("health", "", "postgres");
    p.feed(authReq(0) + ready());
    return p.feed(answer + ready());
  };
  auto s = probe(row2("t", "1500"));
  EXPECT_EQ(s.kind, LoginProbe::Step::kDone);
  EXPECT_EQ(s.role, Role::kStandby);
  EXPECT_EQ(s.lag_ms, 1500);
  EXPECT_EQ(probe(row2("t", "0")).lag_ms, 0);
  EXPECT_EQ(probe(row2("t", nullptr)).lag_ms, -1);                // nothing replayed yet: unknown
  EXPECT_EQ(probe(row2("t", "12x")).lag_ms, -1);                  // not a number
  EXPECT_EQ(probe(row2("t", "9999999999999999999")).lag_ms, -1);  // beyond int64 digits
  EXPECT_EQ(probe(row2("f", nullptr)).lag_ms, 0);                 // a primary lags nothing
  EXPECT_EQ(probe(row("t")).lag_ms, -1);                          // one column (an older query)
  // A lying length never reads past the message.
  std::string b("\0\x02", 2);
  proto::appendU32(b, 1);
  b += "t";
  proto::appendU32(b, 50);
  b += "12";
  EXPECT_EQ(probe(msg('D', b)).lag_ms, -1);
  b = std::string("\0\x02", 2);
  proto::appendU32(b, 0x7fffffffu);
  b += "t";
  EXPECT_EQ(probe(msg('D', b)).lag_ms, -1);
}

TEST(LoginProbe, PasswordAndMd5Answers) {
  LoginProbe clear("health", "s3cret", "postgres");
  EXPECT_EQ(clear.feed(authReq(3)).send, msg('p', std::string("s3cret\0", 7)));
  LoginProbe md5("health", "s3cret", "postgres");
  EXPECT_EQ(md5.feed(authReq(5, std::string("\x01\x02\x03\x04", 4))).send,
            msg('p', std::string("md579e196f242e45bcd4de9fe9172046309\0", 36)));
  LoginProbe scram("health", "s3cret", "postgres");
  std::string first =
      scram.feed(authReq(10, std::string("SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0", 34))).send;
  EXPECT_EQ(first.substr(5, 14), std::string("SCRAM-SHA-256\0", 14));
  EXPECT_NE(first.find("n,,n=,r="), std::string::npos);
  // A primary answers f.
  LoginProbe p("health", "", "postgres");
  p.feed(authReq(0) + ready());
  auto done = p.feed(row("f") + ready());
  EXPECT_EQ(done.kind, LoginProbe::Step::kDone);
  EXPECT_EQ(done.role, Role::kPrimary);
}

TEST(LoginProbe, FailuresSayWhyWithoutThePassword) {
  LoginProbe p("health", "s3cret", "postgres");
  std::string err =
      msg('E', std::string("SFATAL\0C57P03\0Mthe database system is starting up\0\0", 51));
  auto s = p.feed(err);
  EXPECT_EQ(s.kind, LoginProbe::Step::kFailed);
  EXPECT_EQ(s.sqlstate, "57P03");
  EXPECT_NE(s.error.find("starting up"), std::string::npos);
  const std::string hostile[] = {
      std::string("R\0\0\0\x02", 5),                           // length below 4
      std::string("R\x7f\0\0\0", 5),                           // beyond the bound
      authReq(7),                                              // GSSAPI
      authReq(10, std::string("SCRAM-SHA-256-PLUS\0\0", 20)),  // only -PLUS
      authReq(11, "r=nope,s=QUJD,i=1"),                        // nonce not ours
      ready(),                                                 // ready before authentication
      authReq(5, "ab"),                                        // short md5 salt
  };
  for (const auto& h : hostile) {
    LoginProbe q("health", "s3cret", "postgres");
    auto r = q.feed(h);
    EXPECT_EQ(r.kind, LoginProbe::Step::kFailed) << h.size();
    EXPECT_EQ(r.error.find("s3cret"), std::string::npos);
  }
  LoginProbe norow("health", "", "postgres");
  norow.feed(authReq(0) + ready());
  EXPECT_EQ(norow.feed(ready()).kind, LoginProbe::Step::kFailed);
}

}  // namespace
}  // namespace pgproxy::upstream
