// A simulation scenario: every row of DESIGN.md's option table, parsed and checked.
//
// One option set, two spellings: an INI scenario file ([pool] size = 20) and --pool.size=20 on
// the command line, which overrides the file. kOptions below is the one table that parsing,
// `poolsim --help` and the "config" block of every result are made from.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "pool_model/hikari_core.hpp"
#include "pool_model/pgbouncer_core.hpp"
#include "pool_model/psycopg_core.hpp"
#include "pool_model/pool_config.hpp"
#include "sim/distribution.hpp"

namespace poolsim::sim {

enum class Arrival { kPoisson, kConstant, kOnOff, kDiurnal, kTrace, kClosed };
enum class Routing { kRoundRobin, kRandom };
enum class ConnectSharing { kQueue, kShared };

// One point of database.connect_capacity given as a curve: with `concurrency` set-ups in flight
// the server does `capacity` lone set-ups' worth of work at once.
struct CapacityPoint {
  int concurrency;
  double capacity;
};

// How fast each of `running` set-ups in flight progresses under a capacity curve (not empty), 1 =
// as fast as one alone: capacity(running) / running, the capacity interpolated linearly between
// points; below the first point each set-up runs at the first point's speed, beyond the last the
// server does the last point's capacity.
double curve_speed(const std::vector<CapacityPoint>& curve, double running);

struct Outage {
  Duration start;
  Duration length;
};

// One arrival of a replayed trace: its time from the start, and its hold time if the trace has one.
struct TraceEntry {
  Duration at;
  std::optional<Duration> hold;
};

struct Scenario {
  Duration duration = std::chrono::seconds(60);
  Duration warmup{0};
  std::uint64_t seed = 1;
  int replications = 1;

  PoolConfig pool;      // pool.*
  HikariConfig hikari;    // hikari.*, for pool.policy = hikari (its seed is set per pool)
  PsycopgConfig psycopg;  // psycopg.*, for pool.policy = psycopg (its seed is set per pool)
  PgbouncerConfig pgbouncer;    // pgbouncer.*, for pool.policy = pgbouncer
  Distribution bouncer_connect;  // pgbouncer.connect: an app connection's set-up to pgbouncer

  Arrival arrival = Arrival::kPoisson;
  double rate = 100;       // per second, all processes together
  double burst_rate = 0;   // onoff: the rate while a burst is on
  Duration burst_on{0};    // onoff: how long a burst lasts
  Duration burst_off{0};   // onoff: time between bursts
  Duration period{0};      // diurnal: one full cycle
  double amplitude = 0.5;  // diurnal: rate swings between rate*(1-a) and rate*(1+a)
  Distribution service;    // hold time
  int clients = 0;         // closed loop
  Distribution think;      // closed loop
  std::filesystem::path trace_file;
  std::shared_ptr<const std::vector<TraceEntry>> trace;

  int processes = 1;
  int threads = 0;  // per process, 0 = unlimited
  Routing routing = Routing::kRoundRobin;

  int max_connections = 100;
  Distribution connect;
  Distribution ping;
  Distribution reset;
  Duration idle_session_timeout{0};
  // Set-ups the server runs at once, 0 = unlimited. kQueue: at most this many run, the rest wait
  // in line. kShared: all run, each at min(1, capacity / running) speed (processor sharing).
  double connect_capacity = 0;
  ConnectSharing connect_sharing = ConnectSharing::kQueue;
  // kShared only: the capacity as a curve over the set-ups in flight ("1:1,2:1.2,8:1.6", what
  // `poolsim calibrate` measures), ascending by concurrency; empty when given as one number.
  std::vector<CapacityPoint> connect_curve;
  std::vector<Outage> outages;

  Duration idle_drop_after{0};
  double drop_rate = 0;  // silent drops per connection per hour
  double connect_fail = 0;

  // The options as given (after defaults), in table order: the "config" block of a result.
  std::vector<std::pair<std::string, std::string>> echo;

  // The echo without the options that do not apply to this pool design (pool.size of a
  // NullPool, hikari.* of a QueuePool): what runs the same scenario again, as the live side
  // of validate does, since make_scenario refuses those when given.
  std::map<std::string, std::string> rerun_options() const;

  // kShared: how fast each of `running` set-ups in flight progresses, 1 = as fast as one alone:
  // min(1, connect_capacity / running), or curve_speed of connect_curve.
  double connect_speed(double running) const;

  // The text an option was given as (or its default); std::logic_error for an unknown key.
  const std::string& option(const std::string& key) const;
  // Records in the echo that code changed an option after parsing (sizing, calibration).
  void set_option(const std::string& key, const std::string& text);
};

struct OptionInfo {
  const char* key;
  const char* default_value;  // as a user would write it; "" = none
  const char* help;           // meaning, with the unit
};
extern const std::vector<OptionInfo> kOptions;

// Whether `key` is a setting of pool design `policy`: hikari.* only of hikari, psycopg.* only
// of psycopg, pgbouncer.* only of pgbouncer; pool.size, max_overflow, timeout and use_lifo not
// of null or static; of pool.* only policy and reset_on_return of hikari and psycopg. make_scenario refuses a given option that does not apply.
bool option_applies(Policy policy, std::string_view key);
// Whether the arrival kind reads the option (workload.burst_* only onoff, workload.clients only
// closed, ...): make_scenario refuses one given for another kind.
bool option_applies(Arrival arrival, std::string_view key);

// Thrown for bad input; what() is one line naming the key, the value and what is allowed.
struct ScenarioError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Builds a scenario from key -> value text (missing keys take their defaults). Relative file
// names (traces, empirical distributions) are resolved against base_dir.
Scenario make_scenario(const std::map<std::string, std::string>& values,
                       const std::filesystem::path& base_dir);

}  // namespace poolsim::sim
