// Fuzzes the AuthenticationSASL rewrite that terminated sessions apply to backend bytes: whatever
// the backend sends, the filter must not crash, must hold at most one bounded message, and must
// forward everything once it stops interpreting.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/proto/sasl_filter.h"

extern const char* const kFuzzTargetName = "sasl_filter";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  pgproxy::proto::SaslMechanismFilter filter;
  std::string out;
  std::size_t chunk = size > 0 ? 1 + data[0] % 13 : 1;
  for (std::size_t i = 0; i < size; i += chunk) {
    filter.feed(bytes.substr(i, chunk), out);
  }
  // Output never exceeds input (the rewrite only removes), and nothing beyond one bounded message
  // is withheld.
  if (out.size() > size ||
      size - out.size() > pgproxy::proto::SaslMechanismFilter::kMaxMessage + 5 + 64) {
    __builtin_trap();
  }
  (void)pgproxy::proto::checkSaslInitialResponse(bytes);
  return 0;
}
