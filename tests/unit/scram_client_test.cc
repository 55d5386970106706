#include "pgproxy/auth/scram_client.h"

#include <gtest/gtest.h>

namespace pgproxy::auth {
namespace {

// RFC 7677, section 3: user "user", password "pencil".
constexpr const char* kServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

TEST(ScramClient, Rfc7677TestVector) {
  ScramClient c("pencil", "rOprNGfwEbeRWgbNEkqO", "user");
  EXPECT_EQ(c.clientFirst(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  auto final = c.clientFinal(kServerFirst);
  ASSERT_TRUE(final.ok()) << final.error().message;
  EXPECT_EQ(*final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
  EXPECT_TRUE(c.verifyServerFinal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").ok());
  auto forged = c.verifyServerFinal("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
  EXPECT_FALSE(forged.ok());
  EXPECT_NE(c.verifyServerFinal("e=invalid-proof").error().message.find("invalid-proof"),
            std::string::npos);
}

TEST(ScramClient, PostgresFormAndHostileServers) {
  ScramClient c("pw", "abc");
  EXPECT_EQ(c.clientFirst(), "n,,n=,r=abc");  // PostgreSQL: the user is in the StartupMessage
  const char* bad[] = {
      "r=xyz123,s=QUJD,i=4096",         // nonce not extending ours
      "r=abc,s=QUJD,i=4096",            // not extended at all
      "r=abcdef,s=QUJD,i=0",            // no iterations
      "r=abcdef,s=QUJD,i=99999999999",  // a server trying to pin the CPU
      "r=abcdef,s=!!!!,i=4096",         // salt not base64
      "r=abcdef,i=4096",                // no salt
      "m=ext,r=abcdef,s=QUJD,i=4096",   // mandatory extension
      "",
  };
  for (const char* msg : bad) {
    ScramClient k("pw", "abc");
    EXPECT_FALSE(k.clientFinal(msg).ok()) << msg;
  }
  ScramClient k("pw", "abc");
  EXPECT_FALSE(k.verifyServerFinal("v=AAAA").ok());  // before any exchange
}

TEST(ScramClient, Base64AndMd5) {
  std::string out;
  EXPECT_EQ(base64Encode("n,,"), "biws");
  EXPECT_TRUE(base64Decode("QUJD", out));
  EXPECT_EQ(out, "ABC");
  EXPECT_TRUE(base64Decode("QQ==", out));
  EXPECT_EQ(out, "A");
  EXPECT_FALSE(base64Decode("QQ=", out));
  EXPECT_FALSE(base64Decode("!!!!", out));
  EXPECT_EQ(md5Password("health", "s3cret", std::string("\x01\x02\x03\x04", 4)),
            "md579e196f242e45bcd4de9fe9172046309");
  EXPECT_EQ(randomNonce().size(), 24u);
  EXPECT_NE(randomNonce(), randomNonce());
}

}  // namespace
}  // namespace pgproxy::auth
