// calibrate's arithmetic on made-up measurements (no server): the connect capacity curve it
// fits from connect storms, and validate's rule for a machine whose speed drifted.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "real_pool/live.hpp"
#include "sim/result.hpp"
#include "sim/scenario.hpp"

namespace poolsim::real_pool {
namespace {

// Measurements of a server whose storms behave exactly as processor sharing on a known curve:
// 1:1, 2:1.5, 4:2, 8:2.5, 16:3 (set-ups' worth of work at once). Every connect alone takes
// `lone` ms; n started together, with equal work, all finish at n * lone / capacity(n), computed
// here by hand: 1 -> 1, 2 -> 2 / 1.5, 4 -> 4 / 2, 8 -> 8 / 2.5, 16 -> 16 / 3 lone connects.
constexpr double kCapacity[] = {1, 1.5, 2, 2.5, 3};
Measurements server(double lone, double jitter = 0.0) {
  Measurements m;
  for (int i = 0; i < 50; ++i) m.connect.push_back(lone * (1 + 0.002 * ((i % 5) - 2)));
  for (int i = 0; i < 50; ++i) {
    m.ping.push_back(0.2);
    m.reset.push_back(0.05);
    m.statement.push_back(0.9);
  }
  m.storms.resize(std::size(kStormSizes));
  for (std::size_t k = 0; k < std::size(kStormSizes); ++k) {
    const int n = kStormSizes[k];
    for (int round = 0; round < kStormRounds; ++round) {
      // Rounds alternate a little faster and slower, as a real machine's do.
      const double wobble = 1 + jitter * (round % 2 == 0 ? 1 : -1);
      m.storms[k].push_back(std::vector<double>(n, n * lone / kCapacity[k] * wobble));
    }
  }
  m.dsn = "host=db";
  return m;
}

TEST(Calibrate, FitsTheCapacityCurveOfItsStorms) {
  const Calibration c = summarize(server(20.0));
  // The curve as the scenario parser reads it: its points are the storms' capacities (within
  // 1%: the lone cost's distribution has a cv of 1%, and processor sharing finishes a storm of
  // unequal set-ups a little sooner than one of equal ones).
  const std::string curve = c.json["options"]["database.connect_capacity"];
  const std::vector<sim::CapacityPoint> points =
      sim::make_scenario({{"database.connect_capacity", curve},
                          {"database.connect_sharing", "shared"}},
                         {})
          .connect_curve;
  ASSERT_EQ(points.size(), std::size(kStormSizes)) << curve;
  for (std::size_t k = 0; k < points.size(); ++k) {
    EXPECT_EQ(points[k].concurrency, kStormSizes[k]);
    EXPECT_NEAR(points[k].capacity, kCapacity[k], 0.01 * kCapacity[k]) << curve;
  }
  EXPECT_EQ(c.json["options"]["database.connect_sharing"], "shared");
  EXPECT_NE(c.ini.find("connect_capacity = " + curve + "\n"), std::string::npos) << c.ini;
  const sim::Json& storms = c.json["connect_storms"];
  ASSERT_EQ(storms.size(), std::size(kStormSizes));
  for (std::size_t k = 0; k < storms.size(); ++k) {
    EXPECT_EQ(storms[k]["connects_at_once"], kStormSizes[k]);
    EXPECT_EQ(storms[k]["rounds"], kStormRounds);
    EXPECT_NEAR(storms[k]["capacity"].get<double>(), kCapacity[k], 0.01 * kCapacity[k]);
    EXPECT_NEAR(storms[k]["per_s"].get<double>(), kCapacity[k] / 20.0 * 1e3, 1e-6);
  }
}

TEST(Calibrate, ReportsEachStormSizesSpread) {
  // Rounds 10% slower and faster than the mean: the capacities of the slowest and the fastest
  // round bracket the fitted one, about 10% either side.
  const Calibration c = summarize(server(20.0, 0.10));
  const sim::Json& storm8 = c.json["connect_storms"][3];
  EXPECT_NEAR(storm8["round_min_ms"].get<double>(), 8 * 20.0 / 2.5 * 0.9, 1e-9);
  EXPECT_NEAR(storm8["round_max_ms"].get<double>(), 8 * 20.0 / 2.5 * 1.1, 1e-9);
  const double low = storm8["capacity_range"][0], high = storm8["capacity_range"][1];
  // The fit takes the rounds' mean: 4 of the 7 rounds are the slower ones.
  EXPECT_NEAR(storm8["capacity"].get<double>(), 2.5 / (1 + 0.1 / kStormRounds), 0.01 * 2.5);
  EXPECT_LT(low, 2.5 / 1.05);
  EXPECT_GT(high, 2.5 / 0.95);
}

TEST(Calibrate, TheSimulatorReproducesTheStormsItWasFittedTo) {
  // 8 requests at once, each needing its own connection, simulated with the fitted curve and
  // the lone cost: their mean wait is the storm's measured mean per connect, 8 * 20 / 2.5 ms.
  const Calibration c = summarize(server(20.0));
  const auto trace = std::filesystem::temp_directory_path() /
                     ("poolsim_calibrate_test_" + std::to_string(::getpid()) + ".csv");
  {
    std::ofstream out(trace);
    for (int i = 0; i < 8; ++i) out << "0,1\n";
  }
  const sim::Scenario s = sim::make_scenario(
      {{"duration", "3s"},
       {"workload.arrival", "trace"},
       {"workload.trace", trace.string()},
       {"pool.size", "8"},
       {"database.connect", c.json["options"]["database.connect"]},
       {"database.connect_capacity", c.json["options"]["database.connect_capacity"]},
       {"database.connect_sharing", "shared"}},
      {});
  const sim::Json r = sim::simulate(s);
  std::filesystem::remove(trace);
  EXPECT_EQ(r["requests"], 8);
  EXPECT_NEAR(r["wait_ms"]["mean"].get<double>(), 8 * 20.0 / 2.5, 0.01 * 64);
  EXPECT_NEAR(c.json["connect_storms"][3]["model_mean_ms"].get<double>(), 64, 0.01 * 64);
  // Between points the speed is interpolated: 6 in flight between 4:2 and 8:2.5.
  EXPECT_NEAR(s.connect_speed(6), 2.25 / 6, 0.01);
}

TEST(Calibrate, ADriftIsAChangeBeyondTheRuleNotNoise) {
  const Measurements before = server(20.0, 0.02);
  // The same machine measured again: no drift.
  EXPECT_FALSE(compare_drift(before, server(20.0, 0.02))["drifted"].get<bool>());
  // 10% slower: within kDriftMinChange, not a drift.
  EXPECT_FALSE(compare_drift(before, server(22.0, 0.02))["drifted"].get<bool>());
  // 40% slower afterwards: a lone connect and the storm rounds both drifted, and the text
  // names the figures.
  const sim::Json slower = compare_drift(before, server(28.0, 0.02));
  EXPECT_TRUE(slower["drifted"].get<bool>());
  EXPECT_TRUE(slower["lone_connect"]["drifted"].get<bool>());
  EXPECT_TRUE(slower["storm_round"]["drifted"].get<bool>());
  EXPECT_NEAR(slower["lone_connect"]["change"].get<double>(), 0.4, 1e-9);
  const std::string text = drift_text(slower);
  EXPECT_NE(text.find("a lone connect took 20.0 ms before the live run, 28.0 ms after (+40%"),
            std::string::npos)
      << text;
  EXPECT_EQ(drift_text(compare_drift(before, server(20.0))), "");
  // 40% slower but with rounds that scatter by +-60%: the storm rounds' change is noise.
  const sim::Json noisy = compare_drift(server(20.0, 0.6), server(28.0, 0.6));
  EXPECT_FALSE(noisy["storm_round"]["drifted"].get<bool>());
  EXPECT_GT(noisy["storm_round"]["noise"].get<double>(), 0.4);
}

TEST(Calibrate, MergedMeasurementsKeepEverySample) {
  const Measurements both = merge(server(20.0), server(30.0));
  EXPECT_EQ(both.connect.size(), 100u);
  EXPECT_EQ(both.storms[2].size(), 2u * kStormRounds);
  EXPECT_NEAR(summarize(both).json["connect"]["mean_ms"].get<double>(), 25.0, 1e-9);
}

}  // namespace
}  // namespace poolsim::real_pool
