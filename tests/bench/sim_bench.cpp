// Simulator speed on the reference model of the issues: Poisson 2,700 req/s, exponential 10 ms
// holds, pool 20 + 10, timeout 30 s, connect const 5 ms, 10^6 requests per iteration.
//
//   BM_ReferenceModel          the full simulator (PoolCore, engine, statistics)
//   BM_HandWrittenLoop         a minimal event loop of the same model with nothing else in it,
//                              the yardstick the simulator is held to (within 1.5x)
//   BM_ReferenceModelAllFaults the reference model with pre_ping, recycle, idle drops, random
//                              drops and 4 processes on
//   BM_PoolCoreCheckoutReturn  checkout + return of an idle connection through PoolCore alone
//   BM_ScalePoolSize/N         pool N + 0 at 70% load (rate scaled with N), 2*10^5 requests
//   BM_ScaleWaiters/W          deep overload: 5 connections, 1,000 req/s offered against a
//                              capacity of 500, no timeout, run until W requests wait at once
//   BM_ScaleProcesses/P        P worker processes, each its own pool 20 + 10 at the reference load
// The Scale benchmarks' cost per request must stay flat (or grow with a log) as N, W, P grow.
// items_per_second is requests per second of CPU time (one core).
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

// Pool size N at 70% load: rate 0.7 * N / 10 ms, about 2*10^5 requests per run.
void BM_ScalePoolSize(benchmark::State& state) {
  const double n = static_cast<double>(state.range(0));
  const double rate = 0.7 * n / 0.010;
  run_replications(state, reference({{"pool.size", std::to_string(state.range(0))},
                                     {"pool.max_overflow", "0"},
                                     {"workload.rate", std::to_string(rate)},
                                     {"duration", std::to_string(2e5 / rate) + "s"}}));
}
BENCHMARK(BM_ScalePoolSize)->RangeMultiplier(10)->Range(1, 10000)->Unit(benchmark::kMillisecond);

// The queue of waiters grows by 500 a second until it holds W; every request is followed to
// its end, so the run serves them all (W waits of up to W / 500 s).
void BM_ScaleWaiters(benchmark::State& state) {
  const double waiters = static_cast<double>(state.range(0));
  run_replications(state, reference({{"pool.size", "5"},
                                     {"pool.max_overflow", "0"},
                                     {"pool.timeout", "none"},
                                     {"workload.rate", "1000"},
                                     {"duration", std::to_string(waiters / 500) + "s"}}));
}
BENCHMARK(BM_ScaleWaiters)->RangeMultiplier(10)->Range(100, 100000)->Unit(benchmark::kMillisecond);

// P processes, each with the reference pool and load: rate 2,700 * P, about 5*10^5 requests.
void BM_ScaleProcesses(benchmark::State& state) {
  const double p = static_cast<double>(state.range(0));
  run_replications(state, reference({{"app.processes", std::to_string(state.range(0))},
                                     {"workload.rate", std::to_string(kRate * p)},
                                     {"duration", std::to_string(5e5 / (kRate * p)) + "s"}}));
}
BENCHMARK(BM_ScaleProcesses)->Arg(1)->Arg(10)->Arg(100)->Unit(benchmark::kMillisecond);

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
