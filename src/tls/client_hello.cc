#include "pgproxy/tls/client_hello.h"

#include <cstdint>

namespace pgproxy::tls {
namespace {

constexpr std::uint8_t kHandshakeRecord = 0x16;
constexpr std::uint8_t kClientHelloType = 1;
constexpr std::uint16_t kExtServerName = 0;
constexpr std::uint16_t kExtAlpn = 16;

// Bounds-checked reader over one byte span; every read fails once the span is exhausted.
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool u8(std::uint8_t& v) {
    if (s_.size() < 1) {
      return false;
    }
    v = static_cast<std::uint8_t>(s_[0]);
    s_.remove_prefix(1);
    return true;
  }
  bool u16(std::uint16_t& v) {
    if (s_.size() < 2) {
      return false;
    }
    v = static_cast<std::uint16_t>((static_cast<std::uint8_t>(s_[0]) << 8) |
                                   static_cast<std::uint8_t>(s_[1]));
    s_.remove_prefix(2);
    return true;
  }
  bool bytes(std::size_t n, std::string_view& v) {
    if (s_.size() < n) {
      return false;
    }
    v = s_.substr(0, n);
    s_.remove_prefix(n);
    return true;
  }
  bool vec8(std::string_view& v) {
    std::uint8_t n;
    return u8(n) && bytes(n, v);
  }
  bool vec16(std::string_view& v) {
    std::uint16_t n;
    return u16(n) && bytes(n, v);
  }
  bool empty() const { return s_.empty(); }

 private:
  std::string_view s_;
};

ParseResult fail(const char* why) {
  return ParseResult{ParseStatus::kError, why};
}

ParseResult parseServerName(std::string_view ext, ClientHelloInfo& out) {
  Reader r(ext);
  std::string_view list;
  if (!r.vec16(list) || !r.empty()) {
    return fail("malformed server_name extension");
  }
  Reader lr(list);
  while (!lr.empty()) {
    std::uint8_t type;
    std::string_view name;
    if (!lr.u8(type) || !lr.vec16(name)) {
      return fail("malformed server_name list");
    }
    if (type != 0 || !out.sni.empty()) {
      continue;  // RFC 6066: one host_name; other types are ignored
    }
    if (name.empty() || name.size() > 255) {
      return fail("server_name is empty or longer than 255 bytes");
    }
    out.sni.reserve(name.size());
    for (char c : name) {
      if (c == '\0' || static_cast<unsigned char>(c) > 0x7e || c <= ' ') {
        out.sni.clear();
        return fail("server_name contains a byte that is not a printable ASCII character");
      }
      out.sni.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
    }
  }
  return ParseResult{ParseStatus::kDone, ""};
}

ParseResult parseAlpn(std::string_view ext, ClientHelloInfo& out) {
  Reader r(ext);
  std::string_view list;
  if (!r.vec16(list) || !r.empty()) {
    return fail("malformed ALPN extension");
  }
  out.alpn_offered = true;
  Reader lr(list);
  while (!lr.empty()) {
    std::string_view proto;
    if (!lr.vec8(proto) || proto.empty()) {
      return fail("malformed ALPN protocol list");
    }
    out.alpn_postgresql = out.alpn_postgresql || proto == "postgresql";
  }
  return ParseResult{ParseStatus::kDone, ""};
}

ParseResult parseBody(std::string_view body, ClientHelloInfo& out) {
  Reader r(body);
  std::uint16_t version;
  std::string_view random, sessionId, ciphers, compression, extensions;
  if (!r.u16(version) || !r.bytes(32, random) || !r.vec8(sessionId) || !r.vec16(ciphers) ||
      !r.vec8(compression)) {
    return fail("truncated ClientHello");
  }
  if (sessionId.size() > 32 || ciphers.empty() || ciphers.size() % 2 != 0 || compression.empty()) {
    return fail("malformed ClientHello fields");
  }
  if (r.empty()) {
    return ParseResult{ParseStatus::kDone, ""};  // no extensions at all (ancient clients)
  }
  if (!r.vec16(extensions) || !r.empty()) {
    return fail("malformed ClientHello extensions block");
  }
  Reader er(extensions);
  bool seenSni = false, seenAlpn = false;
  while (!er.empty()) {
    std::uint16_t type;
    std::string_view data;
    if (!er.u16(type) || !er.vec16(data)) {
      return fail("truncated ClientHello extension");
    }
    ParseResult res{ParseStatus::kDone, ""};
    if (type == kExtServerName) {
      if (seenSni) {
        return fail("duplicate server_name extension");
      }
      seenSni = true;
      res = parseServerName(data, out);
    } else if (type == kExtAlpn) {
      if (seenAlpn) {
        return fail("duplicate ALPN extension");
      }
      seenAlpn = true;
      res = parseAlpn(data, out);
    }
    if (res.status != ParseStatus::kDone) {
      return res;
    }
  }
  return ParseResult{ParseStatus::kDone, ""};
}

}  // namespace

ParseResult parseClientHello(std::string_view bytes, ClientHelloInfo& out) {
  out = ClientHelloInfo{};
  std::string scratch;  // used only when the message spans records
  std::string_view message;
  bool single = true;
  std::size_t need = 0;  // handshake message size including its 4-byte header, once known
  std::size_t off = 0;
  std::string_view firstFragment;
  while (true) {
    if (bytes.size() - off < 5) {
      if (off < bytes.size() && static_cast<std::uint8_t>(bytes[off]) != kHandshakeRecord) {
        return fail("not a TLS handshake record");
      }
      return ParseResult{};
    }
    auto hdr = reinterpret_cast<const unsigned char*>(bytes.data() + off);
    std::size_t len = (std::size_t{hdr[3]} << 8) | hdr[4];
    if (hdr[0] != kHandshakeRecord) {
      return fail("not a TLS handshake record");
    }
    if (hdr[1] != 3 || hdr[2] > 4) {
      return fail("unknown TLS record version");
    }
    if (len == 0 || len > kMaxRecordPayload) {
      return fail("TLS record length out of range");
    }
    if (bytes.size() - off - 5 < len) {
      return ParseResult{};
    }
    std::string_view fragment = bytes.substr(off + 5, len);
    off += 5 + len;
    if (firstFragment.empty() && single && scratch.empty()) {
      firstFragment = fragment;
    } else {
      if (single) {
        scratch.assign(firstFragment);
        single = false;
      }
      scratch.append(fragment);
    }
    std::string_view sofar = single ? firstFragment : std::string_view(scratch);
    if (sofar.size() >= 4) {
      auto h = reinterpret_cast<const unsigned char*>(sofar.data());
      if (h[0] != kClientHelloType) {
        return fail("first handshake message is not a ClientHello");
      }
      std::size_t bodyLen = (std::size_t{h[1]} << 16) | (std::size_t{h[2]} << 8) | h[3];
      if (bodyLen > kMaxClientHello) {
        return fail("ClientHello larger than 16 KiB");
      }
      need = 4 + bodyLen;
      if (sofar.size() >= need) {
        message = sofar.substr(4, bodyLen);
        break;
      }
    }
    if (sofar.size() > kMaxClientHello + 4) {
      return fail("ClientHello larger than 16 KiB");
    }
  }
  ParseResult res = parseBody(message, out);
  if (res.status == ParseStatus::kDone) {
    out.consumed = off;
  } else {
    std::size_t keep = out.consumed;
    out = ClientHelloInfo{};
    out.consumed = keep;
  }
  return res;
}

}  // namespace pgproxy::tls
