// Exact steady-state results of Markovian pool models: the library behind `poolsim analytic` and
// `poolsim size`. Each function states its model; sim/analytic.cpp lists every formula with its
// source. All rates are per second, all times in seconds.
//
// Arguments are checked: a count, rate or time outside its domain throws std::invalid_argument
// whose message names the function, the argument and the value.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace poolsim::sim {

// Steady-state metrics of one pool fed by Poisson arrivals (rate lambda per second) with
// exponential hold times (rate mu = 1 / mean hold).
// clang-format off
struct PoolMetrics {
  std::string model;            // "erlang_b", "erlang_c", "mmck", "erlang_a", "mmc_plus_d", "overflow_ctmc"
  double p_wait = 0;            // P(a request is not granted at once)  (it waits for a connection or a connect)
  double p_timeout = 0;         // share of requests that fail: blocked (timeout 0 / full), abandoned or timed out
  double mean_wait_s = 0;       // mean over ALL requests of the time from request to grant or failure
  std::optional<double> wait_p50_s, wait_p95_s, wait_p99_s;  // nearest-rank-style quantiles of that wait, where a closed form exists
  double mean_in_use = 0;       // time-average connections granted
  double mean_open = 0;         // time-average connections established (idle + in use)
  double opened_per_s = 0;      // new connections per second (0 for fixed pools)
  double truncation_error = 0;  // probability mass the truncated state space cannot hold (0 when exact)
  std::size_t states = 0;       // CTMC states solved (0 for closed forms)
  std::vector<double> open_distribution;  // P(n connections established), n = 0.. (where known)
};
// clang-format on

// M/M/c/c: a request that finds every connection busy fails at once (pool_timeout 0).
PoolMetrics erlang_b_pool(int servers, double lambda, double mu);
// M/M/c, FIFO, unlimited patience. Throws std::invalid_argument unless lambda < servers * mu.
PoolMetrics erlang_c_pool(int servers, double lambda, double mu);
// M/M/c/K, K >= c in the system in total: a request that finds K there fails at once.
PoolMetrics mmck_pool(int servers, int capacity, double lambda, double mu);
// M/M/c+M (Erlang A): each waiter gives up after an exponential patience of rate theta. The
// birth-death chain is solved numerically (stationary_distribution) with the queue truncated at
// queue_cap waiters: an arrival that finds queue_cap waiting fails, and truncation_error is the
// mass the untruncated chain holds above that.
PoolMetrics erlang_a_ctmc(int servers, double lambda, double mu, double theta, int queue_cap);
// M/M/c+D: each waiter gives up after exactly deadline_s (SQLAlchemy's pool_timeout: it raises
// TimeoutError). Closed form; deadline_s = +infinity is Erlang C and needs lambda < servers * mu.
PoolMetrics mmc_plus_d(int servers, double lambda, double mu, double deadline_s);

// SQLAlchemy's QueuePool with connection set-up (queuepool_spec.md sections 3, 4, 7, 9): a
// request takes an idle connection if there is one, else opens a new one if fewer than
// pool_size + max_overflow are open or opening (and waits for its own connect), else waits FIFO
// for a checkin (or fails at once if block_when_full). A checkin hands the connection to the
// oldest waiter, else keeps it idle, else (pool_size idle already) closes it.
// clang-format off
struct ChurnModel {
  int pool_size;            // QueuePool pool_size >= 0
  int max_overflow;         // >= 0 (finite)
  double lambda, mu;
  double connect_rate;      // 1 / mean connect time (exponential); +infinity = instant connects
  bool block_when_full;     // true: pool_timeout 0 (a request that would wait fails); false: wait without limit
  int queue_cap = 1000;     // truncation of the waiting queue (state truncation_error)
};
// clang-format on
// pool_size must be >= 1 here: with pool_size 0 SQLAlchemy 1.4 keeps every returned connection
// and 2.0 has no limit at all, neither of which is this model; overflow_churn_ctmc rejects it.
// Solved exactly, without truncating the connects in flight, on the recurrent states (pool_size
// to pool_size + max_overflow connections open or opening) by level reduction; only the queue is
// truncated (never with block_when_full), and truncation_error estimates the mass the
// untruncated queue holds above queue_cap (1 when lambda >= N mu: nothing can hold it). The
// wait quantiles are not given. lambda = 0 gives all zeros: QueuePool never opens a connection.
PoolMetrics overflow_churn_ctmc(const ChurnModel& m);

// The generic CTMC machinery (Eigen SparseLU), exposed for tests and other models.
struct Transition {
  std::size_t from;
  std::size_t to;
  double rate;
};
// The stationary distribution pi (pi Q = 0, sum pi = 1) of the chain on `states` states with
// these transitions (rates > 0; several between the same pair add up; self-loops are ignored).
// The chain must have exactly one recurrent class; transient states get 0. `reference_hint` must
// be a recurrent state (mass > 0), ideally near the mode: the solve falls back to a dense
// normalisation row when the hint leaves the system numerically singular, and is repeated
// relative to the heaviest state when the hint holds less than 1/1000 of its mass. Throws
// std::invalid_argument for a state index out of range or a rate that is not finite and > 0,
// std::runtime_error if no factorisation succeeds (for instance: two recurrent classes).
std::vector<double> stationary_distribution(std::size_t states,
                                            const std::vector<Transition>& transitions,
                                            std::size_t reference_hint = 0);

}  // namespace poolsim::sim
