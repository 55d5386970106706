#include "pgproxy/process/worker.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <memory>

#include "pgproxy/admin/admin_server.h"
#include "pgproxy/admin/control_server.h"
#include "pgproxy/audit/audit.h"
#include "pgproxy/auth/secret_fetch.h"
#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/base/unique_fd.h"
#include "pgproxy/log/access_log.h"
#include "pgproxy/log/log.h"
#include "pgproxy/log/loop_flusher.h"
#include "pgproxy/pool/pool.h"
#include "pgproxy/process/master.h"
#include "pgproxy/route/router.h"
#include "pgproxy/session/admin_env.h"
#include "pgproxy/session/session.h"

namespace pgproxy::process {
namespace {

// Replaces `path` with `text` so that a reader sees the old file or the new one, never a part:
// written beside it, synced, renamed over it (PUT /api/v1/config).
base::Status replaceFile(const std::string& path, const std::string& text) {
  std::string tmp = path + ".pgproxy-new." + std::to_string(getpid());
  base::UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!fd.valid()) {
    return base::Error{"cannot create " + tmp + ": " + base::errnoText(errno)};
  }
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    (void)fchmod(fd.get(), st.st_mode & 07777);  // the file keeps its permissions
  }
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      int err = errno;
      unlink(tmp.c_str());
      return base::Error{"cannot write " + tmp + ": " + base::errnoText(err)};
    }
    done += static_cast<std::size_t>(n);
  }
  if (fsync(fd.get()) != 0 || rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return base::Error{"cannot replace " + path + ": " + base::errnoText(err)};
  }
  return {};
}

// When accept() fails for lack of descriptors, pause accepting instead of spinning on the error
// (nginx does the same); the connection waits in the kernel backlog meanwhile.
constexpr int kAcceptPauseMs = 500;
// max_handshakes reached: look again this often (handshakes ending in other workers do not wake
// this one; its own wake it at once).
constexpr int kHandshakePauseMs = 50;
// Conditions that repeat on every wakeup (a full handshake budget, EMFILE) are logged this seldom.
constexpr std::uint64_t kRepeatLogIntervalMs = 10'000;

bool logDue(std::uint64_t& last_ms) {
  return base::logDue(last_ms, kRepeatLogIntervalMs);
}

struct Worker {
  session::Context ctx;
  struct Listener {
    int fd;
    event* ev;
  };
  std::vector<Listener> listeners;
  event* accept_resume = nullptr;
  bool accept_paused = false;
  std::uint64_t handshake_logged_ms = 0;
  std::uint64_t accept_error_logged_ms = 0;
  event* drain_deadline = nullptr;
  std::unique_ptr<admin::AdminServer> admin;
  std::vector<int> console_fds;  // the listeners of admin.console among `listeners`
  std::vector<std::pair<int, config::ListenAddress>> proxy_listeners;  // PROXY protocol ones
  // Answers the console's and the API's questions about this worker's sessions, also while it
  // drains after a reload (its sessions are still listed and can be killed).
  std::unique_ptr<admin::ControlServer> control;
  std::unique_ptr<pool::PoolSet> pools;          // after the sessions: they hold pointers into it
  std::unique_ptr<auth::SecretLookups> secrets;  // likewise (sessions wait for lookups)
  bool draining = false;
};

void closeAllSessions(Worker& w) {
  while (w.ctx.sessions) {
    w.ctx.sessions->shutdown();
  }
}

// shutdown_timeout: PostgreSQL sessions can live for hours, so draining has an end.
void onDrainDeadline(evutil_socket_t, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  LOG_WARN("shutdown_timeout reached: closing %zu remaining session(s)", w->ctx.active_sessions);
  closeAllSessions(*w);
  event_base_loopbreak(w->ctx.base);
}

void stopListening(Worker& w) {
  for (auto& l : w.listeners) {
    event_free(l.ev);
    ::close(l.fd);  // this worker's copy of the socket
  }
  w.listeners.clear();
  w.admin.reset();  // the new generation answers the admin endpoint
}

void pauseAccepting(Worker& w, int ms) {
  if (!w.accept_paused) {
    for (auto& l : w.listeners) {
      event_del(l.ev);
    }
    w.accept_paused = true;
  }
  timeval tv{0, ms * 1000};
  evtimer_add(w.accept_resume, &tv);
}

void resumeAccepting(Worker& w) {
  if (!w.accept_paused) {
    return;
  }
  w.accept_paused = false;
  evtimer_del(w.accept_resume);
  for (auto& l : w.listeners) {
    event_add(l.ev, nullptr);
  }
}

void onHandshakeDone(session::Context* ctx) {
  auto* w = static_cast<Worker*>(ctx->owner);
  if (w->accept_paused && ctx->config->max_handshakes &&
      ctx->metrics_registry->handshaking() < ctx->config->max_handshakes) {
    resumeAccepting(*w);
  }
}

void onSessionClosed(session::Context* ctx) {
  auto* w = static_cast<Worker*>(ctx->owner);
  if (w->draining && ctx->active_sessions == 0) {
    event_base_loopbreak(ctx->base);
  }
}

// One accept per wakeup (nginx's multi_accept off): every worker is woken for a new connection and
// each takes at most one per loop turn, so connections spread over the workers instead of the
// first one awake draining the whole backlog.
void onAcceptable(evutil_socket_t fd, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  if (unsigned max = w->ctx.config->max_handshakes;
      max && w->ctx.metrics_registry->handshaking() >= max) {
    // Odyssey's client_max_routing: a connection that waits in the kernel's backlog costs us
    // nothing, one in its handshake costs a session and buffers.
    if (logDue(w->handshake_logged_ms)) {
      LOG_WARN("max_handshakes (%u) reached: new connections wait in the listen backlog", max);
    }
    pauseAccepting(*w, kHandshakePauseMs);
    return;
  }
  sockaddr_storage addr;
  socklen_t len = sizeof(addr);
  int conn = accept4(fd, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (conn >= 0) {
    bool console =
        std::find(w->console_fds.begin(), w->console_fds.end(), fd) != w->console_fds.end();
    const config::ListenAddress* proxied = nullptr;
    for (const auto& [proxy_fd, listen] : w->proxy_listeners) {
      proxied = proxy_fd == fd ? &listen : proxied;
    }
    session::Session::accept(w->ctx, conn, reinterpret_cast<sockaddr*>(&addr),
                             static_cast<int>(len), console, proxied);
    return;
  }
  int err = errno;
  if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED) {
    return;  // another worker took it, or the client gave up
  }
  // Out of descriptors or memory: pause instead of spinning on the error (nginx does the same);
  // connections wait in the kernel backlog meanwhile.
  if (logDue(w->accept_error_logged_ms)) {
    LOG_ERROR("accept() failed: %s; pausing accepts for %d ms (logged once per %llu s)",
              base::errnoText(err).c_str(), kAcceptPauseMs,
              static_cast<unsigned long long>(kRepeatLogIntervalMs / 1000));
  }
  pauseAccepting(*w, kAcceptPauseMs);
}

void onAcceptResume(evutil_socket_t, short, void* arg) {
  resumeAccepting(*static_cast<Worker*>(arg));
}

void onSignal(evutil_socket_t sig, short, void* arg) {
  auto* w = static_cast<Worker*>(arg);
  if (sig == SIGUSR1) {
    for (auto st : {log::reopen(), log::reopenAccessLog()}) {
      if (!st) {
        LOG_ERROR("%s", st.error().message.c_str());
      }
    }
    LOG_DEBUG("log files reopened");
    return;
  }
  if (sig == SIGQUIT) {
    if (!w->draining) {
      LOG_INFO("draining: no longer accepting; %zu session(s) left", w->ctx.active_sessions);
      std::uint64_t ms = w->ctx.config->shutdown_timeout_ms;
      timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
      evtimer_add(w->drain_deadline, &tv);
    }
    w->draining = true;
    stopListening(*w);
    if (w->pools) {
      w->pools->drain();  // a newer generation serves; servers here close as they go idle
    }
    if (w->ctx.active_sessions == 0) {
      event_base_loopbreak(w->ctx.base);
    }
    return;
  }
  // SIGTERM / SIGINT: fast shutdown.
  stopListening(*w);
  event_base_loopbreak(w->ctx.base);
}

}  // namespace

int runWorker(const WorkerSpec& spec) {
  // Test-only (pgproxy(8), ENVIRONMENT): while the named file exists, a new worker exits before
  // it is ready, as one that cannot start would; the tests make a reload's generation fail so.
  if (const char* flag = std::getenv("PGPROXY_TEST_WORKER_START_FAIL");
      flag && access(flag, F_OK) == 0) {
    LOG_ERROR("not starting: %s exists (PGPROXY_TEST_WORKER_START_FAIL, for tests only)", flag);
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);
  event_base* base = event_base_new();
  if (!base) {
    LOG_ERROR("event_base_new failed");
    return 1;
  }
  evdns_base* dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
  if (!dns) {
    // No usable resolv.conf: IP literals and /etc/hosts still resolve.
    dns = evdns_base_new(base, 0);
    evdns_base_load_hosts(dns, nullptr);
  }
  auto log_flusher = std::make_unique<log::LoopFlusher>(base);
  route::Router router(*spec.config);
  auto* w = new Worker();
  w->ctx.base = base;
  w->ctx.dns = dns;
  w->ctx.config = spec.config;
  w->ctx.router = &router;
  w->ctx.tls = spec.tls;
  w->ctx.plugins = spec.plugins;
  w->ctx.cancels = spec.cancels;
  w->ctx.on_session_closed = onSessionClosed;
  w->ctx.on_handshake_done = onHandshakeDone;
  w->ctx.client_limits = spec.client_limits;
  spec.client_limits->attach(spec.limits_table);
  w->ctx.shared_pools = spec.pools;
  w->ctx.control = spec.control;
  w->ctx.master_pid = static_cast<int>(getppid());
  w->ctx.metrics_slot = spec.metrics_slot;
  spec.pools->attach(spec.metrics_slot);
  w->ctx.metrics_registry = spec.metrics;
  metrics::Slot* slot = spec.metrics->slot(spec.metrics_slot);
  w->ctx.metrics = metrics::Recorder(slot);
  audit::configure(spec.config->audit);  // the channel itself is inherited from the master
  audit::setCounters(&slot->counters[static_cast<std::size_t>(metrics::Counter::kAuditDropped)],
                     &spec.metrics->master().audit_failing);
  log::setDropCounters(
      &slot->counters[static_cast<std::size_t>(metrics::Counter::kLogLinesDropped)],
      &slot->counters[static_cast<std::size_t>(metrics::Counter::kAccessLogLinesDropped)]);
  for (const auto& m : spec.config->mappings) {
    w->ctx.mapping_metric.push_back(spec.metrics->mappingIndex(m.external));
    if (w->ctx.mapping_metric.back() == metrics::kUnknownMapping) {
      // The master registers every name before forking; never share a slot without a word.
      LOG_ERROR("mapping %s has no metrics slot: its metrics and limits count as \"unknown\"",
                m.external.c_str());
    }
    w->ctx.balancers.emplace_back(m.backends.size());
  }
  w->ctx.backends = spec.backends;
  w->ctx.rng ^=
      static_cast<std::uint64_t>(getpid()) << 32 | static_cast<std::uint64_t>(time(nullptr));
  w->ctx.backend_slots = upstream::backendSlots(*spec.config, *spec.backends);
  if (auto st = log::configureAccessLog(spec.config->access_log,
                                        spec.config->log_format == config::LogFormat::kJson
                                            ? log::AccessFormat::kJson
                                            : log::AccessFormat::kText);
      !st) {
    LOG_ERROR("%s; access lines go to the main log", st.error().message.c_str());
    (void)log::configureAccessLog("", log::AccessFormat::kText);
  }
  if (spec.admin_fd >= 0) {
    admin::ApiEnv api;
    api.commands = session::adminEnv(w->ctx);
    api.allow_config_write = spec.config->admin.allow_config_write;
    api.config_path = spec.config->path;
    api.validate = [path = spec.config->path](const std::string& text) -> base::Status {
      auto cfg = loadForServing(text, path);
      if (!cfg) {
        return cfg.error();
      }
      return {};
    };
    api.write_config = [path = spec.config->path](const std::string& text) {
      return replaceFile(path, text);
    };
    w->admin = std::make_unique<admin::AdminServer>(base, spec.admin_fd, std::move(api),
                                                    spec.tls ? spec.tls->admin() : nullptr);
  }
  w->pools = std::make_unique<pool::PoolSet>(w->ctx);
  w->ctx.pools = w->pools.get();
  if (!spec.config->auth.query.empty()) {
    w->secrets = std::make_unique<auth::SecretLookups>(w->ctx);
    w->ctx.secrets = w->secrets.get();
  }
  w->ctx.owner = w;
  if (spec.control) {
    w->control = std::make_unique<admin::ControlServer>(
        base, spec.control->instance(), spec.metrics_slot,
        [w](const admin::ControlRequest& r) { return session::answerControl(w->ctx, r); });
  }
  w->accept_resume = evtimer_new(base, onAcceptResume, w);
  w->drain_deadline = evtimer_new(base, onDrainDeadline, w);

  w->console_fds = spec.console_fds;
  w->proxy_listeners = spec.proxy_listeners;
  std::vector<int> accepting = spec.listen_fds;
  accepting.insert(accepting.end(), spec.console_fds.begin(), spec.console_fds.end());
  for (int fd : accepting) {
    // fork gave this worker its own descriptor: freeing the listener closes it, and once every
    // process has closed its copy the kernel refuses new connections instead of queueing them.
    event* ev = event_new(base, fd, EV_READ | EV_PERSIST, onAcceptable, w);
    if (!ev || event_add(ev, nullptr) != 0) {
      LOG_ERROR("cannot listen on inherited socket %d", fd);
      return 1;
    }
    w->listeners.push_back({fd, ev});
  }
  std::vector<event*> signals;
  for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP}) {
    event* ev = evsignal_new(base, sig, onSignal, w);
    if (sig == SIGHUP) {
      event_free(ev);
      std::signal(SIGHUP, SIG_IGN);  // reloads are the master's business
      continue;
    }
    evsignal_add(ev, nullptr);
    signals.push_back(ev);
  }
  std::signal(SIGUSR2, SIG_IGN);  // upgrades are the master's business
  // The master forked us with its signals blocked; with the handlers in place they may come.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (spec.ready_fd >= 0) {
    char ready = 'R';
    ssize_t ignored = write(spec.ready_fd, &ready, 1);
    (void)ignored;
    close(spec.ready_fd);
  }
  LOG_DEBUG("worker %u of generation %u serving", spec.slot, spec.generation);
  event_base_dispatch(base);

  closeAllSessions(*w);
  w->pools.reset();
  w->secrets.reset();
  stopListening(*w);
  // Freeing a signal event restores the default action, which for a reopen or a second quit
  // would kill this process on its way out; blocked, they are simply never delivered.
  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGTERM, SIGINT, SIGQUIT, SIGUSR1}) {
    sigaddset(&handled, sig);
  }
  sigprocmask(SIG_BLOCK, &handled, nullptr);
  for (auto* ev : signals) {
    event_free(ev);
  }
  event_free(w->accept_resume);
  event_free(w->drain_deadline);
  delete w;
  log_flusher.reset();      // what is still waiting is drained at exit, without the loop
  evdns_base_free(dns, 1);  // 1: pending lookups get their callback and free themselves
  event_base_free(base);
  return 0;
}

}  // namespace pgproxy::process
