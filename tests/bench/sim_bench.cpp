// Simulator speed on the reference model of the issues: Poisson 2,700 req/s, exponential 10 ms
// holds, pool 20 + 10, timeout 30 s, connect const 5 ms, 10^6 requests per iteration.
//
//   BM_ReferenceModel          the full simulator (PoolCore, engine, statistics)
//   BM_HandWrittenLoop         a minimal event loop of the same model with nothing else in it,
//                              the yardstick the simulator is held to (within 2x)
//   BM_ReferenceModelAllFaults the reference model with pre_ping, recycle, idle drops, random
//                              drops and 4 processes on
//   BM_PoolCoreCheckoutReturn  checkout + return of an idle connection through PoolCore alone
// items_per_second is requests per second of wall time.
#include <benchmark/benchmark.h>

#include <cmath>
#include <queue>
#include <random>
#include <vector>

#include "pool_model/pool_core.hpp"
#include "sim/model.hpp"
#include "sim/scenario.hpp"

namespace poolsim::sim {
namespace {

constexpr double kRate = 2700;
constexpr double kSeconds = 1e6 / kRate;  // about 10^6 requests

Scenario reference(std::map<std::string, std::string> extra = {}) {
  std::map<std::string, std::string> values{{"workload.rate", "2700"},
                                            {"workload.service", "exp:10ms"},
                                            {"pool.size", "20"},
                                            {"pool.max_overflow", "10"},
                                            {"pool.timeout", "30s"},
                                            {"database.connect", "const:5ms"},
                                            {"duration", std::to_string(kSeconds) + "s"}};
  for (auto& [k, v] : extra) values[k] = v;
  return make_scenario(values, ".");
}

// One replication per iteration, a new one each time; items are simulated requests.
void run_replications(benchmark::State& state, const Scenario& s) {
  std::uint64_t requests = 0;
  int i = 0;
  for (auto _ : state) {
    const ReplicationStats r = run_replication(s, i++);
    requests += r.requests;
    benchmark::DoNotOptimize(r.completed);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(requests));
}

void BM_ReferenceModel(benchmark::State& state) { run_replications(state, reference()); }
BENCHMARK(BM_ReferenceModel)->Unit(benchmark::kMillisecond);

void BM_ReferenceModelAllFaults(benchmark::State& state) {
  const Scenario s = reference({{"pool.pre_ping", "true"},
                                {"pool.recycle", "30s"},
                                {"network.idle_drop_after", "50ms"},
                                {"network.drop_rate", "60"},
                                {"app.processes", "4"}});
  run_replications(state, s);
}
BENCHMARK(BM_ReferenceModelAllFaults)->Unit(benchmark::kMillisecond);

// The same pool in a dozen lines: idle count, overflow counter, FIFO waiters with a deadline
// check, constant connect time, binary heap of (time, kind). No statistics beyond a count.
void BM_HandWrittenLoop(benchmark::State& state) {
  std::uint64_t requests = 0;
  std::uint64_t seed = 1;
  for (auto _ : state) {
    std::mt19937_64 rng(seed++);
    std::exponential_distribution<double> interarrival(kRate), hold(100.0);
    struct Ev {
      double at;
      int kind;  // 0 arrival, 1 connected, 2 done
      bool operator>(const Ev& o) const { return at > o.at; }
    };
    std::priority_queue<Ev, std::vector<Ev>, std::greater<Ev>> q;
    std::queue<double> waiters;
    int idle = 0, overflow = -20;
    std::uint64_t n = 0, timeouts = 0;
    q.push({interarrival(rng), 0});
    while (!q.empty()) {
      const Ev e = q.top();
      q.pop();
      if (e.kind == 0) {
        if (e.at > kSeconds) continue;
        ++n;
        q.push({e.at + interarrival(rng), 0});
        if (idle > 0) {
          --idle;
          q.push({e.at + hold(rng), 2});
        } else if (overflow < 10) {
          ++overflow;
          q.push({e.at + 0.005, 1});
        } else {
          waiters.push(e.at + 30);
        }
      } else if (e.kind == 1) {
        q.push({e.at + hold(rng), 2});
      } else {
        while (!waiters.empty() && waiters.front() < e.at) {
          waiters.pop();
          ++timeouts;
        }
        if (!waiters.empty()) {
          waiters.pop();
          q.push({e.at + hold(rng), 2});
        } else if (idle == 20) {
          --overflow;
        } else {
          ++idle;
        }
      }
    }
    requests += n;
    benchmark::DoNotOptimize(timeouts);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(requests));
}
BENCHMARK(BM_HandWrittenLoop)->Unit(benchmark::kMillisecond);

void BM_PoolCoreCheckoutReturn(benchmark::State& state) {
  PoolConfig config;
  config.reset_on_return = ResetOnReturn::kNone;
  PoolCore core(config);
  Instant now{};
  core.handle(now, CheckoutRequested{RequestId{0}});
  SlotId slot{};
  while (auto a = core.poll_action()) {
    if (auto* open = std::get_if<OpenConnection>(&*a)) slot = open->slot;
  }
  core.handle(now, ConnectSucceeded{slot, ConnId{1}});
  while (core.poll_action()) {
  }
  core.handle(now, Returned{slot});
  std::uint64_t id = 1;
  for (auto _ : state) {
    core.handle(now, CheckoutRequested{RequestId{id++}});
    auto grant = core.poll_action();
    benchmark::DoNotOptimize(grant);
    core.handle(now, Returned{slot});
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PoolCoreCheckoutReturn);

}  // namespace
}  // namespace poolsim::sim

BENCHMARK_MAIN();
