// Tests of sim/analytic: every model against an independent method where both apply.
//
//   closed forms        textbook anchors (Erlang B / C tables), direct sums of the product forms
//   generic CTMC        small chains solved by hand; Erlang A (its CTMC) against Erlang C,
//                       M/M/c/K, the M/M/inf identity theta = mu, and the incomplete-gamma closed
//                       form of Mandelbaum & Zeltyn evaluated with Boost.Math
//   M/M/c+D             its limits (D = 0: Erlang B, D -> inf: Erlang C), the J / E form of Zeltyn
//                       & Mandelbaum written out separately, and a FIFO simulation of 10^6
//                       customers (fixed seed, 99.9% batch-means band)
//   QueuePool churn     its Erlang B / C limits, and the full (b, i, k, w) chain built here from
//                       the rules by search from the empty pool and solved by the generic CTMC
//   arguments           every function rejects bad arguments with a message naming them
#include "sim/analytic.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <boost/math/special_functions/gamma.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <queue>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "sim/stats.hpp"

namespace poolsim::sim {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// |x - y| <= tol * max(1, |y|): relative for large values, absolute near 0.
void expect_close(double x, double y, double tol, const std::string& what) {
  EXPECT_LE(std::fabs(x - y), tol * std::max(1.0, std::fabs(y)))
      << what << ": " << x << " vs " << y;
}

void expect_same_metrics(const PoolMetrics& got, const PoolMetrics& want, double tol) {
  expect_close(got.p_wait, want.p_wait, tol, "p_wait");
  expect_close(got.p_timeout, want.p_timeout, tol, "p_timeout");
  expect_close(got.mean_wait_s, want.mean_wait_s, tol, "mean_wait_s");
  expect_close(got.mean_in_use, want.mean_in_use, tol, "mean_in_use");
  expect_close(got.mean_open, want.mean_open, tol, "mean_open");
  expect_close(got.opened_per_s, want.opened_per_s, tol, "opened_per_s");
}

// The message of the std::invalid_argument that `call` throws (fails the test if none).
std::string invalid_argument_message(const std::function<void()>& call) {
  try {
    call();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::invalid_argument";
  return "";
}

#define EXPECT_INVALID(call, fragment) \
  EXPECT_NE(invalid_argument_message([&] { (void)(call); }).find(fragment), std::string::npos)

// ---------------------------------------------------------------------------------------------
// Erlang B / C

TEST(ErlangBPool, TableValueAndDirectSum) {
  // Erlang's loss table: 10 lines offered 5 erlangs block 1.838%.
  const PoolMetrics m = erlang_b_pool(10, 50.0, 10.0);
  EXPECT_EQ(m.model, "erlang_b");
  EXPECT_NEAR(m.p_wait, 0.01838, 5e-6);
  // Direct sum (a^c / c!) / sum_n a^n / n!.
  double term = 1, sum = 1;
  for (int n = 1; n <= 10; ++n) sum += term *= 5.0 / n;
  expect_close(m.p_timeout, term / sum, 1e-13, "B");
  EXPECT_EQ(m.p_wait, m.p_timeout);
  EXPECT_EQ(m.mean_wait_s, 0.0);
  EXPECT_EQ(m.wait_p99_s, 0.0);
  expect_close(m.mean_in_use, 5.0 * (1 - term / sum), 1e-13, "in use");
  EXPECT_EQ(m.mean_open, 10.0);
  EXPECT_EQ(m.states, 0u);
}

TEST(ErlangCPool, TextbookAnchor) {
  // 20 connections, 1,800 requests/s, 10 ms holds: P(wait) = 0.55077, mean wait 2.7538 ms.
  const PoolMetrics m = erlang_c_pool(20, 1800.0, 100.0);
  EXPECT_EQ(m.model, "erlang_c");
  EXPECT_NEAR(m.p_wait, 0.55077, 5e-6);
  EXPECT_NEAR(m.mean_wait_s * 1e3, 2.7538, 5e-5);
  EXPECT_EQ(m.p_timeout, 0.0);
  expect_close(m.mean_in_use, 18.0, 1e-15, "in use");
  EXPECT_EQ(m.mean_open, 20.0);
  // P(W > t) = C exp(-(c mu - lambda) t) at each quantile.
  const std::array<std::pair<double, std::optional<double>>, 3> quantiles{
      {{0.50, m.wait_p50_s}, {0.95, m.wait_p95_s}, {0.99, m.wait_p99_s}}};
  for (const auto& [q, t] : quantiles) {
    ASSERT_TRUE(t.has_value());
    expect_close(m.p_wait * std::exp(-200.0 * *t), 1 - q, 1e-12, "tail at quantile");
  }
}

TEST(ErlangCPool, QuantileIsZeroInsideTheAtom) {
  const PoolMetrics m = erlang_c_pool(10, 300.0, 100.0);  // C ~ 4e-4 < 1%
  EXPECT_LT(m.p_wait, 0.01);
  EXPECT_EQ(m.wait_p50_s, 0.0);
  EXPECT_EQ(m.wait_p99_s, 0.0);
}

// ---------------------------------------------------------------------------------------------
// M/M/c/K

// The M/M/c/K distribution as a direct sum in logarithms, independent of the code's recursion.
std::vector<double> mmck_distribution(int c, int k, double a) {
  std::vector<double> log_w(static_cast<std::size_t>(k) + 1);
  for (int n = 0; n <= k; ++n) {
    log_w[static_cast<std::size_t>(n)] =
        n <= c ? n * std::log(a) - std::lgamma(n + 1.0)
               : c * std::log(a) - std::lgamma(c + 1.0) + (n - c) * std::log(a / c);
  }
  const double top = *std::max_element(log_w.begin(), log_w.end());
  std::vector<double> p;
  double sum = 0;
  for (double l : log_w) sum += std::exp(l - top);
  for (double l : log_w) p.push_back(std::exp(l - top) / sum);
  return p;
}

TEST(MmckPool, AgainstDirectSum) {
  const int c = 8, k = 20;
  const double lambda = 900, mu = 100, a = 9.0;
  const PoolMetrics m = mmck_pool(c, k, lambda, mu);
  const std::vector<double> p = mmck_distribution(c, k, a);
  double wait = 0, queue = 0;
  for (int n = c; n <= k; ++n) wait += p[static_cast<std::size_t>(n)];
  for (int n = c + 1; n <= k; ++n) queue += (n - c) * p[static_cast<std::size_t>(n)];
  EXPECT_EQ(m.model, "mmck");
  expect_close(m.p_timeout, p.back(), 1e-12, "blocked");
  expect_close(m.p_wait, wait, 1e-12, "wait");
  expect_close(m.mean_wait_s, queue / lambda, 1e-12, "mean wait");
  expect_close(m.mean_in_use, a * (1 - p.back()), 1e-12, "in use (Little)");
}

TEST(MmckPool, LimitsAreErlangBAndC) {
  expect_same_metrics(mmck_pool(12, 12, 1000, 100), erlang_b_pool(12, 1000, 100), 1e-12);
  const PoolMetrics big = mmck_pool(12, 12 + 3000, 1000, 100);  // rho^3000 ~ 1e-238
  const PoolMetrics c = erlang_c_pool(12, 1000, 100);
  expect_same_metrics(big, c, 1e-9);
  expect_close(*big.wait_p50_s, *c.wait_p50_s, 1e-9, "p50");
  expect_close(*big.wait_p95_s, *c.wait_p95_s, 1e-9, "p95");
  expect_close(*big.wait_p99_s, *c.wait_p99_s, 1e-9, "p99");
}

// ---------------------------------------------------------------------------------------------
// Generic CTMC

TEST(StationaryDistribution, TwoStatesAndTransientStates) {
  // 0 -> 1 twice at rate 3 (they add up to 6), 1 -> 0 at rate 1: pi = (1/7, 6/7). State 2 can
  // only be left: transient.
  const std::vector<double> pi =
      stationary_distribution(3, {{0, 1, 3.0}, {1, 0, 1.0}, {2, 0, 5.0}, {0, 1, 3.0}}, 1);
  EXPECT_NEAR(pi[0], 1.0 / 7, 1e-15);
  EXPECT_NEAR(pi[1], 6.0 / 7, 1e-15);
  EXPECT_EQ(pi[2], 0.0);
}

TEST(StationaryDistribution, PoorHintIsRepeatedFromTheHeaviestState) {
  // A birth-death chain with ratio 1/10: state 0 holds 90%, state 30 about 1e-30, so relative to
  // the hint 30 the system is singular in floating point.
  std::vector<Transition> t;
  for (std::size_t n = 0; n < 30; ++n) {
    t.push_back({n, n + 1, 1.0});
    t.push_back({n + 1, n, 10.0});
  }
  const std::vector<double> pi = stationary_distribution(31, t, 30);
  for (std::size_t n = 0; n <= 30; ++n) {
    expect_close(pi[n], 0.9 * std::pow(0.1, static_cast<double>(n)), 1e-12, "pi");
  }
}

TEST(StationaryDistribution, RejectsBadInput) {
  EXPECT_INVALID(stationary_distribution(0, {}), "at least one state");
  EXPECT_INVALID(stationary_distribution(2, {{0, 2, 1.0}}), "leaves the 2 states");
  EXPECT_INVALID(stationary_distribution(2, {{0, 1, -1.0}}), "finite and > 0");
  EXPECT_INVALID(stationary_distribution(2, {{0, 1, kInf}}), "finite and > 0");
  EXPECT_INVALID(stationary_distribution(2, {{0, 1, 1.0}}, 2), "reference_hint 2");
}

// ---------------------------------------------------------------------------------------------
// Erlang A

TEST(ErlangA, TinyPatienceRateIsErlangC) {
  const PoolMetrics a = erlang_a_ctmc(20, 1800, 100, 1e-12, 2000);
  const PoolMetrics c = erlang_c_pool(20, 1800, 100);
  EXPECT_EQ(a.model, "erlang_a");
  EXPECT_EQ(a.states, 2021u);
  expect_close(a.p_wait, c.p_wait, 1e-9, "p_wait");
  expect_close(a.mean_wait_s, c.mean_wait_s, 1e-9, "mean wait");
  expect_close(a.mean_in_use, c.mean_in_use, 1e-9, "in use");
  EXPECT_LT(a.p_timeout, 1e-13);
  EXPECT_LT(a.truncation_error, 1e-40);
}

TEST(ErlangA, NoPatienceLimitWithQueueCapIsMmck) {
  for (auto [c, cap, lambda] : {std::tuple{5, 7, 450.0}, {20, 30, 2500.0}, {1, 50, 90.0}}) {
    const PoolMetrics a = erlang_a_ctmc(c, lambda, 100, 0, cap);
    expect_same_metrics(a, mmck_pool(c, c + cap, lambda, 100), 1e-9);
    EXPECT_GT(a.truncation_error, 0);  // against the (here unbounded or unstable) M/M/c
  }
}

TEST(ErlangA, PatienceEqualToHoldIsMmInfinity) {
  // theta = mu makes every death rate n mu: the number present is Poisson(a) whatever c is.
  const int c = 6;
  const double lambda = 800, mu = 100, a = 8;
  const PoolMetrics m = erlang_a_ctmc(c, lambda, mu, mu, 400);
  double p_n = std::exp(-a), below = 0, in_use = 0, queue = 0;
  for (int n = 0; n < 200; ++n) {
    if (n < c) below += p_n;
    in_use += std::min(n, c) * p_n;
    queue += std::max(n - c, 0) * p_n;
    p_n *= a / (n + 1);
  }
  expect_close(m.p_wait, 1 - below, 1e-12, "P(N >= c)");
  expect_close(m.mean_in_use, in_use, 1e-12, "E min(N, c)");
  expect_close(m.p_timeout, mu * queue / lambda, 1e-12, "P(abandon)");
  expect_close(m.mean_wait_s, queue / lambda, 1e-12, "mean wait");
}

// Mandelbaum & Zeltyn's closed form of Erlang A (M/M/n+M): with x = n mu / theta, y = lambda /
// theta and A(x, y) = x e^y y^-x gamma(x, y) (lower incomplete gamma),
//   P(W > 0) = A B / (1 + (A - 1) B),  B = Erlang B(n, lambda / mu),
//   P(Ab) = P(W > 0) (1 / (rho A) + 1 - 1 / rho),  rho = lambda / (n mu),  E W = P(Ab) / theta.
struct ErlangAClosedForm {
  double p_wait, p_abandon, mean_wait;
};
ErlangAClosedForm erlang_a_closed_form(int n, double lambda, double mu, double theta) {
  const double x = n * mu / theta, y = lambda / theta, rho = lambda / (n * mu);
  const double log_a =
      std::log(x) + y - x * std::log(y) + std::lgamma(x) + std::log(boost::math::gamma_p(x, y));
  const double big_a = std::exp(log_a);
  const double b = erlang_b(n, lambda / mu);
  const double p_wait = big_a * b / (1 + (big_a - 1) * b);
  const double p_abandon = p_wait * (1 / (rho * big_a) + 1 - 1 / rho);
  return {p_wait, p_abandon, p_abandon / theta};
}

TEST(ErlangA, AgainstIncompleteGammaClosedForm) {
  // Under and over loaded, patience shorter and longer than the hold.
  for (auto [n, lambda, theta] :
       {std::tuple{20, 1800.0, 50.0}, {20, 2500.0, 50.0}, {50, 4800.0, 10.0}, {3, 250.0, 400.0}}) {
    const PoolMetrics m = erlang_a_ctmc(n, lambda, 100, theta, 3000);
    const ErlangAClosedForm want = erlang_a_closed_form(n, lambda, 100, theta);
    expect_close(m.p_wait, want.p_wait, 1e-9, "P(W > 0)");
    expect_close(m.p_timeout, want.p_abandon, 1e-9, "P(Ab)");
    expect_close(m.mean_wait_s, want.mean_wait, 1e-9, "E W");
    EXPECT_LT(m.truncation_error, 1e-12);
    EXPECT_FALSE(m.wait_p95_s.has_value());
  }
}

TEST(ErlangA, TruncationErrorIsTheMassAboveTheCap) {
  // M/M/c+M with a short cap: compare with the untruncated product form summed here.
  const int c = 10, cap = 5;
  const double lambda = 1100, mu = 100, theta = 20;
  const PoolMetrics m = erlang_a_ctmc(c, lambda, mu, theta, cap);
  std::vector<double> w{1.0};
  for (int n = 1; n < 2000; ++n) {
    const double death = std::min(n, c) * mu + std::max(n - c, 0) * theta;
    w.push_back(w.back() * lambda / death);
  }
  double total = 0, above = 0;
  for (std::size_t n = 0; n < w.size(); ++n) (n > c + cap ? above : total) += w[n];
  expect_close(m.truncation_error, above / (total + above), 1e-12, "mass above cap");
  EXPECT_GT(m.truncation_error, 0.1);
}

// ---------------------------------------------------------------------------------------------
// M/M/c+D

// Zeltyn & Mandelbaum (2005), M/M/n+G with G the point mass at D, written directly:
// E = 1 / B(n-1, a), J = integral_0^inf exp(lambda min(x, D) - n mu x) dx,
// P(W > 0) = lambda J / (E + lambda J), P(Ab) = (1 + (lambda - n mu) J) / (E + lambda J).
std::pair<double, double> mmc_plus_d_closed_form(int n, double lambda, double mu, double d) {
  const double nmu = n * mu, gamma = nmu - lambda;
  const double j = (1 - std::exp(-gamma * d)) / gamma + std::exp(-gamma * d) / nmu;
  const double e = 1 / erlang_b(n - 1, lambda / mu);
  return {lambda * j / (e + lambda * j), (1 + (lambda - nmu) * j) / (e + lambda * j)};
}

TEST(MmcPlusD, AgainstZeltynMandelbaumForm) {
  for (auto [n, lambda, d] : {std::tuple{10, 900.0, 0.02},
                              {10, 1200.0, 0.01},
                              {30, 2950.0, 0.5},
                              {1, 50.0, 0.3},
                              {4, 700.0, 0.002}}) {
    const PoolMetrics m = mmc_plus_d(n, lambda, 100, d);
    const auto [p_wait, p_abandon] = mmc_plus_d_closed_form(n, lambda, 100, d);
    EXPECT_EQ(m.model, "mmc_plus_d");
    expect_close(m.p_wait, p_wait, 1e-12, "P(W > 0)");
    expect_close(m.p_timeout, p_abandon, 1e-12, "P(Ab)");
    expect_close(m.mean_in_use, lambda / 100 * (1 - p_abandon), 1e-12, "in use");
  }
}

TEST(MmcPlusD, LongDeadlineIsErlangC) {
  const PoolMetrics c = erlang_c_pool(20, 1800, 100);
  for (double d : {1e3, kInf}) {
    const PoolMetrics m = mmc_plus_d(20, 1800, 100, d);
    expect_same_metrics(m, c, 1e-9);
    expect_close(*m.wait_p50_s, *c.wait_p50_s, 1e-9, "p50");
    expect_close(*m.wait_p95_s, *c.wait_p95_s, 1e-9, "p95");
    expect_close(*m.wait_p99_s, *c.wait_p99_s, 1e-9, "p99");
  }
}

TEST(MmcPlusD, ZeroDeadlineIsErlangB) {
  for (double lambda : {500.0, 1800.0, 5000.0}) {
    const PoolMetrics m = mmc_plus_d(20, lambda, 100, 0);
    expect_same_metrics(m, erlang_b_pool(20, lambda, 100), 1e-12);
    EXPECT_EQ(m.wait_p99_s, 0.0);
  }
}

TEST(MmcPlusD, ContinuousAcrossCriticalLoad) {
  // lambda = c mu exactly takes the gamma = 0 branch; its neighbours the two others.
  const PoolMetrics at = mmc_plus_d(20, 2000, 100, 0.05);
  for (double lambda : {2000 * (1 - 1e-9), 2000 * (1 + 1e-9)}) {
    const PoolMetrics near = mmc_plus_d(20, lambda, 100, 0.05);
    expect_same_metrics(near, at, 1e-7);
    expect_close(*near.wait_p50_s, *at.wait_p50_s, 1e-7, "p50");
  }
}

// FIFO M/M/c+D by the Kiefer-Wolfowitz recursion: customers in arrival order, each taken by the
// earliest free server if it frees up before the customer's deadline; one who would wait D or
// more leaves at D without using a server. Nothing here shares code with the closed form.
struct McdBatches {
  std::vector<double> waited, timed_out, wait, above[3];
};
McdBatches simulate_mmc_plus_d(int c, double lambda, double mu, double d,
                               const std::array<double, 3>& thresholds, std::uint64_t seed) {
  constexpr int kWarmup = 10'000, kBatches = 100, kPerBatch = 9'900;  // 10^6 customers
  std::mt19937_64 rng(seed);
  const auto exponential = [&](double rate) {
    return -std::log((static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53) / rate;
  };
  std::priority_queue<double, std::vector<double>, std::greater<>> free_at;
  for (int s = 0; s < c; ++s) free_at.push(0.0);
  McdBatches out;
  double now = 0, waited = 0, timed_out = 0, wait = 0;
  std::array<double, 3> above{};
  for (int i = 0; i < kWarmup + kBatches * kPerBatch; ++i) {
    now += exponential(lambda);
    const double earliest = free_at.top();
    double w = 0;
    if (earliest <= now) {
      free_at.pop();
      free_at.push(now + exponential(mu));
    } else if (earliest - now < d) {
      w = earliest - now;
      free_at.pop();
      free_at.push(earliest + exponential(mu));
    } else {
      w = d;
      timed_out += 1;
    }
    if (w > 0) waited += 1;
    wait += w;
    for (std::size_t q = 0; q < 3; ++q) above[q] += w > thresholds[q] ? 1 : 0;
    if (i + 1 == kWarmup) waited = timed_out = wait = 0, above = {};
    if (i >= kWarmup && (i + 1 - kWarmup) % kPerBatch == 0) {
      out.waited.push_back(waited / kPerBatch);
      out.timed_out.push_back(timed_out / kPerBatch);
      out.wait.push_back(wait / kPerBatch);
      for (std::size_t q = 0; q < 3; ++q) out.above[q].push_back(above[q] / kPerBatch);
      waited = timed_out = wait = 0, above = {};
    }
  }
  return out;
}

// The true value lies in the batch-means 99.9% interval.
void expect_in_band(const std::vector<double>& batches, double exact, const std::string& what) {
  const Estimate e = student_t95(batches);
  const double n = static_cast<double>(batches.size());
  const double t999 = student_t_quantile(0.9995, n - 1);
  const double t95 = student_t_quantile(0.975, n - 1);
  const double half_width = e.half_width / t95 * t999;
  EXPECT_LE(std::fabs(e.mean - exact), half_width)
      << what << ": simulated " << e.mean << " +- " << half_width << ", exact " << exact;
}

TEST(MmcPlusD, AgreesWithSimulation) {
  // Under load (gamma > 0) and over load (gamma < 0, many time out), deadline of 1-2 holds.
  for (auto [c, lambda, d, seed] :
       {std::tuple{10, 900.0, 0.02, 11u}, {10, 1200.0, 0.01, 12u}, {3, 240.0, 0.005, 13u}}) {
    const PoolMetrics m = mmc_plus_d(c, lambda, 100, d);
    const std::array<double, 3> quantiles{*m.wait_p50_s, *m.wait_p95_s, *m.wait_p99_s};
    const McdBatches sim = simulate_mmc_plus_d(c, lambda, 100, d, quantiles, seed);
    expect_in_band(sim.waited, m.p_wait, "p_wait");
    expect_in_band(sim.timed_out, m.p_timeout, "p_timeout");
    expect_in_band(sim.wait, m.mean_wait_s, "mean wait");
    const std::array<double, 3> levels{0.50, 0.95, 0.99};
    for (std::size_t q = 0; q < 3; ++q) {
      // Inside (0, D) the tail at the q-quantile is exactly 1 - q; at the atom 0 it is
      // P(W > 0) = p_wait <= 1 - q, at the atom D the timed-out share exceeds 1 - q.
      const double t = quantiles[q];
      const std::string what = "P(W > quantile " + std::to_string(levels[q]) + ")";
      if (t == d) {  // nothing waits longer than D: only the atom can be checked
        EXPECT_GT(m.p_timeout, 1 - levels[q]);
      } else if (t == 0) {
        EXPECT_LE(m.p_wait, 1 - levels[q]);
        expect_in_band(sim.above[q], m.p_wait, what);
      } else {
        expect_in_band(sim.above[q], 1 - levels[q], what);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// QueuePool with connection set-up

TEST(OverflowChurn, InstantConnectsWithoutOverflowAreErlangC) {
  const PoolMetrics m = overflow_churn_ctmc({20, 0, 1800, 100, kInf, false, 1000});
  EXPECT_EQ(m.model, "overflow_ctmc");
  PoolMetrics want = erlang_c_pool(20, 1800, 100);
  expect_same_metrics(m, want, 1e-9);
  EXPECT_LT(m.truncation_error, 1e-40);
}

TEST(OverflowChurn, InstantConnectsBlockingWithoutOverflowAreErlangB) {
  const PoolMetrics m = overflow_churn_ctmc({20, 0, 1800, 100, kInf, true, 1000});
  expect_same_metrics(m, erlang_b_pool(20, 1800, 100), 1e-9);
  EXPECT_EQ(m.truncation_error, 0.0);
}

TEST(OverflowChurn, InstantConnectsWithOverflowServeLikePoolPlusOverflow) {
  // Which connections are idle does not change who is served: Erlang with N = 10 + 10, while
  // checkins into a full queue close connections that later requests open again.
  for (double lambda : {1000.0, 1800.0}) {
    const PoolMetrics c = erlang_c_pool(20, lambda, 100);
    const PoolMetrics waits = overflow_churn_ctmc({10, 10, lambda, 100, kInf, false, 1000});
    expect_close(waits.p_wait, c.p_wait, 1e-9, "p_wait");
    expect_close(waits.mean_wait_s, c.mean_wait_s, 1e-9, "mean wait");
    expect_close(waits.mean_in_use, c.mean_in_use, 1e-9, "in use");
    EXPECT_GT(waits.opened_per_s, 1.0);
    EXPECT_GT(waits.mean_open, waits.mean_in_use);
    EXPECT_LT(waits.mean_open, 20);

    const PoolMetrics b = erlang_b_pool(20, lambda, 100);
    const PoolMetrics blocks = overflow_churn_ctmc({10, 10, lambda, 100, kInf, true, 1000});
    expect_close(blocks.p_wait, b.p_wait, 1e-9, "p_wait");
    expect_close(blocks.p_timeout, b.p_timeout, 1e-9, "p_timeout");
    expect_close(blocks.mean_in_use, b.mean_in_use, 1e-9, "in use");
    EXPECT_GT(blocks.opened_per_s, 1.0);
  }
}

// The churn chain built from the rules of the brief, over every state reachable from the empty
// pool (levels below pool_size included: they are transient), solved by the generic CTMC.
PoolMetrics brute_force_churn(const ChurnModel& m) {
  using State = std::tuple<int, int, int, int>;  // b, i, k, w
  const int n_max = m.pool_size + m.max_overflow;
  const bool instant = std::isinf(m.connect_rate);
  std::map<State, std::size_t> index;
  std::vector<State> states;
  std::vector<Transition> transitions;
  const auto id = [&](const State& s) {
    const auto [it, added] = index.emplace(s, states.size());
    if (added) states.push_back(s);
    return it->second;
  };
  id({0, 0, 0, 0});
  for (std::size_t from = 0; from < states.size(); ++from) {
    const auto [b, i, k, w] = states[from];
    const auto go = [&](double rate, const State& to) {
      const std::size_t t = id(to);
      if (rate > 0) transitions.push_back({from, t, rate});
    };
    if (i > 0) {
      go(m.lambda, {b + 1, i - 1, k, w});
    } else if (b + k < n_max) {
      go(m.lambda, instant ? State{b + 1, 0, k, w} : State{b, 0, k + 1, w});
    } else if (!m.block_when_full && w < m.queue_cap) {
      go(m.lambda, {b, i, k, w + 1});
    }
    if (k > 0) go(k * m.connect_rate, {b + 1, i, k - 1, w});
    if (b > 0) {
      if (w > 0) {
        go(b * m.mu, {b, i, k, w - 1});
      } else if (i == m.pool_size) {
        go(b * m.mu, {b - 1, i, k, w});
      } else {
        go(b * m.mu, {b - 1, i + 1, k, w});
      }
    }
  }
  const std::vector<double> pi =
      stationary_distribution(states.size(), transitions, index.at({0, m.pool_size, 0, 0}));
  PoolMetrics out;
  double connecting = 0, waiting = 0;
  for (std::size_t s = 0; s < states.size(); ++s) {
    const auto [b, i, k, w] = states[s];
    const double p = pi[s];
    const bool full = b + k == n_max;
    if (i == 0 && (!instant || full)) out.p_wait += p;
    if (i == 0 && full && (m.block_when_full || w == m.queue_cap)) out.p_timeout += p;
    if (i == 0 && !full) out.opened_per_s += m.lambda * p;
    connecting += k * p;
    waiting += w * p;
    out.mean_in_use += b * p;
    out.mean_open += (b + i) * p;
  }
  out.mean_wait_s = (connecting + waiting) / m.lambda;
  return out;
}

TEST(OverflowChurn, AgreesWithTheFullChainSolvedByTheGenericCtmc) {
  const std::vector<ChurnModel> models{
      {3, 4, 500, 100, 50, false, 30},   // overflow used, slowish connects, waits
      {3, 4, 500, 100, 50, true, 30},    // same, timeout 0
      {1, 5, 300, 100, 20, false, 40},   // pool of one: every second checkin closes
      {5, 0, 400, 100, 10, false, 40},   // no overflow: connects only while filling up
      {2, 6, 900, 100, 1000, false, 8},  // over 8 connections' capacity: queue cap binds
      {4, 3, 350, 100, kInf, false, 25},
      {6, 6, 800, 100, 5, true, 0},         // connects five times slower than holds
      {20, 10, 2400, 100, 20, false, 200},  // 11,000 states, all levels busy
      {3, 2, 0.01, 100, 20, false, 5},      // nearly idle: probabilities down to 1e-50
      {2, 3, 3000, 100, 20, false, 60},     // six times the capacity: the queue is full
  };
  for (const ChurnModel& m : models) {
    SCOPED_TRACE(::testing::Message() << m.pool_size << "+" << m.max_overflow << " lambda "
                                      << m.lambda << " connect " << m.connect_rate);
    const PoolMetrics got = overflow_churn_ctmc(m);
    const PoolMetrics want = brute_force_churn(m);
    expect_same_metrics(got, want, 1e-10);
  }
}

TEST(OverflowChurn, FlowBalances) {
  // With timeout 0 nothing waits in the queue, so lambda x mean wait is the mean number of
  // connects under way, which Little's law also gives as opened/s x mean connect time; and a
  // granted request holds its connection 1 / mu on average.
  const ChurnModel model{10, 20, 2000, 100, 40, true, 1000};
  const PoolMetrics m = overflow_churn_ctmc(model);
  expect_close(m.mean_wait_s * model.lambda, m.opened_per_s / model.connect_rate, 1e-10,
               "connecting");
  expect_close(m.mean_in_use, model.lambda * (1 - m.p_timeout) / model.mu, 1e-10, "in use");
}

TEST(OverflowChurn, ExtremeLoadsStayFinite) {
  // Expected times in states span far more than a double (1e-3 requests/s against 100 holds/s
  // at pool size 100; a queue of 1,000 filling at twice the service rate): the solver rescales.
  for (double lambda : {1e-3, 30000.0}) {
    const ChurnModel model{100, 50, lambda, 100, 20, false, 1000};
    const PoolMetrics m = overflow_churn_ctmc(model);
    for (double x : {m.p_wait, m.p_timeout, m.mean_wait_s, m.mean_in_use, m.mean_open,
                     m.opened_per_s, m.truncation_error}) {
      EXPECT_TRUE(std::isfinite(x)) << lambda;
    }
    expect_close(m.mean_in_use, lambda * (1 - m.p_timeout) / model.mu, 1e-9, "in use");
  }
}

TEST(OverflowChurn, Pool100Overflow50Queue1000) {
  // The benchmark's model: all 150 recurrent levels, k unrestricted, queue to 1,000.
  const ChurnModel model{100, 50, 12000, 100, 20, false, 1000};
  const PoolMetrics m = overflow_churn_ctmc(model);
  std::size_t states = 0;
  for (int o = 100; o <= 150; ++o) {
    for (int k = 0; k <= o; ++k) states += static_cast<std::size_t>(std::min(o - k, 100) + 1);
  }
  states += 151 * 1000;
  EXPECT_EQ(m.states, states);
  EXPECT_LT(m.truncation_error, 1e-12);
  EXPECT_GT(m.p_wait, 0.001);
  EXPECT_LT(m.p_wait, 0.5);
  expect_close(m.mean_in_use, model.lambda * (1 - m.p_timeout) / model.mu, 1e-9, "in use");
  EXPECT_GT(m.mean_open, m.mean_in_use);
  EXPECT_LE(m.mean_open, 150);
}

TEST(OverflowChurn, QueueTruncationErrorIsTheErlangCTail) {
  // Instant connects, no overflow: the queue above the cap of the untruncated M/M/c holds
  // P(N > c + cap) = C rho^(cap + 1).
  const int c = 5, cap = 20;
  const double lambda = 450, mu = 100, rho = 0.9;
  const PoolMetrics m = overflow_churn_ctmc({c, 0, lambda, mu, kInf, false, cap});
  const double tail = erlang_c(c, lambda / mu) * std::pow(rho, cap + 1);
  expect_close(m.truncation_error, tail, 1e-9, "tail");
  // An unstable queue cannot be held at all.
  EXPECT_EQ(overflow_churn_ctmc({c, 0, 600, mu, kInf, false, cap}).truncation_error, 1.0);
}

TEST(OverflowChurn, NoArrivalsOpenNothing) {
  const PoolMetrics m = overflow_churn_ctmc({5, 5, 0, 100, 10, false, 10});
  EXPECT_EQ(m.mean_open, 0.0);
  EXPECT_EQ(m.p_wait, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Arguments

TEST(Arguments, RejectedWithClearMessages) {
  EXPECT_INVALID(erlang_b_pool(0, 1, 1), "erlang_b_pool: servers must be >= 1, not 0");
  EXPECT_INVALID(erlang_b_pool(2, -1, 1), "erlang_b_pool: lambda must be finite and >= 0");
  EXPECT_INVALID(erlang_b_pool(2, 1, 0), "erlang_b_pool: mu must be finite and > 0, not 0");
  EXPECT_INVALID(erlang_b_pool(2, 1, std::nan("")), "mu must be finite");
  EXPECT_INVALID(erlang_c_pool(20, 2000, 100),
                 "erlang_c_pool: lambda must be < servers * mu for a stable queue, not lambda = "
                 "2000 with servers * mu = 2000");
  EXPECT_INVALID(erlang_c_pool(2, kInf, 100), "lambda must be finite");
  EXPECT_INVALID(mmck_pool(5, 4, 1, 1), "mmck_pool: capacity (in the system in total) must be");
  EXPECT_INVALID(erlang_a_ctmc(5, 1, 1, -1, 10), "erlang_a_ctmc: theta");
  EXPECT_INVALID(erlang_a_ctmc(5, 1, 1, 1, -1), "erlang_a_ctmc: queue_cap must be >= 0, not -1");
  EXPECT_INVALID(mmc_plus_d(5, 1, 1, -0.5), "mmc_plus_d: deadline_s must be >= 0, not -0.5");
  EXPECT_INVALID(mmc_plus_d(5, 1, 1, std::nan("")), "deadline_s must be >= 0");
  EXPECT_INVALID(mmc_plus_d(5, 600, 100, kInf), "infinite deadline needs lambda < servers * mu");
  EXPECT_INVALID(overflow_churn_ctmc({0, 5, 1, 1, 1, false, 10}),
                 "overflow_churn_ctmc: pool_size must be >= 1");
  EXPECT_INVALID(overflow_churn_ctmc({5, -1, 1, 1, 1, false, 10}), "max_overflow must be >= 0");
  EXPECT_INVALID(overflow_churn_ctmc({5, 1, 1, 1, 0, false, 10}),
                 "connect_rate must be > 0 or +infinity, not 0");
  EXPECT_INVALID(overflow_churn_ctmc({5, 1, 1, 1, 1, false, -2}), "queue_cap must be >= 0");
  EXPECT_INVALID(overflow_churn_ctmc({5, 1, 1, -1, 1, false, 2}), "mu must be finite and > 0");
}

}  // namespace
}  // namespace poolsim::sim
