// One replication of a scenario: arrivals, app processes with their own PoolCore, the database
// and the network, run in model time. The pool is pool_model's PoolCore, never a copy.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

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

// Per-request samples, when a caller asks for them (Python's samples=True): one entry per request
// counted in the window, in the order their checkouts were answered. Costs ~30 bytes a request.
struct Samples {
  enum Outcome : std::int8_t {
    kCompleted = 0,
    kTimeout = 1,
    kConnectFailed = 2,
    kTooManyConnections = 3,
    kDisconnect = 4,
  };
  std::vector<double> arrival_s;        // arrival, seconds from the start of the run (warm-up too)
  std::vector<double> wait_ms;          // checkout request to grant or failure
  std::vector<double> latency_ms;       // arrival to the end of the reset; NaN unless completed
  std::vector<std::int8_t> outcome;     // Outcome
  std::vector<std::int32_t> replication;
  std::vector<std::int32_t> process;
  std::size_t size() const { return wait_ms.size(); }
};

// Called now and then with the fraction of the replication done (0..1), for progress bars.
using Progress = std::function<void(double)>;

// Runs one replication; appends its per-request samples to `samples` when given.
ReplicationStats run_replication(const Scenario& scenario, int replication,
                                 const Progress& progress = {}, Samples* samples = nullptr);

}  // namespace poolsim::sim
