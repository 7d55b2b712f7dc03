// The bugs the fuzz tests (fuzz_test.cpp) found, each with the input that showed it, reduced.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "pool_model/pool_core.hpp"
#include "sim/model.hpp"
#include "sim/scenario.hpp"

// tests/fuzz/conformance_replay.cpp: the replay's main().
int queuepool_conformance_main(int argc, char** argv);

namespace poolsim {
namespace {

using namespace std::chrono_literals;
using Values = std::map<std::string, std::string>;

std::filesystem::path temp_dir() {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("poolsim-fuzz-regressions-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

std::string refusal(const Values& values, const std::filesystem::path& base_dir = {}) {
  try {
    sim::make_scenario(values, base_dir);
  } catch (const sim::ScenarioError& e) {
    return e.what();
  }
  return "";
}

sim::ReplicationStats run(const Values& values) {
  return sim::run_replication(sim::make_scenario(values, {}), 0);
}

std::uint64_t answered(const sim::ReplicationStats& st) {
  return st.completed + st.timeouts + st.connect_failed + st.too_many_connections + st.disconnect;
}

// ---- sim/ ------------------------------------------------------------------------------------

TEST(FuzzRegressions, ATinyRateDrawsNoArrivalsInsteadOfOneLongAgo) {
  // The first gap (~1e315 s) overflowed llround to a negative time: TimeWeighted threw "time
  // went back from 0ns to -9223372036854775808ns" and `poolsim simulate` terminated.
  for (const char* rate : {"4.9e-324", "1e-12"}) {
    for (const char* arrival : {"poisson", "constant", "onoff", "diurnal"}) {
      SCOPED_TRACE(std::string(arrival) + " at " + rate);
      Values values{{"workload.arrival", arrival}, {"workload.rate", rate}};
      if (std::string(arrival) == "onoff") values["workload.burst_rate"] = rate;
      const auto st = run(values);
      EXPECT_EQ(st.requests, std::string(arrival) == "constant" ? 1u : 0u);  // constant: at 0
    }
  }
  // At the end of the longest run, a gap that long must not wrap around either.
  const auto st =
      run({{"workload.rate", "1e-12"}, {"warmup", "1000000h"}, {"duration", "1000000h"}});
  EXPECT_LE(st.requests, 1u);
}

TEST(FuzzRegressions, ATinyDropRateDropsNothing) {
  // A drop ~3.6e12 s away overflowed into the past: every new connection died at once and
  // nearly every request ended in a disconnect.
  const auto st = run({{"duration", "10s"}, {"network.drop_rate", "1e-9"}});
  EXPECT_GT(st.completed, 900u);
  EXPECT_EQ(st.disconnect, 0u);
}

TEST(FuzzRegressions, ModelTimeStopsAtTheEndOfTheInt64Range) {
  // Connects of 1000000h queued behind each other ended past 2^63 ns: the time wrapped to a
  // negative one and PoolCore threw "time went backwards" (signed overflow under UBSan).
  const auto st = run({{"workload.arrival", "constant"},
                       {"workload.rate", "1"},
                       {"duration", "5s"},
                       {"database.connect_capacity", "1"},
                       {"database.connect", "const:1000000h"}});
  EXPECT_EQ(st.requests, 5u);
  EXPECT_EQ(st.completed, 5u);
  // The same with holds of 1000000h behind one thread, and pings of that long.
  const auto held = run({{"workload.arrival", "constant"},
                         {"workload.rate", "1"},
                         {"duration", "5s"},
                         {"app.threads", "1"},
                         {"pool.timeout", "none"},
                         {"pool.pre_ping", "true"},
                         {"database.ping", "const:1000000h"},
                         {"workload.service", "const:1000000h"}});
  EXPECT_EQ(answered(held), held.requests);
}

TEST(FuzzRegressions, TraceTimesBeyondTheLongestDurationAreRefused) {
  // "1,1e10": a hold of 1e10 s overflowed llround; now + hold wrapped around.
  const auto dir = temp_dir();
  for (const char* line : {"1,1e10", "1e300", "0.5,9.3e9"}) {
    std::ofstream(dir / "trace.csv") << line << "\n";
    const std::string why =
        refusal({{"workload.arrival", "trace"}, {"workload.trace", (dir / "trace.csv").string()}});
    EXPECT_NE(why.find("workload.trace"), std::string::npos) << why;
    EXPECT_NE(why.find("at most"), std::string::npos) << why;
  }
  std::filesystem::remove_all(dir);
}

TEST(FuzzRegressions, SetUpsQueuedWhenAnOutageStartsAreNotStranded) {
  // A set-up started from the queue during an outage is refused at once and took no capacity,
  // but the queue was not drained further: the set-ups behind it waited forever and 48 requests
  // were never answered although pool.timeout was 30s.
  const auto st = run({{"duration", "30s"},
                       {"app.processes", "3"},
                       {"app.threads", "6"},
                       {"database.connect_capacity", "1"},
                       {"database.max_connections", "77"},
                       {"database.outages", "29s+8s,48s+3ms,80s+6ms"},
                       {"database.connect", "exp:44ms"},
                       {"network.drop_rate", "1977"},
                       {"pool.pre_ping", "yes"}});
  EXPECT_GT(st.requests, 2000u);
  EXPECT_EQ(answered(st), st.requests);
}

TEST(FuzzRegressions, AClosedLoopNeedsAThinkTime) {
  // Think const:0 and requests that fail at once (timeout 0 at the limit): each client sent its
  // next request at the same instant, forever (poolsim simulate hung at t = 0).
  const std::string why = refusal({{"workload.arrival", "closed"},
                                   {"workload.clients", "2"},
                                   {"workload.think", "const:0"},
                                   {"workload.service", "const:1h"},
                                   {"pool.timeout", "0"},
                                   {"pool.size", "1"},
                                   {"pool.max_overflow", "0"}});
  EXPECT_NE(why.find("workload.think = const:0"), std::string::npos) << why;
}

TEST(FuzzRegressions, BillionsOfBurstsAreRefused) {
  // Drawing on/off arrivals visits every burst: 1ns bursts for 1000h took hours.
  const std::string why = refusal({{"workload.arrival", "onoff"},
                                   {"workload.burst_rate", "1"},
                                   {"workload.burst_on", "1ns"},
                                   {"workload.burst_off", "1ns"},
                                   {"duration", "1000h"}});
  EXPECT_NE(why.find("workload.burst_on"), std::string::npos) << why;
}

// ---- pool_model/ -------------------------------------------------------------------------------

TEST(FuzzRegressions, PoolSizeIntMinIsRefusedNotNegated) {
  // The constructor negated pool_size before validate() refused it (signed overflow).
  PoolConfig config;
  config.pool_size = INT_MIN;
  EXPECT_THROW(PoolCore core(config), std::invalid_argument);
}

TEST(FuzzRegressions, ATimeoutOf292YearsNeverExpires) {
  // now + timeout overflowed (signed overflow under UBSan; a deadline in the past otherwise).
  PoolConfig config;
  config.pool_size = 1;
  config.max_overflow = 0;
  config.timeout = Duration::max();
  PoolCore core(config);
  const Instant now = Instant(1h);
  core.handle(now, CheckoutRequested{RequestId{1}});
  const auto open = core.poll_action();
  ASSERT_TRUE(open && std::holds_alternative<OpenConnection>(*open));
  core.handle(now, ConnectSucceeded{std::get<OpenConnection>(*open).slot, ConnId{1}});
  while (core.poll_action()) {
  }
  core.handle(now, CheckoutRequested{RequestId{2}});
  EXPECT_EQ(core.poll_timeout(), Instant::max());
  core.handle_timeout(Instant(Duration(std::int64_t{1} << 62)));
  EXPECT_EQ(core.status().waiting, 1);
  core.check_invariants();
}

// ---- the conformance replay --------------------------------------------------------------------

TEST(FuzzRegressions, ReplayClocksStayInRange) {
  // Ten advances of 1e9 s overflowed the scenario clock (PoolCore: "time went backwards");
  // checkouts waiting out a 1e9 s timeout overflowed the wait clock (signed overflow).
  const auto dir = temp_dir();
  const std::string defaults =
      R"("defaults": {"pool_size": 0, "max_overflow": 0, "timeout": 1e9, "recycle": -1,
          "pre_ping": false, "use_lifo": false, "reset_on_return": "rollback"})";
  std::string advances, waits;
  for (int i = 0; i < 12; ++i) {
    advances += R"({"op": "advance", "seconds": 1e9},)";
    waits += R"({"op": "checkout", "as": "w)" + std::to_string(i) + R"("},)";
  }
  const struct {
    std::string steps;
    const char* message;
  } cases[] = {
      {advances + R"({"op": "status"})", "the scenario clock would pass 4e9 seconds"},
      {waits + R"({"op": "status"})", "the script's waits add up to more than 4e9 seconds"},
  };
  for (const auto& c : cases) {
    const auto file = dir / "scenarios.json";
    std::ofstream(file) << R"({"format": "queuepool-conformance/1", "clock_start": 1000, )"
                        << defaults << R"(, "scenarios": [{"name": "x", "steps": [)" << c.steps
                        << "]}]}";
    std::ostringstream out, err;
    auto* old_out = std::cout.rdbuf(out.rdbuf());
    auto* old_err = std::cerr.rdbuf(err.rdbuf());
    std::vector<std::string> args = {"queuepool_conformance", "--compat", "1.4", file.string()};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    const int status = queuepool_conformance_main(static_cast<int>(argv.size()), argv.data());
    std::cout.rdbuf(old_out);
    std::cerr.rdbuf(old_err);
    EXPECT_EQ(status, 2);
    EXPECT_NE(err.str().find(c.message), std::string::npos) << err.str();
    EXPECT_EQ(err.str().find("PoolCore"), std::string::npos) << err.str();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace poolsim
