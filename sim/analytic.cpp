// Exact queueing results for `poolsim analytic` and `poolsim size`.
//
// Notation: c servers (connections), arrival rate lambda, hold rate mu, a = lambda / mu erlangs,
// gamma = c mu - lambda, B(n, a) the Erlang B recursion of sim/stats.hpp. PASTA (Poisson
// arrivals see time averages) turns every state probability into a share of requests, and
// Little's law turns a mean number waiting Lq into a mean wait Lq / lambda over ALL requests
// (a request that fails at once contributes 0, one that abandons its time until abandonment).
//
// erlang_b    M/M/c/c. p_wait = p_timeout = B(c, a); no wait; in use a (1 - B). Erlang (1917);
//             Kleinrock, Queueing Systems vol. 1 (1975) ch. 3.
// erlang_c    M/M/c. C = c B / (c - a (1 - B)); P(W > t) = C exp(-gamma t), so the mean wait is
//             C / gamma and the q-quantile is ln(C / (1 - q)) / gamma when q > 1 - C, else 0.
//             Kleinrock ch. 3; Gross, Shortle, Thompson & Harris, Fundamentals of Queueing
//             Theory (4th ed., 2008) ch. 2.
// mmck        M/M/c/K. p_n proportional to a^n / n! (n <= c) and a^c / c! (a / c)^(n - c)
//             (c < n <= K); blocked p_K; an admitted arrival that finds n >= c waits an
//             Erlang(n - c + 1, c mu) time, so P(W > t) = sum_{n=c}^{K-1} p_n
//             P(Erlang(n - c + 1, c mu) > t), inverted by bisection. Gross et al. ch. 2.
// erlang_a    M/M/c+M: the birth-death chain with death rate min(n, c) mu + (n - c)^+ theta,
//             truncated at c + queue_cap, solved by stationary_distribution (Eigen SparseLU), which
//             is how this file's CTMC machinery is checked against the closed forms.
//             P(abandon) = theta Lq / lambda. Palm (1943); Garnett, Mandelbaum & Reiman,
//             "Designing a call center with impatient customers", M&SOM 4 (2002). The tail above
//             the truncation is summed from the product form (ratios lambda / (c mu + j theta)).
// mmc_plus_d  M/M/c+D: FIFO, every waiter leaves after exactly D (SQLAlchemy's pool_timeout).
//             Level crossing on the offered (virtual) waiting time V (Brill & Posner 1977): with
//             all c busy, V falls at rate 1 and an arrival that will be served (V < D) adds an
//             Exp(c mu) amount, so its density is
//               f(v) = lambda p_{c-1} exp(-gamma v)                      on (0, D),
//               f(v) = lambda p_{c-1} exp(-gamma D) exp(-c mu (v - D))   on [D, inf),
//             with p_n proportional to a^n / n! for n < c, i.e. sum_{n<c} p_n = p_{c-1} /
//             B(c-1, a). Hence, with J = (1 - exp(-gamma D)) / gamma + exp(-gamma D) / (c mu),
//               P(W > 0)  = lambda J / (1 / B(c-1, a) + lambda J),
//               P(abandon) = lambda exp(-gamma D) / (c mu) / (1 / B(c-1, a) + lambda J),
//             the wait of a request is min(V, D), and its quantiles invert
//             P(W > t) = lambda p_{c-1} [(exp(-gamma t) - exp(-gamma D)) / gamma
//             + exp(-gamma D) / (c mu)]. This is Zeltyn & Mandelbaum, "Call centers with impatient
//             customers: many-server asymptotics of the M/M/n+G queue", Queueing Systems 51 (2005),
//             with G the point mass at D (their E = 1 / B(c-1, a) and J); see also Baccelli &
//             Hebuterne (1981). D = 0 gives Erlang B, D -> infinity Erlang C. The code anchors the
//             exponentials at v = 0 or v = D, whichever keeps them <= 1, so no term overflows.
// overflow_ctmc  SQLAlchemy's QueuePool with exponential connects, state (b busy, i idle,
//             k connecting, w waiting), transitions as in the comment on ChurnSolver below.
//             p_wait = P(i = 0) (instant connects: P(i = 0 and b = N)), opened/s =
//             lambda P(i = 0, b + k < N), mean wait = (E k + E w) / lambda (Little: every
//             connecting request waits for its own connect), open = E(b + i), in use = E b.
//             Solved exactly by level reduction (below); only the queue is truncated.
#include "sim/analytic.hpp"

// Eigen's own headers do not build warning-free under -Wconversion -Wshadow; they are third-party
// code, so their warnings are silenced here rather than relaxing the flags for this file.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wpedantic"
#include <Eigen/Sparse>
#include <Eigen/SparseLU>
#pragma GCC diagnostic pop
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sim/stats.hpp"

namespace poolsim::sim {
namespace {

constexpr std::array<double, 3> kQuantiles{0.50, 0.95, 0.99};
constexpr double kInfinity = std::numeric_limits<double>::infinity();
// Vectors of relative probabilities or expected times are scaled down when an entry passes this,
// so that long products of rate ratios do not overflow before normalisation.
constexpr double kRescaleAbove = 1e200;

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.10g", value);
  return text;
}

[[noreturn]] void invalid(const char* function, const std::string& message) {
  throw std::invalid_argument(std::string(function) + ": " + message);
}

void require_servers(const char* function, int servers) {
  if (servers < 1) invalid(function, "servers must be >= 1, not " + std::to_string(servers));
}

void require_lambda_mu(const char* function, double lambda, double mu) {
  if (!(lambda >= 0 && std::isfinite(lambda))) {
    invalid(function, "lambda must be finite and >= 0, not " + number(lambda));
  }
  if (!(mu > 0 && std::isfinite(mu))) {
    invalid(function, "mu must be finite and > 0, not " + number(mu));
  }
}

void set_quantiles(PoolMetrics& m, const std::array<double, 3>& values) {
  m.wait_p50_s = values[0];
  m.wait_p95_s = values[1];
  m.wait_p99_s = values[2];
}

// The stationary distribution of a birth-death chain on 0..n_max from the product form
// p_{n+1} / p_n = birth(n) / death(n + 1), rescaled on the way so that nothing overflows.
template <typename Birth, typename Death>
std::vector<double> birth_death_distribution(std::size_t n_max, Birth birth, Death death) {
  std::vector<double> p(n_max + 1, 0.0);
  p[0] = 1.0;
  for (std::size_t n = 0; n < n_max; ++n) {
    p[n + 1] = p[n] * birth(n) / death(n + 1);
    if (p[n + 1] > kRescaleAbove) {
      for (std::size_t j = 0; j <= n + 1; ++j) p[j] /= kRescaleAbove;
    }
  }
  double total = 0;
  for (double x : p) total += x;
  for (double& x : p) x /= total;
  return p;
}

// The nearest-rank-style q-quantile of a wait W >= 0 whose tail P(W > t) is continuous and
// decreasing on (0, inf): 0 when P(W > 0) <= 1 - q, else the t with P(W > t) = 1 - q, found by
// bisection to double precision.
template <typename Tail>
double invert_tail(Tail tail, double q, double time_scale) {
  const double target = 1.0 - q;
  if (tail(0.0) <= target) return 0.0;
  double low = 0.0;
  double high = time_scale;
  for (int i = 0; i < 2000 && tail(high) > target; ++i) {
    low = high;
    high *= 2.0;
  }
  for (int i = 0; i < 200 && high - low > 1e-15 * high; ++i) {
    const double mid = 0.5 * (low + high);
    (tail(mid) > target ? low : high) = mid;
  }
  return high;
}

// Poisson probability e^-x x^j / j!, in logarithms so that large x neither under- nor overflows.
double poisson_pmf(int j, double x) {
  if (x == 0) return j == 0 ? 1.0 : 0.0;
  return std::exp(-x + j * std::log(x) - std::lgamma(j + 1.0));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Generic CTMC

std::vector<double> stationary_distribution(std::size_t states,
                                            const std::vector<Transition>& transitions,
                                            std::size_t reference_hint) {
  constexpr const char* kFunction = "stationary_distribution";
  if (states == 0) invalid(kFunction, "the chain needs at least one state");
  if (reference_hint >= states) {
    invalid(kFunction, "reference_hint " + std::to_string(reference_hint) + " is not a state");
  }
  std::vector<double> out_rate(states, 0.0);
  for (const Transition& t : transitions) {
    if (t.from >= states || t.to >= states) {
      invalid(kFunction, "transition " + std::to_string(t.from) + " -> " + std::to_string(t.to) +
                             " leaves the " + std::to_string(states) + " states");
    }
    if (!(t.rate > 0 && std::isfinite(t.rate))) {
      invalid(kFunction, "transition rates must be finite and > 0, not " + number(t.rate));
    }
    if (t.from != t.to) out_rate[t.from] += t.rate;
  }

  // pi Q = 0 is Q^T pi^T = 0. The balance equation of one recurrent state (the reference) is
  // implied by the others, so it is replaced by pi_ref = 1; the rest stays as sparse as Q, which
  // a dense normalisation row would not. Normalising afterwards gives pi. A reference with
  // little mass makes the system nearly singular (a pivot can cancel to exactly 0), so a failed
  // solve is retried with the dense row sum(pi) = 1, and any solve whose heaviest state is far
  // heavier than its reference is repeated relative to that state.
  constexpr std::size_t kNormalisationRow = std::numeric_limits<std::size_t>::max();
  const auto solve = [&](std::size_t reference) -> std::optional<std::vector<double>> {
    using Index = Eigen::Index;
    const bool dense_row = reference == kNormalisationRow;
    const std::size_t replaced = dense_row ? 0 : reference;
    std::vector<Eigen::Triplet<double, Index>> entries;
    entries.reserve(transitions.size() + 2 * states);
    for (const Transition& t : transitions) {
      if (t.from != t.to && t.to != replaced) {
        entries.emplace_back(static_cast<Index>(t.to), static_cast<Index>(t.from), t.rate);
      }
    }
    for (std::size_t s = 0; s < states; ++s) {
      if (s != replaced) {
        entries.emplace_back(static_cast<Index>(s), static_cast<Index>(s), -out_rate[s]);
      }
      if (s == replaced || dense_row) {
        entries.emplace_back(static_cast<Index>(replaced), static_cast<Index>(s), 1.0);
      }
    }
    Eigen::SparseMatrix<double> matrix(static_cast<Index>(states), static_cast<Index>(states));
    matrix.setFromTriplets(entries.begin(), entries.end());
    matrix.makeCompressed();
    Eigen::SparseLU<Eigen::SparseMatrix<double>, Eigen::COLAMDOrdering<int>> lu;
    lu.compute(matrix);
    if (lu.info() != Eigen::Success) return std::nullopt;
    Eigen::VectorXd rhs = Eigen::VectorXd::Zero(static_cast<Index>(states));
    rhs[static_cast<Index>(replaced)] = 1.0;
    const Eigen::VectorXd x = lu.solve(rhs);
    std::vector<double> solution(x.data(), x.data() + x.size());
    for (double value : solution) {
      if (!std::isfinite(value)) return std::nullopt;
    }
    return solution;
  };
  const auto heaviest_of = [](const std::vector<double>& x) {
    return static_cast<std::size_t>(
        std::max_element(x.begin(), x.end(),
                         [](double p, double q) { return std::fabs(p) < std::fabs(q); }) -
        x.begin());
  };

  std::optional<std::vector<double>> solved = solve(reference_hint);
  std::size_t reference = reference_hint;
  if (!solved) {
    solved = solve(kNormalisationRow);
    reference = kNormalisationRow;
  }
  if (!solved) {
    throw std::runtime_error(std::string(kFunction) +
                             ": the linear system is singular; does the chain have exactly one "
                             "recurrent class?");
  }
  std::vector<double> pi = std::move(*solved);
  const std::size_t heaviest = heaviest_of(pi);
  const double reference_mass = reference == kNormalisationRow ? 0.0 : std::fabs(pi[reference]);
  if (heaviest != reference && std::fabs(pi[heaviest]) > 1e3 * reference_mass) {
    if (auto again = solve(heaviest)) pi = std::move(*again);
  }

  double total = 0;
  for (double& x : pi) {
    x = std::max(x, 0.0);  // rounding leaves entries of order -1e-17 where the mass is 0
    total += x;
  }
  for (double& x : pi) x /= total;
  return pi;
}

// ---------------------------------------------------------------------------------------------
// Closed forms

PoolMetrics erlang_b_pool(int servers, double lambda, double mu) {
  constexpr const char* kFunction = "erlang_b_pool";
  require_servers(kFunction, servers);
  require_lambda_mu(kFunction, lambda, mu);
  const double a = lambda / mu;
  const double blocking = erlang_b(servers, a);
  PoolMetrics m;
  m.model = "erlang_b";
  m.p_wait = blocking;
  m.p_timeout = blocking;
  set_quantiles(m, {0.0, 0.0, 0.0});
  m.mean_in_use = a * (1.0 - blocking);
  m.mean_open = servers;
  return m;
}

PoolMetrics erlang_c_pool(int servers, double lambda, double mu) {
  constexpr const char* kFunction = "erlang_c_pool";
  require_servers(kFunction, servers);
  require_lambda_mu(kFunction, lambda, mu);
  const double capacity = servers * mu;
  if (!(lambda < capacity)) {
    invalid(kFunction, "lambda must be < servers * mu for a stable queue, not lambda = " +
                           number(lambda) + " with servers * mu = " + number(capacity));
  }
  const double a = lambda / mu;
  const double gamma = capacity - lambda;
  const double c = erlang_c(servers, a);
  PoolMetrics m;
  m.model = "erlang_c";
  m.p_wait = c;
  m.mean_wait_s = c / gamma;
  std::array<double, 3> quantiles{};
  for (std::size_t j = 0; j < kQuantiles.size(); ++j) {
    const double tail = 1.0 - kQuantiles[j];
    quantiles[j] = c <= tail ? 0.0 : std::log(c / tail) / gamma;
  }
  set_quantiles(m, quantiles);
  m.mean_in_use = a;
  m.mean_open = servers;
  return m;
}

PoolMetrics mmck_pool(int servers, int capacity, double lambda, double mu) {
  constexpr const char* kFunction = "mmck_pool";
  require_servers(kFunction, servers);
  require_lambda_mu(kFunction, lambda, mu);
  if (capacity < servers) {
    invalid(kFunction, "capacity (in the system in total) must be >= servers = " +
                           std::to_string(servers) + ", not " + std::to_string(capacity));
  }
  const double service = servers * mu;
  const auto n_max = static_cast<std::size_t>(capacity);
  const auto c = static_cast<std::size_t>(servers);
  const std::vector<double> p = birth_death_distribution(
      n_max, [&](std::size_t) { return lambda; },
      [&](std::size_t n) { return static_cast<double>(std::min(n, c)) * mu; });

  PoolMetrics m;
  m.model = "mmck";
  double queue = 0;
  for (std::size_t n = 0; n <= n_max; ++n) {
    if (n >= c) m.p_wait += p[n];
    queue += static_cast<double>(n > c ? n - c : 0) * p[n];
    m.mean_in_use += static_cast<double>(std::min(n, c)) * p[n];
  }
  m.p_timeout = p[n_max];
  m.mean_wait_s = lambda > 0 ? queue / lambda : 0.0;
  m.mean_open = servers;

  // tail_from[j] = P(an arrival finds c + j .. K - 1 in the system): it waits for j + 1 or more
  // departures at rate c mu.
  const std::size_t waiting_levels = n_max - c;
  std::vector<double> tail_from(waiting_levels + 1, 0.0);
  for (std::size_t j = waiting_levels; j-- > 0;) tail_from[j] = tail_from[j + 1] + p[c + j];
  const auto wait_tail = [&](double t) {
    double sum = 0;
    for (std::size_t j = 0; j < waiting_levels; ++j) {
      sum += poisson_pmf(static_cast<int>(j), service * t) * tail_from[j];
    }
    return sum;
  };
  std::array<double, 3> quantiles{};
  for (std::size_t j = 0; j < kQuantiles.size(); ++j) {
    quantiles[j] = invert_tail(wait_tail, kQuantiles[j], 1.0 / service);
  }
  set_quantiles(m, quantiles);
  return m;
}

PoolMetrics erlang_a_ctmc(int servers, double lambda, double mu, double theta, int queue_cap) {
  constexpr const char* kFunction = "erlang_a_ctmc";
  require_servers(kFunction, servers);
  require_lambda_mu(kFunction, lambda, mu);
  if (!(theta >= 0 && std::isfinite(theta))) {
    invalid(kFunction, "theta (abandonment rate) must be finite and >= 0, not " + number(theta));
  }
  if (queue_cap < 0) invalid(kFunction, "queue_cap must be >= 0, not " + std::to_string(queue_cap));
  const auto c = static_cast<std::size_t>(servers);
  const std::size_t top = c + static_cast<std::size_t>(queue_cap);
  const auto death = [&](std::size_t n) {
    return static_cast<double>(std::min(n, c)) * mu +
           static_cast<double>(n > c ? n - c : 0) * theta;
  };

  std::vector<Transition> transitions;
  transitions.reserve(2 * top);
  for (std::size_t n = 0; n < top; ++n) {
    if (lambda > 0) transitions.push_back({n, n + 1, lambda});
    transitions.push_back({n + 1, n, death(n + 1)});
  }
  // The mode of the product form is near the fluid point where births and deaths balance.
  std::size_t hint = 0;
  while (hint < top && death(hint + 1) < lambda) ++hint;
  const std::vector<double> pi = stationary_distribution(top + 1, transitions, hint);

  PoolMetrics m;
  m.model = "erlang_a";
  m.states = top + 1;
  double queue = 0;
  for (std::size_t n = 0; n <= top; ++n) {
    if (n >= c) m.p_wait += pi[n];
    queue += static_cast<double>(n > c ? n - c : 0) * pi[n];
    m.mean_in_use += static_cast<double>(std::min(n, c)) * pi[n];
  }
  if (lambda > 0) {
    m.p_timeout = theta * queue / lambda + pi[top];
    m.mean_wait_s = queue / lambda;
  }
  m.mean_open = servers;

  // Mass above the truncation in the untruncated chain, relative to the mass below: continue the
  // product form from pi[top] until the terms no longer matter. The ratios fall with n, so a
  // ratio >= 1 that lasts 10^7 terms means the truncation holds almost nothing; the value is
  // then a lower bound, already close to 1.
  if (lambda > 0) {
    double term = pi[top];
    double above = 0;
    for (std::size_t n = top + 1; n <= top + 10'000'000 && term > 0; ++n) {
      const double ratio = lambda / death(n);
      term *= ratio;
      above += term;
      if (ratio < 1 && term <= 1e-18 * above * (1 - ratio)) break;
      if (ratio >= 1 && theta == 0) {  // the plain M/M/c queue is unstable: nothing is held
        above = kInfinity;
        break;
      }
    }
    m.truncation_error = std::isinf(above) ? 1.0 : above / (1.0 + above);
  }
  return m;
}

namespace {

// The integrals of exp(-x s) and s exp(-x s) over s in (0, 1), for x >= 0, without cancellation.
double integral_exp(double x) { return x == 0 ? 1.0 : -std::expm1(-x) / x; }
double integral_s_exp(double x) {
  if (x < 0.5) {  // sum_k (-x)^k / (k! (k + 2)): 25 terms are exact to rounding for x < 0.5
    double sum = 0;
    double power = 1;  // (-x)^k / k!
    for (int k = 0; k < 25; ++k) {
      sum += power / (k + 2);
      power *= -x / (k + 1);
    }
    return sum;
  }
  return (-std::expm1(-x) - x * std::exp(-x)) / (x * x);
}

}  // namespace

PoolMetrics mmc_plus_d(int servers, double lambda, double mu, double deadline_s) {
  constexpr const char* kFunction = "mmc_plus_d";
  require_servers(kFunction, servers);
  require_lambda_mu(kFunction, lambda, mu);
  if (!(deadline_s >= 0)) {  // also rejects NaN; +infinity is allowed
    invalid(kFunction, "deadline_s must be >= 0, not " + number(deadline_s));
  }
  const double service = servers * mu;  // c mu
  const double gamma = service - lambda;
  if (std::isinf(deadline_s)) {
    if (!(gamma > 0)) {
      invalid(kFunction,
              "an infinite deadline needs lambda < servers * mu for a stable queue, not lambda = " +
                  number(lambda) + " with servers * mu = " + number(service));
    }
    PoolMetrics m = erlang_c_pool(servers, lambda, mu);
    m.model = "mmc_plus_d";
    return m;
  }
  const double d = deadline_s;
  const double a = lambda / mu;
  // f(v) = scale * exp(-gamma (v - anchor)) on (0, D), anchor = 0 if gamma >= 0 else D, so that
  // the exponential is <= 1 throughout. x = |gamma| D.
  const double x = std::fabs(gamma) * d;
  const double mass_below = d * integral_exp(x);  // integral over (0, D) / scale
  double first_moment;                            // integral of v f(v) over (0, D) / scale
  double density_at_d;                            // f(D) / scale
  double density_at_0;                            // f(0+) / scale = lambda p_{c-1} / scale
  if (gamma >= 0) {
    first_moment = d * d * integral_s_exp(x);
    density_at_d = std::exp(-x);
    density_at_0 = 1.0;
  } else {
    first_moment = d * mass_below - d * d * integral_s_exp(x);
    density_at_d = 1.0;
    density_at_0 = std::exp(-x);
  }
  const double mass_above = density_at_d / service;  // P(V >= D) / scale
  // sum_{n<c} p_n = p_{c-1} / B(c-1, a) = density_at_0 scale / (lambda B(c-1, a)); multiplying
  // the normalisation through by lambda B keeps it finite when B underflows to 0.
  const double lambda_b = lambda * erlang_b(servers - 1, a);
  const double scale = lambda_b / (density_at_0 + lambda_b * (mass_below + mass_above));

  PoolMetrics m;
  m.model = "mmc_plus_d";
  m.p_wait = scale * (mass_below + mass_above);
  m.p_timeout = scale * mass_above;
  m.mean_wait_s = scale * (first_moment + d * mass_above);
  m.mean_in_use = a * (1.0 - m.p_timeout);
  m.mean_open = servers;

  std::array<double, 3> quantiles{};
  for (std::size_t j = 0; j < kQuantiles.size(); ++j) {
    const double tail = 1.0 - kQuantiles[j];
    if (m.p_wait <= tail) {
      quantiles[j] = 0.0;
    } else if (m.p_timeout > tail) {
      quantiles[j] = d;  // the atom of timed-out requests at D covers the quantile
    } else {
      // P(W > t) = scale (integral of f over (t, D) + mass_above) = tail.
      const double r = std::clamp(tail / scale - mass_above, 0.0, mass_below);
      double t;
      if (gamma == 0) {
        t = d - r;
      } else if (gamma > 0) {
        t = gamma * d <= 1 ? d - std::log1p(gamma * r * std::exp(gamma * d)) / gamma
                           : -std::log(gamma * r + std::exp(-gamma * d)) / gamma;
      } else {
        t = d + std::log1p(-std::fabs(gamma) * r) / std::fabs(gamma);
      }
      quantiles[j] = std::clamp(t, 0.0, d);
    }
  }
  set_quantiles(m, quantiles);
  return m;
}

// ---------------------------------------------------------------------------------------------
// QueuePool with connection set-up

namespace {

// The chain of ChurnModel, with N = pool_size + max_overflow and o = b + i + k the connections
// open or opening (SQLAlchemy's overflow + pool_size, queuepool_spec.md section 3):
//
//   arrival (lambda)    i > 0: b+1, i-1 | else o < N: k+1 (connects; instant: b+1) |
//                       else w+1 (or lost if block_when_full, or w = queue_cap)
//   connect (k alpha)   k-1, b+1
//   checkin (b mu)      w > 0: w-1 (the oldest waiter gets it) | else i = P: b-1 (closed) |
//                       else b-1, i+1
//
// Structure used to solve it exactly:
//  * o falls only by a close (i = P) and rises only by a connect start (i = 0), so o >= P once
//    reached: levels o < P are transient and left out; levels P..N remain.
//  * Inside level o, k never rises, so for each k the states form one birth-death path over
//    v = b (then the waiters at level N: v = N - k + w), and a connect completion moves
//    (k, v) to (k-1, v+1). A linear solve with the level's generator is therefore one
//    tridiagonal sweep per path, paths in order of k: O(states).
//  * Levels talk only through Z_o (i = 0: an arrival goes up to Z_{o+1}) and F_o (i = P: a close
//    goes down to F_{o-1}), o + 1 and o - P + 1 states (one each with instant connects).
//
// Level reduction (Gaver, Jacobs & Latouche, Adv. Appl. Prob. 16, 1984), top down: censoring out
// the levels above o (Meyer, SIAM Review 31, 1989) adds to level o the rates G_o[z][f] = lambda
// P(the excursion up from z comes back to f). Writing T_o for minus the level's own generator,
// the censored level is T_o - S_Z' G_o S_F, a low-rank change handled by the Woodbury identity
// with one f x f system (I - W), W = (T^-1)_{FZ} G. Bottom up, pi_P is e_{all idle} T_P^-1 (every
// excursion returns there) and pi_o solves pi_o (T_o - S_Z' G_o S_F) = lambda pi_{o-1} on Z.
// Every pivot is computed as in GTH (Grassmann, Taksar & Heyman, Oper. Res. 33, 1985), from
// sums of non-negative rates and never by subtraction (I - W is never formed: its diagonal is
// the probability of leaving by a close), and every right-hand side is non-negative, so nothing
// cancels: tiny probabilities keep their relative accuracy and levels that are almost never
// left (closes once a year) stay well conditioned.
//
// Cost: two tridiagonal sweeps per F state and level plus an f x f elimination per level, where
// f <= max_overflow + 1: 0.12 s for pool 100 + overflow 50 with a 1,000-deep queue (542,476
// states, see tests/bench/analytic_bench.cpp), against about 2 s for Eigen's SparseLU on the
// same states.
class ChurnSolver {
 public:
  explicit ChurnSolver(const ChurnModel& m)
      : pool_(m.pool_size),
        top_(m.pool_size + m.max_overflow),
        lambda_(m.lambda),
        mu_(m.mu),
        alpha_(m.connect_rate),
        instant_(std::isinf(m.connect_rate)),
        block_(m.block_when_full),
        cap_(m.block_when_full ? 0 : m.queue_cap) {}

  PoolMetrics solve();

 private:
  // One level o: paths k = 0..paths-1; path k holds v = v_lo[k], v_lo[k] + 1, ... at state
  // indices offset[k] .. offset[k+1] - 1.
  struct Level {
    int o = 0;
    std::vector<int> v_lo;
    std::vector<std::size_t> offset;  // paths + 1 entries
    std::vector<double> back;         // rate v -> v-1 on the path
    std::vector<double> forward;      // rate v -> v+1 on the path
    std::vector<double> inv_pivot;    // 1 / GTH pivot of the path's tridiagonal elimination
    std::vector<double> close_rate;   // rate of closes (to level o-1), 0 off F
    int paths() const { return static_cast<int>(v_lo.size()); }
    std::size_t size() const { return offset.back(); }
    std::size_t at(int k, int v) const {
      return offset[static_cast<std::size_t>(k)] +
             static_cast<std::size_t>(v - v_lo[static_cast<std::size_t>(k)]);
    }
  };
  // I - W after GTH elimination: multipliers below the diagonal, the reduced W above it, pivots.
  struct SmallSystem {
    std::size_t n = 0;
    std::vector<double> a;  // n x n, row-major
    std::vector<double> pivot;
  };

  Level build(int o) const;
  int z_count(int o) const { return instant_ ? 1 : o + 1; }
  int f_count(int o) const { return instant_ ? 1 : o - pool_ + 1; }
  // Z_o[z] (i = 0, no waiter) and F_o[f] (i = P) as state indices of level L.
  std::size_t z_state(const Level& L, int z) const { return L.at(z, L.o - z); }
  std::size_t f_state(const Level& L, int f) const { return L.at(f, L.o - pool_ - f); }
  // Z_{o-1}[z] goes up to Z_o[up(z)].
  int up(int z) const { return instant_ ? 0 : z + 1; }
  double connect(int k) const { return instant_ ? 0.0 : k * alpha_; }

  // x <- x T^-1 (a row vector: x is the right-hand side on entry), starting at path k_top, up
  // to the factor exp(returned value) (see the definition).
  double row_solve(const Level& L, std::vector<double>& x, int k_top) const;
  // y <- T^-1 y (a column vector), starting at path k_bottom.
  void column_solve(const Level& L, std::vector<double>& y, int k_bottom) const;

  static SmallSystem factor(std::vector<double> w, std::vector<double> slack, std::size_t n);
  static void solve_column(const SmallSystem& s, std::vector<double>& b);
  static void solve_row(const SmallSystem& s, std::vector<double>& v);

  PoolMetrics single_level();
  PoolMetrics metrics(const std::vector<std::vector<double>>& pi,
                      const std::vector<double>& log_scale, const std::vector<Level>& levels) const;

  int pool_, top_;
  double lambda_, mu_, alpha_;
  bool instant_, block_;
  int cap_;
};

ChurnSolver::Level ChurnSolver::build(int o) const {
  Level L;
  L.o = o;
  const int paths = instant_ ? 1 : o + 1;
  const int waiting = o == top_ ? cap_ : 0;
  L.offset.push_back(0);
  for (int k = 0; k < paths; ++k) {
    const int v_lo = std::max(0, o - pool_ - k);
    const int v_top = o - k;  // i = 0
    L.v_lo.push_back(v_lo);
    L.offset.push_back(L.offset.back() + static_cast<std::size_t>(v_top - v_lo + 1 + waiting));
  }
  const std::size_t n = L.size();
  L.back.assign(n, 0.0);
  L.forward.assign(n, 0.0);
  L.inv_pivot.assign(n, 0.0);
  L.close_rate.assign(n, 0.0);
  const bool queue_at_top = o == top_ && !block_ && cap_ > 0;
  for (int k = 0; k < paths; ++k) {
    const int v_lo = L.v_lo[static_cast<std::size_t>(k)];
    const int v_top = o - k;
    double exit_prev = 0;   // GTH: effective exit rate of the previous position
    double pivot_prev = 1;  // and its pivot
    for (int v = v_lo; v <= v_top + waiting; ++v) {
      const std::size_t s = L.at(k, v);
      double exit = connect(k);
      if (v <= v_top) {
        const int idle = o - k - v;
        if (idle > 0) {
          L.forward[s] = lambda_;
        } else if (o < top_) {
          exit += lambda_;  // starts a connect: up to level o + 1
        } else if (queue_at_top) {
          L.forward[s] = lambda_;  // the first waiter
        }
        if (idle == pool_) {
          L.close_rate[s] = v * mu_;
          exit += L.close_rate[s];
        } else {
          L.back[s] = v * mu_;
        }
      } else {
        const int w = v - v_top;
        L.back[s] = (top_ - k) * mu_;  // a checkin goes to the oldest waiter
        if (w < cap_) L.forward[s] = lambda_;
      }
      // GTH on the path: once v_lo .. v-1 are eliminated, a step back from v comes back to v or
      // leaves, so v's effective exit is E = exit + back E_prev / pivot_prev and its pivot is
      // E + forward: T_vv - back forward_prev / pivot_prev, computed without the subtraction.
      const double effective_exit = exit + (v > v_lo ? L.back[s] * exit_prev / pivot_prev : 0.0);
      double pivot = effective_exit + L.forward[s];
      // Only a path with no exit at all has a zero pivot; that is the single level P = N,
      // which single_level() solves instead. Underflow of a tiny exit is kept positive.
      pivot = std::max(pivot, std::numeric_limits<double>::min());
      L.inv_pivot[s] = 1.0 / pivot;
      exit_prev = effective_exit;
      pivot_prev = pivot;
    }
  }
  return L;
}

// Balance of state (k, v): x T_vv - x_{v-1} forward_{v-1} - x_{v+1} back_{v+1}
// - x_{k+1, v-1} (k+1) alpha = rhs. Paths from the top k down; on a path, forward elimination
// then back substitution with the GTH pivots.
//
// x holds expected times in states, which can exceed any double (from all idle at level P with
// lambda << mu, or deep in a queue that fills up): whenever the next product would pass
// kRescaleAbove, the whole vector (solved entries and pending right-hand side alike, since all
// are linear in the right-hand side) is multiplied by 1 / kRescaleAbove. The return value is the
// logarithm of the factor that restores the true solution.
double ChurnSolver::row_solve(const Level& L, std::vector<double>& x, int k_top) const {
  double log_factor = 0;
  const auto product = [&](double value, double multiplier) {
    while (!(value * multiplier <= kRescaleAbove)) {  // also true when the product is infinite
      for (double& entry : x) entry /= kRescaleAbove;
      value /= kRescaleAbove;
      log_factor += std::log(kRescaleAbove);
    }
    return value * multiplier;
  };
  for (int k = std::min(k_top, L.paths() - 1); k >= 0; --k) {
    const auto kk = static_cast<std::size_t>(k);
    const std::size_t begin = L.offset[kk];
    const std::size_t end = L.offset[kk + 1];
    if (k + 1 < L.paths()) {
      const int v_lo = L.v_lo[kk];
      const double rate = connect(k + 1);
      const int above_lo = L.v_lo[kk + 1];
      for (std::size_t s = begin; s < end; ++s) {
        const int v = v_lo + static_cast<int>(s - begin);
        if (v - 1 >= above_lo) x[s] += rate * x[L.at(k + 1, v - 1)];
      }
    }
    // forward / pivot <= 1 here, so this part only ever adds up right-hand sides.
    for (std::size_t s = begin + 1; s < end; ++s) {
      x[s] += L.forward[s - 1] * x[s - 1] * L.inv_pivot[s - 1];
    }
    x[end - 1] = product(x[end - 1], L.inv_pivot[end - 1]);
    for (std::size_t s = end - 1; s-- > begin;) {
      x[s] = product(x[s] + L.back[s + 1] * x[s + 1], L.inv_pivot[s]);
    }
  }
  return log_factor;
}

// Row (k, v) of T y = rhs: y T_vv - back_v y_{v-1} - forward_v y_{v+1} - k alpha y_{k-1, v+1}.
void ChurnSolver::column_solve(const Level& L, std::vector<double>& y, int k_bottom) const {
  for (int k = std::max(k_bottom, 0); k < L.paths(); ++k) {
    const auto kk = static_cast<std::size_t>(k);
    const std::size_t begin = L.offset[kk];
    const std::size_t end = L.offset[kk + 1];
    if (k > 0) {
      const int v_lo = L.v_lo[kk];
      const double rate = connect(k);
      for (std::size_t s = begin; s < end; ++s) {
        const int v = v_lo + static_cast<int>(s - begin);
        y[s] += rate * y[L.at(k - 1, v + 1)];
      }
    }
    for (std::size_t s = begin + 1; s < end; ++s) {
      y[s] += L.back[s] * y[s - 1] * L.inv_pivot[s - 1];
    }
    y[end - 1] *= L.inv_pivot[end - 1];
    for (std::size_t s = end - 1; s-- > begin;) {
      y[s] = (y[s] + L.forward[s] * y[s + 1]) * L.inv_pivot[s];
    }
  }
}

// GTH elimination of the M-matrix I - W, given W >= 0 (diagonal ignored) and the row slack
// s_t = 1 - sum_t' W[t][t'] >= 0 computed independently. Each pivot is the slack plus the
// remaining off-diagonal row sum, and the slack of later rows grows by l * slack_pivot.
ChurnSolver::SmallSystem ChurnSolver::factor(std::vector<double> w, std::vector<double> slack,
                                             std::size_t n) {
  SmallSystem s;
  s.n = n;
  s.pivot.assign(n, 0.0);
  for (std::size_t p = 0; p < n; ++p) {
    double pivot = slack[p];
    for (std::size_t j = p + 1; j < n; ++j) pivot += w[p * n + j];
    pivot = std::max(pivot, std::numeric_limits<double>::min());
    s.pivot[p] = pivot;
    for (std::size_t i = p + 1; i < n; ++i) {
      const double l = w[i * n + p] / pivot;
      w[i * n + p] = l;
      if (l == 0) continue;
      for (std::size_t j = p + 1; j < n; ++j) {
        if (j != i) w[i * n + j] += l * w[p * n + j];
      }
      slack[i] += l * slack[p];
    }
  }
  s.a = std::move(w);
  return s;
}

// (I - W) y = b.
void ChurnSolver::solve_column(const SmallSystem& s, std::vector<double>& b) {
  const std::size_t n = s.n;
  for (std::size_t p = 0; p < n; ++p) {
    for (std::size_t i = p + 1; i < n; ++i) b[i] += s.a[i * n + p] * b[p];
  }
  for (std::size_t p = n; p-- > 0;) {
    double sum = b[p];
    for (std::size_t j = p + 1; j < n; ++j) sum += s.a[p * n + j] * b[j];
    b[p] = sum / s.pivot[p];
  }
}

// u (I - W) = v, with I - W = L U: w U = v forward, then u L = w backward.
void ChurnSolver::solve_row(const SmallSystem& s, std::vector<double>& v) {
  const std::size_t n = s.n;
  for (std::size_t j = 0; j < n; ++j) {
    double sum = v[j];
    for (std::size_t p = 0; p < j; ++p) sum += v[p] * s.a[p * n + j];
    v[j] = sum / s.pivot[j];
  }
  for (std::size_t i = n; i-- > 0;) {
    double sum = v[i];
    for (std::size_t j = i + 1; j < n; ++j) sum += v[j] * s.a[j * n + i];
    v[i] = sum;
  }
}

PoolMetrics ChurnSolver::solve() {
  if (pool_ == top_) return single_level();
  const auto level_count = static_cast<std::size_t>(top_ - pool_ + 1);
  const auto index = [&](int o) { return static_cast<std::size_t>(o - pool_); };
  std::vector<Level> levels(level_count);
  for (int o = pool_; o <= top_; ++o) levels[index(o)] = build(o);

  // Down: G_o (z_o x f_o, row-major) and the factored I - W of each level P < o < N.
  std::vector<std::vector<double>> g(level_count);
  std::vector<SmallSystem> small(level_count);
  for (int o = top_; o > pool_; --o) {
    const Level& L = levels[index(o)];
    const auto z = static_cast<std::size_t>(z_count(o));
    const auto f = static_cast<std::size_t>(f_count(o));
    const std::vector<double>& g_o = g[index(o)];
    std::vector<double> inv_ff(f * f, 0.0);  // (T^-1)_{F F}
    if (o < top_) {
      std::vector<double> w(f * f, 0.0);
      std::vector<double> slack(f, 0.0);
      std::vector<double> x(L.size());
      std::vector<double> inv_fz(z);
      for (std::size_t t = 0; t < f; ++t) {
        std::fill(x.begin(), x.end(), 0.0);
        const std::size_t source = f_state(L, static_cast<int>(t));
        x[source] = 1.0;
        // What is read below is bounded (probabilities, and times in F at most 1 / close or
        // connect rate), so if the solve had to scale down, the true values are restored.
        const double log_factor = row_solve(L, x, static_cast<int>(t));
        const auto value = [&](std::size_t state) {
          const double v = x[state];
          return log_factor == 0 || v == 0 ? v : std::exp(std::log(v) + log_factor);
        };
        for (std::size_t j = 0; j < z; ++j) inv_fz[j] = value(z_state(L, static_cast<int>(j)));
        for (std::size_t j = 0; j < f; ++j) {
          const std::size_t s = f_state(L, static_cast<int>(j));
          inv_ff[t * f + j] = value(s);
          slack[t] += inv_ff[t * f + j] * L.close_rate[s];  // P(the first exit from t: a close)
        }
        for (std::size_t j = 0; j < z; ++j) {
          if (inv_fz[j] == 0) continue;
          for (std::size_t u = 0; u < f; ++u) w[t * f + u] += inv_fz[j] * g_o[j * f + u];
        }
      }
      // The diagonal of W is the chance of coming back to t itself; it cancels against the 1 of
      // I, so I - W is represented by its off-diagonal part and the slack alone.
      small[index(o)] = factor(std::move(w), std::move(slack), f);
    }
    if (o - 1 == pool_) break;  // G_P is not needed: every excursion returns to "all idle"
    // G_{o-1}[z][f'] = lambda P(from Z_o[up(z)] the censored level o first closes from F_o[f']),
    // which is lambda close_rate(f') (T_hat^-1)[up(z)][f'], from a column solve per closable f'.
    const auto z_below = static_cast<std::size_t>(z_count(o - 1));
    const auto f_below = static_cast<std::size_t>(f_count(o - 1));
    std::vector<double>& g_below = g[index(o - 1)];
    g_below.assign(z_below * f_below, 0.0);
    std::vector<double> y(L.size());
    std::vector<double> column(f);
    for (std::size_t t = 0; t < f_below; ++t) {  // F_o[t] closes into F_{o-1}[t]
      const std::size_t target = f_state(L, static_cast<int>(t));
      std::fill(y.begin(), y.end(), 0.0);
      y[target] = 1.0;
      int k_bottom = static_cast<int>(t);
      if (o < top_) {
        // (T - S_Z' G S_F) y = e_t: y_F = (I - W)^-1 (T^-1)_{F t}, then T y = e_t + S_Z' G y_F.
        for (std::size_t j = 0; j < f; ++j) column[j] = inv_ff[j * f + t];
        solve_column(small[index(o)], column);
        for (std::size_t j = 0; j < z; ++j) {
          double sum = 0;
          for (std::size_t u = 0; u < f; ++u) sum += g_o[j * f + u] * column[u];
          y[z_state(L, static_cast<int>(j))] += sum;
        }
        k_bottom = 0;
      }
      column_solve(L, y, k_bottom);
      const double rate = lambda_ * L.close_rate[target];
      for (std::size_t j = 0; j < z_below; ++j) {
        g_below[j * f_below + t] = rate * y[z_state(L, up(static_cast<int>(j)))];
      }
    }
  }

  // Up: pi_o relative to its own largest entry, log_scale[o] its size relative to level P.
  std::vector<std::vector<double>> pi(level_count);
  std::vector<double> log_scale(level_count, 0.0);
  // x = pi_o / exp(log_factor) relative to the level below.
  const auto keep = [&](int o, std::vector<double> x, double log_factor) {
    const double below = o > pool_ ? log_scale[index(o - 1)] : 0.0;
    const double largest = *std::max_element(x.begin(), x.end());
    if (largest > 0) {
      for (double& value : x) value /= largest;
      log_scale[index(o)] = below + log_factor + std::log(largest);
    } else {  // only if lambda underflows against the other rates
      log_scale[index(o)] = -kInfinity;
    }
    pi[index(o)] = std::move(x);
  };
  {
    const Level& L = levels[0];
    std::vector<double> x(L.size(), 0.0);
    x[f_state(L, 0)] = 1.0;  // all idle: where every excursion above comes back
    const double log_factor = row_solve(L, x, 0);
    keep(pool_, std::move(x), log_factor);
  }
  for (int o = pool_ + 1; o <= top_; ++o) {
    const Level& L = levels[index(o)];
    const Level& below = levels[index(o - 1)];
    const std::vector<double>& pi_below = pi[index(o - 1)];
    std::vector<double> rhs(L.size(), 0.0);
    for (int j = 0; j < z_count(o - 1); ++j) {
      rhs[z_state(L, up(j))] += lambda_ * pi_below[z_state(below, j)];
    }
    std::vector<double> x = rhs;
    double log_factor = 0;
    if (o < top_) {
      // x = (rhs + u S_F) T^-1 with u the return flow into F: u (I - W) = (rhs T^-1)_Z G. The
      // first solve may come back scaled by exp(-log_factor), and u with it; rhs is scaled to
      // match before the second.
      const auto z = static_cast<std::size_t>(z_count(o));
      const auto f = static_cast<std::size_t>(f_count(o));
      log_factor = row_solve(L, x, L.paths() - 1);
      std::vector<double> u(f, 0.0);
      const std::vector<double>& g_o = g[index(o)];
      for (std::size_t j = 0; j < z; ++j) {
        const double flow = x[z_state(L, static_cast<int>(j))];
        if (flow == 0) continue;
        for (std::size_t t = 0; t < f; ++t) u[t] += flow * g_o[j * f + t];
      }
      solve_row(small[index(o)], u);
      const double rhs_scale = std::exp(-log_factor);
      for (std::size_t s = 0; s < x.size(); ++s) x[s] = rhs[s] * rhs_scale;
      for (std::size_t t = 0; t < f; ++t) x[f_state(L, static_cast<int>(t))] += u[t];
    }
    log_factor += row_solve(L, x, L.paths() - 1);
    keep(o, std::move(x), log_factor);
  }
  return metrics(pi, log_scale, levels);
}

// pool_size = N: one level whose only recurrent path is k = 0 (nothing can start a connect),
// a birth-death chain over b and then the waiters.
PoolMetrics ChurnSolver::single_level() {
  std::vector<Level> levels{build(top_)};
  const Level& L = levels[0];
  std::vector<double> x(L.size(), 0.0);
  const std::size_t begin = L.offset[0];
  const std::size_t end = L.offset[1];
  x[begin] = 1.0;
  for (std::size_t s = begin + 1; s < end; ++s) {
    x[s] = x[s - 1] * L.forward[s - 1] / L.back[s];
    if (x[s] > kRescaleAbove) {
      for (std::size_t j = begin; j <= s; ++j) x[j] /= kRescaleAbove;
    }
  }
  const double largest = *std::max_element(x.begin(), x.end());
  for (double& value : x) value /= largest;
  return metrics({x}, {0.0}, levels);
}

PoolMetrics ChurnSolver::metrics(const std::vector<std::vector<double>>& pi,
                                 const std::vector<double>& log_scale,
                                 const std::vector<Level>& levels) const {
  const double max_log = *std::max_element(log_scale.begin(), log_scale.end());
  double mass = 0, busy = 0, open = 0, connecting = 0, waiting = 0;
  double no_idle = 0, starts_connect = 0, lost = 0, full_no_idle = 0;
  std::vector<double> at_cap(static_cast<std::size_t>(top_) + 1, 0.0);     // by k, w = queue_cap
  std::vector<double> open_dist(static_cast<std::size_t>(top_) + 1, 0.0);  // by b + i
  std::size_t states = 0;
  for (std::size_t l = 0; l < levels.size(); ++l) {
    const Level& L = levels[l];
    const double weight = std::exp(log_scale[l] - max_log);
    const std::vector<double>& x = pi[l];
    states += L.size();
    const int o = L.o;
    for (int k = 0; k < L.paths(); ++k) {
      const int v_lo = L.v_lo[static_cast<std::size_t>(k)];
      const std::size_t begin = L.offset[static_cast<std::size_t>(k)];
      const std::size_t end = L.offset[static_cast<std::size_t>(k) + 1];
      for (std::size_t s = begin; s < end; ++s) {
        const double p = weight * x[s];
        if (p == 0) continue;
        const int v = v_lo + static_cast<int>(s - begin);
        const int b = std::min(v, o - k);
        const int idle = std::max(o - k - v, 0);
        const int w = std::max(v - (o - k), 0);
        mass += p;
        busy += b * p;
        open += (b + idle) * p;
        open_dist[static_cast<std::size_t>(b + idle)] += p;
        connecting += k * p;
        waiting += w * p;
        if (idle == 0) {
          no_idle += p;
          if (o < top_) starts_connect += p;
          if (o == top_) full_no_idle += p;
          if (o == top_ && (block_ || w == cap_)) lost += p;
          if (o == top_ && !block_ && w == cap_ && cap_ > 0)
            at_cap[static_cast<std::size_t>(k)] += p;
        }
      }
    }
  }
  PoolMetrics m;
  m.model = "overflow_ctmc";
  m.states = states;
  m.p_wait = (instant_ ? full_no_idle : no_idle) / mass;
  m.p_timeout = lost / mass;
  m.mean_wait_s = (connecting + waiting) / mass / lambda_;
  m.mean_in_use = busy / mass;
  m.mean_open = open / mass;
  m.opened_per_s = lambda_ * starts_connect / mass;
  for (double& p : open_dist) p /= mass;
  m.open_distribution = std::move(open_dist);

  // Mass the untruncated queue would hold above queue_cap: upcrossings from w = cap at rate
  // lambda times the expected excursion above it. With k connects pending at least (N - k) mu
  // serve the queue: excursion <= 1 / ((N - k) mu - lambda) when that is positive. Otherwise
  // the queue can grow (at < lambda) until the connects are done (mean H_k / alpha) and then
  // drains at N mu - lambda. An estimate from the truncated chain, not a bound.
  const double drain = top_ * mu_ - lambda_;
  double above = 0;
  for (int k = 0; k <= top_; ++k) {
    const double p = at_cap[static_cast<std::size_t>(k)] / mass;
    if (p == 0) continue;
    if (drain <= 0) {
      above = kInfinity;
      break;
    }
    const double serve = (top_ - k) * mu_;
    double excursion;
    if (serve > lambda_) {
      excursion = 1.0 / (serve - lambda_);
    } else {
      double harmonic = 0;
      for (int j = 1; j <= k; ++j) harmonic += 1.0 / j;
      const double growing = harmonic / alpha_;
      excursion = growing * (1.0 + (lambda_ - serve) / drain) + 1.0 / drain;
    }
    above += lambda_ * p * excursion;
  }
  m.truncation_error = std::isinf(above) ? 1.0 : above / (1.0 + above);
  return m;
}

}  // namespace

PoolMetrics overflow_churn_ctmc(const ChurnModel& m) {
  constexpr const char* kFunction = "overflow_churn_ctmc";
  if (m.pool_size < 1) {
    invalid(kFunction,
            "pool_size must be >= 1 (pool_size 0 keeps every connection, which this "
            "model does not describe), not " +
                std::to_string(m.pool_size));
  }
  if (m.max_overflow < 0) {
    invalid(kFunction, "max_overflow must be >= 0 (finite), not " + std::to_string(m.max_overflow));
  }
  require_lambda_mu(kFunction, m.lambda, m.mu);
  if (!(m.connect_rate > 0)) {  // +infinity (instant connects) is allowed, NaN is not
    invalid(kFunction, "connect_rate must be > 0 or +infinity, not " + number(m.connect_rate));
  }
  if (m.queue_cap < 0)
    invalid(kFunction, "queue_cap must be >= 0, not " + std::to_string(m.queue_cap));
  if (m.lambda == 0) {  // no request ever comes, so QueuePool (lazy) never opens a connection
    PoolMetrics none;
    none.model = "overflow_ctmc";
    return none;
  }
  return ChurnSolver(m).solve();
}

}  // namespace poolsim::sim
