// Fuzzes the ClientHello parser, whole and as every prefix (the parser is called again as bytes
// arrive, so each prefix must answer NeedMore or an error, never read past its end).
#include <cstdint>
#include <string_view>

#include "pgproxy/tls/client_hello.h"

extern const char* const kFuzzTargetName = "client_hello";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  pgproxy::tls::ClientHelloInfo info;
  auto whole = pgproxy::tls::parseClientHello(bytes, info);
  if (whole.status == pgproxy::tls::ParseStatus::kDone && info.consumed > size) {
    __builtin_trap();
  }
  for (std::size_t cut = 0; cut < size && cut < 512; ++cut) {
    (void)pgproxy::tls::parseClientHello(bytes.substr(0, cut), info);
  }
  return 0;
}
