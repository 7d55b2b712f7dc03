// Tests of sim/stats: Histogram quantiles against exact nearest-rank quantiles of sorted data,
// TimeWeighted against hand-computed integrals, the Student t quantile against published
// tables and closed forms, Erlang B / C against textbook values and the direct formulas.
#include "sim/stats.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <random>
#include <stdexcept>
#include <vector>

namespace poolsim::sim {
namespace {

constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

// A uniform double in (0, 1) from 53 random bits, the same on every standard library.
double uniform_open(std::mt19937_64& rng) {
  return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53;
}

// Lognormal-ish nanosecond values (Box-Muller, then exp): median 1 ms, sigma 2, so they span
// from tens of nanoseconds to tens of seconds. Written out rather than std::lognormal_distribution
// so that the data are the same on every standard library.
std::vector<std::int64_t> lognormal_values(std::uint64_t seed, std::size_t n) {
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> values;
  values.reserve(n);
  while (values.size() < n) {
    const double radius = std::sqrt(-2.0 * std::log(uniform_open(rng)));
    const double angle = 2.0 * std::numbers::pi * uniform_open(rng);
    for (double normal : {radius * std::cos(angle), radius * std::sin(angle)}) {
      if (values.size() < n) values.push_back(std::llround(std::exp(std::log(1e6) + 2.0 * normal)));
    }
  }
  return values;
}

// The nearest-rank quantile q = permille / 1000 of sorted values, in integer arithmetic:
// the value at rank ceil(q n), at least 1.
std::int64_t exact_quantile(const std::vector<std::int64_t>& sorted, std::uint64_t permille) {
  const std::uint64_t n = sorted.size();
  const std::uint64_t rank = std::max<std::uint64_t>((permille * n + 999) / 1000, 1);
  return sorted[rank - 1];
}

double relative_error(double reported, std::int64_t exact) {
  if (exact == 0) return reported == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::fabs(reported - static_cast<double>(exact)) / static_cast<double>(exact);
}

// ---------------------------------------------------------------------------------------------
// Histogram

TEST(Histogram, LognormalQuantilesWithinHalfAPercent) {
  std::vector<std::int64_t> values = lognormal_values(20240611, 1'000'000);
  Histogram histogram;
  for (std::int64_t value : values) histogram.add(value);
  std::sort(values.begin(), values.end());
  ASSERT_LT(values.front(), Histogram::kExactBelow);  // the data cover the exact range too
  ASSERT_GT(values.back(), std::int64_t{10'000'000'000});

  for (std::uint64_t permille : {500u, 900u, 950u, 990u, 999u}) {
    const std::int64_t exact = exact_quantile(values, permille);
    const double q = static_cast<double>(permille) / 1000.0;
    EXPECT_LE(relative_error(histogram.quantile(q), exact), 0.005)
        << "q=" << q << " exact=" << exact << " reported=" << histogram.quantile(q);
  }
  // The stated bound, at every permille.
  for (std::uint64_t permille = 0; permille <= 1000; ++permille) {
    const std::int64_t exact = exact_quantile(values, permille);
    const double q = static_cast<double>(permille) / 1000.0;
    ASSERT_LE(relative_error(histogram.quantile(q), exact), Histogram::kMaxRelativeError)
        << "q=" << q << " exact=" << exact << " reported=" << histogram.quantile(q);
  }
  EXPECT_EQ(histogram.quantile(0.0), static_cast<double>(values.front()));
  EXPECT_EQ(histogram.quantile(1.0), static_cast<double>(values.back()));
  EXPECT_EQ(histogram.min(), values.front());
  EXPECT_EQ(histogram.max(), values.back());
  EXPECT_EQ(histogram.count(), values.size());
}

// Each value v between 0 and 2^63 - 1 is reported within v / 256: the histogram holds 0, v and
// 2^63 - 1, so its median is v's bucket midpoint and the clamp to [min, max] does not help.
TEST(Histogram, ErrorBoundHoldsForEveryMagnitude) {
  std::vector<std::int64_t> probes;
  for (int bits = 0; bits < 63; ++bits) {
    const std::int64_t power = std::int64_t{1} << bits;
    for (std::int64_t offset : {-1, 0, 1}) {
      if (power + offset > 0) probes.push_back(power + offset);
    }
    probes.push_back(power + power / 2 + 1);
    probes.push_back(power + power / 3);
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10'000; ++i) {
    const int bits = static_cast<int>(rng() % 63);
    probes.push_back(static_cast<std::int64_t>(rng() >> (64 - bits - 1)) >> 1);
  }
  for (std::int64_t value : probes) {
    if (value <= 0 || value == kInt64Max) continue;
    Histogram histogram;
    histogram.add(0);
    histogram.add(value);
    histogram.add(kInt64Max);
    ASSERT_LE(relative_error(histogram.quantile(0.5), value), Histogram::kMaxRelativeError)
        << "value=" << value << " reported=" << histogram.quantile(0.5);
  }
}

TEST(Histogram, ExactForSmallIntegers) {
  std::mt19937_64 rng(11);
  std::vector<std::int64_t> values;
  Histogram histogram;
  for (int i = 0; i < 10'007; ++i) {
    const auto value = static_cast<std::int64_t>(rng() % Histogram::kExactBelow);
    values.push_back(value);
    histogram.add(value);
  }
  std::sort(values.begin(), values.end());
  for (std::uint64_t permille = 0; permille <= 1000; ++permille) {
    const double q = static_cast<double>(permille) / 1000.0;
    ASSERT_EQ(histogram.quantile(q), static_cast<double>(exact_quantile(values, permille)))
        << "q=" << q;
  }
}

TEST(Histogram, NearestRankOnAHandExample) {
  Histogram histogram;
  for (std::int64_t value : {15, 20, 35, 40, 50}) histogram.add(value);
  EXPECT_EQ(histogram.quantile(0.05), 15.0);  // rank ceil(0.25) = 1
  EXPECT_EQ(histogram.quantile(0.30), 20.0);  // rank ceil(1.5) = 2
  EXPECT_EQ(histogram.quantile(0.40), 20.0);  // rank 2 exactly
  EXPECT_EQ(histogram.quantile(0.50), 35.0);  // rank ceil(2.5) = 3
  EXPECT_EQ(histogram.quantile(1.00), 50.0);

  // 0.07 * 100 is 7.000000000000001 in double; the rank is still 7.
  Histogram hundred;
  for (std::int64_t value = 1; value <= 100; ++value) hundred.add(value);
  EXPECT_EQ(hundred.quantile(0.07), 7.0);
  EXPECT_EQ(hundred.quantile(0.071), 8.0);
}

TEST(Histogram, ZerosAreExact) {
  Histogram histogram;
  for (int i = 0; i < 990; ++i) histogram.add(0);
  for (int i = 0; i < 10; ++i) histogram.add(123'456'789'012);
  EXPECT_EQ(histogram.quantile(0.5), 0.0);
  EXPECT_EQ(histogram.quantile(0.99), 0.0);
  EXPECT_EQ(histogram.quantile(0.0), 0.0);
  EXPECT_EQ(histogram.min(), 0);
  EXPECT_LE(relative_error(histogram.quantile(0.991), 123'456'789'012),
            Histogram::kMaxRelativeError);
  EXPECT_EQ(histogram.quantile(1.0), 123'456'789'012.0);  // clamped to max

  Histogram only_zeros;
  for (int i = 0; i < 1000; ++i) only_zeros.add(0);
  EXPECT_EQ(only_zeros.quantile(0.999), 0.0);
  EXPECT_EQ(only_zeros.mean(), 0.0);
  EXPECT_EQ(only_zeros.max(), 0);
}

TEST(Histogram, MeanIsExact) {
  const std::vector<std::int64_t> values = lognormal_values(99, 1'000'000);
  Histogram histogram;
  long double sum = 0;  // below 2^64: exact in a 64-bit mantissa
  for (std::int64_t value : values) {
    histogram.add(value);
    sum += static_cast<long double>(value);
  }
  ASSERT_LT(sum, 0x1.0p64L);
  EXPECT_EQ(histogram.mean(), static_cast<double>(sum / static_cast<long double>(values.size())));

  // Sums beyond 2^64 carry into the high word; a double sum would lose the +3.
  Histogram huge;
  for (int i = 0; i < 4; ++i) huge.add(kInt64Max);
  huge.add(3);
  huge.add(3);
  // (4 (2^63 - 1) + 6) / 6 = (2^65 + 2) / 6, rounded to double.
  EXPECT_EQ(huge.mean(), static_cast<double>((0x1.0p65L + 2.0L) / 6.0L));
  Histogram max_only;
  for (int i = 0; i < 1000; ++i) max_only.add(kInt64Max);
  EXPECT_EQ(max_only.mean(), static_cast<double>(kInt64Max));
}

TEST(Histogram, MergeEqualsAddingAll) {
  const std::vector<std::int64_t> first = lognormal_values(1, 100'000);
  std::vector<std::int64_t> second = lognormal_values(2, 50'000);
  for (auto& value : second) value *= 1000;  // a different range
  Histogram a;
  Histogram b;
  Histogram all;
  for (std::int64_t value : first) {
    a.add(value);
    all.add(value);
  }
  for (std::int64_t value : second) {
    b.add(value);
    all.add(value);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.mean(), all.mean());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  for (int permille = 0; permille <= 1000; ++permille) {
    const double q = permille / 1000.0;
    ASSERT_EQ(a.quantile(q), all.quantile(q)) << "q=" << q;
  }

  Histogram empty;
  Histogram copy = all;
  copy.merge(empty);
  EXPECT_EQ(copy.quantile(0.5), all.quantile(0.5));
  EXPECT_EQ(copy.min(), all.min());
  empty.merge(all);
  EXPECT_EQ(empty.quantile(0.99), all.quantile(0.99));
  EXPECT_EQ(empty.min(), all.min());

  // Merging into itself doubles every count, including the sum's carry.
  Histogram self;
  self.add(kInt64Max);
  self.add(kInt64Max);
  self.add(5);
  self.merge(self);
  EXPECT_EQ(self.count(), 6u);
  EXPECT_EQ(self.mean(), static_cast<double>((4.0L * kInt64Max + 10.0L) / 6.0L));
  EXPECT_EQ(self.quantile(0.3), 5.0);
}

TEST(Histogram, MemoryIsFixedWhateverTheCount) {
  static_assert(sizeof(Histogram) <= 128);
  Histogram histogram;
  const std::size_t buckets = histogram.bucket_count();
  EXPECT_EQ(buckets, Histogram::kBucketCount);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 10'000'000; ++i) {
    histogram.add(static_cast<std::int64_t>(rng() >> (rng() % 63 + 1)));  // every magnitude
  }
  histogram.add(kInt64Max);
  EXPECT_EQ(histogram.bucket_count(), buckets);
  EXPECT_EQ(histogram.count(), 10'000'001u);
  EXPECT_EQ(histogram.quantile(1.0), static_cast<double>(kInt64Max));
}

TEST(Histogram, EmptyAndClear) {
  Histogram histogram;
  EXPECT_EQ(histogram.count(), 0u);
  EXPECT_EQ(histogram.mean(), 0.0);
  EXPECT_EQ(histogram.min(), 0);
  EXPECT_EQ(histogram.max(), 0);
  EXPECT_EQ(histogram.quantile(0.5), 0.0);

  for (std::int64_t value : {1000, 2000, 3000}) histogram.add(value);
  histogram.clear();
  EXPECT_EQ(histogram.count(), 0u);
  EXPECT_EQ(histogram.quantile(0.5), 0.0);
  histogram.add(7);
  EXPECT_EQ(histogram.min(), 7);
  EXPECT_EQ(histogram.max(), 7);
  EXPECT_EQ(histogram.mean(), 7.0);
  EXPECT_EQ(histogram.quantile(0.5), 7.0);
  EXPECT_EQ(histogram.bucket_count(), Histogram::kBucketCount);
}

TEST(Histogram, RejectsBadInput) {
  Histogram histogram;
  EXPECT_THROW(histogram.add(-1), std::invalid_argument);
  EXPECT_EQ(histogram.count(), 0u);
  histogram.add(1);
  EXPECT_THROW((void)histogram.quantile(-0.01), std::invalid_argument);
  EXPECT_THROW((void)histogram.quantile(1.01), std::invalid_argument);
  EXPECT_THROW((void)histogram.quantile(std::nan("")), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// TimeWeighted

Instant at_seconds(double seconds) { return Instant(Duration(std::llround(seconds * 1e9))); }

TEST(TimeWeighted, HandComputedMeanAndPeak) {
  TimeWeighted level;
  level.start(at_seconds(10), 0);
  level.set(at_seconds(11), 2);  // 0 for 1 s
  level.set(at_seconds(13), 1);  // 2 for 2 s
  // then 1 for 1 s: (0 + 4 + 1) / 4
  EXPECT_DOUBLE_EQ(level.mean(at_seconds(14)), 1.25);
  EXPECT_DOUBLE_EQ(level.mean(at_seconds(13)), 4.0 / 3.0);
  EXPECT_EQ(level.peak(), 2.0);
  EXPECT_EQ(level.level(), 1.0);

  // Several changes at one instant: only the last has any weight, all count for the peak.
  level.set(at_seconds(14), 7);
  level.set(at_seconds(14), 3);
  EXPECT_DOUBLE_EQ(level.mean(at_seconds(16)), (5.0 + 3.0 * 2.0) / 6.0);
  EXPECT_EQ(level.peak(), 7.0);
}

TEST(TimeWeighted, LevelAtStartCountsForThePeak) {
  TimeWeighted level;
  level.start(at_seconds(0), 5);
  level.set(at_seconds(1), 1);
  EXPECT_EQ(level.peak(), 5.0);
  EXPECT_DOUBLE_EQ(level.mean(at_seconds(2)), 3.0);

  TimeWeighted fresh;
  fresh.start(at_seconds(3), 4);
  EXPECT_EQ(fresh.mean(at_seconds(3)), 4.0);  // zero length: the level at start
}

TEST(TimeWeighted, RestartKeepsTheLevelAndForgetsTheRest) {
  TimeWeighted level;
  level.start(at_seconds(0), 4);
  level.set(at_seconds(1), 9);
  level.set(at_seconds(2), 2);
  level.restart(at_seconds(5));
  EXPECT_EQ(level.peak(), 2.0);
  EXPECT_EQ(level.level(), 2.0);
  EXPECT_DOUBLE_EQ(level.mean(at_seconds(7)), 2.0);
  level.set(at_seconds(7), 3);
  EXPECT_DOUBLE_EQ(level.mean(at_seconds(9)), 2.5);  // (2 x 2 + 3 x 2) / 4
  EXPECT_EQ(level.peak(), 3.0);
  EXPECT_THROW(level.set(at_seconds(4), 1), std::invalid_argument);

  // start() again forgets everything.
  level.start(at_seconds(20), 1);
  EXPECT_EQ(level.peak(), 1.0);
  EXPECT_DOUBLE_EQ(level.mean(at_seconds(30)), 1.0);
}

TEST(TimeWeighted, LongRunsKeepPrecision) {
  // A level alternating between 1 and 2, 100000 changes over a simulated day.
  TimeWeighted level;
  level.start(Instant{}, 1);
  const std::int64_t step = 864'000'000;  // 0.864 s: 100'000 steps a day
  for (std::int64_t i = 1; i <= 100'000; ++i) level.set(Instant(Duration(i * step)), i % 2 ? 2 : 1);
  EXPECT_NEAR(level.mean(Instant(Duration(100'000 * step))), 1.5, 1e-12);
}

TEST(TimeWeighted, MisuseThrows) {
  TimeWeighted level;
  EXPECT_THROW(level.set(at_seconds(1), 1), std::logic_error);
  EXPECT_THROW((void)level.mean(at_seconds(1)), std::logic_error);
  EXPECT_THROW((void)level.peak(), std::logic_error);
  EXPECT_THROW(level.restart(at_seconds(1)), std::logic_error);
  level.start(at_seconds(5), 1);
  level.set(at_seconds(6), 2);
  EXPECT_THROW((void)level.mean(at_seconds(5.5)), std::invalid_argument);
  EXPECT_THROW(level.restart(at_seconds(5.5)), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Student t

TEST(StudentT, MatchesTables) {
  EXPECT_NEAR(student_t_quantile(0.975, 1), 12.7062047, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.975, 2), 4.30265273, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.975, 9), 2.26215716, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.975, 29), 2.04522964, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.975, 1000), 1.96233908, 1e-6);
  // Other levels from the same tables.
  EXPECT_NEAR(student_t_quantile(0.95, 5), 2.01504837, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.995, 10), 3.16927267, 1e-6);
  EXPECT_NEAR(student_t_quantile(0.999, 3), 10.2145319, 1e-6);
}

TEST(StudentT, MatchesClosedFormsForOneAndTwoDegrees) {
  for (double p : {1e-9, 1e-4, 0.01, 0.1, 0.3, 0.5, 0.6, 0.9, 0.975, 0.999, 0.999999}) {
    const double cauchy = -1.0 / std::tan(std::numbers::pi * p);  // no cancellation near 0
    EXPECT_NEAR(student_t_quantile(p, 1), cauchy, 1e-9 * std::max(1.0, std::fabs(cauchy)))
        << "p=" << p;
    const double two = (2.0 * p - 1.0) / std::sqrt(2.0 * p * (1.0 - p));
    EXPECT_NEAR(student_t_quantile(p, 2), two, 1e-9 * std::max(1.0, std::fabs(two))) << "p=" << p;
  }
}

TEST(StudentT, SymmetricAndTendsToTheNormal) {
  for (double dof : {0.5, 1.0, 3.0, 17.0, 250.0}) {
    EXPECT_EQ(student_t_quantile(0.5, dof), 0.0);
    EXPECT_NEAR(student_t_quantile(0.025, dof), -student_t_quantile(0.975, dof), 1e-9);
  }
  // Cornish-Fisher: t = z + (z^3 + z) / (4 dof) + O(1 / dof^2), z = 1.959963984540054.
  const double z = 1.959963984540054;
  const double dof = 1e6;
  EXPECT_NEAR(student_t_quantile(0.975, dof), z + (z * z * z + z) / (4.0 * dof), 1e-9);
}

TEST(StudentT, RejectsBadArguments) {
  EXPECT_THROW((void)student_t_quantile(0.0, 3), std::invalid_argument);
  EXPECT_THROW((void)student_t_quantile(1.0, 3), std::invalid_argument);
  EXPECT_THROW((void)student_t_quantile(0.9, 0), std::invalid_argument);
  EXPECT_THROW((void)student_t_quantile(0.9, std::numeric_limits<double>::infinity()),
               std::invalid_argument);
  EXPECT_THROW((void)student_t95({}), std::invalid_argument);
}

TEST(StudentT, Estimate95OnAHandExample) {
  // Mean 5; deviations -3, -1, 1, 3; s^2 = 20 / 3; half-width = t(0.975, 3) * sqrt(20 / 3) / 2,
  // with t(0.975, 3) = 3.18244631 from the tables.
  const Estimate estimate = student_t95({2.0, 4.0, 6.0, 8.0});
  EXPECT_DOUBLE_EQ(estimate.mean, 5.0);
  EXPECT_NEAR(estimate.half_width, 3.18244631 * std::sqrt(20.0 / 3.0) / 2.0, 1e-7);
  EXPECT_NEAR(estimate.half_width, 4.10852, 1e-5);

  const Estimate single = student_t95({3.5});
  EXPECT_EQ(single.mean, 3.5);
  EXPECT_EQ(single.half_width, 0.0);

  const Estimate constant = student_t95({1e9 + 0.1, 1e9 + 0.1, 1e9 + 0.1});
  EXPECT_EQ(constant.half_width, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Erlang

// Erlang C from its definition, in long double: the waiting probability of M/M/c.
double erlang_c_direct(int servers, double load) {
  long double term = 1;  // a^k / k!
  long double below = 0;
  for (int k = 0; k < servers; ++k) {
    below += term;
    term *= load / (k + 1);
  }
  const long double top = term * servers / (servers - load);
  return static_cast<double>(top / (below + top));
}

TEST(Erlang, CMatchesTheSizingExample) {
  // lambda = 1800/s, hold 10 ms: a = 18 erlangs on 20 connections.
  const double p_wait = erlang_c(20, 1800.0 * 0.010);
  EXPECT_NEAR(p_wait, 0.55077, 5e-6);
  EXPECT_NEAR(p_wait, erlang_c_direct(20, 18.0), 1e-12);
}

TEST(Erlang, BMatchesTextbookValues) {
  EXPECT_EQ(erlang_b(1, 1.0), 0.5);
  EXPECT_NEAR(erlang_b(10, 5.0), 0.018384, 1e-6);
  EXPECT_NEAR(erlang_b(2, 1.0), 0.2, 1e-15);  // (1/2) / (1 + 1 + 1/2)
  EXPECT_NEAR(erlang_b(5, 2.0), 0.036697, 1e-6);
  EXPECT_EQ(erlang_b(0, 3.0), 1.0);
  EXPECT_EQ(erlang_b(4, 0.0), 0.0);
  // Large systems stay finite and sensible (a^c / c! alone would overflow).
  const double big = erlang_b(2000, 1900.0);
  EXPECT_GT(big, 0.0);
  EXPECT_LT(big, 0.05);
}

TEST(Erlang, CMatchesTheDirectFormula) {
  for (int servers : {1, 2, 3, 5, 10, 30, 100}) {
    for (double utilization : {0.05, 0.3, 0.7, 0.9, 0.99}) {
      const double load = servers * utilization;
      EXPECT_NEAR(erlang_c(servers, load), erlang_c_direct(servers, load), 1e-12)
          << "c=" << servers << " a=" << load;
    }
  }
  EXPECT_NEAR(erlang_c(1, 0.5), 0.5, 1e-15);  // M/M/1: P(wait) = rho
  EXPECT_EQ(erlang_c(10, 10.0), 1.0);
  EXPECT_EQ(erlang_c(10, 12.0), 1.0);
  EXPECT_EQ(erlang_c(3, 0.0), 0.0);
}

TEST(Erlang, RejectsBadArguments) {
  EXPECT_THROW((void)erlang_b(-1, 1.0), std::invalid_argument);
  EXPECT_THROW((void)erlang_b(3, -1.0), std::invalid_argument);
  EXPECT_THROW((void)erlang_c(3, std::nan("")), std::invalid_argument);
}

}  // namespace
}  // namespace poolsim::sim
