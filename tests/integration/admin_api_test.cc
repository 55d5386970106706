// The REST API on admin.listen (issue 17): every view as JSON, checked against its own OpenAPI
// document by a real JSON reader; the bearer token; POST actions that move real sessions; PUT
// of the configuration validated as -t, written and reloaded.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

const char* kToken = "t0ken-for-tests";

struct Admin {
  int port = 0;
  std::string dir;
  std::string block() const {
    return "admin:\n  listen: \"127.0.0.1:" + std::to_string(port) + "\"\n  token_file: " + dir +
           "/token\n  users: [postgres]\n";
  }
};

Admin makeAdmin() {
  Admin a;
  a.port = freePort();
  a.dir = tempDir("pgproxy-api");
  writeFile(a.dir + "/token", std::string(kToken) + "\n");
  return a;
}

std::string twoBackends() {
  return "default: db.example.com\nmappings:\n  - external: db.example.com\n    backends:\n"
         "      - {host: 127.0.0.1, port: {P1}}\n      - {host: 127.0.0.1, port: {P2}}\n";
}

std::string bearer() {
  return std::string("Authorization: Bearer ") + kToken + "\r\n";
}

HttpResponse send(int port, const std::string& method, const std::string& path,
                  const std::string& body = "", bool token = true) {
  return http(port, method + " " + path + " HTTP/1.0\r\nHost: localhost\r\n" +
                        (token ? bearer() : "") + "Content-Length: " + std::to_string(body.size()) +
                        "\r\n\r\n" + body);
}

const char* kOpenApiCheck = R"PY(
import json, sys, urllib.request
port, token = sys.argv[1], sys.argv[2]
def get(path):
    req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path),
                                 headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
status, doc = get("/api/v1/openapi.json")
assert status == 200, status
schemas = doc["components"]["schemas"]
types = {"integer": int, "boolean": bool, "string": str}
checked = 0
for path, item in doc["paths"].items():
    if "get" not in item:
        continue
    responses = item["get"]["responses"]
    status, body = get(path)
    if "200" not in responses:
        assert status == 501, (path, status)
        assert set(body) >= set(schemas["Error"]["required"]), body
        continue
    assert status == 200, (path, status, body)
    shape = responses["200"]["content"]["application/json"]["schema"]
    assert set(body) == set(shape["required"]), (path, body.keys())
    name = shape["required"][0]
    row_schema = schemas[shape["properties"][name]["items"]["$ref"].split("/")[-1]]
    assert body[name], (path, "no rows")
    for row in body[name]:
        assert set(row) == set(row_schema["required"]), (path, set(row) ^ set(row_schema["required"]))
        for key, value in row.items():
            want = types[row_schema["properties"][key]["type"]]
            assert value is None or (type(value) is want), (path, key, value)
    checked += 1
assert checked >= 8, checked
print("ok")
)PY";

TEST(AdminApi, EveryResponseMatchesTheOpenApiDocument) {
  Admin admin = makeAdmin();
  // A pooled mapping too, so that every view has rows to check.
  Proxy proxy(admin.block() + "auth: {type: scram-sha-256, file: " + poolRoleDatabase("apidb") +
              "}\n" + twoBackends() +
              "  - external: host1.example.com\n    internal: 127.0.0.1\n    port: {P1}\n"
              "    tls: terminate\n    certificate: " +
              sandboxFile("proxy-host1.crt") + "\n    key: " + sandboxFile("proxy-host1.key") +
              "\n    backend_tls: disable\n    pool: {mode: transaction}\n");
  Conn plain(proxy.plain());  // sessions, so the views have something to count
  ASSERT_EQ(plain.one("select 1"), "1");
  Conn pooled("host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
              " sslmode=verify-full sslrootcert=" + sandboxFile("proxy-ca.crt") +
              " dbname=apidb user=pgproxy_pool password=scram-pw");
  ASSERT_EQ(pooled.one("select 1"), "1");
  runClient(kPython, "openapi_check.py", kOpenApiCheck, {std::to_string(admin.port), kToken},
            proxy);
}

TEST(AdminApi, TheTokenGuardsItAndPostsMoveSessions) {
  Admin admin = makeAdmin();
  Proxy proxy(admin.block() + twoBackends());
  EXPECT_EQ(httpGet(admin.port, "/api/v1/backends").status, 401);
  auto backends = httpGet(admin.port, "/api/v1/backends", bearer());
  ASSERT_EQ(backends.status, 200) << backends.body;
  EXPECT_NE(backends.body.find("\"port\":" + std::to_string(sandbox().port1)), std::string::npos);
  EXPECT_EQ(send(admin.port, "POST", "/api/v1/reload", "", false).status, 401);
  auto drain = send(admin.port, "POST",
                    "/api/v1/backends/127.0.0.1:" + std::to_string(sandbox().port1) + "/drain");
  ASSERT_EQ(drain.status, 200) << drain.body;
  EXPECT_NE(drain.body.find("DRAIN BACKEND"), std::string::npos);
  std::map<std::string, int> seen;
  for (int i = 0; i < 10; ++i) {
    Conn c(proxy.plain());
    seen[c.one("show cluster_name")] += 1;
  }
  EXPECT_EQ(seen["host2"], 10);
  EXPECT_NE(httpGet(admin.port, "/api/v1/backends", bearer()).body.find("\"drained\":true"),
            std::string::npos);
  // The console sees what the API did: one state.
  Conn console("host=127.0.0.1 port=" + std::to_string(proxy.port()) +
               " sslmode=disable dbname=pgproxy user=postgres");
  PGresult* r = PQexec(console.c, "SHOW BACKENDS");
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK);
  int drained = 0;
  for (int i = 0; i < PQntuples(r); ++i) {
    drained += std::string(PQgetvalue(r, i, PQfnumber(r, "drained"))) == "t" ? 1 : 0;
  }
  PQclear(r);
  EXPECT_EQ(drained, 1);
  auto missing = send(admin.port, "POST", "/api/v1/backends/10.9.9.9:5432/drain");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(send(admin.port, "POST", "/api/v1/mappings/db.example.com/pause").status, 501);
  EXPECT_EQ(send(admin.port, "GET", "/api/v1/reload").status, 405);
}

// Occurrences of `needle` in `s`.
int count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (std::size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

TEST(AdminApi, ClientsComeInPagesAcrossWorkers) {
  Admin admin = makeAdmin();
  Proxy proxy(admin.block() + twoBackends());
  std::vector<std::unique_ptr<Conn>> sessions;
  for (int i = 0; i < 5; ++i) {
    sessions.push_back(std::make_unique<Conn>(proxy.plain()));
    ASSERT_EQ(sessions.back()->one("select 1"), "1");
  }
  std::set<std::string> seen;
  std::string after = "0";
  for (int page = 0; page < 10; ++page) {
    auto r = httpGet(admin.port, "/api/v1/clients?limit=2&after=" + after, bearer());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_LE(count(r.body, "\"id\":"), 2) << r.body;
    for (std::size_t at = r.body.find("\"id\":"); at != std::string::npos;
         at = r.body.find("\"id\":", at + 1)) {
      seen.insert(r.body.substr(at + 5, r.body.find(',', at) - at - 5));
    }
    std::size_t next = r.body.find("\"next\":");
    if (next == std::string::npos) {
      break;
    }
    after = r.body.substr(next + 7, r.body.find('}', next) - next - 7);
  }
  EXPECT_EQ(seen.size(), 5u);  // every session once, over pages
  EXPECT_EQ(httpGet(admin.port, "/api/v1/clients?limit=0", bearer()).status, 400);
}

const char* kHttpsCheck = R"PY(
import json, ssl, sys, urllib.request
port, token, ca = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False  # the sandbox certificate names host1.example.com, not 127.0.0.1
req = urllib.request.Request("https://127.0.0.1:%s/api/v1/version" % port,
                             headers={"Authorization": "Bearer " + token})
with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
    body = json.loads(r.read())
assert body["version"][0]["version"].startswith("pgproxy"), body
with urllib.request.urlopen("https://127.0.0.1:%s/" % port, context=ctx, timeout=10) as r:
    assert b"<title>pgproxy</title>" in r.read()
print("ok")
)PY";

TEST(AdminApi, HttpsWithTheAdminCertificate) {
  Admin admin = makeAdmin();
  Proxy proxy(admin.block() + "  certificate: " + sandboxFile("proxy-host1.crt") +
              "\n  key: " + sandboxFile("proxy-host1.key") + "\n" + twoBackends());
  runClient(kPython, "https_check.py", kHttpsCheck,
            {std::to_string(admin.port), kToken, sandboxFile("proxy-ca.crt")}, proxy);
  // Plain HTTP on the TLS port gets no answer it could read as one.
  EXPECT_NE(httpGet(admin.port, "/api/v1/version", bearer()).status, 200);
}

TEST(AdminApi, PutConfigIsValidatedWrittenAndReloaded) {
  Admin admin = makeAdmin();
  std::string base = admin.block() + "  allow_config_write: true\n" + twoBackends();
  Proxy proxy(base);
  std::string before = readFile(proxy.configPath());
  auto bad = send(admin.port, "PUT", "/api/v1/config", "listen:\n  port: 99999\nmappings: []\n");
  EXPECT_EQ(bad.status, 422) << bad.body;
  EXPECT_NE(bad.body.find("\"line\":2,\"column\":9"), std::string::npos) << bad.body;
  EXPECT_EQ(readFile(proxy.configPath()), before);  // nothing written
  // The same file with one more mapping: applied by a reload.
  std::string good = before + "  - external: extra.example.com\n    internal: 127.0.0.1\n";
  auto ok = send(admin.port, "PUT", "/api/v1/config", good);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(readFile(proxy.configPath()), good);
  EXPECT_TRUE(eventually([&] {
    return httpGet(admin.port, "/api/v1/mappings", bearer()).body.find("extra.example.com") !=
           std::string::npos;
  }));
}

}  // namespace
}  // namespace pgproxy::it
