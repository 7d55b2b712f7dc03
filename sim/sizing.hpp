// `poolsim size`: the smallest pool.size (for each max_overflow asked about) that meets the
// user's targets, and the curve it came from. Exact where the scenario is (poolsim analytic's
// models); otherwise a search over simulations, each point judged by the 95% upper confidence
// bound of every target over its replications.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "sim/result.hpp"
#include "sim/scenario.hpp"

namespace poolsim::sim {

struct Target {
  std::string key;  // p_wait, timeouts, wait_ms.mean|p50|p95|p99, connections.peak_server, ...
  double limit;     // the metric must be <= limit
};

// The value of a metric key (p_wait, timeouts, errors, wait_ms.p95, latency_ms.mean,
// connections.mean_open, ...) for one replication, and in a result document. Shares are
// fractions of the requests.
double replication_metric(const std::string& key, const ReplicationStats& r);
double result_metric(const std::string& key, const Json& result);

// "p_wait<=0.05" -> {p_wait, 0.05}. Throws ScenarioError naming the text and what is allowed.
Target parse_target(const std::string& text);

// The largest pool.size to try (1 to 100000) and the max_overflow values to size for ("0,5,10",
// each -1 or 0 to 1000000), as the command line and Python take them. Throw ScenarioError naming
// `name` (how the caller spells the argument), the value and what is allowed.
int parse_max_size(const std::string& name, const std::string& text);
std::vector<int> parse_overflow_list(const std::string& name, const std::string& text);

struct SizePoint {
  int pool_size = 0;
  int max_overflow = 0;
  std::vector<double> values;  // one per target: the estimate
  std::vector<double> upper;   // one per target: what is compared (estimate + 95% half-width)
  bool meets = false;
};

struct SizeAnswer {
  std::string method;            // "exact (erlang_c)" or "simulation, 10 replications per point"
  std::vector<SizePoint> curve;  // in the order of pool.size, per max_overflow
  std::vector<std::optional<SizePoint>> answers;  // per max_overflow choice
  std::vector<int> overflow_choices;
};

using SizeProgress = std::function<void(double)>;

SizeAnswer size_pool(const Scenario& base, const std::vector<Target>& targets, int max_size,
                     const std::vector<int>& overflow_choices, const SizeProgress& progress = {});

Json size_json(const SizeAnswer& answer, const std::vector<Target>& targets);
std::string size_table(const SizeAnswer& answer, const std::vector<Target>& targets);
std::string size_csv(const SizeAnswer& answer, const std::vector<Target>& targets);

}  // namespace poolsim::sim
