#include "pgproxy/auth/client_auth.h"

#include <gtest/gtest.h>

#include "pgproxy/auth/scram_client.h"
#include "pgproxy/proto/wire.h"
#include "wire_test_util.h"

namespace pgproxy::auth {
namespace {

using test::authReq;
using test::msg;

std::uint32_t authCode(const std::string& m) {
  return m.size() >= 9 && m[0] == 'R' ? proto::readU32(m.data() + 5) : 0xFFFFFFFFu;
}
std::string authData(const std::string& m) {
  return m.substr(9);
}
std::string sqlstate(const std::string& fatal) {
  return errorField(std::string_view(fatal).substr(5), 'C');
}
std::string initial(const std::string& mechanism, const std::string& data) {
  std::string b = mechanism + '\0';
  proto::appendU32(b, static_cast<std::uint32_t>(data.size()));
  return msg('p', b + data);
}

UserSecret secret(const std::string& text) {
  auto s = classifySecret(text);
  EXPECT_TRUE(s.ok());
  return *s;
}

// A libpq-like SCRAM client through a ClientAuth; returns the final step.
ClientAuth::Step scramLogin(ClientAuth& a, const std::string& password,
                            const std::string& mechanism = "SCRAM-SHA-256") {
  auto s = a.start();
  EXPECT_EQ(authCode(s.send), 10u);
  ScramClient c(password, randomNonce());
  s = a.feed(initial(mechanism, c.clientFirst()));
  if (s.kind != ClientAuth::Step::kContinue) {
    return s;
  }
  EXPECT_EQ(authCode(s.send), 11u);
  auto final = c.clientFinal(authData(s.send));
  EXPECT_TRUE(final.ok());
  s = a.feed(msg('p', *final));
  if (s.kind == ClientAuth::Step::kOk) {
    EXPECT_EQ(authCode(s.send), 12u);
    EXPECT_TRUE(c.verifyServerFinal(authData(s.send)).ok());
  }
  return s;
}

ClientAuth::Settings scram() {
  return {ClientAuthType::kScramSha256, "", "mock"};
}

TEST(ClientAuth, ScramWithAVerifierYieldsKeysForTheServer) {
  UserSecret v = secret(ScramVerifier::fromPassword("pw", "saltsaltsaltsalt").text());
  ClientAuth a("alice", &v, scram());
  EXPECT_EQ(scramLogin(a, "pw").kind, ClientAuth::Step::kOk);
  auto c = a.serverCredentials();
  EXPECT_EQ(c.kind, ServerCredentials::Kind::kScramKeys);
  EXPECT_EQ(c.server_key, v.verifier.server_key);
  EXPECT_EQ(c.client_key.size(), 32u);
}

TEST(ClientAuth, ScramWithAPasswordAndWrongPasswords) {
  UserSecret plain = secret("pw");
  ClientAuth ok("alice", &plain, scram());
  EXPECT_EQ(scramLogin(ok, "pw").kind, ClientAuth::Step::kOk);
  EXPECT_EQ(ok.serverCredentials().kind, ServerCredentials::Kind::kPassword);
  ClientAuth wrong("alice", &plain, scram());
  auto s = scramLogin(wrong, "nope");
  ASSERT_EQ(s.kind, ClientAuth::Step::kFailed);
  EXPECT_EQ(sqlstate(s.send), "28P01");
  EXPECT_EQ(errorField(std::string_view(s.send).substr(5), 'M'),
            "password authentication failed for user \"alice\"");
  EXPECT_EQ(s.log, "wrong password");
}

// An unknown user and an md5 hash under SCRAM: the same exchange and the same words as a wrong
// password.
TEST(ClientAuth, UnknownUsersCannotBeToldFromWrongPasswords) {
  ClientAuth unknown("mallory", nullptr, scram());
  auto s = scramLogin(unknown, "pw");
  ASSERT_EQ(s.kind, ClientAuth::Step::kFailed);
  EXPECT_EQ(errorField(std::string_view(s.send).substr(5), 'M'),
            "password authentication failed for user \"mallory\"");
  EXPECT_EQ(s.log, "no such user in the auth file");
  UserSecret md5 = secret("md5" + std::string(32, 'a'));
  ClientAuth hashed("bob", &md5, scram());
  s = scramLogin(hashed, "pw");
  ASSERT_EQ(s.kind, ClientAuth::Step::kFailed);
  EXPECT_EQ(sqlstate(s.send), "28P01");
}

TEST(ClientAuth, Md5MethodWithPasswordsHashesAndVerifiers) {
  ClientAuth::Settings md5{ClientAuthType::kMd5, "", "mock"};
  UserSecret plain = secret("pw");
  UserSecret hash =
      secret("md5aa7bb6fc2700e717ae61ec5c1567469c");  // "md5" + md5hex("pw" + "alice")
  for (const UserSecret* s : {&plain, &hash}) {
    ClientAuth a("alice", s, md5);
    auto step = a.start();
    ASSERT_EQ(authCode(step.send), 5u);
    std::string salt = authData(step.send);
    EXPECT_EQ(a.feed(msg('p', md5Password("alice", "pw", salt) + '\0')).kind,
              ClientAuth::Step::kOk);
    EXPECT_EQ(a.serverCredentials().kind,
              s == &plain ? ServerCredentials::Kind::kPassword : ServerCredentials::Kind::kMd5Hash);
  }
  ClientAuth wrong("alice", &plain, md5);
  std::string salt = authData(wrong.start().send);
  EXPECT_EQ(wrong.feed(msg('p', md5Password("alice", "nope", salt) + '\0')).kind,
            ClientAuth::Step::kFailed);
  // A SCRAM verifier under md5 runs SCRAM, as PostgreSQL does.
  UserSecret v = secret(ScramVerifier::fromPassword("pw", "saltsaltsaltsalt").text());
  ClientAuth upgraded("alice", &v, md5);
  EXPECT_EQ(scramLogin(upgraded, "pw").kind, ClientAuth::Step::kOk);
}

TEST(ClientAuth, TrustNeedsNoExchange) {
  ClientAuth a("anyone", nullptr, {ClientAuthType::kTrust, "", "mock"});
  auto s = a.start();
  EXPECT_EQ(s.kind, ClientAuth::Step::kOk);
  EXPECT_TRUE(s.send.empty());
  EXPECT_EQ(a.serverCredentials().kind, ServerCredentials::Kind::kNone);
}

ClientCertificate certificate(bool present, bool verified, const std::string& cn) {
  return {present, verified, verified ? "" : "unable to get local issuer certificate", cn};
}

ClientAuth::Settings certSettings(ClientCertificate c) {
  ClientAuth::Settings s{ClientAuthType::kCert, "", "mock"};
  s.certificate = std::move(c);
  return s;
}

TEST(ClientAuth, CertNeedsAVerifiedCertificateNamingTheUser) {
  // Accepted: no exchange, and the backend login is trust's (the file's secret, if any).
  UserSecret pw = secret("a password");
  ClientAuth ok("alice", &pw, certSettings(certificate(true, true, "alice")));
  auto s = ok.start();
  EXPECT_EQ(s.kind, ClientAuth::Step::kOk);
  EXPECT_TRUE(s.send.empty());
  EXPECT_EQ(ok.serverCredentials().kind, ServerCredentials::Kind::kPassword);
  EXPECT_EQ(ok.serverCredentials().password, "a password");
  ClientAuth unknown("alice", nullptr, certSettings(certificate(true, true, "alice")));
  EXPECT_EQ(unknown.start().kind, ClientAuth::Step::kOk);
  EXPECT_EQ(unknown.serverCredentials().kind, ServerCredentials::Kind::kNone);

  // No certificate (or a plaintext client), or one that did not verify: PostgreSQL's words.
  for (const auto& c : {certificate(false, false, ""), certificate(true, false, "alice")}) {
    ClientAuth a("alice", &pw, certSettings(c));
    auto f = a.start();
    ASSERT_EQ(f.kind, ClientAuth::Step::kFailed);
    EXPECT_EQ(sqlstate(f.send), "28000");
    EXPECT_EQ(errorField(std::string_view(f.send).substr(5), 'M'),
              "connection requires a valid client certificate");
    EXPECT_FALSE(f.log.empty());
  }
  auto unverified = ClientAuth::checkCertificate("alice", certificate(true, false, "alice"));
  EXPECT_NE(unverified.log.find("unable to get local issuer certificate"), std::string::npos)
      << unverified.log;

  // The CN must be the user, byte for byte; an empty CN (absent, or with an embedded NUL) matches
  // no one.
  for (const std::string cn : {"bob", "Alice", "alice ", ""}) {
    auto f = ClientAuth::checkCertificate("alice", certificate(true, true, cn));
    ASSERT_EQ(f.kind, ClientAuth::Step::kFailed) << cn;
    EXPECT_EQ(sqlstate(f.send), "28000");
    EXPECT_EQ(errorField(std::string_view(f.send).substr(5), 'M'),
              "certificate authentication failed for user \"alice\"");
    EXPECT_NE(f.log.find("provided user name (alice)"), std::string::npos) << f.log;
    EXPECT_NE(f.log.find("(" + (cn.empty() ? std::string("none") : cn) + ")"), std::string::npos)
        << f.log;
  }
  // A cert login takes no password message: it never asked for one.
  ClientAuth after("alice", &pw, certSettings(certificate(true, true, "alice")));
  after.start();
  EXPECT_EQ(after.feed(msg('p', std::string("pw") + '\0')).kind, ClientAuth::Step::kFailed);
}

TEST(ClientAuth, ChannelBindingIsOfferedAndChecked) {
  UserSecret plain = secret("pw");
  ClientAuth a("alice", &plain, {ClientAuthType::kScramSha256, std::string(32, 'h'), "mock"});
  auto s = a.start();
  EXPECT_NE(s.send.find(std::string("SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0", 34)),
            std::string::npos);
  // A client that could bind but was told we cannot (a stripped PLUS): refused as a downgrade.
  ClientAuth b("alice", &plain, {ClientAuthType::kScramSha256, std::string(32, 'h'), "mock"});
  b.start();
  s = b.feed(initial("SCRAM-SHA-256", "y,,n=,r=abc"));
  ASSERT_EQ(s.kind, ClientAuth::Step::kFailed);
  EXPECT_EQ(sqlstate(s.send), "08P01");
  EXPECT_EQ(s.log, "SCRAM channel binding negotiation error");
}

TEST(ClientAuth, MalformedClientMessages) {
  UserSecret plain = secret("pw");
  const std::string bad[] = {
      msg('Q', std::string("select 1\0", 9)),                     // not a password message
      std::string("p\0\0\0\x02", 5),                              // length below 4
      std::string("p\x7f\0\0\0", 5),                              // beyond the bound
      msg('p', "SCRAM-SHA-256"),                                  // no NUL, no length
      msg('p', std::string("SCRAM-SHA-256\0\0\0\0\x09n,,", 21)),  // length beyond the data
      initial("SCRAM-SHA-256", "n,,n=,r=a") + "x",                // bytes after the message
  };
  for (const auto& m : bad) {
    ClientAuth a("alice", &plain, scram());
    a.start();
    auto s = a.feed(m);
    EXPECT_EQ(s.kind, ClientAuth::Step::kFailed) << m.size();
    EXPECT_EQ(sqlstate(s.send), "08P01");
  }
  ClientAuth md5("alice", &plain, {ClientAuthType::kMd5, "", "mock"});
  md5.start();
  EXPECT_EQ(sqlstate(md5.feed(msg('p', "md5nonul")).send), "08P01");
}

}  // namespace
}  // namespace pgproxy::auth
