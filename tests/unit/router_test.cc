#include "pgproxy/route/router.h"

#include <gtest/gtest.h>

namespace pgproxy::route {
namespace {

config::Config load(const std::string& text) {
  auto r = config::loadString(text, "t.yaml");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? r.value() : config::Config{};
}

const char* kTwo = R"(mappings:
  - {external: host1.example.com, internal: a}
  - {external: host2.example.com, internal: b}
  - {external: "*.example.com", internal: w}
  - {external: exact.dev.example.com, internal: e}
)";

TEST(Router, ExactCaseInsensitiveTrailingDot) {
  auto cfg = load(kTwo);
  Router r(cfg);
  EXPECT_EQ(r.routeSni("host1.example.com"), 0u);
  EXPECT_EQ(r.routeSni("HOST2.Example.COM"), 1u);
  EXPECT_EQ(r.routeSni("host2.example.com."), 1u);
}

TEST(Router, WildcardOneLabelAndExactWins) {
  auto cfg = load(kTwo);
  Router r(cfg);
  EXPECT_EQ(r.routeSni("other.example.com"), 2u);
  EXPECT_EQ(r.routeSni("exact.dev.example.com"), 3u);
  EXPECT_EQ(r.routeSni("x.dev.example.com"), std::nullopt);  // two labels under the wildcard
  EXPECT_EQ(r.routeSni("example.com"), std::nullopt);        // the wildcard needs a label
  EXPECT_EQ(r.routeSni(".example.com"), std::nullopt);
}

TEST(Router, UnknownDoesNotFallBackToDefault) {
  auto cfg = load(
      "default: a.example.com\nmappings:\n  - {external: a.example.com, internal: a}\n"
      "  - {external: b.example.com, internal: b}\n");
  Router r(cfg);
  EXPECT_EQ(r.routeSni("nope.example.com"), std::nullopt);
  EXPECT_EQ(r.routeNoSni(), 0u);
  EXPECT_EQ(r.routeSni(""), 0u);
}

TEST(Router, NoDefaultWithSeveralMappings) {
  auto cfg = load(kTwo);
  Router r(cfg);
  EXPECT_EQ(r.routeNoSni(), std::nullopt);
}

TEST(Router, SingleMappingIsDefault) {
  auto cfg = load("mappings: [{external: only.example.com, internal: a}]\n");
  Router r(cfg);
  EXPECT_EQ(r.routeNoSni(), 0u);
  EXPECT_EQ(r.routeSni("other.example.com"), std::nullopt);
}

}  // namespace
}  // namespace pgproxy::route
