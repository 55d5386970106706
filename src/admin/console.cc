#include "pgproxy/admin/console.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "pgproxy/admin/control.h"
#include "pgproxy/audit/audit.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/pool/params.h"
#include "pgproxy/pool/shared_pools.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::admin {
namespace {

constexpr const char* kUndefinedObject = "42704";
constexpr const char* kSyntaxError = "42601";
constexpr const char* kSystemError = "58000";

Reply failure(const char* sqlstate, std::string message) {
  Reply r;
  r.sqlstate = sqlstate;
  r.message = std::move(message);
  return r;
}

Reply done(std::string tag) {
  Reply r;
  r.tag = std::move(tag);
  return r;
}

// The metrics index of the configured mapping named `name` (names are lower case in the
// configuration, as DNS names), or nullopt.
std::optional<std::size_t> mappingIndex(const CommandEnv& env, const std::string& name) {
  const Sources& src = env.sources;
  if (!src.config || !src.metrics) {
    return std::nullopt;
  }
  std::string lower = base::toLowerAscii(name);
  for (const auto& m : src.config->mappings) {
    if (m.external == lower) {
      std::size_t i = src.metrics->mappingIndex(m.external);
      return i == metrics::kUnknownMapping ? std::nullopt : std::optional<std::size_t>(i);
    }
  }
  return std::nullopt;
}

// The backend table slot of host:port when a configured mapping balances over it.
std::optional<std::size_t> backendSlot(const CommandEnv& env, const std::string& key) {
  const Sources& src = env.sources;
  if (!src.config || !src.backends) {
    return std::nullopt;
  }
  std::string lower = base::toLowerAscii(key);
  for (const auto& m : src.config->mappings) {
    for (const auto& b : m.backends) {
      if (base::toLowerAscii(b.key()) == lower) {
        std::size_t slot = src.backends->find(b.key());
        return slot == upstream::kNoBackend ? std::nullopt : std::optional<std::size_t>(slot);
      }
    }
  }
  return std::nullopt;
}

Reply setMappingFlag(const Command& c, CommandEnv& env, bool on) {
  auto index = mappingIndex(env, c.target);
  if (!index || !env.control) {
    return failure(kUndefinedObject, "no mapping \"" + c.target + "\" in the configuration");
  }
  bool was = env.control->setDisabled(*index, on);
  LOG_INFO("admin: %s by %s%s", formatCommand(c).c_str(), env.who.c_str(),
           was == on ? " (it already was)" : "");
  return done(on ? "DISABLE" : "ENABLE");
}

Reply setBackendFlag(const Command& c, CommandEnv& env, bool on) {
  auto slot = backendSlot(env, c.target);
  if (!slot || !env.control) {
    return failure(kUndefinedObject, "no backend \"" + c.target +
                                         "\" in the configuration (give it as host:port, as "
                                         "SHOW BACKENDS lists it)");
  }
  bool was = env.control->setDrained(*slot, on);
  LOG_INFO("admin: %s by %s%s", formatCommand(c).c_str(), env.who.c_str(),
           was == on ? " (it already was)" : "");
  return done(on ? "DRAIN BACKEND" : "UNDRAIN BACKEND");
}

Reply signalMaster(const Command& c, CommandEnv& env, int sig, const char* tag) {
  LOG_INFO("admin: %s by %s", formatCommand(c).c_str(), env.who.c_str());
  if (!env.signal_master || !env.signal_master(sig)) {
    return failure(kSystemError, "cannot signal the pgproxy master process: it is gone");
  }
  return done(tag);
}

// PAUSE and RESUME: the flag of one pooled mapping, or of all of them; PAUSE then waits until no
// server connection of theirs is in a transaction (active, or being reset) in any worker.
Reply pauseOrResume(const Command& c, CommandEnv& env) {
  const Sources& src = env.sources;
  const bool pause = c.verb == Verb::kPause;
  const std::string target = base::toLowerAscii(c.target);
  std::vector<std::string> names;
  for (const auto& m : src.config ? src.config->mappings : std::vector<config::Mapping>{}) {
    if (!target.empty() && m.external == target && !m.pool.enabled) {
      return failure(proto::sqlstate::kFeatureNotSupported,
                     "mapping \"" + m.external +
                         "\" does not pool its clients: PAUSE holds pooled transactions (DISABLE "
                         "refuses new clients of any mapping)");
    }
    if (target.empty() ? m.pool.enabled : m.external == target) {
      names.push_back(m.external);
    }
  }
  if (!target.empty() && names.empty()) {
    return failure(kUndefinedObject, "no mapping \"" + c.target + "\" in the configuration");
  }
  if (names.empty() || !env.control) {
    return failure(proto::sqlstate::kFeatureNotSupported,
                   "no mapping pools its clients: PAUSE holds pooled transactions only");
  }
  if (pause && !env.poll_until) {
    // Refused before the switch is set: a PAUSE nobody can see through is not left on.
    return failure(kSystemError, "this process cannot wait for PAUSE to take effect");
  }
  for (const auto& name : names) {
    if (auto index = mappingIndex(env, name)) {
      env.control->setPaused(*index, pause);
    }
  }
  LOG_INFO("admin: %s by %s", formatCommand(c).c_str(), env.who.c_str());
  if (!pause) {
    return done("RESUME");
  }
  Reply r = done("PAUSE");
  const pool::SharedPools* pools = src.pools;
  r.until = [pools, names] {
    if (!pools) {
      return true;
    }
    for (const pool::PoolSample& p : pools->samples()) {
      bool ours = std::find(names.begin(), names.end(), p.mapping) != names.end();
      if (ours && p.state(pool::ServerState::kActive) + p.state(pool::ServerState::kUsed) > 0) {
        return false;
      }
    }
    return true;
  };
  return r;
}

ControlRequest request(ControlKind kind, std::uint64_t number = 0, std::string name = {}) {
  ControlRequest r;
  r.kind = kind;
  r.number = number;
  r.name = std::move(name);
  return r;
}

Reply ask(const Command& c, const CommandEnv& env, ControlRequest request) {
  if (!env.ask_workers) {
    return failure(kSystemError, formatCommand(c) + ": this process cannot reach the workers");
  }
  Reply r;
  r.ask = std::move(request);
  return r;
}

Reply run(const Command& c, CommandEnv& env);

}  // namespace

Reply execute(const Command& c, CommandEnv& env) {
  Reply r = run(c, env);
  // What changes state is an admin action the audit log records, whoever asked (console, API).
  if (c.verb != Verb::kEmpty && c.verb != Verb::kShow && audit::enabled()) {
    audit::Event e("admin");
    e.text("by", env.who)
        .text("command", formatCommand(c))
        .text("result", r.ok() ? "ok" : "failed");
    if (!r.ok()) {
      e.text("reason", r.message).text("sqlstate", r.sqlstate ? r.sqlstate : "");
    }
    audit::emit(e);
  }
  return r;
}

namespace {

Reply run(const Command& c, CommandEnv& env) {
  switch (c.verb) {
    case Verb::kEmpty:
      return done("");
    case Verb::kShow: {
      if (c.topic == Topic::kClients || c.topic == Topic::kServers) {
        return ask(
            c, env,
            request(c.topic == Topic::kClients ? ControlKind::kClients : ControlKind::kServers));
      }
      Reply r = done("SHOW");
      r.rows = view(capture(env.sources, c.topic), c.topic);
      return r;
    }
    case Verb::kKill:
    case Verb::kReconnect: {
      if (!mappingIndex(env, c.target)) {
        return failure(kUndefinedObject, "no mapping \"" + c.target + "\" in the configuration");
      }
      LOG_INFO("admin: %s by %s", formatCommand(c).c_str(), env.who.c_str());
      return ask(
          c, env,
          request(c.verb == Verb::kKill ? ControlKind::kKillMapping : ControlKind::kReconnect, 0,
                  base::toLowerAscii(c.target)));
    }
    case Verb::kKillClient:
      LOG_INFO("admin: %s by %s", formatCommand(c).c_str(), env.who.c_str());
      return ask(c, env, request(ControlKind::kKillClient, c.client));
    case Verb::kDisable:
      return setMappingFlag(c, env, true);
    case Verb::kEnable:
      return setMappingFlag(c, env, false);
    case Verb::kDrainBackend:
      return setBackendFlag(c, env, true);
    case Verb::kUndrainBackend:
      return setBackendFlag(c, env, false);
    case Verb::kReload:
      return signalMaster(c, env, SIGHUP, "RELOAD");
    case Verb::kShutdown:
      // As pgproxy -s quit (graceful) and -s stop (fast).
      return signalMaster(c, env, c.wait ? SIGQUIT : SIGTERM, "SHUTDOWN");
    case Verb::kPause:
    case Verb::kResume:
      return pauseOrResume(c, env);
  }
  return failure(kSyntaxError, "unknown console command");  // every Verb is handled above
}

}  // namespace

Reply complete(const Command& c, const Gathered& g) {
  if (c.verb == Verb::kPause) {
    return done("PAUSE");  // what it waited for holds: no transaction of the mapping is open
  }
  Reply r;
  for (const Missing& m : g.missing) {
    r.notices.push_back("worker " + std::to_string(m.pid) + " (slot " + std::to_string(m.slot) +
                        ") is missing from this answer: " + m.why);
  }
  r.missing = g.missing;
  std::uint64_t count = 0;
  std::vector<std::vector<Cell>> rows;
  for (const ControlReply& part : g.parts) {
    if (!part.error.empty()) {
      r.notices.push_back("a worker refused: " + part.error);
      continue;
    }
    for (const auto& row : part.rows) {
      if (c.verb == Verb::kShow) {
        rows.push_back(row);
      } else if (!row.empty() && row[0]) {
        count += std::strtoull(row[0]->c_str(), nullptr, 10);
      }
    }
  }
  if (c.verb == Verb::kShow) {
    // By id: the worker's slot, then its session (or server) number.
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
      auto id = [](const std::vector<Cell>& row) {
        return row.empty() || !row[0] ? 0ull : std::strtoull(row[0]->c_str(), nullptr, 10);
      };
      return id(a) < id(b);
    });
    r.tag = "SHOW";
    r.rows = View{c.topic == Topic::kClients ? clientColumns() : serverColumns(), std::move(rows)};
    return r;
  }
  if (c.verb == Verb::kKillClient && count == 0 && g.missing.empty()) {
    r.sqlstate = kUndefinedObject;
    r.message = "no client " + std::to_string(c.client) + " (SHOW CLIENTS lists their ids)";
    return r;
  }
  r.tag = c.verb == Verb::kKill         ? "KILL"
          : c.verb == Verb::kKillClient ? "KILL_CLIENT"
                                        : "RECONNECT";
  r.notices.push_back(std::to_string(count) + (c.verb == Verb::kReconnect
                                                   ? " server connection(s) will reconnect"
                                                   : " session(s) closed"));
  return r;
}

std::string Console::greeting(std::string_view version) {
  std::string g("R\0\0\0\x08\0\0\0\0", 9);
  // What psql and drivers look at on login: a server version they know how to talk to, UTF-8,
  // ISO dates. The console is not a PostgreSQL server; the version says whose it is.
  g += pool::buildParameterStatus("server_version", "16.0 (pgproxy " + std::string(version) + ")");
  g += pool::buildParameterStatus("server_encoding", "UTF8");
  g += pool::buildParameterStatus("client_encoding", "UTF8");
  g += pool::buildParameterStatus("DateStyle", "ISO, MDY");
  g += pool::buildParameterStatus("integer_datetimes", "on");
  g += pool::buildParameterStatus("standard_conforming_strings", "on");
  g += pool::buildParameterStatus("application_name", "");
  g += proto::buildMessage('Z', "I");
  return g;
}

Console::Status Console::feed(std::string_view bytes, std::string& out) {
  if (closed_) {
    return Status::kClose;
  }
  if (waiting_) {
    partial_.append(bytes);  // the caller should not read meanwhile; kept in order if it did
    return partial_.size() > kMaxMessage * 2 ? (closed_ = true, Status::kClose) : Status::kWait;
  }
  return drain(bytes, out);
}

Console::Status Console::resume(const Gathered& g, std::string& out) {
  if (!waiting_) {
    return closed_ ? Status::kClose : Status::kOpen;
  }
  Command c = *waiting_;
  waiting_.reset();
  gather_.reset();  // called from their callbacks, which touch nothing after
  poller_.reset();
  reply(complete(c, g), out);
  out += proto::buildMessage('Z', "I");
  std::string rest;
  rest.swap(partial_);
  return drain(rest, out);
}

Console::Status Console::drain(std::string_view bytes, std::string& out) {
  // Whole messages are handled straight from `bytes`; only a message cut by the read is copied.
  std::string joined;
  if (!partial_.empty()) {
    partial_.append(bytes);
    joined.swap(partial_);
    bytes = joined;
  }
  while (!closed_ && !waiting_) {
    if (bytes.size() < 5) {
      break;
    }
    std::uint32_t len = proto::readU32(bytes.data() + 1);
    if (len < 4 || len > kMaxMessage) {
      out += proto::buildFatal(proto::sqlstate::kProtocolViolation,
                               len < 4 ? "invalid message length"
                                       : "message too long for the pgproxy console (at most " +
                                             std::to_string(kMaxMessage) + " bytes)");
      closed_ = true;
      break;
    }
    if (bytes.size() < 1 + static_cast<std::size_t>(len)) {
      break;
    }
    handle(bytes[0], bytes.substr(5, len - 4), out);
    bytes.remove_prefix(1 + len);
  }
  if (!closed_) {
    partial_.assign(bytes);
  }
  return closed_ ? Status::kClose : waiting_ ? Status::kWait : Status::kOpen;
}

void Console::reply(const Reply& r, std::string& out) {
  for (const std::string& n : r.notices) {
    out += proto::buildNotice(n);
  }
  if (!r.ok()) {
    out += proto::buildError(r.sqlstate, r.message);
  } else if (r.rows) {
    out += renderRows(*r.rows);
  } else {
    out += proto::buildMessage('C', r.tag + std::string(1, '\0'));
  }
}

void Console::handle(char type, std::string_view body, std::string& out) {
  if (skip_to_sync_ && type != 'S' && type != 'X') {
    return;  // as PostgreSQL after an error in an extended-protocol batch
  }
  switch (type) {
    case 'Q': {
      if (!body.empty() && body.back() == '\0') {
        body.remove_suffix(1);
      }
      auto parsed = parseCommand(body);
      if (!parsed) {
        out += proto::buildError(kSyntaxError, parsed.error().message);
      } else if (parsed->verb == Verb::kEmpty) {
        out += proto::buildMessage('I', "");
      } else {
        Reply r = execute(*parsed, env_);
        if (r.ask || r.until) {
          waiting_ = *parsed;
          auto answer = [this](Gathered g) {
            if (answered_) {
              answered_(std::move(g));
            }
          };
          if (r.ask) {
            gather_ = env_.ask_workers(*r.ask, answer);
          } else {
            poller_ = env_.poll_until(r.until, [answer] { answer(Gathered{}); });
          }
          return;  // ReadyForQuery once the workers have answered or the wait is over
        }
        reply(r, out);
      }
      out += proto::buildMessage('Z', "I");
      return;
    }
    case 'X':
      closed_ = true;
      return;
    case 'S':
      skip_to_sync_ = false;
      out += proto::buildMessage('Z', "I");
      return;
    case 'H':
      return;  // Flush: nothing is held back
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
      out += proto::buildError(proto::sqlstate::kFeatureNotSupported,
                               "the pgproxy console takes simple queries only, as psql sends "
                               "them (the extended query protocol is not supported)");
      skip_to_sync_ = true;
      return;
    case 'F':
      out += proto::buildError(proto::sqlstate::kFeatureNotSupported,
                               "the pgproxy console has no functions to call");
      out += proto::buildMessage('Z', "I");
      return;
    default:
      break;
  }
  char shown[8];
  std::snprintf(shown, sizeof(shown), type >= 0x20 && type < 0x7f ? "%c" : "0x%02x",
                static_cast<unsigned char>(type));
  out += proto::buildFatal(proto::sqlstate::kProtocolViolation,
                           std::string("invalid frontend message type ") + shown);
  closed_ = true;
}

}  // namespace pgproxy::admin
