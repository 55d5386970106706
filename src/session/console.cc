// The admin console on the data listener: a client whose StartupMessage asks for the database
// "pgproxy" (with admin.users set) talks to pgproxy itself (admin/console.h) instead of a
// backend. Authenticated by the auth block's file like pooled clients, or, without an auth
// block, trusted from this host only.
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>

#include "config.h"
#include "pgproxy/admin/console.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/stream_io.h"
#include "pgproxy/session/admin_env.h"
#include "pgproxy/session/session.h"

namespace pgproxy::session {
namespace {

// A client that sends queries without reading the answers is not read further until this much
// has gone out: the console's memory per session stays bounded.
constexpr std::size_t kConsoleOutputLimit = 256 * 1024;

bool loopback(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
      return true;
    }
    return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
  }
  return addr.ss_family == AF_UNIX;
}

}  // namespace

admin::CommandEnv adminEnv(const Context& ctx) {
  admin::CommandEnv env;
  env.sources.config = ctx.config;
  env.sources.metrics = ctx.metrics_registry;
  env.sources.backends = ctx.backends;
  env.sources.backend_slots = &ctx.backend_slots;
  env.sources.pools = ctx.shared_pools;
  env.sources.control = ctx.control;
  env.sources.version = PACKAGE_VERSION;
  env.control = ctx.control;
  pid_t master = ctx.master_pid;
  env.signal_master = [master](int sig) {
    // Only our own master: once it is gone the parent is someone else (init, a subreaper).
    return master > 1 && getppid() == master && kill(master, sig) == 0;
  };
  return env;
}

bool Session::wantsConsole(std::string_view packet) const {
  if (ctx_.config->admin.users.empty()) {
    return false;
  }
  proto::StartupParams params;
  (void)proto::parseStartup(packet, params);  // acceptStartup checked it
  std::string database = params.get("database");
  // As PostgreSQL: without a database the user's name is the database's.
  return (database.empty() ? params.get("user") : database) == "pgproxy";
}

void Session::startConsole(std::string_view packet) {
  proto::StartupParams params;
  (void)proto::parseStartup(packet, params);
  const std::string user = params.get("user");
  console_wanted_ = true;
  if (!ctx_.config->admin.consoleUser(user)) {
    refuse(Outcome::kAuthFailed, proto::sqlstate::kInvalidAuthorization,
           "pgproxy console: user \"" + user + "\" is not allowed (admin.users)");
    return;
  }
  if (!ctx_.config->auth.configured && !loopback(client_addr_)) {
    refuse(Outcome::kAuthFailed, proto::sqlstate::kInvalidAuthorization,
           "pgproxy console: without an auth block the console takes connections from this "
           "host only",
           "Configure auth (auth.file) to reach the console from elsewhere.");
    return;
  }
  if (ctx_.config->auth.configured) {
    startClientAuth();  // enterConsole once the client is authenticated
    return;
  }
  takeClientSocket();
  authenticated_ = true;
  enterConsole();
}

void Session::enterConsole() {
  endHandshake();
  setState(State::kConsole);
  if (timer_) {
    event_free(timer_);  // an idle console session holds no timer, as a pooled one
    timer_ = nullptr;
  }
  // Without auth, bytes a client sent after its StartupMessage are still behind it.
  proto::Preamble pre = proto::classifyPreamble(startup_);
  std::string early = startup_.size() > pre.consumed ? startup_.substr(pre.consumed) : "";
  proto::StartupParams params;
  (void)proto::parseStartup(std::string_view(startup_).substr(0, pre.consumed), params);
  std::string user = params.get("user");
  std::string().swap(startup_);
  client_auth_.reset();
  admin::CommandEnv env = adminEnv(ctx_);
  env.who = "console user \"" + user + "\" from " + peer();
  LOG_INFO("session %llu: %s logged in", static_cast<unsigned long long>(id_), env.who.c_str());
  console_ = std::make_unique<admin::Console>(std::move(env));
  to_client_ += admin::Console::greeting(PACKAGE_VERSION);
  if (!flushLogin(true)) {
    return;
  }
  if (!early.empty() && !consoleInput(early)) {
    return;
  }
  event_add(client_read_, nullptr);
  readConsole();  // bytes OpenSSL may hold
}

bool Session::consoleInput(std::string_view bytes) {
  bytes_up_ += bytes.size();
  std::size_t before = to_client_.size();
  admin::Console::Status st = console_->feed(bytes, to_client_);
  bytes_down_ += to_client_.size() - before;
  if (st == admin::Console::Status::kClose) {
    // A Terminate adds nothing; a protocol violation ends with its FATAL.
    sendLastWords(to_client_.size() == before ? Outcome::kOk : Outcome::kProtocolError, "");
    return false;
  }
  return flushLogin(true);
}

void Session::readConsole() {
  char buf[4096];
  for (;;) {
    if (to_client_.size() > kConsoleOutputLimit) {
      event_del(client_read_);  // flushConsole reads again once the client has taken it
      return;
    }
    int err = 0;
    ssize_t n = readSide(true, buf, sizeof(buf), err);
    if (n == 0 || (n < 0 && !net::wouldBlock(err) && err != EINTR)) {
      close(Outcome::kOk);  // a console client may leave without a Terminate
      return;
    }
    if (n < 0) {
      return;  // the read event is armed
    }
    if (!consoleInput(std::string_view(buf, static_cast<std::size_t>(n)))) {
      return;
    }
  }
}

void Session::flushConsole() {
  bool was_held = to_client_.size() > kConsoleOutputLimit;
  if (!flushLogin(true) || state_ != State::kConsole) {
    return;
  }
  if (was_held && to_client_.size() <= kConsoleOutputLimit) {
    event_add(client_read_, nullptr);
    readConsole();
  }
}

}  // namespace pgproxy::session
