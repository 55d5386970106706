#include "pgproxy/route/startup_route.h"

#include <gtest/gtest.h>

#include "pgproxy/proto/startup.h"

namespace pgproxy::route {
namespace {

using Params = std::vector<std::pair<std::string, std::string>>;
using config::BackendRole;

config::Config load(const std::string& text) {
  auto r = config::loadString(text, "t.yaml");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? r.value() : config::Config{};
}

std::string errorOf(const std::string& text) {
  auto r = config::loadString(text, "t.yaml");
  return r.ok() ? "" : r.error().message;
}

TEST(Glob, StarsQuestionMarksAndLiterals) {
  EXPECT_TRUE(globMatch("", ""));
  EXPECT_FALSE(globMatch("", "a"));
  EXPECT_TRUE(globMatch("*", ""));
  EXPECT_TRUE(globMatch("*", "anything at all"));
  EXPECT_TRUE(globMatch("billing", "billing"));
  EXPECT_FALSE(globMatch("billing", "billing2"));
  EXPECT_FALSE(globMatch("billing", "Billing"));  // names are case-sensitive
  EXPECT_TRUE(globMatch("analytics_*", "analytics_"));
  EXPECT_TRUE(globMatch("analytics_*", "analytics_eu"));
  EXPECT_FALSE(globMatch("analytics_*", "analytics"));
  EXPECT_TRUE(globMatch("report?", "report1"));
  EXPECT_FALSE(globMatch("report?", "report"));
  EXPECT_FALSE(globMatch("report?", "report12"));
  EXPECT_TRUE(globMatch("*_prod", "billing_prod"));
  EXPECT_TRUE(globMatch("a*b*c", "aXXbYYc"));
  EXPECT_TRUE(globMatch("a*b*c", "abbbc"));
  EXPECT_FALSE(globMatch("a*b*c", "aXXbYY"));
  EXPECT_TRUE(globMatch("**", "x"));
  EXPECT_TRUE(globMatch("*a", "aaaa"));
}

TEST(Glob, NoBlowUpOnPathologicalPatterns) {
  // Exponential in a recursive matcher; linear-ish here.
  std::string text(5000, 'a');
  EXPECT_FALSE(globMatch("*a*a*a*a*a*a*a*a*a*a*b", text));
  EXPECT_TRUE(globMatch("*a*a*a*a*a*a*a*a*a*a*", text));
}

TEST(SessionAttrs, LibpqsValuesOnly) {
  SessionAttrs a;
  EXPECT_TRUE(parseSessionAttrs("read-write", a));
  EXPECT_EQ(a, SessionAttrs::kPrimary);
  EXPECT_TRUE(parseSessionAttrs("primary", a));
  EXPECT_EQ(a, SessionAttrs::kPrimary);
  EXPECT_TRUE(parseSessionAttrs("read-only", a));
  EXPECT_EQ(a, SessionAttrs::kStandby);
  EXPECT_TRUE(parseSessionAttrs("standby", a));
  EXPECT_EQ(a, SessionAttrs::kStandby);
  EXPECT_TRUE(parseSessionAttrs("prefer-standby", a));
  EXPECT_EQ(a, SessionAttrs::kPreferStandby);
  EXPECT_TRUE(parseSessionAttrs("any", a));
  EXPECT_EQ(a, SessionAttrs::kAny);
  EXPECT_FALSE(parseSessionAttrs("", a));
  EXPECT_FALSE(parseSessionAttrs("Primary", a));
  EXPECT_FALSE(parseSessionAttrs("read_write", a));
}

const char* kRoutes = R"(mappings:
  - external: db.example.com
    tls: terminate
    certificate: c.pem
    key: k.pem
    internal: 10.0.0.1
    health_check: {user: checker}
    routes:
      - match: {database: billing}
        backends: [{host: 10.0.0.30}]
        database: billing_prod
      - match: {database: "analytics_*", user: "report*"}
        backends: [{host: 10.0.0.40}, {host: 10.0.0.41, port: 6432}]
        role: standby
      - match: {application_name: migrations}
        role: primary
      - match: {database: shared}
        backends: [{host: 10.0.0.1}, {host: 10.0.0.40}]
)";

TEST(StartupRoute, ConfigMergesRouteBackendsIntoTheMappingsList) {
  auto cfg = load(kRoutes);
  ASSERT_EQ(cfg.mappings.size(), 1u);
  const auto& m = cfg.mappings[0];
  EXPECT_EQ(m.own_backends, 1u);
  ASSERT_EQ(m.backends.size(), 4u);  // 10.0.0.1, .30, .40, .41:6432: one entry per host:port
  EXPECT_EQ(m.backends[1].key(), "10.0.0.30:5432");
  EXPECT_EQ(m.backends[3].key(), "10.0.0.41:6432");
  ASSERT_EQ(m.routes.size(), 4u);
  EXPECT_EQ(m.routes[0].backends, std::vector<std::size_t>({1}));
  EXPECT_EQ(m.routes[0].database, "billing_prod");
  EXPECT_EQ(m.routes[1].backends, std::vector<std::size_t>({2, 3}));
  EXPECT_TRUE(m.routes[1].has_role);
  EXPECT_EQ(m.routes[1].role, BackendRole::kStandby);
  EXPECT_TRUE(m.routes[2].backends.empty());
  EXPECT_EQ(m.routes[3].backends, std::vector<std::size_t>({0, 2}));  // reuses both slots
}

TEST(StartupRoute, FirstMatchWinsElseTheMappingsOwn) {
  auto cfg = load(kRoutes);
  const auto& m = cfg.mappings[0];
  Decision d = decide(m, proto::kProtocol3, {{"user", "alice"}, {"database", "billing"}});
  EXPECT_EQ(d.kind, Decision::Kind::kRouted);
  EXPECT_EQ(d.route, 0u);
  EXPECT_EQ(d.backends, 1ull << 1);
  // The rewrite: the backend is asked for billing_prod, every other parameter as sent.
  proto::StartupParams sent;
  ASSERT_EQ(proto::parseStartup(d.startup, sent), proto::StartupError::kNone);
  EXPECT_EQ(sent.get("database"), "billing_prod");
  EXPECT_EQ(sent.get("user"), "alice");
  EXPECT_EQ(sent.version, proto::kProtocol3);

  d = decide(m, proto::kProtocol3, {{"user", "report_eu"}, {"database", "analytics_eu"}});
  EXPECT_EQ(d.route, 1u);
  EXPECT_EQ(d.backends, (1ull << 2) | (1ull << 3));
  EXPECT_EQ(d.role, BackendRole::kStandby);
  EXPECT_TRUE(d.startup.empty());  // nothing to change: the client's packet goes as it came

  // Both patterns must match: the right database but another user falls through.
  d = decide(m, proto::kProtocol3, {{"user", "alice"}, {"database", "analytics_eu"}});
  EXPECT_EQ(d.route, Decision::kOwn);
  EXPECT_EQ(d.backends, 1ull);

  d = decide(m, proto::kProtocol3,
             {{"user", "alice"}, {"database", "app"}, {"application_name", "migrations"}});
  EXPECT_EQ(d.route, 2u);
  EXPECT_EQ(d.backends, 1ull);  // no backends of its own: the mapping's
  EXPECT_EQ(d.role, BackendRole::kPrimary);
}

TEST(StartupRoute, DatabaseDefaultsToTheUserAsInPostgres) {
  auto cfg = load(kRoutes);
  Decision d = decide(cfg.mappings[0], proto::kProtocol3, {{"user", "billing"}});
  EXPECT_EQ(d.database, "billing");
  EXPECT_EQ(d.route, 0u);
  proto::StartupParams sent;
  ASSERT_EQ(proto::parseStartup(d.startup, sent), proto::StartupError::kNone);
  EXPECT_EQ(sent.get("database"), "billing_prod");  // added, as the client sent none
  d = decide(cfg.mappings[0], proto::kProtocol3, {{"user", "billing"}, {"database", ""}});
  EXPECT_EQ(d.route, 0u);
}

TEST(StartupRoute, NoMatchWithoutOwnBackendsIsNoDatabase) {
  // (Passthrough with only routes is refused: ConfigRefusals.)
  auto cfg = load(R"(mappings:
  - external: db.example.com
    tls: terminate
    certificate: c.pem
    key: k.pem
    routes:
      - match: {database: "a*"}
        backends: [{host: 10.0.0.30}]
)");
  ASSERT_EQ(cfg.mappings.size(), 1u);
  EXPECT_EQ(cfg.mappings[0].own_backends, 0u);
  Decision d = decide(cfg.mappings[0], proto::kProtocol3, {{"user", "u"}, {"database", "abc"}});
  EXPECT_EQ(d.kind, Decision::Kind::kRouted);
  d = decide(cfg.mappings[0], proto::kProtocol3, {{"user", "u"}, {"database", "xyz"}});
  EXPECT_EQ(d.kind, Decision::Kind::kNoDatabase);
  EXPECT_EQ(d.database, "xyz");
}

TEST(StartupRoute, TargetSessionAttrsChoosesWhereTheConfigSaysAnyAndIsNeverForwarded) {
  auto cfg = load(kRoutes);
  const auto& m = cfg.mappings[0];
  Decision d = decide(m, proto::kProtocol3,
                      {{"user", "u"}, {"database", "app"}, {"target_session_attrs", "read-only"}});
  EXPECT_EQ(d.role, BackendRole::kStandby);
  proto::StartupParams sent;
  ASSERT_EQ(proto::parseStartup(d.startup, sent), proto::StartupError::kNone);
  EXPECT_EQ(sent.params, Params({{"user", "u"}, {"database", "app"}}));

  // In options, among other settings, escaped spaces kept.
  d = decide(
      m, proto::kProtocol3,
      {{"user", "u"},
       {"options", "-c search_path=a\\ b -c target_session_attrs=prefer-standby --work-mem=4MB"}});
  EXPECT_EQ(d.role, BackendRole::kAny);
  EXPECT_TRUE(d.prefer_standby);
  ASSERT_EQ(proto::parseStartup(d.startup, sent), proto::StartupError::kNone);
  EXPECT_EQ(sent.get("options"), "-c search_path=a\\ b --work-mem=4MB");
  EXPECT_EQ(proto::splitOptions(sent.get("options")),
            std::vector<std::string>({"-c", "search_path=a b", "--work-mem=4MB"}));

  d = decide(m, proto::kProtocol3, {{"user", "u"}, {"options", "--target-session-attrs=primary"}});
  EXPECT_EQ(d.role, BackendRole::kPrimary);
  ASSERT_EQ(proto::parseStartup(d.startup, sent), proto::StartupError::kNone);
  EXPECT_EQ(sent.get("options"), "");  // nothing left: the parameter goes
  EXPECT_EQ(sent.params.size(), 1u);

  // A route's role is the config's word: the client's does not override it.
  d = decide(m, proto::kProtocol3,
             {{"user", "u"},
              {"application_name", "migrations"},
              {"options", "-ctarget_session_attrs=standby"}});
  EXPECT_EQ(d.role, BackendRole::kPrimary);

  d = decide(m, proto::kProtocol3, {{"user", "u"}, {"target_session_attrs", "read_write"}});
  EXPECT_EQ(d.kind, Decision::Kind::kBadAttrs);
  EXPECT_EQ(d.bad_value, "read_write");
}

TEST(StartupRoute, ConfigRefusals) {
  const std::string head = "mappings:\n  - external: db.example.com\n";
  EXPECT_NE(errorOf(head + "    routes: []\n").find("routes must be a non-empty list"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    internal: a\n    routes: [{match: x}]\n")
                .find("must be a mapping of database, user, application_name"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    internal: a\n    routes: [{match: {db: x}}]\n").find("unknown key"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    internal: a\n    routes: [{role: standby}]\n")
                .find("needs the mapping's health_check.user"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    internal: a\n    routes: [{role: leader}]\n")
                .find("routes.role must be any, primary or standby"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    internal: a\n    routes: [{database: \"\"}]\n")
                .find("routes.database must not be empty"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    tls: terminate\n    certificate: c\n    key: k\n"
                           "    routes: [{match: {database: a}}]\n")
                .find("has no backends, and the mapping has none of its own"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    internal: a\n    routes: [{backends: [{host: a, weight: 3}]}]\n")
                .find("has weight 3 but 1"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    routes: [{backends: [{host: a}]}]\n")
                .find("is tls: passthrough and has only routes"),
            std::string::npos);
  std::string many = head + "    internal: a\n    routes:\n";
  for (int i = 0; i < 65; ++i) {
    many += "      - backends: [{host: h" + std::to_string(i) + "}]\n";
  }
  EXPECT_NE(errorOf(many).find("name 66 backends, at most 64"), std::string::npos);
}

TEST(Template, TheWildcardsLabelNamesTheBackend) {
  EXPECT_EQ(expandTemplate("$1.internal", "tenant42.db.example.com"), "tenant42.internal");
  EXPECT_EQ(expandTemplate("pg-$1.$1.svc", "Tenant42.db.example.com"), "pg-tenant42.tenant42.svc");
  EXPECT_EQ(expandTemplate("$1.internal", ""), "");
  EXPECT_EQ(expandTemplate("$1.internal", "nodot"), "");
  EXPECT_EQ(expandTemplate("$1.internal", ".db.example.com"), "");
  EXPECT_EQ(expandTemplate("$1.internal", "a_b.db.example.com"), "");  // not a host label
  auto cfg = load(
      "mappings:\n  - {external: \"*.db.example.com\", internal: \"$1.internal\", port: 6432}\n");
  ASSERT_EQ(cfg.mappings.size(), 1u);
  EXPECT_TRUE(cfg.mappings[0].templated);
  EXPECT_TRUE(cfg.mappings[0].backends[0].templated());
  EXPECT_NE(errorOf("mappings:\n  - {external: db.example.com, internal: \"$1.internal\"}\n")
                .find("is not a wildcard"),
            std::string::npos);
  EXPECT_NE(errorOf("mappings:\n  - {external: \"*.example.com\", internal: \"$1.internal\", "
                    "pool: {}}\n")
                .find("has a pool"),
            std::string::npos);
  EXPECT_NE(errorOf("mappings:\n  - {external: \"*.example.com\", internal: \"$1.in/ternal\"}\n")
                .find("is not a valid host name"),
            std::string::npos);
}

}  // namespace
}  // namespace pgproxy::route
