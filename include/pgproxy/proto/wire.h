#pragma once

#include <algorithm>
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

// Splits a PostgreSQL v3 message stream into messages for the protocol log, without buffering the
// stream: for each message it reports the type, the length and, for Query and Parse only, up to
// kMaxCapture bytes of the body (the SQL). Password and SASL messages ('p') are never captured.
class MessageFramer {
 public:
  static constexpr std::size_t kMaxCapture = 1024;
  struct Message {
    char type;
    std::uint32_t length;   // as on the wire: the body plus the 4 length bytes
    std::string_view text;  // captured body prefix (Query/Parse from the client), else empty
  };
  // `client`: frontend messages (Q and P bodies are captured); `skip`: a startup packet first.
  MessageFramer(bool client, std::size_t skip) : client_(client), skip_(skip) {}
  template <typename Fn>
  void feed(std::string_view bytes, Fn on_message);
  bool lost() const { return lost_; }

 private:
  bool client_;
  std::size_t skip_;
  char header_[5];
  std::size_t header_have_ = 0;
  std::uint32_t remaining_ = 0;
  bool in_body_ = false;
  bool capturing_ = false;
  std::string capture_;
  bool lost_ = false;
};

template <typename Fn>
void MessageFramer::feed(std::string_view bytes, Fn on_message) {
  std::size_t i = 0;
  while (i < bytes.size() && !lost_) {
    if (skip_ > 0) {
      std::size_t n = std::min(skip_, bytes.size() - i);
      skip_ -= n;
      i += n;
      continue;
    }
    if (!in_body_) {
      header_[header_have_++] = bytes[i++];
      if (header_have_ < 5) {
        continue;
      }
      header_have_ = 0;
      std::uint32_t len = readU32(header_ + 1);
      if (len < 4) {
        lost_ = true;
        return;
      }
      remaining_ = len - 4;
      capturing_ = client_ && (header_[0] == 'Q' || header_[0] == 'P');
      capture_.clear();
      in_body_ = true;
    }
    std::size_t n = std::min<std::size_t>(remaining_, bytes.size() - i);
    if (capturing_ && capture_.size() < kMaxCapture) {
      capture_.append(bytes.substr(i, std::min(n, kMaxCapture - capture_.size())));
    }
    i += n;
    remaining_ -= static_cast<std::uint32_t>(n);
    if (remaining_ == 0) {
      in_body_ = false;
      on_message(Message{header_[0], readU32(header_ + 1), capture_});
    }
  }
}

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
