// Speed of the analytic models behind `poolsim analytic` and `poolsim size`.
//
//   BM_ChurnCtmc_100_50_Queue1000  overflow_churn_ctmc for QueuePool(pool_size=100,
//                                  max_overflow=50), 12,000 requests/s of 10 ms holds (120
//                                  erlangs: the overflow is in use all the time and 0.5% of
//                                  requests wait), 50 ms connects, queue truncated at 1,000:
//                                  542,476 states solved exactly; must stay well under 1 s
//   BM_SizeScan_1_to_200           what `poolsim size` does at one load (90 erlangs): Erlang B
//                                  and, where stable, Erlang C for every pool size 1..200
//
// No BENCHMARK_MAIN here: the benchmark binary gets its main() from another file.
#include <benchmark/benchmark.h>

#include "sim/analytic.hpp"

namespace poolsim::sim {
namespace {

void BM_ChurnCtmc_100_50_Queue1000(benchmark::State& state) {
  const ChurnModel model{100, 50, 12000.0, 100.0, 20.0, false, 1000};
  for (auto _ : state) {
    PoolMetrics m = overflow_churn_ctmc(model);
    benchmark::DoNotOptimize(m);
    state.counters["states"] = static_cast<double>(m.states);
  }
}
BENCHMARK(BM_ChurnCtmc_100_50_Queue1000)->Unit(benchmark::kMillisecond);

void BM_SizeScan_1_to_200(benchmark::State& state) {
  constexpr double kLambda = 9000.0, kMu = 100.0;
  for (auto _ : state) {
    double checksum = 0;
    for (int servers = 1; servers <= 200; ++servers) {
      checksum += erlang_b_pool(servers, kLambda, kMu).p_timeout;
      if (kLambda < servers * kMu) checksum += erlang_c_pool(servers, kLambda, kMu).mean_wait_s;
    }
    benchmark::DoNotOptimize(checksum);
  }
}
BENCHMARK(BM_SizeScan_1_to_200)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace poolsim::sim
