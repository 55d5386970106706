// The audit log against real clusters and clients: every event kind with its fields, statements
// with their secrets redacted, lines that are whole JSON whatever happens (a worker killed under
// load, a full disk), the drop counter, audit.fail: closed, syslog, and -s reopen.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "pgproxy/audit/audit.h"

namespace pgproxy::it {
namespace {

using std::chrono::seconds;
using Event = std::map<std::string, std::string>;

std::string sb(const std::string& file) {
  return sandbox().dir + "/" + file;
}

// Each line of the audit file read by a real JSON reader: its fields (values as text; true/false
// and numbers as Python prints them). A line that is not a whole JSON object is a test failure.
const char* kReader = R"PY(
import json, sys
data = open(sys.argv[1], "rb").read()
for n, raw in enumerate(data.split(b"\n")):
    if not raw:
        continue
    try:
        obj = json.loads(raw.decode("utf-8"))
        assert isinstance(obj, dict)
    except Exception as e:
        print("!invalid\x1f%d: %r" % (n, raw[:200]))
        print("\x1e")
        continue
    for k, v in obj.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        print("%s\x1f%s" % (k, str(v).replace("\n", "\\n")))
    print("\x1e")
if data and not data.endswith(b"\n"):
    print("!invalid\x1funterminated last line")
    print("\x1e")
)PY";

std::vector<Event> readAudit(const std::string& path) {
  auto r = run({"python3", "-c", kReader, path}, seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<Event> out;
  Event cur;
  std::size_t at = 0;
  while (at < r.output.size()) {
    std::size_t nl = r.output.find('\n', at);
    std::string line = r.output.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? r.output.size() : nl + 1;
    if (line == "\x1e") {
      out.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    std::size_t sep = line.find('\x1f');
    if (sep != std::string::npos) {
      cur[line.substr(0, sep)] = line.substr(sep + 1);
    }
  }
  for (const Event& e : out) {
    EXPECT_EQ(e.count("!invalid"), 0u) << "not a whole JSON line: " << e.at("!invalid");
  }
  return out;
}

// The events of `kind` (and, when given, whose `key` is `value`).
std::vector<Event> eventsOf(const std::vector<Event>& all, const std::string& kind,
                            const std::string& key = "", const std::string& value = "") {
  std::vector<Event> out;
  for (const Event& e : all) {
    auto k = e.find("event");
    if (k == e.end() || k->second != kind) {
      continue;
    }
    if (!key.empty()) {
      auto f = e.find(key);
      if (f == e.end() || f->second != value) {
        continue;
      }
    }
    out.push_back(e);
  }
  return out;
}

std::string field(const Event& e, const std::string& key) {
  auto f = e.find(key);
  return f == e.end() ? "<absent>" : f->second;
}

std::string dump(const std::vector<Event>& all) {
  std::string out;
  for (const Event& e : all) {
    for (const auto& [k, v] : e) {
      out += k + "=" + v + " ";
    }
    out += "\n";
  }
  return out;
}

// The pool tests' role, with a database of this file's own.
const std::string& auditDb() {
  static const std::string users = [] {
    const std::string& file = poolRoleDatabase("auditdb");
    return file;
  }();
  return users;
}

// A plaintext default mapping with the audit log in `log` and these audit keys.
std::string plainWithAudit(const std::string& log, const std::string& options) {
  return "audit: {file: " + log + (options.empty() ? "" : ", " + options) +
         "}\n"
         "default: plain.example.com\n"
         "mappings:\n"
         "  - {external: plain.example.com, internal: 127.0.0.1, port: {P1}}\n";
}

std::string poolConninfo(const Proxy& proxy, const std::string& password = "scram-pw") {
  return "host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
         " sslmode=verify-full sslrootcert=" + sb("proxy-ca.crt") +
         " dbname=auditdb user=pgproxy_pool password=" + password +
         " connect_timeout=20 gssencmode=disable";
}

TEST(Audit, EveryEventKindAppearsWithItsFields) {
  std::string dir = tempDir("pgproxy-audit");
  std::string log = dir + "/audit.log";
  int admin = freePort();
  writeFile(dir + "/token", "audit-t0ken\n");
  Proxy proxy("audit: {file: " + log +
              ", statements: write}\n"
              "admin: {listen: \"127.0.0.1:" +
              std::to_string(admin) + "\", token_file: " + dir +
              "/token}\n"
              "auth: {type: scram-sha-256, file: " +
              auditDb() +
              "}\n"
              "default: plain.example.com\n"
              "mappings:\n"
              "  - {external: plain.example.com, internal: 127.0.0.1, port: {P1}}\n"
              "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}\n"
              "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}, tls: terminate,"
              " certificate: " +
              sb("proxy-host1.crt") + ", key: " + sb("proxy-host1.key") +
              ", backend_tls: disable, pool: {mode: transaction, size: 2}}\n");
  // Plaintext, spliced: statements of the write class (one Query each), a password never
  // written as sent.
  auto r =
      run({"psql", "-X", "-q", "-c", "create table if not exists audit_t(v text)", "-c",
           "insert into audit_t values ('visible literal')", "-c", "select count(*) from audit_t",
           "-c", "drop role if exists audit_someone; create role audit_someone", "-c",
           "alter role audit_someone password 'secret-pw'", proxy.plain()},
          seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // A 9000-byte user name (PostgreSQL refuses it): its events are cut to fit, never dropped.
  r = psql(proxy.plain() + " user=" + std::string(9000, 'u'), "select 1");
  EXPECT_NE(r.exit_code, 0);
  // TLS passthrough.
  r = psql(proxy.tls("host2"), "select 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Terminated and pooled, pgproxy authenticates: extended protocol too.
  {
    Conn c(poolConninfo(proxy));
    EXPECT_EQ(c.cmd("create table if not exists audit_p(v text)"), "CREATE TABLE");
    EXPECT_EQ(c.prepare("ins", "insert into audit_p values ($1)"), "PGRES_COMMAND_OK");
    EXPECT_EQ(c.exec("ins", {"bound value"}), "PGRES_COMMAND_OK");
    EXPECT_EQ(c.one("select 42"), "42");
  }
  // A wrong password, and an unknown server name.
  r = psql(poolConninfo(proxy, "wrong"), "select 1");
  EXPECT_NE(r.exit_code, 0);
  r = psql("host=nosuch.example.org hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
               " sslmode=require user=postgres dbname=postgres connect_timeout=20",
           "select 1");
  EXPECT_NE(r.exit_code, 0);
  // Admin actions: the REST API, and a signal.
  auto api = http(admin,
                  "POST /api/v1/mappings/host2.example.com/disable HTTP/1.0\r\n"
                  "Authorization: Bearer audit-t0ken\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(api.status, 200) << api.body;
  EXPECT_EQ(proxy.signal("reopen").exit_code, 0);

  std::vector<Event> all;
  ASSERT_TRUE(eventually([&] {
    all = readAudit(log);
    return eventsOf(all, "admin", "action", "reopen").size() == 1 &&
           eventsOf(all, "disconnect").size() >= 4;
  })) << dump(all);

  // connect: every mode, with TLS details where pgproxy has them.
  auto plain = eventsOf(all, "connect", "mapping", "plain.example.com");
  ASSERT_GE(plain.size(), 1u) << dump(all);
  EXPECT_EQ(field(plain[0], "tls"), "none");
  EXPECT_EQ(field(plain[0], "mode"), "plaintext");
  EXPECT_EQ(field(plain[0], "user"), "postgres");
  EXPECT_EQ(field(plain[0], "database"), "postgres");
  EXPECT_EQ(field(plain[0], "client").rfind("127.0.0.1:", 0), 0u) << field(plain[0], "client");
  EXPECT_NE(field(plain[0], "time"), "<absent>");
  auto longUser = eventsOf(all, "connect", "user", std::string(audit::kMaxField, 'u'));
  ASSERT_EQ(longUser.size(), 1u) << dump(all);
  EXPECT_EQ(field(longUser[0], "truncated"), "true");
  auto pass = eventsOf(all, "connect", "mapping", "host2.example.com");
  ASSERT_EQ(pass.size(), 1u) << dump(all);
  EXPECT_EQ(field(pass[0], "tls"), "passthrough");
  EXPECT_EQ(field(pass[0], "sni"), "host2.example.com");
  auto term = eventsOf(all, "connect", "mapping", "host1.example.com");
  ASSERT_EQ(term.size(), 2u) << dump(all);
  EXPECT_EQ(field(term[0], "tls"), "terminated");
  EXPECT_EQ(field(term[0], "tls_version").rfind("TLSv1.", 0), 0u) << dump(term);
  EXPECT_NE(field(term[0], "tls_cipher"), "<absent>");

  // auth: where pgproxy authenticates, both results.
  auto ok = eventsOf(all, "auth", "result", "ok");
  ASSERT_EQ(ok.size(), 1u) << dump(all);
  EXPECT_EQ(field(ok[0], "user"), "pgproxy_pool");
  EXPECT_EQ(field(ok[0], "database"), "auditdb");
  EXPECT_EQ(field(ok[0], "method"), "scram-sha-256");
  auto failed = eventsOf(all, "auth", "result", "failed");
  ASSERT_EQ(failed.size(), 1u) << dump(all);
  EXPECT_EQ(field(failed[0], "user"), "pgproxy_pool");

  // route: the backend and why.
  auto routes = eventsOf(all, "route", "mapping", "host2.example.com");
  ASSERT_EQ(routes.size(), 1u) << dump(all);
  EXPECT_EQ(field(routes[0], "backend"), "127.0.0.1:" + std::to_string(sandbox().port2));
  EXPECT_NE(field(routes[0], "reason").find("server name"), std::string::npos);
  auto pooled = eventsOf(all, "route", "mapping", "host1.example.com");
  ASSERT_EQ(pooled.size(), 1u) << dump(all);
  EXPECT_NE(field(pooled[0], "reason").find("pool of database \"auditdb\""), std::string::npos)
      << field(pooled[0], "reason");

  // refuse: the reason and the TLS alert a passthrough listener answers with.
  auto refused = eventsOf(all, "refuse", "sni", "nosuch.example.org");
  ASSERT_EQ(refused.size(), 1u) << dump(all);
  EXPECT_EQ(field(refused[0], "outcome"), "unknown_sni");
  EXPECT_EQ(field(refused[0], "tls_alert"), "112");

  // disconnect: duration, bytes, outcome.
  auto gone = eventsOf(all, "disconnect", "mapping", "host2.example.com");
  ASSERT_EQ(gone.size(), 1u) << dump(all);
  EXPECT_EQ(field(gone[0], "outcome"), "ok");
  EXPECT_GT(std::stoll(field(gone[0], "bytes_up")), 0);
  EXPECT_GT(std::stoll(field(gone[0], "bytes_down")), 0);
  EXPECT_NE(field(gone[0], "duration_ms"), "<absent>");
  auto authGone = eventsOf(all, "disconnect", "outcome", "auth_failed");
  EXPECT_EQ(authGone.size(), 1u) << dump(all);

  // statements (write): DDL and writes of both protocols, no reads, no password.
  auto stmts = eventsOf(all, "statement");
  std::string text;
  for (const Event& e : stmts) {
    text += field(e, "class") + ":" + field(e, "protocol") + ":" + field(e, "sql") + "\n";
  }
  EXPECT_NE(text.find("ddl:simple:create table if not exists audit_t(v text)"), std::string::npos)
      << text;
  EXPECT_NE(text.find("write:simple:insert into audit_t values ('visible literal')"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ddl:simple:alter role audit_someone password '***'"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("secret-pw"), std::string::npos) << text;
  EXPECT_EQ(text.find("select"), std::string::npos) << "reads are not in class write: " << text;
  EXPECT_NE(text.find("ddl:simple:create table if not exists audit_p(v text)"), std::string::npos)
      << text;
  EXPECT_NE(text.find("write:extended:insert into audit_p values ($1)"), std::string::npos) << text;
  auto ext = eventsOf(all, "statement", "protocol", "extended");
  ASSERT_GE(ext.size(), 1u);
  EXPECT_EQ(field(ext[0], "statement_name"), "ins");
  EXPECT_EQ(field(ext[0], "user"), "pgproxy_pool");

  // admin: the API's action (who, what, result) and the signal (which, from whom).
  auto disable = eventsOf(all, "admin", "command", "DISABLE host2.example.com");
  ASSERT_EQ(disable.size(), 1u) << dump(all);
  EXPECT_EQ(field(disable[0], "result"), "ok");
  EXPECT_NE(field(disable[0], "by").find("REST API from 127.0.0.1"), std::string::npos);
  auto reopen = eventsOf(all, "admin", "action", "reopen");
  EXPECT_EQ(field(reopen[0], "via"), "signal");
  EXPECT_EQ(field(reopen[0], "signal"), "USR1");
  EXPECT_NE(field(reopen[0], "sender_pid"), "<absent>");
  std::string metrics = httpGet(admin, "/metrics", "Authorization: Bearer audit-t0ken\r\n").body;
  EXPECT_EQ(metricValue(metrics, "pgproxy_audit_dropped_total"), 0) << metrics;
  EXPECT_GE(metricValue(metrics, "pgproxy_audit_events_total"), static_cast<long long>(all.size()));
  EXPECT_EQ(metricValue(metrics, "pgproxy_audit_failing"), 0);
  queryHost1("drop table if exists audit_t");
  queryHost1("drop role if exists audit_someone");
  run({"rm", "-rf", dir});
}

// redact: literals keeps no value of any statement; -s reopen moves to a new file (rotation).
TEST(Audit, LiteralsAreRedactedAndReopenStartsANewFile) {
  std::string dir = tempDir("pgproxy-audit-lit");
  std::string log = dir + "/audit.log";
  Proxy proxy(plainWithAudit(log, "statements: all, redact: literals"));
  auto r = psql(proxy.plain(), "select 'secret-value', 12345, E'a\\'b', $q$dollar$q$");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<Event> all;
  ASSERT_TRUE(eventually([&] {
    all = readAudit(log);
    return eventsOf(all, "disconnect").size() == 1;
  })) << dump(all);
  auto stmts = eventsOf(all, "statement");
  ASSERT_EQ(stmts.size(), 1u) << dump(all);
  EXPECT_EQ(field(stmts[0], "sql"), "select ?, ?, ?, ?");
  EXPECT_EQ(field(stmts[0], "class"), "read");

  ASSERT_EQ(rename(log.c_str(), (log + ".1").c_str()), 0);
  ASSERT_EQ(proxy.signal("reopen").exit_code, 0);
  // The reopen's own event is the first line of the new file: the writer has switched.
  ASSERT_TRUE(eventually([&] { return readFile(log).find("\"reopen\"") != std::string::npos; }))
      << readFile(log);
  r = psql(proxy.plain(), "select 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(eventually([&] { return eventsOf(readAudit(log), "disconnect").size() == 1; }))
      << readFile(log);
  EXPECT_EQ(eventsOf(readAudit(log + ".1"), "disconnect").size(), 1u);
  // A reload whose audit file cannot be opened is refused; events stay where they were going.
  proxy.rewrite(plainWithAudit(dir + "/no/such/dir/audit.log", "statements: all"));
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("cannot open audit log \"" + dir + "/no/such/dir/audit.log\"") !=
           std::string::npos;
  })) << proxy.log();
  r = psql(proxy.plain(), "select 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(eventually([&] {
    return eventsOf(readAudit(log), "statement", "sql", "select ?").size() == 2;
  })) << readFile(log);
  run({"rm", "-rf", dir});
}

// Events go to syslog as RFC 3164 datagrams with the configured facility.
TEST(Audit, SyslogGetsOneDatagramPerEvent) {
  std::string dir = tempDir("pgproxy-audit-syslog");
  std::string path = dir + "/log.sock";
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  timeval tv{20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  Proxy proxy("audit: {syslog: local3, syslog_socket: " + path +
              "}\n"
              "default: plain.example.com\n"
              "mappings:\n"
              "  - {external: plain.example.com, internal: 127.0.0.1, port: {P1}}\n");
  auto r = psql(proxy.plain(), "select 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string got;
  while (got.find("\"disconnect\"") == std::string::npos) {
    char buf[9000];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    ASSERT_GT(n, 0) << "no datagram; so far: " << got;
    std::string one(buf, static_cast<std::size_t>(n));
    // local3 (19) * 8 + info (6)
    EXPECT_EQ(one.rfind("<158>", 0), 0u) << one;
    EXPECT_NE(one.find(" pgproxy-audit["), std::string::npos) << one;
    EXPECT_EQ(one.back(), '}') << one;
    got += one + "\n";
  }
  EXPECT_NE(got.find("\"event\":\"connect\""), std::string::npos) << got;
  close(fd);
  // No syslog daemon (its socket gone): sessions go on, the events are lost and the log says why.
  run({"rm", "-f", path});
  r = psql(proxy.plain(), "select 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("event(s) lost in the last seconds: syslog socket \"" + path) !=
           std::string::npos;
  })) << proxy.log();
  run({"rm", "-rf", dir});
}

// A worker killed while many sessions write statements leaves no torn line: each event is one
// datagram to the single writer.
TEST(Audit, AKilledWorkerLeavesNoTornLine) {
  std::string dir = tempDir("pgproxy-audit-kill");
  std::string log = dir + "/audit.log";
  Proxy proxy(plainWithAudit(log, "statements: all"), 2);
  writeFile(dir + "/select.sql", "select 1;\n");
  std::thread load([&] {
    run({"pgbench", "-n", "-f", dir + "/select.sql", "-c", "8", "-T", "6", proxy.plain()},
        seconds(60));
  });
  ASSERT_TRUE(eventually([&] { return readFile(log).size() > 200'000; })) << readFile(log).size();
  auto workers = childrenOf(proxy.pid());
  ASSERT_FALSE(workers.empty());
  for (pid_t w : workers) {
    kill(w, SIGKILL);  // the health checker too, if it is one: all children are respawned
  }
  load.join();
  auto all = readAudit(log);  // fails on any line that is not whole JSON
  EXPECT_GT(eventsOf(all, "statement").size(), 1000u);
  run({"rm", "-rf", dir});
}

// A full disk: events are lost whole (never half a line), counted, reported in the log; with
// fail: closed new sessions are refused (58030) until the disk has room again.
TEST(Audit, AFullDiskLosesWholeEventsAndFailClosedRefusesSessions) {
  std::string dir = tempDir("pgproxy-audit-full");
  std::string mnt = dir + "/mnt";
  ASSERT_EQ(run({"mkdir", "-p", mnt}).exit_code, 0);
  auto m = run({"mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt});
  ASSERT_EQ(m.exit_code, 0) << "mount (the test runs as root): " << m.output;
  std::string log = mnt + "/audit.log";
  int admin = freePort();
  Proxy proxy("admin: {listen: \"127.0.0.1:" + std::to_string(admin) + "\"}\n" +
              plainWithAudit(log, "statements: all, fail: closed"));
  // Fill the disk but for a little room.
  run({"sh", "-c", "dd if=/dev/zero of=" + mnt + "/filler bs=1k count=60 2>/dev/null; true"});
  // Sessions go on while their events fit, then one is refused: its events could not be written.
  std::string refusal;
  bool refused = eventually([&] {
    auto r = psql(proxy.plain(),
                  "select 'a statement long enough to fill the disk quickly, "
                  "padding padding padding padding padding padding'");
    if (r.exit_code != 0) {
      refusal = r.output;
      return true;
    }
    return false;
  });
  ASSERT_TRUE(refused);
  EXPECT_NE(refusal.find("cannot write its audit log"), std::string::npos) << refusal;
  EXPECT_GT(scrapeMetric(admin, "pgproxy_audit_dropped_total"), 0);
  EXPECT_EQ(scrapeMetric(admin, "pgproxy_audit_failing"), 1);
  auto r = psql(proxy.plain(), "select 1");
  EXPECT_NE(r.exit_code, 0) << "still refused while the disk is full";
  // Every line on the full disk is whole.
  auto all = readAudit(log);
  EXPECT_GT(all.size(), 0u);
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("audit: ") != std::string::npos &&
           proxy.log().find("event(s) lost") != std::string::npos;
  })) << proxy.log();

  // Room again: the next event written (a refusal's, or a new session's connect) lets sessions
  // in, and theirs are written whole after the lines cut back to the last whole one.
  run({"rm", "-f", mnt + "/filler"});
  EXPECT_TRUE(eventually([&] { return psql(proxy.plain(), "select 2").exit_code == 0; }));
  EXPECT_EQ(scrapeMetric(admin, "pgproxy_audit_failing"), 0);
  std::vector<Event> after;
  EXPECT_TRUE(eventually([&] {
    after = readAudit(log);
    return eventsOf(after, "statement", "sql", "select 2").size() == 1;
  })) << dump(after);
  proxy.stop();
  run({"umount", mnt});
  run({"rm", "-rf", dir});
}

}  // namespace
}  // namespace pgproxy::it
