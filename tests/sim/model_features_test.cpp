// One test per model feature: every row of the option table (sim/scenario.cpp kOptions) and
// every behaviour sim/model.cpp's header comment promises.
//
// Each test compares a run against a control run with the feature off, or against an exact
// expectation, so that it fails if the feature were ignored. Seeds are fixed, simulated
// durations short: the whole file runs in well under a few seconds. Statistical checks use
// 99.9% bands (z = 3.29) around exact expectations; with fixed seeds they never flake.
//
// Every run goes through run(), which also checks that every request has exactly one outcome:
// requests == completed + timeouts + connect_failed + too_many_connections + disconnect.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>
#include <string>
#include <vector>

#include "sim/result.hpp"
#include "sim/scenario.hpp"

namespace poolsim::sim {
namespace {

using Options = std::map<std::string, std::string>;

constexpr double kZ = 3.2905;  // two-sided 99.9% quantile of the standard normal

std::uint64_t count(const Json& r, const char* key) { return r[key].get<std::uint64_t>(); }
std::uint64_t error(const Json& r, const char* key) {
  return r["errors"][key].get<std::uint64_t>();
}
std::uint64_t errors(const Json& r) {
  return error(r, "connect_failed") + error(r, "too_many_connections") + error(r, "disconnect");
}
double wait(const Json& r, const char* stat) { return r["wait_ms"][stat].get<double>(); }
double latency(const Json& r, const char* stat) { return r["latency_ms"][stat].get<double>(); }
double conn(const Json& r, const char* key) { return r["connections"][key].get<double>(); }

// Every request ends exactly once: completed, timed out or failed with one of the errors.
void expect_one_outcome_each(const Json& r) {
  const std::uint64_t requests = count(r, "requests");
  const std::uint64_t outcomes = count(r, "completed") + count(r, "timeouts") + errors(r);
  EXPECT_EQ(requests, outcomes) << "requests != completed + timeouts + errors for config "
                                << r["config"].dump() << "\nresult: " << r.dump();
  EXPECT_FALSE(r.contains("unfinished")) << "unfinished requests for config " << r["config"].dump();
}

// |actual - expected| within the 99.9% band of a quantity with standard deviation sd.
void expect_within_band(double actual, double expected, double sd, const std::string& what) {
  EXPECT_LE(std::abs(actual - expected), kZ * sd)
      << what << ": " << actual << ", expected " << expected << " +- " << kZ * sd;
}

class ModelFeatures : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        std::filesystem::temp_directory_path() /
        ("poolsim_model_features_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // Writes `text` to a file in this test's temporary directory and returns its name.
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream out(dir_ / name, std::ios::binary);
    out << text;
    return name;  // relative: make_scenario resolves it against dir_
  }

  Scenario scenario(const Options& options) const { return make_scenario(options, dir_); }

  Json run(const Options& options) const {
    const Json r = simulate(scenario(options));
    expect_one_outcome_each(r);
    return r;
  }

  // The ScenarioError message for `options`, or "(no error)".
  std::string refusal(const Options& options) const {
    try {
      make_scenario(options, dir_);
    } catch (const ScenarioError& e) {
      return e.what();
    }
    return "(no error)";
  }

  std::filesystem::path dir_;
};

// ---- duration, warmup, seed, replications -------------------------------------------------

TEST_F(ModelFeatures, DurationScalesRequestsAndSimTime) {
  for (int seconds : {4, 8}) {
    const Json r = run({{"duration", std::to_string(seconds) + "s"}, {"workload.rate", "500"}});
    const double expected = 500.0 * seconds;
    expect_within_band(static_cast<double>(count(r, "requests")), expected, std::sqrt(expected),
                       "requests in " + std::to_string(seconds) + "s");
    EXPECT_DOUBLE_EQ(r["sim_time_s"].get<double>(), seconds);
    EXPECT_NEAR(conn(r, "opened_per_s"), conn(r, "opened") / seconds, 1e-9);
  }
}

TEST_F(ModelFeatures, WarmupIsExcludedFromCounts) {
  // 20 s of warm-up before 4 s of statistics: only the 4 s are counted.
  const Json r = run({{"duration", "4s"}, {"warmup", "20s"}, {"workload.rate", "500"}});
  expect_within_band(static_cast<double>(count(r, "requests")), 2000, std::sqrt(2000.0),
                     "requests");
  EXPECT_DOUBLE_EQ(r["sim_time_s"].get<double>(), 4);

  // Constant load: the start-up connects happen in the warm-up, so the window sees none.
  const Options steady = {{"duration", "5s"},
                          {"workload.arrival", "constant"},
                          {"workload.rate", "100"},
                          {"workload.service", "const:10ms"}};
  Options warm = steady;
  warm["warmup"] = "2s";
  const Json cold_run = run(steady);
  const Json warm_run = run(warm);
  EXPECT_GE(conn(cold_run, "opened"), 1);
  EXPECT_DOUBLE_EQ(wait(cold_run, "max"), 30.0);  // the first request waited for its connect
  EXPECT_EQ(conn(warm_run, "opened"), 0);
  EXPECT_EQ(wait(warm_run, "max"), 0.0);
  EXPECT_EQ(warm_run["p_wait"].get<double>(), 0.0);
}

Json without_wall(Json r) {
  r.erase("wall_s");
  return r;
}

TEST_F(ModelFeatures, SameSeedGivesIdenticalResultOtherSeedDiffers) {
  const Options base = {{"duration", "5s"},
                        {"workload.rate", "300"},
                        {"pool.size", "3"},
                        {"network.drop_rate", "600"},
                        {"network.connect_fail", "0.05"}};
  Options same = base;
  same["seed"] = "42";
  Options other = base;
  other["seed"] = "43";
  const Json a = run(same);
  const Json b = run(same);
  const Json c = run(other);
  EXPECT_EQ(without_wall(a).dump(), without_wall(b).dump());
  EXPECT_NE(count(a, "requests"), count(c, "requests"));
  EXPECT_NE(latency(a, "mean"), latency(c, "mean"));
  EXPECT_EQ(a["config"]["seed"], 42);
}

TEST_F(ModelFeatures, SeedStreamsAreIndependentPerPurpose) {
  // Changing the hold-time distribution must not shift the arrival stream.
  const Json a = run({{"duration", "5s"}, {"seed", "7"}, {"workload.service", "exp:10ms"}});
  const Json b = run({{"duration", "5s"}, {"seed", "7"}, {"workload.service", "const:3ms"}});
  EXPECT_EQ(count(a, "requests"), count(b, "requests"));
}

TEST_F(ModelFeatures, ReplicationsGiveConfidenceIntervalsThatShrink) {
  const Options base = {{"duration", "2s"}, {"workload.rate", "200"}};
  const Json one = run(base);
  EXPECT_FALSE(one.contains("ci95"));
  EXPECT_EQ(one["replications"], 1);

  Options few = base;
  few["replications"] = "8";
  Options many = base;
  many["replications"] = "128";
  const Json r8 = run(few);
  const Json r128 = run(many);
  ASSERT_TRUE(r8.contains("ci95"));
  ASSERT_TRUE(r128.contains("ci95"));
  EXPECT_EQ(r128["replications"], 128);
  EXPECT_DOUBLE_EQ(r128["sim_time_s"].get<double>(), 256.0);
  expect_within_band(static_cast<double>(count(r128, "requests")), 128 * 400.0,
                     std::sqrt(128 * 400.0), "requests over 128 replications");
  // Replications are independent (each draws its own arrivals), so the intervals are not zero,
  // and they shrink with more: t(127) s / sqrt(128) against t(7) s / sqrt(8), about 0.21 of
  // it. Above 0.6 needs 8 replications' s under a quarter of sigma: P(chi2_7 < 0.44) = 4e-4.
  EXPECT_NE(count(r8, "requests"), 8 * count(one, "requests"));
  for (const char* key : {"latency_ms.mean", "p_wait", "connections.mean_in_use"}) {
    const double w8 = r8["ci95"][key].get<double>();
    const double w128 = r128["ci95"][key].get<double>();
    EXPECT_GT(w8, 0) << key;
    EXPECT_GT(w128, 0) << key;
    EXPECT_LT(w128, 0.6 * w8) << key;
  }
}

// ---- pool.* ---------------------------------------------------------------------------------

TEST_F(ModelFeatures, PoolPolicyIsQueuepoolNullStaticHikariOrPsycopg) {
  EXPECT_EQ(refusal({{"pool.policy", "queuepool"}}), "(no error)");
  EXPECT_EQ(refusal({{"pool.policy", "psycopg"}}), "(no error)");
  EXPECT_EQ(refusal({{"pool.policy", "null"}}), "(no error)");
  EXPECT_EQ(refusal({{"pool.policy", "static"}}), "(no error)");
  EXPECT_EQ(refusal({{"pool.policy", "hikari"}}), "(no error)");
  const std::string why = refusal({{"pool.policy", "c3p0"}});
  EXPECT_NE(why.find("pool.policy"), std::string::npos) << why;
  EXPECT_NE(why.find("c3p0"), std::string::npos) << why;
  // NullPool has no pool_size, max_overflow, timeout or use_lifo: given ones are refused.
  for (const char* key : {"pool.size", "pool.max_overflow", "pool.timeout", "pool.use_lifo"}) {
    const std::string value = std::string(key) == "pool.timeout"   ? "1s"
                              : std::string(key) == "pool.use_lifo" ? "true"
                                                                    : "3";
    const std::string null_why = refusal({{"pool.policy", "null"}, {key, value}});
    EXPECT_NE(null_why.find(key), std::string::npos) << null_why;
    EXPECT_NE(null_why.find("pool.policy = null"), std::string::npos) << null_why;
    // StaticPool takes the same Pool arguments as NullPool.
    const std::string static_why = refusal({{"pool.policy", "static"}, {key, value}});
    EXPECT_NE(static_why.find(key), std::string::npos) << static_why;
    EXPECT_NE(static_why.find("pool.policy = static"), std::string::npos) << static_why;
  }
  // HikariCP is set with hikari.*: SQLAlchemy's knobs are refused with it, and hikari.* with
  // the other policies, rather than silently ignored.
  const Options sqlalchemy_knobs = {{"pool.size", "3"},        {"pool.max_overflow", "3"},
                                    {"pool.timeout", "1s"},    {"pool.recycle", "1min"},
                                    {"pool.pre_ping", "true"}, {"pool.use_lifo", "true"},
                                    {"pool.compat", "1.4"}};
  for (const auto& [key, value] : sqlalchemy_knobs) {
    const std::string hikari_why = refusal({{"pool.policy", "hikari"}, {key, value}});
    EXPECT_NE(hikari_why.find(key), std::string::npos) << hikari_why;
    EXPECT_NE(hikari_why.find("pool.policy = hikari"), std::string::npos) << hikari_why;
    const std::string psycopg_why = refusal({{"pool.policy", "psycopg"}, {key, value}});
    EXPECT_NE(psycopg_why.find(key), std::string::npos) << psycopg_why;
    EXPECT_NE(psycopg_why.find("pool.policy = psycopg"), std::string::npos) << psycopg_why;
  }
  for (const char* policy : {"queuepool", "null", "static", "psycopg"}) {
    const std::string other_why =
        refusal({{"pool.policy", policy}, {"hikari.maximum_pool_size", "4"}});
    EXPECT_NE(other_why.find("hikari.maximum_pool_size"), std::string::npos) << other_why;
    EXPECT_NE(other_why.find("pool.policy = hikari only"), std::string::npos) << other_why;
  }
  for (const char* policy : {"queuepool", "null", "static", "hikari"}) {
    const std::string other_why = refusal({{"pool.policy", policy}, {"psycopg.min_size", "2"}});
    EXPECT_NE(other_why.find("psycopg.min_size"), std::string::npos) << other_why;
    EXPECT_NE(other_why.find("pool.policy = psycopg only"), std::string::npos) << other_why;
  }
  // What psycopg_pool raises ValueError for, and a commit on return it never makes.
  for (const auto& [key, value] : Options{{"psycopg.min_size", "-1"},
                                          {"psycopg.max_size", "2"},
                                          {"psycopg.num_workers", "0"},
                                          {"psycopg.max_idle", "0s"},
                                          {"pool.reset_on_return", "commit"}}) {
    const std::string bad = refusal({{"pool.policy", "psycopg"}, {key, value}});
    EXPECT_NE(bad.find(key), std::string::npos) << key << "=" << value << ": " << bad;
    EXPECT_NE(bad.find(value), std::string::npos) << key << "=" << value << ": " << bad;
  }
  // HikariCP's own startup checks (validateNumerics) refuse what HikariCP would refuse.
  for (const auto& [key, value] : Options{{"hikari.minimum_idle", "11"},
                                          {"hikari.maximum_pool_size", "0"},
                                          {"hikari.connection_timeout", "100ms"},
                                          {"hikari.max_lifetime", "10s"}}) {
    const std::string bad = refusal({{"pool.policy", "hikari"}, {key, value}});
    EXPECT_NE(bad.find(key), std::string::npos) << key << "=" << value << ": " << bad;
    EXPECT_NE(bad.find(value), std::string::npos) << key << "=" << value << ": " << bad;
  }
}

// HikariCP's published case ("Welcome to the jungle", HikariCP wiki, Pool Analysis): a pool
// with 5 idle connections, 50 threads asking at once, 2 ms queries, 150 ms connection setup.
// The other pools start opening a connection for nearly every waiting thread; HikariCP hands
// the 5 connections from thread to thread and has served all 50 long before one new
// connection would be up, so it ends with 5 or 6.
TEST_F(ModelFeatures, HikariServesAFiftyThreadSpikeWithFiveConnectionsWhereOthersOpenFortyFive) {
  std::string trace;
  for (int i = 0; i < 5; ++i) trace += "0.000,0.200\n";   // brings up 5 connections
  for (int i = 0; i < 50; ++i) trace += "1.000,0.002\n";  // the spike: 50 threads at once
  const std::string file = write("spike.csv", trace);
  const Options base = {{"duration", "1.5s"},        {"warmup", "0.9s"},
                        {"workload.arrival", "trace"}, {"workload.trace", file},
                        {"database.connect", "const:150ms"}, {"database.reset", "const:0"}};
  Options hikari = base;
  hikari["pool.policy"] = "hikari";
  hikari["hikari.maximum_pool_size"] = "50";
  hikari["hikari.minimum_idle"] = "5";
  Options queuepool = base;
  queuepool["pool.size"] = "5";
  queuepool["pool.max_overflow"] = "45";
  Options null = base;
  null["pool.policy"] = "null";
  const Json h = run(hikari);
  const Json q = run(queuepool);
  const Json n = run(null);
  for (const Json* r : {&h, &q, &n}) {
    EXPECT_EQ(count(*r, "requests"), 50u);
    EXPECT_EQ(count(*r, "completed"), 50u);
  }
  // HikariCP: 50 x 2 ms over 5 connections is 20 ms of queries; at most one connection is
  // asked for (the adder thread starts one when waiters outnumber idle ones) and every thread
  // is served well within the 150 ms that connection takes.
  EXPECT_LE(conn(h, "opened"), 1);
  EXPECT_LE(conn(h, "peak"), 6);
  EXPECT_GE(conn(h, "peak"), 5);
  EXPECT_LT(wait(h, "max"), 30.0);
  // QueuePool(5, 45) opens an overflow connection for each of the 45 who find none idle, and
  // every one of them waits out a full connect.
  EXPECT_EQ(conn(q, "opened"), 45);
  EXPECT_EQ(conn(q, "peak"), 50);
  EXPECT_GE(wait(q, "max"), 150.0);
  // NullPool opens one for each of the 50.
  EXPECT_EQ(conn(n, "opened"), 50);
  // psycopg_pool(min_size 5, max_size 50) opens its 5 at the start (so it needs no requests to
  // bring them up: those would wait for them and make it grow), then grows only while a client
  // waits, one connect at a time: one growth connect is under way when the 5 connections have
  // served all 50.
  std::string spike;
  for (int i = 0; i < 50; ++i) spike += "1.000,0.002\n";
  Options psycopg = base;
  psycopg["workload.trace"] = write("spike-only.csv", spike);
  psycopg["pool.policy"] = "psycopg";
  psycopg["psycopg.min_size"] = "5";
  psycopg["psycopg.max_size"] = "50";
  const Json p = run(psycopg);
  EXPECT_EQ(count(p, "completed"), 50u);
  EXPECT_LE(conn(p, "opened"), 1);
  EXPECT_LE(conn(p, "peak"), 6);
  EXPECT_GE(conn(p, "peak"), 5);
  EXPECT_LT(wait(p, "max"), 30.0);
}

// psycopg_pool with min_size = max_size = c and no costs is an M/M/c queue: its connections
// are opened at the start, waiters are served first come, first served, and none is ever
// closed. Poisson 300/s, exponential 10 ms holds, c = 4 (3 erlangs): Erlang C, computed here,
// gives P(wait > 0) = 0.509 and a mean wait of C / (c mu - lambda) = 5.09 ms. Over 2 h (2.16M
// correlated waits) the standard errors are about 0.002 and 0.04 ms; the bands are wider.
TEST_F(ModelFeatures, PsycopgFixedSizePoolIsAnMMcQueue) {
  const double lambda = 300, mu = 100;
  const int c = 4;
  const double erlang_c = sim::erlang_c(c, lambda / mu);  // anchored to a textbook value in analytic_test
  const Json r = run({{"duration", "2h"},
                      {"warmup", "10s"},
                      {"workload.rate", "300"},
                      {"workload.service", "exp:10ms"},
                      {"database.connect", "const:0s"},
                      {"database.reset", "const:0s"},
                      {"pool.policy", "psycopg"},
                      {"psycopg.min_size", "4"},
                      {"psycopg.max_lifetime", "100h"}});
  EXPECT_EQ(count(r, "completed"), count(r, "requests"));
  EXPECT_EQ(conn(r, "opened"), 0);  // all four were opened before the warm-up ended
  EXPECT_EQ(conn(r, "peak"), 4);
  expect_within_band(r["p_wait"].get<double>(), erlang_c, 0.004, "P(wait > 0) of M/M/4");
  expect_within_band(wait(r, "mean"), 1000.0 * erlang_c / (c * mu - lambda), 0.08,
                     "mean wait of M/M/4, ms");
}

// 20 requests at 1.0 s that hold 5 s, min_size 1, max_size 10, 150 ms connects, timeout 2 s
// (and one at 0.3 s, after the first connection is up: one that waited for it would grow the
// pool too).
// psycopg_pool grows one connection at a time while clients wait: the k-th waiter (k = 1..9)
// gets the k-th growth connection at k x 150 ms, the last 10 time out at 2 s. A QueuePool(1, 9)
// connects for all 9 at once: they all wait 150 ms. Then, with max_idle 1 min, ShrinkPool
// closes one connection idle through a whole period per period: its run at 60 s sees the
// burst's empty deque, those at 120 s .. 540 s close one each.
TEST_F(ModelFeatures, PsycopgGrowsOneConnectAtATimeAndShrinksOnePerMaxIdle) {
  std::string trace = "0.300,0.001\n";
  for (int i = 0; i < 20; ++i) trace += "1.000,5.000\n";
  const Options base = {{"duration", "570s"},
                        {"warmup", "0.5s"},
                        {"workload.arrival", "trace"},
                        {"workload.trace", write("burst.csv", trace)},
                        {"database.connect", "const:150ms"},
                        {"database.reset", "const:0s"}};
  Options psycopg = base;
  psycopg["pool.policy"] = "psycopg";
  psycopg["psycopg.min_size"] = "1";
  psycopg["psycopg.max_size"] = "10";
  psycopg["psycopg.timeout"] = "2s";
  psycopg["psycopg.max_idle"] = "1min";
  const Json p = run(psycopg);
  EXPECT_EQ(count(p, "requests"), 20u);
  EXPECT_EQ(count(p, "completed"), 10u);
  EXPECT_EQ(count(p, "timeouts"), 10u);
  EXPECT_EQ(conn(p, "opened"), 9);
  EXPECT_EQ(conn(p, "peak"), 10);
  EXPECT_EQ(conn(p, "closed"), 8);
  // (0 + 150 + ... + 1350 + 10 x 2000) / 20 ms
  EXPECT_NEAR(wait(p, "mean"), (6750.0 + 20000.0) / 20, 1e-6);
  Options queuepool = base;
  queuepool["pool.size"] = "1";
  queuepool["pool.max_overflow"] = "9";
  queuepool["pool.timeout"] = "2s";
  const Json q = run(queuepool);
  EXPECT_EQ(count(q, "completed"), 10u);
  EXPECT_NEAR(wait(q, "mean"), (9 * 150.0 + 10 * 2000.0) / 20, 1e-6);
}

TEST_F(ModelFeatures, HikariRefillsToMinimumIdleInTheBackgroundAndRetiresIdleOnes) {
  // One request at 59 s, long after everything else. HikariCP's housekeeping fills the pool to
  // minimumIdle at start, before anyone asks, and does not retire connections while the pool
  // is at minimumIdle; a QueuePool opens nothing until it is asked.
  const Options base = {{"duration", "60s"}, {"workload.arrival", "trace"},
                        {"workload.trace", write("late.csv", "59.0,0.001\n")},
                        {"database.connect", "const:150ms"}, {"database.ping", "const:1ms"}};
  Options hikari = base;
  hikari["pool.policy"] = "hikari";
  hikari["hikari.maximum_pool_size"] = "8";
  hikari["hikari.minimum_idle"] = "3";
  hikari["hikari.idle_timeout"] = "10s";
  const Json h = run(hikari);
  EXPECT_EQ(conn(h, "opened"), 3);
  EXPECT_EQ(conn(h, "closed"), 0);
  EXPECT_EQ(conn(h, "peak"), 3);
  // The late request finds one idle, idle for longer than the 500 ms bypass window, so
  // HikariCP checks it is alive first: its wait is one ping.
  EXPECT_DOUBLE_EQ(wait(h, "max"), 1.0);
  const Json q = run(base);
  EXPECT_EQ(conn(q, "opened"), 1);
  EXPECT_DOUBLE_EQ(wait(q, "max"), 150.0);
  // Eight requests at once grow it to 8; 10 s idle later the housekeeper (every 30 s) retires
  // the 5 above minimumIdle, which leaves 3.
  std::string eight;
  for (int i = 0; i < 8; ++i) eight += "0.000,1.000\n";
  hikari["workload.trace"] = write("eight.csv", eight + "59.0,0.001\n");
  const Json grown = run(hikari);
  EXPECT_EQ(conn(grown, "opened"), 8);
  EXPECT_EQ(conn(grown, "peak"), 8);
  EXPECT_EQ(conn(grown, "closed"), 5);
  // Without idle retirement (minimumIdle = maximumPoolSize, HikariCP's default) none closes.
  hikari["hikari.minimum_idle"] = "max";
  EXPECT_EQ(conn(run(hikari), "closed"), 0);
}

// pgbouncer's servers with free costs and an app pool that never makes anyone wait are an
// M/M/c queue of their own: transactions wait for one of default_pool_size servers, oldest
// first. Poisson 300/s, exponential 10 ms holds, 4 servers: Erlang C as for psycopg above.
// The server sees pgbouncer's 4, whatever the app holds open; 8 processes each with their own
// QueuePool 5 + 10 open many more connections, to pgbouncer only.
TEST_F(ModelFeatures, PgbouncerIsAnMMcQueueOfServersSharedByEveryProcess) {
  const double lambda = 300, mu = 100;
  const int c = 4;
  const double expected = erlang_c(c, lambda / mu);
  const Options free = {{"duration", "30min"},
                        {"warmup", "10s"},
                        {"workload.rate", "300"},
                        {"workload.service", "exp:10ms"},
                        {"database.connect", "const:0s"},
                        {"database.reset", "const:0s"},
                        {"database.ping", "const:0s"},
                        {"pool.policy", "pgbouncer"},
                        {"pool.size", "50"},
                        {"pool.max_overflow", "0"},
                        {"pgbouncer.connect", "const:0s"},
                        {"pgbouncer.default_pool_size", "4"}};
  const Json r = run(free);
  EXPECT_EQ(count(r, "completed"), count(r, "requests"));
  EXPECT_EQ(conn(r, "peak_server"), 4);
  expect_within_band(r["p_wait"].get<double>(), expected, 0.006, "P(wait > 0) of M/M/4");
  expect_within_band(wait(r, "mean"), 1000.0 * expected / (c * mu - lambda), 0.12,
                     "mean wait of M/M/4, ms");

  Options processes = free;
  processes["duration"] = "60s";
  processes["warmup"] = "0s";
  processes["app.processes"] = "8";
  processes.erase("pool.size");
  processes.erase("pool.max_overflow");
  const Json shared = run(processes);
  EXPECT_EQ(conn(shared, "peak_server"), 4);
  EXPECT_GT(conn(shared, "peak"), 8);  // every process opens its own to pgbouncer
  Options direct = processes;
  for (const char* key : {"pool.policy", "pgbouncer.connect", "pgbouncer.default_pool_size"}) {
    direct.erase(key);
  }
  EXPECT_GT(conn(run(direct), "peak_server"), 8);  // without pgbouncer the server sees them all
}

// Five transactions at 1.0 s that hold 10 s; default_pool_size 2, reserve_pool_size 1 after
// reserve_pool_timeout 1 s, query_wait_timeout 3 s, 100 ms server logins, free app connects.
// pgbouncer logs in one server at a time: the first two transactions get theirs at 1.1 s and
// 1.2 s. The third has waited 1 s at 2.0 s; the janitor (ticks every 333333 us from the start)
// sees it at tick 7, 2.333331 s, and logs in the reserve: its server is up at 2.433331 s. The
// last two are still waiting at tick 13, 4.333329 s, past 3 s: refused (timeouts), and their
// app connections are gone with them.
TEST_F(ModelFeatures, PgbouncerReservePoolAndQueryWaitTimeoutAtTheJanitorsTicks) {
  std::string trace;
  for (int i = 0; i < 5; ++i) trace += "1.000,10.000\n";
  const Json r = run({{"duration", "15s"},
                      {"workload.arrival", "trace"},
                      {"workload.trace", write("five.csv", trace)},
                      {"database.connect", "const:100ms"},
                      {"database.reset", "const:0s"},
                      {"pool.policy", "pgbouncer"},
                      {"pgbouncer.connect", "const:0s"},
                      {"pgbouncer.default_pool_size", "2"},
                      {"pgbouncer.reserve_pool_size", "1"},
                      {"pgbouncer.reserve_pool_timeout", "1s"},
                      {"pgbouncer.query_wait_timeout", "3s"}});
  EXPECT_EQ(count(r, "requests"), 5u);
  EXPECT_EQ(count(r, "completed"), 3u);
  EXPECT_EQ(count(r, "timeouts"), 2u);
  EXPECT_EQ(errors(r), 0u);
  EXPECT_EQ(conn(r, "peak_server"), 3);
  EXPECT_EQ(conn(r, "peak"), 5);
  EXPECT_GE(conn(r, "closed"), 2);  // the two refused clients' connections
  EXPECT_NEAR(wait(r, "mean"), (100 + 200 + 1433.331 + 2 * 3333.329) / 5, 1e-6);
  EXPECT_NEAR(wait(r, "max"), 3333.329, 1e-6);
}

TEST_F(ModelFeatures, PgbouncerOptionsAndWhatItDoesNotModelYetAreRefused) {
  EXPECT_EQ(refusal({{"pool.policy", "pgbouncer"}}), "(no error)");
  for (const char* policy : {"queuepool", "null", "hikari", "psycopg"}) {
    const std::string why =
        refusal({{"pool.policy", policy}, {"pgbouncer.default_pool_size", "4"}});
    EXPECT_NE(why.find("pgbouncer.default_pool_size"), std::string::npos) << why;
    EXPECT_NE(why.find("pool.policy = pgbouncer only"), std::string::npos) << why;
  }
  for (const auto& [key, value] : Options{{"pool.pre_ping", "true"},
                                          {"network.drop_rate", "10"},
                                          {"network.idle_drop_after", "1s"},
                                          {"network.connect_fail", "0.1"},
                                          {"database.outages", "1s+1s"},
                                          {"database.idle_session_timeout", "1min"},
                                          {"pgbouncer.min_pool_size", "30"},
                                          {"pgbouncer.default_pool_size", "0"},
                                          {"pgbouncer.server_lifetime", "-1s"}}) {
    const std::string why = refusal({{"pool.policy", "pgbouncer"}, {key, value}});
    EXPECT_NE(why.find(key), std::string::npos) << key << "=" << value << ": " << why;
    EXPECT_NE(why.find(value), std::string::npos) << key << "=" << value << ": " << why;
  }
}

TEST_F(ModelFeatures, NullPoolConnectsForEveryRequestAndClosesOnReturn) {
  // 300/s of constant 10 ms holds, 5 ms connects, no reset. A NullPool never waits for another
  // request: every request waits exactly one connect, then holds a connection of its own that
  // is closed when it returns. So the open connections form an M/D/infinity queue: their mean
  // is the rate times the hold (Little), and nothing ever times out.
  const Options base = {{"duration", "4s"},
                        {"workload.rate", "300"},
                        {"workload.service", "const:10ms"},
                        {"database.connect", "const:5ms"},
                        {"database.reset", "const:0s"}};
  Options null = base;
  null["pool.policy"] = "null";
  const Json r = run(null);
  Options queuepool = base;
  queuepool["pool.size"] = "10";
  queuepool["pool.max_overflow"] = "0";
  const Json queue = run(queuepool);
  const auto requests = count(r, "requests");
  EXPECT_EQ(count(r, "completed"), requests);
  EXPECT_EQ(count(r, "timeouts"), 0u);
  // One connection per request, but those of the requests in the last 5 ms open after the run
  // (1.5 of them on average; more than 8 has a probability below 10^-4).
  EXPECT_LE(conn(r, "opened"), static_cast<double>(requests));
  EXPECT_GE(conn(r, "opened"), static_cast<double>(requests) - 8);
  // Closed on return: all but those still held when the run ends (at most the peak).
  EXPECT_LE(conn(r, "closed"), conn(r, "opened"));
  EXPECT_GE(conn(r, "closed"), conn(r, "opened") - conn(r, "peak"));
  EXPECT_DOUBLE_EQ(r["p_wait"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(wait(r, "mean"), 5.0);
  EXPECT_DOUBLE_EQ(wait(r, "max"), 5.0);
  EXPECT_DOUBLE_EQ(latency(r, "mean"), 15.0);
  // Mean open = observed rate x 10 ms; the sample mean of a Poisson(3) count over 4 s of
  // 10 ms-correlated samples has sd about sqrt(3 x 0.01 / 4) (the M/D/inf count process).
  const double rate = static_cast<double>(requests) / 4.0;
  expect_within_band(conn(r, "mean_open"), rate * 0.010, std::sqrt(3.0 * 0.010 / 4.0) + 0.01,
                     "mean open connections of a NullPool");
  // The same load through a QueuePool of 10 (no overflow) keeps its connections: it opens at
  // most 10.
  EXPECT_LE(conn(queue, "opened"), 10);
  EXPECT_LT(wait(queue, "mean"), 1.0);
}

TEST_F(ModelFeatures, StaticPoolIsOneSharedConnectionWhereRequestsTakeTurns) {
  // Poisson 50/s, exponential 10 ms holds, free connects and resets. A StaticPool opens one
  // connection and every request runs on it in turn: an M/M/1 queue with rho = 0.5. Exact:
  // P(wait > 0) = rho, mean wait = rho / (mu - lambda) = 10 ms, P(wait > t) = rho e^-(mu-lambda)t
  // so p95 = ln(10) / 50 s = 46.05 ms. The mean of 360,000 correlated M/M/1 waits has a
  // standard error of about 0.09 ms (asymptotic variance rho(2+5rho-4rho^2+rho^3) /
  // (mu^2 (1-rho)^4) per request), so the bands are about 4 standard errors wide.
  const Options base = {{"duration", "2h"},
                        {"workload.rate", "50"},
                        {"workload.service", "exp:10ms"},
                        {"database.connect", "const:0s"},
                        {"database.reset", "const:0s"}};
  Options statics = base;
  statics["pool.policy"] = "static";
  const Json r = run(statics);
  EXPECT_EQ(count(r, "completed"), count(r, "requests"));
  EXPECT_EQ(conn(r, "opened"), 1);
  EXPECT_EQ(conn(r, "closed"), 0);
  EXPECT_EQ(conn(r, "peak_server"), 1);
  expect_within_band(r["p_wait"].get<double>(), 0.5, 0.01, "P(wait > 0) of M/M/1");
  expect_within_band(wait(r, "mean"), 10.0, 0.4, "mean wait of M/M/1, ms");
  expect_within_band(wait(r, "p95"), 1000.0 * std::log(10.0) / 50.0, 2.0, "p95 wait, ms");
  // With a 5 ms connect only the first request pays it; the rest share the one connection.
  Options slow = statics;
  slow["database.connect"] = "const:5ms";
  slow["duration"] = "10min";
  EXPECT_EQ(conn(run(slow), "opened"), 1);
}

TEST_F(ModelFeatures, PoolSizeCapsConnectionsWithoutOverflow) {
  // 3 erlangs of constant 10 ms holds: a pool of 2 is saturated, a pool of 6 is not.
  const Options base = {{"duration", "3s"},
                        {"workload.rate", "300"},
                        {"workload.service", "const:10ms"},
                        {"pool.max_overflow", "0"},
                        {"pool.timeout", "100ms"}};
  Options two = base;
  two["pool.size"] = "2";
  Options six = base;
  six["pool.size"] = "6";
  const Json r2 = run(two);
  const Json r6 = run(six);
  EXPECT_EQ(conn(r2, "peak"), 2);
  EXPECT_EQ(conn(r2, "peak_server"), 2);
  EXPECT_GT(count(r2, "timeouts"), 0u);
  EXPECT_LE(conn(r6, "peak"), 6);
  EXPECT_GT(conn(r6, "peak"), 2);
  EXPECT_LT(r6["p_wait"].get<double>(), r2["p_wait"].get<double>() / 2);
  EXPECT_EQ(conn(r6, "closed"), 0);  // pool_size connections are kept, never closed
}

TEST_F(ModelFeatures, MaxOverflowAddsConnectionsBeyondSize) {
  const Options base = {{"duration", "3s"},
                        {"workload.rate", "600"},
                        {"workload.service", "const:10ms"},
                        {"pool.size", "2"},
                        {"pool.timeout", "100ms"}};
  Options none = base;
  none["pool.max_overflow"] = "0";
  Options three = base;
  three["pool.max_overflow"] = "3";
  Options unlimited = base;
  unlimited["pool.max_overflow"] = "-1";
  const Json r0 = run(none);
  const Json r3 = run(three);
  const Json ru = run(unlimited);
  EXPECT_EQ(conn(r0, "peak"), 2);
  EXPECT_EQ(conn(r3, "peak"), 5);
  EXPECT_GT(conn(ru, "peak"), 5);
  EXPECT_EQ(count(ru, "timeouts"), 0u);
  EXPECT_EQ(conn(r0, "closed"), 0);

  // At a load that comes and goes (2 erlangs), overflow connections are opened for the peaks
  // and closed when they come back to a full pool.
  Options varying = three;
  varying["workload.rate"] = "200";
  const Json rv = run(varying);
  EXPECT_EQ(conn(rv, "peak"), 5);
  EXPECT_GT(conn(rv, "closed"), 20);
  EXPECT_GT(conn(rv, "opened"), 20);
}

TEST_F(ModelFeatures, PoolTimeoutBoundsTheWait) {
  // One connection, 2 erlangs offered: half the requests cannot be served.
  const Options base = {{"duration", "2s"},
                        {"workload.rate", "200"},
                        {"workload.service", "const:10ms"},
                        {"pool.size", "1"},
                        {"pool.max_overflow", "0"}};
  Options t50 = base;
  t50["pool.timeout"] = "50ms";
  Options t0 = base;
  t0["pool.timeout"] = "0";
  Options forever = base;
  forever["pool.timeout"] = "none";
  const Json r50 = run(t50);
  const Json r0 = run(t0);
  const Json rf = run(forever);
  EXPECT_GT(count(r50, "timeouts"), 0u);
  EXPECT_DOUBLE_EQ(wait(r50, "max"), 50.0);  // timed-out waits end exactly at the timeout
  EXPECT_GT(count(r0, "timeouts"), count(r50, "timeouts"));
  EXPECT_EQ(count(rf, "timeouts"), 0u);
  EXPECT_EQ(count(rf, "completed"), count(rf, "requests"));
  EXPECT_GT(wait(rf, "max"), 500.0);  // without a timeout the queue just grows
}

TEST_F(ModelFeatures, RecycleReplacesOldConnections) {
  const Options base = {{"duration", "10s"}, {"workload.rate", "100"}};
  Options never = base;
  Options one_second = base;
  one_second["pool.recycle"] = "1s";
  const Json rn = run(never);
  const Json r1 = run(one_second);
  // About 5 connections, each replaced about once a second over 10 s.
  EXPECT_LE(conn(rn, "opened"), 15);
  EXPECT_GE(conn(r1, "opened"), 40);
  EXPECT_GT(conn(r1, "opened"), 3 * conn(rn, "opened"));

  // recycle 0: every checkout of a pooled connection reconnects.
  const Json r0 = run({{"duration", "5s"},
                       {"workload.arrival", "constant"},
                       {"workload.rate", "10"},
                       {"workload.service", "const:10ms"},
                       {"pool.recycle", "0"}});
  EXPECT_GE(conn(r0, "opened"), static_cast<double>(count(r0, "requests")));
  EXPECT_GE(wait(r0, "p50"), 29.9);  // every request waits for a connect
}

// Constant arrivals every 100 ms, constant 10 ms holds, one connection made during the
// warm-up: every request in the window reuses it, so waits and latencies are exact.
Options quiet(Options extra) {
  Options o = {{"duration", "5s"},
               {"warmup", "1s"},
               {"workload.arrival", "constant"},
               {"workload.rate", "10"},
               {"workload.service", "const:10ms"},
               {"database.reset", "const:4ms"},
               {"database.ping", "const:3ms"}};
  for (const auto& [k, v] : extra) o[k] = v;
  return o;
}

TEST_F(ModelFeatures, PrePingAddsOnePingToEveryCheckout) {
  const Json off = run(quiet({}));
  const Json on = run(quiet({{"pool.pre_ping", "true"}}));
  EXPECT_EQ(wait(off, "max"), 0.0);
  EXPECT_NEAR(wait(on, "mean"), 3.0, 1e-9);  // database.ping
  EXPECT_NEAR(wait(on, "max"), 3.0, 1e-9);
  EXPECT_NEAR(latency(off, "mean"), 14.0, 1e-9);  // hold + reset
  EXPECT_NEAR(latency(on, "mean"), 17.0, 1e-9);   // ping + hold + reset
  EXPECT_EQ(on["p_wait"].get<double>(), 1.0);
}

TEST_F(ModelFeatures, DatabasePingCostIsWhatPrePingWaits) {
  const Json slow = run(quiet({{"pool.pre_ping", "true"}, {"database.ping", "const:7ms"}}));
  EXPECT_NEAR(wait(slow, "mean"), 7.0, 1e-9);
  EXPECT_NEAR(latency(slow, "mean"), 21.0, 1e-9);
}

TEST_F(ModelFeatures, ResetOnReturnNoneRemovesTheResetCost) {
  const Json rollback = run(quiet({{"pool.reset_on_return", "rollback"}}));
  const Json commit = run(quiet({{"pool.reset_on_return", "commit"}}));
  const Json none = run(quiet({{"pool.reset_on_return", "none"}}));
  EXPECT_NEAR(latency(rollback, "mean"), 14.0, 1e-9);
  EXPECT_NEAR(latency(commit, "mean"), 14.0, 1e-9);
  EXPECT_NEAR(latency(none, "mean"), 10.0, 1e-9);
  // The connection is busy during the reset: mean in use is (hold + reset) * rate.
  EXPECT_NEAR(conn(rollback, "mean_in_use"), 0.14, 1e-3);
  EXPECT_NEAR(conn(none, "mean_in_use"), 0.10, 1e-3);
}

TEST_F(ModelFeatures, DatabaseResetCostAddsToLatency) {
  const Json slow = run(quiet({{"database.reset", "const:9ms"}}));
  EXPECT_NEAR(latency(slow, "mean"), 19.0, 1e-9);
  EXPECT_EQ(wait(slow, "max"), 0.0);  // reset happens after the request, not before
}

TEST_F(ModelFeatures, UseLifoLetsSpareConnectionsExpire) {
  // FIFO rotates through all pooled connections, so none is idle for 1 s; LIFO reuses the
  // most recent ones and the rest expire at the server.
  const Options base = {
      {"duration", "20s"}, {"workload.rate", "100"}, {"database.idle_session_timeout", "1s"}};
  Options fifo = base;
  Options lifo = base;
  lifo["pool.use_lifo"] = "true";
  const Json rf = run(fifo);
  const Json rl = run(lifo);
  EXPECT_EQ(error(rf, "disconnect"), 0u);
  EXPECT_GT(error(rl, "disconnect"), 0u);

  fifo["pool.pre_ping"] = "true";
  lifo["pool.pre_ping"] = "true";
  const Json pf = run(fifo);
  const Json pl = run(lifo);
  EXPECT_EQ(error(pf, "disconnect"), 0u);
  EXPECT_EQ(error(pl, "disconnect"), 0u);
  EXPECT_GT(conn(pl, "opened"), 2 * conn(pf, "opened"));
}

TEST_F(ModelFeatures, CompatDiffersForPoolSizeZero) {
  // pool_size 0, max_overflow 1: SQLAlchemy 1.4 allows one connection, 2.0 ignores the overflow.
  const Options base = {
      {"duration", "3s"}, {"workload.rate", "200"},   {"workload.service", "const:10ms"},
      {"pool.size", "0"}, {"pool.max_overflow", "1"}, {"pool.timeout", "200ms"}};
  Options v14 = base;
  v14["pool.compat"] = "1.4";
  Options v20 = base;
  v20["pool.compat"] = "2.0";
  const Json r14 = run(v14);
  const Json r20 = run(v20);
  EXPECT_EQ(conn(r14, "peak"), 1);
  EXPECT_GT(count(r14, "timeouts"), 0u);
  EXPECT_GT(conn(r20, "peak"), 1);
  EXPECT_EQ(count(r20, "timeouts"), 0u);
}

// ---- workload.* -------------------------------------------------------------------------------

TEST_F(ModelFeatures, PoissonArrivalCountMatchesRate) {
  const Json r = run({{"duration", "10s"},
                      {"workload.arrival", "poisson"},
                      {"workload.rate", "1000"},
                      {"workload.service", "const:1ms"}});
  expect_within_band(static_cast<double>(count(r, "requests")), 10000, 100, "requests");

  // Random arrivals queue where evenly spaced ones do not: one connection, 10 ms holds, a
  // request every 20 ms on average. M/D/1 at load 0.5 waits half the time.
  const Options one = {{"duration", "20s"},     {"warmup", "1s"},
                       {"workload.rate", "50"}, {"workload.service", "const:10ms"},
                       {"pool.size", "1"},      {"pool.max_overflow", "0"}};
  Options poisson = one;
  poisson["workload.arrival"] = "poisson";
  Options constant = one;
  constant["workload.arrival"] = "constant";
  const Json p = run(poisson);
  const double n = static_cast<double>(count(p, "requests"));
  expect_within_band(p["p_wait"].get<double>(), 0.5, std::sqrt(0.25 / n) * 2, "Poisson p_wait");
  EXPECT_EQ(run(constant)["p_wait"].get<double>(), 0.0);
}

TEST_F(ModelFeatures, ConstantArrivalCountIsExact) {
  // A constant process at rate r puts exactly r * T arrivals in any window of length T, whether
  // or not a warm-up precedes it.
  struct Case {
    const char* rate;
    const char* duration;
    const char* warmup;
    std::uint64_t expected;
  };
  for (const Case& c :
       {Case{"100", "10s", "5s", 1000}, Case{"100", "10s", "0s", 1000},
        Case{"300", "10s", "0s", 3000}, Case{"7", "1s", "0s", 7}, Case{"7", "1s", "1s", 7}}) {
    const Json r = run({{"duration", c.duration},
                        {"warmup", c.warmup},
                        {"workload.arrival", "constant"},
                        {"workload.rate", c.rate},
                        {"workload.service", "const:1ms"}});
    EXPECT_EQ(count(r, "requests"), c.expected)
        << "rate " << c.rate << " duration " << c.duration << " warmup " << c.warmup;
  }
}

TEST_F(ModelFeatures, OnOffArrivalsFollowBurstRatesAndTimes) {
  // Cycles of 3 s at 20/s then 2 s at 500/s (the first burst starts after burst_off).
  const Json r = run({{"duration", "20s"},
                      {"workload.arrival", "onoff"},
                      {"workload.rate", "20"},
                      {"workload.burst_rate", "500"},
                      {"workload.burst_off", "3s"},
                      {"workload.burst_on", "2s"},
                      {"workload.service", "const:1ms"}});
  const double expected = 4 * (3 * 20.0 + 2 * 500.0);  // 4240
  expect_within_band(static_cast<double>(count(r, "requests")), expected, std::sqrt(expected),
                     "requests");
}

TEST_F(ModelFeatures, OnOffBurstsRaisePeakConnectionsOverPoissonAtTheSameMean) {
  // 20/s for 4 s, then 1000/s for 1 s: a mean of 216/s, 10 erlangs inside a burst. Unlimited
  // overflow, so the peak shows the demand rather than the pool's limit.
  const Json bursty = run({{"duration", "20s"},
                           {"workload.arrival", "onoff"},
                           {"workload.rate", "20"},
                           {"workload.burst_rate", "1000"},
                           {"workload.burst_off", "4s"},
                           {"workload.burst_on", "1s"},
                           {"workload.service", "const:10ms"},
                           {"pool.max_overflow", "-1"}});
  const Json smooth = run({{"duration", "20s"},
                           {"workload.rate", "216"},
                           {"workload.service", "const:10ms"},
                           {"pool.max_overflow", "-1"}});
  expect_within_band(static_cast<double>(count(bursty, "requests")), 4320, std::sqrt(4320.0),
                     "bursty requests");
  expect_within_band(static_cast<double>(count(smooth, "requests")), 4320, std::sqrt(4320.0),
                     "smooth requests");
  EXPECT_GE(conn(bursty, "peak"), conn(smooth, "peak") + 6);
  EXPECT_GE(conn(bursty, "peak_server"), conn(smooth, "peak_server") + 6);
  EXPECT_GT(wait(bursty, "mean"), 3 * wait(smooth, "mean"));
}

TEST_F(ModelFeatures, DiurnalArrivalsFollowTheSinusoid) {
  // rate(t) = 200 * (1 + 0.9 sin(2 pi t / 20 s)).
  const Options base = {{"workload.arrival", "diurnal"},
                        {"workload.rate", "200"},
                        {"workload.period", "20s"},
                        {"workload.amplitude", "0.9"},
                        {"workload.service", "const:1ms"}};
  Options whole = base;
  whole["duration"] = "40s";
  const Json r = run(whole);
  expect_within_band(static_cast<double>(count(r, "requests")), 8000, std::sqrt(8000.0),
                     "two periods");

  // The first half-period gets rate * (T/2 + a P / pi), the second rate * (T/2 - a P / pi).
  const double swing = 200 * 0.9 * 20 / std::numbers::pi;
  Options first = base;
  first["duration"] = "10s";
  Options second = base;
  second["warmup"] = "10s";
  second["duration"] = "10s";
  const double up = 2000 + swing;
  const double down = 2000 - swing;
  expect_within_band(static_cast<double>(count(run(first), "requests")), up, std::sqrt(up),
                     "rising half");
  expect_within_band(static_cast<double>(count(run(second), "requests")), down, std::sqrt(down),
                     "falling half");
}

TEST_F(ModelFeatures, TraceReplaysArrivalsAndHoldTimes) {
  // A header, a comment, arrivals (s) and hold times (s); the last arrival is after the end.
  const std::string file = write("trace.csv",
                                 "arrival,hold\n"
                                 "# replayed\n"
                                 "0.100,0.020\n0.200,0.020\n0.350,0.020\n1.500,0.020\n2.000,0.020\n"
                                 "2.000,0.020\n4.999,0.020\n5.000,0.020\n");
  const Json r = run({{"duration", "5s"},
                      {"workload.arrival", "trace"},
                      {"workload.trace", file},
                      {"workload.service", "const:1ms"},
                      {"database.reset", "const:0"}});
  EXPECT_EQ(count(r, "requests"), 7u);  // 5.000 is at the end, outside [0, 5 s)
  EXPECT_EQ(count(r, "completed"), 7u);
  // The holds come from the file (20 ms), not from workload.service (1 ms): latency - wait.
  EXPECT_NEAR(latency(r, "mean") - wait(r, "mean"), 20.0, 1e-9);
  EXPECT_NEAR(latency(r, "max"), 50.0, 1e-9);  // the first one waited for its 30 ms connect
  EXPECT_EQ(conn(r, "peak"), 2);               // the two arrivals at 2.000 s overlap

  // Without a hold column, workload.service gives the holds.
  const std::string bare = write("bare.csv", "0.1\n0.2\n0.3\n");
  const Json b = run({{"duration", "1s"},
                      {"workload.arrival", "trace"},
                      {"workload.trace", bare},
                      {"workload.service", "const:7ms"},
                      {"database.reset", "const:0"}});
  EXPECT_EQ(count(b, "requests"), 3u);
  EXPECT_NEAR(latency(b, "mean") - wait(b, "mean"), 7.0, 1e-9);
}

TEST_F(ModelFeatures, TraceRefusesUnsortedAndMalformedFiles) {
  const std::string unsorted = write("unsorted.csv", "0.1\n0.3\n0.2\n");
  std::string why = refusal({{"workload.arrival", "trace"}, {"workload.trace", unsorted}});
  EXPECT_NE(why.find("workload.trace"), std::string::npos) << why;
  EXPECT_NE(why.find("line 3"), std::string::npos) << why;

  const std::string malformed = write("malformed.csv", "0.1,0.01\n0.2,abc\n0.3,0.01\n");
  why = refusal({{"workload.arrival", "trace"}, {"workload.trace", malformed}});
  EXPECT_NE(why.find("workload.trace"), std::string::npos) << why;
  EXPECT_NE(why.find("line 2"), std::string::npos) << why;

  const std::string negative = write("negative.csv", "0.1\n-0.2\n");
  why = refusal({{"workload.arrival", "trace"}, {"workload.trace", negative}});
  EXPECT_NE(why.find("line 2"), std::string::npos) << why;

  const std::string empty = write("empty.csv", "");
  why = refusal({{"workload.arrival", "trace"}, {"workload.trace", empty}});
  EXPECT_NE(why.find("workload.trace"), std::string::npos) << why;

  why = refusal({{"workload.arrival", "trace"}, {"workload.trace", "no_such_file.csv"}});
  EXPECT_NE(why.find("workload.trace"), std::string::npos) << why;
  EXPECT_NE(why.find("no_such_file.csv"), std::string::npos) << why;

  why = refusal({{"workload.arrival", "trace"}});
  EXPECT_NE(why.find("workload.trace"), std::string::npos) << why;
}

TEST_F(ModelFeatures, TraceMalformedFirstLineIsRefusedNotTakenForAHeader) {
  // A first line that starts like a number is data: "1.0,0.01x" is a typo, not a header, and
  // silently dropping it loses an arrival (the empirical-file reader gets this right).
  const std::string file = write("typo.csv", "1.0,0.01x\n2.0,0.01\n");
  const std::string why = refusal({{"workload.arrival", "trace"}, {"workload.trace", file}});
  EXPECT_NE(why.find("workload.trace"), std::string::npos) << why;
  EXPECT_NE(why.find("line 1"), std::string::npos) << why;
}

TEST_F(ModelFeatures, ClosedLoopThroughputIsClientsOverCycleTime) {
  // 5 clients, 40 ms think + 10 ms hold (+ 50 us reset): 99.9 requests/s, whatever workload.rate.
  const Options base = {{"duration", "10s"},
                        {"workload.arrival", "closed"},
                        {"workload.clients", "5"},
                        {"workload.think", "const:40ms"},
                        {"workload.service", "const:10ms"},
                        {"workload.rate", "1000"}};
  const Json r = run(base);
  const double expected = 10 * 5 / 0.05005;
  EXPECT_NEAR(static_cast<double>(count(r, "requests")), expected, 0.01 * expected);
  EXPECT_LE(conn(r, "peak"), 5);

  Options slower = base;
  slower["workload.think"] = "const:90ms";
  const Json s = run(slower);
  const double expected_slow = 10 * 5 / 0.10005;
  EXPECT_NEAR(static_cast<double>(count(s, "requests")), expected_slow, 0.01 * expected_slow);

  Options more = base;
  more["workload.clients"] = "10";
  const Json m = run(more);
  EXPECT_NEAR(static_cast<double>(count(m, "requests")), 2 * expected, 0.02 * expected);
}

TEST_F(ModelFeatures, ClosedLoopWithZeroCycleTimeIsRefused) {
  // Zero think, zero hold and no reset: each client's next request comes at the same instant,
  // forever, and the run never gets past t = 0 (poolsim simulate hangs). Refuse it instead.
  // (Only make_scenario is called here, so the test cannot hang.)
  const std::string why = refusal({{"duration", "1s"},
                                   {"workload.arrival", "closed"},
                                   {"workload.clients", "1"},
                                   {"workload.think", "const:0"},
                                   {"workload.service", "const:0"},
                                   {"pool.reset_on_return", "none"}});
  EXPECT_NE(why.find("workload."), std::string::npos) << why;
}

TEST_F(ModelFeatures, ServiceDistributionsGiveTheirMeanHold) {
  const std::string empirical = write("holds.csv", "hold\n5ms\n0.010\n30ms\n");
  struct Case {
    std::string spec;
    double mean_ms;
    double sd_ms;  // of one hold
  };
  const Case cases[] = {
      {"const:7ms", 7, 0},
      {"exp:12ms", 12, 12},
      {"uniform:2ms,6ms", 4, 4 / std::sqrt(12.0)},
      {"lognormal:mean=8ms,cv=1.5", 8, 12},
      {"empirical:" + empirical, 15, std::sqrt((100.0 + 25.0 + 225.0) / 3)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec);
    // Light load on a big pool after a warm-up: no waiting, so latency = hold + reset.
    const Json r = run({{"duration", "20s"},
                        {"warmup", "2s"},
                        {"workload.rate", "250"},
                        {"workload.service", c.spec},
                        {"pool.size", "20"},
                        {"pool.max_overflow", "20"}});
    EXPECT_EQ(wait(r, "max"), 0.0);
    const double n = static_cast<double>(count(r, "completed"));
    const double hold = latency(r, "mean") - 0.05;  // database.reset = const:50us
    expect_within_band(hold, c.mean_ms, c.sd_ms / std::sqrt(n) + 1e-9, "mean hold");
    // Mean in use = rate * (hold + reset), by Little's law.
    EXPECT_NEAR(conn(r, "mean_in_use"), n / 20 * (hold + 0.05) / 1000, 0.1);
  }
}

TEST_F(ModelFeatures, ServiceDistributionsHaveTheirShape) {
  auto holds = [&](const std::string& spec) {
    return run({{"duration", "20s"},
                {"warmup", "2s"},
                {"workload.rate", "250"},
                {"workload.service", spec},
                {"pool.size", "20"},
                {"pool.max_overflow", "20"},
                {"database.reset", "const:0"}});
  };
  const double tolerance = 1.0 / 256 + 1e-9;  // the histogram's relative error
  const Json c = holds("const:7ms");
  EXPECT_NEAR(latency(c, "p50"), 7, 7 * tolerance);
  EXPECT_DOUBLE_EQ(latency(c, "max"), 7);
  const Json e = holds("exp:12ms");  // median = mean * ln 2
  EXPECT_NEAR(latency(e, "p50"), 12 * std::log(2.0), 0.05 * 12 * std::log(2.0));
  EXPECT_GT(latency(e, "max"), 60);
  const Json u = holds("uniform:2ms,6ms");
  EXPECT_LE(latency(u, "max"), 6);
  EXPECT_NEAR(latency(u, "p95"), 5.8, 0.1);
  const Json l = holds("lognormal:mean=8ms,cv=1.5");  // median = mean / sqrt(1 + cv^2)
  EXPECT_NEAR(latency(l, "p50"), 8 / std::sqrt(1 + 1.5 * 1.5), 0.05 * 8 / std::sqrt(3.25));
  const Json m = holds("empirical:" + write("holds.csv", "5ms\n10ms\n30ms\n"));
  EXPECT_NEAR(latency(m, "p50"), 10, 10 * tolerance);
  EXPECT_NEAR(latency(m, "max"), 30, 1e-9);
}

// ---- app.* ------------------------------------------------------------------------------------

TEST_F(ModelFeatures, ProcessesEachHaveTheirOwnPool) {
  // Far more load than 2 + 1 connections per process can carry.
  const Options base = {
      {"duration", "3s"}, {"workload.rate", "2000"},  {"workload.service", "const:10ms"},
      {"pool.size", "2"}, {"pool.max_overflow", "1"}, {"pool.timeout", "100ms"}};
  Options one = base;
  Options four = base;
  four["app.processes"] = "4";
  const Json r1 = run(one);
  const Json r4 = run(four);
  EXPECT_EQ(conn(r1, "peak_server"), 3);
  EXPECT_EQ(conn(r4, "peak_server"), 12);
  EXPECT_EQ(conn(r4, "peak"), 12);
  EXPECT_GT(count(r4, "completed"), 3 * count(r1, "completed"));
}

TEST_F(ModelFeatures, ThreadsCapQueuesRequestsBeforeCheckout) {
  // 1.5 erlangs of 10 ms holds, 2 threads: requests queue for a thread, which is in the
  // latency but not in the pool wait.
  const Options base = {
      {"duration", "10s"}, {"workload.rate", "150"}, {"workload.service", "const:10ms"}};
  Options capped = base;
  capped["app.threads"] = "2";
  const Json free_run = run(base);
  const Json capped_run = run(capped);
  const double hold_and_reset = 10.05;
  EXPECT_NEAR(latency(free_run, "mean") - wait(free_run, "mean"), hold_and_reset, 1e-6);
  EXPECT_GT(latency(capped_run, "mean") - wait(capped_run, "mean"), hold_and_reset + 3);
  EXPECT_LE(conn(capped_run, "peak"), 2);  // at most one connection per thread
  EXPECT_GT(conn(free_run, "peak"), 2);
}

TEST_F(ModelFeatures, RoutingRandomUnbalancesProcesses) {
  // Two processes with one connection each; constant arrivals every 10 ms, 15 ms holds. Round
  // robin gives each process one request every 20 ms: nobody waits. Random does not.
  const Options base = {{"duration", "10s"},
                        {"warmup", "1s"},
                        {"workload.arrival", "constant"},
                        {"workload.rate", "100"},
                        {"workload.service", "const:15ms"},
                        {"app.processes", "2"},
                        {"pool.size", "1"},
                        {"pool.max_overflow", "0"}};
  Options rr = base;
  rr["app.routing"] = "round_robin";
  Options random = base;
  random["app.routing"] = "random";
  const Json r = run(rr);
  const Json x = run(random);
  EXPECT_EQ(r["p_wait"].get<double>(), 0.0);
  EXPECT_NEAR(latency(r, "max"), 15.05, 1e-9);
  EXPECT_GT(x["p_wait"].get<double>(), 0.3);
}

// ---- database.* -------------------------------------------------------------------------------

TEST_F(ModelFeatures, MaxConnectionsCapsTheServerAndRefusesTheRest) {
  // 4 processes of 5 + 10 could open 60 connections; the server takes 20.
  const Options base = {{"duration", "3s"},
                        {"workload.rate", "3000"},
                        {"workload.service", "const:10ms"},
                        {"app.processes", "4"}};
  Options capped = base;
  capped["database.max_connections"] = "20";
  const Json open = run(base);
  const Json r = run(capped);
  EXPECT_GT(conn(open, "peak_server"), 20);
  EXPECT_EQ(error(open, "too_many_connections"), 0u);
  EXPECT_EQ(conn(r, "peak_server"), 20);
  EXPECT_GT(error(r, "too_many_connections"), 0u);
  EXPECT_EQ(error(r, "connect_failed"), 0u);
}

TEST_F(ModelFeatures, ConnectTimeIsInTheWait) {
  // One request a second: the first connects, the others reuse its connection.
  for (const char* cost : {"30ms", "100ms"}) {
    const Json r = run({{"duration", "5s"},
                        {"workload.arrival", "constant"},
                        {"workload.rate", "1"},
                        {"workload.service", "const:10ms"},
                        {"database.connect", std::string("const:") + cost}});
    const double ms = std::stod(cost);
    EXPECT_DOUBLE_EQ(wait(r, "max"), ms);
    EXPECT_NEAR(wait(r, "mean"), ms / static_cast<double>(count(r, "requests")), 1e-9);
    EXPECT_EQ(conn(r, "opened"), 1);
  }
}

// One request a second on one connection, with 10 ms holds: idle 990 ms between uses.
Options sparse(Options extra) {
  Options o = {{"duration", "10s"},    {"workload.arrival", "constant"},
               {"workload.rate", "1"}, {"workload.service", "const:10ms"},
               {"pool.size", "1"},     {"pool.max_overflow", "0"}};
  for (const auto& [k, v] : extra) o[k] = v;
  return o;
}

TEST_F(ModelFeatures, RecycleShorterThanTheServerIdleTimeoutLeavesNoDeadConnection) {
  // Every connection idle for 40 ms is older than 20 ms, so the pool recycles it at checkout
  // before it could be used: no request can meet a connection the server closed. (A reused
  // connection slot once restarted its idle generation, and the server's idle close of its
  // previous connection then killed the new one: hundreds of disconnects here.)
  const Json r = run({{"pool.size", "3"}, {"pool.max_overflow", "2"}, {"workload.rate", "150"},
                      {"workload.service", "exp:5ms"}, {"pool.recycle", "20ms"},
                      {"database.idle_session_timeout", "40ms"}, {"pool.use_lifo", "true"},
                      {"database.connect", "const:1ms"}, {"duration", "60s"}});
  EXPECT_EQ(r["errors"]["disconnect"].get<std::uint64_t>(), 0u);
  EXPECT_GT(conn(r, "opened"), 1000);  // recycling is busy: the test would see a dead connection
}

TEST_F(ModelFeatures, IdleSessionTimeoutKillsIdleConnections) {
  const Json control = run(sparse({}));
  EXPECT_EQ(errors(control), 0u);
  EXPECT_EQ(conn(control, "opened"), 1);

  // Without pre_ping, every other request finds the connection dead: the first statement fails
  // (disconnect), the pool is invalidated, and the next request connects afresh.
  const Json plain = run(sparse({{"database.idle_session_timeout", "500ms"}}));
  EXPECT_GT(error(plain, "disconnect"), 0u);
  EXPECT_EQ(error(plain, "disconnect") + count(plain, "completed"), count(plain, "requests"));

  // With pre_ping the dead connection is noticed at checkout and replaced: no errors.
  const Json pinged =
      run(sparse({{"database.idle_session_timeout", "500ms"}, {"pool.pre_ping", "true"}}));
  EXPECT_EQ(errors(pinged), 0u);
  EXPECT_EQ(conn(pinged, "opened"), static_cast<double>(count(pinged, "requests")));

  // Idle less than the timeout: nothing happens.
  const Json longer = run(sparse({{"database.idle_session_timeout", "2s"}}));
  EXPECT_EQ(errors(longer), 0u);
  EXPECT_EQ(conn(longer, "opened"), 1);
}

// The window just after a 1 s outage under 1,000 requests/s with pre_ping: the reconnect storm.
Options restart_storm() {
  return {{"duration", "2s"},           {"warmup", "3s"},
          {"workload.rate", "1000"},    {"workload.service", "const:5ms"},
          {"pool.size", "10"},          {"pool.pre_ping", "true"},
          {"database.outages", "2s+1s"}};
}

TEST_F(ModelFeatures, ConnectCapacitySerialisesConnectStorms) {
  // Ten requests at t = 0, each needing its own connection (30 ms to set up).
  std::string ten;
  for (int i = 0; i < 10; ++i) ten += "0,1\n";
  const std::string file = write("storm.csv", ten);
  auto storm = [&](const char* capacity) {
    return run({{"duration", "3s"},
                {"workload.arrival", "trace"},
                {"workload.trace", file},
                {"pool.size", "10"},
                {"database.connect_capacity", capacity}});
  };
  const Json unlimited = storm("0");
  const Json one = storm("1");
  const Json three = storm("3");
  EXPECT_DOUBLE_EQ(wait(unlimited, "max"), 30.0);
  EXPECT_DOUBLE_EQ(wait(one, "max"), 300.0);  // one after the other
  EXPECT_DOUBLE_EQ(wait(one, "mean"), 165.0);
  EXPECT_DOUBLE_EQ(wait(three, "max"), 120.0);  // in four rounds of at most three

  // After a restart, the reconnect storm is slower with a capacity of 1.
  const Options restart = restart_storm();
  Options slow = restart;
  slow["database.connect_capacity"] = "1";
  EXPECT_GT(wait(run(slow), "mean"), 2 * wait(run(restart), "mean"));
}

TEST_F(ModelFeatures, SharedConnectCapacitySlowsEverySetUpAlike) {
  // Processor sharing, computed by hand: n set-ups of 30 ms each with capacity c all run at
  // min(1, c / n) speed, so together they finish at 30 ms * n / c (queue: in rounds).
  auto storm = [&](int n, const char* capacity, const char* sharing) {
    std::string trace;
    for (int i = 0; i < n; ++i) trace += "0,1\n";
    return run({{"duration", "3s"},
                {"workload.arrival", "trace"},
                {"workload.trace", write("shared" + std::to_string(n) + ".csv", trace)},
                {"pool.size", "10"},
                {"database.connect_capacity", capacity},
                {"database.connect_sharing", sharing}});
  };
  const Json four = storm(4, "2", "shared");
  EXPECT_DOUBLE_EQ(wait(four, "max"), 60.0);
  EXPECT_DOUBLE_EQ(wait(four, "mean"), 60.0);  // all four together, none first
  const Json queued = storm(4, "2", "queue");
  EXPECT_DOUBLE_EQ(wait(queued, "max"), 60.0);
  EXPECT_DOUBLE_EQ(wait(queued, "mean"), 45.0);  // two at 30 ms, two at 60 ms
  EXPECT_DOUBLE_EQ(wait(storm(3, "1.5", "shared"), "max"), 60.0);  // 3 x 30 ms / 1.5
  EXPECT_DOUBLE_EQ(wait(storm(2, "2", "shared"), "max"), 30.0);    // within capacity: full speed
  EXPECT_DOUBLE_EQ(wait(storm(5, "0", "shared"), "max"), 30.0);    // 0 = unlimited

  // Staggered: capacity 1, a set-up at 0 and one at 10 ms. Alone the first does 10 ms of its
  // 30; then both run at half speed until it finishes its other 20 at 50 ms; by then the second
  // has done 20 and finishes its last 10 alone at 60 ms. Waits: 50 and 50 ms.
  const Json staggered =
      run({{"duration", "3s"},
           {"workload.arrival", "trace"},
           {"workload.trace", write("staggered.csv", "0,1\n0.010,1\n")},
           {"pool.size", "10"},
           {"database.connect_capacity", "1"},
           {"database.connect_sharing", "shared"}});
  EXPECT_DOUBLE_EQ(wait(staggered, "max"), 50.0);
  EXPECT_DOUBLE_EQ(wait(staggered, "mean"), 50.0);
  expect_one_outcome_each(staggered);

  // A restart's reconnect storm under shared capacity 1 is slower than unlimited, and every
  // request still has one outcome.
  const Options restart = restart_storm();
  Options slow = restart;
  slow["database.connect_capacity"] = "1";
  slow["database.connect_sharing"] = "shared";
  const Json slowed = run(slow);
  EXPECT_GT(wait(slowed, "mean"), 2 * wait(run(restart), "mean"));
  expect_one_outcome_each(slowed);
}

TEST_F(ModelFeatures, ConnectCapacityCurveSetsEachConcurrencysSpeed) {
  // database.connect_capacity as a curve (what poolsim calibrate measures), worked by hand with
  // 30 ms set-ups: with n in flight each runs at capacity(n) / n of full speed.
  auto storm = [&](const std::string& arrivals, const char* curve) {
    return run({{"duration", "3s"},
                {"workload.arrival", "trace"},
                {"workload.trace", write("curve.csv", arrivals)},
                {"pool.size", "20"},
                {"database.connect_capacity", curve},
                {"database.connect_sharing", "shared"}});
  };
  const std::string three = "0,1\n0,1\n0,1\n", four = three + "0,1\n";
  // Between points: 3 in flight on 2:1.5 and 4:2 is a capacity of 1.75, so 30 * 3 / 1.75.
  const Json between = storm(three, "1:1,2:1.5,4:2");
  EXPECT_NEAR(wait(between, "mean"), 90 / 1.75, 1e-5);
  EXPECT_NEAR(wait(between, "max"), 90 / 1.75, 1e-5);
  // At a point: 4 in flight at capacity 2, each at half speed.
  EXPECT_NEAR(wait(storm(four, "1:1,2:1.5,4:2"), "max"), 60, 1e-5);
  // Beyond the last point the server does the last point's capacity: 4 at 1.5, 30 * 4 / 1.5.
  EXPECT_NEAR(wait(storm(four, "1:1,2:1.5"), "max"), 80, 1e-5);
  // Below the first point each set-up runs at the first point's speed: alone at 1 / 2.
  EXPECT_NEAR(wait(storm("0,1\n", "2:1"), "max"), 60, 1e-5);
  // A storm that drains: set-ups at 0 and 10 ms on 1:1,2:1.5. The first runs alone for 10 ms
  // (20 ms of work left), then both at 0.75 until the first is done at 10 + 20 / 0.75 = 36.67 ms;
  // the second has done 20 ms of work by then and finishes its last 10 alone at 46.67 ms.
  // Waits: 36.67 and 46.67 - 10 = 36.67 ms.
  const Json drain = storm("0,1\n0.010,1\n", "1:1,2:1.5");
  EXPECT_NEAR(wait(drain, "mean"), 10 + 20 / 0.75, 1e-5);
  EXPECT_NEAR(wait(drain, "max"), 10 + 20 / 0.75, 1e-5);
  // One number C is the curve min(1, C / n): 1.5 and the one-point curve 1.5's own are alike.
  EXPECT_NEAR(wait(storm(four, "1.5"), "mean"), wait(storm(four, "1:1,2:1.5"), "mean"), 1e-9);
  // The curve is echoed as given.
  EXPECT_EQ(between["config"]["database.connect_capacity"], "1:1,2:1.5,4:2");
}

TEST_F(ModelFeatures, OutagesFailRequestsThenRecover) {
  const Options base = {{"duration", "5s"}, {"workload.rate", "100"}, {"pool.pre_ping", "true"}};
  const Json control = run(base);
  EXPECT_EQ(errors(control), 0u);

  Options down = base;
  down["database.outages"] = "2s+1s";
  const Json during = run(down);
  // Every request in the 1 s outage fails at once: about rate * length connect failures.
  expect_within_band(static_cast<double>(error(during, "connect_failed")), 100, 10,
                     "connect_failed");
  EXPECT_LE(error(during, "disconnect"), 10u);  // only queries in flight when it went down

  // The window after the outage: the pool has reconnected and nothing fails.
  Options after = down;
  after["warmup"] = "3s";
  after["duration"] = "2s";
  const Json recovered = run(after);
  EXPECT_EQ(errors(recovered), 0u);
  EXPECT_EQ(count(recovered, "completed"), count(recovered, "requests"));

  // Several outages are each felt.
  Options two = base;
  two["database.outages"] = "1s+1s,3s+1s";
  expect_within_band(static_cast<double>(error(run(two), "connect_failed")), 200, std::sqrt(200.0),
                     "connect_failed over two outages");
}

// ---- network.* --------------------------------------------------------------------------------

TEST_F(ModelFeatures, IdleDropKillsConnectionsSilently) {
  const Json plain = run(sparse({{"network.idle_drop_after", "500ms"}}));
  EXPECT_GT(error(plain, "disconnect"), 0u);
  const Json pinged =
      run(sparse({{"network.idle_drop_after", "500ms"}, {"pool.pre_ping", "true"}}));
  EXPECT_EQ(errors(pinged), 0u);
  EXPECT_GT(conn(pinged, "opened"), 5);  // a reconnect per request instead of one connection
  const Json control = run(sparse({{"network.idle_drop_after", "2s"}}));
  EXPECT_EQ(errors(control), 0u);
  EXPECT_EQ(conn(control, "opened"), 1);
}

TEST_F(ModelFeatures, DropRateIsPerConnectionPerHour) {
  // One connection used 10 times a second for 1000 s, 360 drops per hour = 0.1 per second:
  // about 100 drops, each costing one reconnect with pre_ping.
  const Options base = {{"duration", "1000s"},    {"workload.arrival", "constant"},
                        {"workload.rate", "10"},  {"workload.service", "const:10ms"},
                        {"pool.size", "1"},       {"pool.max_overflow", "0"},
                        {"pool.pre_ping", "true"}};
  Options dropping = base;
  dropping["network.drop_rate"] = "360";
  const Json control = run(base);
  const Json r = run(dropping);
  EXPECT_EQ(conn(control, "opened"), 1);
  expect_within_band(conn(r, "opened") - 1, 100, 10, "reconnects after drops");
  // A drop in the middle of a 10 ms query (10% of the time) fails it even with pre_ping.
  EXPECT_GT(error(r, "disconnect"), 0u);
  EXPECT_LT(error(r, "disconnect"), 40u);

  Options unpinged = dropping;
  unpinged["pool.pre_ping"] = "false";
  const Json u = run(unpinged);
  expect_within_band(static_cast<double>(error(u, "disconnect")), 100, 10,
                     "disconnects without pre_ping");
}

TEST_F(ModelFeatures, ConnectFailIsTheFractionOfFailedConnects) {
  // Every request connects exactly once: its pooled connection is always dead by the time it
  // comes (idle_session_timeout 5 ms, arrivals 20 ms apart) and pre_ping replaces it.
  const Options base = {{"duration", "20s"},
                        {"workload.arrival", "constant"},
                        {"workload.rate", "50"},
                        {"workload.service", "const:1ms"},
                        {"database.connect", "const:1ms"},
                        {"database.idle_session_timeout", "5ms"},
                        {"pool.pre_ping", "true"},
                        {"pool.size", "1"},
                        {"pool.max_overflow", "0"}};
  const Json control = run(base);
  EXPECT_EQ(errors(control), 0u);
  EXPECT_EQ(conn(control, "opened"), static_cast<double>(count(control, "requests")));
  Options failing = base;
  failing["network.connect_fail"] = "0.3";
  const Json r = run(failing);
  const double n = static_cast<double>(count(r, "requests"));
  const double failed = static_cast<double>(error(r, "connect_failed"));
  EXPECT_EQ(conn(r, "opened") + failed, n);
  expect_within_band(failed / n, 0.3, std::sqrt(0.3 * 0.7 / n), "connect_failed fraction");
}

}  // namespace
}  // namespace poolsim::sim
