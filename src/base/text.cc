#include "pgproxy/base/text.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace pgproxy::base {

std::string errnoText(int err) {
  char buf[256];
  // GNU strerror_r returns the message pointer, which may or may not be buf.
  const char* msg = strerror_r(err, buf, sizeof(buf));
  return std::string(msg) + " (errno " + std::to_string(err) + ")";
}

std::string toLowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

bool containsIgnoringCase(std::string_view text, std::string_view lower) {
  auto fold = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  for (std::size_t i = 0; lower.size() <= text.size() && i <= text.size() - lower.size(); ++i) {
    std::size_t k = 0;
    while (k < lower.size() && fold(text[i + k]) == lower[k]) {
      ++k;
    }
    if (k == lower.size()) {
      return true;
    }
  }
  return false;
}

std::size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    prev[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::optional<std::uint64_t> parseUnsigned(std::string_view s) {
  if (s.empty() || s.size() > 19) {
    return std::nullopt;
  }
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

std::optional<std::uint64_t> parseSize(std::string_view s) {
  std::size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') {
    ++digits;
  }
  auto number = parseUnsigned(s.substr(0, digits));
  std::string_view unit = s.substr(digits);
  std::uint64_t scale = unit.empty()   ? 1
                        : unit == "kB" ? 1024
                        : unit == "MB" ? 1024 * 1024
                        : unit == "GB" ? 1024 * 1024 * 1024
                                       : 0;
  if (!number || scale == 0 || *number > UINT64_MAX / scale) {
    return std::nullopt;
  }
  return *number * scale;
}

std::optional<std::uint64_t> parseDurationMs(std::string_view s) {
  std::size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') {
    ++digits;
  }
  auto number = parseUnsigned(s.substr(0, digits));
  if (!number) {
    return std::nullopt;
  }
  std::string_view unit = s.substr(digits);
  std::uint64_t scale;
  if (unit.empty() || unit == "s") {
    scale = 1000;
  } else if (unit == "ms") {
    scale = 1;
  } else if (unit == "m" || unit == "min") {
    scale = 60 * 1000;
  } else if (unit == "h") {
    scale = 3600 * 1000;
  } else {
    return std::nullopt;
  }
  // Anything beyond a year is a typo, and capping keeps the multiplication from overflowing.
  if (*number > 365ull * 24 * 3600 * 1000 / scale) {
    return std::nullopt;
  }
  return *number * scale;
}

}  // namespace pgproxy::base
