#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pgproxy::proto {

inline std::uint32_t readU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t{u[0]} << 24) | (std::uint32_t{u[1]} << 16) | (std::uint32_t{u[2]} << 8) |
         std::uint32_t{u[3]};
}

inline void appendU32(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

// SQLSTATEs pgproxy sends itself (PostgreSQL's errcodes.txt).
namespace sqlstate {
inline constexpr const char* kProtocolViolation = "08P01";
inline constexpr const char* kConnectionFailure = "08006";
inline constexpr const char* kRejectedConnection = "08004";
inline constexpr const char* kFeatureNotSupported = "0A000";
inline constexpr const char* kInvalidAuthorization = "28000";
inline constexpr const char* kTooManyConnections = "53300";
inline constexpr const char* kCannotConnectNow = "57P03";
}  // namespace sqlstate

// A FATAL ErrorResponse ('E') as PostgreSQL sends it: S, V, C, M and optional H fields.
std::string buildFatal(std::string_view sqlstate, std::string_view message,
                       std::string_view hint = {});

// The frontend's SSLRequest, as pgproxy sends it to a backend.
std::string buildSslRequest();

// A TLS alert record (fatal), the only refusal possible once the client is in a TLS handshake.
inline constexpr std::uint8_t kAlertInternalError = 80;
inline constexpr std::uint8_t kAlertUnrecognizedName = 112;
inline constexpr std::uint8_t kAlertNoApplicationProtocol = 120;
std::string buildTlsAlert(std::uint8_t description);

// Follows the frames of a byte stream without buffering it: TLS records (5-byte header, 16-bit
// length) or PostgreSQL v3 messages (type byte, 32-bit length including itself). Remembers the type
// of the last frame that started, so a session can tell a client that said goodbye (TLS
// close_notify alert, or Terminate) before a reset from one that vanished mid-conversation.
class FrameTracker {
 public:
  enum class Kind { kTlsRecords, kPgMessages };
  explicit FrameTracker(Kind kind = Kind::kTlsRecords, std::size_t skip = 0)
      : kind_(kind), skip_(skip) {}
  void feed(std::string_view bytes);
  int lastType() const { return last_type_; }  // -1 before the first frame
  bool lost() const { return lost_; }          // the stream stopped framing; lastType() is stale

 private:
  Kind kind_;
  std::size_t skip_;  // bytes before the first frame (a startup packet)
  std::uint64_t remaining_ = 0;
  unsigned char header_[5];
  std::size_t header_have_ = 0;
  int last_type_ = -1;
  bool lost_ = false;
};

// Follows the backend's message stream at the start of a plaintext session, to learn the
// BackendKeyData (pid, secret) that a later CancelRequest will name. Stops looking at the first
// ReadyForQuery or on anything that does not frame as protocol 3 messages.
class BackendKeyScanner {
 public:
  enum class State { kScanning, kFound, kDone };
  // Feed the next bytes the backend sent, in order. Returns the state after them.
  State feed(std::string_view bytes);
  State state() const { return state_; }
  std::uint32_t pid() const { return pid_; }
  std::uint32_t key() const { return key_; }

 private:
  State state_ = State::kScanning;
  char header_[5];
  std::size_t header_have_ = 0;
  std::uint32_t remaining_ = 0;  // body bytes left in the current message
  char type_ = 0;
  char body_[8];
  std::size_t body_have_ = 0;
  std::uint32_t pid_ = 0;
  std::uint32_t key_ = 0;
};

}  // namespace pgproxy::proto
