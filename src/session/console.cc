// The admin console's session side: a client whose StartupMessage asks for the database
// "pgproxy" (with admin.users set), or any client of admin.console, talks to pgproxy itself
// (admin/console.h) instead of a backend, authenticated by the auth block's file like pooled
// clients or, without an auth block, trusted from this host only. Also what the admin commands
// see of this worker (adminEnv) and its answers on its control socket (answerControl).
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "config.h"
#include "pgproxy/admin/console.h"
#include "pgproxy/admin/control.h"
#include "pgproxy/admin/control_channel.h"
#include "pgproxy/base/clock.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/stream_io.h"
#include "pgproxy/pool/pool.h"
#include "pgproxy/pool/server_conn.h"
#include "pgproxy/session/admin_env.h"
#include "pgproxy/session/pooled.h"
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

// A stopped or stuck worker is named missing after this long instead of holding the answer.
constexpr std::uint64_t kControlDeadlineMs = 500;

std::vector<admin::Cell> serverRow(const Context& ctx, const pool::Pool& p,
                                   const pool::ServerConn& s) {
  static constexpr const char* kStates[] = {"login", "idle", "active", "used"};
  auto num = [](std::uint64_t v) { return admin::Cell{std::to_string(v)}; };
  const auto& m = ctx.config->mappings[p.mapping()];
  admin::Cell client;
  if (s.client()) {
    client = num(admin::globalClientId(ctx.metrics_slot, s.client()->session_id));
  }
  std::uint64_t age_ms = base::monotonicMs() - s.createdMs();
  return {num(admin::globalClientId(ctx.metrics_slot, s.id())),
          num(static_cast<std::uint64_t>(getpid())),
          m.external,
          m.backends[p.backend()].key(),
          p.user(),
          p.database(),
          admin::Cell{kStates[static_cast<std::size_t>(s.sharedState()) % 4]},
          client,
          admin::timestampCell(static_cast<std::int64_t>(base::wallClockMs() - age_ms)),
          admin::Cell{s.close_needed ? "t" : "f"}};
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
  if (ctx.control && ctx.metrics_registry) {
    event_base* base = ctx.base;
    const metrics::Registry* registry = ctx.metrics_registry;
    std::uint64_t instance = ctx.control->instance();
    env.ask_workers = [base, registry, instance, master](const admin::ControlRequest& request,
                                                         admin::ControlGather::Done done) {
      // Every worker with a slot, of every generation (a draining one still has sessions), this
      // one included: its own socket answers on this loop like the others'. A slot the master
      // holds for a worker it is forking is not a worker yet.
      std::vector<admin::ControlGather::Target> targets;
      for (std::size_t i = 0; i < metrics::kMaxSlots; ++i) {
        std::int32_t owner = registry->slotOwner(i);
        if (owner > 0 && owner != master) {
          targets.push_back({i, owner});
        }
      }
      return std::make_unique<admin::ControlGather>(base, instance, targets, request,
                                                    kControlDeadlineMs, std::move(done));
    };
  }
  event_base* base = ctx.base;
  env.poll_until = [base](std::function<bool()> ready, std::function<void()> done) {
    return std::make_unique<admin::Poller>(base, std::move(ready), std::move(done));
  };
  return env;
}

admin::ControlReply answerControl(Context& ctx, const admin::ControlRequest& r) {
  admin::ControlReply reply;
  auto count = [&reply](std::uint64_t n) { reply.rows.push_back({std::to_string(n)}); };
  switch (r.kind) {
    case admin::ControlKind::kClients: {
      // A page: ids above `number`, the lowest `limit` of them (each worker's ids rise with
      // its session numbers, so the merged page is the lowest `limit` of all).
      std::vector<const Session*> page;
      for (Session* s = ctx.sessions; s; s = s->next_) {
        if (admin::globalClientId(ctx.metrics_slot, s->id()) > r.number) {
          page.push_back(s);
        }
      }
      std::sort(page.begin(), page.end(),
                [](const Session* a, const Session* b) { return a->id() < b->id(); });
      if (r.limit && page.size() > r.limit) {
        page.resize(r.limit);
      }
      for (const Session* s : page) {
        reply.rows.push_back(s->clientRow(ctx.metrics_slot));
      }
      return reply;
    }
    case admin::ControlKind::kServers:
      if (ctx.pools) {
        ctx.pools->forEachServer([&](const pool::Pool& p, const pool::ServerConn& s) {
          reply.rows.push_back(serverRow(ctx, p, s));
        });
      }
      return reply;
    case admin::ControlKind::kKillMapping:
    case admin::ControlKind::kKillClient: {
      // Collected first: closing a session unlinks it from the list being walked.
      std::vector<Session*> doomed;
      for (Session* s = ctx.sessions; s; s = s->next_) {
        bool match =
            r.kind == admin::ControlKind::kKillClient
                ? admin::globalClientId(ctx.metrics_slot, s->id()) == r.number
                : s->mapping() != SIZE_MAX && ctx.config->mappings[s->mapping()].external == r.name;
        if (match) {
          doomed.push_back(s);
        }
      }
      for (Session* s : doomed) {
        s->kill();
      }
      count(doomed.size());
      return reply;
    }
    case admin::ControlKind::kReconnect: {
      std::size_t n = 0;
      for (std::size_t m = 0; m < ctx.config->mappings.size() && ctx.pools; ++m) {
        if (ctx.config->mappings[m].external == r.name) {
          n += ctx.pools->reconnect(m);
        }
      }
      count(n);
      return reply;
    }
  }
  reply.error = "unknown request";
  return reply;
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
  console_ = std::make_unique<admin::Console>(
      std::move(env), [this](admin::Gathered g) { consoleAnswered(std::move(g)); });
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
  return consoleStatus(console_->feed(bytes, to_client_), before);
}

bool Session::consoleStatus(admin::Console::Status st, std::size_t before) {
  bytes_down_ += to_client_.size() - before;
  if (st == admin::Console::Status::kClose) {
    // A Terminate adds nothing; a protocol violation ends with its FATAL.
    sendLastWords(to_client_.size() == before ? Outcome::kOk : Outcome::kProtocolError, "");
    return false;
  }
  // While the workers are asked the client is not read: its next query waits in the socket.
  console_waiting_ = st == admin::Console::Status::kWait;
  if (console_waiting_) {
    event_del(client_read_);
  }
  return flushLogin(true);
}

void Session::consoleAnswered(admin::Gathered g) {
  std::size_t before = to_client_.size();
  if (!consoleStatus(console_->resume(g, to_client_), before) || console_waiting_) {
    return;
  }
  event_add(client_read_, nullptr);
  readConsole();
}

void Session::readConsole() {
  char buf[4096];
  while (!console_waiting_) {
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
  if (was_held && to_client_.size() <= kConsoleOutputLimit && !console_waiting_) {
    event_add(client_read_, nullptr);
    readConsole();
  }
}

}  // namespace pgproxy::session

namespace pgproxy::session {

void Session::kill() {
  // Where the client is between messages it reads why, in PostgreSQL's words for
  // pg_terminate_backend; a spliced or busy session is only closed (a message slipped into the
  // middle of the backend's would corrupt its stream).
  bool between = state_ == State::kConsole || (state_ == State::kPooled && !pooled_->server);
  LOG_INFO("session %llu: closed by KILL from the console", static_cast<unsigned long long>(id_));
  if (between) {
    sendLastWords(Outcome::kShutdown,
                  proto::buildFatal("57P01",
                                    "terminating connection due to administrator command (KILL "
                                    "from the pgproxy console)"));
    return;
  }
  close(Outcome::kShutdown);
}

std::vector<admin::Cell> Session::clientRow(std::size_t slot) const {
  auto num = [](std::uint64_t v) { return admin::Cell{std::to_string(v)}; };
  const char* state = "handshake";
  switch (state_) {
    case State::kSplice:
      state = "active";
      break;
    case State::kPooled:
      state = pooled_ && pooled_->server    ? "active"
              : pooled_ && pooled_->waiting ? "waiting"
                                            : "idle";
      break;
    case State::kConsole:
      state = "console";
      break;
    case State::kClosing:
      state = "closing";
      break;
    case State::kCancelling:
      state = "cancel";
      break;
    default:
      break;
  }
  char host[INET6_ADDRSTRLEN] = "";
  unsigned port = 0;
  if (client_addr_.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&client_addr_);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
  } else if (client_addr_.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&client_addr_);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
  }
  admin::Cell mapping, user, database, backend, server;
  if (mapping_ != SIZE_MAX) {
    mapping = ctx_.config->mappings[mapping_].external;
  }
  if (pooled_ && pooled_->pool) {
    user = pooled_->pool->user();
    database = pooled_->pool->database();
    backend = ctx_.config->mappings[mapping_].backends[pooled_->pool->backend()].key();
    if (pooled_->server) {
      server = num(admin::globalClientId(slot, pooled_->server->id()));
    }
  } else if (tried_ != 0 && mapping_ != SIZE_MAX) {
    backend = ctx_.config->mappings[mapping_].backends[backend_index_].key();
  }
  std::uint64_t age_ms = (base::monotonicUs() - started_us_) / 1000;
  std::int64_t connect_ms = static_cast<std::int64_t>(base::wallClockMs() - age_ms);
  return {num(admin::globalClientId(slot, id_)),
          num(static_cast<std::uint64_t>(getpid())),
          mapping,
          user,
          database,
          admin::Cell{state},
          admin::Cell{host},
          num(port),
          admin::Cell{modeName()},
          admin::timestampCell(connect_ms),
          backend,
          server,
          num(bytes_up_),
          num(bytes_down_)};
}

}  // namespace pgproxy::session
