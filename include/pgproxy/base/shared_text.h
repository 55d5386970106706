#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace pgproxy::base {

// A short text in shared memory that one process writes while others read: stored in atomic
// words, so that no byte is ever read while it is written (a reader may see a mix of two texts;
// the owner's sequence counter, as in a seqlock, says when to read again). Cut to N - 1 bytes.
template <std::size_t N>
struct SharedText {
  static_assert(N % 8 == 0);
  std::atomic<std::uint64_t> words[N / 8];

  void store(std::string_view text) {
    char buf[N] = {};
    std::memcpy(buf, text.data(), std::min(text.size(), N - 1));
    for (std::size_t w = 0; w < N / 8; ++w) {
      std::uint64_t v;
      std::memcpy(&v, buf + w * 8, 8);
      words[w].store(v, std::memory_order_relaxed);
    }
  }
  std::string load() const {
    char buf[N];
    for (std::size_t w = 0; w < N / 8; ++w) {
      std::uint64_t v = words[w].load(std::memory_order_relaxed);
      std::memcpy(buf + w * 8, &v, 8);
    }
    return std::string(buf, strnlen(buf, N - 1));
  }
};

}  // namespace pgproxy::base
