// Fuzzes the SQL statement classifier a transaction pool runs over every simple Query a client
// sends: arbitrary bytes (unterminated quotes, comments and dollar quotes, NUL bytes) must never
// crash it, read past the input, or break its promises about what it returns.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/sql/statement.h"

extern const char* const kFuzzTargetName = "sql_statement";

namespace {

// Within [begin, end) of `outer`, by address: every text is a view into the input, not a copy.
bool inside(std::string_view outer, std::string_view inner) {
  if (inner.empty()) {
    return inner.data() == nullptr ||
           (inner.data() >= outer.data() && inner.data() <= outer.data() + outer.size());
  }
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  if (all.empty()) {
    return 0;
  }
  // The first byte picks the maximum number of statements (0 included).
  std::size_t max = static_cast<unsigned char>(all[0]) % 8;
  std::string_view sql = all.substr(1);
  auto split = pgproxy::sql::split(sql, max);
  if (split.statements.size() > max) {
    __builtin_trap();
  }
  const char* last_end = sql.data();
  for (const auto& st : split.statements) {
    if (!inside(sql, st.text)) {
      __builtin_trap();
    }
    // In order, not overlapping.
    if (!st.text.empty()) {
      if (st.text.data() < last_end) {
        __builtin_trap();
      }
      last_end = st.text.data() + st.text.size();
      // Trimmed: no leading or trailing whitespace.
      char f = st.text.front(), b = st.text.back();
      if (f == ' ' || f == '\n' || f == '\t' || b == ' ' || b == '\n' || b == '\t') {
        __builtin_trap();
      }
    }
    if (st.config_calls.size() > pgproxy::sql::Statement::kMaxConfigCalls) {
      __builtin_trap();
    }
    if (st.advisory_lock != (st.advisory_locks > 0) ||
        st.advisory_unlock != (st.advisory_unlocks > 0)) {
      __builtin_trap();
    }
    if ((!st.config_calls.empty() || st.set_config_opaque) && !st.set_config) {
      __builtin_trap();
    }
    // A name or value never exceeds the input it came from.
    if (st.name.size() > sql.size() || st.value.size() > sql.size()) {
      __builtin_trap();
    }
    if (st.kind == pgproxy::sql::Kind::kEmpty) {
      if (split.statements.size() != 1) {
        __builtin_trap();
      }
      continue;
    }
    // A statement's own text holds no top-level ';': split again, it is one statement, the same.
    auto again = pgproxy::sql::split(st.text, 2);
    if (again.statements.size() != 1 || again.truncated || again.statements[0].kind != st.kind ||
        again.statements[0].name != st.name || again.statements[0].text != st.text) {
      __builtin_trap();
    }
  }
  if (split.truncated && split.statements.size() != max) {
    __builtin_trap();
  }
  // A SET value decodes or is refused, never a crash; what it decodes to is no longer than the
  // text plus the ", " a list's items get.
  std::string value;
  if (pgproxy::sql::settingValue(sql, value) && value.size() > 2 * sql.size()) {
    __builtin_trap();
  }
  // Quoting round-trips through folding, whatever the bytes.
  if (pgproxy::sql::foldIdentifier(pgproxy::sql::quoteIdentifier(sql)) != sql) {
    __builtin_trap();
  }
  return 0;
}
