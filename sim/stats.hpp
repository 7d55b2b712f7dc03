// Statistics for the simulator: streaming quantiles, time-weighted levels, confidence intervals
// across replications, and the Erlang B / C formulas that tests use as exact references.
//
// Nothing here reads a clock or allocates after construction on a hot path: Histogram::add and
// TimeWeighted::set are called once per simulated event.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "pool_model/time.hpp"

namespace poolsim::sim {

// Streaming quantiles of non-negative integers (waits and latencies in nanoseconds) in a fixed
// number of log-linear buckets, like HdrHistogram with 8 significant binary digits:
//
//   values 0 .. 255                   one bucket per value: exact;
//   values in [2^k, 2^(k+1)), k >= 8  128 buckets of width 2^(k-7).
//
// Error bound: a value v >= 256 shares its bucket [lo, lo + w) with values that differ from it
// by less than w, and lo >= 128 w. quantile() reports the bucket's midpoint lo + (w - 1) / 2,
// clamped to [min, max] (which only moves it towards the true value, as that lies in
// [min, max]), so |reported - true| <= (w - 1) / 2 < true / 256: the relative error of every
// reported quantile is below kMaxRelativeError = 1/256 (0.39%). Below 256 quantiles are exact;
// in particular 0 (no wait) is reported as exactly 0.
//
// Storage: kBucketCount (7296) counters, allocated once by the constructor and never resized,
// whatever the number of values; add() does not allocate. A moved-from Histogram may only be
// assigned to or destroyed.
class Histogram {
 public:
  static constexpr std::int64_t kExactBelow = 256;
  static constexpr std::size_t kBucketCount = 7296;  // 256 + 128 per power of two in [2^8, 2^63)
  static constexpr double kMaxRelativeError = 1.0 / 256.0;
  static constexpr int kSubBucketBits = 7;  // 128 buckets per power of two

  Histogram();

  // Throws std::invalid_argument for a negative value. Inline: called twice per request.
  void add(std::int64_t value) {
    if (value < 0) refuse_negative(value);
    const auto v = static_cast<std::uint64_t>(value);
    ++counts_[bucket_index(v)];
    ++count_;
    sum_low_ += v;
    if (sum_low_ < v) ++sum_high_;  // carry
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
  }
  // Adds other's values to this one (both have the same bucket layout).
  void merge(const Histogram& other);
  void clear();

  std::uint64_t count() const { return count_; }
  // The exact mean (from a 128-bit sum, rounded once to double); 0 when empty.
  double mean() const;
  // The smallest and largest value added; 0 when empty.
  std::int64_t min() const;
  std::int64_t max() const;
  // The nearest-rank quantile: the value at rank ceil(q * count) (at least 1) of the sorted
  // values, within kMaxRelativeError (see above); ranks 1 and count are exactly min() and
  // max(). A product q * count within floating-point noise of an integer counts as that integer
  // (0.07 * 100 is rank 7, not 8). 0 when empty; throws std::invalid_argument for q outside
  // [0, 1].
  double quantile(double q) const;

  // Size of the bucket array: kBucketCount always (tests check it never grows).
  std::size_t bucket_count() const { return counts_.size(); }

 private:
  // A value with bit width b is shifted right by s = max(b - 8, 0), which leaves it in
  // [128, 256) when s > 0; its bucket is 128 s + (v >> s) (see stats.cpp).
  static std::size_t bucket_index(std::uint64_t value) {
    const int shift = std::max(static_cast<int>(std::bit_width(value)) - (kSubBucketBits + 1), 0);
    return (static_cast<std::size_t>(shift) << kSubBucketBits) +
           static_cast<std::size_t>(value >> shift);
  }
  [[noreturn]] static void refuse_negative(std::int64_t value);

  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  // The sum of all values as a 128-bit unsigned integer: exact for any count below 2^64.
  std::uint64_t sum_low_ = 0;
  std::uint64_t sum_high_ = 0;
  std::int64_t min_;
  std::int64_t max_ = 0;
};

// Time-weighted mean and peak of a piecewise-constant level (connections open, in use).
// Instants passed to one TimeWeighted never go backwards; an earlier instant than the last one
// seen throws std::invalid_argument, and using it before start() throws std::logic_error.
class TimeWeighted {
 public:
  // Begins the record at `at` with `level`; forgets everything recorded before.
  void start(Instant at, double level);
  // The level changes to `level` at `at`. Inline: the simulator calls it on most events.
  void set(Instant at, double level) {
    if (!started_ || at < last_change_) require_started_and_not_before(at, "set");  // throws
    integral_ +=
        static_cast<long double>(level_) * static_cast<long double>((at - last_change_).count());
    last_change_ = at;
    level_ = level;
    peak_ = std::max(peak_, level);
  }
  // Ends the warm-up: keeps the current level, clears the integral and sets the peak to the
  // current level, as if start(at, current level) were called.
  void restart(Instant at);

  // The integral of the level from start (or restart) to `end`, divided by their distance;
  // the current level when end is the start instant itself.
  double mean(Instant end) const;
  // The highest level since start (or restart), including the level set at that instant.
  double peak() const;
  double level() const { return level_; }

 private:
  void require_started_and_not_before(Instant at, const char* operation) const;

  bool started_ = false;
  Instant start_{};
  Instant last_change_{};
  double level_ = 0;
  double peak_ = 0;
  long double integral_ = 0;  // level x nanoseconds, from start_ to last_change_
};

struct Estimate {
  double mean;
  double half_width;
};

// The sample mean and the half-width of its 95% Student-t confidence interval:
// t(0.975, n - 1) * s / sqrt(n), with s the sample standard deviation. half_width is 0 when
// there are fewer than two samples; throws std::invalid_argument when there are none.
Estimate student_t95(const std::vector<double>& samples);

// The p-quantile of Student's t distribution with `dof` degrees of freedom (any real dof > 0),
// by bisection on the CDF written with the regularized incomplete beta function; accurate to
// better than 1e-9 relative (the tests check the closed forms for 1 and 2 degrees). Throws
// std::invalid_argument unless 0 < p < 1 and dof is finite and > 0.
double student_t_quantile(double p, double dof);

// Erlang B: the probability that an arrival finds all `servers` busy in an M/M/c/c system with
// offered load a = lambda x mean hold time (in erlangs), by the recursion
// B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1)), which neither overflows nor cancels.
// Throws std::invalid_argument for servers < 0 or a load that is negative or not finite.
double erlang_b(int servers, double offered_load);

// Erlang C: the probability that an arrival waits in an M/M/c queue,
// C = c B / (c - a (1 - B)); 1 when a >= c (the queue is unstable). Same arguments as erlang_b.
double erlang_c(int servers, double offered_load);

}  // namespace poolsim::sim
