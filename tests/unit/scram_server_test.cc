#include "pgproxy/auth/scram_server.h"

#include <gtest/gtest.h>

#include "pgproxy/auth/scram_client.h"

namespace pgproxy::auth {
namespace {

using Result = ScramServer::Result;

std::string rfcSalt() {
  std::string salt;
  EXPECT_TRUE(base64Decode("W22ZaJ0SNY7soEsUEjb6gQ==", salt));
  return salt;
}

// RFC 7677, section 3: user "user", password "pencil", the server's side of the exchange.
TEST(ScramServer, Rfc7677TestVector) {
  ScramServer s(ScramVerifier::fromPassword("pencil", rfcSalt()), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                "");
  EXPECT_FALSE(s.offersPlus());
  auto first = s.clientFirst("SCRAM-SHA-256", "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  ASSERT_EQ(first.result, Result::kContinue) << first.message;
  EXPECT_EQ(first.message,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"
            "i=4096");
  auto final = s.clientFinal(
      "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
      "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
  ASSERT_EQ(final.result, Result::kOk) << final.message;
  EXPECT_EQ(final.message, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
  // The recovered ClientKey is the one the password gives.
  std::string salted = saltedPassword("pencil", rfcSalt(), 4096);
  EXPECT_EQ(s.clientKey(), hmacSha256(salted, "Client Key"));
}

TEST(ScramServer, VerifierTextRoundTripsAndRejectsMalformedOnes) {
  ScramVerifier v = ScramVerifier::fromPassword("pencil", rfcSalt());
  auto parsed = ScramVerifier::parse(v.text());
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->text(), v.text());
  EXPECT_EQ(parsed->iterations, 4096u);
  const char* bad[] = {
      "",
      "md5abc",
      "SCRAM-SHA-256$",
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
      "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
      "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
      "SCRAM-SHA-256$4096:!!!$AAAA:AAAA",
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",  // keys of the wrong size
      "SCRAM-SHA-256$4096$W22ZaJ0SNY7soEsUEjb6gQ==:AAAA:AAAA",
  };
  for (const char* text : bad) {
    EXPECT_FALSE(ScramVerifier::parse(text).ok()) << text;
  }
}

// pgproxy's own client against its own server: the right password, a wrong one.
TEST(ScramServer, OurClientLogsInWithTheRightPasswordOnly) {
  for (const char* password : {"secret", "wrong"}) {
    ScramServer s(ScramVerifier::fromPassword("secret", "0123456789abcdef"), randomNonce(), "");
    ScramClient c(password, randomNonce());
    auto first = s.clientFirst("SCRAM-SHA-256", c.clientFirst());
    ASSERT_EQ(first.result, Result::kContinue) << first.message;
    auto answer = c.clientFinal(first.message);
    ASSERT_TRUE(answer.ok()) << answer.error().message;
    auto final = s.clientFinal(*answer);
    if (std::string(password) == "secret") {
      ASSERT_EQ(final.result, Result::kOk) << final.message;
      EXPECT_TRUE(c.verifyServerFinal(final.message).ok());
    } else {
      EXPECT_EQ(final.result, Result::kWrongPassword);
      EXPECT_TRUE(s.clientKey().empty());
    }
  }
}

// What pooled logins do: the client proves itself to pgproxy, and pgproxy answers the backend
// (which holds the same verifier) with the recovered ClientKey, never knowing the password.
TEST(ScramServer, RecoveredClientKeyLogsInToTheBackendWithoutThePassword) {
  ScramVerifier v = ScramVerifier::fromPassword("secret", "0123456789abcdef");
  ScramServer proxy(v, randomNonce(), "");
  ScramClient client("secret", randomNonce());
  auto first = proxy.clientFirst("SCRAM-SHA-256", client.clientFirst());
  auto answer = client.clientFinal(first.message);
  ASSERT_TRUE(answer.ok());
  ASSERT_EQ(proxy.clientFinal(*answer).result, Result::kOk);

  ScramServer backend(v, randomNonce(), "");
  auto asProxy =
      ScramClient::withKeys(proxy.clientKey(), v.server_key, v.salt, v.iterations, randomNonce());
  auto bfirst = backend.clientFirst("SCRAM-SHA-256", asProxy.clientFirst());
  ASSERT_EQ(bfirst.result, Result::kContinue);
  auto banswer = asProxy.clientFinal(bfirst.message);
  ASSERT_TRUE(banswer.ok()) << banswer.error().message;
  auto bfinal = backend.clientFinal(*banswer);
  ASSERT_EQ(bfinal.result, Result::kOk) << bfinal.message;
  EXPECT_TRUE(asProxy.verifyServerFinal(bfinal.message).ok());

  // A backend whose verifier differs (its password changed): a clear error before any proof.
  ScramServer changed(ScramVerifier::fromPassword("secret", "fedcba9876543210"), "x", "");
  auto stale = ScramClient::withKeys(proxy.clientKey(), v.server_key, v.salt, v.iterations, "n");
  auto cfirst = changed.clientFirst("SCRAM-SHA-256", stale.clientFirst());
  auto refused = stale.clientFinal(cfirst.message);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("differs from the verifier"), std::string::npos);
}

TEST(ScramServer, Md5FromTheStoredHashMatchesTheAnswerFromThePassword) {
  const std::string stored =
      "md54a0a68b43b6cd5cf266fa02f196e2371";  // "md5" + md5hex("secret" + "alice")
  EXPECT_EQ(md5FromHash(stored, "salt"), "md5986e2194384c07f4fd1df4b1351b3e68");
  EXPECT_EQ(md5Password("alice", "secret", "salt"), md5FromHash(stored, "salt"));
}

// An unknown user gets a whole exchange with a stable salt, and always fails.
TEST(ScramServer, MockExchangeForUnknownUsers) {
  auto one = ScramServer::mock("nobody", "secret-of-this-process", "srv", "");
  auto two = ScramServer::mock("nobody", "secret-of-this-process", "srv", "");
  auto a = one.clientFirst("SCRAM-SHA-256", "n,,n=,r=cli");
  auto b = two.clientFirst("SCRAM-SHA-256", "n,,n=,r=cli");
  ASSERT_EQ(a.result, Result::kContinue);
  EXPECT_EQ(a.message, b.message);  // the same salt on every attempt, like a real user's
  ScramClient c("anything", "cli");
  auto answer = c.clientFinal(a.message);
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ(one.clientFinal(*answer).result, Result::kWrongPassword);
}

TEST(ScramServer, ChannelBindingTlsServerEndPoint) {
  const std::string hash(32, '\x42');  // the certificate hash on this connection
  ScramVerifier v = ScramVerifier::fromPassword("pw", "saltsaltsaltsalt");
  {
    ScramServer s(v, "srv", hash);
    EXPECT_TRUE(s.offersPlus());
    auto first = s.clientFirst("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=cli");
    ASSERT_EQ(first.result, Result::kContinue) << first.message;
    // c= carries the GS2 header and the hash; the proof is computed by hand.
    std::string without = "c=" + base64Encode("p=tls-server-end-point,," + hash) + ",r=clisrv";
    std::string salted = saltedPassword("pw", "saltsaltsaltsalt", 4096);
    std::string key = hmacSha256(salted, "Client Key");
    std::string auth = "n=,r=cli," + first.message + "," + without;
    std::string proof = xorBytes(key, hmacSha256(sha256(key), auth));
    EXPECT_EQ(s.clientFinal(without + ",p=" + base64Encode(proof)).result, Result::kOk);
  }
  {
    ScramServer s(v, "srv", hash);  // the client binds to another certificate: a MITM
    ASSERT_EQ(s.clientFirst("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=cli").result,
              Result::kContinue);
    std::string other(32, '\x43');
    auto r = s.clientFinal("c=" + base64Encode("p=tls-server-end-point,," + other) +
                           ",r=clisrv,p=" + base64Encode(std::string(32, 'x')));
    EXPECT_EQ(r.result, Result::kProtocolError);
    EXPECT_EQ(r.message, "SCRAM channel binding check failed");
  }
  // "y": the client could bind but thinks we cannot, while we offered PLUS: a downgrade.
  ScramServer y(v, "srv", hash);
  EXPECT_EQ(y.clientFirst("SCRAM-SHA-256", "y,,n=,r=cli").message,
            "SCRAM channel binding negotiation error");
  ScramServer noTls(v, "srv", "");
  EXPECT_EQ(noTls.clientFirst("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=cli").result,
            Result::kProtocolError);
  ScramServer yNoTls(v, "srv", "");
  EXPECT_EQ(yNoTls.clientFirst("SCRAM-SHA-256", "y,,n=,r=cli").result, Result::kContinue);
}

TEST(ScramServer, MalformedClientMessages) {
  ScramVerifier v = ScramVerifier::fromPassword("pw", "saltsaltsaltsalt");
  const std::pair<const char*, const char*> firsts[] = {
      {"SCRAM-SHA-1", "n,,n=,r=cli"},
      {"SCRAM-SHA-256", ""},
      {"SCRAM-SHA-256", "n"},
      {"SCRAM-SHA-256", "n,"},
      {"SCRAM-SHA-256", "x,,n=,r=cli"},
      {"SCRAM-SHA-256", "n,a=admin,n=,r=cli"},
      {"SCRAM-SHA-256", "p=tls-unique,,n=,r=cli"},
      {"SCRAM-SHA-256", "n,,n=,r="},
      {"SCRAM-SHA-256", "n,,r=cli"},
      {"SCRAM-SHA-256", "n,,n=,m=ext,r=cli"},
      {"SCRAM-SHA-256", "n,,n=,r=c\x01li"},
  };
  for (const auto& [mech, msg] : firsts) {
    ScramServer s(v, "srv", "");
    EXPECT_EQ(s.clientFirst(mech, msg).result, Result::kProtocolError) << mech << " " << msg;
  }
  EXPECT_EQ(ScramServer(v, "srv", "").clientFinal("c=biws,r=clisrv,p=AAAA").result,
            Result::kProtocolError);  // final before first
  const char* finals[] = {
      "",
      "c=biws,r=clisrv",
      "c=biws,r=other,p="
      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
      "c=eSws,r=clisrv,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  // "y,," for "n,,"
      "c=biws,r=clisrv,p=AAAA",
      "c=!!!!,r=clisrv,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
      "r=clisrv,c=biws,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
  };
  for (const char* msg : finals) {
    ScramServer s(v, "srv", "");
    ASSERT_EQ(s.clientFirst("SCRAM-SHA-256", "n,,n=,r=cli").result, Result::kContinue);
    EXPECT_EQ(s.clientFinal(msg).result, Result::kProtocolError) << msg;
  }
  ScramServer s(v, "srv", "");
  EXPECT_EQ(s.clientFirst("SCRAM-SHA-256", std::string(2000, 'n')).result, Result::kProtocolError);
}

}  // namespace
}  // namespace pgproxy::auth
