// SASLprep as PostgreSQL applies it to SCRAM passwords: RFC 4013's own examples, PostgreSQL's
// choices where the RFC leaves the caller to decide (ASCII as is, no empty result, checks on the
// mapped input), and malformed UTF-8. The same passwords against PostgreSQL's stored verifiers
// are in tests/integration/authenticate_test.cc.
#include "pgproxy/auth/saslprep.h"

#include <gtest/gtest.h>

#include "pgproxy/auth/scram_server.h"

namespace pgproxy::auth {
namespace {

std::string prep(const std::string& in, SaslPrepResult want = SaslPrepResult::kOk) {
  std::string out = "untouched";
  EXPECT_EQ(saslPrep(in, out), want) << in;
  return out;
}

TEST(SaslPrep, Rfc4013Examples) {
  EXPECT_EQ(prep("I\u00ADX"), "IX");  // 1: SOFT HYPHEN mapped to nothing
  EXPECT_EQ(prep("user"), "user");    // 2: no transformation
  EXPECT_EQ(prep("USER"), "USER");    // 3: case preserved
  EXPECT_EQ(prep("\u00AA"), "a");     // 4: NFKC
  EXPECT_EQ(prep("\u2168"), "IX");    // 5: NFKC, ROMAN NUMERAL NINE matches #1
  // 6: a prohibited character. PostgreSQL passes pure ASCII through untouched, so it is only
  // prohibited among non-ASCII characters.
  EXPECT_EQ(prep("\u0007"), "\u0007");
  EXPECT_EQ(prep("\u00AA\u0007", SaslPrepResult::kProhibited), "untouched");
  // 7: the bidirectional check.
  EXPECT_EQ(prep("\u0627\u0031", SaslPrepResult::kProhibited), "untouched");
}

TEST(SaslPrep, MappingNormalizationAndBidi) {
  EXPECT_EQ(prep("a\u00A0b\u3000c"), "a b c");                  // non-ASCII spaces become SPACE
  EXPECT_EQ(prep("\uFF21\uFF22\uFF23"), "ABC");                 // fullwidth forms
  EXPECT_EQ(prep("\uFB01"), "fi");                              // a ligature
  EXPECT_EQ(prep("cafe\u0301"), "caf\u00E9");                   // composed
  EXPECT_EQ(prep("caf\u00E9"), "caf\u00E9");                    // already NFKC
  EXPECT_EQ(prep("\u0627\u0031\u0628"), "\u0627\u0031\u0628");  // RTL first and last: fine
  EXPECT_EQ(prep("\u0627a\u0628", SaslPrepResult::kProhibited), "untouched");  // RTL with LTR
  // PostgreSQL checks the mapped input, not the normalized output: a Hebrew presentation form
  // ends the string, though its decomposition ends with a non-spacing mark.
  EXPECT_EQ(prep("\uFB2A"), "\u05E9\u05C1");
}

TEST(SaslPrep, ProhibitedAndUnassignedCharactersAndNothingLeft) {
  EXPECT_EQ(prep("\u00AD", SaslPrepResult::kProhibited), "untouched");   // empty once mapped
  EXPECT_EQ(prep("a\uE000", SaslPrepResult::kProhibited), "untouched");  // private use
  EXPECT_EQ(prep("a\uFFFE", SaslPrepResult::kProhibited), "untouched");  // non-character
  EXPECT_EQ(prep("a\u0221", SaslPrepResult::kProhibited), "untouched");  // unassigned in 3.2
  // Assigned since Unicode 3.2, so unassigned to RFC 3454: PostgreSQL uses such a password as
  // it is, and so does pgproxy.
  EXPECT_EQ(prep("\U0001F600", SaslPrepResult::kProhibited), "untouched");
  EXPECT_EQ(scramPassword("\U0001F600"), "\U0001F600");
}

TEST(SaslPrep, MalformedUtf8IsUsedAsIs) {
  for (const char* bad : {"\xC3", "a\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                          "\xF8\x88\x80\x80\x80", "\xFF", "\x80", "\xE2\x82", "\xF0\x9F\x98"}) {
    EXPECT_EQ(prep(bad, SaslPrepResult::kInvalidUtf8), "untouched") << bad;
    EXPECT_EQ(scramPassword(bad), bad);
  }
  // NUL: PostgreSQL's passwords are C strings; one that holds a NUL is not prepared.
  const std::string nul("a\0\u00AA", 4);
  EXPECT_EQ(prep(nul, SaslPrepResult::kInvalidUtf8), "untouched");
  EXPECT_EQ(scramPassword(nul), nul);
  // The last well-formed code point decodes (and is private use, so prohibited).
  EXPECT_EQ(prep("\xF4\x8F\xBF\xBD", SaslPrepResult::kProhibited), "untouched");
}

TEST(SaslPrep, VerifiersAndLoginsUseThePreparedPassword) {
  EXPECT_EQ(scramPassword("pass\u00ADword\u2168"), "passwordIX");
  EXPECT_EQ(scramPassword("plain ascii"), "plain ascii");
  const std::string salt = "saltsaltsaltsalt";
  EXPECT_EQ(ScramVerifier::fromPassword("pass\u00ADword\u2168", salt, 16).text(),
            ScramVerifier::fromPassword("passwordIX", salt, 16).text());
  EXPECT_NE(ScramVerifier::fromPassword("pass\u00ADword", salt, 16).text(),
            ScramVerifier::fromPassword("pass\u00ADwordx", salt, 16).text());
}

}  // namespace
}  // namespace pgproxy::auth
