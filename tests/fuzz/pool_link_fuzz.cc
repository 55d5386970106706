// Fuzzes what a pool reads from untrusted peers: a client's message stream (ClientFlow, fed in
// chunks the input chooses), a server's ParameterStatus bodies, and startup parameters as a pool
// splits them (options included), with the query that would carry them to a server; and the
// stream as read_write_split: optimistic frames what it keeps (proto::eachWholeMessage, over a
// buffer that grows chunk by chunk).
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgproxy/pool/link.h"
#include "pgproxy/pool/params.h"
#include "pgproxy/proto/wire.h"

extern const char* const kFuzzTargetName = "pool_link";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (bytes.empty()) {
    return 0;
  }
  // The first byte picks the chunk size; the rest is the client's stream.
  std::size_t chunk = static_cast<unsigned char>(bytes[0]) % 64 + 1;
  std::string_view stream = bytes.substr(1);
  pgproxy::pool::ClientFlow flow;
  bool ended = false;
  for (std::size_t i = 0; i < stream.size() && !ended; i += chunk) {
    std::string_view piece = stream.substr(i, chunk);
    auto fed = flow.feed(piece);
    if (fed.forward > piece.size()) {
      __builtin_trap();  // never more than it was given
    }
    ended = fed.bad || fed.terminate;
    if (flow.owed() > 0 && (stream.size() % 3 == 0)) {
      flow.answered();
    }
    (void)pgproxy::pool::releaseAfterReady(pgproxy::config::PoolMode::kTransaction, piece[0], flow);
  }

  std::string kept;
  std::size_t at = 0;
  bool framed = true;
  for (std::size_t i = 0; i < stream.size() && framed; i += chunk) {
    kept.append(stream.substr(i, chunk));
    framed = pgproxy::proto::eachWholeMessage(kept, at, [&](char, std::string_view body) {
      if (body.data() < kept.data() || body.data() + body.size() > kept.data() + kept.size()) {
        __builtin_trap();  // a body outside the buffer
      }
      return body.size() % 7 != 3;
    });
    if (at > kept.size()) {
      __builtin_trap();
    }
  }

  std::string_view name, value;
  (void)pgproxy::pool::parseParameterStatus(stream, name, value);

  // The input as NUL-separated startup pairs.
  std::vector<std::pair<std::string, std::string>> params;
  std::size_t pos = 0;
  std::vector<std::string> words;
  while (pos <= stream.size()) {
    std::size_t end = stream.find('\0', pos);
    if (end == std::string_view::npos) {
      end = stream.size();
    }
    words.emplace_back(stream.substr(pos, end - pos));
    pos = end + 1;
  }
  for (std::size_t i = 0; i + 1 < words.size(); i += 2) {
    params.emplace_back(words[i], words[i + 1]);
  }
  pgproxy::pool::StartupSplit split;
  if (pgproxy::pool::splitStartup(params, split).empty()) {
    pgproxy::pool::Params none;
    std::string q = pgproxy::pool::syncQuery(none, split.reported, none, split.extras, none);
    // Every literal is closed: the query never ends inside a string the input opened.
    std::size_t quotes = 0;
    for (char c : q) {
      quotes += c == '\'';
    }
    if (quotes % 2 != 0) {
      __builtin_trap();
    }
  }
  return 0;
}
