// The result schema of DESIGN.md, built once as JSON; the table and CSV forms are read off it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sim/model.hpp"
#include "sim/scenario.hpp"

namespace poolsim::sim {

using Json = nlohmann::ordered_json;

inline constexpr const char* kVersion = "0.1.0";

// Aggregates replications: counts are totals, percentiles come from the merged histograms,
// peaks are the largest seen, means are over replications; with more than one replication,
// ci95 holds the Student-t 95% half-widths of the per-replication values.
Json simulation_result(const Scenario& scenario, const std::vector<ReplicationStats>& runs,
                       double wall_seconds);

// Runs every replication of a scenario and builds its result; with `samples`, also keeps every
// request's arrival, wait and latency.
Json simulate(const Scenario& scenario, const Progress& progress = {}, Samples* samples = nullptr);

std::string render_table(const Json& result);
// Flattened keys ("wait_ms.p99") and values; the header row only when asked.
std::vector<std::pair<std::string, std::string>> flatten(const Json& result);
std::string csv_escape(const std::string& field);

}  // namespace poolsim::sim
