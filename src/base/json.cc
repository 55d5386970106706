#include "pgproxy/base/json.h"

#include <sys/time.h>

#include <cstdio>
#include <ctime>

namespace pgproxy::base {
namespace {

// The length of the valid UTF-8 sequence starting `s` (RFC 3629: no overlongs, no surrogates,
// nothing above U+10FFFF), 0 when it is not one.
std::size_t utf8Length(std::string_view s) {
  auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](std::size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
  unsigned char c = b(0);
  if (c >= 0xC2 && c <= 0xDF) {
    return cont(1) ? 2 : 0;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) {
      return 0;
    }
    if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xED && b(1) >= 0xA0)) {
      return 0;
    }
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) {
      return 0;
    }
    if ((c == 0xF0 && b(1) < 0x90) || (c == 0xF4 && b(1) >= 0x90)) {
      return 0;
    }
    return 4;
  }
  return 0;
}

}  // namespace

bool appendJsonString(std::string& out, std::string_view v, std::size_t max) {
  out += '"';
  std::size_t start = out.size();
  bool whole = true;
  // Appends one character's form, unless it would pass `max`.
  auto put = [&](std::string_view piece) {
    if (out.size() - start + piece.size() > max) {
      whole = false;
      return false;
    }
    out.append(piece);
    return true;
  };
  for (std::size_t i = 0; i < v.size();) {
    auto c = static_cast<unsigned char>(v[i]);
    std::size_t used = 1;
    char buf[8];
    std::string_view piece;
    if (c >= 0x80) {
      std::size_t n = utf8Length(v.substr(i));
      piece = n == 0 ? std::string_view("\xEF\xBF\xBD") : v.substr(i, n);  // U+FFFD
      used = n == 0 ? 1 : n;
    } else if (c == '"') {
      piece = "\\\"";
    } else if (c == '\\') {
      piece = "\\\\";
    } else if (c == '\n') {
      piece = "\\n";
    } else if (c == '\r') {
      piece = "\\r";
    } else if (c == '\t') {
      piece = "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      piece = buf;
    } else {
      piece = v.substr(i, 1);
    }
    if (!put(piece)) {
      break;
    }
    i += used;
  }
  out += '"';
  return whole;
}

std::string isoTime(std::int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm utc;
  gmtime_r(&secs, &utc);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

std::int64_t unixMs() {
  timeval tv;
  gettimeofday(&tv, nullptr);
  return static_cast<std::int64_t>(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

}  // namespace pgproxy::base
