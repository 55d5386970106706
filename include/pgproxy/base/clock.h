#pragma once

#include <time.h>

#include <cstdint>

namespace pgproxy::base {

// Monotonic microseconds, for durations (never wall-clock time).
inline std::uint64_t monotonicUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000 +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
}

// Monotonic milliseconds: timeouts, rate limits and log intervals.
inline std::uint64_t monotonicMs() {
  return monotonicUs() / 1000;
}

// Wall-clock milliseconds since the epoch: only for times shown to people (last check, reload).
inline std::uint64_t wallClockMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000 +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

// True (and `last_ms` moved to now) when a repeating condition may be logged again: at most once
// per `interval_ms`.
inline bool logDue(std::uint64_t& last_ms, std::uint64_t interval_ms) {
  std::uint64_t now = monotonicMs();
  if (last_ms != 0 && now - last_ms < interval_ms) {
    return false;
  }
  last_ms = now;
  return true;
}

}  // namespace pgproxy::base
