// Prometheus text exposition of a metrics snapshot.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <string_view>

#include "pgproxy/metrics/metrics.h"

namespace pgproxy::metrics {
namespace {

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void header(const char* name) { appendMetricHeader(out_, name); }
  void sample(const std::string& name, const std::string& labels, double value) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", value);
    line(name, labels, buf);
  }
  void sample(const std::string& name, const std::string& labels, std::uint64_t value) {
    line(name, labels, std::to_string(value));
  }
  void sample(const std::string& name, const std::string& labels, std::int64_t value) {
    line(name, labels, std::to_string(value));
  }

 private:
  void line(const std::string& name, const std::string& labels, const std::string& value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += "{" + labels + "}";
    }
    out_ += " " + value + "\n";
  }
  std::string& out_;
};

std::string label(const char* key, const std::string& value) {
  return std::string(key) + "=\"" + escapeLabel(value) + "\"";
}

// A counter with one series and no labels.
void unlabelled(Writer& w, const char* name, const Snapshot& s, Counter c) {
  w.header(name);
  w.sample(name, "", s.counters[static_cast<std::size_t>(c)]);
}

void histogram(Writer& w, const char* name, const Snapshot& s, Histogram h) {
  auto hi = static_cast<std::size_t>(h);
  w.header(name);
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b < kBuckets; ++b) {
    cumulative += s.hist_buckets[hi][b];
    char le[32];
    std::snprintf(le, sizeof(le), "%g", kBucketBounds[b]);
    w.sample(std::string(name) + "_bucket", label("le", le), cumulative);
  }
  cumulative += s.hist_buckets[hi][kBuckets];
  w.sample(std::string(name) + "_bucket", label("le", "+Inf"), cumulative);
  w.sample(std::string(name) + "_sum", "", static_cast<double>(s.hist_sum_us[hi]) / 1e6);
  w.sample(std::string(name) + "_count", "", cumulative);
}

}  // namespace

std::string escapeLabel(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void appendMetricHeader(std::string& out, std::string_view name) {
  for (const auto& m : metricTable()) {
    if (name == m.name) {
      out += std::string("# HELP ") + m.name + " " + m.help + "\n# TYPE " + m.name + " " + m.type +
             "\n";
      return;
    }
  }
}

const std::vector<MetricSpec>& metricTable() {
  static const std::vector<MetricSpec> table = {
      {"pgproxy_build_info", "gauge", "pgproxy version, always 1."},
      {"pgproxy_config_info", "gauge", "Hash of the configuration being served, always 1."},
      {"pgproxy_workers", "gauge", "Worker processes of the current generation."},
      {"pgproxy_draining_workers", "gauge",
       "Worker processes of older generations still draining."},
      {"pgproxy_generation", "gauge", "Configuration generation, incremented by each reload."},
      {"pgproxy_reloads_total", "counter", "Configuration reloads by result."},
      {"pgproxy_last_reload_timestamp_seconds", "gauge",
       "Unix time of the last successful reload (or start)."},
      {"pgproxy_worker_restarts_total", "counter", "Workers that died and were replaced."},
      {"pgproxy_connections_accepted_total", "counter", "Client connections accepted."},
      {"pgproxy_connections_active", "gauge", "Client connections open now."},
      {"pgproxy_connections_handshaking", "gauge",
       "Client connections not yet spliced to a backend (limited by max_handshakes)."},
      {"pgproxy_connections_closed_total", "counter",
       "Client connections closed, by mapping and outcome."},
      {"pgproxy_client_to_backend_bytes_total", "counter", "Bytes forwarded from clients."},
      {"pgproxy_backend_to_client_bytes_total", "counter", "Bytes forwarded from backends."},
      {"pgproxy_mapping_sessions_active", "gauge", "Spliced sessions open now, by mapping."},
      {"pgproxy_backend_sessions_active", "gauge",
       "Spliced sessions open now on the backend (all mappings that use it)."},
      {"pgproxy_backend_up", "gauge",
       "0 while the backend is down (failed checks or connection attempts), else 1."},
      {"pgproxy_backend_replica_lag_seconds", "gauge",
       "How far the backend's replay is behind its primary (0 on a primary), from logged-in "
       "health checks; absent until one has run."},
      {"pgproxy_backend_connect_duration_seconds", "histogram",
       "Time to connect to a backend (TLS: until its answer to our SSLRequest)."},
      {"pgproxy_handshake_duration_seconds", "histogram",
       "Time from accept until bytes flow both ways."},
      {"pgproxy_cancel_requests_total", "counter",
       "Cancel requests by result: forwarded, dropped (rate limit), unmatched."},
      {"pgproxy_log_lines_dropped_total", "counter",
       "Log lines dropped because the log (main or access) could not take them: a stalled "
       "reader such as journald or a full pipe."},
      {"pgproxy_auth_query_lookups_total", "counter",
       "auth.query lookups run on a backend, by result: found, absent (no row or no secret), "
       "failed."},
      {"pgproxy_auth_query_cache_hits_total", "counter",
       "Logins whose secret auth.cache held, without a lookup."},
      {"pgproxy_split_retries_total", "counter",
       "read_write_split: optimistic: transactions tried on a standby that refused to write in "
       "them (25006) before a result reached the client, run again on the primary."},
      {"pgproxy_audit_events_total", "counter", "Audit events written to the audit sink."},
      {"pgproxy_audit_dropped_total", "counter",
       "Audit events lost: the writer's bounded queue was full (a stalled sink) or the sink "
       "refused them (a full disk, no syslog daemon)."},
      {"pgproxy_kernel_splices_total", "counter",
       "TLS passthrough sessions whose bytes moved in the kernel (splice: kernel or auto)."},
      {"pgproxy_kernel_splice_fallbacks_total", "counter",
       "Times a kernel-spliced direction was handed back to pgproxy's relay because its reader "
       "was slow (the kernel's queue in front of it reached its bound)."},
      {"pgproxy_kernel_splice_lost_bytes_total", "counter",
       "Bytes a kernel-spliced socket received that were neither redirected nor read by pgproxy: "
       "a kernel defect (also logged at ERROR). Should stay 0."},
      {"pgproxy_audit_failing", "gauge",
       "1 while the last audit event could not be written (audit.fail: closed refuses new "
       "sessions then), else 0."},
      {"pgproxy_plugin_counter", "gauge",
       "Plugins' shared counters (pgproxy.counter), by name, over all workers."},
      // Rendered by pool::SharedPools from its own table, after the series above.
      {"pgproxy_pool_server_connections", "gauge",
       "Server connections of a pool by state (login, idle, active, used), all workers."},
      {"pgproxy_pool_clients_waiting", "gauge", "Clients waiting for a server of a pool."},
      {"pgproxy_pool_pinned_clients", "gauge",
       "Clients of a pool kept on their server connection between transactions (advisory lock, "
       "WITH HOLD cursor, temporary table, LISTEN)."},
      {"pgproxy_pool_wait_seconds", "histogram", "Time clients waited for a server of a pool."},
      {"pgproxy_pool_transactions_total", "counter", "Transactions served by a pool's servers."},
      {"pgproxy_pool_queries_total", "counter", "Queries served by a pool's servers."},
  };
  return table;
}

std::string renderPrometheus(const Snapshot& s, const char* version) {
  // Per-mapping series for the names whose counts the snapshot holds (all of them, as snapshot()
  // builds it; a hand-made one may be shorter, and must not be read past its end).
  const std::size_t mappings =
      std::min({s.mapping_names.size(), s.mapping.size(), s.mapping_active.size()});
  std::string out;
  out.reserve(4096 + mappings * 2048);
  Writer w(out);
  w.header("pgproxy_build_info");
  w.sample("pgproxy_build_info", label("version", version), std::int64_t{1});
  w.header("pgproxy_config_info");
  w.sample("pgproxy_config_info", label("hash", s.config_hash), std::int64_t{1});
  w.header("pgproxy_workers");
  w.sample("pgproxy_workers", "", s.workers);
  w.header("pgproxy_draining_workers");
  w.sample("pgproxy_draining_workers", "", s.draining_workers);
  w.header("pgproxy_generation");
  w.sample("pgproxy_generation", "", s.generation);
  w.header("pgproxy_reloads_total");
  w.sample("pgproxy_reloads_total", label("result", "ok"), s.reloads_ok);
  w.sample("pgproxy_reloads_total", label("result", "failed"), s.reloads_failed);
  w.header("pgproxy_last_reload_timestamp_seconds");
  w.sample("pgproxy_last_reload_timestamp_seconds", "", s.last_reload_unix);
  w.header("pgproxy_worker_restarts_total");
  w.sample("pgproxy_worker_restarts_total", "", s.worker_restarts);
  w.header("pgproxy_connections_accepted_total");
  w.sample("pgproxy_connections_accepted_total", "",
           s.counters[static_cast<std::size_t>(Counter::kAccepted)]);
  w.header("pgproxy_connections_active");
  w.sample("pgproxy_connections_active", "", s.gauges[static_cast<std::size_t>(Gauge::kActive)]);
  w.header("pgproxy_connections_handshaking");
  w.sample("pgproxy_connections_handshaking", "",
           s.gauges[static_cast<std::size_t>(Gauge::kHandshaking)]);
  w.header("pgproxy_connections_closed_total");
  for (std::size_t m = 0; m < mappings; ++m) {
    for (std::size_t o = 0; o < static_cast<std::size_t>(Outcome::kCount); ++o) {
      w.sample("pgproxy_connections_closed_total",
               label("mapping", s.mapping_names[m]) + "," +
                   label("outcome", outcomeName(static_cast<Outcome>(o))),
               s.mapping[m][static_cast<std::size_t>(MappingCounter::kClosedFirst) + o]);
    }
  }
  for (auto [name, counter] :
       {std::pair{"pgproxy_client_to_backend_bytes_total", MappingCounter::kBytesUp},
        std::pair{"pgproxy_backend_to_client_bytes_total", MappingCounter::kBytesDown}}) {
    w.header(name);
    for (std::size_t m = 0; m < mappings; ++m) {
      w.sample(name, label("mapping", s.mapping_names[m]),
               s.mapping[m][static_cast<std::size_t>(counter)]);
    }
  }
  w.header("pgproxy_mapping_sessions_active");
  for (std::size_t m = 1; m < mappings; ++m) {
    w.sample("pgproxy_mapping_sessions_active", label("mapping", s.mapping_names[m]),
             s.mapping_active[m]);
  }
  for (const char* name : {"pgproxy_backend_sessions_active", "pgproxy_backend_up"}) {
    w.header(name);
    bool up = std::string_view(name) == "pgproxy_backend_up";
    for (const auto& b : s.backends) {
      w.sample(name, label("mapping", b.mapping_name) + "," + label("backend", b.backend),
               up ? std::int64_t{b.down ? 0 : 1} : b.active);
    }
  }
  w.header("pgproxy_backend_replica_lag_seconds");
  for (const auto& b : s.backends) {
    if (b.lag_ms >= 0) {
      w.sample("pgproxy_backend_replica_lag_seconds",
               label("mapping", b.mapping_name) + "," + label("backend", b.backend),
               static_cast<double>(b.lag_ms) / 1000.0);
    }
  }
  histogram(w, "pgproxy_backend_connect_duration_seconds", s, Histogram::kBackendConnect);
  histogram(w, "pgproxy_handshake_duration_seconds", s, Histogram::kHandshake);
  w.header("pgproxy_cancel_requests_total");
  w.sample("pgproxy_cancel_requests_total", label("result", "forwarded"),
           s.counters[static_cast<std::size_t>(Counter::kCancelForwarded)]);
  w.sample("pgproxy_cancel_requests_total", label("result", "dropped"),
           s.counters[static_cast<std::size_t>(Counter::kCancelDropped)]);
  w.sample("pgproxy_cancel_requests_total", label("result", "unmatched"),
           s.counters[static_cast<std::size_t>(Counter::kCancelUnmatched)]);
  w.header("pgproxy_log_lines_dropped_total");
  w.sample("pgproxy_log_lines_dropped_total", label("log", "main"),
           s.counters[static_cast<std::size_t>(Counter::kLogLinesDropped)]);
  w.sample("pgproxy_log_lines_dropped_total", label("log", "access"),
           s.counters[static_cast<std::size_t>(Counter::kAccessLogLinesDropped)]);
  w.header("pgproxy_auth_query_lookups_total");
  w.sample("pgproxy_auth_query_lookups_total", label("result", "found"),
           s.counters[static_cast<std::size_t>(Counter::kAuthQueryFound)]);
  w.sample("pgproxy_auth_query_lookups_total", label("result", "absent"),
           s.counters[static_cast<std::size_t>(Counter::kAuthQueryAbsent)]);
  w.sample("pgproxy_auth_query_lookups_total", label("result", "failed"),
           s.counters[static_cast<std::size_t>(Counter::kAuthQueryFailed)]);
  unlabelled(w, "pgproxy_auth_query_cache_hits_total", s, Counter::kAuthQueryCacheHits);
  unlabelled(w, "pgproxy_split_retries_total", s, Counter::kSplitRetried);
  unlabelled(w, "pgproxy_audit_events_total", s, Counter::kAuditWritten);
  unlabelled(w, "pgproxy_audit_dropped_total", s, Counter::kAuditDropped);
  unlabelled(w, "pgproxy_kernel_splices_total", s, Counter::kKernelSpliced);
  unlabelled(w, "pgproxy_kernel_splice_fallbacks_total", s, Counter::kKernelFallbacks);
  unlabelled(w, "pgproxy_kernel_splice_lost_bytes_total", s, Counter::kKernelLostBytes);
  w.header("pgproxy_audit_failing");
  w.sample("pgproxy_audit_failing", "", std::int64_t{s.audit_failing ? 1 : 0});
  w.header("pgproxy_plugin_counter");
  for (const auto& [name, value] : s.plugin_counters) {
    w.sample("pgproxy_plugin_counter", label("name", name), value);
  }
  return out;
}

}  // namespace pgproxy::metrics
