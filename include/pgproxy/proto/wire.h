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
inline constexpr const char* kInvalidPassword = "28P01";
inline constexpr const char* kTooManyConnections = "53300";
inline constexpr const char* kIdleSessionTimeout = "57P05";
inline constexpr const char* kCannotConnectNow = "57P03";
inline constexpr const char* kOutOfMemory = "53200";
inline constexpr const char* kIoError = "58030";
inline constexpr const char* kDuplicatePreparedStatement = "42P05";
inline constexpr const char* kInvalidSqlStatementName = "26000";
inline constexpr const char* kReadOnlySqlTransaction = "25006";
}  // namespace sqlstate

// Each whole message of `buf` from offset `at` on, given to on_message(type, body) until it
// returns false; `at` moves past each message given. False: a length below 4 (not protocol 3).
template <typename Fn>
bool eachWholeMessage(std::string_view buf, std::size_t& at, Fn on_message) {
  while (buf.size() - at >= 5) {
    std::uint32_t len = readU32(buf.data() + at + 1);
    if (len < 4) {
      return false;
    }
    if (buf.size() - at - 1 < len) {
      break;
    }
    char type = buf[at];
    std::string_view body = buf.substr(at + 5, len - 4);
    at += 1 + len;
    if (!on_message(type, body)) {
      break;
    }
  }
  return true;
}

// A typed protocol message: the type byte, the length, the body.
std::string buildMessage(char type, std::string_view body);

// A FATAL ErrorResponse ('E') as PostgreSQL sends it: S, V, C, M and optional H fields.
std::string buildFatal(std::string_view sqlstate, std::string_view message,
                       std::string_view hint = {});
// The same at ERROR severity: the statement fails, the session goes on.
std::string buildError(std::string_view sqlstate, std::string_view message,
                       std::string_view hint = {});

// A NoticeResponse ('N', severity NOTICE, SQLSTATE 00000): said to the client, nothing failed.
std::string buildNotice(std::string_view message);

// The frontend's SSLRequest, as pgproxy sends it to a backend.
std::string buildSslRequest();
// A protocol 3.0 CancelRequest, as pgproxy sends it to a pooled server.
std::string buildCancelRequest(std::uint32_t pid, std::uint32_t key);

// A TLS alert record (fatal), the only refusal possible once the client is in a TLS handshake.
inline constexpr std::uint8_t kAlertAccessDenied = 49;
inline constexpr std::uint8_t kAlertInternalError = 80;
inline constexpr std::uint8_t kAlertUnrecognizedName = 112;
inline constexpr std::uint8_t kAlertNoApplicationProtocol = 120;
std::string buildTlsAlert(std::uint8_t description);

// Splits a byte stream into frames without buffering it: TLS records (type, version, 16-bit
// length) or PostgreSQL v3 messages (type, 32-bit length that counts itself). For each frame it
// reports the type, the length and, when asked to capture SQL, up to kMaxCapture bytes of the body
// of Query and Parse messages. Password and SASL messages ('p') are never captured.
class MessageFramer {
 public:
  enum class Framing { kTlsRecords, kPgMessages };
  static constexpr std::size_t kMaxCapture = 4096;  // audit::kMaxStatement
  struct Message {
    char type;
    std::uint32_t length;   // as on the wire (PostgreSQL: body plus the 4 length bytes)
    std::string_view text;  // captured body prefix (client Query/Parse), else empty
  };
  // `capture_sql`: frontend messages whose Q and P bodies are wanted; `skip`: a startup packet
  // that comes before the first frame.
  MessageFramer(Framing framing, bool capture_sql, std::size_t skip)
      : framing_(framing), capture_types_(capture_sql ? "QP" : ""), skip_(skip) {}
  // Captures the bodies of the messages whose type is in `capture_types` (a static string).
  MessageFramer(Framing framing, std::string_view capture_types, std::size_t skip)
      : framing_(framing), capture_types_(capture_types), skip_(skip) {}
  template <typename Fn>
  void feed(std::string_view bytes, Fn on_message) {
    feedUntil(bytes, [&](const Message& m) {
      on_message(m);
      return true;
    });
  }
  // Like feed, but stops after a message for which `on_message` returns false; returns the bytes
  // consumed (all of them unless it stopped).
  template <typename Fn>
  std::size_t feedUntil(std::string_view bytes, Fn on_message);
  bool lost() const { return lost_; }
  // Between frames: the next byte would start a new one.
  bool atBoundary() const { return !lost_ && !in_body_ && header_have_ == 0 && skip_ == 0; }

 private:
  Framing framing_;
  std::string_view capture_types_;
  std::size_t skip_;
  char header_[5] = {};
  std::size_t header_have_ = 0;
  std::uint32_t remaining_ = 0;
  std::uint32_t remaining_at_start_ = 0;  // a TLS record's length
  bool in_body_ = false;
  bool capturing_ = false;
  std::string capture_;
  bool lost_ = false;
};

template <typename Fn>
std::size_t MessageFramer::feedUntil(std::string_view bytes, Fn on_message) {
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
      if (framing_ == Framing::kTlsRecords) {
        remaining_ = (std::uint32_t{static_cast<unsigned char>(header_[3])} << 8) |
                     static_cast<unsigned char>(header_[4]);
      } else {
        std::uint32_t len = readU32(header_ + 1);
        if (len < 4) {
          lost_ = true;
          return i;
        }
        remaining_ = len - 4;
      }
      remaining_at_start_ = remaining_;
      capturing_ = capture_types_.find(header_[0]) != std::string_view::npos;
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
      std::uint32_t length =
          framing_ == Framing::kTlsRecords ? remaining_at_start_ : readU32(header_ + 1);
      if (!on_message(Message{header_[0], length, capture_})) {
        return i;
      }
    }
  }
  return i;
}

// The type of the last complete frame a stream carried, so a session can tell a client that said
// goodbye (TLS close_notify alert, or Terminate) before a reset from one that vanished.
class FrameTracker {
 public:
  using Kind = MessageFramer::Framing;
  explicit FrameTracker(Kind kind = Kind::kTlsRecords, std::size_t skip = 0)
      : framer_(kind, false, skip) {}
  void feed(std::string_view bytes) {
    framer_.feed(bytes, [this](const MessageFramer::Message& m) {
      last_type_ = static_cast<unsigned char>(m.type);
      last_length_ = m.length;
    });
  }
  int lastType() const { return last_type_; }                // -1 before the first frame
  std::uint32_t lastLength() const { return last_length_; }  // its length field
  bool lost() const { return framer_.lost(); }               // the stream stopped framing
  bool atBoundary() const { return framer_.atBoundary(); }

 private:
  MessageFramer framer_;
  int last_type_ = -1;
  std::uint32_t last_length_ = 0;
};

// A backend's cancel secret (BackendKeyData, CancelRequest): exactly 4 bytes up to protocol 3.0,
// 4 to 256 bytes from protocol 3.2 (PostgreSQL 18 sends 32; the rest is room for poolers).
inline constexpr std::size_t kMinCancelKey = 4;
inline constexpr std::size_t kMaxCancelKey = 256;

// Follows the backend's message stream at the start of a plaintext session, to learn the
// BackendKeyData (pid, secret) that a later CancelRequest will name. Stops looking at the first
// ReadyForQuery or on anything that does not frame as protocol 3 messages.
class BackendKeyScanner {
 public:
  // kInvalid: what came is not PostgreSQL's login sequence (a wrong type byte or length).
  enum class State : std::uint8_t { kScanning, kFound, kDone, kInvalid };
  // Feed the next bytes the backend sent, in order. Returns the state after them.
  State feed(std::string_view bytes);
  // The same, and a BackendKeyData with a protocol 3.0 key (4 bytes) has its pid and key
  // replaced in `bytes` by those of rewriteTo, wherever the message is split.
  State feed(char* bytes, std::size_t len);
  // The pid and key the client is to see instead of the server's (pgproxy's own key).
  void rewriteTo(std::uint32_t pid, std::uint32_t key);
  // kFound: whether the key the client got is rewriteTo's (a 3.2 key is never rewritten).
  bool rewritten() const { return rewriting_; }
  void issued(std::uint32_t& pid, std::uint32_t& key) const {
    pid = readU32(replacement_);
    key = readU32(replacement_ + 4);
  }
  State state() const { return state_; }
  std::uint32_t pid() const { return pid_; }
  // kFound: the secret as the backend sent it, kMinCancelKey to kMaxCancelKey bytes.
  std::string_view key() const { return key_; }
  char badType() const { return type_; }  // kInvalid: the offending message's type byte

 private:
  State scan(const char* in, char* out, std::size_t len);
  // Small fields first: the scanner lives in every spliced session.
  State state_ = State::kScanning;
  char header_[5] = {};
  std::uint8_t header_have_ = 0;
  char type_ = 0;
  bool rewrite_ = false;    // rewriteTo was called
  bool rewriting_ = false;  // this BackendKeyData is being rewritten
  char pid_bytes_[4] = {};
  char replacement_[8] = {};     // pid, key
  std::uint32_t remaining_ = 0;  // body bytes left in the current message
  std::uint32_t body_at_ = 0;    // body bytes of a BackendKeyData seen so far
  std::uint32_t pid_ = 0;
  // Not an inline 256-byte array: the scanner lives in every session, and a 3.0 key fits the
  // string's own buffer; only a 3.2 key allocates, once per login.
  std::string key_;
};

}  // namespace pgproxy::proto
