// Observability: /metrics counts across workers, reloads and restarts; health endpoints; access
// log.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <iostream>
#include <mutex>
#include <random>
#include <regex>
#include <thread>

#include "../unit/tls_test_util.h"
#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The value of one sample line, e.g. metric(text, "pgproxy_connections_accepted_total").
long long metric(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) {
      return std::stoll(line.substr(series.size() + 1));
    }
  }
  return -1;
}

std::string closed(const std::string& mapping, const std::string& outcome) {
  return "pgproxy_connections_closed_total{mapping=\"" + mapping + "\",outcome=\"" + outcome +
         "\"}";
}

// Sessions that ended normally. A TLS client that resets instead of closing (libpq does when the
// server's last bytes are still unread; its Terminate is inside TLS, invisible to passthrough) is
// counted as client_closed, so both count here; errors must stay zero.
long long finished(const std::string& text, const std::string& mapping) {
  return metric(text, closed(mapping, "ok")) + metric(text, closed(mapping, "client_closed"));
}

class Observed {
 public:
  explicit Observed(const std::string& extra = "", int workers = 2, const std::string& token = "")
      : admin_(freePort()),
        proxy_("admin:\n  listen: \"127.0.0.1:" + std::to_string(admin_) + "\"\n" +
                   (token.empty() ? "" : "  token: \"" + token + "\"\n") + extra +
                   "mappings:\n"
                   "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n"
                   "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}\n"
                   "  - {external: down.example.com, internal: 127.0.0.1, port: {DEAD}}\n",
               workers) {}
  Proxy& proxy() { return proxy_; }
  int admin() const { return admin_; }
  std::string metrics() { return httpGet(admin_, "/metrics").body; }

 private:
  int admin_;
  Proxy proxy_;
};

TEST(Metrics, CountsAcrossWorkersReloadsAndRestarts) {
  Observed o;
  // The harness's readiness probe was one accepted connection; under load its worker may count
  // it after the first scrape, so the base is read once it has been counted and closed.
  long long base = 0;
  ASSERT_TRUE(eventually([&] {
    std::string m = o.metrics();
    base = metric(m, "pgproxy_connections_accepted_total");
    return base >= 1 && metric(m, "pgproxy_connections_active") == 0;
  }));
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(psql(o.proxy().tls("host1"), "select 1").exit_code, 0);
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(psql(o.proxy().tls("host2"), "select 1").exit_code, 0);
  }
  ASSERT_TRUE(eventually([&] {
    std::string m = o.metrics();
    return finished(m, "host1.example.com") == 5 && finished(m, "host2.example.com") == 3;
  })) << o.metrics();
  std::string m = o.metrics();
  EXPECT_EQ(metric(m, "pgproxy_connections_accepted_total"), base + 8);
  EXPECT_EQ(metric(m, closed("host1.example.com", "error")), 0);
  EXPECT_EQ(metric(m, closed("host2.example.com", "error")), 0);
  EXPECT_EQ(metric(m, "pgproxy_connections_active"), 0);
  EXPECT_GT(metric(m, "pgproxy_client_to_backend_bytes_total{mapping=\"host1.example.com\"}"), 0);
  EXPECT_GT(metric(m, "pgproxy_backend_to_client_bytes_total{mapping=\"host2.example.com\"}"), 0);
  EXPECT_EQ(metric(m, "pgproxy_handshake_duration_seconds_count"), 8);
  EXPECT_EQ(metric(m, "pgproxy_backend_connect_duration_seconds_count"), 8);
  EXPECT_EQ(metric(m, "pgproxy_workers"), 2);
  // A reload keeps every counter.
  ASSERT_EQ(o.proxy().signal("reload").exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    std::string now = o.metrics();
    return metric(now, "pgproxy_generation") == 2 && metric(now, "pgproxy_draining_workers") == 0;
  }));
  m = o.metrics();
  EXPECT_EQ(finished(m, "host1.example.com"), 5);
  EXPECT_EQ(metric(m, "pgproxy_connections_accepted_total"), base + 8);
  EXPECT_EQ(metric(m, "pgproxy_reloads_total{result=\"ok\"}"), 1);
  // A worker killed with its counts: they are kept too.
  auto workers = childrenOf(o.proxy().pid());
  ASSERT_FALSE(workers.empty());
  ASSERT_EQ(psql(o.proxy().tls("host1"), "select 1").exit_code, 0);
  ASSERT_TRUE(eventually([&] { return finished(o.metrics(), "host1.example.com") == 6; }));
  kill(workers[0], SIGKILL);
  kill(workers.back(), SIGKILL);
  ASSERT_TRUE(eventually([&] {
    std::string now = o.metrics();
    return metric(now, "pgproxy_worker_restarts_total") >= 1 &&
           finished(now, "host1.example.com") == 6;
  })) << o.metrics();
  EXPECT_EQ(metric(o.metrics(), "pgproxy_connections_accepted_total"), base + 9);
}

TEST(Metrics, PromtoolAcceptsTheExposition) {
  Observed o;
  ASSERT_EQ(psql(o.proxy().tls("host1"), "select 1").exit_code, 0);
  psql(o.proxy().tls("nope", "require"), "select 1");
  std::string dir = tempDir("pgproxy-promtool");
  writeFile(dir + "/metrics.txt", o.metrics());
  auto r = run({"bash", "-c", "promtool check metrics < " + dir + "/metrics.txt"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  run({"rm", "-rf", dir});
}

// Each line of an exposition without its value: comments whole, samples up to the last space.
// Two whole pages of the same configuration have the same keys, whatever the counts.
std::vector<std::string> seriesKeys(const std::string& body) {
  std::vector<std::string> keys;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    keys.push_back(line.rfind('#', 0) == 0 ? line : line.substr(0, line.rfind(' ')));
  }
  return keys;
}

// Scrapes that land while the master folds the counts of exited workers (the drained generation
// of each reload, a killed worker) get the whole page or a 503: never a dead worker, a dropped
// connection or a torn page.
TEST(Metrics, ScrapesDuringFoldsGetTheWholePageOr503) {
  constexpr int kWorkers = 4;
  constexpr int kFolds = 200;
  Observed o("", kWorkers);
  const std::vector<std::string> reference = seriesKeys(o.metrics());
  ASSERT_GT(reference.size(), 100u);
  std::atomic<bool> stop{false};
  std::atomic<long> whole{0}, unavailable{0}, cut{0};
  // A worker the test SIGKILLs cannot answer the requests it had accepted: those (and only those)
  // may end without an answer. Bumped just before each kill.
  std::atomic<int> kill_epoch{0};
  // A worker that retires on a reload frees its evhttp at once, closing the admin connections it
  // accepted and has not yet answered: a fault of the drain, not of the folds, so such answers
  // (no answer at all, never a torn page) are counted apart. Odd while a reload is under way.
  std::atomic<int> reload_epoch{0};
  std::atomic<long> dropped_by_retiring{0};
  std::mutex mu;
  std::vector<std::string> bad;      // anything else, with what it was
  std::vector<std::string> samples;  // some whole pages for promtool
  auto scrape = [&] {
    while (!stop.load()) {
      int epoch = kill_epoch.load();
      int reloads = reload_epoch.load();
      HttpResponse r = httpGet(o.admin(), "/metrics");
      if (r.status == 0 && kill_epoch.load() != epoch) {
        ++cut;
      } else if (r.status == 0 && (reload_epoch.load() != reloads || (reloads & 1))) {
        ++dropped_by_retiring;
      } else if (r.status == 503) {
        ++unavailable;
      } else if (r.status == 200 && seriesKeys(r.body) == reference) {
        if (++whole % 97 == 0) {
          std::lock_guard<std::mutex> lock(mu);
          samples.push_back(r.body);
        }
      } else {
        std::lock_guard<std::mutex> lock(mu);
        bad.push_back("status " + std::to_string(r.status) + ", " + std::to_string(r.body.size()) +
                      " bytes:\n" + r.body.substr(0, 300));
      }
    }
  };
  std::thread scrapers[] = {std::thread(scrape), std::thread(scrape)};
  auto joinScrapers = [&] {
    stop = true;
    for (auto& t : scrapers) {
      if (t.joinable()) {
        t.join();
      }
    }
  };
  struct Joiner {
    std::function<void()> f;
    ~Joiner() { f(); }
  } joiner{joinScrapers};  // also when an ASSERT returns early
  // The control loop reads its own counters through the same endpoint, retrying a 503.
  auto now = [&](const std::string& series) {
    HttpResponse r = httpGet(o.admin(), "/metrics");
    return r.status == 200 ? metric(r.body, series) : -1;
  };
  int folds = 0, kills = 0;
  long long generation = now("pgproxy_generation");
  while (folds < kFolds && !::testing::Test::HasFailure()) {
    // A reload: the old generation's workers exit and are folded.
    ++reload_epoch;
    ASSERT_EQ(o.proxy().signal("reload").exit_code, 0);
    ++generation;
    ASSERT_TRUE(eventually([&] {
      return now("pgproxy_generation") == generation && now("pgproxy_draining_workers") == 0 &&
             childrenOf(o.proxy().pid()).size() == kWorkers;
    })) << "generation "
        << generation;
    ++reload_epoch;
    folds += kWorkers;
    // A killed worker: folded, then replaced.
    auto workers = childrenOf(o.proxy().pid());
    ASSERT_FALSE(workers.empty());
    ++kill_epoch;
    ASSERT_EQ(kill(workers.front(), SIGKILL), 0);
    ++kills;
    ASSERT_TRUE(eventually([&] {
      return now("pgproxy_worker_restarts_total") >= kills && now("pgproxy_workers") == kWorkers &&
             childrenOf(o.proxy().pid()).size() == kWorkers;
    })) << "kill "
        << kills;
    folds += 1;
  }
  joinScrapers();
  EXPECT_TRUE(bad.empty()) << bad.size() << " bad answers; the first: " << bad.front();
  EXPECT_GT(whole.load(), kFolds);  // the scrapers ran all along
  // Every worker that died was one the test killed, and the master is the one that started.
  EXPECT_EQ(now("pgproxy_worker_restarts_total"), kills);
  EXPECT_EQ(kill(o.proxy().pid(), 0), 0);
  EXPECT_EQ(o.proxy().log().find("signal 11"), std::string::npos);
  std::string dir = tempDir("pgproxy-promtool");
  for (std::size_t i = 0; i < samples.size(); i += std::max<std::size_t>(1, samples.size() / 10)) {
    writeFile(dir + "/metrics.txt", samples[i]);
    auto r = run({"bash", "-c", "promtool check metrics < " + dir + "/metrics.txt"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  std::cout << "scrapes: " << whole.load() << " whole, " << unavailable.load() << " 503, "
            << cut.load() << " cut by a kill, " << dropped_by_retiring.load()
            << " dropped by a retiring worker, " << bad.size() << " bad, over " << folds
            << " folds\n";
  run({"rm", "-rf", dir});
}

// Mappings host1 (to the first cluster) and `prefix`1 .. `prefix`(n-1) (to a dead port).
std::string mappingsList(int n, const std::string& prefix) {
  std::string yaml =
      "mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n";
  for (int i = 1; i < n; ++i) {
    yaml += "  - {external: " + prefix + std::to_string(i) +
            ".example.com, internal: 127.0.0.1, port: {DEAD}}\n";
  }
  return yaml;
}

// 300 mappings cannot each have their own slot (metrics, max_connections, connection_rate): -t,
// a start and a reload refuse them, naming the limit, and the running configuration keeps serving.
TEST(MappingSlots, ThreeHundredMappingsAreRefusedNamingTheLimit) {
  const std::string limit = "too many mappings: 300, at most 127";
  std::string dir = tempDir("pgproxy-slots");
  std::string yaml = "listen: {address: 127.0.0.1, port: " + std::to_string(freePort()) + "}\n" +
                     mappingsList(300, "m");
  for (const char* placeholder : {"{P1}", "{DEAD}"}) {
    for (auto at = yaml.find(placeholder); at != std::string::npos; at = yaml.find(placeholder)) {
      yaml.replace(at, std::strlen(placeholder), "5432");
    }
  }
  writeFile(dir + "/300.yaml", yaml);
  auto t = run({proxyBinary(), "-t", "-c", dir + "/300.yaml"});
  EXPECT_EQ(t.exit_code, 1) << t.output;
  EXPECT_NE(t.output.find(dir + "/300.yaml:130:5: " + limit), std::string::npos) << t.output;
  auto start = run({proxyBinary(), "-c", dir + "/300.yaml"}, seconds(20));
  EXPECT_EQ(start.exit_code, 1) << start.output;
  EXPECT_NE(start.output.find(limit), std::string::npos) << start.output;
  run({"rm", "-rf", dir});

  int admin = freePort();
  const std::string adminBlock = "admin: {listen: \"127.0.0.1:" + std::to_string(admin) + "\"}\n";
  Proxy proxy(adminBlock + mappingsList(3, "m"));
  auto metrics = [&] { return httpGet(admin, "/metrics").body; };
  ASSERT_EQ(psql(proxy.tls("host1"), "select 1").exit_code, 0);
  proxy.rewrite(adminBlock + mappingsList(300, "m"));
  // `-s reload` reads the file first, and refuses to signal a master with it.
  auto viaCli = proxy.signal("reload");
  EXPECT_EQ(viaCli.exit_code, 1);
  EXPECT_NE(viaCli.output.find(limit), std::string::npos) << viaCli.output;
  // A SIGHUP from elsewhere (kill -HUP, a service manager) reaches the master, which refuses.
  ASSERT_EQ(kill(proxy.pid(), SIGHUP), 0);
  ASSERT_TRUE(eventually([&] {
    return metric(metrics(), "pgproxy_reloads_total{result=\"failed\"}") == 1;
  })) << metrics();
  EXPECT_NE(proxy.log().find(limit), std::string::npos);
  std::string m = metrics();
  EXPECT_EQ(metric(m, "pgproxy_generation"), 1);
  EXPECT_EQ(metric(m, "pgproxy_reloads_total{result=\"ok\"}"), 0);
  EXPECT_EQ(m.find("m100.example.com"), std::string::npos);
  EXPECT_EQ(psql(proxy.tls("host1"), "select 1").exit_code, 0);
}

// Names keep their slots for the master's life (counters survive a mapping's removal and return),
// so reloads that rename mappings use up slots: the one that would need more than there are is
// refused, naming the limit, and the ones that fit still work, with series of their own.
TEST(MappingSlots, ReloadsThatWouldOutgrowTheSlotsAreRefused) {
  int admin = freePort();
  const std::string adminBlock = "admin: {listen: \"127.0.0.1:" + std::to_string(admin) + "\"}\n";
  auto metrics = [&] { return httpGet(admin, "/metrics").body; };
  Proxy proxy(adminBlock + mappingsList(100, "a"));  // host1 and a1..a99: 100 slots
  ASSERT_EQ(psql(proxy.tls("host1"), "select 1").exit_code, 0);
  // host1 and b1..b99: 99 new names, 27 slots left.
  proxy.rewrite(adminBlock + mappingsList(100, "b"));
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    return metric(metrics(), "pgproxy_reloads_total{result=\"failed\"}") == 1;
  })) << metrics();
  EXPECT_NE(proxy.log().find("needs 99 new mapping name(s), and 100 of the 127 per-mapping slots"),
            std::string::npos)
      << proxy.log();
  EXPECT_EQ(metric(metrics(), "pgproxy_generation"), 1);
  EXPECT_EQ(psql(proxy.tls("host1"), "select 1").exit_code, 0);
  // host1, a1..a99 and c1..c27 (to the second cluster): exactly the 127 slots.
  std::string body = mappingsList(100, "a");
  for (int i = 1; i <= 27; ++i) {
    body +=
        "  - {external: c" + std::to_string(i) + ".example.com, internal: 127.0.0.1, port: {P2}}\n";
  }
  proxy.rewrite(adminBlock + body);
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    std::string m = metrics();
    return metric(m, "pgproxy_generation") == 2 && metric(m, "pgproxy_draining_workers") == 0;
  })) << proxy.log();
  // The last slot's mapping counts as itself, not as "unknown".
  long long unknown = finished(metrics(), "unknown");
  ASSERT_EQ(psql(proxy.tls("c27", "require"), "select 1").exit_code, 0);
  ASSERT_TRUE(eventually([&] { return finished(metrics(), "c27.example.com") == 1; })) << metrics();
  EXPECT_EQ(metric(metrics(), "pgproxy_mapping_sessions_active{mapping=\"c27.example.com\"}"), 0);
  EXPECT_EQ(finished(metrics(), "unknown"), unknown);
  EXPECT_EQ(proxy.log().find("no metrics slot"), std::string::npos);
}

// The shared backend table keeps every backend a master has served: a reload whose new backends
// would not fit is refused, naming the limit, and the running configuration keeps serving.
TEST(MappingSlots, ReloadsThatWouldOutgrowTheBackendTableAreRefused) {
  auto config = [](int first_port) {
    std::string body =
        "default: host1.example.com\nmappings:\n"
        "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n";
    for (int m = 0; m < 7; ++m) {  // 448 backends nothing will connect to
      body += "  - external: g" + std::to_string(m) + ".example.com\n    backends:\n";
      for (int b = 0; b < 64; ++b) {
        body +=
            "      - {host: 127.0.0.1, port: " + std::to_string(first_port + m * 64 + b) + "}\n";
      }
    }
    return body;
  };
  Proxy proxy(config(20000));
  ASSERT_EQ(psql(proxy.plain(), "show cluster_name").output, "host1\n");
  proxy.rewrite(config(30000));  // 448 new backends beside the 449 registered
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    return proxy.log().find("needs 448 new backend(s), and 449 of the 512 backend slots") !=
           std::string::npos;
  })) << proxy.log();
  EXPECT_EQ(psql(proxy.plain(), "show cluster_name").output, "host1\n");
  EXPECT_EQ(proxy.log().find("backend table full"), std::string::npos);
}

std::string clientHello(const std::string& sni) {
  return testing::makeClientHello(sni, {});
}

TEST(Metrics, UnknownSniFloodDoesNotGrowTheExposition) {
  Observed o("", 2);
  std::string ssl("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8);
  auto probe = [&](const std::string& sni) {
    int fd = connectTcp(o.proxy().port());
    std::string bytes = ssl + "";
    EXPECT_EQ(write(fd, ssl.data(), 8), 8);
    char s;
    EXPECT_EQ(read(fd, &s, 1), 1);
    std::string hello = clientHello(sni);
    EXPECT_EQ(write(fd, hello.data(), hello.size()), static_cast<ssize_t>(hello.size()));
    bool closed = false;
    readUntilClose(fd, seconds(10), &closed);
    close(fd);
  };
  probe("first-unknown.example.org");
  ASSERT_TRUE(eventually([&] {
    return metric(
               o.metrics(),
               "pgproxy_connections_closed_total{mapping=\"unknown\",outcome=\"unknown_sni\"}") ==
           1;
  }));
  std::string before = o.metrics();
  std::mt19937 rng(42);
  for (int i = 1; i < 10000; ++i) {
    probe("n" + std::to_string(rng()) + ".random.example.org");
  }
  ASSERT_TRUE(eventually([&] {
    return metric(
               o.metrics(),
               "pgproxy_connections_closed_total{mapping=\"unknown\",outcome=\"unknown_sni\"}") ==
           10000;
  }));
  std::string after = o.metrics();
  EXPECT_EQ(std::count(before.begin(), before.end(), '\n'),
            std::count(after.begin(), after.end(), '\n'));
  // Only digits may differ (a counter going from 1 to 10000, accepted counts, histograms).
  EXPECT_LT(after.size() - before.size(), 200u);
  EXPECT_EQ(after.find("random.example.org"), std::string::npos);
}

TEST(Admin, HealthReadinessMethodsAndLimits) {
  Observed o;
  EXPECT_EQ(httpGet(o.admin(), "/healthz").status, 200);
  auto ready = httpGet(o.admin(), "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.body;
  EXPECT_EQ(ready.body, "{\"status\":\"ready\"}\n");
  EXPECT_EQ(httpGet(o.admin(), "/nope").status, 404);
  EXPECT_EQ(http(o.admin(), "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n").status, 405);
  EXPECT_EQ(http(o.admin(), "DELETE /readyz HTTP/1.0\r\n\r\n").status, 405);
  // Oversized headers are refused without hurting anything.
  auto huge =
      http(o.admin(), "GET /metrics HTTP/1.0\r\nX-Pad: " + std::string(20000, 'a') + "\r\n\r\n");
  EXPECT_TRUE(huge.status == 400 || huge.status == 413 || huge.status == 0) << huge.status;
  EXPECT_EQ(httpGet(o.admin(), "/healthz").status, 200);
  // A failed backend makes /readyz say which mapping and why.
  psql(o.proxy().tls("down", "require"), "select 1");
  auto notReady = httpGet(o.admin(), "/readyz");
  EXPECT_EQ(notReady.status, 503);
  EXPECT_NE(notReady.body.find("mapping down.example.com: backend 127.0.0.1:"), std::string::npos)
      << notReady.body;
  EXPECT_EQ(
      metric(o.metrics(), "pgproxy_backend_up{mapping=\"down.example.com\",backend=\"127.0.0.1:" +
                              notReady.body.substr(notReady.body.find("127.0.0.1:") + 10,
                                                   notReady.body.find(" unreachable") -
                                                       notReady.body.find("127.0.0.1:") - 10) +
                              "\"}"),
      0);
}

TEST(Admin, TokenGuardsEveryEndpoint) {
  Observed o("", 1, "s3cret-token");
  for (const char* path : {"/metrics", "/healthz", "/readyz", "/nope"}) {
    auto denied = httpGet(o.admin(), path);
    EXPECT_EQ(denied.status, 401) << path;
    EXPECT_NE(denied.headers.find("WWW-Authenticate: Bearer"), std::string::npos);
    EXPECT_EQ(httpGet(o.admin(), path, "Authorization: Bearer wrong-token!\r\n").status, 401);
  }
  auto ok = httpGet(o.admin(), "/metrics", "Authorization: Bearer s3cret-token\r\n");
  EXPECT_EQ(ok.status, 200);
  EXPECT_NE(ok.body.find("pgproxy_build_info"), std::string::npos);
}

// Access log: one line per connection, in the configured format.
std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) {
      out.push_back(line);
    }
  }
  return out;
}

TEST(AccessLog, JsonLineForEachOutcome) {
  Observed o("access_log: \"{DIR}/access.log\"\nlog_format: json\nhandshake_timeout: 1s\n", 1);
  std::string path =
      o.proxy().configPath().substr(0, o.proxy().configPath().rfind('/')) + "/access.log";
  ASSERT_EQ(psql(o.proxy().tls("host1"), "select 1").exit_code, 0);
  psql(o.proxy().tls("nope", "require"), "select 1");
  psql(o.proxy().tls("down", "require"), "select 1");
  int stalled = connectTcp(o.proxy().port());
  bool closed = false;
  readUntilClose(stalled, seconds(20), &closed);  // closed by handshake_timeout
  close(stalled);
  ASSERT_TRUE(eventually([&] { return lines(readFile(path)).size() >= 4; })) << readFile(path);
  std::string text = readFile(path);
  // A TLS psql session ends ok, or client_closed when libpq resets (see finished()).
  EXPECT_TRUE(text.find("\"outcome\":\"ok\"") != std::string::npos ||
              text.find("\"outcome\":\"client_closed\"") != std::string::npos);
  for (const char* outcome : {"unknown_sni", "backend_unreachable", "handshake_timeout"}) {
    EXPECT_NE(text.find(std::string("\"outcome\":\"") + outcome + "\""), std::string::npos)
        << outcome;
  }
  EXPECT_NE(text.find("\"sni\":\"nope.example.com\""), std::string::npos);
  EXPECT_NE(text.find("\"mode\":\"passthrough\""), std::string::npos);
  // Every line is one JSON object.
  auto check = run({"python3", "-c",
                    "import json,sys\nfor l in open(sys.argv[1]):\n  o=json.loads(l)\n"
                    "  assert {'time','client','mode','sni','mapping','backend','duration_ms',"
                    "'bytes_up','bytes_down','outcome'} <= set(o), o\n",
                    path});
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

TEST(AccessLog, TextLinesGoToTheMainLogByDefault) {
  Observed o("", 1);
  ASSERT_EQ(psql(o.proxy().tls("host2"), "select 1").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    return std::regex_search(
        o.proxy().log(),
        std::regex("access session=[0-9]+ client=127\\.0\\.0\\.1:[0-9]+ "
                   "mode=passthrough sni=\"host2\\.example\\.com\" "
                   "mapping=\"host2\\.example\\.com\" backend=\"127\\.0\\.0\\.1:[0-9]+\" "
                   "duration_ms=[0-9]+ bytes_up=[1-9][0-9]* "
                   "bytes_down=[1-9][0-9]* outcome=(ok|client_closed)"));
  })) << o.proxy().log();
}

}  // namespace
}  // namespace pgproxy::it

namespace pgproxy::it {
namespace {

TEST(ProtocolLog, LogsMessagesAndSqlButNeverThePassword) {
  ASSERT_EQ(psql(direct(sandbox().port1),
                 "drop role if exists pgproxy_pw; create role pgproxy_pw login password "
                 "'Tr0ub4dor-and-3'")
                .exit_code,
            0);
  Proxy proxy(
      "log_protocol: true\n"
      "mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n",
      1);
  std::string conninfo = "host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                         " sslmode=disable gssencmode=disable user=pgproxy_pw dbname=postgres "
                         "password=Tr0ub4dor-and-3";
  auto r = psql(conninfo, "select 42 as protocol_marker");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string log;
  ASSERT_TRUE(eventually([&] {
    log = proxy.log();
    return log.find("outcome=ok") != std::string::npos;
  })) << proxy.log();
  EXPECT_NE(log.find("protocol client->backend type=Q length="), std::string::npos) << log;
  EXPECT_NE(log.find("sql=\"select 42 as protocol_marker\\0\""), std::string::npos) << log;
  EXPECT_NE(log.find("protocol client->backend type=p length="), std::string::npos) << log;
  EXPECT_NE(log.find("protocol backend->client type=R"), std::string::npos);
  EXPECT_NE(log.find("protocol backend->client type=Z"), std::string::npos);
  EXPECT_EQ(log.find("Tr0ub4dor"), std::string::npos) << "the password reached the log";
}

// SQL that sets a password: the literal is redacted in the log (simple and extended protocol),
// while the backend gets the statement as sent.
TEST(ProtocolLog, RedactsPasswordLiteralsInSql) {
  ASSERT_EQ(psql(direct(sandbox().port1), "drop role if exists pgproxy_pw").exit_code, 0);
  Proxy proxy(
      "log_protocol: true\n"
      "mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n",
      1);
  auto r = psql(proxy.plain(),
                "CREATE ROLE pgproxy_pw LOGIN PASSWORD 'First-S3cret'; "
                "ALTER ROLE pgproxy_pw PASSWORD /* rotate */ E'Second-S3cret'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Extended protocol: the statement travels in a Parse message.
  PGconn* conn = PQconnectdb(proxy.plain().c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  PGresult* res = PQexecParams(conn, "alter user pgproxy_pw encrypted password 'Third-S3cret'", 0,
                               nullptr, nullptr, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(res), PGRES_COMMAND_OK) << PQerrorMessage(conn);
  PQclear(res);
  PQfinish(conn);
  std::string log;
  ASSERT_TRUE(eventually([&] {
    log = proxy.log();
    std::size_t first = log.find("outcome=ok");
    return first != std::string::npos && log.find("outcome=ok", first + 1) != std::string::npos;
  })) << proxy.log();
  EXPECT_EQ(log.find("S3cret"), std::string::npos) << "a password reached the log:\n" << log;
  EXPECT_NE(log.find("sql=\"CREATE ROLE pgproxy_pw LOGIN PASSWORD '***'; ALTER ROLE "
                     "pgproxy_pw PASSWORD /* rotate */ '***'\\0\""),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("type=P length="), std::string::npos) << log;
  EXPECT_NE(log.find("alter user pgproxy_pw encrypted password '***'\\0"), std::string::npos)
      << log;
  // The backend got the real statements: the last password is the one that logs in (pgproxy_pw
  // has password authentication in the sandbox's pg_hba.conf).
  auto as = [&](const std::string& password) {
    return psql("host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                    " sslmode=disable gssencmode=disable user=pgproxy_pw dbname=postgres "
                    "password=" +
                    password,
                "select current_user");
  };
  EXPECT_EQ(as("Third-S3cret").output, "pgproxy_pw\n");
  EXPECT_NE(as("Second-S3cret").exit_code, 0);
}

}  // namespace
}  // namespace pgproxy::it
