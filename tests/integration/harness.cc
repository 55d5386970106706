#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <thread>

namespace pgproxy::it {
namespace {

std::string env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string proxyBin() {
  return env("PGPROXY_BIN", "./pgproxy");
}

// One port where nothing listens, for "backend down" mappings.
int deadPort() {
  static int port = freePort();
  return port;
}

Sandbox* g_sandbox = nullptr;

class SandboxEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    auto* s = new Sandbox();
    s->dir = tempDir("pgproxy-it");
    s->port1 = freePort();
    s->port2 = freePort();
    auto r = run({srcdir() + "/tests/integration/pg_sandbox.sh", "start", s->dir,
                  std::to_string(s->port1), std::to_string(s->port2)},
                 std::chrono::seconds(180));
    // No skipping: a test that needs PostgreSQL fails when PostgreSQL can't start.
    ASSERT_EQ(r.exit_code, 0) << "could not start the PostgreSQL sandbox:\n" << r.output;
    g_sandbox = s;
  }
  void TearDown() override {
    if (g_sandbox) {
      run({srcdir() + "/tests/integration/pg_sandbox.sh", "stop", g_sandbox->dir});
      run({"rm", "-rf", g_sandbox->dir});
    }
  }
};

const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SandboxEnvironment());

std::string replaceAll(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

}  // namespace

std::string srcdir() {
  return env("PGPROXY_SRCDIR", "..");
}

const Sandbox& sandbox() {
  if (!g_sandbox) {
    ADD_FAILURE() << "PostgreSQL sandbox is not running";
    static Sandbox empty;
    return empty;
  }
  return *g_sandbox;
}

// The port stays reserved for the life of the test binary: its socket is kept bound (never
// listening) with SO_REUSEADDR. Closing it, as a probe for a free port would, lets another test
// binary running in parallel, or any outgoing connection's ephemeral port, take the port before
// the process under test binds it. Bound, the kernel hands it to neither; pgproxy and PostgreSQL
// set SO_REUSEADDR themselves, which Linux lets listen beside a bound socket that does not.
int freePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    ADD_FAILURE() << "freePort: " << std::strerror(errno);
    return 0;
  }
  return ntohs(sa.sin_port);  // fd deliberately left open
}

std::string tempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  char* made = mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr);
  chmod(tmpl.c_str(), 0755);
  return tmpl;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void writeFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

const std::vector<std::string> kPython = {"/usr/bin/python3"};

void runClient(const std::vector<std::string>& argv_prefix, const std::string& file_name,
               const std::string& program, const std::vector<std::string>& args,
               const Proxy& proxy) {
  std::string dir = tempDir("pgproxy-client");
  writeFile(dir + "/" + file_name, program);
  std::vector<std::string> argv = argv_prefix;
  argv.push_back(dir + "/" + file_name);
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run(argv, std::chrono::seconds(240));
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n---- pgproxy log ----\n" << proxy.log();
  EXPECT_NE(("\n" + r.output).find("\nok\n"), std::string::npos) << r.output;
  run({"rm", "-rf", dir});
}

CommandResult run(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
  int pipefd[2];
  if (pipe(pipefd) != 0) {
    return {};
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 1);
    dup2(pipefd[1], 2);
    close(pipefd[0]);
    close(pipefd[1]);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    std::vector<char*> args;
    for (const auto& a : argv) {
      args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(pipefd[1]);
  CommandResult result;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      result.output += "\n[harness: killed after timeout]\n";
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 1000))) <= 0) {
      continue;
    }
    ssize_t n = read(pipefd[0], buf, sizeof(buf));
    if (n <= 0) {
      break;
    }
    // Keep output bounded: a runaway command must not eat the test's memory.
    if (result.output.size() < (8 << 20)) {
      result.output.append(buf, static_cast<std::size_t>(n));
    }
  }
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string proxyBinary() {
  return proxyBin();
}

std::string Proxy::render(const std::string& body, int workers) const {
  const Sandbox& s = sandbox();
  // A body with "{PORT}" writes its own listen block (more than one entry), on that port first.
  std::string listen =
      body.find("{PORT}") != std::string::npos
          ? ""
          : "listen:\n  address: 127.0.0.1\n  port: " + std::to_string(port_) + "\n";
  // PGPROXY_TEST_SPLICE=user|kernel|auto: the splice every test runs with (CI runs the
  // passthrough suites in both kernel and user mode), unless the test sets its own.
  std::string splice;
  if (const char* mode = getenv("PGPROXY_TEST_SPLICE");
      mode && *mode && body.find("\nsplice:") == std::string::npos &&
      body.rfind("splice:", 0) != 0) {
    splice = std::string("splice: ") + mode + "\n";
  }
  std::string yaml = listen + "workers: " + std::to_string(workers) + "\npid_file: " + pid_file_ +
                     "\n" + splice + replaceAll(body, "{PORT}", std::to_string(port_));
  yaml = replaceAll(yaml, "{P1}", std::to_string(s.port1));
  yaml = replaceAll(yaml, "{P2}", std::to_string(s.port2));
  yaml = replaceAll(yaml, "{DEAD}", std::to_string(deadPort()));
  yaml = replaceAll(yaml, "{DIR}", dir_);
  return yaml;
}

void Proxy::rewrite(const std::string& body, int workers) {
  // Write then rename, so a reload never reads a half-written file.
  writeFile(config_ + ".new", render(body, workers));
  rename((config_ + ".new").c_str(), config_.c_str());
}

CommandResult Proxy::signal(const std::string& name) const {
  return run({binary_, "-s", name, "-c", config_});
}

pid_t Proxy::pidFromFile() const {
  std::string text = readFile(pid_file_);
  return text.empty() ? -1 : static_cast<pid_t>(std::stol(text));
}

Proxy::Proxy(const std::string& body, int workers, const std::string& binary, int port) {
  dir_ = tempDir("pgproxy-proxy");
  config_ = dir_ + "/pgproxy.yaml";
  pid_file_ = dir_ + "/pgproxy.pid";
  log_ = dir_ + "/pgproxy.log";
  binary_ = binary.empty() ? proxyBin() : binary;
  port_ = port ? port : freePort();
  writeFile(config_, render(body, workers));
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(binary_.c_str(), binary_.c_str(), "-c", config_.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Ready when the port accepts (the master binds before forking workers; the backlog holds
  // connections until a worker accepts them).
  for (int i = 0; i < 200; ++i) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      ADD_FAILURE() << "pgproxy exited while starting (wait status " << status << "):\n" << log();
      return;
    }
    // The port is reserved for this binary (freePort), so what accepts here is this pgproxy.
    int fd = connectTcp(port_);
    if (fd >= 0) {
      close(fd);
      // And its workers are running (a test reading the master's children before they were
      // forked saw none).
      eventually([&] { return log().find(" is serving") != std::string::npos; },
                 std::chrono::seconds(10));
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "pgproxy did not start listening:\n" << log();
}

Proxy::~Proxy() {
  stop();
  // Sanitizer builds: a report from any pgproxy process (workers log to the same file) fails the
  // test that ran it.
  std::string text = log();
  EXPECT_EQ(text.find("Sanitizer"), std::string::npos) << "sanitizer report in pgproxy's log";
  EXPECT_EQ(text.find("runtime error:"), std::string::npos) << "UBSan report in pgproxy's log";
  if (::testing::Test::HasFailure()) {
    std::cerr << "---- pgproxy log (" << log_ << ") ----\n" << log() << "---- end of log ----\n";
    for (const char* name : {"host1", "host2"}) {
      std::string pglog = readFile(sandbox().dir + "/" + name + ".log");
      if (pglog.size() > 4000) {
        pglog = pglog.substr(pglog.size() - 4000);
      }
      std::cerr << "---- PostgreSQL " << name << " log (tail) ----\n" << pglog;
    }
  }
  run({"rm", "-rf", dir_});
}

int Proxy::waitExit(std::chrono::seconds timeout) {
  if (pid_ < 0) {
    return -1;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

void Proxy::stop() {
  if (pid_ < 0) {
    return;
  }
  kill(pid_, SIGTERM);
  if (waitExit(std::chrono::seconds(15)) == -1 && pid_ > 0) {
    ADD_FAILURE() << "pgproxy did not stop on SIGTERM";
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

std::string Proxy::tls(const std::string& host, const std::string& sslmode) const {
  return "host=" + host + ".example.com hostaddr=127.0.0.1 port=" + std::to_string(port_) +
         " sslmode=" + sslmode + " sslrootcert=" + sandbox().ca() +
         " user=postgres dbname=postgres connect_timeout=20 gssencmode=disable";
}

std::string Proxy::plain() const {
  return "host=127.0.0.1 port=" + std::to_string(port_) +
         " sslmode=disable user=postgres dbname=postgres connect_timeout=20 gssencmode=disable";
}

std::string direct(int port) {
  return "host=127.0.0.1 port=" + std::to_string(port) +
         " sslmode=disable user=postgres dbname=postgres";
}

CommandResult psql(const std::string& conninfo, const std::string& sql) {
  return run({"psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql});
}

int connectTcp(int port, const char* source) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (source) {
    sockaddr_in src{};
    src.sin_family = AF_INET;
    inet_pton(AF_INET, source, &src.sin_addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
      ADD_FAILURE() << "cannot bind to " << source;
      close(fd);
      return -1;
    }
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string readUntilClose(int fd, std::chrono::milliseconds timeout, bool* closed) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  *closed = false;
  char buf[4096];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return out;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      continue;
    }
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      *closed = true;
      return out;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::string startupPacket(const std::vector<std::pair<std::string, std::string>>& params,
                          unsigned version) {
  std::string body;
  for (const auto& [k, v] : params) {
    body += k;
    body.push_back('\0');
    body += v;
    body.push_back('\0');
  }
  body.push_back('\0');
  std::uint32_t len = htonl(static_cast<std::uint32_t>(8 + body.size()));
  std::uint32_t ver = htonl(version);
  std::string out(reinterpret_cast<char*>(&len), 4);
  out.append(reinterpret_cast<char*>(&ver), 4);
  return out + body;
}

std::string sqlstateOf(const std::string& bytes) {
  std::size_t at = bytes.find('E');
  if (at == std::string::npos || bytes.size() < at + 5) {
    return "";
  }
  std::size_t pos = at + 5;
  while (pos < bytes.size() && bytes[pos] != '\0') {
    std::size_t end = bytes.find('\0', pos);
    if (end == std::string::npos) {
      return "";
    }
    if (bytes[pos] == 'C') {
      return bytes.substr(pos + 1, end - pos - 1);
    }
    pos = end + 1;
  }
  return "";
}

}  // namespace pgproxy::it

namespace pgproxy::it {

std::vector<pid_t> childrenOf(pid_t parent) {
  std::vector<pid_t> out;
  auto r = run({"pgrep", "-P", std::to_string(parent)});
  std::istringstream in(r.output);
  pid_t pid;
  while (in >> pid) {
    out.push_back(pid);
  }
  return out;
}

long rssKib(pid_t pid) {
  std::istringstream in(readFile("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  return 0;
}

int fdCount(pid_t pid) {
  auto r = run({"ls", "/proc/" + std::to_string(pid) + "/fd"});
  int n = 0;
  std::istringstream in(r.output);
  std::string name;
  while (in >> name) {
    ++n;
  }
  return n;
}

}  // namespace pgproxy::it

namespace pgproxy::it {

HttpResponse http(int port, const std::string& request) {
  HttpResponse r;
  int fd = connectTcp(port);
  if (fd < 0) {
    return r;
  }
  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      break;  // the server may refuse a huge request before reading it all
    }
    sent += static_cast<std::size_t>(n);
  }
  bool closed = false;
  std::string raw = readUntilClose(fd, std::chrono::seconds(10), &closed);
  close(fd);
  std::size_t split = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || split == std::string::npos) {
    return r;
  }
  r.status = std::stoi(raw.substr(9, 3));
  r.headers = raw.substr(0, split);
  r.body = raw.substr(split + 4);
  return r;
}

HttpResponse httpGet(int port, const std::string& path, const std::string& extra_headers) {
  return http(port, "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n" + extra_headers + "\r\n");
}

DirectTlsResult directTls(int port, const std::string& sni, bool with_alpn, const std::string& ca) {
  DirectTlsResult res;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(ctx, (ca.empty() ? sandbox().ca() : ca).c_str(), nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL* ssl = SSL_new(ctx);
  int fd = connectTcp(port);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, sni.c_str());
  SSL_set1_host(ssl, sni.c_str());
  if (with_alpn) {
    static const unsigned char kAlpn[] = "\x0apostgresql";
    SSL_set_alpn_protos(ssl, kAlpn, 11);
  }
  if (SSL_connect(ssl) != 1) {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    res.error = buf;
  } else {
    res.handshake_ok = true;
    std::string startup = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
    SSL_write(ssl, startup.data(), static_cast<int>(startup.size()));
    std::string in;
    char buf[4096];
    auto readUntilReady = [&]() {
      while (true) {
        // Messages: type, length; stop after ReadyForQuery.
        std::size_t pos = 0;
        while (pos + 5 <= in.size()) {
          std::uint32_t len = (std::uint32_t(std::uint8_t(in[pos + 1])) << 24) |
                              (std::uint32_t(std::uint8_t(in[pos + 2])) << 16) |
                              (std::uint32_t(std::uint8_t(in[pos + 3])) << 8) |
                              std::uint8_t(in[pos + 4]);
          if (pos + 1 + len > in.size()) {
            break;
          }
          if (in[pos] == 'Z') {
            return true;
          }
          pos += 1 + len;
        }
        int n = SSL_read(ssl, buf, sizeof(buf));
        if (n <= 0) {
          return false;
        }
        in.append(buf, static_cast<std::size_t>(n));
      }
    };
    if (readUntilReady()) {
      in.clear();
      std::string q("Q");
      std::string sql = "show cluster_name";
      std::uint32_t len = htonl(static_cast<std::uint32_t>(4 + sql.size() + 1));
      q.append(reinterpret_cast<char*>(&len), 4);
      q += sql;
      q.push_back('\0');
      SSL_write(ssl, q.data(), static_cast<int>(q.size()));
      if (readUntilReady()) {
        // DataRow: 'D', len, ncols(2), col len(4), value.
        std::size_t d = in.find('D');
        if (d != std::string::npos && d + 11 <= in.size()) {
          std::uint32_t vlen;
          std::memcpy(&vlen, in.data() + d + 7, 4);
          vlen = ntohl(vlen);
          res.cluster = in.substr(d + 11, vlen);
        }
      }
    }
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return res;
}

// Ctrl-C in psql is PQcancel: a CancelRequest on a new, unencrypted connection.
void expectCancelWorks(const std::string& conninfo) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  ASSERT_EQ(PQsendQuery(conn, "select pg_sleep(30)"), 1);
  // Wait until the backend is really running the query before cancelling it.
  PGconn* watcher = PQconnectdb(direct(sandbox().port1).c_str());
  for (int i = 0; i < 200; ++i) {
    PGresult* r = PQexec(watcher,
                         "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)'"
                         " and state = 'active'");
    bool running = PQntuples(r) == 1 && std::string(PQgetvalue(r, 0, 0)) != "0";
    PQclear(r);
    if (running) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  PQfinish(watcher);
  PGcancel* cancel = PQgetCancel(conn);
  char err[256];
  EXPECT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  PQfreeCancel(cancel);
  PGresult* res = PQgetResult(conn);
  ASSERT_NE(res, nullptr);
  EXPECT_EQ(PQresultStatus(res), PGRES_FATAL_ERROR);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014") << PQresultErrorMessage(res);
  PQclear(res);
  while ((res = PQgetResult(conn)) != nullptr) {
    PQclear(res);
  }
  PQfinish(conn);
}

CommandResult sandboxCommand(const std::string& command, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {srcdir() + "/tests/integration/pg_sandbox.sh", command,
                                   sandbox().dir};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, std::chrono::seconds(180));
}

}  // namespace pgproxy::it

namespace pgproxy::it {

ScopedAsanOption::ScopedAsanOption(const std::string& option) {
  const char* v = std::getenv("ASAN_OPTIONS");
  had_ = v != nullptr;
  saved_ = v ? v : "";
  setenv("ASAN_OPTIONS", (saved_ + (had_ ? ":" : "") + option).c_str(), 1);
}

ScopedAsanOption::~ScopedAsanOption() {
  if (had_) {
    setenv("ASAN_OPTIONS", saved_.c_str(), 1);
  } else {
    unsetenv("ASAN_OPTIONS");
  }
}

}  // namespace pgproxy::it

namespace pgproxy::it {

int listenLoopback(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      listen(fd, 64) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    if (fd >= 0) {
      close(fd);
    }
    return -1;
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

long long metricValue(const std::string& text, const std::string& series) {
  std::size_t at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + series.size() + 2));
}

long long scrapeMetric(int admin_port, const std::string& series) {
  return metricValue(httpGet(admin_port, "/metrics").body, series);
}

int loginSession(int port, std::string* answer, const char* source, const std::string& preamble) {
  int fd = connectTcp(port, source);
  std::string bytes = preamble + startupPacket({{"user", "postgres"}, {"database", "postgres"}});
  EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  answer->clear();
  if (readUntilReady(fd, answer, std::chrono::seconds(10))) {
    return fd;
  }
  close(fd);
  return -1;
}

bool readUntilReady(int fd, std::string* got, std::chrono::milliseconds timeout) {
  const std::string ready("Z\x00\x00\x00\x05I", 6);
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) {
      continue;
    }
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) {
      return false;
    }
    got->append(buf, static_cast<std::size_t>(n));
    if (got->find(ready) != std::string::npos) {
      return true;
    }
  }
  return false;
}

long proxyRss(const Proxy& proxy) {
  long sum = rssKib(proxy.pid());
  for (pid_t w : childrenOf(proxy.pid())) {
    sum += rssKib(w);
  }
  return sum;
}

int proxyFds(const Proxy& proxy) {
  int sum = fdCount(proxy.pid());
  for (pid_t w : childrenOf(proxy.pid())) {
    sum += fdCount(w);
  }
  return sum;
}

std::string sandboxFile(const std::string& name) {
  return sandbox().dir + "/" + name;
}

std::string queryHost1(const std::string& sql) {
  auto r = psql(direct(sandbox().port1), sql);
  EXPECT_EQ(r.exit_code, 0) << sql << ": " << r.output;
  while (!r.output.empty() && r.output.back() == '\n') {
    r.output.pop_back();
  }
  return r.output;
}

const std::string& poolRoleAuthFile() {
  static const std::string path = [] {
    queryHost1(
        "set password_encryption = 'scram-sha-256'; "
        "create role pgproxy_pool login password 'scram-pw'");
    std::string dir = tempDir("pgproxy-pool-role");
    writeFile(dir + "/users.txt",
              "\"pgproxy_pool\" \"" +
                  queryHost1("select rolpassword from pg_authid where rolname = 'pgproxy_pool'") +
                  "\"\n");
    return dir + "/users.txt";
  }();
  return path;
}

const std::string& poolRoleDatabase(const std::string& name) {
  static std::set<std::string> made;
  const std::string& path = poolRoleAuthFile();
  if (made.insert(name).second) {
    queryHost1("drop database if exists " + name);
    queryHost1("create database " + name + " owner pgproxy_pool");
  }
  return path;
}

}  // namespace pgproxy::it
