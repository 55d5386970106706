#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgproxy::base {

// strerror that is safe to call from any thread.
std::string errnoText(int err);

// ASCII lower-casing for host names (DNS names are ASCII by the time they reach us).
std::string toLowerAscii(std::string_view s);

// Whether `text` contains `lower` (ASCII lower case) in any case, without allocating.
bool containsIgnoringCase(std::string_view text, std::string_view lower);

// Edit distance, used to suggest the closest known config key.
std::size_t editDistance(std::string_view a, std::string_view b);

// Parses "500ms", "10s", "2m", "1h" or a bare number of seconds into milliseconds.
std::optional<std::uint64_t> parseDurationMs(std::string_view s);

// Parses "1048576", "512kB", "32MB" or "1GB" (PostgreSQL's units: kB = 1024 bytes) into bytes.
std::optional<std::uint64_t> parseSize(std::string_view s);

// Parses a whole decimal number without sign; rejects trailing garbage and overflow.
std::optional<std::uint64_t> parseUnsigned(std::string_view s);

}  // namespace pgproxy::base
