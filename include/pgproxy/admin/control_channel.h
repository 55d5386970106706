#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pgproxy/admin/live_state.h"

namespace pgproxy::admin {

// What one worker is asked over its control socket: the parts of the live state only it knows
// (its sessions and server connections) and the commands that act on them. Length-prefixed
// binary frames; the codec is pure (fuzzed), the sockets are control_server.h and
// control_gather.h. docs/design-notes.md, "Live state", says why sockets and not shared memory.
enum class ControlKind : std::uint8_t {
  kClients = 1,      // rows of SHOW CLIENTS
  kServers = 2,      // rows of SHOW SERVERS
  kKillMapping = 3,  // close the sessions of mapping `name`; rows: one, the count
  kKillClient = 4,   // close the session whose console id is `number`; rows: one, the count
  kReconnect = 5,    // close mapping `name`'s server connections as they are released
};

struct ControlRequest {
  ControlKind kind = ControlKind::kClients;
  std::uint64_t number = 0;  // kKillClient: the id; kClients: list only ids above it (a page)
  std::string name;
  std::uint32_t limit = 0;  // kClients: at most this many rows, lowest ids first; 0: all
  bool operator==(const ControlRequest&) const = default;
};

struct ControlReply {
  std::string error;  // empty: done
  std::vector<std::vector<Cell>> rows;
  bool operator==(const ControlReply&) const = default;
};

inline constexpr std::uint8_t kControlVersion = 1;
inline constexpr std::size_t kMaxControlRequest = 1024;
// A worker's part of SHOW CLIENTS for ~100k sessions; a reply announcing more is refused.
inline constexpr std::size_t kMaxControlReply = 32 * 1024 * 1024;
inline constexpr std::size_t kMaxControlColumns = 64;

std::string encodeRequest(const ControlRequest& r);
std::string encodeReply(const ControlReply& r);

enum class Decoded : std::uint8_t { kNeedMore, kBad, kDone };
// `in` holds the bytes read so far from the start of a frame; kDone when the whole frame is in
// and well formed (bytes after it are kBad: one request, one reply per connection).
Decoded decodeRequest(std::string_view in, ControlRequest& out);
Decoded decodeReply(std::string_view in, ControlReply& out);

// The abstract Unix socket name (without its leading NUL) of worker slot `slot` of the pgproxy
// instance whose shared memory says `instance`: no file to clean up after a crash, and two
// instances on one host never meet.
std::string controlSocketName(std::uint64_t instance, std::size_t slot);

// Client ids as the console shows them: the worker's slot and its own session id in one number,
// so KILL_CLIENT knows which worker to ask.
inline constexpr std::uint64_t kClientIdSlotFactor = 10'000'000'000ull;
inline std::uint64_t globalClientId(std::size_t slot, std::uint64_t session) {
  return static_cast<std::uint64_t>(slot) * kClientIdSlotFactor + session % kClientIdSlotFactor;
}

// The columns of SHOW CLIENTS and SHOW SERVERS, in the order workers send their cells.
const std::vector<Column>& clientColumns();
const std::vector<Column>& serverColumns();

}  // namespace pgproxy::admin
