#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pgproxy::base {

// Appends `v` as a JSON string. Valid UTF-8 passes through; each byte of an invalid sequence
// becomes U+FFFD, so client-supplied text (SQL, names) can never make a line invalid JSON.
// At most `max` bytes go between the quotes, cut before a character (or escape) that would not
// fit; returns false when it had to cut.
bool appendJsonString(std::string& out, std::string_view v, std::size_t max = SIZE_MAX);

// "2026-12-04T19:47:56.123Z" for a wall-clock time in milliseconds since the epoch.
std::string isoTime(std::int64_t unix_ms);

// The wall-clock time in milliseconds since the epoch.
std::int64_t unixMs();

}  // namespace pgproxy::base
