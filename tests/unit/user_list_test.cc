#include "pgproxy/auth/user_list.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

namespace pgproxy::auth {
namespace {

constexpr const char* kVerifier =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

TEST(UserList, ParsesTheThreeKindsOfSecret) {
  std::string text = std::string("; comment\n# another\n\n") + "\"alice\" \"" + kVerifier + "\"\n" +
                     "  \"bob\"\t\"md5" + std::string(32, 'a') + "\"  \r\n" +
                     "\"car\"\"ol\" \"pass \"\"word\"\"\"\n" + "\"dave\" \"md5short\"";
  auto list = UserList::parse(text, "users.txt");
  ASSERT_TRUE(list.ok()) << list.error().message;
  EXPECT_EQ(list->size(), 4u);
  ASSERT_NE(list->find("alice"), nullptr);
  EXPECT_EQ(list->find("alice")->kind, UserSecret::Kind::kScram);
  EXPECT_EQ(list->find("alice")->verifier.iterations, 4096u);
  EXPECT_EQ(list->find("bob")->kind, UserSecret::Kind::kMd5);
  ASSERT_NE(list->find("car\"ol"), nullptr);
  EXPECT_EQ(list->find("car\"ol")->kind, UserSecret::Kind::kPlain);
  EXPECT_EQ(list->find("car\"ol")->text, "pass \"word\"");
  EXPECT_EQ(list->find("dave")->kind, UserSecret::Kind::kPlain);  // not a hash: a password
  EXPECT_EQ(list->find("eve"), nullptr);
}

TEST(UserList, MalformedLinesAreErrorsNamingTheLine) {
  const std::pair<std::string, std::string> bad[] = {
      {"alice secret", "u.txt:1: user: expected a double-quoted field"},
      {"\n\"alice\"", "u.txt:2: secret of \"alice\": expected a double-quoted field"},
      {"\"alice", "u.txt:1: user: unterminated double-quoted field"},
      {"\"alice\" \"secret", "u.txt:1: secret of \"alice\": unterminated double-quoted field"},
      {"\"alice\" \"s\" extra", "u.txt:1: unexpected text after the secret of \"alice\""},
      {"\"\" \"s\"", "u.txt:1: empty user name"},
      {"\"alice\" \"\"", "u.txt:1: secret of \"alice\": empty secret"},
      {"\"alice\" \"SCRAM-SHA-256$broken\"", "u.txt:1: secret of \"alice\": not a SCRAM"},
      {"\"a\" \"x\"\n\"a\" \"y\"", "u.txt:2: user listed twice"},
      {"\"" + std::string(5000, 'u') + "\" \"x\"", "u.txt:1: user: field longer than 4096"},
  };
  for (const auto& [text, want] : bad) {
    auto r = UserList::parse(text, "u.txt");
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.error().message.substr(0, want.size()), want) << r.error().message;
  }
}

}  // namespace
}  // namespace pgproxy::auth

namespace pgproxy::auth {
namespace {

// The example shipped with the package (etc/pgproxy/userlist.txt.example) is a valid auth file
// with one secret of each kind.
TEST(UserList, ShippedExampleParses) {
  std::ifstream in(std::string(PGPROXY_SRCDIR) + "/etc/pgproxy/userlist.txt.example");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(text.empty());
  auto list = UserList::parse(text, "userlist.txt.example");
  ASSERT_TRUE(list.ok()) << list.error().message;
  ASSERT_NE(list->find("app"), nullptr);
  ASSERT_NE(list->find("reporting"), nullptr);
  ASSERT_NE(list->find("batch"), nullptr);
  EXPECT_EQ(list->find("app")->kind, UserSecret::Kind::kScram);
  EXPECT_EQ(list->find("reporting")->kind, UserSecret::Kind::kMd5);
  EXPECT_EQ(list->find("batch")->kind, UserSecret::Kind::kPlain);
}

}  // namespace
}  // namespace pgproxy::auth
