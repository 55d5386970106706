#include "pgproxy/proto/startup.h"

#include "pgproxy/proto/wire.h"

namespace pgproxy::proto {

Preamble classifyPreamble(std::string_view bytes) {
  Preamble p;
  if (bytes.empty()) {
    return p;
  }
  if (static_cast<std::uint8_t>(bytes[0]) == kTlsHandshakeRecord) {
    // A startup length's top byte is always 0, so 0x16 can only be a TLS record.
    p.kind = PreambleKind::kDirectTls;
    return p;
  }
  // PostgreSQL judges the length as soon as its 4 bytes are in, and so do we: garbage is closed
  // at once instead of at handshake_timeout. (A non-zero first byte is already too long.)
  if (bytes[0] != 0 || (bytes.size() >= 4 &&
                        (readU32(bytes.data()) < 8 || readU32(bytes.data()) > kMaxStartupPacket))) {
    p.kind = PreambleKind::kInvalid;
    p.reason = "invalid length of startup packet";
    return p;
  }
  if (bytes.size() < 8) {
    return p;
  }
  std::uint32_t len = readU32(bytes.data());
  std::uint32_t code = readU32(bytes.data() + 4);
  p.code = code;
  if (code == kSslRequestCode || code == kGssEncRequestCode) {
    if (len != 8) {
      p.kind = PreambleKind::kInvalid;
      p.reason = "invalid length of encryption request packet";
      return p;
    }
    p.kind = code == kSslRequestCode ? PreambleKind::kSslRequest : PreambleKind::kGssEncRequest;
    p.consumed = 8;
    return p;
  }
  if (code == kCancelRequestCode) {
    // The key runs to the end of the packet. PostgreSQL 18 takes 1 to 256 key bytes, but no
    // backend hands out a key shorter than 4, so such a request cannot be for a live session.
    if (len < kMinCancelRequest || len > kMaxCancelRequest) {
      p.kind = PreambleKind::kInvalid;
      p.reason = "invalid length of cancel request packet";
      return p;
    }
    if (bytes.size() < len) {
      return p;
    }
    p.kind = PreambleKind::kCancelRequest;
    p.consumed = len;
    p.cancel_pid = readU32(bytes.data() + 8);
    p.cancel_key = bytes.substr(12, len - 12);
    return p;
  }
  if (bytes.size() < len) {
    return p;
  }
  p.kind = PreambleKind::kStartup;
  p.consumed = len;
  return p;
}

std::string StartupParams::get(std::string_view key) const {
  for (const auto& [k, v] : params) {
    if (k == key) {
      return v;
    }
  }
  return {};
}

StartupError parseStartup(std::string_view packet, StartupParams& out) {
  out = StartupParams{};
  if (packet.size() < 8) {
    return StartupError::kBadLayout;
  }
  out.version = readU32(packet.data() + 4);
  std::string_view body = packet.substr(8);
  // PostgreSQL: the packet must end with the empty name that terminates the list.
  if (body.empty() || body.back() != '\0') {
    return StartupError::kBadLayout;
  }
  std::size_t pos = 0;
  while (pos < body.size() && body[pos] != '\0') {
    std::size_t keyEnd = body.find('\0', pos);  // found: the body ends with a NUL
    if (keyEnd + 1 >= body.size()) {
      return StartupError::kBadLayout;  // a name without a value
    }
    std::size_t valEnd = body.find('\0', keyEnd + 1);
    if (valEnd == std::string_view::npos || valEnd == body.size() - 1) {
      return StartupError::kBadLayout;  // the value ate the terminator
    }
    out.params.emplace_back(std::string(body.substr(pos, keyEnd - pos)),
                            std::string(body.substr(keyEnd + 1, valEnd - keyEnd - 1)));
    pos = valEnd + 1;
  }
  if (pos != body.size() - 1) {
    return StartupError::kBadLayout;
  }
  if (out.get("user").empty()) {
    return StartupError::kNoUser;
  }
  return StartupError::kNone;
}

std::string buildStartup(std::uint32_t version,
                         const std::vector<std::pair<std::string, std::string>>& params) {
  std::string body;
  appendU32(body, version);
  for (const auto& [name, value] : params) {
    body.append(name);
    body += '\0';
    body.append(value);
    body += '\0';
  }
  body += '\0';
  std::string out;
  appendU32(out, static_cast<std::uint32_t>(4 + body.size()));
  return out + body;
}

std::vector<std::string> splitOptions(std::string_view s) {
  std::vector<std::string> words;
  std::string cur;
  bool in_word = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) {
        words.push_back(std::move(cur));
        cur.clear();
        in_word = false;
      }
      continue;
    }
    in_word = true;
    if (c == '\\' && i + 1 < s.size()) {
      c = s[++i];
    }
    cur += c;
  }
  if (in_word) {
    words.push_back(std::move(cur));
  }
  return words;
}

std::size_t optionSetting(const std::vector<std::string>& words, std::size_t i,
                          std::string_view& setting) {
  std::string_view w = words[i];
  if (w == "-c" && i + 1 < words.size()) {
    setting = words[i + 1];
    return 2;
  }
  if (w.size() > 2 && (w.substr(0, 2) == "-c" || w.substr(0, 2) == "--")) {
    setting = w.substr(2);
    return 1;
  }
  return 0;
}

bool splitSetting(std::string_view setting, std::string& name, std::string& value) {
  std::size_t eq = setting.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return false;
  }
  name.assign(setting.substr(0, eq));
  for (char& c : name) {
    c = c == '-' ? '_' : c;
  }
  value.assign(setting.substr(eq + 1));
  return true;
}

std::string joinOptions(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) {
      out += ' ';
    }
    for (char c : w) {
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\\') {
        out += '\\';
      }
      out += c;
    }
  }
  return out;
}

}  // namespace pgproxy::proto
