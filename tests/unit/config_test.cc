#include "pgproxy/config/config.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>

#include "pgproxy/config/keys.h"

namespace pgproxy::config {
namespace {

Config mustLoad(const std::string& text) {
  auto r = loadString(text, "t.yaml");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? r.value() : Config{};
}

std::string errorOf(const std::string& text) {
  auto r = loadString(text, "t.yaml");
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.error().message;
}

TEST(Config, SeedFileLoadsUnchanged) {
  Config c = mustLoad(R"(listen:
  address: "0.0.0.0"
  port: 5400
debug: true
mappings:
  - external: "host1.example.com"
    internal: "host1.example.internal"
    port: 5432
)");
  ASSERT_EQ(c.listen.size(), 1u);
  EXPECT_EQ(c.listen[0].address, "0.0.0.0");
  EXPECT_EQ(c.listen[0].port, 5400);
  EXPECT_TRUE(c.debug);
  ASSERT_EQ(c.mappings.size(), 1u);
  EXPECT_EQ(c.mappings[0].external, "host1.example.com");
  EXPECT_EQ(c.mappings[0].internal, "host1.example.internal");
  EXPECT_EQ(c.mappings[0].port, 5432);
  EXPECT_EQ(c.default_mapping, 0u);  // implied: exactly one mapping
}

TEST(Config, Defaults) {
  Config c = mustLoad(
      "mappings:\n  - {external: a.example.com, internal: 10.0.0.1}\n"
      "  - {external: b.example.com, internal: db-b}\n");
  ASSERT_EQ(c.listen.size(), 1u);
  EXPECT_EQ(c.listen[0].port, 5400);
  EXPECT_EQ(c.mappings[0].port, 5432);
  EXPECT_FALSE(c.default_mapping.has_value());  // two mappings, none named
  EXPECT_EQ(c.handshake_timeout_ms, 10000u);
  EXPECT_EQ(c.connect_timeout_ms, 5000u);
  EXPECT_EQ(c.workers, 0u);
  EXPECT_GE(c.effectiveWorkers(), 1u);
}

TEST(Config, AllKeys) {
  Config c = mustLoad(R"(listen:
  - {address: 127.0.0.1, port: 6000}
  - {address: "::1", port: 6001}
workers: 3
pid_file: /run/p.pid
log_file: /var/log/p.log
default: B.example.com
handshake_timeout: 1500ms
connect_timeout: 2s
shutdown_timeout: 1m
max_draining_generations: 2
mappings:
  - {external: a.example.com, internal: 10.0.0.1}
  - {external: b.example.com, internal: db-b, port: 6432}
  - {external: "*.wild.example.com", internal: db-w}
)");
  ASSERT_EQ(c.listen.size(), 2u);
  EXPECT_EQ(c.listen[1].address, "::1");
  EXPECT_EQ(c.workers, 3u);
  EXPECT_EQ(c.pid_file, "/run/p.pid");
  EXPECT_EQ(c.log_file, "/var/log/p.log");
  EXPECT_EQ(c.default_mapping, 1u);
  EXPECT_EQ(c.handshake_timeout_ms, 1500u);
  EXPECT_EQ(c.connect_timeout_ms, 2000u);
  EXPECT_EQ(c.shutdown_timeout_ms, 60000u);
  EXPECT_EQ(c.max_draining_generations, 2u);
  EXPECT_EQ(c.mappings[2].external, "*.wild.example.com");
}

TEST(Config, WorkersAuto) {
  EXPECT_EQ(mustLoad("workers: auto\nmappings: [{external: a.b, internal: c}]\n").workers, 0u);
}

TEST(Config, YamlSyntaxErrorHasPosition) {
  std::string e = errorOf("mappings:\n  - external: [a\n");
  EXPECT_NE(e.find("t.yaml:"), std::string::npos);
  EXPECT_NE(e.find("YAML syntax error"), std::string::npos);
}

TEST(Config, UnknownKeySuggestsClosest) {
  std::string e = errorOf("mapings:\n  - {external: a.b, internal: c}\n");
  EXPECT_EQ(e.rfind("t.yaml:1:1: unknown key \"mapings\"", 0), 0u) << e;
  EXPECT_NE(e.find("did you mean \"mappings\""), std::string::npos) << e;
  e = errorOf("mappings:\n  - {external: a.b, internal: c, prot: 5}\n");
  EXPECT_NE(e.find("t.yaml:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean \"port\""), std::string::npos) << e;
}

TEST(Config, WrongTypes) {
  EXPECT_NE(errorOf("mappings: yes\n").find("mappings must be a list"), std::string::npos);
  EXPECT_NE(errorOf("debug: maybe\nmappings: [{external: a.b, internal: c}]\n")
                .find("debug must be true or false"),
            std::string::npos);
  EXPECT_NE(errorOf("listen: [1, 2]\nmappings: [{external: a.b, internal: c}]\n")
                .find("listen must be a mapping"),
            std::string::npos);
  EXPECT_NE(errorOf("mappings: [{external: [x], internal: c}]\n").find("external must be a single"),
            std::string::npos);
}

TEST(Config, PortRange) {
  EXPECT_NE(errorOf("listen: {port: 0}\nmappings: [{external: a.b, internal: c}]\n")
                .find("t.yaml:1:16: listen.port must be a port number from 1 to 65535"),
            std::string::npos);
  EXPECT_NE(errorOf("mappings: [{external: a.b, internal: c, port: 65536}]\n")
                .find("port must be a port number"),
            std::string::npos);
  EXPECT_NE(errorOf("mappings: [{external: a.b, internal: c, port: -1}]\n").find("port"),
            std::string::npos);
}

TEST(Config, EmptyAndDuplicateExternal) {
  EXPECT_NE(
      errorOf("mappings: [{external: \"\", internal: c}]\n").find("external must not be empty"),
      std::string::npos);
  std::string e = errorOf(
      "mappings:\n  - {external: a.example.com, internal: c}\n  - {external: A.Example.com, "
      "internal: d}\n");
  EXPECT_NE(e.find("t.yaml:3:5: duplicate external \"a.example.com\" (first defined at line 2)"),
            std::string::npos)
      << e;
}

TEST(Config, InvalidHostNames) {
  for (const char* bad : {"bad_host!", "-lead.example.com", "a..b", "*.*.example.com",
                          "foo.*.example.com", "*example.com", "127.0.0.1"}) {
    std::string e = errorOf(std::string("mappings: [{external: \"") + bad + "\", internal: c}]\n");
    EXPECT_NE(e.find("is not a valid host name"), std::string::npos) << bad << ": " << e;
  }
  EXPECT_NE(errorOf("mappings: [{external: a.b, internal: \"x y\"}]\n")
                .find("internal \"x y\" is not a valid host name or IP address"),
            std::string::npos);
  mustLoad("mappings: [{external: a.b, internal: \"fd00::5\"}]\n");
}

TEST(Config, MissingFields) {
  EXPECT_NE(errorOf("mappings: [{internal: c}]\n").find("no \"external\""), std::string::npos);
  EXPECT_NE(errorOf("mappings: [{external: a.b}]\n").find("no \"internal\""), std::string::npos);
}

TEST(Config, DefaultMustNameMapping) {
  EXPECT_NE(errorOf("default: nope.example.com\nmappings: [{external: a.b, internal: c}]\n")
                .find("t.yaml:1:10: default \"nope.example.com\" names no mapping"),
            std::string::npos);
}

TEST(Config, NoMappings) {
  EXPECT_NE(errorOf("debug: true\n").find("no mappings"), std::string::npos);
  EXPECT_NE(errorOf("mappings: []\n").find("no mappings"), std::string::npos);
  EXPECT_NE(errorOf("").find("empty"), std::string::npos);
  EXPECT_NE(errorOf("# only a comment\n").find("empty"), std::string::npos);
}

TEST(Config, ListenAddressMustBeIp) {
  EXPECT_NE(errorOf("listen: {address: example.com}\nmappings: [{external: a.b, internal: c}]\n")
                .find("listen.address must be an IP address"),
            std::string::npos);
  EXPECT_EQ(mustLoad("listen: {address: \"*\"}\nmappings: [{external: a.b, internal: c}]\n")
                .listen[0]
                .address,
            "0.0.0.0");
}

TEST(Config, DuplicateListen) {
  EXPECT_NE(errorOf("listen: [{port: 1}, {port: 1}]\nmappings: [{external: a.b, internal: c}]\n")
                .find("duplicate listen address"),
            std::string::npos);
}

TEST(Config, AdminListenMustNotBeADataListenAddress) {
  const std::string maps = "mappings: [{external: a.b, internal: c}]\n";
  // The same address and port: refused at admin.listen's value, naming the listen entry's line.
  EXPECT_EQ(errorOf("listen: {address: 127.0.0.1, port: 6432}\n"
                    "admin: {listen: \"127.0.0.1:6432\"}\n" +
                    maps),
            "t.yaml:2:17: admin.listen 127.0.0.1:6432 is also the data listen address "
            "127.0.0.1:6432 (line 1): the admin endpoint needs a port of its own");
  // A wildcard on either side takes the port of every address of its family.
  EXPECT_NE(errorOf("listen: [{address: 10.0.0.1, port: 7000}, {address: 0.0.0.0, port: 6432}]\n"
                    "admin: {listen: \"127.0.0.1:6432\"}\n" +
                    maps)
                .find("t.yaml:2:17: admin.listen 127.0.0.1:6432 overlaps the data listen address "
                      "0.0.0.0:6432 (line 1)"),
            std::string::npos);
  EXPECT_NE(
      errorOf("listen: {address: 127.0.0.1, port: 6432}\nadmin:\n  listen: \"*:6432\"\n" + maps)
          .find("t.yaml:3:11: admin.listen 0.0.0.0:6432 overlaps"),
      std::string::npos);
  EXPECT_NE(
      errorOf("listen: {address: \"::\", port: 6432}\nadmin: {listen: \"[0::1]:6432\"}\n" + maps)
          .find("admin.listen [0::1]:6432 overlaps the data listen address [::]:6432"),
      std::string::npos);
  EXPECT_NE(
      errorOf("listen: {address: \"::1\", port: 6432}\nadmin: {listen: \"[0::1]:6432\"}\n" + maps)
          .find("admin.listen [0::1]:6432 overlaps the data listen address [::1]:6432"),
      std::string::npos);
  // Without a listen key the data address is 0.0.0.0:5400.
  EXPECT_NE(errorOf("admin: {listen: \"localhost:5400\"}\n" + maps)
                .find("t.yaml:1:17: admin.listen 127.0.0.1:5400 overlaps the data listen address "
                      "0.0.0.0:5400 (the default, as \"listen\" is not set)"),
            std::string::npos);
  // Other ports, other addresses, other families: fine (IPv6 sockets are IPv6-only).
  mustLoad("listen: {address: 127.0.0.1, port: 6432}\nadmin: {listen: \"127.0.0.1:9540\"}\n" +
           maps);
  mustLoad("listen: {address: 127.0.0.1, port: 6432}\nadmin: {listen: \"127.0.0.2:6432\"}\n" +
           maps);
  mustLoad("listen: {address: 0.0.0.0, port: 6432}\nadmin: {listen: \"[::1]:6432\"}\n" + maps);
  mustLoad("listen: {address: \"::\", port: 6432}\nadmin: {listen: \"127.0.0.1:6432\"}\n" + maps);
}

TEST(Config, AdminConsoleTokenAndHttpsKeys) {
  const std::string maps = "mappings: [{external: a.b, internal: c}]\n";
  // The console alone needs no HTTP listener.
  Config c = mustLoad("admin: {users: [ops, dba]}\n" + maps);
  EXPECT_FALSE(c.admin.enabled);
  EXPECT_TRUE(c.admin.consoleUser("dba"));
  EXPECT_FALSE(c.admin.consoleUser("app"));
  EXPECT_NE(errorOf("admin: {token: x}\n" + maps).find("admin needs a \"listen\" address"),
            std::string::npos);
  EXPECT_NE(errorOf("admin: {users: []}\n" + maps).find("must name at least one user"),
            std::string::npos);
  EXPECT_NE(errorOf("admin: {users: admin}\n" + maps).find("must be a list of user names"),
            std::string::npos);
  EXPECT_NE(errorOf("admin: {listen: \"127.0.0.1:9540\", certificate: /x.pem}\n" + maps)
                .find("admin.certificate and admin.key go together"),
            std::string::npos);
  EXPECT_NE(errorOf("admin: {listen: \"127.0.0.1:9540\", token_file: /nonexistent/token}\n" + maps)
                .find("cannot read admin.token_file \"/nonexistent/token\""),
            std::string::npos);
  char dir[] = "/tmp/pgproxy-token-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string file = std::string(dir) + "/token";
  { std::ofstream(file) << "s3cret\r\nsecond line ignored\n"; }
  c = mustLoad("admin: {listen: \"127.0.0.1:9540\", token_file: " + file + "}\n" + maps);
  EXPECT_EQ(c.admin.token, "s3cret");
  EXPECT_NE(
      errorOf("admin: {listen: \"127.0.0.1:9540\", token: a, token_file: " + file + "}\n" + maps)
          .find("admin.token and admin.token_file are both set"),
      std::string::npos);
  { std::ofstream(file) << "\n"; }
  EXPECT_NE(errorOf("admin: {listen: \"127.0.0.1:9540\", token_file: " + file + "}\n" + maps)
                .find("holds no token on its first line"),
            std::string::npos);
  std::remove(file.c_str());
  rmdir(dir);
  // admin.console: a port of its own, listed last among the listeners, marked.
  c = mustLoad("listen: {port: 6432}\nadmin: {console: \"127.0.0.1:9541\", users: [ops]}\n" + maps);
  ASSERT_EQ(c.listen.size(), 2u);
  EXPECT_FALSE(c.listen[0].console);
  EXPECT_TRUE(c.listen[1].console);
  EXPECT_EQ(c.listen[1].port, 9541);
  EXPECT_NE(errorOf("admin: {listen: \"127.0.0.1:9540\", console: \"127.0.0.1:9541\"}\n" + maps)
                .find("admin.console needs admin.users"),
            std::string::npos);
  EXPECT_NE(
      errorOf("listen: {port: 6432}\nadmin: {console: \"127.0.0.1:6432\", users: [a]}\n" + maps)
          .find("the console needs a port of its own"),
      std::string::npos);
  EXPECT_NE(errorOf("admin: {listen: \"127.0.0.1:9540\", console: \"127.0.0.1:9540\", users: "
                    "[a]}\n" +
                    maps)
                .find("the console needs a port of its own"),
            std::string::npos);
  EXPECT_NE(errorOf("admin: {console: nope, users: [a]}\n" + maps)
                .find("admin.console must be ADDRESS:PORT"),
            std::string::npos);
}

// One mapping per line after "mappings:", m1.example.com .. mN.example.com.
std::string manyMappings(int n) {
  std::string yaml = "mappings:\n";
  for (int i = 1; i <= n; ++i) {
    yaml += "  - {external: m" + std::to_string(i) + ".example.com, internal: 10.0.0.1}\n";
  }
  return yaml;
}

TEST(Config, MappingsBeyondTheRegistrySlotsAreRefused) {
  EXPECT_EQ(mustLoad(manyMappings(static_cast<int>(kMaxMappings))).mappings.size(), kMaxMappings);
  // Line 1 is "mappings:", so mapping 128 is on line 129.
  EXPECT_EQ(errorOf(manyMappings(128)),
            "t.yaml:129:5: too many mappings: 128, at most 127 (each has one of pgproxy's fixed "
            "slots for its metrics, max_connections and connection_rate); this is mapping 128");
  EXPECT_NE(errorOf(manyMappings(300)).find("t.yaml:129:5: too many mappings: 300, at most 127"),
            std::string::npos);
}

TEST(Config, DuplicateKey) {
  EXPECT_NE(errorOf("debug: true\ndebug: false\nmappings: [{external: a.b, internal: c}]\n")
                .find("duplicate key \"debug\""),
            std::string::npos);
}

TEST(Config, BadDurations) {
  EXPECT_NE(errorOf("handshake_timeout: soon\nmappings: [{external: a.b, internal: c}]\n")
                .find("handshake_timeout must be a duration"),
            std::string::npos);
  EXPECT_NE(errorOf("connect_timeout: 0\nmappings: [{external: a.b, internal: c}]\n")
                .find("greater than zero"),
            std::string::npos);
}

TEST(Config, RootMustBeMapping) {
  EXPECT_NE(errorOf("- a\n- b\n").find("must be a mapping"), std::string::npos);
  EXPECT_NE(errorOf("just a string\n").find("must be a mapping"), std::string::npos);
}

TEST(Config, ReportsSeveralErrors) {
  std::string e = errorOf("debug: x\nworkers: 0\nmappings: [{external: a.b, internal: c}]\n");
  EXPECT_NE(e.find("t.yaml:1:"), std::string::npos);
  EXPECT_NE(e.find("\nt.yaml:2:"), std::string::npos);
}

// A reload runs two generations side by side in the 128 worker slots: `workers` stops at 64.
TEST(Config, WorkersFitTheWorkerSlots) {
  const std::string maps = "mappings: [{external: a.b, internal: c}]\n";
  EXPECT_EQ(mustLoad("workers: 64\n" + maps).workers, 64u);
  std::string e = errorOf("workers: 65\n" + maps);
  EXPECT_NE(e.find("t.yaml:1:"), std::string::npos) << e;
  EXPECT_NE(e.find("from 1 to 64"), std::string::npos) << e;
  EXPECT_NE(e.find("128 worker slots"), std::string::npos) << e;
  EXPECT_NE(errorOf("workers: 1024\n" + maps), "");
  EXPECT_LE(mustLoad(maps).effectiveWorkers(), kMaxWorkers);  // auto is clamped too
}

TEST(Config, MissingFile) {
  auto r = loadFile("/nonexistent/pgproxy.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("cannot open configuration file"), std::string::npos);
}

TEST(Config, ShippedSampleIsValid) {
  auto r = loadFile(std::string(PGPROXY_SRCDIR) + "/etc/pgproxy/pgproxy.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message;
}

}  // namespace
}  // namespace pgproxy::config

namespace pgproxy::config {
namespace {

TEST(ConfigTls, TerminateMappingAndGlobalDefaults) {
  Config c = mustLoad(R"(tls:
  min_version: "1.3"
  ciphers: "HIGH:!aNULL"
  ciphersuites: "TLS_AES_128_GCM_SHA256"
  certificate: /etc/pgproxy/tls/default.crt
  key: /etc/pgproxy/tls/default.key
  require: true
mappings:
  - external: host1.example.com
    internal: 10.0.0.5
    tls: terminate
    certificate: /etc/pgproxy/tls/host1.crt
    key: /etc/pgproxy/tls/host1.key
    backend_tls: verify-full
    backend_ca: /etc/pgproxy/tls/internal-ca.crt
    backend_sni: host1.internal
  - {external: host2.example.com, internal: 10.0.0.6, tls: terminate, backend_tls: disable}
  - {external: host3.example.com, internal: 10.0.0.7}
)");
  EXPECT_EQ(c.tls.min_version, "1.3");
  EXPECT_EQ(c.tls.ciphers, "HIGH:!aNULL");
  EXPECT_EQ(c.tls.ciphersuites, "TLS_AES_128_GCM_SHA256");
  EXPECT_TRUE(c.tls.require);
  ASSERT_EQ(c.mappings.size(), 3u);
  EXPECT_EQ(c.mappings[0].tls, TlsMode::kTerminate);
  EXPECT_EQ(c.mappings[0].backend_tls, BackendTls::kVerifyFull);
  EXPECT_EQ(c.mappings[0].backend_ca, "/etc/pgproxy/tls/internal-ca.crt");
  EXPECT_EQ(c.mappings[0].backend_sni, "host1.internal");
  EXPECT_EQ(c.certificateOf(c.mappings[0]), "/etc/pgproxy/tls/host1.crt");
  EXPECT_EQ(c.keyOf(c.mappings[0]), "/etc/pgproxy/tls/host1.key");
  // Without its own certificate a terminate mapping serves tls.certificate.
  EXPECT_EQ(c.mappings[1].backend_tls, BackendTls::kDisable);
  EXPECT_EQ(c.certificateOf(c.mappings[1]), "/etc/pgproxy/tls/default.crt");
  EXPECT_EQ(c.keyOf(c.mappings[1]), "/etc/pgproxy/tls/default.key");
  // Passthrough stays the default, and backend_tls defaults to require.
  EXPECT_EQ(c.mappings[2].tls, TlsMode::kPassthrough);
  EXPECT_EQ(c.mappings[2].backend_tls, BackendTls::kRequire);
  EXPECT_FALSE(mustLoad("mappings: [{external: a.example.com, internal: x}]\n").tls.require);
}

TEST(ConfigTls, MalformedTlsSettingsAreRefusedWithTheReason) {
  const std::string m = "mappings:\n  - {external: a.example.com, internal: x";
  EXPECT_NE(errorOf(m + ", tls: offload}\n").find("tls must be passthrough or terminate"),
            std::string::npos);
  EXPECT_NE(errorOf(m + ", tls: terminate, certificate: c, key: k, backend_tls: prefer}\n")
                .find("backend_tls must be disable, require, verify-ca or verify-full"),
            std::string::npos);
  EXPECT_NE(
      errorOf(m + ", tls: terminate, certificate: c}\n").find("needs both certificate and key"),
      std::string::npos);
  EXPECT_NE(errorOf(m + ", certificate: c, key: k}\n").find("is not tls: terminate"),
            std::string::npos);
  EXPECT_NE(errorOf(m + ", tls: terminate}\n").find("has no certificate"), std::string::npos);
  EXPECT_NE(errorOf(m + ", tls: terminate, certificate: \"\", key: k}\n")
                .find("certificate must not be empty"),
            std::string::npos);
  EXPECT_NE(errorOf("tls: {min_version: \"1.1\"}\n" + m + "}\n")
                .find("tls.min_version must be \"1.2\" or \"1.3\""),
            std::string::npos);
  EXPECT_NE(errorOf("tls: {certificate: c}\n" + m + "}\n").find("tls needs both certificate"),
            std::string::npos);
  EXPECT_NE(errorOf("tls: {requires: true}\n" + m + "}\n").find("did you mean \"require\""),
            std::string::npos);
  EXPECT_NE(errorOf("tls: {require: maybe}\n" + m + "}\n").find("tls.require"), std::string::npos);
}

}  // namespace
}  // namespace pgproxy::config

namespace pgproxy::config {
namespace {

TEST(ConfigBackends, GroupsPoliciesAndHealthChecks) {
  Config c = mustLoad(R"(mappings:
  - external: db.example.com
    backends:
      - { host: "10.0.0.5", port: 5433, weight: 3 }
      - { host: "10.0.0.6" }
    balance: least_conn
    health_check: { interval: 500ms, timeout: 200ms, fall: 2, rise: 4 }
  - { external: one.example.com, internal: db1, port: 6000 }
)");
  const Mapping& m = c.mappings[0];
  ASSERT_EQ(m.backends.size(), 2u);
  EXPECT_EQ(m.backends[0].key(), "10.0.0.5:5433");
  EXPECT_EQ(m.backends[0].weight, 3u);
  EXPECT_EQ(m.backends[1].key(), "10.0.0.6:5432");
  EXPECT_EQ(m.backends[1].weight, 1u);
  EXPECT_EQ(m.internal, "10.0.0.5");  // the first backend, for what still shows one
  EXPECT_EQ(m.balance, Balance::kLeastConn);
  EXPECT_TRUE(m.health.enabled);
  EXPECT_EQ(m.health.interval_ms, 500u);
  EXPECT_EQ(m.health.timeout_ms, 200u);
  EXPECT_EQ(m.health.fall, 2u);
  EXPECT_EQ(m.health.rise, 4u);
  // The seed's shorthand is one backend, round robin, no active checks.
  const Mapping& one = c.mappings[1];
  ASSERT_EQ(one.backends.size(), 1u);
  EXPECT_EQ(one.backends[0].key(), "db1:6000");
  EXPECT_EQ(one.balance, Balance::kRoundRobin);
  EXPECT_FALSE(one.health.enabled);
  EXPECT_EQ(mustLoad("mappings:\n  - {external: a.example.com, internal: x, health_check: {}}\n")
                .mappings[0]
                .health.fall,
            3u);
}

TEST(ConfigBackends, MistakesAreRefusedWithTheReason) {
  const std::string m = "mappings:\n  - {external: a.example.com, ";
  EXPECT_NE(errorOf(m + "internal: x, backends: [{host: y}]}\n").find("sets both"),
            std::string::npos);
  EXPECT_NE(errorOf(m + "backends: []}\n").find("non-empty list"), std::string::npos);
  EXPECT_NE(errorOf(m + "backends: [{port: 1}]}\n").find("backend has no \"host\""),
            std::string::npos);
  EXPECT_NE(errorOf(m + "backends: [{host: \"bad host\"}]}\n").find("not a valid host name"),
            std::string::npos);
  EXPECT_NE(errorOf(m + "backends: [{host: y, weight: 0}]}\n").find("weight must be a number"),
            std::string::npos);
  EXPECT_NE(errorOf(m + "backends: [{host: y}, {host: y, port: 5432}]}\n")
                .find("duplicate backend y:5432"),
            std::string::npos);
  EXPECT_NE(errorOf(m + "backends: [{host: y, wieght: 2}]}\n").find("did you mean \"weight\""),
            std::string::npos);
  EXPECT_NE(errorOf(m + "internal: x, balance: fastest}\n").find("balance must be round_robin"),
            std::string::npos);
  EXPECT_NE(errorOf(m + "internal: x, health_check: {fall: 0}}\n")
                .find("health_check.fall must be a number from 1 to 100"),
            std::string::npos);
  EXPECT_NE(errorOf(m + "internal: x, health_check: {interval: 0s}}\n").find("greater than zero"),
            std::string::npos);
  EXPECT_NE(errorOf(m + "internal: x, health_check: {usr: u}}\n").find("did you mean \"user\""),
            std::string::npos);
  EXPECT_NE(errorOf(m + "internal: x, role: primary}\n").find("needs health_check.user"),
            std::string::npos);
  EXPECT_NE(errorOf(m + "internal: x, role: leader, health_check: {user: u}}\n")
                .find("role must be any, primary or standby"),
            std::string::npos);
  EXPECT_NE(errorOf(m + "internal: x, health_check: {password_file: /p}}\n")
                .find("password_file needs health_check.user"),
            std::string::npos);
  Config roles = mustLoad(m +
                          "internal: x, role: standby, health_check: {user: h, "
                          "password_file: /etc/p, database: d}}\n");
  EXPECT_EQ(roles.mappings[0].role, BackendRole::kStandby);
  EXPECT_EQ(roles.mappings[0].health.user, "h");
  EXPECT_EQ(roles.mappings[0].health.password_file, "/etc/p");
  EXPECT_EQ(roles.mappings[0].health.database, "d");
  std::string many = m + "backends: [";
  for (int i = 0; i < 65; ++i) {
    many += (i ? ", " : "") + std::string("{host: h") + std::to_string(i) + "}";
  }
  EXPECT_NE(errorOf(many + "]}\n").find("at most 64 backends"), std::string::npos);
}

}  // namespace
}  // namespace pgproxy::config

namespace pgproxy::config {
namespace {

TEST(ConfigLimits, AllowDenyAndMaxConnections) {
  Config c = mustLoad(R"(allow: ["10.0.0.0/8", "::1"]
deny: 10.66.0.0/16
max_connections: 500
mappings:
  - {external: a.example.com, internal: x, max_connections: 5, deny: [192.0.2.0/24]}
)");
  ASSERT_EQ(c.access.allow.size(), 2u);
  EXPECT_EQ(c.access.allow[0].text(), "10.0.0.0/8");
  EXPECT_EQ(c.access.allow[1].text(), "::1/128");
  ASSERT_EQ(c.access.deny.size(), 1u);
  EXPECT_EQ(c.max_connections, 500u);
  EXPECT_EQ(c.mappings[0].max_connections, 5u);
  EXPECT_EQ(c.mappings[0].access.deny[0].text(), "192.0.2.0/24");
  EXPECT_TRUE(mustLoad("mappings: [{external: a.example.com, internal: x}]\n").access.empty());
  const std::string m = "mappings: [{external: a.example.com, internal: x}]\n";
  EXPECT_NE(errorOf("allow: [10.1.2.3/8]\n" + m).find("host bits must be zero"), std::string::npos);
  EXPECT_NE(errorOf("deny: [db.example.com]\n" + m).find("is not an IP address or CIDR block"),
            std::string::npos);
  EXPECT_NE(errorOf("max_connections: 0\n" + m).find("max_connections must be a number"),
            std::string::npos);
}

TEST(ConfigLimits, RatesTimeoutsAndKeepalive) {
  Config c = mustLoad(R"(max_connections_per_client: 10
connection_rate: {per_client: 20/s, burst: 40}
max_handshakes: 300
idle_timeout: 15m
tcp_keepalive: {idle: 30s, interval: 5s, count: 4}
tcp_user_timeout: 20s
mappings:
  - {external: a.example.com, internal: x, connection_rate: 100/m}
  - {external: b.example.com, internal: y, connection_rate: {per_client: 2/h, burst: 5}}
)");
  EXPECT_EQ(c.max_connections_per_client, 10u);
  EXPECT_EQ(c.connection_rate.count, 20u);
  EXPECT_EQ(c.connection_rate.period_ms, 1000u);
  EXPECT_EQ(c.connection_rate.burst, 40u);
  EXPECT_EQ(c.mappings[0].connection_rate.count, 100u);
  EXPECT_EQ(c.mappings[0].connection_rate.period_ms, 60'000u);
  EXPECT_EQ(c.mappings[0].connection_rate.burst, 100u);  // default: the rate's number
  EXPECT_EQ(c.mappings[1].connection_rate.period_ms, 3'600'000u);
  EXPECT_EQ(c.mappings[1].connection_rate.burst, 5u);
  EXPECT_EQ(c.max_handshakes, 300u);
  EXPECT_EQ(c.idle_timeout_ms, 15u * 60 * 1000);
  EXPECT_TRUE(c.tcp_keepalive.enabled);
  EXPECT_EQ(c.tcp_keepalive.idle_s, 30u);
  EXPECT_EQ(c.tcp_keepalive.interval_s, 5u);
  EXPECT_EQ(c.tcp_keepalive.count, 4u);
  EXPECT_EQ(c.tcp_user_timeout_ms, 20'000u);

  const std::string m = "mappings: [{external: a.example.com, internal: x}]\n";
  Config d = mustLoad(m);
  EXPECT_FALSE(d.connection_rate.enabled());
  EXPECT_EQ(d.idle_timeout_ms, 0u);  // off unless set
  EXPECT_TRUE(d.tcp_keepalive.enabled);
  EXPECT_EQ(d.tcp_keepalive.idle_s, 0u);  // the kernel's
  EXPECT_FALSE(mustLoad("tcp_keepalive: off\n" + m).tcp_keepalive.enabled);
  EXPECT_EQ(mustLoad("idle_timeout: off\n" + m).idle_timeout_ms, 0u);

  EXPECT_NE(errorOf("connection_rate: {per_client: 20/d}\n" + m).find("must be a rate such as"),
            std::string::npos);
  EXPECT_NE(errorOf("connection_rate: {burst: 4}\n" + m).find("needs per_client"),
            std::string::npos);
  EXPECT_NE(errorOf("connection_rate: {per_clinet: 4}\n" + m).find("did you mean \"per_client\""),
            std::string::npos);
  EXPECT_NE(errorOf("tcp_keepalive: {idle: 500ms}\n" + m).find("from 1s to 32767s"),
            std::string::npos);
  EXPECT_NE(errorOf("tcp_keepalive: {count: 0}\n" + m).find("tcp_keepalive.count must be"),
            std::string::npos);
  EXPECT_NE(errorOf("idle_timeout: soon\n" + m).find("idle_timeout must be a duration"),
            std::string::npos);
  EXPECT_NE(errorOf("tcp_user_timeout: 720h\n" + m).find("at most 596h"), std::string::npos);
  EXPECT_EQ(mustLoad("tcp_user_timeout: 596h\n" + m).tcp_user_timeout_ms, 596ull * 3600 * 1000);
  std::string list = errorOf("tcp_user_timeout: [1s]\n" + m);  // one error, not two
  EXPECT_NE(list.find("tcp_user_timeout must be a single value"), std::string::npos) << list;
  EXPECT_EQ(list.find('\n'), std::string::npos) << list;
  EXPECT_NE(errorOf("max_handshakes: -1\n" + m).find("max_handshakes must be a number"),
            std::string::npos);
}

}  // namespace
}  // namespace pgproxy::config

namespace pgproxy::config {
namespace {

std::string writeUsers(const std::string& text) {
  char path[] = "/tmp/pgproxy-users-XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  std::ofstream(path) << text;
  ::close(fd);
  return path;
}

TEST(ConfigAuth, AuthBlockAndAuthenticatingMappings) {
  std::string users = writeUsers("\"alice\" \"secret\"\n");
  Config c = mustLoad("auth: {type: md5, file: " + users +
                      "}\nmappings:\n"
                      "  - {external: a.example.com, internal: x, tls: terminate, certificate: c, "
                      "key: k, authenticate: true}\n");
  EXPECT_TRUE(c.auth.configured);
  EXPECT_EQ(c.auth.type, auth::ClientAuthType::kMd5);
  ASSERT_NE(c.auth.users, nullptr);
  ASSERT_NE(c.auth.users->find("alice"), nullptr);
  EXPECT_TRUE(c.mappings[0].authenticate);
  EXPECT_EQ(mustLoad("auth: {type: trust}\nmappings:\n  - {external: a.example.com, internal: x}\n")
                .auth.type,
            auth::ClientAuthType::kTrust);
  EXPECT_EQ(mustLoad("mappings:\n  - {external: a.example.com, internal: x}\n").auth.users,
            nullptr);
  std::remove(users.c_str());
}

TEST(ConfigAuth, MistakesAreRefusedWithTheReason) {
  std::string users = writeUsers("\"alice\" \"secret\"\n\"bob\" unquoted\n");
  const std::string terminate =
      "mappings:\n  - {external: a.example.com, internal: x, tls: terminate, certificate: c, "
      "key: k, authenticate: true}\n";
  EXPECT_NE(errorOf(terminate).find("has authenticate: true but there is no \"auth\" block"),
            std::string::npos);
  // A passthrough mapping that plaintext clients cannot reach (not the default) cannot
  // authenticate.
  EXPECT_NE(errorOf("auth: {type: trust}\nmappings:\n  - {external: a.example.com, internal: x, "
                    "authenticate: true}\n  - {external: b.example.com, internal: y}\n")
                .find("mapping \"a.example.com\" (line 3): authenticate: true needs tls: "
                      "terminate: a passthrough session's bytes are the client's own TLS session"),
            std::string::npos);
  EXPECT_NE(errorOf("auth: {type: scram-sha-256}\n" + terminate).find("auth needs a \"file\""),
            std::string::npos);
  EXPECT_NE(errorOf("auth: {type: password, file: x}\n" + terminate).find("auth.type must be"),
            std::string::npos);
  EXPECT_NE(errorOf("auth: {file: /nonexistent/users.txt}\n" + terminate)
                .find("cannot read auth.file \"/nonexistent/users.txt\""),
            std::string::npos);
  // A broken line of the auth file is named, and the loader's position points at auth.file.
  std::string e = errorOf("auth: {file: " + users + "}\n" + terminate);
  EXPECT_NE(e.find("t.yaml:1:"), std::string::npos) << e;
  EXPECT_NE(e.find(users + ":2: secret of \"bob\": expected a double-quoted field"),
            std::string::npos)
      << e;
  EXPECT_NE(errorOf("auth: {querry: x}\n" + terminate)
                .find("unknown key \"querry\" in auth (did you mean \"query\"?)"),
            std::string::npos);
  std::remove(users.c_str());
}

TEST(ConfigAuth, CertNeedsAClientCaAndTerminatedMappings) {
  std::string ca = writeUsers("not parsed at load: the TLS contexts read it\n");
  const std::string terminate =
      "mappings:\n  - {external: a.example.com, internal: x, tls: terminate, certificate: c, "
      "key: k, authenticate: true}\n";
  // No auth.file needed: the backend login is trust's.
  Config c = mustLoad("auth: {type: cert, client_ca: " + ca + "}\n" + terminate);
  EXPECT_EQ(c.auth.type, auth::ClientAuthType::kCert);
  EXPECT_EQ(c.auth.client_ca, ca);
  EXPECT_EQ(c.auth.users, nullptr);

  EXPECT_NE(errorOf("auth: {type: cert}\n" + terminate)
                .find("t.yaml:1:14: auth.type cert needs auth.client_ca"),
            std::string::npos)
      << errorOf("auth: {type: cert}\n" + terminate);
  std::string e = errorOf("auth:\n  type: cert\n  client_ca: /nonexistent/ca.crt\n" + terminate);
  EXPECT_NE(e.find("t.yaml:3:14: cannot read auth.client_ca \"/nonexistent/ca.crt\": No such "
                   "file or directory"),
            std::string::npos)
      << e;
  EXPECT_NE(errorOf("auth: {type: cert, client_ca: \"\"}\n" + terminate).find("auth.client_ca"),
            std::string::npos);
  e = errorOf("auth: {type: trust, client_ca: " + ca + "}\n" + terminate);
  EXPECT_NE(e.find("t.yaml:1:32: auth.client_ca is for auth.type cert only"), std::string::npos)
      << e;
  // The default mapping's plaintext clients can never show a certificate: refused at load.
  e = errorOf("auth: {type: cert, client_ca: " + ca +
              "}\nmappings:\n  - {external: a.example.com, internal: x, authenticate: true}\n");
  EXPECT_NE(e.find("mapping \"a.example.com\" (line 3): auth.type cert needs tls: terminate"),
            std::string::npos)
      << e;
  // A passthrough mapping that does not authenticate is none of cert's business.
  EXPECT_EQ(mustLoad("auth: {type: cert, client_ca: " + ca + "}\n" + terminate +
                     "  - {external: b.example.com, internal: y}\n")
                .mappings.size(),
            2u);
  std::remove(ca.c_str());
}

}  // namespace
}  // namespace pgproxy::config

namespace pgproxy::config {
namespace {

std::string groups(int mappings, int per_mapping) {
  std::string text = "mappings:\n";
  for (int m = 0; m < mappings; ++m) {
    text += "  - external: m" + std::to_string(m) + ".example.com\n    backends:\n";
    for (int b = 0; b < per_mapping; ++b) {
      text += "      - {host: 10.0.0.1, port: " + std::to_string(1000 + m * 100 + b) + "}\n";
    }
  }
  return text;
}

TEST(ConfigBackends, DistinctBackendsBeyondTheTableAreRefused) {
  EXPECT_EQ(mustLoad(groups(8, 64)).mappings.size(), 8u);  // 512: exactly the table
  std::string e = errorOf(groups(9, 60));                  // 540
  EXPECT_NE(e.find("too many backends: the mappings name 540 distinct host:port pairs, at most "
                   "512"),
            std::string::npos)
      << e;
  // The same backend in several mappings takes one slot.
  std::string shared = "mappings:\n";
  for (int m = 0; m < 100; ++m) {
    shared += "  - {external: s" + std::to_string(m) +
              ".example.com, backends: [{host: a, port: 1}, {host: b, port: 2}]}\n";
  }
  EXPECT_EQ(mustLoad(shared).mappings.size(), 100u);
}

}  // namespace
}  // namespace pgproxy::config

namespace pgproxy::config {
namespace {

// A terminate mapping with a pool, and an auth block that makes it valid.
std::string pooled(const std::string& pool, const std::string& extra = "") {
  return "auth: {type: trust}\nmappings:\n  - {external: a.example.com, internal: x, tls: "
         "terminate, certificate: c, key: k, pool: " +
         pool + extra + "}\n";
}

TEST(ConfigPool, Defaults) {
  Config c = mustLoad(pooled("{}"));
  const PoolConfig& p = c.mappings[0].pool;
  EXPECT_TRUE(p.enabled);
  EXPECT_TRUE(c.mappings[0].authenticate);  // a pool implies it
  EXPECT_EQ(p.mode, PoolMode::kSession);
  EXPECT_EQ(p.size, 20u);
  EXPECT_EQ(p.min_size, 0u);
  EXPECT_EQ(p.reserve_size, 0u);
  EXPECT_EQ(p.reserve_timeout_ms, 5'000u);
  EXPECT_EQ(p.max_db_connections, 0u);
  EXPECT_EQ(p.query_wait_timeout_ms, 120'000u);
  EXPECT_EQ(p.server_idle_timeout_ms, 600'000u);
  EXPECT_EQ(p.server_lifetime_ms, 3'600'000u);
  EXPECT_EQ(p.server_reset_query, "DISCARD ALL");
  EXPECT_EQ(p.server_check_query, "");
  EXPECT_EQ(p.server_check_delay_ms, 30'000u);
  EXPECT_EQ(p.mark.line, 3);
  // Without a pool block, no pool and no authentication.
  Config plain = mustLoad("mappings:\n  - {external: a.example.com, internal: x}\n");
  EXPECT_FALSE(plain.mappings[0].pool.enabled);
  EXPECT_FALSE(plain.mappings[0].authenticate);
}

TEST(ConfigPool, AllKeys) {
  Config c = mustLoad(R"(auth: {type: trust}
mappings:
  - external: a.example.com
    internal: x
    tls: terminate
    certificate: c
    key: k
    pool:
      mode: transaction
      size: 50
      min_size: 50
      reserve_size: 5
      reserve_timeout: 500ms
      max_db_connections: 80
      query_wait_timeout: 30s
      server_idle_timeout: 1m
      server_lifetime: 2h
      server_reset_query: "RESET ALL"
      server_check_query: "SELECT 1"
      server_check_delay: 0
)");
  const PoolConfig& p = c.mappings[0].pool;
  EXPECT_EQ(p.mode, PoolMode::kTransaction);
  EXPECT_EQ(p.size, 50u);
  EXPECT_EQ(p.min_size, 50u);
  EXPECT_EQ(p.reserve_size, 5u);
  EXPECT_EQ(p.reserve_timeout_ms, 500u);
  EXPECT_EQ(p.max_db_connections, 80u);
  EXPECT_EQ(p.query_wait_timeout_ms, 30'000u);
  EXPECT_EQ(p.server_idle_timeout_ms, 60'000u);
  EXPECT_EQ(p.server_lifetime_ms, 7'200'000u);
  EXPECT_EQ(p.server_reset_query, "RESET ALL");
  EXPECT_EQ(p.server_check_query, "SELECT 1");
  EXPECT_EQ(p.server_check_delay_ms, 0u);

  EXPECT_EQ(mustLoad(pooled("{mode: statement}")).mappings[0].pool.mode, PoolMode::kStatement);
  EXPECT_EQ(mustLoad(pooled("{mode: session}")).mappings[0].pool.mode, PoolMode::kSession);
  // "off" (or 0) turns the three timeouts off; an empty reset query means none.
  Config off =
      mustLoad(pooled("{query_wait_timeout: off, server_idle_timeout: 0, server_lifetime: off, "
                      "server_reset_query: \"\"}"));
  EXPECT_EQ(off.mappings[0].pool.query_wait_timeout_ms, 0u);
  EXPECT_EQ(off.mappings[0].pool.server_idle_timeout_ms, 0u);
  EXPECT_EQ(off.mappings[0].pool.server_lifetime_ms, 0u);
  EXPECT_EQ(off.mappings[0].pool.server_reset_query, "");
  // authenticate: true alongside a pool is redundant, not wrong.
  EXPECT_TRUE(mustLoad(pooled("{}", ", authenticate: true")).mappings[0].authenticate);
}

TEST(ConfigPool, BadValuesAreRefusedWithTheReason) {
  auto expect = [](const std::string& pool, const std::string& message) {
    std::string e = errorOf(pooled(pool));
    EXPECT_NE(e.find(message), std::string::npos) << pool << " gave: " << e;
  };
  expect("{mode: batch}",
         "t.yaml:3:97: pool.mode must be session, transaction or statement, not \"batch\"");
  expect("{size: 0}", "pool.size must be a number from 1 to 10000, not \"0\"");
  expect("{size: 10001}", "pool.size must be a number from 1 to 10000, not \"10001\"");
  expect("{size: many}", "pool.size must be a number from 1 to 10000, not \"many\"");
  expect("{min_size: 21}", "pool.min_size (21) must not be more than pool.size (20)");
  expect("{size: 5, min_size: 6}", "pool.min_size (6) must not be more than pool.size (5)");
  // A refused size is not compared with min_size.
  std::string e = errorOf(pooled("{size: 0, min_size: 3}"));
  EXPECT_EQ(e.find("min_size"), std::string::npos) << e;
  expect("{min_size: -1}", "pool.min_size must be a number from 0 to 10000, not \"-1\"");
  expect("{reserve_size: x}", "pool.reserve_size must be a number from 0 to 10000, not \"x\"");
  expect("{reserve_timeout: soon}",
         "pool.reserve_timeout must be a duration such as 500ms, 10s or 2m, not \"soon\"");
  expect("{reserve_timeout: off}",
         "pool.reserve_timeout must be a duration such as 500ms, 10s or 2m, not \"off\"");
  expect("{max_db_connections: lots}",
         "pool.max_db_connections must be a number from 0 to 1000000, not \"lots\"");
  expect("{query_wait_timeout: 5x}",
         "pool.query_wait_timeout must be a duration such as 500ms, 10s or 2m, not \"5x\"");
  expect("{server_idle_timeout: never}",
         "pool.server_idle_timeout must be a duration such as 500ms, 10s or 2m, not \"never\"");
  expect("{server_lifetime: forever}",
         "pool.server_lifetime must be a duration such as 500ms, 10s or 2m, not \"forever\"");
  expect("{server_check_delay: off}",
         "pool.server_check_delay must be a duration such as 500ms, 10s or 2m, not \"off\"");
  expect("{server_reset_query: [a]}", "pool.server_reset_query must be a single value, not a list");
  expect("{server_check_query: {a: b}}",
         "pool.server_check_query must be a single value, not a mapping");
  expect("{sise: 3}", "unknown key \"sise\" in pool (did you mean \"size\"?)");
  expect("{size: 3, size: 4}", "duplicate key \"size\"");
  expect("on", "pool must be a mapping of keys to values, not a single value");
}

TEST(ConfigPool, NeedsAuthAndAPlaintextOrTerminatedSession) {
  // A pool needs the auth block, as authenticate: true does.
  EXPECT_NE(errorOf("mappings:\n  - {external: a.example.com, internal: x, tls: terminate, "
                    "certificate: c, key: k, pool: {}}\n")
                .find("mapping \"a.example.com\" (line 2) has a pool (whose clients pgproxy "
                      "authenticates) but there is no \"auth\" block saying how"),
            std::string::npos);
  EXPECT_NE(errorOf(pooled("{}", ", authenticate: false"))
                .find("t.yaml:3:5: mapping \"a.example.com\" has a pool but authenticate: false"),
            std::string::npos);

  const std::string passthroughPool =
      "  - {external: a.example.com, internal: x, pool: {size: 5}}\n";
  // A passthrough mapping no plaintext client reaches: there are two mappings and no default,
  // another mapping is the default, or tls.require refuses plaintext clients.
  for (const std::string& text :
       {"auth: {type: trust}\nmappings:\n" + passthroughPool +
            "  - {external: b.example.com, internal: y}\n",
        "auth: {type: trust}\ndefault: b.example.com\nmappings:\n" + passthroughPool +
            "  - {external: b.example.com, internal: y}\n",
        "auth: {type: trust}\ntls: {require: true}\nmappings:\n" + passthroughPool}) {
    std::string e = errorOf(text);
    EXPECT_NE(e.find("mapping \"a.example.com\" (line "), std::string::npos) << e;
    EXPECT_NE(e.find("): pool needs tls: terminate: a passthrough session's bytes are the "
                     "client's own TLS session"),
              std::string::npos)
        << e;
  }
  // The default mapping serves plaintext clients, whose bytes pgproxy reads: implied (the only
  // mapping) or named.
  EXPECT_TRUE(
      mustLoad("auth: {type: trust}\nmappings:\n" + passthroughPool).mappings[0].pool.enabled);
  Config named = mustLoad("auth: {type: trust}\ndefault: a.example.com\nmappings:\n" +
                          passthroughPool + "  - {external: b.example.com, internal: y}\n");
  EXPECT_TRUE(named.mappings[0].pool.enabled);
  EXPECT_TRUE(named.mappings[0].authenticate);
  // The same holds for authenticate: true without a pool.
  EXPECT_TRUE(mustLoad("auth: {type: trust}\nmappings:\n  - {external: a.example.com, internal: "
                       "x, authenticate: true}\n")
                  .mappings[0]
                  .authenticate);
  EXPECT_NE(errorOf("auth: {type: trust}\ntls: {require: true}\nmappings:\n  - {external: "
                    "a.example.com, internal: x, authenticate: true}\n")
                .find("authenticate: true needs tls: terminate"),
            std::string::npos);
}

TEST(ConfigAuthQuery, KeysAndDefaults) {
  std::string users = writeUsers("\"pgproxy_auth\" \"secret\"\n");
  Config d = mustLoad("auth: {file: " + users +
                      "}\nmappings:\n  - {external: a.example.com, internal: x}\n");
  EXPECT_EQ(d.auth.query, "");
  EXPECT_EQ(d.auth.query_user, "");
  EXPECT_EQ(d.auth.query_database, "postgres");
  EXPECT_EQ(d.auth.cache_ms, 60'000u);
  Config c = mustLoad("auth:\n  file: " + users +
                      "\n  query: \"SELECT usename, passwd FROM pgproxy.get_auth($1)\"\n"
                      "  user: pgproxy_auth\n  database: app\n  cache: 5m\n"
                      "mappings:\n  - {external: a.example.com, internal: x}\n");
  EXPECT_EQ(c.auth.query, "SELECT usename, passwd FROM pgproxy.get_auth($1)");
  EXPECT_EQ(c.auth.query_user, "pgproxy_auth");
  EXPECT_EQ(c.auth.query_database, "app");
  EXPECT_EQ(c.auth.cache_ms, 300'000u);
  EXPECT_EQ(mustLoad("auth: {file: " + users +
                     ", query: q, user: pgproxy_auth, cache: 0}\nmappings:\n  - {external: "
                     "a.example.com, internal: x}\n")
                .auth.cache_ms,
            0u);
  std::remove(users.c_str());
}

TEST(ConfigAuthQuery, MistakesAreRefusedWithTheReason) {
  std::string users = writeUsers("\"pgproxy_auth\" \"secret\"\n");
  const std::string mappings = "\nmappings:\n  - {external: a.example.com, internal: x}\n";
  auto expect = [&](const std::string& auth, const std::string& message) {
    std::string e = errorOf("auth: {" + auth + "}" + mappings);
    EXPECT_NE(e.find(message), std::string::npos) << auth << " gave: " << e;
  };
  const std::string file = "file: " + users + ", ";
  expect(file + "query: q",
         "t.yaml:1:" + std::to_string(8 + file.size() + 7) +
             ": auth.query needs auth.user: the user pgproxy logs in as to run it");
  expect(file + "query: q, user: nobody", "auth.user \"nobody\" is not in auth.file \"" + users +
                                              "\": pgproxy logs in as it to run auth.query");
  expect("type: trust, query: q, user: pgproxy_auth",
         "auth.user \"pgproxy_auth\" needs its secret in an auth.file");
  expect(file + "user: pgproxy_auth",
         "auth.user, auth.database and auth.cache configure auth.query, which is not set");
  expect(file + "database: app",
         "auth.user, auth.database and auth.cache configure auth.query, which is not set");
  expect(file + "cache: 1m",
         "auth.user, auth.database and auth.cache configure auth.query, which is not set");
  expect(file + "query: \"\", user: pgproxy_auth", "auth.query must not be empty");
  expect(file + "query: q, user: \"\"", "auth.user must not be empty");
  expect(file + "query: q, user: pgproxy_auth, database: \"\"", "auth.database must not be empty");
  expect(file + "query: [q], user: pgproxy_auth", "auth.query must be a single value, not a list");
  expect(file + "query: q, user: pgproxy_auth, cache: later",
         "auth.cache must be a duration such as 500ms, 10s or 2m, not \"later\"");
  std::remove(users.c_str());
  // A verifier cannot answer the backend's challenge: auth.user needs a password or md5 hash.
  std::string scram = writeUsers(
      "\"pgproxy_auth\" "
      "\"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
      "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\"\n");
  std::string e = errorOf("auth: {file: " + scram + ", query: q, user: pgproxy_auth}" + mappings);
  EXPECT_NE(e.find("auth.user \"pgproxy_auth\" has a SCRAM verifier in auth.file"),
            std::string::npos)
      << e;
  std::remove(scram.c_str());
}

TEST(ConfigMetrics, MaxPools) {
  const std::string mappings = "mappings:\n  - {external: a.example.com, internal: x}\n";
  EXPECT_EQ(mustLoad(mappings).metrics.max_pools, 1000u);
  EXPECT_EQ(mustLoad("metrics: {}\n" + mappings).metrics.max_pools, 1000u);
  EXPECT_EQ(mustLoad("metrics: {max_pools: 1}\n" + mappings).metrics.max_pools, 1u);
  EXPECT_EQ(mustLoad("metrics:\n  max_pools: 50000\n" + mappings).metrics.max_pools, 50'000u);
  EXPECT_NE(errorOf("metrics: {max_pools: 0}\n" + mappings)
                .find("t.yaml:1:22: metrics.max_pools must be a number from 1 to 1000000, not "
                      "\"0\""),
            std::string::npos);
  EXPECT_NE(errorOf("metrics: {max_pool: 5}\n" + mappings)
                .find("unknown key \"max_pool\" in metrics (did you mean \"max_pools\"?)"),
            std::string::npos);
  EXPECT_NE(errorOf("metrics: 5\n" + mappings)
                .find("metrics must be a mapping of keys to values, not a single value"),
            std::string::npos);
}

TEST(ConfigKeys, NewKeysAreReloadable) {
  for (const auto* table : {&poolKeys(), &metricsKeys()}) {
    for (const auto& k : *table) {
      EXPECT_TRUE(k.reloadable) << k.name;
    }
  }
  for (const char* name : {"query", "user", "database", "cache"}) {
    bool found = false;
    for (const auto& k : authKeys()) {
      if (std::string(k.name) == name) {
        found = true;
        EXPECT_TRUE(k.reloadable) << name;
      }
    }
    EXPECT_TRUE(found) << name;
  }
}

}  // namespace
}  // namespace pgproxy::config

namespace pgproxy::config {
namespace {

// Driven by the loader's own list of blocks, so a new block's keys are checked without editing
// this test.
TEST(ConfigListen, ProxyProtocolNeedsTheBalancersAddresses) {
  const std::string mapping = "mappings:\n  - {external: a.example.com, internal: x}\n";
  Config c = mustLoad(
      "listen:\n  - {address: 127.0.0.1, port: 5400}\n"
      "  - {address: 127.0.0.1, port: 5401, proxy_protocol: true,\n"
      "     proxy_protocol_from: [10.0.0.0/24, \"::1\"]}\n" +
      mapping);
  ASSERT_EQ(c.listen.size(), 2u);
  EXPECT_FALSE(c.listen[0].proxy_protocol);
  EXPECT_TRUE(c.listen[1].proxy_protocol);
  ASSERT_EQ(c.listen[1].proxy_protocol_from.size(), 2u);
  EXPECT_EQ(c.listen[1].proxy_protocol_from[0].text(), "10.0.0.0/24");
  EXPECT_NE(errorOf("listen: {port: 5401, proxy_protocol: true}\n" + mapping)
                .find("proxy_protocol needs proxy_protocol_from"),
            std::string::npos);
  EXPECT_NE(errorOf("listen: {port: 5401, proxy_protocol_from: 10.0.0.1}\n" + mapping)
                .find("proxy_protocol_from is set but proxy_protocol is not"),
            std::string::npos);
  EXPECT_NE(
      errorOf("listen: {port: 5401, proxy_protocol: true, proxy_protocol_from: 10.0.0.1/8}\n" +
              mapping)
          .find("is not an IP address or CIDR block"),
      std::string::npos);
}

TEST(ConfigListen, BackendProxyProtocolIsV2OrOff) {
  const std::string head = "mappings:\n  - {external: a.example.com, internal: x, ";
  EXPECT_TRUE(mustLoad(head + "backend_proxy_protocol: v2}\n").mappings[0].backend_proxy_protocol);
  EXPECT_FALSE(
      mustLoad(head + "backend_proxy_protocol: off}\n").mappings[0].backend_proxy_protocol);
  EXPECT_FALSE(mustLoad(head + "}\n").mappings[0].backend_proxy_protocol);
  EXPECT_NE(errorOf(head + "backend_proxy_protocol: v1}\n").find("must be v2 or off, not \"v1\""),
            std::string::npos);
}

TEST(ConfigSplice, GlobalDefaultUserAndAMappingsOwnWins) {
  const std::string maps =
      "mappings:\n  - {external: a.example.com, internal: x}\n"
      "  - {external: b.example.com, internal: x, splice: user}\n"
      "  - {external: c.example.com, internal: x, splice: kernel}\n";
  Config c = mustLoad(maps);
  EXPECT_EQ(c.splice, SpliceMode::kUser);  // the kernel splice is experimental: opt in
  EXPECT_EQ(c.spliceOf(c.mappings[0]), SpliceMode::kUser);
  EXPECT_EQ(c.spliceOf(c.mappings[1]), SpliceMode::kUser);
  EXPECT_EQ(c.spliceOf(c.mappings[2]), SpliceMode::kKernel);
  c = mustLoad("splice: auto\n" + maps);
  EXPECT_EQ(c.spliceOf(c.mappings[0]), SpliceMode::kAuto);
  EXPECT_EQ(c.spliceOf(c.mappings[1]), SpliceMode::kUser);
  EXPECT_EQ(c.spliceOf(c.mappings[2]), SpliceMode::kKernel);
  EXPECT_EQ(mustLoad("splice: kernel\n" + maps).spliceOf(c.mappings[0]), SpliceMode::kKernel);
  EXPECT_NE(
      errorOf("splice: bpf\n" + maps).find("splice must be auto, kernel or user, not \"bpf\""),
      std::string::npos);
  EXPECT_NE(errorOf("mappings:\n  - {external: a.example.com, internal: x, splice: [kernel]}\n")
                .find("splice"),
            std::string::npos);
}

TEST(ConfigSplice, KernelOnlyForPassthroughMappings) {
  std::string e = errorOf(
      "tls: {certificate: c.crt, key: c.key}\n"
      "mappings:\n  - {external: a.example.com, internal: x, tls: terminate, splice: kernel}\n");
  EXPECT_NE(e.find("has splice: kernel, which only TLS passthrough sessions use (this mapping "
                   "terminates TLS)"),
            std::string::npos)
      << e;
  // The global kernel applies where it can: terminated mappings relay in pgproxy.
  Config c = mustLoad(
      "splice: kernel\ntls: {certificate: c.crt, key: c.key}\n"
      "mappings:\n  - {external: a.example.com, internal: x, tls: terminate}\n");
  EXPECT_EQ(c.mappings[0].tls, TlsMode::kTerminate);
}

TEST(ConfigPeers, InstanceIdAndPeers) {
  const std::string mapping = "mappings:\n  - {external: a.example.com, internal: x}\n";
  Config c = mustLoad(
      "instance_id: 3\npeers:\n  - {id: 1, address: \"10.0.0.1:5400\"}\n"
      "  - {id: 2, address: \"[2001:db8::2]:5401\"}\n" +
      mapping);
  EXPECT_EQ(c.instance_id, 3u);
  ASSERT_EQ(c.peers.size(), 2u);
  EXPECT_EQ(c.peers[0].id, 1u);
  EXPECT_EQ(c.peers[0].address.address, "10.0.0.1");
  EXPECT_EQ(c.peers[1].address.address, "2001:db8::2");
  EXPECT_EQ(c.peers[1].address.port, 5401);
  std::string eight = "instance_id: 9\npeers:\n";
  for (int i = 1; i <= 8; ++i) {
    eight +=
        "  - {id: " + std::to_string(i) + ", address: \"10.0.0." + std::to_string(i) + ":5400\"}\n";
  }
  EXPECT_NE(errorOf(eight + mapping).find("at most 7"), std::string::npos);
  EXPECT_NE(errorOf("peers: [{id: 1, address: \"10.0.0.1:5400\"}]\n" + mapping)
                .find("peers needs instance_id"),
            std::string::npos);
  EXPECT_NE(errorOf("instance_id: 1\npeers: [{id: 1, address: \"10.0.0.1:5400\"}]\n" + mapping)
                .find("this instance's own instance_id"),
            std::string::npos);
  EXPECT_NE(errorOf("instance_id: 1\npeers: [{id: 2, address: \"10.0.0.1:5400\"}, {id: 2, "
                    "address: \"10.0.0.3:5400\"}]\n" +
                    mapping)
                .find("peers has id 2 twice"),
            std::string::npos);
  EXPECT_NE(errorOf("instance_id: 1\npeers: [{id: 2, address: db2}]\n" + mapping)
                .find("must be ADDRESS:PORT"),
            std::string::npos);
  EXPECT_NE(errorOf("instance_id: 1\npeers: [{id: 2}]\n" + mapping).find("needs id and address"),
            std::string::npos);
  EXPECT_NE(errorOf("instance_id: 128\n" + mapping).find("instance_id"), std::string::npos);
}

TEST(ConfigKeys, EveryKeyOfEveryBlockIsDocumentedOnce) {
  std::ifstream man(std::string(PGPROXY_SRCDIR) + "/man/pgproxy.yaml.5");
  std::string text((std::istreambuf_iterator<char>(man)), std::istreambuf_iterator<char>());
  std::ifstream sample(std::string(PGPROXY_SRCDIR) + "/etc/pgproxy/pgproxy.yaml");
  std::string sampleText((std::istreambuf_iterator<char>(sample)),
                         std::istreambuf_iterator<char>());
  ASSERT_GE(keyBlocks().size(), 12u);
  for (const auto& block : keyBlocks()) {
    ASSERT_NE(block.keys, nullptr) << block.path;
    ASSERT_FALSE(block.keys->empty()) << block.path;
    std::set<std::string> names;
    for (const auto& k : *block.keys) {
      EXPECT_TRUE(names.insert(k.name).second) << block.path << "." << k.name << " twice";
      EXPECT_NE(std::string(k.summary), "") << block.path << "." << k.name;
      EXPECT_NE(text.find(std::string("\\fB") + k.name + "\\fR"), std::string::npos)
          << block.path << "." << k.name << " is not documented in man/pgproxy.yaml.5";
      EXPECT_NE(sampleText.find(std::string(k.name) + ":"), std::string::npos)
          << block.path << "." << k.name << " is not in etc/pgproxy/pgproxy.yaml";
    }
  }
}

// The key lists are the parser's own: each listed key of a block is accepted there (it may
// still be refused for its value, but never as unknown), and a key not listed is unknown.
TEST(ConfigKeys, TheListedKeysAreTheParsedOnes) {
  const std::string mapping = "mappings:\n  - {external: a.example.com, internal: x}\n";
  for (const auto& k : topLevelKeys()) {
    std::string e = errorOf(std::string(k.name) + ": [[]]\n" +
                            (std::string(k.name) == "mappings" ? "" : mapping));
    EXPECT_EQ(e.find("unknown key"), std::string::npos) << k.name << ": " << e;
  }
  for (const auto& k : poolKeys()) {
    std::string e = errorOf("mappings:\n  - {external: a.example.com, internal: x, pool: {" +
                            std::string(k.name) + ": [[]]}}\n");
    EXPECT_EQ(e.find("unknown key"), std::string::npos) << k.name << ": " << e;
  }
  EXPECT_NE(errorOf("nonsense: 1\n" + mapping).find("unknown key \"nonsense\""), std::string::npos);
}

}  // namespace
}  // namespace pgproxy::config

namespace pgproxy::config {
namespace {

TEST(ConfigSplit, NeedsATransactionPoolAndLoggedInChecks) {
  const std::string head =
      "auth: {type: trust}\nmappings:\n  - external: a.example.com\n    internal: x\n";
  const std::string checks = "    health_check: {user: h}\n";
  Config c = mustLoad(head + checks +
                      "    pool: {mode: transaction}\n    read_write_split: true\n"
                      "    read_only_functions: [app.lookup, f]\n    read_after_write: off\n"
                      "    max_replica_lag: 5s\n");
  ASSERT_EQ(c.mappings.size(), 1u);
  EXPECT_TRUE(c.mappings[0].read_write_split);
  EXPECT_EQ(c.mappings[0].read_after_write_ms, 0u);
  EXPECT_EQ(c.mappings[0].max_replica_lag_ms, 5000u);
  ASSERT_TRUE(c.mappings[0].read_only);
  EXPECT_TRUE(c.mappings[0].read_only->contains("app", "lookup"));
  EXPECT_TRUE(c.mappings[0].read_only->contains("", "F"));
  EXPECT_EQ(mustLoad(head + checks + "    pool: {}\n").mappings[0].read_after_write_ms, 1000u);

  c = mustLoad(head + checks + "    pool: {mode: transaction}\n    read_write_split: Optimistic\n");
  EXPECT_TRUE(c.mappings[0].read_write_split);
  EXPECT_TRUE(c.mappings[0].read_write_optimistic);
  c = mustLoad(head + checks + "    pool: {mode: transaction}\n    read_write_split: off\n");
  EXPECT_FALSE(c.mappings[0].read_write_split);
  EXPECT_FALSE(c.mappings[0].read_write_optimistic);
  EXPECT_NE(errorOf(head + checks + "    pool: {mode: transaction}\n    read_write_split: maybe\n")
                .find("must be true, false or optimistic, not \"maybe\""),
            std::string::npos);
  EXPECT_NE(
      errorOf(head + checks + "    pool: {mode: statement}\n    read_write_split: optimistic\n")
          .find("optimistic without transaction pooling"),
      std::string::npos);
  EXPECT_NE(errorOf(head + checks + "    read_write_split: true\n").find("has no pool"),
            std::string::npos);
  EXPECT_NE(errorOf(head + checks + "    pool: {}\n    read_write_split: true\n")
                .find("pools in session mode"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    pool: {mode: transaction}\n    read_write_split: true\n")
                .find("has no health_check.user"),
            std::string::npos);
  EXPECT_NE(
      errorOf(head + checks +
              "    role: primary\n    pool: {mode: transaction}\n    read_write_split: true\n")
          .find("sets role"),
      std::string::npos);
  EXPECT_NE(errorOf(head + checks + "    read_after_write: 2s\n").find("only a read_write_split"),
            std::string::npos);
  EXPECT_NE(errorOf(head + "    max_replica_lag: 2s\n").find("needs health_check.user"),
            std::string::npos);
  EXPECT_NE(errorOf(head + checks +
                    "    pool: {mode: transaction}\n    read_write_split: true\n"
                    "    read_only_functions: [\"drop table x; --\"]\n")
                .find("entries are function names"),
            std::string::npos);
  EXPECT_NE(errorOf(head + checks +
                    "    pool: {mode: transaction}\n    read_write_split: true\n"
                    "    read_only_functions: f\n")
                .find("must be a list of function names"),
            std::string::npos);
}

TEST(ConfigAudit, FileOrSyslogWithItsOptions) {
  const std::string mapping = "mappings:\n  - {external: a.example.com, internal: x}\n";
  Config off = mustLoad(mapping);
  EXPECT_FALSE(off.audit.enabled());
  Config c = mustLoad(
      "audit: {file: /var/log/pgproxy/audit.log, statements: ddl, redact: literals, fail: "
      "closed}\n" +
      mapping);
  EXPECT_TRUE(c.audit.enabled());
  EXPECT_EQ(c.audit.file, "/var/log/pgproxy/audit.log");
  EXPECT_EQ(c.audit.statements, AuditStatements::kDdl);
  EXPECT_TRUE(c.audit.redact_literals);
  EXPECT_TRUE(c.audit.fail_closed);
  Config s = mustLoad("audit: {syslog: local4}\n" + mapping);
  EXPECT_EQ(s.audit.syslog, "local4");
  EXPECT_EQ(s.audit.syslog_socket, "/dev/log");
  EXPECT_EQ(s.audit.statements, AuditStatements::kNone);
  EXPECT_FALSE(s.audit.fail_closed);
  EXPECT_EQ(syslogFacility("local4"), 20);
  EXPECT_EQ(syslogFacility("kern"), -1);

  EXPECT_NE(errorOf("audit: {file: /a, syslog: local0}\n" + mapping).find("set one"),
            std::string::npos);
  EXPECT_NE(
      errorOf("audit: {statements: all}\n" + mapping).find("needs audit.file or audit.syslog"),
      std::string::npos);
  EXPECT_NE(errorOf("audit: {file: relative.log}\n" + mapping).find("absolute path"),
            std::string::npos);
  EXPECT_NE(errorOf("audit: {syslog: kern}\n" + mapping).find("must be a syslog facility"),
            std::string::npos);
  EXPECT_NE(errorOf("audit: {file: /a, statements: some}\n" + mapping).find("audit.statements"),
            std::string::npos);
  EXPECT_NE(errorOf("audit: {file: /a, fail: maybe}\n" + mapping).find("audit.fail"),
            std::string::npos);
  EXPECT_NE(errorOf("audit: {file: /a, rotate: daily}\n" + mapping).find("rotate"),
            std::string::npos);
}

TEST(ConfigPlugins, FilesTheirConfigAndLimits) {
  const std::string mapping = "mappings:\n  - {external: a.example.com, internal: x}\n";
  Config c = mustLoad(
      "plugins:\n"
      "  - file: /etc/pgproxy/plugins/a.lua\n"
      "    config: {n: 3, ratio: 0.5, on: true, s: \"7\", list: [a, 2], map: {k: v}}\n"
      "  - {file: b.lua, max_instructions: 5000, max_memory: 1MB}\n" +
      mapping);
  ASSERT_EQ(c.plugins.size(), 2u);
  const PluginValue& v = c.plugins[0].config;
  ASSERT_EQ(v.kind, PluginValue::Kind::kMap);
  ASSERT_EQ(v.keys.size(), 6u);
  EXPECT_EQ(v.values[0].kind, PluginValue::Kind::kNumber);
  EXPECT_EQ(v.values[1].kind, PluginValue::Kind::kNumber);
  EXPECT_EQ(v.values[2].kind, PluginValue::Kind::kBool);
  EXPECT_EQ(v.values[3].kind, PluginValue::Kind::kString);  // quoted: a string
  EXPECT_EQ(v.values[4].kind, PluginValue::Kind::kList);
  EXPECT_EQ(v.values[4].values[1].kind, PluginValue::Kind::kNumber);
  EXPECT_EQ(v.values[5].keys[0], "k");
  EXPECT_EQ(c.plugins[0].max_instructions, 1'000'000u);
  EXPECT_EQ(c.plugins[1].max_instructions, 5000u);
  EXPECT_EQ(c.plugins[1].max_memory, 1024u * 1024u);
  EXPECT_NE(errorOf("plugins: {file: a.lua}\n" + mapping).find("must be a list"),
            std::string::npos);
  EXPECT_NE(errorOf("plugins: [{config: {}}]\n" + mapping).find("needs file"), std::string::npos);
  EXPECT_NE(errorOf("plugins: [{file: a.lua, max_memory: 1kB}]\n" + mapping).find("256kB to 4GB"),
            std::string::npos);
  EXPECT_NE(errorOf("plugins: [{file: a.lua, hooks: all}]\n" + mapping).find("hooks"),
            std::string::npos);
}

}  // namespace
}  // namespace pgproxy::config
