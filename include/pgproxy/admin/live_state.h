#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pgproxy/admin/console_command.h"
#include "pgproxy/admin/control.h"
#include "pgproxy/config/config.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/pool/shared_pools.h"

namespace pgproxy::upstream {
class BackendTable;
}

namespace pgproxy::admin {

// The live state every admin view renders (the psql console, /api/v1, the dashboard through the
// API): read once per request from shared memory into plain structs (capture), then turned into
// tables (view) that the console sends as rows and the API as JSON. Neither renderer computes a
// number of its own, so the two cannot disagree. See docs/design-notes.md, "Live state".

struct BackendState {
  std::string mapping;
  std::string host;
  unsigned port = 0;
  std::string health;  // up, down, unknown
  std::string role;    // primary, standby, unknown
  unsigned weight = 1;
  std::int64_t active = 0;  // sessions on it, all mappings and workers
  bool drained = false;
  std::uint64_t last_check_ms = 0;  // wall clock; 0: never checked
  std::string last_error;
  std::int64_t lag_ms = -1;  // replica lag from logged-in checks; -1: not known
};

struct MappingState {
  std::string name;
  std::string tls;        // passthrough, terminate
  std::string pool_mode;  // session, transaction, statement; "" without a pool
  bool authenticate = false;
  bool disabled = false;
  bool paused = false;
  std::size_t backends = 0, backends_up = 0;  // up: not down (unknown counts as up)
  std::size_t routes = 0;                     // routes by startup parameters
  bool read_write_split = false;
  // Client sessions past admission (spliced or pooled: what max_connections counts).
  std::int64_t admitted = 0;
  unsigned max_connections = 0;
  config::Rate connection_rate;
  std::uint64_t bytes_up = 0, bytes_down = 0;
  std::uint64_t sessions_closed = 0;  // over the master's life, every outcome
  MappingRates rates;                 // per second, over the master's last stats period
};

struct LiveState;
// A mapping's totals over the master's life, as SHOW STATS adds them up (its pools' counts, its
// sessions' bytes).
struct MappingTotals {
  std::string name;
  std::uint64_t xact = 0, query = 0, received = 0, sent = 0, wait_us = 0, waits = 0;
  std::uint64_t connections = 0;
};
std::vector<MappingTotals> mappingTotals(const LiveState& s);
// The rates between two samples of the totals `seconds` apart (a counter that went back, as a
// mapping removed and added again, gives 0).
MappingRates ratesBetween(const MappingTotals& before, const MappingTotals& now, double seconds);

struct GlobalLimits {
  unsigned max_connections = 0, max_connections_per_client = 0, max_handshakes = 0;
  config::Rate connection_rate;
  std::int64_t admitted = 0, handshaking = 0;
};

struct LiveState {
  std::vector<MappingState> mappings;
  std::vector<BackendState> backends;
  std::vector<pool::PoolSample> pools;
  std::vector<GenerationInfo> generations;  // newest first
  GlobalLimits limits;
  std::vector<std::pair<std::string, std::string>> config;  // key, value (secrets redacted)
  std::string version;
  bool consistent = true;  // false: a worker's exit was being folded; counts may lag
};

// What capture reads; every pointer may be null in tests (the part is left empty).
struct Sources {
  const config::Config* config = nullptr;
  const metrics::Registry* metrics = nullptr;
  const upstream::BackendTable* backends = nullptr;
  const std::vector<std::vector<std::size_t>>* backend_slots = nullptr;
  const pool::SharedPools* pools = nullptr;
  const Control* control = nullptr;
  std::string version;
};
// `topic`: only what that view shows is read (kNone: everything).
LiveState capture(const Sources& src, Topic topic = Topic::kNone);

// A view: typed columns and rows of cells in PostgreSQL's text form (NULL: no value).
enum class ColumnType : std::uint8_t { kText, kInt8, kBool, kTimestamp };
struct Column {
  const char* name;
  ColumnType type;
};
using Cell = std::optional<std::string>;
// A wall-clock time (Unix milliseconds) as PostgreSQL prints a timestamptz in UTC; NULL for 0.
Cell timestampCell(std::int64_t unix_ms);
struct View {
  std::vector<Column> columns;
  std::vector<std::vector<Cell>> rows;
};

// The table SHOW `topic` answers with. Column names follow PgBouncer's where the concept is the
// same (SHOW POOLS' cl_waiting, sv_active ...; SHOW STATS' total_xact_count ...). Pure.
View view(const LiveState& s, Topic topic);

// Whether capture answers `topic` from shared memory alone; CLIENTS and SERVERS are each
// worker's own lists, asked over the control sockets (view() gives their columns, no rows).
bool sharedTopic(Topic topic);

// The rows of SHOW CONFIG: every scalar of the YAML document as a dotted key
// (mappings[0].pool.size), in file order; values of keys that hold secrets (token) replaced by
// "(redacted)". Pure; an unparsable text gives no rows.
std::vector<std::pair<std::string, std::string>> flattenConfig(const std::string& yaml);

// Wire form for the console: RowDescription, DataRows, CommandComplete "SHOW".
std::string renderRows(const View& v);
// JSON for the API: an array of objects, numbers and booleans typed, NULL as null.
std::string renderJson(const View& v);
std::string jsonString(std::string_view s);

}  // namespace pgproxy::admin
