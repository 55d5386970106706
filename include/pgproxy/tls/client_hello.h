#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pgproxy::tls {

// A TLS plaintext record carries at most 2^14 bytes (RFC 8446 5.1); a larger length is an attack.
inline constexpr std::size_t kMaxRecordPayload = 16384;
// Real ClientHellos are 200-2000 bytes (post-quantum key shares push ~1.8 KB); 16 KiB is generous.
inline constexpr std::size_t kMaxClientHello = 16384;

struct ClientHelloInfo {
  std::string sni;               // lower-cased host_name, or empty when the client sent none
  bool alpn_offered = false;     // the client sent an ALPN extension
  bool alpn_postgresql = false;  // ... and "postgresql" was in it
  std::size_t consumed = 0;      // bytes of the records that carried the ClientHello
};

enum class ParseStatus { kNeedMore, kDone, kError };

struct ParseResult {
  ParseStatus status = ParseStatus::kNeedMore;
  const char* error = "";  // for kError: what was wrong, for the log
};

// Parses the ClientHello from the bytes received so far (records may be split across TCP reads and
// the handshake message across records). Pure: no I/O, no allocation beyond the SNI string and a
// scratch copy when the message spans records. Call again with more bytes after kNeedMore.
ParseResult parseClientHello(std::string_view bytes, ClientHelloInfo& out);

}  // namespace pgproxy::tls
