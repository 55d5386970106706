#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgproxy::pool {

// Session state a pooled client owns while its server connections change under it: the run-time
// parameters. A small list, not a map: a session has a dozen, and an idle client's size is
// pgproxy's memory per client.
class Params {
 public:
  using Entry = std::pair<std::string, std::string>;
  // Sets (or adds) one; names compare case-insensitively, as PostgreSQL's do.
  void set(std::string_view name, std::string_view value);
  void remove(std::string_view name);
  const std::string* get(std::string_view name) const;
  const std::vector<Entry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }

 private:
  std::vector<Entry> entries_;
};

// Whether PostgreSQL reports `name` in ParameterStatus and a client may set it: pgproxy follows
// these from the server's reports and sets them on every server the client gets.
bool isReportedSettable(std::string_view name);
// Whether `a` and `b` agree on every isReportedSettable parameter (both lack it, or both have
// the same value): two pools whose welcomes agree need no rebasing of a client's parameters.
bool sameReportedSettable(const Params& a, const Params& b);

// The body of a ParameterStatus message ("name\0value\0"); false when it is malformed.
bool parseParameterStatus(std::string_view body, std::string_view& name, std::string_view& value);
std::string buildParameterStatus(std::string_view name, std::string_view value);

// A client's StartupMessage, as a pool sees it: user and database pick the pool, reported
// parameters are part of the client's state, and the others (and every `-c name=value` of
// `options`) are set on each server it gets (`extras`). Returns an error message for what a pool
// cannot honour (replication, options other than -c / --name=value).
struct StartupSplit {
  std::string user, database;
  Params reported;  // isReportedSettable names
  Params extras;    // the rest, set but not reported back
};
std::string splitStartup(const std::vector<std::pair<std::string, std::string>>& params,
                         StartupSplit& out);

// A digest of a session state as syncQuery sees it (the reported settable parameters of `base`
// with `over` over them, and the extras), so that linking a client to a server already in its
// state costs a comparison instead of a walk over both lists: the common case in transaction
// pooling, where most clients never change a parameter.
std::uint64_t stateDigest(const Params& base, const Params& over, const Params& extras);

// One simple Query that makes a server's state the client's: set_config for each reported
// parameter whose value differs (or the server lacks), and for each extra; RESET for the
// extras the server has that the client does not. Empty when nothing differs. A client's reported
// parameters are `base` (its pool's welcome) with `client` (what it changed) over them, so that
// an idle client holds only its differences.
std::string syncQuery(const Params& base, const Params& client, const Params& server,
                      const Params& client_extras, const Params& server_extras);

}  // namespace pgproxy::pool
