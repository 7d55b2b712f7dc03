// `poolsim live`: a scenario's workload run in real time against PostgreSQL through PgPool.
//
// The arrivals and hold times are the simulation's (sim::Workload, same seed): each request
// checks out, runs `SELECT pg_sleep(hold)` (or the user's SQL), and returns its connection.
// The load is open loop: a dispatcher releases each request at its planned instant whatever
// the pool is doing, so a slow pool shows up as waits, never as fewer arrivals. Faults are real:
// pg_terminate_backend for network.drop_rate, the session's idle_session_timeout, the fault
// proxy for network.idle_drop_after, server restarts for database.outages and the server's own
// max_connections (both only on a server the run starts itself, --dsn auto).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "sim/model.hpp"
#include "sim/result.hpp"
#include "sim/scenario.hpp"

namespace poolsim::real_pool {

// A live checkout that found an idle connection takes microseconds: waits up to this long count
// as no wait in p_wait, as the simulation counts them.
inline constexpr std::chrono::microseconds kLiveNoWait{200};

struct LiveOptions {
  std::string dsn = "auto";  // "auto": start a throw-away PostgreSQL for the run
  std::string sql;           // run by each request with $1 = its hold in seconds; "" = pg_sleep
};

// Thrown when a scenario asks for something a live run cannot do (one line, key and value).
struct LiveError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws LiveError unless `dsn` can name a database: an empty one would make libpq fall back to
// its defaults (the local socket, the user's name), a server the user did not mean.
void check_dsn(const std::string& dsn);

// Runs the scenario once (replication 0) in real time and returns the result schema with
// "mode": "live".
sim::Json run_live(const sim::Scenario& scenario, const LiveOptions& options,
                   const sim::Progress& progress = {});

// `poolsim calibrate` (real_pool/calibrate.cpp): measures connect, ping (SELECT 1), reset
// (ROLLBACK of an open transaction), pg_sleep's round trip and connect storms on the server,
// and returns them as [database] options, the storms as database.connect_capacity's curve.
struct Calibration {
  sim::Json json;  // {"connect": {"mean_ms",...}, ..., "options": {"database.connect": "...", ...}}
  std::string ini;  // the [database] section to paste into a scenario file
};
Calibration calibrate(const std::string& dsn, int samples = 50);

// The storms calibrate starts: this many connects at once, kStormRounds rounds of each.
inline constexpr int kStormSizes[] = {1, 2, 4, 8, 16};
inline constexpr int kStormRounds = 7;

// What calibrate measures, in ms, before it is summarized: validate measures twice, before and
// after its live run, compares the two (compare_drift) and simulates with both together.
struct Measurements {
  std::vector<double> connect, ping, reset, statement;  // one sample each
  // storms[i][round]: each connect's time from the start of a storm of kStormSizes[i], ascending
  std::vector<std::vector<std::vector<double>>> storms;
  std::string dsn;  // password masked
};
Measurements measure(const std::string& dsn, int samples = 50);  // a real DSN, not "auto"
Measurements merge(const Measurements& a, const Measurements& b);
Calibration summarize(const Measurements& m);

// The machine drifted between two measurements when a lone connect's mean, or a storm round's
// (the mean times per connect of its storms added up), changed by more than kDriftMinChange and
// by more than kDriftNoiseSe standard errors of the difference. Returns {"drifted", "rule",
// "lone_connect": {"before_ms", "after_ms", "change", "noise", "drifted"}, "storm_round": {...}}.
inline constexpr double kDriftMinChange = 0.25;
inline constexpr double kDriftNoiseSe = 3.0;
sim::Json compare_drift(const Measurements& before, const Measurements& after);
// The drifted figures of compare_drift's result in words, "" when none drifted.
std::string drift_text(const sim::Json& drift);

// `poolsim validate`: the scenario live, then simulated with `replications` (at least 10), and
// for each metric whether the live figure lies within the simulation's 95% interval widened by
// the tolerance for measurement noise (stated per metric in the result's "tolerance").
// `calibrate_first` measures the server right before the live run and again right after it,
// simulates with both measurements together, and reports the comparison as "drift"; the
// report's "verdict" is "agrees" (every metric within), "differs", or "drift" (the machine's
// speed changed during the run: the comparison is no verdict on the model).
// `live` runs the live side: run_live by default; Python's validate(against="sqlalchemy")
// passes one that drives the same workload through a real SQLAlchemy engine. A runner that
// measured its own cost beyond each hold (asked to when calibrating) returns it in its result as
// "calibration": {"statement": {..., "distribution"}}; validate simulates with that instead of
// libpq's statement cost and moves it to the report's calibration block.
using LiveRunner = std::function<sim::Json(const sim::Scenario&, const sim::Progress&)>;
sim::Json validate(const sim::Scenario& scenario, const LiveOptions& options, bool calibrate_first,
                   const sim::Progress& progress = {}, const LiveRunner& live = {});
std::string validate_table(const sim::Json& report);

// The password of a conninfo string replaced by "****", for output, logs and errors.
std::string mask_password(const std::string& conninfo);

}  // namespace poolsim::real_pool
