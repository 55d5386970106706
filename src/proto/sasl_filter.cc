#include "pgproxy/proto/sasl_filter.h"

#include <cstdint>

#include "pgproxy/proto/wire.h"

namespace pgproxy::proto {
namespace {

constexpr std::uint32_t kAuthOk = 0;
constexpr std::uint32_t kAuthSasl = 10;

// AuthenticationSASL body after the code: NUL-terminated names, then an empty name.
// Returns false when the list is malformed (then the message is forwarded unchanged).
bool rewriteMechanisms(std::string_view list, std::string& body, bool& removed) {
  std::size_t pos = 0;
  while (pos < list.size()) {
    std::size_t nul = list.find('\0', pos);
    if (nul == std::string_view::npos) {
      return false;
    }
    std::string_view name = list.substr(pos, nul - pos);
    pos = nul + 1;
    if (name.empty()) {
      body.push_back('\0');
      return pos == list.size();
    }
    if (name == SaslMechanismFilter::kPlusMechanism) {
      removed = true;
      continue;
    }
    body.append(name);
    body.push_back('\0');
  }
  return false;
}

}  // namespace

ScramClientFirst checkSaslInitialResponse(std::string_view bytes) {
  if (bytes.size() < 5) {
    return ScramClientFirst::kNeedMore;
  }
  std::uint32_t len = readU32(bytes.data() + 1);
  if (bytes[0] != 'p' || len < 4 || len > SaslMechanismFilter::kMaxMessage) {
    return ScramClientFirst::kFine;
  }
  if (bytes.size() < 1 + static_cast<std::size_t>(len)) {
    return ScramClientFirst::kNeedMore;
  }
  std::string_view body = bytes.substr(5, len - 4);
  std::size_t nul = body.find('\0');
  if (nul == std::string_view::npos || body.substr(0, nul) != "SCRAM-SHA-256" ||
      body.size() < nul + 1 + 4) {
    return ScramClientFirst::kFine;
  }
  std::string_view data = body.substr(nul + 1 + 4);  // after the Int32 length of the data
  return data.substr(0, 2) == "y," ? ScramClientFirst::kBindingDowngrade : ScramClientFirst::kFine;
}

void SaslMechanismFilter::finish(std::string& out) {
  out.append(pending_);
  std::string().swap(pending_);
  active_ = false;
}

void SaslMechanismFilter::feed(std::string_view in, std::string& out) {
  if (!active_) {
    out.append(in);
    return;
  }
  pending_.append(in);
  std::size_t pos = 0;
  while (active_ && pending_.size() - pos >= 5) {
    const char* m = pending_.data() + pos;
    std::uint32_t len = readU32(m + 1);
    if (len < 4 || len > kMaxMessage) {
      // Not a backend message stream we understand: stop interpreting, forward as is.
      pending_.erase(0, pos);
      finish(out);
      return;
    }
    std::size_t total = 1 + static_cast<std::size_t>(len);
    if (pending_.size() - pos < total) {
      break;
    }
    std::string_view msg(m, total);
    std::uint32_t code = len >= 8 && m[0] == 'R' ? readU32(m + 5) : UINT32_MAX;
    std::string body;
    bool removed = false;
    if (code == kAuthSasl && rewriteMechanisms(msg.substr(9), body, removed) && removed) {
      out.push_back('R');
      appendU32(out, static_cast<std::uint32_t>(8 + body.size()));
      appendU32(out, kAuthSasl);
      out.append(body);
      removed_ = true;
    } else {
      out.append(msg);
    }
    pos += total;
    // NoticeResponse and NegotiateProtocolVersion may precede the authentication request.
    bool beforeOrDuringAuth = (m[0] == 'R' && code != kAuthOk) || m[0] == 'N' || m[0] == 'v';
    if (!beforeOrDuringAuth) {
      // Authentication is over (or this is not an authentication exchange at all).
      pending_.erase(0, pos);
      finish(out);
      return;
    }
  }
  pending_.erase(0, pos);
}

}  // namespace pgproxy::proto
