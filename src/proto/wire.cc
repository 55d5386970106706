#include "pgproxy/proto/wire.h"

#include <algorithm>
#include <cstring>

namespace pgproxy::proto {

std::string buildMessage(char type, std::string_view body) {
  std::string out(1, type);
  appendU32(out, static_cast<std::uint32_t>(4 + body.size()));
  out.append(body);
  return out;
}

namespace {
std::string buildErrorResponse(std::string_view severity, std::string_view sqlstate,
                               std::string_view message, std::string_view hint, char type = 'E') {
  std::string body;
  auto field = [&body](char code, std::string_view value) {
    body.push_back(code);
    body.append(value);
    body.push_back('\0');
  };
  field('S', severity);
  field('V', severity);
  field('C', sqlstate);
  field('M', message);
  if (!hint.empty()) {
    field('H', hint);
  }
  body.push_back('\0');
  return buildMessage(type, body);
}
}  // namespace

std::string buildFatal(std::string_view sqlstate, std::string_view message, std::string_view hint) {
  return buildErrorResponse("FATAL", sqlstate, message, hint);
}

std::string buildError(std::string_view sqlstate, std::string_view message, std::string_view hint) {
  return buildErrorResponse("ERROR", sqlstate, message, hint);
}

std::string buildNotice(std::string_view message) {
  return buildErrorResponse("NOTICE", "00000", message, {}, 'N');
}

std::string buildSslRequest() {
  std::string out;
  appendU32(out, 8);
  appendU32(out, 80877103);
  return out;
}

std::string buildCancelRequest(std::uint32_t pid, std::uint32_t key) {
  std::string out;
  appendU32(out, 16);
  appendU32(out, 80877102);
  appendU32(out, pid);
  appendU32(out, key);
  return out;
}

std::string buildTlsAlert(std::uint8_t description) {
  // Record: alert(21), TLS 1.2 record version, length 2, level fatal(2), description.
  return std::string{
      '\x15', '\x03', '\x03', '\x00', '\x02', '\x02', static_cast<char>(description)};
}

BackendKeyScanner::State BackendKeyScanner::feed(std::string_view bytes) {
  return scan(bytes.data(), nullptr, bytes.size());
}

BackendKeyScanner::State BackendKeyScanner::feed(char* bytes, std::size_t len) {
  return scan(bytes, rewrite_ ? bytes : nullptr, len);
}

void BackendKeyScanner::rewriteTo(std::uint32_t pid, std::uint32_t key) {
  std::string b;
  appendU32(b, pid);
  appendU32(b, key);
  std::memcpy(replacement_, b.data(), sizeof(replacement_));
  rewrite_ = true;
}

BackendKeyScanner::State BackendKeyScanner::scan(const char* in, char* out, std::size_t len) {
  // BackendKeyData comes within the first few messages; anything beyond this is not a backend.
  constexpr std::uint32_t kMaxScannedMessage = 1 << 20;
  // BackendKeyData: length word, pid, then the key up to the end of the message.
  constexpr std::uint32_t kMinKeyMessage = 8 + kMinCancelKey;
  constexpr std::uint32_t kMaxKeyMessage = 8 + kMaxCancelKey;
  std::size_t i = 0;
  while (i < len && state_ == State::kScanning) {
    if (header_have_ < 5) {
      header_[header_have_++] = in[i++];
      if (header_have_ == 5) {
        type_ = header_[0];
        std::uint32_t mlen = readU32(header_ + 1);
        // What a backend may send before ReadyForQuery: authentication, error, notice,
        // ParameterStatus, BackendKeyData, ReadyForQuery, NegotiateProtocolVersion.
        bool loginType = std::string_view("RENSKZv").find(type_) != std::string_view::npos;
        remaining_ = mlen - 4;
        if (!loginType || mlen < 4 || mlen > kMaxScannedMessage ||
            (type_ == 'K' && (mlen < kMinKeyMessage || mlen > kMaxKeyMessage))) {
          state_ = State::kInvalid;
          break;
        }
        body_at_ = 0;
        if (type_ == 'K') {
          key_.clear();
          key_.reserve(mlen - 8);
          rewriting_ = out && mlen == 8 + 4;  // a protocol 3.0 key only
        }
      } else {
        continue;
      }
    }
    std::size_t take = std::min<std::size_t>(remaining_, len - i);
    if (type_ == 'K') {
      for (std::size_t j = 0; j < take; ++j, ++body_at_) {
        if (body_at_ < sizeof(pid_bytes_)) {
          pid_bytes_[body_at_] = in[i + j];
        } else {
          key_.push_back(in[i + j]);  // bounded by the length checked above
        }
        if (rewriting_) {
          out[i + j] = replacement_[body_at_];
        }
      }
    }
    i += take;
    remaining_ -= static_cast<std::uint32_t>(take);
    if (remaining_ == 0) {
      header_have_ = 0;
      if (type_ == 'K') {
        pid_ = readU32(pid_bytes_);
        state_ = State::kFound;
      } else if (type_ == 'Z' || type_ == 'E') {
        state_ = State::kDone;  // ready for query without a key, or login failed
      }
    }
  }
  return state_;
}

}  // namespace pgproxy::proto
