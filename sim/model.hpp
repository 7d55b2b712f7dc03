// One replication of a scenario: arrivals, app processes with their own PoolCore, the database
// and the network, run in model time. The pool is pool_model's PoolCore, never a copy.
#pragma once

#include <cstdint>
#include <functional>

#include "sim/scenario.hpp"
#include "sim/stats.hpp"

namespace poolsim::sim {

// What one replication measured, over the window [warmup, warmup + duration): requests are
// those that arrived in it (each followed to its end), levels are time-weighted over it.
struct ReplicationStats {
  std::uint64_t requests = 0;
  std::uint64_t completed = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t connect_failed = 0;
  std::uint64_t too_many_connections = 0;
  std::uint64_t disconnect = 0;
  std::uint64_t waited = 0;  // requests whose wait was > 0
  Histogram wait;            // ns, checkout request to grant or failure, every request
  Histogram latency;         // ns, arrival to the end of the reset, completed requests
  std::uint64_t opened = 0;
  std::uint64_t closed = 0;
  double peak_open = 0;
  double mean_open = 0;
  double mean_in_use = 0;
  double peak_server = 0;
  std::uint64_t events = 0;
  double sim_time_s = 0;
};

// Called now and then with the fraction of the replication done (0..1), for progress bars.
using Progress = std::function<void(double)>;

ReplicationStats run_replication(const Scenario& scenario, int replication,
                                 const Progress& progress = {});

}  // namespace poolsim::sim
