#include "sim/workload.hpp"

#include <cmath>
#include <numbers>

namespace poolsim::sim {

Workload::Workload(const Scenario& scenario, int replication)
    : s_(scenario),
      arrivals_(
          stream_rng(scenario.seed, Stream::kArrivals, static_cast<std::uint64_t>(replication))),
      service_(
          stream_rng(scenario.seed, Stream::kService, static_cast<std::uint64_t>(replication))),
      end_(Instant(scenario.warmup + scenario.duration)),
      mean_gap_s_(1.0 / scenario.rate) {}

Instant Workload::next_arrival_not_poisson() {
  const Instant from = last_;
  switch (s_.arrival) {
    case Arrival::kPoisson: break;  // inline in next_arrival()
    case Arrival::kConstant:  // at 0, 1/rate, 2/rate, ...: computed, not summed, so no drift
      return Instant(from_seconds(static_cast<double>(constant_index_++) / s_.rate));
    case Arrival::kOnOff: {
      // A Poisson process whose rate is burst_rate during bursts and rate between them; by
      // memorylessness a draw that crosses a boundary restarts from it at the new rate.
      const Duration cycle = s_.burst_off + s_.burst_on;
      Instant t = from;
      for (;;) {
        const Duration phase = (t - Instant{}) % cycle;
        const bool on = phase >= s_.burst_off;
        const Instant boundary = saturating_add(t, (on ? cycle : s_.burst_off) - phase);
        const Instant candidate = saturating_add(
            t, from_seconds(arrivals_.exponential(1.0 / (on ? s_.burst_rate : s_.rate))));
        if (candidate < boundary) return candidate;
        t = boundary;
        if (t >= end_) return kNone;
      }
    }
    case Arrival::kDiurnal: {
      // Thinning: candidates at the peak rate, each kept with probability rate(t) / peak.
      const double peak = s_.rate * (1 + s_.amplitude);
      const double period = to_seconds(s_.period);
      Instant t = from;
      for (;;) {
        t = saturating_add(t, from_seconds(arrivals_.exponential(1.0 / peak)));
        if (t >= end_) return kNone;
        const double phase = to_seconds(t.time_since_epoch()) / period;
        const double rate = s_.rate * (1 + s_.amplitude * std::sin(2 * std::numbers::pi * phase));
        if (arrivals_.uniform() * peak < rate) return t;
      }
    }
    case Arrival::kTrace:
      if (trace_next_ >= s_.trace->size()) return kNone;
      return Instant((*s_.trace)[trace_next_].at);
    case Arrival::kClosed: return kNone;
  }
  return kNone;
}

}  // namespace poolsim::sim
