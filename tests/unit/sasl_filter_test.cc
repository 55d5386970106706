#include "pgproxy/proto/sasl_filter.h"

#include <gtest/gtest.h>

#include "pgproxy/proto/wire.h"

namespace pgproxy::proto {
namespace {

std::string message(char type, const std::string& body) {
  std::string out(1, type);
  appendU32(out, static_cast<std::uint32_t>(4 + body.size()));
  return out + body;
}

std::string auth(std::uint32_t code, const std::string& rest = {}) {
  std::string body;
  appendU32(body, code);
  return message('R', body + rest);
}

std::string saslList(std::initializer_list<std::string> names) {
  std::string list;
  for (const auto& n : names) {
    list += n + std::string(1, '\0');
  }
  return auth(10, list + std::string(1, '\0'));
}

std::string feedAll(SaslMechanismFilter& f, const std::string& in, std::size_t chunk) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += chunk) {
    f.feed(std::string_view(in).substr(i, chunk), out);
  }
  return out;
}

TEST(SaslFilter, RemovesPlusFromTheMechanismList) {
  std::string in = saslList({"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"});
  for (std::size_t chunk : {in.size(), std::size_t{1}, std::size_t{7}}) {
    SaslMechanismFilter f;
    EXPECT_EQ(feedAll(f, in, chunk), saslList({"SCRAM-SHA-256"})) << "chunk " << chunk;
    EXPECT_TRUE(f.removedPlus());
    EXPECT_TRUE(f.active());  // the SASL exchange itself is still to come
  }
}

TEST(SaslFilter, LeavesOtherListsAndMessagesAlone) {
  SaslMechanismFilter f;
  std::string in = saslList({"SCRAM-SHA-256"}) + auth(11, "r=abc") + auth(12, "v=xyz") + auth(0) +
                   message('S', std::string("a\0b\0", 4)) + message('Z', "I");
  EXPECT_EQ(feedAll(f, in, 3), in);
  EXPECT_FALSE(f.removedPlus());
  EXPECT_FALSE(f.active());  // AuthenticationOk ends the authentication phase
}

TEST(SaslFilter, BytesAfterAuthenticationPassUntouched) {
  SaslMechanismFilter f;
  std::string out;
  std::string tail = saslList({"SCRAM-SHA-256-PLUS"});  // after AuthenticationOk: not rewritten
  f.feed(auth(0) + tail, out);
  EXPECT_EQ(out, auth(0) + tail);
  EXPECT_FALSE(f.active());
}

TEST(SaslFilter, ErrorResponseEndsTheFilter) {
  SaslMechanismFilter f;
  std::string err = buildFatal("28P01", "password authentication failed");
  EXPECT_EQ(feedAll(f, err, 2), err);
  EXPECT_FALSE(f.active());
}

TEST(SaslFilter, NoticeBeforeAuthenticationKeepsItActive) {
  SaslMechanismFilter f;
  std::string notice = message('N', std::string("SNOTICE\0Mhello\0\0", 17));
  std::string out = feedAll(f, notice + saslList({"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}), 5);
  EXPECT_EQ(out, notice + saslList({"SCRAM-SHA-256"}));
}

TEST(SaslFilter, MalformedStreamsPassUnchangedAndStopTheFilter) {
  // Lengths below 4 or beyond the bound: not something to interpret.
  for (std::string in : {std::string("R\0\0\0\x02zz", 7), std::string("R\x7f\xff\xff\xffxyz", 8)}) {
    SaslMechanismFilter f;
    EXPECT_EQ(feedAll(f, in, 1), in);
    EXPECT_FALSE(f.active());
  }
  // A mechanism list without its terminator, or with bytes after it, is forwarded as it came.
  SaslMechanismFilter g;
  std::string unterminated = auth(10, std::string("SCRAM-SHA-256-PLUS\0SCRAM", 24));
  EXPECT_EQ(feedAll(g, unterminated, 4), unterminated);
  SaslMechanismFilter h;
  std::string trailing = auth(10, std::string("SCRAM-SHA-256-PLUS\0\0junk", 24));
  EXPECT_EQ(feedAll(h, trailing, 4), trailing);
  // A partial message is held (bounded), not forwarded half.
  SaslMechanismFilter k;
  std::string out;
  std::string list = saslList({"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"});
  k.feed(std::string_view(list).substr(0, 10), out);
  EXPECT_TRUE(out.empty());
  k.feed(std::string_view(list).substr(10), out);
  EXPECT_EQ(out, saslList({"SCRAM-SHA-256"}));
}

std::string initialResponse(const std::string& mechanism, const std::string& data) {
  std::string body = mechanism + std::string(1, '\0');
  appendU32(body, static_cast<std::uint32_t>(data.size()));
  return message('p', body + data);
}

TEST(SaslClientFirst, SpotsTheChannelBindingDowngradeFlag) {
  std::string y = initialResponse("SCRAM-SHA-256", "y,,n=,r=abcdef");
  EXPECT_EQ(checkSaslInitialResponse(y), ScramClientFirst::kBindingDowngrade);
  EXPECT_EQ(checkSaslInitialResponse(initialResponse("SCRAM-SHA-256", "n,,n=,r=abcdef")),
            ScramClientFirst::kFine);
  EXPECT_EQ(checkSaslInitialResponse(
                initialResponse("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=x")),
            ScramClientFirst::kFine);
  // Incomplete: wait for the rest; a password message or anything malformed: not ours to judge.
  for (std::size_t cut : {std::size_t{0}, std::size_t{4}, y.size() - 1}) {
    EXPECT_EQ(checkSaslInitialResponse(y.substr(0, cut)), ScramClientFirst::kNeedMore) << cut;
  }
  EXPECT_EQ(checkSaslInitialResponse(message('p', std::string("secret\0", 7))),
            ScramClientFirst::kFine);
  EXPECT_EQ(checkSaslInitialResponse(message('p', "SCRAM-SHA-256")), ScramClientFirst::kFine);
  EXPECT_EQ(checkSaslInitialResponse(std::string("p\0\0\0\x01", 5)), ScramClientFirst::kFine);
  EXPECT_EQ(checkSaslInitialResponse(std::string("p\x7f\0\0\0", 5)), ScramClientFirst::kFine);
  EXPECT_EQ(checkSaslInitialResponse(message('Q', "select 1")), ScramClientFirst::kFine);
}

}  // namespace
}  // namespace pgproxy::proto
