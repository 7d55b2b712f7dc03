// PgPool's own overhead (checkout + return of an idle connection), contended and not, and a
// pooled SELECT 1 against one on a dedicated connection (apart, and paired in one loop). Starts
// its own TestServer.
#include <benchmark/benchmark.h>
#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <string>

#include "real_pool/pg_pool.hpp"
#include "real_pool/test_server.hpp"

namespace poolsim::real_pool {
namespace {

// One server for every benchmark; nullptr (and the reason) when it could not start.
TestServer* server(std::string& why) {
  static std::string failure;
  static std::unique_ptr<TestServer> instance = [] {
    try {
      return std::make_unique<TestServer>();
    } catch (const std::exception& e) {
      failure = e.what();
      return std::unique_ptr<TestServer>();
    }
  }();
  why = failure;
  return instance.get();
}

std::string bench_dsn(TestServer& s) { return s.dsn() + " application_name=poolsim_bench"; }

PgPool* pool_for(benchmark::State& state, int pool_size, ResetOnReturn reset) {
  std::string why;
  TestServer* s = server(why);
  if (s == nullptr) {
    state.SkipWithError(("no test server: " + why).c_str());
    return nullptr;
  }
  PoolConfig config;
  config.pool_size = pool_size;
  config.max_overflow = 0;
  config.reset_on_return = reset;
  return new PgPool(bench_dsn(*s), config);
}

void BM_PgPoolCheckoutReturn(benchmark::State& state) {
  static PgPool* pool = pool_for(state, 1, ResetOnReturn::kNone);
  if (pool == nullptr) return;
  pool->checkout().release();  // connect outside the timing
  for (auto _ : state) {
    PgPool::Handle handle = pool->checkout();
    benchmark::DoNotOptimize(handle.conn());
  }
}
BENCHMARK(BM_PgPoolCheckoutReturn);

// N threads on 4 connections. items_per_second is the checkouts of all threads together: past
// 4 threads some always wait and are handed a connection by the one returning it (a wake-up),
// and more threads must not make it worse (no herd woken per return, no convoy).
void BM_PgPoolContended(benchmark::State& state) {
  static PgPool* pool = pool_for(state, 4, ResetOnReturn::kNone);
  if (pool == nullptr) return;
  for (auto _ : state) {
    PgPool::Handle handle = pool->checkout();
    benchmark::DoNotOptimize(handle.conn());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PgPoolContended)->ThreadRange(1, 32)->UseRealTime();

void select_one(benchmark::State& state, PGconn* conn) {
  PGresult* result = PQexec(conn, "SELECT 1");
  if (PQresultStatus(result) != PGRES_TUPLES_OK) state.SkipWithError(PQerrorMessage(conn));
  PQclear(result);
}

void BM_SelectOnePooled(benchmark::State& state) {
  static PgPool* pool = pool_for(state, 1, ResetOnReturn::kRollback);
  if (pool == nullptr) return;
  for (auto _ : state) {
    PgPool::Handle handle = pool->checkout();
    select_one(state, handle.conn());
  }
}
BENCHMARK(BM_SelectOnePooled);

void BM_SelectOneDedicated(benchmark::State& state) {
  std::string why;
  TestServer* s = server(why);
  if (s == nullptr) {
    state.SkipWithError(("no test server: " + why).c_str());
    return;
  }
  PGconn* conn = PQconnectdb(bench_dsn(*s).c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    state.SkipWithError(PQerrorMessage(conn));
    PQfinish(conn);
    return;
  }
  for (auto _ : state) select_one(state, conn);
  PQfinish(conn);
}
BENCHMARK(BM_SelectOneDedicated);

// The two above, one after the other, vary by +-10% from run to run, more than the 5% they are
// compared to, and on a 2-core machine a round trip's time depends on where the scheduler puts
// the backend process: two backends side by side differed by 2x, either way round. Here each
// iteration runs both on the same backend, in turns: a SELECT 1 through the pool's checkout and
// return, and one straight on that connection while it is idle in the pool (nothing else uses
// the pool). pooled_us and dedicated_us are their mean times, extra_pct the pool's cost.
void BM_SelectOnePaired(benchmark::State& state) {
  static PgPool* pool = pool_for(state, 1, ResetOnReturn::kRollback);
  if (pool == nullptr) return;
  PGconn* conn = pool->checkout().conn();  // the pool's only connection, back in it at once
  using Clock = std::chrono::steady_clock;
  Clock::duration pooled{}, dedicated{};
  bool pooled_first = true;
  for (auto _ : state) {
    for (int turn = 0; turn < 2; ++turn) {
      const Clock::time_point start = Clock::now();
      if ((turn == 0) == pooled_first) {
        PgPool::Handle handle = pool->checkout();
        select_one(state, handle.conn());
        handle.release();
        pooled += Clock::now() - start;
      } else {
        select_one(state, conn);
        dedicated += Clock::now() - start;
      }
    }
    pooled_first = !pooled_first;
  }
  const auto us = [&](Clock::duration d) {
    return std::chrono::duration<double, std::micro>(d).count() /
           static_cast<double>(state.iterations());
  };
  state.counters["pooled_us"] = us(pooled);
  state.counters["dedicated_us"] = us(dedicated);
  state.counters["extra_pct"] = 100 * (us(pooled) / us(dedicated) - 1);
}
BENCHMARK(BM_SelectOnePaired);

}  // namespace
}  // namespace poolsim::real_pool
