// The Lua plugins' hooks in a session's life (plugin/host.h): on_connect once the mapping is
// known, on_startup once the StartupMessage is read, on_query for each Query and Parse of a
// pooled session, on_disconnect at the end.
#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/proto/startup.h"
#include "pgproxy/session/pooled.h"
#include "pgproxy/session/session.h"

namespace pgproxy::session {

using plugin::Hook;
using plugin::Verdict;

plugin::Info Session::pluginInfo(std::string& client, std::string& client_ip) const {
  client = peer();
  client_ip = peerHost();
  plugin::Info info;
  info.session = id_;
  info.mode = modeName();
  info.sni = sni_;
  if (mapping_ != SIZE_MAX) {
    info.mapping = ctx_.config->mappings[mapping_].external;
  }
  if (taps_) {
    info.user = taps_->user;
    info.database = taps_->database;
  }
  info.client = client;
  info.client_ip = client_ip;
  return info;
}

void Session::pluginRefuse(const Verdict& v) {
  bool failed = v.kind == Verdict::Kind::kFailed;
  std::string message =
      failed ? "pgproxy: plugin " + v.plugin + " failed; see pgproxy's log" : v.message;
  Outcome why = failed ? Outcome::kError : Outcome::kDenied;
  if (mode_ == Mode::kPlaintext || terminated()) {
    refuse(why, failed ? "XX000" : v.sqlstate.c_str(), message);
  } else {
    refuseTls(why, failed ? proto::kAlertInternalError : proto::kAlertAccessDenied,
              "plugin " + v.plugin + ": " + (failed ? v.message : message));
  }
}

std::size_t Session::pluginRoute(const Verdict& v) {
  std::string name = base::toLowerAscii(v.route);
  const auto& mappings = ctx_.config->mappings;
  for (std::size_t i = 0; i < mappings.size(); ++i) {
    if (mappings[i].external == name) {
      return i;
    }
  }
  Verdict failed;
  failed.kind = Verdict::Kind::kFailed;
  failed.plugin = v.plugin;
  failed.message = "routed to \"" + v.route + "\", which is no mapping's external name";
  LOG_WARN("session %llu: plugin %s %s", static_cast<unsigned long long>(id_), v.plugin.c_str(),
           failed.message.c_str());
  pluginRefuse(failed);
  return SIZE_MAX;
}

void Session::routeWithPlugins(std::size_t mapping) {
  if (!ctx_.plugins || !ctx_.plugins->has(Hook::kConnect)) {
    routeTo(mapping);
    return;
  }
  mapping_ = mapping;
  std::string client, ip;
  plugin::Info info = pluginInfo(client, ip);
  Verdict v = ctx_.plugins->onConnect(info);
  if (v.kind != Verdict::Kind::kAllow) {
    pluginRefuse(v);
    return;
  }
  if (!v.route.empty()) {
    mapping = pluginRoute(v);
    if (mapping == SIZE_MAX) {
      return;
    }
    LOG_DEBUG("session %llu: plugin %s routes it to \"%s\"", static_cast<unsigned long long>(id_),
              v.plugin.c_str(), ctx_.config->mappings[mapping].external.c_str());
  }
  routeTo(mapping);
}

bool Session::pluginStartup() {
  std::size_t consumed = 0;
  proto::StartupParams params = pendingStartup(consumed);
  std::string client, ip;
  std::string user = params.get("user"), database = params.get("database");
  plugin::Info info = pluginInfo(client, ip);
  info.user = user;
  info.database = database.empty() ? user : database;
  Verdict v = ctx_.plugins->onStartup(info, params.params);
  if (v.kind != Verdict::Kind::kAllow) {
    pluginRefuse(v);
    return false;
  }
  if (!v.route.empty()) {
    std::size_t m = pluginRoute(v);
    if (m == SIZE_MAX) {
      return false;
    }
    mapping_ = m;
  }
  if (v.params.empty()) {
    return true;
  }
  for (auto& [key, value] : v.params) {
    bool found = false;
    for (auto& p : params.params) {
      if (p.first == key) {
        p.second = value;
        found = true;
      }
    }
    if (!found) {
      params.params.emplace_back(key, value);
    }
  }
  std::string rebuilt = proto::buildStartup(params.version, params.params);
  if (rebuilt.size() > proto::kMaxStartupPacket) {
    Verdict failed;
    failed.kind = Verdict::Kind::kFailed;
    failed.plugin = v.plugin;
    failed.message = "on_startup's parameters make a StartupMessage over 10000 bytes";
    LOG_WARN("session %llu: plugin %s", static_cast<unsigned long long>(id_),
             failed.message.c_str());
    pluginRefuse(failed);
    return false;
  }
  replaceStartup(consumed, rebuilt);
  if (taps_) {
    proto::StartupParams now;
    (void)proto::parseStartup(rebuilt, now);
    auditStartup(now);  // the audit log names who the backend sees
  }
  return true;
}

bool Session::pluginQueries(std::string_view bytes) {
  Taps& t = taps();
  if (!t.gate) {
    t.gate = std::make_unique<plugin::QueryGate>();
  }
  t.gated.clear();
  std::string client, ip;
  plugin::Info info = pluginInfo(client, ip);
  Verdict refusal;
  auto check = [&](char, std::string_view sql, std::string& note) {
    Verdict v = ctx_.plugins->onQuery(info, sql);
    if (v.kind != Verdict::Kind::kAllow) {
      refusal = std::move(v);
      return false;
    }
    note = std::move(v.annotate);
    return true;
  };
  switch (t.gate->feed(bytes, t.gated, check)) {
    case plugin::QueryGate::Result::kOk:
      return true;
    case plugin::QueryGate::Result::kStopped:
      break;
    case plugin::QueryGate::Result::kTooLarge:
      refusal.kind = Verdict::Kind::kDeny;
      refusal.sqlstate = "54000";
      refusal.message =
          "pgproxy: a query longer than 1 MiB cannot be checked by the plugins' on_query";
      break;
    case plugin::QueryGate::Result::kBad:
      refusal.kind = Verdict::Kind::kDeny;
      refusal.sqlstate = proto::sqlstate::kProtocolViolation;
      refusal.message = "invalid message length from the client";
      break;
  }
  // The refusal ends the session (a FATAL, as the plugin asked): nothing of this read goes on.
  pluginRefuse(refusal);
  return false;
}

void Session::pluginDisconnect(Outcome why) {
  if (!ctx_.plugins || !ctx_.plugins->has(Hook::kDisconnect) || mapping_ == SIZE_MAX) {
    return;
  }
  std::string client, ip;
  plugin::Info info = pluginInfo(client, ip);
  ctx_.plugins->onDisconnect(info, metrics::outcomeName(why),
                             (base::monotonicUs() - started_us_) / 1000, bytes_up_, bytes_down_);
}

}  // namespace pgproxy::session
