// `poolsim analytic`: exact results for the scenarios whose model is Markovian enough, and one
// line naming the feature that prevents an exact answer for the others. Never a number that is
// only approximately right.
#pragma once

#include <stdexcept>
#include <string>

#include "sim/analytic.hpp"
#include "sim/result.hpp"
#include "sim/scenario.hpp"

namespace poolsim::sim {

// Thrown when a scenario has no exact model here; what() names the key, the value and why.
struct NotExact : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Whether to solve the overflow CTMC for connection churn (connections opened per second, mean
// open, their distribution) when the wait figures come from a closed form anyway.
enum class Churn { kSolve, kSkip };

// The exact metrics of one of the scenario's pools (every process has an identical pool that
// sees 1/processes of the traffic). Throws NotExact.
PoolMetrics exact_pool_metrics(const Scenario& scenario, Churn churn = Churn::kSolve);

// The result document with "mode": "analytic": the fields it can compute, no others.
Json analytic_result(const Scenario& scenario);

}  // namespace poolsim::sim
