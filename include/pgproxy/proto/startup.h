#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pgproxy/proto/wire.h"

namespace pgproxy::proto {

// Request codes PostgreSQL puts where a StartupMessage has its protocol version.
inline constexpr std::uint32_t kSslRequestCode = 80877103;
inline constexpr std::uint32_t kGssEncRequestCode = 80877104;
inline constexpr std::uint32_t kCancelRequestCode = 80877102;
inline constexpr std::uint32_t kProtocol3 = 3u << 16;
// A CancelRequest is length, code, pid and the backend's secret: 16 bytes with a protocol 3.0 key,
// up to 12 + 256 with a protocol 3.2 one (PostgreSQL 18).
inline constexpr std::size_t kMinCancelRequest = 12 + kMinCancelKey;
inline constexpr std::size_t kMaxCancelRequest = 12 + kMaxCancelKey;
// PostgreSQL's MAX_STARTUP_PACKET_LENGTH (10000) bounds the packet after its length word, so the
// longest startup packet PostgreSQL reads is 10004 bytes; a longer one is refused at once.
inline constexpr std::size_t kMaxStartupPacket = 10004;
inline constexpr std::uint8_t kTlsHandshakeRecord = 0x16;

enum class PreambleKind {
  kNeedMore,    // not enough bytes yet to decide
  kSslRequest,  // consumed = 8
  kGssEncRequest,
  kCancelRequest,  // consumed = 12 + key length; pid/key filled
  kStartup,        // a whole StartupMessage of `consumed` bytes (any protocol version)
  kDirectTls,      // first byte 0x16: a TLS record (PostgreSQL 17 direct TLS); consumed = 0
  kInvalid,        // bad length or unknown code: close without replying
};

struct Preamble {
  PreambleKind kind = PreambleKind::kNeedMore;
  std::size_t consumed = 0;
  std::uint32_t code = 0;  // protocol version or request code
  std::uint32_t cancel_pid = 0;
  // The secret as the client sent it (kMinCancelKey to kMaxCancelKey bytes), a view into the
  // classified bytes.
  std::string_view cancel_key;
  const char* reason = "";  // for kInvalid: what the log says
};

// Classifies the first packet a client sends from the bytes received so far. Pure and resumable:
// call again with more bytes after kNeedMore. Never asks for more than kMaxStartupPacket bytes.
Preamble classifyPreamble(std::string_view bytes);

struct StartupParams {
  std::uint32_t version = 0;
  std::vector<std::pair<std::string, std::string>> params;
  std::string get(std::string_view key) const;
};

enum class StartupError { kNone, kBadLayout, kNoUser };

// Parses a whole StartupMessage (as returned with kStartup). Checks the layout PostgreSQL checks.
StartupError parseStartup(std::string_view packet, StartupParams& out);

// A StartupMessage of protocol `version` with these parameters, in this order.
std::string buildStartup(std::uint32_t version,
                         const std::vector<std::pair<std::string, std::string>>& params);

// Splits the `options` parameter as PostgreSQL does: on unescaped white space, a backslash
// escaping the next character. joinOptions is its inverse (escapes what splitting would eat).
std::vector<std::string> splitOptions(std::string_view s);
std::string joinOptions(const std::vector<std::string>& words);

// The setting that starts at words[i] of a split `options`, as PostgreSQL's backend reads them:
// "-c name=value" (two words), "-cname=value" or "--name=value". Returns how many words it
// takes, 0 when words[i] is none of these; `setting` is its "name=value" text.
std::size_t optionSetting(const std::vector<std::string>& words, std::size_t i,
                          std::string_view& setting);
// "name=value" as PostgreSQL reads it: dashes in the name are underscores. False without '='
// or with an empty name.
bool splitSetting(std::string_view setting, std::string& name, std::string& value);

}  // namespace pgproxy::proto
