// Fuzzes the gate that holds a pooled client's Query and Parse messages for the plugins'
// on_query: any bytes, split anywhere, give the same output as in one piece; passing everything
// changes nothing; a note only makes checked messages longer.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/plugin/query_gate.h"
#include "pgproxy/proto/wire.h"

extern const char* const kFuzzTargetName = "query_gate";

using pgproxy::plugin::QueryGate;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  std::size_t split = data[0] % (size);
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto pass = [](char, std::string_view, std::string&) { return true; };
  QueryGate whole;
  std::string out1;
  QueryGate::Result r1 = whole.feed(bytes, out1, pass);
  QueryGate parts;
  std::string out2;
  QueryGate::Result r2 = parts.feed(bytes.substr(0, std::min(split, bytes.size())), out2, pass);
  if (r2 == QueryGate::Result::kOk && split < bytes.size()) {
    r2 = parts.feed(bytes.substr(split), out2, pass);
  }
  if (r1 != r2 || out1 != out2) {
    __builtin_trap();
  }
  // Passing everything changes nothing: the output is a prefix of the input.
  if (bytes.substr(0, out1.size()) != out1) {
    __builtin_trap();
  }
  // With a note, checked messages only grow (a comment before their SQL), and the gate ends
  // the same way.
  auto noted = [](char, std::string_view, std::string& note) {
    note = "*/ x /*";
    return true;
  };
  QueryGate annotate;
  std::string out3;
  if (annotate.feed(bytes, out3, noted) != r1 || out3.size() < out1.size()) {
    __builtin_trap();
  }
  return 0;
}
