// The open-loop workload of a scenario as a stream of requests: when each arrives and how long
// it holds its connection. The simulator and the live runner both draw from it, so the same
// seed gives the same arrival times and hold times in model time and in real time.
#pragma once

#include <cstdint>
#include <optional>

#include "sim/random.hpp"
#include "sim/scenario.hpp"

namespace poolsim::sim {

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
  std::optional<PlannedRequest> next();

 private:
  // The next arrival, or kNone. (Not an optional: GCC returns a small optional through memory
  // and reads its flag back wider than it wrote it, a store-forwarding stall per request.)
  static constexpr Instant kNone = Instant::max();
  Instant next_arrival();

  const Scenario& s_;
  Rng arrivals_;
  Rng service_;
  Instant end_;
  Instant last_{};
  std::size_t trace_next_ = 0;
  std::uint64_t constant_index_ = 0;
};

// A duration of `s` seconds, rounded to the nanosecond; Duration::max() when it is longer.
Duration from_seconds(double s);

}  // namespace poolsim::sim
