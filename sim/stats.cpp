#include "sim/stats.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace poolsim::sim {
namespace {

// Bucket layout (see the comment on Histogram). A value v with bit width b is shifted right by
// s = max(b - 8, 0) bits, which leaves v >> s in [128, 256) when s > 0 (in [0, 256) when
// s = 0); its bucket is 128 s + (v >> s). Buckets 0 .. 255 hold 0 .. 255 exactly; bucket
// 128 s + m for s >= 1 holds [m << s, (m + 1) << s).
constexpr int kSubBucketBits = Histogram::kSubBucketBits;
constexpr int kExactBits = kSubBucketBits + 1;
static_assert(Histogram::kExactBelow == std::int64_t{1} << kExactBits);
static_assert(Histogram::kBucketCount ==
              static_cast<std::size_t>(Histogram::kExactBelow) +
                  static_cast<std::size_t>(63 - kExactBits) * (std::size_t{1} << kSubBucketBits));
static_assert(Histogram::kMaxRelativeError <= 0.005);

// The midpoint of the integers in bucket `index`: lo + (width - 1) / 2.
double bucket_midpoint(std::size_t index) {
  if (index < static_cast<std::size_t>(Histogram::kExactBelow)) return static_cast<double>(index);
  const std::size_t shift = (index >> kSubBucketBits) - 1;
  const std::size_t sub_bucket = index - (shift << kSubBucketBits);
  const double low = std::ldexp(static_cast<double>(sub_bucket), static_cast<int>(shift));
  const double width = std::ldexp(1.0, static_cast<int>(shift));
  return low + (width - 1.0) / 2.0;
}

// ceil(q * n), clamped to [1, n]. q carries a relative representation error of up to 2^-53, so
// a product within a few of those of an integer is that integer: 0.07 * 100 is 7, not 8.
std::uint64_t nearest_rank(double q, std::uint64_t n) {
  const long double product = static_cast<long double>(q) * static_cast<long double>(n);
  const long double nearest = std::round(product);
  const long double tolerance = product * 8.0L * std::numeric_limits<double>::epsilon();
  const long double rank = std::fabs(product - nearest) <= tolerance ? nearest : std::ceil(product);
  if (rank < 1.0L) return 1;
  if (rank >= static_cast<long double>(n)) return n;
  return static_cast<std::uint64_t>(rank);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Histogram

Histogram::Histogram() : counts_(kBucketCount, 0), min_(std::numeric_limits<std::int64_t>::max()) {}

void Histogram::refuse_negative(std::int64_t value) {
  throw std::invalid_argument("Histogram::add: negative value " + std::to_string(value));
}

void Histogram::merge(const Histogram& other) {
  // Read everything of other first: other may be *this.
  const std::uint64_t other_low = other.sum_low_;
  const std::uint64_t other_high = other.sum_high_;
  for (std::size_t i = 0; i < kBucketCount; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  sum_low_ += other_low;
  sum_high_ += other_high + (sum_low_ < other_low ? 1 : 0);
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

void Histogram::clear() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  sum_low_ = 0;
  sum_high_ = 0;
  min_ = std::numeric_limits<std::int64_t>::max();
  max_ = 0;
}

double Histogram::mean() const {
  if (count_ == 0) return 0.0;
  // A 64-bit mantissa holds sum_high_ * 2^64 + sum_low_ to within one part in 2^64, far below
  // the double the result is rounded to.
  const long double sum =
      std::ldexp(static_cast<long double>(sum_high_), 64) + static_cast<long double>(sum_low_);
  return static_cast<double>(sum / static_cast<long double>(count_));
}

std::int64_t Histogram::min() const { return count_ == 0 ? 0 : min_; }

std::int64_t Histogram::max() const { return max_; }

double Histogram::quantile(double q) const {
  if (!(q >= 0.0 && q <= 1.0)) {
    throw std::invalid_argument("Histogram::quantile: q must be in [0, 1], not " +
                                std::to_string(q));
  }
  if (count_ == 0) return 0.0;
  const std::uint64_t rank = nearest_rank(q, count_);
  // The extreme ranks are known exactly; every other rank is reported from its bucket.
  if (rank == 1) return static_cast<double>(min_);
  if (rank == count_) return static_cast<double>(max_);
  std::uint64_t seen = 0;
  std::size_t index = 0;
  for (; index < kBucketCount; ++index) {
    seen += counts_[index];
    if (seen >= rank) break;
  }
  return std::clamp(bucket_midpoint(index), static_cast<double>(min_), static_cast<double>(max_));
}

// ---------------------------------------------------------------------------------------------
// TimeWeighted

void TimeWeighted::start(Instant at, double level) {
  started_ = true;
  start_ = at;
  last_change_ = at;
  level_ = level;
  peak_ = level;
  integral_ = 0;
}

void TimeWeighted::restart(Instant at) {
  require_started_and_not_before(at, "restart");
  start(at, level_);
}

double TimeWeighted::mean(Instant end) const {
  require_started_and_not_before(end, "mean");
  if (end == start_) return level_;
  const long double integral =
      integral_ +
      static_cast<long double>(level_) * static_cast<long double>((end - last_change_).count());
  return static_cast<double>(integral / static_cast<long double>((end - start_).count()));
}

double TimeWeighted::peak() const {
  if (!started_) throw std::logic_error("TimeWeighted::peak before start");
  return peak_;
}

void TimeWeighted::require_started_and_not_before(Instant at, const char* operation) const {
  if (started_ && at >= last_change_) return;
  if (!started_)
    throw std::logic_error(std::string("TimeWeighted::") + operation + " before start");
  if (at < last_change_) {
    throw std::invalid_argument(std::string("TimeWeighted::") + operation +
                                ": time went back from " +
                                std::to_string(last_change_.time_since_epoch().count()) + "ns to " +
                                std::to_string(at.time_since_epoch().count()) + "ns");
  }
}

// ---------------------------------------------------------------------------------------------
// Student t

namespace {

// The continued fraction for the regularized incomplete beta function I_x(a, b), evaluated by
// the modified Lentz method (Numerical Recipes, 3rd ed., §6.4). Converges quickly for
// x < (a + 1) / (a + b + 2), in O(sqrt(max(a, b))) steps.
double beta_continued_fraction(double a, double b, double x) {
  constexpr int kMaxIterations = 100000;
  constexpr double kEpsilon = 1e-16;
  constexpr double kTiny = 1e-300;
  const double qab = a + b;
  const double qap = a + 1.0;
  const double qam = a - 1.0;
  double c = 1.0;
  double d = 1.0 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= kMaxIterations; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) < kEpsilon) break;
  }
  return h;
}

// I_x(a, b), given both x and 1 - x so that neither is computed by a cancelling subtraction.
double regularized_incomplete_beta(double a, double b, double x, double one_minus_x) {
  if (x <= 0.0) return 0.0;
  if (one_minus_x <= 0.0) return 1.0;
  const double log_front = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) +
                           b * std::log(one_minus_x);
  const double front = std::exp(log_front);
  if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_continued_fraction(a, b, x) / a;
  return 1.0 - front * beta_continued_fraction(b, a, one_minus_x) / b;
}

// P(T > t) for t >= 0: I_{dof / (dof + t^2)}(dof / 2, 1 / 2) / 2.
double student_t_upper_tail(double t, double dof) {
  const double t2 = t * t;
  const double x = dof / (dof + t2);
  const double one_minus_x = t2 / (dof + t2);
  return 0.5 * regularized_incomplete_beta(dof / 2.0, 0.5, x, one_minus_x);
}

}  // namespace

double student_t_quantile(double p, double dof) {
  if (!(p > 0.0 && p < 1.0)) {
    throw std::invalid_argument("student_t_quantile: p must be in (0, 1), not " +
                                std::to_string(p));
  }
  if (!(dof > 0.0 && std::isfinite(dof))) {
    throw std::invalid_argument(
        "student_t_quantile: degrees of freedom must be finite and > 0, not " +
        std::to_string(dof));
  }
  if (p == 0.5) return 0.0;
  // Symmetry: solve P(T > t) = tail for t >= 0, where tail = min(p, 1 - p) is exact in double.
  const double tail = p < 0.5 ? p : 1.0 - p;
  double low = 0.0;
  double high = 1.0;
  while (student_t_upper_tail(high, dof) > tail) {
    low = high;
    high *= 2.0;
    if (!std::isfinite(high)) return p < 0.5 ? -high : high;
  }
  // The upper tail decreases in t: keep P(T > low) > tail >= P(T > high).
  for (int i = 0; i < 200 && high - low > 1e-15 * high; ++i) {
    const double middle = low + (high - low) / 2.0;
    if (student_t_upper_tail(middle, dof) > tail) {
      low = middle;
    } else {
      high = middle;
    }
  }
  const double t = low + (high - low) / 2.0;
  return p < 0.5 ? -t : t;
}

Estimate student_t95(const std::vector<double>& samples) {
  if (samples.empty()) throw std::invalid_argument("student_t95: no samples");
  const auto n = static_cast<double>(samples.size());
  double sum = 0.0;
  for (double sample : samples) sum += sample;
  const double mean = sum / n;
  if (samples.size() < 2) return {mean, 0.0};
  // Two passes: the squares of deviations from the mean do not cancel like sum(x^2) - n mean^2.
  double squares = 0.0;
  for (double sample : samples) squares += (sample - mean) * (sample - mean);
  const double standard_deviation = std::sqrt(squares / (n - 1.0));
  return {mean, student_t_quantile(0.975, n - 1.0) * standard_deviation / std::sqrt(n)};
}

// ---------------------------------------------------------------------------------------------
// Erlang

namespace {

void check_erlang_arguments(const char* function, int servers, double offered_load) {
  if (servers < 0) {
    throw std::invalid_argument(std::string(function) + ": servers must be >= 0, not " +
                                std::to_string(servers));
  }
  if (!(offered_load >= 0.0 && std::isfinite(offered_load))) {
    throw std::invalid_argument(std::string(function) +
                                ": offered load must be finite and >= 0, not " +
                                std::to_string(offered_load));
  }
}

}  // namespace

double erlang_b(int servers, double offered_load) {
  check_erlang_arguments("erlang_b", servers, offered_load);
  double blocking = 1.0;
  for (int k = 1; k <= servers; ++k) {
    blocking = offered_load * blocking / (k + offered_load * blocking);
  }
  return blocking;
}

double erlang_c(int servers, double offered_load) {
  check_erlang_arguments("erlang_c", servers, offered_load);
  const auto c = static_cast<double>(servers);
  if (offered_load >= c) return 1.0;
  const double blocking = erlang_b(servers, offered_load);
  return c * blocking / (c - offered_load * (1.0 - blocking));
}

}  // namespace poolsim::sim
