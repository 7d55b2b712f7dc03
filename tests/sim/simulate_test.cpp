// The simulator against exact queueing results and an independent model.
//
// Statistical tests use fixed seeds and compare with exact values (Erlang B / C, computed here
// from sim/stats' formulas, which stats_test checks against textbook values) within simultaneous
// 95% Student-t intervals over replications. Nothing here measures wall-clock time.
#include <gtest/gtest.h>

#include <cmath>
#include <deque>
#include <map>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "sim/model.hpp"
#include "sim/result.hpp"
#include "sim/scenario.hpp"
#include "sim/stats.hpp"

namespace poolsim::sim {
namespace {

Scenario scenario(std::map<std::string, std::string> values) {
  return make_scenario(values, std::filesystem::current_path());
}

struct Replicated {
  Estimate p_wait;
  Estimate mean_wait_ms;
  Estimate timeout_fraction;
  Estimate opened_per_request;
};

Replicated replicate(const Scenario& s) {
  std::vector<double> p_wait, wait, timeouts, opened;
  for (int i = 0; i < s.replications; ++i) {
    const ReplicationStats r = run_replication(s, i);
    EXPECT_EQ(r.requests,
              r.completed + r.timeouts + r.connect_failed + r.too_many_connections + r.disconnect);
    const auto n = static_cast<double>(r.requests);
    p_wait.push_back(static_cast<double>(r.waited) / n);
    wait.push_back(r.wait.mean() / 1e6);
    timeouts.push_back(static_cast<double>(r.timeouts) / n);
    opened.push_back(static_cast<double>(r.opened) / n);
  }
  return {student_t95(p_wait), student_t95(wait), student_t95(timeouts), student_t95(opened)};
}

// A test that makes `comparisons` comparisons checks each at the Bonferroni level, so that
// together they hold with 95% confidence: at the plain 95% level one of MMc's six would fail
// for about one seed in four. Every replicate() here runs 10 replications.
void expect_within(const Estimate& e, double exact, const char* what, int comparisons) {
  const double widen =
      student_t_quantile(1 - 0.025 / comparisons, 9) / student_t_quantile(0.975, 9);
  EXPECT_LE(std::abs(e.mean - exact), e.half_width * widen)
      << what << ": simulated " << e.mean << " ± " << e.half_width * widen << " (simultaneous 95%), exact "
      << exact;
  EXPECT_GT(e.half_width, 0) << what;
}

// M/M/c: pool_size = c, no overflow, free connects, a timeout far longer than any wait.
TEST(Simulate, MMcMatchesErlangC) {
  struct Case {
    int c;
    double rate;
  };
  for (const Case& k : {Case{20, 1800}, Case{5, 300}, Case{10, 950}}) {
    const Scenario s = scenario({{"pool.size", std::to_string(k.c)},
                                 {"pool.max_overflow", "0"},
                                 {"pool.timeout", "1h"},
                                 {"workload.rate", std::to_string(k.rate)},
                                 {"workload.service", "exp:10ms"},
                                 {"database.connect", "const:0s"},
                                 {"database.reset", "const:0s"},
                                 {"duration", "100s"},
                                 {"warmup", "5s"},
                                 {"replications", "10"},
                                 {"seed", "42"}});
    const double a = k.rate * 0.010;
    const double c_wait = erlang_c(k.c, a);
    const double mean_wait_ms = c_wait / (k.c / 0.010 - k.rate) * 1e3;
    SCOPED_TRACE("c=" + std::to_string(k.c) + " lambda=" + std::to_string(k.rate));
    const Replicated r = replicate(s);
    expect_within(r.p_wait, c_wait, "P(wait)", 6);
    expect_within(r.mean_wait_ms, mean_wait_ms, "mean wait (ms)", 6);
  }
}

// The textbook anchor: c = 20, 1800/s, 10 ms holds.
TEST(Simulate, ErlangCAnchor) {
  EXPECT_NEAR(erlang_c(20, 18.0), 0.55077, 5e-6);
  EXPECT_NEAR(erlang_c(20, 18.0) / (2000.0 - 1800.0) * 1e3, 2.7538, 5e-5);
}

// M/M/c/c: pool_timeout = 0 turns every would-be wait into a TimeoutError.
TEST(Simulate, TimeoutZeroMatchesErlangB) {
  for (const int c : {10, 4}) {
    const Scenario s = scenario({{"pool.size", std::to_string(c)},
                                 {"pool.max_overflow", "0"},
                                 {"pool.timeout", "0"},
                                 {"workload.rate", "800"},
                                 {"workload.service", "exp:10ms"},
                                 {"database.connect", "const:0s"},
                                 {"database.reset", "const:0s"},
                                 {"duration", "60s"},
                                 {"warmup", "2s"},
                                 {"replications", "10"},
                                 {"seed", "7"}});
    SCOPED_TRACE("c=" + std::to_string(c));
    expect_within(replicate(s).timeout_fraction, erlang_b(c, 8.0), "timeouts / requests", 2);
  }
}

// An independent model of the same pool, written from the spec in a few lines: an idle count,
// an overflow counter, FIFO waiters, a constant connect time. No PoolCore, no sim engine.
struct ChurnResult {
  double opened_per_request;
  double mean_wait_ms;
};

ChurnResult independent_churn_model(int pool_size, int max_overflow, double rate, double hold_mean,
                                    double connect, double duration, double warmup,
                                    std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto exp = [&rng](double mean) {
    return -mean * std::log(1.0 - std::generate_canonical<double, 53>(rng));
  };
  enum Type { kArrival, kConnected, kDone };
  struct Ev {
    double at;
    long seq;
    Type type;
    double start;  // checkout start of the request
    bool operator>(const Ev& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  std::priority_queue<Ev, std::vector<Ev>, std::greater<Ev>> events;
  long seq = 0;
  int idle = 0;
  int overflow = -pool_size;
  std::deque<double> waiters;  // their checkout start times
  long requests = 0, opened = 0;
  double wait_sum = 0;
  auto counted = [&](double start) { return start >= warmup; };
  auto grant = [&](double start, double now) {
    if (counted(start)) wait_sum += now - start;
    events.push(Ev{now + exp(hold_mean), seq++, kDone, start});
  };
  events.push(Ev{exp(1 / rate), seq++, kArrival, 0});
  while (!events.empty()) {
    const Ev e = events.top();
    events.pop();
    if (e.type == kArrival) {
      if (e.at >= warmup + duration) continue;
      events.push(Ev{e.at + exp(1 / rate), seq++, kArrival, 0});
      if (counted(e.at)) ++requests;
      if (idle > 0) {
        --idle;
        grant(e.at, e.at);
      } else if (overflow < max_overflow) {
        ++overflow;
        if (counted(e.at)) ++opened;
        events.push(Ev{e.at + connect, seq++, kConnected, e.at});
      } else {
        waiters.push_back(e.at);
      }
    } else if (e.type == kConnected) {
      grant(e.start, e.at);
    } else if (!waiters.empty()) {  // a return hands the connection to the oldest waiter
      const double start = waiters.front();
      waiters.pop_front();
      grant(start, e.at);
    } else if (idle == pool_size) {  // a full queue closes the connection
      --overflow;
    } else {
      ++idle;
    }
  }
  return {static_cast<double>(opened) / static_cast<double>(requests),
          wait_sum / static_cast<double>(requests) * 1e3};
}

TEST(Simulate, OverflowChurnAgreesWithAnIndependentModel) {
  // 2 pooled + 4 overflow connections at 3 erlangs: overflow connections are opened on bursts
  // and closed when they come back to a full queue; each costs 5 ms of the request's wait.
  const Scenario s = scenario({{"pool.size", "2"},
                               {"pool.max_overflow", "4"},
                               {"pool.timeout", "1h"},
                               {"workload.rate", "300"},
                               {"workload.service", "exp:10ms"},
                               {"database.connect", "const:5ms"},
                               {"database.reset", "const:0s"},
                               {"duration", "60s"},
                               {"warmup", "1s"},
                               {"replications", "10"},
                               {"seed", "11"}});
  const Replicated sim = replicate(s);
  std::vector<double> opened, wait;
  for (std::uint64_t i = 0; i < 10; ++i) {
    const ChurnResult m = independent_churn_model(2, 4, 300, 0.010, 0.005, 60, 1, 1000 + i);
    opened.push_back(m.opened_per_request);
    wait.push_back(m.mean_wait_ms);
  }
  const Estimate model_opened = student_t95(opened);
  const Estimate model_wait = student_t95(wait);
  const double opened_band = std::hypot(sim.opened_per_request.half_width, model_opened.half_width);
  const double wait_band = std::hypot(sim.mean_wait_ms.half_width, model_wait.half_width);
  EXPECT_LE(std::abs(sim.opened_per_request.mean - model_opened.mean), opened_band)
      << "connections opened per request: sim " << sim.opened_per_request.mean << ", model "
      << model_opened.mean;
  EXPECT_LE(std::abs(sim.mean_wait_ms.mean - model_wait.mean), wait_band)
      << "mean wait (ms): sim " << sim.mean_wait_ms.mean << ", model " << model_wait.mean;
  // The churn is real: a good share of requests pay for a new connection.
  EXPECT_GT(sim.opened_per_request.mean, 0.05);
}

TEST(Simulate, SameSeedSameBytesOtherSeedOtherResult) {
  std::map<std::string, std::string> values{
      {"workload.rate", "400"},    {"pool.pre_ping", "true"}, {"network.idle_drop_after", "50ms"},
      {"network.drop_rate", "30"}, {"app.processes", "3"},    {"app.routing", "random"},
      {"duration", "5s"},          {"replications", "3"}};
  auto run = [&values] {
    Json result = simulate(scenario(values));
    result.erase("wall_s");
    return result.dump();
  };
  const std::string first = run();
  EXPECT_EQ(first, run());
  values["seed"] = "2";
  EXPECT_NE(first, run());
}

}  // namespace
}  // namespace poolsim::sim
