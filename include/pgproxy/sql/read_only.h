#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgproxy::sql {

// Which server of a read/write split a transaction may run on, judged from its first message.
// A standby is chosen only when the text proves the transaction reads: every statement is a
// SELECT (no FOR UPDATE/SHARE, no INTO, no data-modifying CTE, no call of a function not known
// to be read-only), VALUES, TABLE or SHOW; or the transaction starts READ ONLY (BEGIN READ ONLY,
// START TRANSACTION READ ONLY, BEGIN followed by SET TRANSACTION READ ONLY, a leading SET
// TRANSACTION READ ONLY). Anything else, and anything the lexer cannot follow (an unterminated
// quote or comment), goes to the primary. Pure: no I/O, no allocation on the common path.
enum class Target { kPrimary, kStandby };

// A session's own choice (`SET pgproxy.route = ...`): auto lets the classifier decide.
enum class RouteSetting { kAuto, kPrimary, kStandby };

struct SplitDecision {
  Target target = Target::kPrimary;
  // A leading comment /* pgproxy: primary */ or /* pgproxy: standby */ decided it.
  bool hinted = false;
  // The text may change data (it is neither a proven read nor only SET / RESET of settings),
  // whatever a hint says: read_after_write counts from the end of such transactions.
  bool writes = true;
  // The text sets pgproxy.route (SET, SET SESSION, RESET, RESET ALL): the session's new choice,
  // applied from the next transaction on.
  bool sets_route = false;
  RouteSetting route = RouteSetting::kAuto;
  // BEGIN / START TRANSACTION without READ ONLY, READ WRITE or SERIALIZABLE, followed only by
  // reads: an explicit transaction whose statements are still to come (read_write_split:
  // optimistic tries it on a standby).
  bool explicit_begin = false;
  const char* reason = "";  // why the primary, for the debug log
};

// Function names (lower case, unqualified or schema.name) the classifier treats as read-only on
// top of its built-in list of PostgreSQL's own (aggregates, string, date, math, JSON functions):
// a mapping's read_only_functions.
class ReadOnlyFunctions {
 public:
  ReadOnlyFunctions() = default;
  explicit ReadOnlyFunctions(std::vector<std::string> names);
  // `name` as written (folded here); `schema` empty when unqualified.
  bool contains(std::string_view schema, std::string_view name) const;

 private:
  std::vector<std::string> extra_;  // sorted
};

SplitDecision classifyForSplit(std::string_view sql, const ReadOnlyFunctions& functions);

}  // namespace pgproxy::sql
