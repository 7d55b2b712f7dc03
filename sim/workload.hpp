// The open-loop workload of a scenario as a stream of requests: when each arrives and how long
// it holds its connection. The simulator and the live runner both draw from it, so the same
// seed gives the same arrival times and hold times in model time and in real time.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>

#include "sim/random.hpp"
#include "sim/scenario.hpp"
#include "sim/units.hpp"

namespace poolsim::sim {

// A duration of `s` seconds, rounded to the nanosecond; Duration::max() when it is longer.
inline Duration from_seconds(double s) {
  const double ns = s * 1e9;
  // A gap too long for Duration (a rate of 1e-12 per second draws ~30000 years) is the longest
  // there is: nothing comes after it. llround would give an unspecified, usually negative value.
  if (!(ns < 0x1p63)) return Duration::max();
  return Duration(ns >= 0 ? round_to_integer(ns) : std::llround(ns));
}

struct PlannedRequest {
  Instant at;     // from the start of the run (warm-up included)
  Duration hold;  // how long it will hold its connection once granted
};

// Arrivals of the open-loop kinds (poisson, constant, onoff, diurnal, trace) before
// warmup + duration, in time order. Closed loops have no schedule: their clients react to the
// pool, so next() gives nothing for them.
class Workload {
 public:
  Workload(const Scenario& scenario, int replication);
  // Inline, with the Poisson case of next_arrival(): the simulator draws once per request.
  std::optional<PlannedRequest> next() {
    std::optional<Duration> hold;
    if (s_.arrival == Arrival::kTrace && trace_next_ < s_.trace->size()) {
      hold = (*s_.trace)[trace_next_].hold;
    }
    const Instant at = next_arrival();
    if (at >= end_) return std::nullopt;
    last_ = at;
    if (s_.arrival == Arrival::kTrace) ++trace_next_;
    return PlannedRequest{at, hold ? *hold : s_.service.sample(service_)};
  }

 private:
  // The next arrival, or kNone. (Not an optional: GCC returns a small optional through memory
  // and reads its flag back wider than it wrote it, a store-forwarding stall per request.)
  static constexpr Instant kNone = Instant::max();
  Instant next_arrival() {
    if (s_.arrival == Arrival::kPoisson) {
      return saturating_add(last_, from_seconds(arrivals_.exponential(mean_gap_s_)));
    }
    return next_arrival_not_poisson();
  }
  Instant next_arrival_not_poisson();

  const Scenario& s_;
  Rng arrivals_;
  Rng service_;
  Instant end_;
  double mean_gap_s_;  // poisson: 1 / rate
  Instant last_{};
  std::size_t trace_next_ = 0;
  std::uint64_t constant_index_ = 0;
};

}  // namespace poolsim::sim
