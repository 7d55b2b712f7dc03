// Time as the pool core sees it: integer nanoseconds on a clock that cannot be read.
//
// The core is told the time with every input (`PoolCore::handle(now, ...)`). The simulator
// passes model time, the real pool passes std::chrono::steady_clock converted in one place.
// ModelClock deliberately has no now(): nothing in pool_model/ can ask what time it is.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>

namespace poolsim {

struct ModelClock {
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::duration<rep, period>;
  using time_point = std::chrono::time_point<ModelClock, duration>;
  static constexpr bool is_steady = true;  // NOLINT(readability-identifier-naming): Clock API
};

using Duration = ModelClock::duration;
using Instant = ModelClock::time_point;

// Earlier than every instant a driver can pass: SQLAlchemy's "0" for a pool or a
// connection that was never invalidated (every real start time is later than it).
inline constexpr Instant kNever = Instant(Duration(std::numeric_limits<std::int64_t>::min()));

inline constexpr double to_seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

// t + d, or the last (first) instant there is when that lies beyond the int64 range: a deadline
// or a model time that far away (292 years from the epoch) never comes, and must not wrap around.
inline constexpr Instant saturating_add(Instant t, Duration d) {
  if (d.count() > 0 && t > Instant::max() - d) return Instant::max();
  if (d.count() < 0 && t < Instant::min() - d) return Instant::min();
  return t + d;
}

}  // namespace poolsim
