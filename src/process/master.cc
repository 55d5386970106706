// The master process: CLI actions (-t, -s), the pid file, listeners, worker generations.
// It has no event loop: it blocks the signals it handles, reads them from a signalfd, and polls
// that together with the workers' readiness pipes.
#include "pgproxy/process/master.h"

#include <algorithm>

#include "config.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "pgproxy/admin/control.h"
#include "pgproxy/admin/live_state.h"
#include "pgproxy/audit/audit.h"
#include "pgproxy/audit/writer.h"
#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/base/unique_fd.h"
#include "pgproxy/cancel/registry.h"
#include "pgproxy/config/config.h"
#include "pgproxy/limits/client_limits.h"
#include "pgproxy/log/log.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/net/kernel_splice.h"
#include "pgproxy/net/listen_socket.h"
#include "pgproxy/plugin/host.h"
#include "pgproxy/pool/shared_pools.h"
#include "pgproxy/process/pid_file.h"
#include "pgproxy/process/shared_regions.h"
#include "pgproxy/process/systemd_notify.h"
#include "pgproxy/process/worker.h"
#include "pgproxy/upstream/health_checker.h"

namespace pgproxy::process {
namespace {

// SHOW STATS' averages are per second over this period (PgBouncer's stats_period is 60 s; a
// shorter one follows a change sooner).
constexpr std::uint64_t kStatsPeriodMs = 15'000;

using ConfigPtr = std::shared_ptr<const config::Config>;

constexpr std::uint64_t kStopGraceMs = 5000;         // SIGTERM → SIGKILL for workers
constexpr std::uint64_t kRespawnBackoffMinMs = 100;  // after a worker dies young
constexpr std::uint64_t kRespawnBackoffMaxMs = 5000;
constexpr std::uint64_t kYoungWorkerMs = 5000;

// Every worker holds one metrics slot and one per-client count table; a reload runs two
// generations side by side, so the loader's bound on `workers` is half of what the tables hold.
static_assert(metrics::kMaxSlots == limits::kMaxWorkers);
static_assert(2 * config::kMaxWorkers <= metrics::kMaxSlots);

// Binary upgrade: the old master passes its listening sockets to the new binary through the
// environment ("fd:port:address,..."), and its own pid so the new master can tell it to drain.
constexpr const char* kListenFdsEnv = "PGPROXY_LISTEN_FDS";
constexpr const char* kUpgradeParentEnv = "PGPROXY_UPGRADE_PARENT";
// And the descriptor of its shared memory, which the new master adopts when the layout matches.
constexpr const char* kSharedFdEnv = "PGPROXY_SHARED_FD";
// Adopted tables hold a previous binary's workers too; how often to look for ones that are gone.
constexpr std::uint64_t kSweepIntervalMs = 1000;

struct Listener {
  config::ListenAddress addr;
  base::UniqueFd fd;
};

struct WorkerProc {
  pid_t pid = -1;
  unsigned slot = 0;
  unsigned generation = 0;
  std::uint64_t started_ms = 0;
  int ready_fd = -1;   // read end of the readiness pipe, -1 once it said ready or ended
  bool ready = false;  // wrote its ready byte: its listeners are armed
  bool quitting = false;
  std::uint64_t term_sent_ms = 0;
};

struct Respawn {
  unsigned slot;
  std::uint64_t due_ms;
};

std::string describeExit(int status) {
  if (WIFEXITED(status)) {
    return "exited with code " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "ended";
}

class Master {
 public:
  Master(const Options& opts, ConfigPtr cfg, std::shared_ptr<const tls::Contexts> tls)
      : opts_(opts), config_(std::move(cfg)), tls_(std::move(tls)) {}
  // The log keeps pointers to drop counters in the shared memory this object unmaps; lines
  // still waiting are drained at exit, after that.
  ~Master() { log::setDropCounters(nullptr, nullptr); }
  Master(const Master&) = delete;
  Master& operator=(const Master&) = delete;
  int run();

 private:
  base::Status openListeners(const config::Config& cfg, std::vector<Listener>& out);
  base::Status openListener(const config::ListenAddress& addr, Listener& out);
  void registerMappings(const config::Config& cfg);
  // Whether the config's mapping names and backends fit the shared tables beside what they hold.
  base::Status sharedTablesFit(const config::Config& cfg) const;
  void publishStats();
  void publishConfig();
  // The generations history (SHOW GENERATIONS): kept here, mirrored into the control region
  // with each generation's live worker count, on every change.
  void noteGeneration(unsigned generation, const char* state, const std::string& detail = "");
  void publishGenerations();
  std::vector<admin::GenerationInfo> history_;
  // SHOW STATS' averages: the per-mapping totals at the last sample, and when it was.
  void sampleRates(std::uint64_t now_ms);
  std::vector<admin::MappingTotals> rate_totals_;
  std::uint64_t rate_sampled_ms_ = 0;
  void sweepForeignOwners();
  // A worker is gone: its shares of the shared tables go (before its metrics slot is reused).
  void releaseWorker(pid_t pid);
  base::Status setUpSharedMemory();
  void spawnGeneration();
  void spawnWorker(unsigned slot);
  std::size_t freeWorkerSlots() const;
  std::string slotShortage(unsigned needed) const;
  void handleSignal(int sig, pid_t sender);
  void reapChildren();
  void reload();
  // `recorded`: the history already says why (a generation that failed to start).
  void reloadFailed(const base::Error& error, bool recorded = false);
  void abortReload(const std::string& why);
  void reopenLogs();
  void beginStop(bool graceful);
  void signalWorkers(int sig, bool (*which)(const WorkerProc&, unsigned), unsigned gen);
  void onWorkerReady(WorkerProc& w);
  void retireOldGenerations();
  void runTimers();
  std::uint64_t pollTimeoutMs() const;
  void adoptInheritedListeners();
  void upgrade();
  void onUpgradeChildExit(int status);
  // The health-check process (only while some mapping has health_check).
  void restartHealthChecker();
  void spawnHealthChecker();
  void prepareChild(const char* role);  // in a freshly forked child

  Options opts_;
  ConfigPtr config_;
  std::shared_ptr<const tls::Contexts> tls_;  // certificates of config_, loaded with it
  std::shared_ptr<plugin::Host> plugins_;     // the Lua plugins of config_, loaded with it
  base::Result<std::shared_ptr<plugin::Host>> buildPlugins(const config::Config& cfg);
  std::vector<Listener> listeners_;
  std::vector<WorkerProc> workers_;
  std::vector<Respawn> respawns_;
  std::vector<std::uint64_t> backoff_ms_;  // per slot of the current generation
  unsigned generation_ = 0;       // the newest generation (serving, or starting when pending)
  unsigned last_generation_ = 0;  // numbers are not reused, even after a failed start
  bool reload_pending_ = false;   // new generation spawned, waiting for all to be ready
  // While a reload's generation starts: what the serving one runs with, to go back to when a new
  // worker dies before it is ready.
  struct Previous {
    ConfigPtr config;
    std::shared_ptr<const tls::Contexts> tls;
    std::shared_ptr<plugin::Host> plugins;
    std::vector<Listener> listeners;
    Listener admin;
    unsigned generation = 0;
    std::vector<std::uint64_t> backoff_ms;
  };
  std::optional<Previous> previous_;
  int exit_code_ = 0;
  bool stopping_ = false;
  bool graceful_ = false;
  std::unique_ptr<SharedRegions> shared_;
  int inherited_shared_fd_ = -1;  // from an upgrading master, until adopted
  bool adopted_ = false;          // shared_ came from the previous binary
  // MasterStats in shared memory are written by the master that serves: during an upgrade the
  // new master writes them only once it has taken over, the old one no longer once it has.
  bool owns_stats_ = true;
  std::int64_t foreign_workers_ = 0;  // slots of another master's live workers (adopted)
  std::vector<std::int32_t> gone_;    // such owners found gone on the last sweep
  std::uint64_t next_sweep_ms_ = 0;
  std::unique_ptr<cancel::Registry> cancels_;
  std::unique_ptr<metrics::Registry> metrics_;
  std::unique_ptr<upstream::BackendTable> backends_;
  std::unique_ptr<limits::ClientLimits> client_limits_;
  std::unique_ptr<pool::SharedPools> pools_;
  std::unique_ptr<admin::Control> control_;
  pid_t checker_pid_ = -1;
  std::uint64_t checker_started_ms_ = 0;
  std::uint64_t checker_due_ms_ = 0;  // respawn time after it died, 0 when none is due
  std::uint64_t checker_backoff_ms_ = 0;
  Listener admin_;  // the admin HTTP socket; fd invalid when not configured
  base::UniqueFd signal_fd_;
  std::string pid_file_;
  pid_t pid_ = getpid();
  std::string exe_path_;             // this binary's path, read at start (see upgrade())
  std::vector<Listener> inherited_;  // sockets handed over by an upgrading master
  pid_t upgrade_parent_ = 0;         // that master, told to drain once we serve
  pid_t upgrade_child_ = 0;          // a new binary we started, until it takes over
  unsigned reload_failures_ = 0;
  // The audit log's single writer (audit/writer.h); workers send their events to it.
  std::optional<audit::Writer> audit_;
  std::uint64_t audit_report_due_ms_ = 0;  // lost audit events are reported at most this often
  base::Status startAudit();
  // splice: kernel or auto: loads the BPF program once (workers inherit it). An error only when a
  // mapping demands kernel and it cannot load.
  base::Status prepareKernelSplice(const config::Config& cfg);
  bool kernel_splice_tried_ = false;
  void auditSignal(int sig, pid_t sender);
  bool handed_over_ = false;  // an upgrade took over; systemd must not see us stopping
};

base::Status Master::openListener(const config::ListenAddress& addr, Listener& out) {
  base::UniqueFd fd;
  // Reuse a socket we already listen on (its queued connections stay queued), or one handed
  // over by the binary we replace.
  std::vector<Listener*> known;
  for (auto& l : listeners_) {
    known.push_back(&l);
  }
  known.push_back(&admin_);
  if (previous_) {
    for (auto& l : previous_->listeners) {
      known.push_back(&l);
    }
    known.push_back(&previous_->admin);
  }
  for (Listener* existing : known) {
    if (!fd.valid() && existing->addr == addr && existing->fd.valid()) {
      fd.reset(dup(existing->fd.get()));
      fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
    }
  }
  for (auto& inherited : inherited_) {
    if (!fd.valid() && inherited.addr == addr && inherited.fd.valid()) {
      fd = std::move(inherited.fd);
      LOG_INFO("listening on %s (socket inherited from the previous binary)",
               net::describe(addr).c_str());
    }
  }
  if (!fd.valid()) {
    auto bound = net::bindListener(addr);
    if (!bound) {
      return bound.error();
    }
    fd = std::move(*bound);
    LOG_INFO("listening on %s", net::describe(addr).c_str());
  }
  out = Listener{addr, std::move(fd)};
  return {};
}

base::Status Master::openListeners(const config::Config& cfg, std::vector<Listener>& out) {
  for (const auto& addr : cfg.listen) {
    Listener l;
    if (auto st = openListener(addr, l); !st) {
      return st;
    }
    out.push_back(std::move(l));
  }
  if (cfg.admin.enabled) {
    // The admin socket travels at the end of the list; run() and reload() take it from there.
    Listener l;
    if (auto st = openListener(cfg.admin.listen, l); !st) {
      return base::Error{"admin: " + st.error().message};
    }
    out.push_back(std::move(l));
  }
  return {};
}

// The loader refuses a configuration with more mappings than the registry has slots for names.
static_assert(config::kMaxMappings + 1 == metrics::kMaxMappings, "one slot is \"unknown\"");

base::Status Master::sharedTablesFit(const config::Config& cfg) const {
  std::vector<std::string> names, keys;
  for (const auto& m : cfg.mappings) {
    names.push_back(m.external);
    for (const auto& b : m.backends) {
      if (!b.templated()) {
        keys.push_back(b.key());
      }
    }
  }
  if (auto st = metrics_->fits(names); !st) {
    return st;
  }
  return backends_->fits(keys);
}

void Master::registerMappings(const config::Config& cfg) {
  for (const auto& m : cfg.mappings) {
    if (metrics_->registerMapping(m.external) == metrics::kUnknownMapping) {
      // fits() was checked first; if this ever happens, say so rather than share a slot quietly.
      LOG_ERROR(
          "no metrics slot for mapping %s: its metrics and per-mapping limits are shared "
          "with mapping=\"unknown\"",
          m.external.c_str());
    }
    for (const auto& b : m.backends) {
      if (b.templated()) {
        continue;
      }
      if (backends_->registerBackend(b.key()) == upstream::kNoBackend) {
        // fits() was checked first; if this ever happens, say so.
        LOG_ERROR("backend table full: %s is balanced without health state", b.key().c_str());
      }
    }
  }
  publishConfig();
}

void Master::publishConfig() {
  if (!owns_stats_) {
    return;
  }
  auto& ms = metrics_->master();
  std::snprintf(ms.config_hash, sizeof(ms.config_hash), "%s", config_->hash.c_str());
  ms.last_reload_unix.store(static_cast<std::int64_t>(time(nullptr)));
}

void Master::noteGeneration(unsigned generation, const char* state, const std::string& detail) {
  std::int64_t now = static_cast<std::int64_t>(base::wallClockMs());
  admin::GenerationInfo* g = nullptr;
  for (auto& h : history_) {
    g = generation != 0 && h.generation == generation ? &h : g;
  }
  if (!g) {
    history_.push_back({});
    g = &history_.back();
    g->generation = generation;
    g->started_ms = now;
    g->config_hash = generation ? config_->hash : "";
  }
  g->state = state;
  g->detail = detail.substr(0, detail.find('\n'));  // the first line says what
  if (g->state == "serving") {
    g->serving_ms = now;
    for (auto& other : history_) {
      if (&other != g && other.state == "serving") {
        other.state = "draining";  // its workers finish their sessions
      }
    }
  }
  if (history_.size() > admin::kGenerationHistory) {
    history_.erase(history_.begin());
  }
  publishGenerations();
}

void Master::publishGenerations() {
  if (!owns_stats_) {
    return;
  }
  std::int64_t now = static_cast<std::int64_t>(base::wallClockMs());
  for (auto& g : history_) {
    g.workers = std::count_if(workers_.begin(), workers_.end(), [&](const WorkerProc& w) {
      return static_cast<std::int64_t>(w.generation) == g.generation;
    });
    if (g.workers == 0 && (g.state == "draining" || g.state == "failed") && g.ended_ms == 0) {
      g.state = g.state == "draining" ? "ended" : g.state;
      g.ended_ms = now;
    }
  }
  control_->publishGenerations(history_);
}

void Master::publishStats() {
  publishGenerations();
  if (!owns_stats_) {
    return;
  }
  std::int64_t current = 0, draining = foreign_workers_;
  for (const auto& w : workers_) {
    (w.generation == generation_ ? current : draining) += 1;
  }
  auto& ms = metrics_->master();
  ms.workers.store(current);
  ms.draining_workers.store(draining);
  ms.generation.store(generation_);
}

// Every session holds two descriptors; the usual soft limit of 1024 would cap a worker at ~500
// sessions while the hard limit allows far more (nginx's worker_rlimit_nofile, PgBouncer does
// the same at start).
static void raiseFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) {
    return;
  }
  rlim_t before = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
    LOG_DEBUG("open file limit raised from %llu to %llu", static_cast<unsigned long long>(before),
              static_cast<unsigned long long>(rl.rlim_max));
  }
}

base::Status Master::setUpSharedMemory() {
  if (inherited_shared_fd_ >= 0) {
    auto adopted = SharedRegions::adopt(inherited_shared_fd_);
    inherited_shared_fd_ = -1;
    if (adopted) {
      shared_ = std::make_unique<SharedRegions>(std::move(*adopted));
      adopted_ = true;
      LOG_INFO(
          "upgrade: sharing the previous master's counters, limits, pool caps and cancel "
          "registry");
    } else {
      LOG_WARN(
          "upgrade: not adopting the previous binary's shared memory (%s); starting fresh: "
          "until the previous master has drained, its sessions and server connections do not "
          "count against max_connections, per-client limits, rate limits, pool caps or "
          "least_conn, cannot be cancelled through this master, and counters start from zero",
          adopted.error().message.c_str());
    }
  }
  if (!shared_) {
    auto created = SharedRegions::create();
    if (!created) {
      return base::Error{"cannot create the shared memory: " + created.error().message};
    }
    shared_ = std::make_unique<SharedRegions>(std::move(*created));
  }
  cancels_ = std::make_unique<cancel::Registry>(shared_->cancels());
  metrics_ = std::make_unique<metrics::Registry>(static_cast<metrics::Shared*>(shared_->metrics()));
  backends_ = std::make_unique<upstream::BackendTable>(
      static_cast<upstream::BackendShared*>(shared_->backends()));
  client_limits_ =
      std::make_unique<limits::ClientLimits>(static_cast<limits::LimitsShared*>(shared_->limits()));
  pools_ = std::make_unique<pool::SharedPools>(static_cast<pool::PoolsShared*>(shared_->pools()));
  control_ =
      std::make_unique<admin::Control>(static_cast<admin::ControlShared*>(shared_->control()));
  if (adopted_) {
    // The previous master's workers hash client addresses and pool names with its seeds;
    // generations go on.
    last_generation_ = static_cast<unsigned>(metrics_->master().generation.load());
    owns_stats_ = false;  // until this master serves
    return {};
  }
  std::uint64_t seeds[3] = {};
  if (getrandom(seeds, sizeof(seeds), 0) != sizeof(seeds)) {
    seeds[0] = static_cast<std::uint64_t>(base::monotonicMs()) * 0x9e3779b97f4a7c15ull ^ getpid();
    seeds[1] = ~seeds[0];
    seeds[2] = seeds[0] ^ 0x5bd1e995;
  }
  client_limits_->seed(seeds[0]);
  pools_->seed(seeds[1]);
  control_->setInstance(seeds[2] | 1);  // never 0
  return {};
}

void Master::spawnGeneration() {
  generation_ = ++last_generation_;
  noteGeneration(generation_, "starting");
  unsigned n = config_->effectiveWorkers();
  backoff_ms_.assign(n, 0);
  respawns_.clear();
  for (unsigned slot = 0; slot < n; ++slot) {
    spawnWorker(slot);
  }
}

std::size_t Master::freeWorkerSlots() const {
  return std::min(metrics_->freeSlots(), client_limits_->freeTables());
}

std::string Master::slotShortage(unsigned needed) const {
  std::size_t older = 0;
  for (const auto& w : workers_) {
    older += w.generation != generation_ ? 1 : 0;
  }
  return "not enough worker slots: " + std::to_string(needed) + " needed, " +
         std::to_string(freeWorkerSlots()) + " of " + std::to_string(metrics::kMaxSlots) +
         " free (this master has " + std::to_string(workers_.size()) + " worker(s), " +
         std::to_string(older) +
         " of them draining older generations; a previous binary's draining workers count too)."
         " Retry once draining workers have exited; shutdown_timeout and "
         "max_draining_generations bound how long that takes";
}

void Master::spawnWorker(unsigned slot) {
  // The worker's slots are taken before the fork: a worker never runs without them, and a
  // shortage is logged here, not discovered in silence by the worker.
  std::size_t mslot = metrics_->reserveSlot(pid_);
  std::size_t ltable = mslot == metrics::Registry::kNoSlot ? limits::ClientLimits::kNoTable
                                                           : client_limits_->reserve(pid_);
  auto unreserve = [&] {
    if (mslot != metrics::Registry::kNoSlot) {
      metrics_->releaseSlot(mslot);
    }
    if (ltable != limits::ClientLimits::kNoTable) {
      client_limits_->unreserve(ltable);
    }
  };
  if (ltable == limits::ClientLimits::kNoTable) {
    unreserve();
    LOG_ERROR("cannot start worker %u of generation %u: %s; trying again in %llu ms", slot,
              generation_, slotShortage(1).c_str(),
              static_cast<unsigned long long>(kRespawnBackoffMaxMs));
    respawns_.push_back({slot, base::monotonicMs() + kRespawnBackoffMaxMs});
    return;
  }
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    LOG_ERROR("pipe2 failed: %s", base::errnoText(errno).c_str());
    unreserve();
    respawns_.push_back({slot, base::monotonicMs() + kRespawnBackoffMaxMs});
    return;
  }
  pid_t pid = fork();
  if (pid < 0) {
    LOG_ERROR("fork failed: %s", base::errnoText(errno).c_str());
    close(pipefd[0]);
    close(pipefd[1]);
    unreserve();
    respawns_.push_back({slot, base::monotonicMs() + kRespawnBackoffMaxMs});
    return;
  }
  if (pid == 0) {
    close(pipefd[0]);
    prepareChild("worker");
    WorkerSpec spec;
    spec.config = config_.get();
    spec.tls = tls_.get();
    spec.plugins = plugins_.get();
    for (auto& l : listeners_) {
      (l.addr.console ? spec.console_fds : spec.listen_fds).push_back(l.fd.get());
      if (l.addr.proxy_protocol) {
        spec.proxy_listeners.emplace_back(l.fd.get(), l.addr);
      }
    }
    spec.cancels = cancels_.get();
    spec.metrics = metrics_.get();
    spec.backends = backends_.get();
    spec.client_limits = client_limits_.get();
    spec.pools = pools_.get();
    spec.control = control_.get();
    spec.admin_fd = admin_.fd.get();
    spec.ready_fd = pipefd[1];
    spec.slot = slot;
    spec.generation = generation_;
    spec.metrics_slot = mslot;
    spec.limits_table = ltable;
    // exit, not _exit: LeakSanitizer checks a worker's memory at exit in sanitizer builds.
    std::exit(runWorker(spec));
  }
  close(pipefd[1]);
  // Reaping folds and frees by owner pid; the child cannot be reaped before this runs.
  metrics_->assignSlot(mslot, pid);
  client_limits_->assign(ltable, pid);
  WorkerProc w;
  w.pid = pid;
  w.slot = slot;
  w.generation = generation_;
  w.started_ms = base::monotonicMs();
  w.ready_fd = pipefd[0];
  workers_.push_back(w);
  publishStats();
  LOG_DEBUG("started worker %d (slot %u, generation %u)", pid, slot, generation_);
}

void Master::onWorkerReady(WorkerProc& w) {
  close(w.ready_fd);
  w.ready_fd = -1;
  w.ready = true;
  if (!reload_pending_ || w.generation != generation_) {
    return;
  }
  for (const auto& other : workers_) {
    if (other.generation == generation_ && !other.ready) {
      return;  // not all of the new generation is ready yet
    }
  }
  reload_pending_ = false;
  noteGeneration(generation_, "serving");
  if (previous_) {
    previous_.reset();  // the master's copies of sockets no longer listened on close here
    metrics_->master().reloads_ok.fetch_add(1);
  }
  if (upgrade_parent_ != 0) {
    owns_stats_ = true;  // taking over from the previous master
    publishStats();
    publishConfig();
  }
  if (owns_stats_) {
    metrics_->master().serving.store(1);
  }
  notifySystemd("READY=1\nSTATUS=serving " + std::to_string(config_->mappings.size()) +
                " mapping(s), generation " + std::to_string(generation_));
  if (upgrade_parent_ != 0) {
    // We are the new binary and fully serving: the old master can drain and go.
    if (getppid() == upgrade_parent_) {
      LOG_INFO("upgrade: serving; telling the previous master (pid %d) to drain", upgrade_parent_);
      kill(upgrade_parent_, SIGQUIT);
    }
    upgrade_parent_ = 0;
    return;
  }
  LOG_INFO("generation %u is serving; old workers drain their sessions", generation_);
  retireOldGenerations();
}

void Master::prepareChild(const char* role) {
  signal_fd_.reset();
  previous_.reset();  // sockets the child must not keep open (see stopListening in worker.cc)
  for (auto& w : workers_) {
    if (w.ready_fd >= 0) {
      close(w.ready_fd);
    }
  }
  // No child outlives the master, even one killed with SIGKILL.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != pid_) {
    _exit(1);
  }
  // The master's signals stay blocked: their dispositions are still the defaults, which would
  // kill the child on a reopen or quit sent now. The child unblocks them once its handlers are
  // installed, and what arrived meanwhile is delivered then.
  log::setRole(role);
}

void Master::restartHealthChecker() {
  if (checker_pid_ > 0) {
    kill(checker_pid_, SIGTERM);  // reaped as an old checker: its pid is forgotten now
    checker_pid_ = -1;
  }
  checker_due_ms_ = 0;
  checker_backoff_ms_ = 0;
  spawnHealthChecker();
}

void Master::spawnHealthChecker() {
  bool wanted = false;
  for (const auto& m : config_->mappings) {
    wanted = wanted || m.health.enabled;
  }
  if (!wanted || stopping_) {
    return;
  }
  pid_t pid = fork();
  if (pid < 0) {
    LOG_ERROR("fork of the health checker failed: %s", base::errnoText(errno).c_str());
    checker_due_ms_ = base::monotonicMs() + kRespawnBackoffMaxMs;
    return;
  }
  if (pid == 0) {
    prepareChild("health");
    for (auto& l : listeners_) {
      l.fd.reset();  // the checker serves no clients
    }
    admin_.fd.reset();
    std::exit(upstream::runHealthChecker(*config_, *backends_));
  }
  checker_pid_ = pid;
  checker_started_ms_ = base::monotonicMs();
  LOG_DEBUG("started health checker %d", pid);
}

void Master::retireOldGenerations() {
  // Old generations get SIGQUIT: they stop accepting and exit when their sessions end.
  for (auto& w : workers_) {
    if (w.generation != generation_ && !w.quitting) {
      kill(w.pid, SIGQUIT);
      w.quitting = true;
    }
  }
  // Too many generations draining at once: close the oldest ones' sessions now.
  std::vector<unsigned> gens;
  for (const auto& w : workers_) {
    if (w.generation != generation_ &&
        std::find(gens.begin(), gens.end(), w.generation) == gens.end()) {
      gens.push_back(w.generation);
    }
  }
  std::sort(gens.begin(), gens.end());
  while (gens.size() > config_->max_draining_generations) {
    unsigned oldest = gens.front();
    gens.erase(gens.begin());
    LOG_WARN("more than %u generations draining: closing generation %u's sessions now",
             config_->max_draining_generations, oldest);
    for (auto& w : workers_) {
      if (w.generation == oldest && w.term_sent_ms == 0) {
        kill(w.pid, SIGTERM);
        w.term_sent_ms = base::monotonicMs();
      }
    }
  }
}

void Master::reapChildren() {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    releaseWorker(pid);
    if (pid == upgrade_child_) {
      onUpgradeChildExit(status);
      continue;
    }
    if (pid == checker_pid_) {
      checker_pid_ = -1;
      if (!stopping_) {
        std::uint64_t now = base::monotonicMs();
        checker_backoff_ms_ =
            now - checker_started_ms_ < kYoungWorkerMs
                ? std::min(std::max(checker_backoff_ms_ * 2, kRespawnBackoffMinMs),
                           kRespawnBackoffMaxMs)
                : 0;
        LOG_ERROR("health checker %d %s; starting a new one", pid, describeExit(status).c_str());
        checker_due_ms_ = now + checker_backoff_ms_;
      }
      continue;
    }
    auto it = std::find_if(workers_.begin(), workers_.end(),
                           [pid](const WorkerProc& w) { return w.pid == pid; });
    if (it == workers_.end()) {
      continue;
    }
    WorkerProc w = *it;
    if (w.ready_fd >= 0) {
      close(w.ready_fd);
    }
    if (std::size_t n = net::kernel_splice::sweep(); n > 0) {
      LOG_DEBUG("in-kernel splice: forgot %zu socket(s) of worker %d", n, pid);
    }
    workers_.erase(it);
    publishStats();
    if (!w.ready && w.generation == generation_ && reload_pending_ && !stopping_) {
      // It cannot serve, and neither can the generation it belongs to: the one serving stays.
      std::string why = "worker " + std::to_string(pid) + " of generation " +
                        std::to_string(w.generation) + " " + describeExit(status) +
                        " before it was ready";
      if (previous_) {
        abortReload(why);
        continue;
      }
      if (upgrade_parent_ != 0) {
        LOG_ERROR("upgrade: %s; exiting so that the previous master keeps serving", why.c_str());
        exit_code_ = 1;
        beginStop(false);
        continue;
      }
    }
    bool expected = stopping_ || w.quitting || w.term_sent_ms != 0 || w.generation != generation_;
    if (expected) {
      // A draining or stopping worker ends by itself; a signal (other than the KILL that follows
      // an unheeded TERM) took its sessions with it, and that must not pass unseen.
      bool killed = WIFSIGNALED(status) && !(WTERMSIG(status) == SIGKILL && w.term_sent_ms != 0);
      if (killed) {
        LOG_ERROR("worker %d (generation %u) %s", pid, w.generation, describeExit(status).c_str());
      } else {
        LOG_DEBUG("worker %d (generation %u) %s", pid, w.generation, describeExit(status).c_str());
      }
      continue;
    }
    metrics_->master().worker_restarts.fetch_add(1);
    std::uint64_t now = base::monotonicMs();
    std::uint64_t& backoff = backoff_ms_[w.slot];
    if (now - w.started_ms < kYoungWorkerMs) {
      backoff = backoff == 0 ? kRespawnBackoffMinMs : std::min(backoff * 2, kRespawnBackoffMaxMs);
    } else {
      backoff = 0;
    }
    LOG_ERROR("worker %d %s; starting a new one%s", pid, describeExit(status).c_str(),
              backoff ? (" in " + std::to_string(backoff) + " ms").c_str() : "");
    respawns_.push_back({w.slot, now + backoff});
  }
}

void Master::reloadFailed(const base::Error& error, bool recorded) {
  if (!recorded) {
    noteGeneration(0, "refused", error.message);  // the configuration never made a generation
  }
  ++reload_failures_;
  metrics_->master().reloads_failed.fetch_add(1);
  LOG_ERROR("reload failed (%u so far), still serving the previous configuration:\n%s",
            reload_failures_, error.message.c_str());
  notifySystemd("READY=1\nSTATUS=reload failed; serving the previous configuration");
}

void Master::abortReload(const std::string& why) {
  Previous prev = std::move(*previous_);
  previous_.reset();
  // Every generation newer than the serving one stops (a ready worker keeps what it accepted
  // until those sessions end).
  for (auto& w : workers_) {
    if (w.generation > prev.generation && !w.quitting) {
      kill(w.pid, SIGQUIT);
      w.quitting = true;
    }
  }
  config_ = std::move(prev.config);
  if (auto st = audit_->configure(config_->audit); !st) {
    LOG_ERROR("%s", st.error().message.c_str());
  }
  audit::configure(config_->audit);
  tls_ = std::move(prev.tls);
  plugins_ = std::move(prev.plugins);
  listeners_ = std::move(prev.listeners);
  admin_ = std::move(prev.admin);
  generation_ = prev.generation;
  backoff_ms_ = std::move(prev.backoff_ms);
  reload_pending_ = false;
  // A worker of the serving generation that died meanwhile was not replaced (it looked old then).
  respawns_.clear();
  std::uint64_t now = base::monotonicMs();
  for (unsigned slot = 0; slot < config_->effectiveWorkers(); ++slot) {
    bool alive = std::any_of(workers_.begin(), workers_.end(), [&](const WorkerProc& w) {
      return w.generation == generation_ && w.slot == slot;
    });
    if (!alive) {
      respawns_.push_back({slot, now});
    }
  }
  if (owns_stats_) {
    auto& ms = metrics_->master();
    std::snprintf(ms.config_hash, sizeof(ms.config_hash), "%s", config_->hash.c_str());
  }
  log::setDebug(config_->debug);
  publishStats();
  restartHealthChecker();
  for (auto& g : history_) {
    if (g.generation > static_cast<std::int64_t>(prev.generation) && g.state == "starting") {
      g.state = "failed";
      g.detail = why;
    }
  }
  publishGenerations();
  reloadFailed(base::Error{why}, true);
}

void Master::reload() {
  if (stopping_) {
    return;
  }
  if (upgrade_child_ != 0) {
    // Both masters register in the shared tables, which have one writer each: the new master
    // takes reloads once it serves.
    LOG_WARN("reload ignored: a binary upgrade is in progress (pid %d)", upgrade_child_);
    return;
  }
  LOG_INFO("reloading configuration from %s", opts_.config_path.c_str());
  notifySystemd("RELOADING=1");
  auto loaded = config::loadFile(opts_.config_path);
  if (!loaded) {
    reloadFailed(loaded.error());
    return;
  }
  auto next = std::make_shared<const config::Config>(std::move(*loaded));
  // The new generation starts beside every worker still alive: refuse now what cannot fit.
  if (unsigned needed = next->effectiveWorkers(); needed > freeWorkerSlots()) {
    reloadFailed(base::Error{"the new generation cannot start: " + slotShortage(needed)});
    return;
  }
  if (auto st = sharedTablesFit(*next); !st) {
    reloadFailed(base::Error{opts_.config_path + ": " + st.error().message});
    return;
  }
  // Certificates are read now, in the master: a missing or broken file keeps the old generation
  // (and its certificates) serving.
  auto nextTls = tls::Contexts::build(*next);
  if (!nextTls) {
    reloadFailed(nextTls.error());
    return;
  }
  if (auto st = prepareKernelSplice(*next); !st) {
    reloadFailed(st.error());
    return;
  }
  // Plugins load now, in the master: one that does not compile keeps the old ones serving.
  auto nextPlugins = buildPlugins(*next);
  if (!nextPlugins) {
    reloadFailed(nextPlugins.error());
    return;
  }
  if (next->pid_file != config_->pid_file) {
    LOG_WARN("pid_file changed to \"%s\": it cannot change on reload; keeping \"%s\" until restart",
             next->pid_file.c_str(), pid_file_.c_str());
  }
  if (next->log_file != config_->log_file) {
    LOG_WARN("log_file cannot change on reload; keeping the current one until restart");
  }
  std::vector<Listener> listeners;
  if (auto st = openListeners(*next, listeners); !st) {
    reloadFailed(st.error());
    return;
  }
  // The new generation's events go where the new configuration says; a sink that cannot be
  // opened keeps the old configuration (and its sink) serving.
  if (auto st = audit_->configure(next->audit); !st) {
    reloadFailed(st.error());
    return;
  }
  audit::configure(next->audit);
  for (const auto& old : listeners_) {
    bool kept = false;
    for (const auto& l : listeners) {
      kept = kept || l.addr == old.addr;
    }
    if (!kept) {
      LOG_INFO("no longer listening on %s (old workers close it as they drain)",
               net::describe(old.addr).c_str());
    }
  }
  if (!previous_) {
    // Kept until the new generation serves: a worker of it that dies before it is ready brings
    // this one back.
    previous_ = Previous{config_,           tls_,        plugins_,   std::move(listeners_),
                         std::move(admin_), generation_, backoff_ms_};
  }
  if (next->admin.enabled) {
    admin_ = std::move(listeners.back());
    listeners.pop_back();
  } else {
    admin_ = Listener{};
  }
  listeners_ = std::move(listeners);
  config_ = std::move(next);
  tls_ = std::move(*nextTls);
  plugins_ = std::move(*nextPlugins);
  registerMappings(*config_);
  log::setDebug(config_->debug);
  reload_pending_ = true;
  spawnGeneration();
  restartHealthChecker();  // the backend table keeps the health of backends that remain
  LOG_INFO("configuration reloaded; generation %u starting %u worker(s)", generation_,
           config_->effectiveWorkers());
}

void Master::reopenLogs() {
  if (auto st = log::reopen(); !st) {
    LOG_ERROR("%s", st.error().message.c_str());
  }
  if (auto st = audit_->reopen(); !st) {
    LOG_ERROR("%s", st.error().message.c_str());
  }
  for (const auto& w : workers_) {
    kill(w.pid, SIGUSR1);
  }
  if (checker_pid_ > 0) {
    kill(checker_pid_, SIGUSR1);
  }
  LOG_INFO("log files reopened");
}

void Master::beginStop(bool graceful) {
  if (stopping_ && (graceful || !graceful_)) {
    return;  // a second quit (or stop after stop) changes nothing
  }
  stopping_ = true;
  graceful_ = graceful;
  respawns_.clear();
  if (!handed_over_ && upgrade_parent_ == 0) {
    notifySystemd("STOPPING=1");  // not an upgrade's new master giving up: the old one serves on
  }
  listeners_.clear();  // workers hold their own copies until they stop accepting
  admin_ = Listener{};
  if (owns_stats_) {
    metrics_->master().serving.store(0);
  }
  if (checker_pid_ > 0) {
    kill(checker_pid_, SIGTERM);
  }
  checker_due_ms_ = 0;
  LOG_INFO("%s shutdown: %zu worker(s)", graceful ? "graceful" : "fast", workers_.size());
  for (auto& w : workers_) {
    if (graceful) {
      kill(w.pid, SIGQUIT);
      w.quitting = true;
    } else {
      kill(w.pid, SIGTERM);
      w.term_sent_ms = base::monotonicMs();
    }
  }
}

base::Result<std::shared_ptr<plugin::Host>> Master::buildPlugins(const config::Config& cfg) {
  auto host = plugin::Host::build(cfg);
  if (host && *host) {
    (*host)->setCounters(metrics_->shared()->plugin_counters);
  }
  return host;
}

base::Status Master::prepareKernelSplice(const config::Config& cfg) {
  bool wanted = false, demanded = false;
  std::string demander;
  for (const auto& m : cfg.mappings) {
    config::SpliceMode mode = cfg.spliceOf(m);
    wanted = wanted || mode != config::SpliceMode::kUser;
    if (mode == config::SpliceMode::kKernel && !demanded) {
      demanded = true;
      demander = m.external;
    }
  }
  if (!wanted || net::kernel_splice::available()) {
    return {};
  }
  std::string why;
  if (net::kernel_splice::load(why)) {
    LOG_WARN(
        "in-kernel splice loaded: TLS passthrough sessions move their bytes in the kernel "
        "(experimental; see pgproxy.yaml(5), splice)");
    return {};
  }
  if (demanded) {
    return base::Error{"mapping \"" + demander +
                       "\" has splice: kernel, but the in-kernel splice is unavailable: " + why +
                       (net::kernel_splice::built()
                            ? " (it needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON; see pgproxy(8))"
                            : "")};
  }
  if (!kernel_splice_tried_) {
    LOG_INFO("in-kernel splice unavailable (%s); passthrough sessions are spliced in user space",
             why.c_str());
  }
  kernel_splice_tried_ = true;
  return {};
}

base::Status Master::startAudit() {
  auto writer = audit::Writer::create();
  if (!writer) {
    return writer.error();
  }
  audit_.emplace(std::move(*writer));
  metrics::Shared* shared = metrics_->shared();
  auto* counters = shared->retired.counters;  // the master has no slot of its own
  audit_->setCounters(&counters[static_cast<std::size_t>(metrics::Counter::kAuditWritten)],
                      &counters[static_cast<std::size_t>(metrics::Counter::kAuditDropped)],
                      &shared->master.audit_failing);
  if (auto st = audit_->configure(config_->audit); !st) {
    return st;
  }
  // Forked workers inherit the channel and the settings; each points the drop counter at its
  // own metrics slot.
  audit::setChannel(audit_->sendFd());
  audit::configure(config_->audit);
  audit::setCounters(&counters[static_cast<std::size_t>(metrics::Counter::kAuditDropped)],
                     &shared->master.audit_failing);
  return {};
}

// Signals are admin actions: the audit log says which one came, and from which process.
void Master::auditSignal(int sig, pid_t sender) {
  const char* action = nullptr;
  switch (sig) {
    case SIGHUP:
      action = "reload";
      break;
    case SIGUSR1:
      action = "reopen";
      break;
    case SIGUSR2:
      action = "upgrade";
      break;
    case SIGQUIT:
      action = "quit";
      break;
    case SIGTERM:
    case SIGINT:
      action = "stop";
      break;
    default:
      return;
  }
  audit::Event e("admin");
  e.text("via", "signal").text("action", action).text("signal", sigabbrev_np(sig));
  if (sender > 0) {
    e.number("sender_pid", static_cast<std::uint64_t>(sender));
  }
  audit::emit(e);
}

void Master::handleSignal(int sig, pid_t sender) {
  auditSignal(sig, sender);
  switch (sig) {
    case SIGCHLD:
      reapChildren();
      break;
    case SIGTERM:
    case SIGINT:
      beginStop(false);
      break;
    case SIGQUIT:
      if (sender != 0 && sender == upgrade_child_) {
        // The new binary serves: it becomes the service's main process, we drain and go.
        LOG_INFO("upgrade: new master %d is serving; draining and exiting", sender);
        notifySystemd("MAINPID=" + std::to_string(sender) + "\nSTATUS=handed over to pid " +
                      std::to_string(sender));
        handed_over_ = true;
        owns_stats_ = false;  // the new master's to write now
      }
      beginStop(true);
      break;
    case SIGHUP:
      reload();
      break;
    case SIGUSR1:
      reopenLogs();
      break;
    case SIGUSR2:
      upgrade();
      break;
    default:
      break;
  }
}

void Master::adoptInheritedListeners() {
  const char* fds = std::getenv(kListenFdsEnv);
  if (const char* parent = std::getenv(kUpgradeParentEnv)) {
    upgrade_parent_ = static_cast<pid_t>(base::parseUnsigned(parent).value_or(0));
  }
  if (const char* shared = std::getenv(kSharedFdEnv); shared && upgrade_parent_ != 0) {
    if (auto fd = base::parseUnsigned(shared); fd && *fd <= 0x7fffffff) {
      inherited_shared_fd_ = static_cast<int>(*fd);
    }
  }
  if (fds) {
    std::string list = fds;
    std::size_t start = 0;
    while (start < list.size()) {
      std::size_t end = list.find(',', start);
      std::string item = list.substr(start, end == std::string::npos ? end : end - start);
      start = end == std::string::npos ? list.size() : end + 1;
      std::size_t c1 = item.find(':'), c2 = item.find(':', c1 + 1);
      auto fd = base::parseUnsigned(item.substr(0, c1));
      auto port = base::parseUnsigned(item.substr(c1 + 1, c2 - c1 - 1));
      if (c1 == std::string::npos || c2 == std::string::npos || !fd || !port) {
        continue;
      }
      Listener l;
      l.addr.address = item.substr(c2 + 1);
      l.addr.port = static_cast<std::uint16_t>(*port);
      l.fd.reset(static_cast<int>(*fd));
      fcntl(l.fd.get(), F_SETFD, FD_CLOEXEC);
      inherited_.push_back(std::move(l));
    }
  }
  // Not for our own children, nor for a later upgrade of ours.
  unsetenv(kListenFdsEnv);
  unsetenv(kUpgradeParentEnv);
  unsetenv(kSharedFdEnv);
}

void Master::upgrade() {
  if (stopping_ || upgrade_child_ != 0) {
    LOG_WARN("upgrade ignored: %s", stopping_ ? "shutting down" : "an upgrade is in progress");
    return;
  }
  std::string list;
  std::vector<const Listener*> handed;
  for (const auto& l : listeners_) {
    handed.push_back(&l);
  }
  if (admin_.fd.valid()) {
    handed.push_back(&admin_);
  }
  for (const Listener* l : handed) {
    list += (list.empty() ? "" : ",") + std::to_string(l->fd.get()) + ":" +
            std::to_string(l->addr.port) + ":" + l->addr.address;
  }
  std::string oldbin = pid_file_ + ".oldbin";
  if (!pid_file_.empty() && rename(pid_file_.c_str(), oldbin.c_str()) != 0) {
    LOG_ERROR("upgrade: cannot rename the pid file to %s: %s", oldbin.c_str(),
              base::errnoText(errno).c_str());
    return;
  }
  LOG_INFO("upgrade: starting %s", exe_path_.c_str());
  pid_t pid = fork();
  if (pid < 0) {
    LOG_ERROR("upgrade: fork failed: %s", base::errnoText(errno).c_str());
    if (!pid_file_.empty()) {
      rename(oldbin.c_str(), pid_file_.c_str());
    }
    return;
  }
  if (pid == 0) {
    for (const Listener* l : handed) {
      fcntl(l->fd.get(), F_SETFD, 0);  // these cross exec
    }
    fcntl(shared_->fd(), F_SETFD, 0);
    setenv(kSharedFdEnv, std::to_string(shared_->fd()).c_str(), 1);
    // The signal mask crosses exec too: the new master's signals stay blocked (not killing it by
    // their default action) until its signalfd reads them.
    setenv(kListenFdsEnv, list.c_str(), 1);
    setenv(kUpgradeParentEnv, std::to_string(pid_).c_str(), 1);
    std::vector<char*> argv;
    for (const auto& a : opts_.argv) {
      argv.push_back(const_cast<char*>(a.c_str()));
    }
    argv.push_back(nullptr);
    execv(exe_path_.c_str(), argv.data());
    std::fprintf(stderr, "pgproxy: upgrade: cannot execute %s: %s\n", exe_path_.c_str(),
                 base::errnoText(errno).c_str());
    _exit(127);
  }
  upgrade_child_ = pid;
}

void Master::onUpgradeChildExit(int status) {
  upgrade_child_ = 0;
  if (stopping_) {
    return;  // it took over and we are draining; its exit is its own business
  }
  LOG_ERROR("upgrade failed: the new binary %s; still serving with this one",
            describeExit(status).c_str());
  if (!pid_file_.empty()) {
    rename((pid_file_ + ".oldbin").c_str(), pid_file_.c_str());
  }
}

void Master::releaseWorker(pid_t pid) {
  cancels_->releaseOwner(pid);
  // The pool table knows workers by their metrics slot, which the metrics fold frees.
  for (std::size_t i = 0; i < metrics::kMaxSlots; ++i) {
    if (metrics_->slotOwner(i) == pid) {
      pools_->foldSlot(i);
    }
  }
  metrics_->foldSlot(pid);
  client_limits_->release(pid);
}

void Master::sweepForeignOwners() {
  std::vector<std::int32_t> owners;
  for (std::size_t i = 0; i < metrics::kMaxSlots; ++i) {
    owners.push_back(metrics_->slotOwner(i));
    owners.push_back(client_limits_->tableOwner(i));
  }
  std::sort(owners.begin(), owners.end());
  owners.erase(std::unique(owners.begin(), owners.end()), owners.end());
  std::int64_t foreign = 0;
  std::vector<std::int32_t> gone;
  for (std::int32_t owner : owners) {
    bool mine = owner <= 0 || owner == pid_ ||
                std::any_of(workers_.begin(), workers_.end(),
                            [owner](const WorkerProc& w) { return w.pid == owner; });
    if (mine) {
      continue;
    }
    if (kill(owner, 0) == 0 || errno != ESRCH) {
      ++foreign;
      continue;
    }
    // Its master frees its slots when it reaps it. Gone on two sweeps a second apart means that
    // master is gone too (killed), and nobody else would: its gauges and counts would stay.
    if (std::find(gone_.begin(), gone_.end(), owner) != gone_.end()) {
      LOG_WARN("freeing the shared slots of process %d, a previous binary's worker that is gone",
               owner);
      releaseWorker(owner);
    } else {
      gone.push_back(owner);
    }
  }
  gone_ = std::move(gone);
  if (foreign != foreign_workers_) {
    foreign_workers_ = foreign;
    publishStats();
  }
}

void Master::sampleRates(std::uint64_t now_ms) {
  admin::Sources src;
  src.config = config_.get();
  src.metrics = metrics_.get();
  src.pools = pools_.get();
  std::vector<admin::MappingTotals> totals =
      admin::mappingTotals(admin::capture(src, admin::Topic::kStats));
  double seconds = static_cast<double>(now_ms - rate_sampled_ms_) / 1000.0;
  for (const auto& now : totals) {
    for (const auto& before : rate_totals_) {
      if (before.name == now.name) {
        control_->setRates(metrics_->mappingIndex(now.name),
                           admin::ratesBetween(before, now, seconds));
      }
    }
  }
  rate_totals_ = std::move(totals);
  rate_sampled_ms_ = now_ms;
}

void Master::runTimers() {
  std::uint64_t now = base::monotonicMs();
  if (now >= audit_report_due_ms_) {
    std::string why;
    if (std::uint64_t lost = audit_->takeLost(why); lost > 0) {
      LOG_ERROR("audit: %llu event(s) lost in the last seconds: %s",
                static_cast<unsigned long long>(lost), why.c_str());
      audit_report_due_ms_ = now + 10'000;  // one line per period, however many were lost
    }
  }
  if (owns_stats_ && now - rate_sampled_ms_ >= kStatsPeriodMs) {
    sampleRates(now);
  }
  if (adopted_ && now >= next_sweep_ms_) {
    next_sweep_ms_ = now + kSweepIntervalMs;
    sweepForeignOwners();
  }
  if (!stopping_) {
    std::vector<Respawn> due;
    for (auto it = respawns_.begin(); it != respawns_.end();) {
      if (it->due_ms <= now) {
        due.push_back(*it);
        it = respawns_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& r : due) {
      spawnWorker(r.slot);
    }
    if (checker_due_ms_ != 0 && checker_due_ms_ <= now && checker_pid_ < 0) {
      checker_due_ms_ = 0;
      spawnHealthChecker();
    }
  }
  for (auto& w : workers_) {
    if (w.term_sent_ms != 0 && now - w.term_sent_ms > kStopGraceMs) {
      LOG_WARN("worker %d did not stop within %llu ms; killing it", w.pid,
               static_cast<unsigned long long>(kStopGraceMs));
      kill(w.pid, SIGKILL);
      w.term_sent_ms = now;  // do not repeat every poll
    }
  }
}

std::uint64_t Master::pollTimeoutMs() const {
  std::uint64_t timeout = 1000;
  std::uint64_t now = base::monotonicMs();
  for (const auto& r : respawns_) {
    timeout = std::min(timeout, r.due_ms > now ? r.due_ms - now : 0);
  }
  if (checker_due_ms_ != 0) {
    timeout = std::min(timeout, checker_due_ms_ > now ? checker_due_ms_ - now : 0);
  }
  return timeout;
}

int Master::run() {
  std::vector<Listener> listeners;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  exe_path_ = n > 0 ? std::string(exe, static_cast<std::size_t>(n)) : opts_.argv.at(0);
  adoptInheritedListeners();
  pid_file_ = opts_.pid_file.empty() ? config_->pid_file : opts_.pid_file;
  if (!pid_file_.empty()) {
    if (auto live = readLivePid(pid_file_); live.ok()) {
      LOG_ERROR("pgproxy is already running with pid %d (pid file \"%s\")", *live,
                pid_file_.c_str());
      return 1;
    }
  }
  if (auto st = openListeners(*config_, listeners); !st) {
    LOG_ERROR("%s", st.error().message.c_str());
    return 1;
  }
  if (config_->admin.enabled) {
    admin_ = std::move(listeners.back());
    listeners.pop_back();
  }
  listeners_ = std::move(listeners);
  inherited_.clear();  // sockets the new configuration no longer listens on
  if (opts_.detach && upgrade_parent_ == 0) {
    if (daemon(0, config_->log_file.empty() ? 1 : 0) != 0) {
      LOG_ERROR("cannot detach: %s", base::errnoText(errno).c_str());
      return 1;
    }
    pid_ = getpid();
  }
  if (!pid_file_.empty()) {
    if (auto st = writePidFile(pid_file_); !st) {
      LOG_ERROR("%s", st.error().message.c_str());
      return 1;
    }
  }
  raiseFileLimit();
  if (auto st = setUpSharedMemory(); !st) {
    LOG_ERROR("%s", st.error().message.c_str());
    removePidFile(pid_file_, pid_);
    return 1;
  }
  // Tables adopted from an upgraded master already hold its names and backends.
  if (auto st = sharedTablesFit(*config_); !st) {
    LOG_ERROR("cannot start: %s", st.error().message.c_str());
    removePidFile(pid_file_, pid_);
    return 1;
  }
  registerMappings(*config_);
  if (auto st = startAudit(); !st) {
    LOG_ERROR("cannot start: %s", st.error().message.c_str());
    removePidFile(pid_file_, pid_);
    return 1;
  }
  if (auto st = prepareKernelSplice(*config_); !st) {
    LOG_ERROR("cannot start: %s", st.error().message.c_str());
    removePidFile(pid_file_, pid_);
    return 1;
  }
  if (auto host = buildPlugins(*config_); !host) {
    LOG_ERROR("cannot start: %s", host.error().message.c_str());
    removePidFile(pid_file_, pid_);
    return 1;
  } else {
    plugins_ = std::move(*host);
  }
  // The master and the health checker have no slot: their drops count as retired ones.
  metrics::Slot& retired = metrics_->shared()->retired;
  log::setDropCounters(
      &retired.counters[static_cast<std::size_t>(metrics::Counter::kLogLinesDropped)],
      &retired.counters[static_cast<std::size_t>(metrics::Counter::kAccessLogLinesDropped)]);
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2}) {
    sigaddset(&set, sig);
  }
  sigprocmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  signal_fd_.reset(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_.valid()) {
    LOG_ERROR("signalfd failed: %s", base::errnoText(errno).c_str());
    removePidFile(pid_file_, pid_);
    return 1;
  }
  LOG_INFO("pgproxy %s started: %zu mapping(s), %u worker(s)", PACKAGE_VERSION,
           config_->mappings.size(), config_->effectiveWorkers());
  if (unsigned needed = config_->effectiveWorkers(); needed > freeWorkerSlots()) {
    LOG_ERROR("cannot start: %s", slotShortage(needed).c_str());
    removePidFile(pid_file_, pid_);
    return 1;
  }
  reload_pending_ = true;  // the first generation reports ready like any other
  spawnGeneration();
  spawnHealthChecker();

  while (!(stopping_ && workers_.empty())) {
    std::vector<pollfd> fds;
    fds.push_back({signal_fd_.get(), POLLIN, 0});
    std::vector<pid_t> owners;
    for (const auto& w : workers_) {
      if (w.ready_fd >= 0) {
        fds.push_back({w.ready_fd, POLLIN, 0});
        owners.push_back(w.pid);
      }
    }
    fds.push_back({audit_->receiveFd(), POLLIN, 0});
    int log_fds[2];
    for (int i = 0, k = log::pendingFds(log_fds); i < k; ++i) {
      fds.push_back({log_fds[i], POLLOUT, 0});  // lines wait for a stalled log (log.h)
    }
    int n = poll(fds.data(), fds.size(), static_cast<int>(pollTimeoutMs()));
    if (n < 0 && errno != EINTR) {
      LOG_ERROR("poll failed: %s", base::errnoText(errno).c_str());
    }
    log::flushPending();
    audit_->drain();
    for (std::size_t i = 1; i <= owners.size(); ++i) {
      if (fds[i].revents == 0) {
        continue;
      }
      for (auto& w : workers_) {
        if (w.pid != owners[i - 1] || w.ready_fd < 0) {
          continue;
        }
        char byte = 0;
        ssize_t got = read(w.ready_fd, &byte, 1);
        if (got == 1) {
          onWorkerReady(w);
        } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
          // EOF: it ended without saying ready; SIGCHLD tells how, and reapChildren decides.
          close(w.ready_fd);
          w.ready_fd = -1;
        }
      }
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info;
      while (read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
        handleSignal(static_cast<int>(info.ssi_signo), static_cast<pid_t>(info.ssi_pid));
      }
    }
    runTimers();
  }
  audit_->drain();  // the stop's own event
  removePidFile(pid_file_, pid_);
  if (!pid_file_.empty()) {
    removePidFile(pid_file_ + ".oldbin", pid_);
  }
  LOG_INFO("pgproxy stopped");
  return exit_code_;
}

}  // namespace

int runMaster(const Options& opts) {
  auto cfg = config::loadFile(opts.config_path);
  if (!cfg) {
    std::fprintf(stderr, "pgproxy: %s\n", cfg.error().message.c_str());
    return 1;
  }
  log::setRole("master");
  log::setDebug(cfg->debug);
  if (!cfg->log_file.empty()) {
    if (auto st = log::setFile(cfg->log_file); !st) {
      std::fprintf(stderr, "pgproxy: %s\n", st.error().message.c_str());
      return 1;
    }
  }
  auto tls = tls::Contexts::build(*cfg);
  if (!tls) {
    std::fprintf(stderr, "pgproxy: %s\n", tls.error().message.c_str());
    return 1;
  }
  Master master(opts, std::make_shared<const config::Config>(std::move(*cfg)), std::move(*tls));
  return master.run();
}

// Files the configuration names must be usable by the process that will run with it.
static std::vector<std::string> checkFiles(const config::Config& cfg) {
  std::vector<std::string> problems;
  auto dirOf = [](const std::string& path) {
    std::size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash ? slash : 1);
  };
  auto writable = [&](const std::string& key, const std::string& path) {
    if (path.empty()) {
      return;
    }
    if (access(path.c_str(), F_OK) == 0 ? access(path.c_str(), W_OK) != 0
                                        : access(dirOf(path).c_str(), W_OK) != 0) {
      problems.push_back(cfg.path + ": " + key + " \"" + path +
                         "\" cannot be written: " + base::errnoText(errno));
    }
  };
  writable("pid_file", cfg.pid_file);
  writable("log_file", cfg.log_file);
  for (const auto& m : cfg.mappings) {
    const std::string& f = m.health.password_file;
    if (!f.empty() && access(f.c_str(), R_OK) != 0) {
      problems.push_back(cfg.path + ": health_check.password_file \"" + f + "\" of \"" +
                         m.external + "\" cannot be read: " + base::errnoText(errno));
    }
  }
  return problems;
}

namespace {

base::Result<config::Config> checkServable(base::Result<config::Config> cfg) {
  if (cfg) {
    auto problems = checkFiles(*cfg);
    if (auto tls = tls::Contexts::build(*cfg); !tls) {
      problems.push_back(tls.error().message);
    }
    if (auto plugins = plugin::Host::build(*cfg); !plugins) {
      problems.push_back(plugins.error().message);
    }
    if (!problems.empty()) {
      std::string all;
      for (const auto& p : problems) {
        all += (all.empty() ? "" : "\n") + p;
      }
      cfg = base::Error{all};
    }
  }
  return cfg;
}

}  // namespace

base::Result<config::Config> loadForServing(const std::string& text, const std::string& name) {
  return checkServable(config::loadString(text, name));
}

int testConfig(const Options& opts) {
  auto cfg = checkServable(config::loadFile(opts.config_path));
  if (!cfg) {
    std::fprintf(stderr, "%s\n", cfg.error().message.c_str());
    std::printf("pgproxy: configuration file %s test failed\n", opts.config_path.c_str());
    return 1;
  }
  std::printf(
      "pgproxy: configuration file %s test is successful (%zu mapping(s), %zu listen "
      "address(es))\n",
      opts.config_path.c_str(), cfg->mappings.size(), cfg->listen.size());
  return 0;
}

int sendSignal(const Options& opts) {
  const SignalSpec* spec = findSignal(opts.signal);
  auto cfg = config::loadFile(opts.config_path);
  if (!cfg && spec->signo == SIGHUP) {
    // The master would refuse it too; saying why here is what the operator needs.
    std::fprintf(stderr, "%s\npgproxy: not reloading: the configuration is invalid\n",
                 cfg.error().message.c_str());
    return 1;
  }
  std::string pidFile = opts.pid_file;
  if (pidFile.empty()) {
    if (!cfg) {
      std::fprintf(stderr, "pgproxy: %s\n(name the pid file with -p to signal anyway)\n",
                   cfg.error().message.c_str());
      return 1;
    }
    pidFile = cfg->pid_file;
    if (pidFile.empty()) {
      std::fprintf(stderr, "pgproxy: %s sets no pid_file: set one, or name the pid file with -p\n",
                   opts.config_path.c_str());
      return 1;
    }
  }
  auto pid = readLivePid(pidFile);
  if (!pid) {
    std::fprintf(stderr, "pgproxy: %s\n", pid.error().message.c_str());
    return 1;
  }
  if (kill(*pid, spec->signo) != 0) {
    std::fprintf(stderr, "pgproxy: cannot signal process %d: %s\n", *pid,
                 base::errnoText(errno).c_str());
    return 1;
  }
  return 0;
}

}  // namespace pgproxy::process
