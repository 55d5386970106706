// Fuzzes the configuration loader (YAML parsing and validation).
#include <cstdint>
#include <string>

#include "pgproxy/config/config.h"

extern const char* const kFuzzTargetName = "config";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto cfg = pgproxy::config::loadString(text, "fuzz.yaml");
  if (cfg.ok() && cfg->mappings.empty()) {
    __builtin_trap();  // validation promises at least one mapping
  }
  return 0;
}
