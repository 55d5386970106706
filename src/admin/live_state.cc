#include "pgproxy/admin/live_state.h"

#include <yaml.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <tuple>

#include "pgproxy/admin/control.h"
#include "pgproxy/admin/control_channel.h"
#include "pgproxy/base/json.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::admin {
namespace {

const char* tlsName(config::TlsMode m) {
  return m == config::TlsMode::kTerminate ? "terminate" : "passthrough";
}

const char* poolModeName(const config::PoolConfig& p) {
  if (!p.enabled) {
    return "";
  }
  switch (p.mode) {
    case config::PoolMode::kSession:
      return "session";
    case config::PoolMode::kTransaction:
      return "transaction";
    case config::PoolMode::kStatement:
      return "statement";
  }
  return "";
}

void captureMappings(const Sources& src, const metrics::Snapshot& snap, LiveState& out) {
  const config::Config& cfg = *src.config;
  for (std::size_t m = 0; m < cfg.mappings.size(); ++m) {
    const config::Mapping& cm = cfg.mappings[m];
    MappingState ms;
    ms.name = cm.external;
    ms.tls = tlsName(cm.tls);
    ms.pool_mode = poolModeName(cm.pool);
    ms.authenticate = cm.authenticate;
    ms.backends = cm.backends.size();
    ms.routes = cm.routes.size();
    ms.read_write_split = cm.read_write_split;
    ms.max_connections = cm.max_connections;
    ms.connection_rate = cm.connection_rate;
    std::size_t index = metrics::kUnknownMapping;
    if (src.metrics) {
      index = src.metrics->mappingIndex(cm.external);
      ms.admitted = src.metrics->admitted(index);
    }
    if (index != metrics::kUnknownMapping && index < snap.mapping.size()) {
      const auto& c = snap.mapping[index];
      ms.bytes_up = c[static_cast<std::size_t>(metrics::MappingCounter::kBytesUp)];
      ms.bytes_down = c[static_cast<std::size_t>(metrics::MappingCounter::kBytesDown)];
      for (std::size_t o = static_cast<std::size_t>(metrics::MappingCounter::kClosedFirst);
           o < metrics::kMappingCounters; ++o) {
        ms.sessions_closed += c[o];
      }
    }
    ms.disabled = src.control && index != metrics::kUnknownMapping && src.control->disabled(index);
    ms.paused = src.control && index != metrics::kUnknownMapping && src.control->paused(index);
    if (src.control && index != metrics::kUnknownMapping) {
      ms.rates = src.control->rates(index);
    }
    for (std::size_t b = 0; b < cm.backends.size(); ++b) {
      const config::Backend& cb = cm.backends[b];
      BackendState bs;
      bs.mapping = cm.external;
      bs.host = cb.host;
      bs.port = cb.port;
      bs.weight = cb.weight;
      bs.health = "unknown";
      bs.role = "unknown";
      std::size_t slot = upstream::kNoBackend;
      if (src.backend_slots && m < src.backend_slots->size() &&
          b < (*src.backend_slots)[m].size()) {
        slot = (*src.backend_slots)[m][b];
      }
      if (src.backends && slot != upstream::kNoBackend) {
        bs.health = upstream::healthName(src.backends->health(slot));
        bs.role = upstream::roleName(src.backends->role(slot));
        bs.active = src.backends->active(slot);
        bs.last_check_ms = src.backends->lastCheckMs(slot);
        bs.last_error = src.backends->lastError(slot);
        bs.lag_ms = src.backends->lagMs(slot);
        bs.drained = src.control && src.control->drained(slot);
      }
      ms.backends_up += bs.health != "down" ? 1 : 0;
      out.backends.push_back(std::move(bs));
    }
    out.mappings.push_back(std::move(ms));
  }
}

std::string num(std::uint64_t v) {
  return std::to_string(v);
}
std::string num(std::int64_t v) {
  return std::to_string(v);
}
std::string num(unsigned v) {
  return std::to_string(v);
}
std::string flag(bool b) {
  return b ? "t" : "f";
}
Cell text(const std::string& s) {
  return s;
}
Cell textOrNull(const std::string& s) {
  return s.empty() ? Cell{} : Cell{s};
}

}  // namespace

// PostgreSQL's text form of a timestamptz in UTC, as psql prints it.
Cell timestampCell(std::int64_t unix_ms) {
  if (unix_ms <= 0) {
    return {};
  }
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02d %02d:%02d:%02d.%03d+00", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return std::string(buf);
}

namespace {

Cell rate(const config::Rate& r) {
  if (!r.enabled()) {
    return {};
  }
  const char* unit = r.period_ms == 1000 ? "s" : r.period_ms == 60'000 ? "m" : "h";
  return std::to_string(r.count) + "/" + unit + " burst " + std::to_string(r.burst);
}

// 0 means "no limit" in the configuration; the view says so with NULL.
Cell limit(unsigned v) {
  return v ? Cell{num(v)} : Cell{};
}

View mappingsView(const LiveState& s) {
  View v{{{"name", ColumnType::kText},
          {"tls", ColumnType::kText},
          {"pool_mode", ColumnType::kText},
          {"authenticate", ColumnType::kBool},
          {"disabled", ColumnType::kBool},
          {"paused", ColumnType::kBool},
          {"backends", ColumnType::kInt8},
          {"backends_up", ColumnType::kInt8},
          {"current_connections", ColumnType::kInt8},
          {"max_connections", ColumnType::kInt8},
          {"routes", ColumnType::kInt8},
          {"read_write_split", ColumnType::kBool}},
         {}};
  for (const MappingState& m : s.mappings) {
    v.rows.push_back({text(m.name), text(m.tls), textOrNull(m.pool_mode), flag(m.authenticate),
                      flag(m.disabled), flag(m.paused), num(std::uint64_t{m.backends}),
                      num(std::uint64_t{m.backends_up}), num(m.admitted), limit(m.max_connections),
                      num(std::uint64_t{m.routes}), flag(m.read_write_split)});
  }
  return v;
}

View backendsView(const LiveState& s) {
  View v{{{"mapping", ColumnType::kText},
          {"host", ColumnType::kText},
          {"port", ColumnType::kInt8},
          {"state", ColumnType::kText},
          {"role", ColumnType::kText},
          {"weight", ColumnType::kInt8},
          {"drained", ColumnType::kBool},
          {"active_sessions", ColumnType::kInt8},
          {"last_check", ColumnType::kTimestamp},
          {"last_error", ColumnType::kText},
          {"replica_lag_ms", ColumnType::kInt8}},
         {}};
  for (const BackendState& b : s.backends) {
    v.rows.push_back({text(b.mapping), text(b.host), num(b.port), text(b.health), text(b.role),
                      num(b.weight), flag(b.drained), num(b.active),
                      timestampCell(static_cast<std::int64_t>(b.last_check_ms)),
                      textOrNull(b.last_error), b.lag_ms >= 0 ? Cell{num(b.lag_ms)} : Cell{}});
  }
  return v;
}

View poolsView(const LiveState& s) {
  using pool::ServerState;
  View v{{{"mapping", ColumnType::kText},
          {"backend", ColumnType::kText},
          {"database", ColumnType::kText},
          {"user", ColumnType::kText},
          {"cl_waiting", ColumnType::kInt8},
          {"cl_pinned", ColumnType::kInt8},
          {"sv_active", ColumnType::kInt8},
          {"sv_idle", ColumnType::kInt8},
          {"sv_used", ColumnType::kInt8},
          {"sv_login", ColumnType::kInt8},
          {"pool_mode", ColumnType::kText}},
         {}};
  for (const pool::PoolSample& p : s.pools) {
    std::string mode;
    for (const MappingState& m : s.mappings) {
      mode = m.name == p.mapping ? m.pool_mode : mode;
    }
    v.rows.push_back({text(p.mapping), text(p.backend), text(p.database), text(p.user),
                      num(p.waiting), num(p.pinned), num(p.state(ServerState::kActive)),
                      num(p.state(ServerState::kIdle)), num(p.state(ServerState::kUsed)),
                      num(p.state(ServerState::kLogin)), textOrNull(mode)});
  }
  return v;
}

// Per mapping, as PgBouncer's per database: totals over the master's life. The averages are per
// event (a transaction's share of the bytes, a wait's length), not PgBouncer's per-second rates
// over its stats period, which would need a history no process keeps yet.
View statsView(const LiveState& s) {
  View v{{{"database", ColumnType::kText},
          {"total_xact_count", ColumnType::kInt8},
          {"total_query_count", ColumnType::kInt8},
          {"total_received", ColumnType::kInt8},
          {"total_sent", ColumnType::kInt8},
          {"total_wait_time", ColumnType::kInt8},
          {"total_connections", ColumnType::kInt8},
          {"avg_xact_count", ColumnType::kInt8},
          {"avg_query_count", ColumnType::kInt8},
          {"avg_recv", ColumnType::kInt8},
          {"avg_sent", ColumnType::kInt8},
          {"avg_wait_time", ColumnType::kInt8}},
         {}};
  std::vector<MappingTotals> totals = mappingTotals(s);
  for (std::size_t i = 0; i < totals.size() && i < s.mappings.size(); ++i) {
    const MappingTotals& t = totals[i];
    const MappingRates& r = s.mappings[i].rates;
    v.rows.push_back({text(t.name), num(t.xact), num(t.query), num(t.received), num(t.sent),
                      num(t.wait_us), num(t.connections), num(r.xact), num(r.query),
                      num(r.received), num(r.sent), num(r.wait_us)});
  }
  return v;
}

View limitsView(const LiveState& s) {
  View v{{{"scope", ColumnType::kText},
          {"max_connections", ColumnType::kInt8},
          {"current_connections", ColumnType::kInt8},
          {"max_connections_per_client", ColumnType::kInt8},
          {"connection_rate", ColumnType::kText},
          {"max_handshakes", ColumnType::kInt8},
          {"handshaking", ColumnType::kInt8}},
         {}};
  const GlobalLimits& g = s.limits;
  v.rows.push_back({text("*"), limit(g.max_connections), num(g.admitted),
                    limit(g.max_connections_per_client), rate(g.connection_rate),
                    limit(g.max_handshakes), num(g.handshaking)});
  for (const MappingState& m : s.mappings) {
    v.rows.push_back({text(m.name), limit(m.max_connections), num(m.admitted), Cell{},
                      rate(m.connection_rate), Cell{}, Cell{}});
  }
  return v;
}

// The master's history, newest first: each generation's state and live workers, and the
// reloads that never made one (generation NULL, with why).
View generationsView(const LiveState& s) {
  View v{{{"generation", ColumnType::kInt8},
          {"state", ColumnType::kText},
          {"workers", ColumnType::kInt8},
          {"config_hash", ColumnType::kText},
          {"started", ColumnType::kTimestamp},
          {"serving_since", ColumnType::kTimestamp},
          {"ended", ColumnType::kTimestamp},
          {"detail", ColumnType::kText}},
         {}};
  for (const GenerationInfo& g : s.generations) {
    v.rows.push_back({g.generation ? Cell{num(g.generation)} : Cell{}, text(g.state),
                      num(g.workers), textOrNull(g.config_hash), timestampCell(g.started_ms),
                      timestampCell(g.serving_ms), timestampCell(g.ended_ms),
                      textOrNull(g.detail)});
  }
  return v;
}

View configView(const LiveState& s) {
  View v{{{"key", ColumnType::kText}, {"value", ColumnType::kText}}, {}};
  for (const auto& [key, value] : s.config) {
    v.rows.push_back({text(key), text(value)});
  }
  return v;
}

View versionView(const LiveState& s) {
  return View{{{"version", ColumnType::kText}}, {{text("pgproxy " + s.version)}}};
}

// Keys whose values are secrets wherever they appear.
bool secretKey(std::string_view key) {
  return key == "token" || key == "password";
}

void flatten(yaml_document_t* doc, yaml_node_t* node, const std::string& path,
             std::vector<std::pair<std::string, std::string>>& out, int depth) {
  if (!node || depth > 32) {
    return;
  }
  switch (node->type) {
    case YAML_SCALAR_NODE:
      out.emplace_back(path, std::string(reinterpret_cast<const char*>(node->data.scalar.value),
                                         node->data.scalar.length));
      return;
    case YAML_SEQUENCE_NODE: {
      std::size_t i = 0;
      for (yaml_node_item_t* it = node->data.sequence.items.start;
           it < node->data.sequence.items.top; ++it, ++i) {
        flatten(doc, yaml_document_get_node(doc, *it), path + "[" + std::to_string(i) + "]", out,
                depth + 1);
      }
      return;
    }
    case YAML_MAPPING_NODE:
      for (yaml_node_pair_t* p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
           ++p) {
        yaml_node_t* k = yaml_document_get_node(doc, p->key);
        if (!k || k->type != YAML_SCALAR_NODE) {
          continue;
        }
        std::string key(reinterpret_cast<const char*>(k->data.scalar.value), k->data.scalar.length);
        std::string sub = path.empty() ? key : path + "." + key;
        if (secretKey(key)) {
          out.emplace_back(sub, "(redacted)");
          continue;
        }
        flatten(doc, yaml_document_get_node(doc, p->value), sub, out, depth + 1);
      }
      return;
    case YAML_NO_NODE:
      return;
  }
}

void appendJsonValue(std::string& out, const Cell& c, ColumnType t) {
  if (!c) {
    out += "null";
    return;
  }
  switch (t) {
    case ColumnType::kInt8:
      out += *c;
      return;
    case ColumnType::kBool:
      out += *c == "t" ? "true" : "false";
      return;
    case ColumnType::kTimestamp:
      // "2026-01-02 03:04:05.678+00" as RFC 3339, which JSON readers parse.
      if (c->size() > 13 && (*c)[10] == ' ' && c->ends_with("+00")) {
        out += jsonString(c->substr(0, 10) + "T" + c->substr(11, c->size() - 14) + "Z");
        return;
      }
      out += jsonString(*c);
      return;
    case ColumnType::kText:
      out += jsonString(*c);
      return;
  }
}

}  // namespace

std::vector<MappingTotals> mappingTotals(const LiveState& s) {
  std::vector<MappingTotals> out;
  for (const MappingState& m : s.mappings) {
    pool::PoolSample sum;
    for (const pool::PoolSample& p : s.pools) {
      if (p.mapping == m.name) {
        sum.add(p);
      }
    }
    MappingTotals t;
    t.name = m.name;
    t.xact = sum.transactions;
    t.query = sum.queries;
    t.received = m.bytes_up;
    t.sent = m.bytes_down;
    t.wait_us = sum.wait_sum_us;
    t.waits = sum.waits();
    t.connections =
        m.sessions_closed + static_cast<std::uint64_t>(std::max<std::int64_t>(m.admitted, 0));
    out.push_back(std::move(t));
  }
  return out;
}

MappingRates ratesBetween(const MappingTotals& before, const MappingTotals& now, double seconds) {
  auto per = [seconds](std::uint64_t a, std::uint64_t b) -> std::uint64_t {
    return b >= a && seconds > 0 ? static_cast<std::uint64_t>(static_cast<double>(b - a) / seconds)
                                 : 0;
  };
  MappingRates r;
  r.xact = per(before.xact, now.xact);
  r.query = per(before.query, now.query);
  r.received = per(before.received, now.received);
  r.sent = per(before.sent, now.sent);
  std::uint64_t waits = now.waits >= before.waits ? now.waits - before.waits : 0;
  r.wait_us = waits && now.wait_us >= before.wait_us ? (now.wait_us - before.wait_us) / waits : 0;
  return r;
}

LiveState capture(const Sources& src, Topic topic) {
  // What only some views read is read only for them: the configuration's YAML is parsed again
  // for SHOW CONFIG, the pool table walked for POOLS and STATS, the history for GENERATIONS.
  const bool all = topic == Topic::kNone;
  LiveState out;
  out.version = src.version;
  metrics::Snapshot snap;
  if (src.metrics) {
    snap = src.metrics->snapshot();
    out.consistent = snap.consistent;
    out.limits.admitted = src.metrics->admitted();
    out.limits.handshaking = src.metrics->handshaking();
  }
  if (src.config) {
    const config::Config& cfg = *src.config;
    out.limits.max_connections = cfg.max_connections;
    out.limits.max_connections_per_client = cfg.max_connections_per_client;
    out.limits.max_handshakes = cfg.max_handshakes;
    out.limits.connection_rate = cfg.connection_rate;
    captureMappings(src, snap, out);
  }
  if (src.control && (all || topic == Topic::kGenerations)) {
    out.generations = src.control->generations();
  }
  if (src.pools && (all || topic == Topic::kPools || topic == Topic::kStats)) {
    out.pools = src.pools->samples();
    // The table's order is its hash's: the views list pools as people look for them.
    std::sort(out.pools.begin(), out.pools.end(), [](const auto& a, const auto& b) {
      return std::tie(a.mapping, a.backend, a.database, a.user) <
             std::tie(b.mapping, b.backend, b.database, b.user);
    });
  }
  if (src.config && (all || topic == Topic::kConfig)) {
    out.config = flattenConfig(src.config->text);
  }
  return out;
}

bool sharedTopic(Topic topic) {
  return topic != Topic::kClients && topic != Topic::kServers && topic != Topic::kNone;
}

View view(const LiveState& s, Topic topic) {
  switch (topic) {
    case Topic::kMappings:
      return mappingsView(s);
    case Topic::kBackends:
      return backendsView(s);
    case Topic::kPools:
      return poolsView(s);
    case Topic::kStats:
      return statsView(s);
    case Topic::kLimits:
      return limitsView(s);
    case Topic::kGenerations:
      return generationsView(s);
    case Topic::kConfig:
      return configView(s);
    case Topic::kVersion:
      return versionView(s);
    case Topic::kClients:
      return View{clientColumns(), {}};
    case Topic::kServers:
      return View{serverColumns(), {}};
    case Topic::kNone:
      break;
  }
  return {};
}

std::vector<std::pair<std::string, std::string>> flattenConfig(const std::string& yaml) {
  std::vector<std::pair<std::string, std::string>> out;
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) {
    return out;
  }
  yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(yaml.data()),
                               yaml.size());
  yaml_document_t doc;
  if (yaml_parser_load(&parser, &doc)) {
    flatten(&doc, yaml_document_get_root_node(&doc), "", out, 0);
    yaml_document_delete(&doc);
  }
  yaml_parser_delete(&parser);
  return out;
}

std::string renderRows(const View& v) {
  std::string desc;
  desc.push_back(static_cast<char>(v.columns.size() >> 8));
  desc.push_back(static_cast<char>(v.columns.size() & 0xff));
  for (const Column& c : v.columns) {
    desc += c.name;
    desc.push_back('\0');
    proto::appendU32(desc, 0);  // no table
    desc.append(2, '\0');       // no column number
    std::uint32_t oid = 25;     // text
    std::int16_t len = -1;
    switch (c.type) {
      case ColumnType::kInt8:
        oid = 20;
        len = 8;
        break;
      case ColumnType::kBool:
        oid = 16;
        len = 1;
        break;
      case ColumnType::kTimestamp:
        oid = 1184;  // timestamptz
        len = 8;
        break;
      case ColumnType::kText:
        break;
    }
    proto::appendU32(desc, oid);
    desc.push_back(static_cast<char>(static_cast<std::uint16_t>(len) >> 8));
    desc.push_back(static_cast<char>(static_cast<std::uint16_t>(len) & 0xff));
    proto::appendU32(desc, 0xffffffffu);  // no type modifier
    desc.append(2, '\0');                 // text format
  }
  std::string out = proto::buildMessage('T', desc);
  for (const auto& row : v.rows) {
    std::string body;
    body.push_back(static_cast<char>(row.size() >> 8));
    body.push_back(static_cast<char>(row.size() & 0xff));
    for (const Cell& c : row) {
      if (!c) {
        proto::appendU32(body, 0xffffffffu);
        continue;
      }
      proto::appendU32(body, static_cast<std::uint32_t>(c->size()));
      body += *c;
    }
    out += proto::buildMessage('D', body);
  }
  out += proto::buildMessage('C', std::string_view("SHOW\0", 5));
  return out;
}

std::string jsonString(std::string_view s) {
  std::string out;
  base::appendJsonString(out, s);
  return out;
}

std::string renderJson(const View& v) {
  std::string out = "[";
  for (std::size_t r = 0; r < v.rows.size(); ++r) {
    out += r ? ",{" : "{";
    for (std::size_t c = 0; c < v.columns.size() && c < v.rows[r].size(); ++c) {
      out += c ? "," : "";
      out += jsonString(v.columns[c].name);
      out += ':';
      appendJsonValue(out, v.rows[r][c], v.columns[c].type);
    }
    out += '}';
  }
  out += ']';
  return out;
}

}  // namespace pgproxy::admin
