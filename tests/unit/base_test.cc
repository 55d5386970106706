#include <gtest/gtest.h>

#include "pgproxy/base/text.h"

namespace pgproxy::base {
namespace {

TEST(Duration, Units) {
  EXPECT_EQ(parseDurationMs("500ms"), 500u);
  EXPECT_EQ(parseDurationMs("10s"), 10000u);
  EXPECT_EQ(parseDurationMs("10"), 10000u);
  EXPECT_EQ(parseDurationMs("2m"), 120000u);
  EXPECT_EQ(parseDurationMs("1h"), 3600000u);
}

TEST(Duration, Rejects) {
  EXPECT_FALSE(parseDurationMs(""));
  EXPECT_FALSE(parseDurationMs("s"));
  EXPECT_FALSE(parseDurationMs("10x"));
  EXPECT_FALSE(parseDurationMs("-1s"));
  EXPECT_FALSE(parseDurationMs("1.5s"));
  EXPECT_FALSE(parseDurationMs("99999999999999999999"));
  EXPECT_FALSE(parseDurationMs("999999h"));
}

TEST(Unsigned, Parses) {
  EXPECT_EQ(parseUnsigned("0"), 0u);
  EXPECT_EQ(parseUnsigned("65535"), 65535u);
  EXPECT_FALSE(parseUnsigned("12a"));
  EXPECT_FALSE(parseUnsigned(" 1"));
  EXPECT_FALSE(parseUnsigned("12345678901234567890"));
}

TEST(EditDistance, Basic) {
  EXPECT_EQ(editDistance("mappings", "mapings"), 1u);
  EXPECT_EQ(editDistance("", "abc"), 3u);
  EXPECT_EQ(editDistance("same", "same"), 0u);
}

TEST(Lower, Ascii) {
  EXPECT_EQ(toLowerAscii("HoSt1.Example.COM"), "host1.example.com");
}

TEST(Lower, ContainsIgnoringCase) {
  EXPECT_TRUE(containsIgnoringCase("begin; DeAllocate x", "deallocate"));
  EXPECT_TRUE(containsIgnoringCase("deallocate", "deallocate"));
  EXPECT_FALSE(containsIgnoringCase("dealloc", "deallocate"));
  EXPECT_FALSE(containsIgnoringCase("", "x"));
  EXPECT_TRUE(containsIgnoringCase("anything", ""));
  EXPECT_FALSE(containsIgnoringCase("ALLOCATE", "deallocate"));
}

}  // namespace
}  // namespace pgproxy::base
