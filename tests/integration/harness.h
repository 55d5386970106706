#pragma once

// Integration-test harness: real PostgreSQL clusters (tests/integration/pg_sandbox.sh), pgproxy
// started as a subprocess on free ports, and helpers to drive both with libpq, psql, pgbench and
// raw sockets.

#include <sys/types.h>

#include <libpq-fe.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace pgproxy::it {

struct Sandbox {
  std::string dir;  // holds ca.crt, the clusters and their logs
  int port1 = 0;    // host1's PostgreSQL
  int port2 = 0;    // host2's PostgreSQL
  std::string ca() const { return dir + "/ca.crt"; }
};
// The clusters shared by every test in the binary (started once by the gtest environment).
const Sandbox& sandbox();
// Runs tests/integration/pg_sandbox.sh COMMAND on the shared sandbox's directory (extra clusters
// for a test: primary, standby, promote, stop-one).
struct CommandResult;
CommandResult sandboxCommand(const std::string& command, const std::vector<std::string>& args);

// A loopback port no one else gets while this binary runs (kept bound, not listening; the
// process under test listens on it with SO_REUSEADDR).
int freePort();
std::string tempDir(const std::string& prefix);
std::string readFile(const std::string& path);
void writeFile(const std::string& path, const std::string& text);
// Debian's python3, which has python3-psycopg and python3-asyncpg (scripts/install-deps.sh); a
// python3 earlier on PATH (pyenv, a virtualenv) may not.
extern const std::vector<std::string> kPython;
// Runs a client program written to a temporary file as `file_name`, with `args` after the file;
// it must exit 0 and print "ok" on a line of its own when every check it made passed (else the
// test fails, with the program's output and the proxy's log).
void runClient(const std::vector<std::string>& argv_prefix, const std::string& file_name,
               const std::string& program, const std::vector<std::string>& args,
               const class Proxy& proxy);

struct CommandResult {
  int exit_code = -1;  // -1: killed by the timeout or a signal
  std::string output;  // stdout and stderr together
};
CommandResult run(const std::vector<std::string>& argv,
                  std::chrono::seconds timeout = std::chrono::seconds(120));

// A pgproxy process with its own config file, pid file and log.
class Proxy {
 public:
  // `body` is YAML appended after the listen block; "{P1}"/"{P2}" become the clusters' ports and
  // "{DEAD}" a port where nothing listens. A body that names "{PORT}" has its own listen block
  // (several entries), with the proxy's port() as "{PORT}".
  // `binary` overrides $PGPROXY_BIN (the upgrade tests run a copy they can replace).
  // `port` 0: a free port.
  explicit Proxy(const std::string& body, int workers = 2, const std::string& binary = "",
                 int port = 0);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& configPath() const { return config_; }
  const std::string& pidFile() const { return pid_file_; }
  std::string log() const { return readFile(log_); }
  // Waits (bounded) for the master to exit; returns its wait status or -1.
  int waitExit(std::chrono::seconds timeout);
  void stop();
  // Replaces the config file's body (same listen block, workers and pid file).
  void rewrite(const std::string& body, int workers = 2);
  // Runs `pgproxy -s NAME -c CONFIG`.
  CommandResult signal(const std::string& name) const;
  // The pid the pid file names now (the master may have been replaced by an upgrade), or -1.
  pid_t pidFromFile() const;

  // conninfo for a TLS connection to `host` (host1/host2/other...) through this proxy.
  std::string tls(const std::string& host, const std::string& sslmode = "verify-full") const;
  std::string plain() const;

 private:
  std::string render(const std::string& body, int workers) const;
  std::string dir_, config_, pid_file_, log_, binary_;
  int port_ = 0;
  pid_t pid_ = -1;
};

std::string proxyBinary();
// The source tree ($PGPROXY_SRCDIR, else ..): example files the tests run.
std::string srcdir();

// Direct conninfo to a cluster, bypassing pgproxy.
std::string direct(int port);
// A file of the shared sandbox (certificates, keys).
std::string sandboxFile(const std::string& name);
// Runs `sql` on host1's cluster as its superuser; the output without trailing newlines (a
// failure is a test failure).
std::string queryHost1(const std::string& sql);

// pgproxy_pool, the pool tests' role on host1's cluster (a scram-sha-256 hba line in
// pg_sandbox.sh), created once per binary by whichever test needs it first; never dropped, so
// that each pool test file can own a database of its own and run in any order. Returns the path
// of an auth file holding the SCRAM verifier PostgreSQL stores: pgproxy logs in to the backend
// with the client's proof alone.
const std::string& poolRoleAuthFile();
// A database owned by pgproxy_pool, dropped and created once per binary (a pool test file's own);
// returns poolRoleAuthFile().
const std::string& poolRoleDatabase(const std::string& name);

// A libpq connection for tests that keep one open: one(sql) runs it (simple protocol) and gives
// its first row ("|"-joined) or "ERROR:<sqlstate>".
struct Conn {
  explicit Conn(const std::string& conninfo) : c(PQconnectdb(conninfo.c_str())) {
    EXPECT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  }
  ~Conn() { PQfinish(c); }
  // Runs `sql` (simple protocol); its first value, or "ERROR:<sqlstate>".
  std::string one(const std::string& sql) { return outcome(PQexec(c, sql.c_str())); }
  // The same, but a command gives its tag ("SET", "INSERT 0 2") rather than its status.
  std::string cmd(const std::string& sql) { return outcome(PQexec(c, sql.c_str()), true); }
  std::string exec(const std::string& name, std::vector<std::string> args) {
    std::vector<const char*> values;
    for (const auto& a : args) {
      values.push_back(a.c_str());
    }
    return outcome(PQexecPrepared(c, name.c_str(), static_cast<int>(values.size()), values.data(),
                                  nullptr, nullptr, 0));
  }
  std::string prepare(const std::string& name, const std::string& sql) {
    return outcome(PQprepare(c, name.c_str(), sql.c_str(), 0, nullptr));
  }
  static std::string outcome(PGresult* r, bool tag = false) {
    std::string out;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_FATAL_ERROR) {
      const char* code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      out = std::string("ERROR:") + (code ? code : "?");
    } else if (st == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      out = PQgetvalue(r, 0, 0);
      for (int f = 1; f < PQnfields(r); ++f) {
        out += std::string("|") + PQgetvalue(r, 0, f);
      }
    } else {
      out = tag && st == PGRES_COMMAND_OK ? PQcmdStatus(r) : PQresStatus(st);
    }
    PQclear(r);
    return out;
  }
  PGconn* c;
};

// psql -X -A -t -c SQL; returns exit code and output.
CommandResult psql(const std::string& conninfo, const std::string& sql);

// Raw TCP to 127.0.0.1:port, from `source` (a 127.0.0.0/8 address) when given. Returns the fd
// (or -1).
int connectTcp(int port, const char* source = nullptr);
// A listening socket on 127.0.0.1 and a port the kernel picked (for test servers that stand in
// for a hostile peer); -1 on failure.
int listenLoopback(int* port);
// A logged-in plaintext session (user postgres, trust) on a new connection to `port` from
// `source` (default 127.0.0.1), `preamble` (a PROXY header) sent first; held open: its fd, or -1
// when refused, with what came back in `answer`.
int loginSession(int port, std::string* answer, const char* source = nullptr,
                 const std::string& preamble = "");
// Reads until ReadyForQuery 'I' (a login went through; true) or until the connection ends or
// `timeout` passes (false); `got` has what came.
bool readUntilReady(int fd, std::string* got,
                    std::chrono::milliseconds timeout = std::chrono::seconds(15));
// Reads until EOF or `timeout`; `closed` tells which ended it.
std::string readUntilClose(int fd, std::chrono::milliseconds timeout, bool* closed);
// StartupMessage bytes for protocol 3.0 with the given parameters.
std::string startupPacket(const std::vector<std::pair<std::string, std::string>>& params,
                          unsigned version = 3u << 16);
// PostgreSQL 17 direct TLS: the first byte is a TLS record, with ALPN "postgresql". libpq 15
// cannot send it, so the tests speak it with OpenSSL and the wire protocol by hand.
struct DirectTlsResult {
  bool handshake_ok = false;
  std::string cluster;  // from SHOW cluster_name
  std::string error;
};
// Handshake (verifying against `ca`, default the backends' test CA), log in as postgres and
// SHOW cluster_name.
DirectTlsResult directTls(int port, const std::string& sni, bool with_alpn,
                          const std::string& ca = "");
// Runs select pg_sleep(30) on a session (to host1's cluster) made with `conninfo`, cancels it
// the way psql's Ctrl-C does (PQcancel: a CancelRequest on a new, unencrypted connection), and
// expects SQLSTATE 57014.
void expectCancelWorks(const std::string& conninfo);
// The SQLSTATE ('C' field) of the first ErrorResponse in `bytes`, or "".
std::string sqlstateOf(const std::string& bytes);

}  // namespace pgproxy::it

namespace pgproxy::it {

// While it lives, processes started by the test (pgproxy) run with `option` added to
// ASAN_OPTIONS; in normal builds the variable is ignored. For memory measurements: ASan's
// quarantine keeps freed memory resident on purpose, which is not what a test measures.
class ScopedAsanOption {
 public:
  explicit ScopedAsanOption(const std::string& option);
  ~ScopedAsanOption();

 private:
  bool had_ = false;
  std::string saved_;
};

// Pids of the processes whose parent is `parent` (the master's workers).
std::vector<pid_t> childrenOf(pid_t parent);
// RSS (KiB) and open descriptors of a pgproxy's master and workers together.
long proxyRss(const Proxy& proxy);
int proxyFds(const Proxy& proxy);
// Resident set size in KiB of `pid` (from /proc), 0 if it is gone.
long rssKib(pid_t pid);
// Open file descriptors of `pid`.
int fdCount(pid_t pid);

}  // namespace pgproxy::it

namespace pgproxy::it {

struct HttpResponse {
  int status = 0;  // 0: no response
  std::string headers;
  std::string body;
};
// Sends `request` (a whole raw HTTP request) to 127.0.0.1:port and reads the response.
HttpResponse http(int port, const std::string& request);
HttpResponse httpGet(int port, const std::string& path, const std::string& extra_headers = "");
// The value of one series (name and labels as exposed, "pgproxy_x{a=\"b\"}") in a Prometheus
// text, or scraped from an admin listener's /metrics; -1 when it is absent.
long long metricValue(const std::string& text, const std::string& series);
long long scrapeMetric(int admin_port, const std::string& series);

}  // namespace pgproxy::it

namespace pgproxy::it {

// Polls `cond` every 20 ms for up to `limit`; returns whether it became true. Waiting for a state,
// never timing one: the limit is only how long a failing test takes to say so.
template <typename Cond>
bool eventually(Cond cond, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

}  // namespace pgproxy::it
