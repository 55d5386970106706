#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "pgproxy/base/result.h"

namespace pgproxy::admin {

// The admin console's language (the virtual database `pgproxy`, queried with psql): one command
// per simple query, as PgBouncer's console takes them. Pure: text in, a command or an error out;
// running it is the live state's job (docs/design-notes.md, "Live state").

enum class Verb : std::uint8_t {
  kEmpty,  // only spaces, comments or ';': PostgreSQL answers EmptyQueryResponse
  kShow,
  kPause,
  kResume,
  kDisable,
  kEnable,
  kKill,
  kKillClient,
  kReconnect,
  kDrainBackend,
  kUndrainBackend,
  kReload,
  kShutdown,
};

enum class Topic : std::uint8_t {
  kNone,
  kMappings,
  kBackends,
  kPools,
  kClients,
  kServers,
  kStats,
  kLimits,
  kGenerations,
  kConfig,
  kVersion,
};

struct Command {
  Verb verb = Verb::kEmpty;
  Topic topic = Topic::kNone;  // SHOW
  std::string target;          // a mapping's name, or a backend's host:port; empty: every one
  std::uint64_t client = 0;    // KILL_CLIENT
  bool wait = false;           // SHUTDOWN WAIT
  bool operator==(const Command&) const = default;
};

// What follows a command's keyword.
enum class Operand : std::uint8_t {
  kNone,
  kTopic,            // SHOW's
  kOptionalMapping,  // PAUSE, RESUME: all mappings without one
  kMapping,
  kClientId,
  kBackend,  // host:port
  kOptionalWait,
};

// One row per command: the parser reads this table, and so will the man page's console section
// and its check, so that a command cannot be added to one and not the other.
struct CommandSpec {
  std::string_view keyword;  // as written in docs: upper case, DRAIN BACKEND is two words
  Verb verb;
  Operand operand;
  std::string_view summary;
};
std::span<const CommandSpec> commands();

struct TopicSpec {
  std::string_view keyword;
  Topic topic;
};
std::span<const TopicSpec> topics();

// Longest name (mapping, backend) the console takes.
inline constexpr std::size_t kMaxConsoleName = 512;

// Keywords in any case; a name bare (letters, digits and . _ - * : [ ]) or quoted ('...' or
// "...", the quote doubled inside); an optional ';'; SQL comments anywhere. The error's message is
// for the client (SQLSTATE 42601).
base::Result<Command> parseCommand(std::string_view sql);

// The command as the console would take it back (names quoted when they need it): for logs and
// the audit trail.
std::string formatCommand(const Command& c);

}  // namespace pgproxy::admin
