#include "sim/scenario.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include "sim/units.hpp"

namespace poolsim::sim {

const std::vector<OptionInfo> kOptions = {
    {"duration", "60s", "simulated time per replication, after warm-up"},
    {"warmup", "0s", "simulated time discarded before statistics start"},
    {"seed", "1", "master seed; every random stream derives from it"},
    {"replications", "1", "independent runs; more than 1 gives 95% confidence intervals"},
    {"pool.policy", "queuepool",
     "pool design: queuepool (SQLAlchemy QueuePool), null (NullPool: a new connection for "
     "every checkout, closed on return), static (StaticPool: one connection shared by every "
     "checkout; requests take turns on it) - for null and static pool.size, max_overflow, "
     "timeout, use_lifo do not apply - hikari (HikariCP: set with hikari.*) or psycopg "
     "(psycopg_pool's ConnectionPool: set with psycopg.*), for which of pool.* only "
     "pool.reset_on_return applies - or pgbouncer (each process's QueuePool, set with pool.*, "
     "connects to pgbouncer, whose transaction pooling, set with pgbouncer.*, shares its "
     "server connections among them)"},
    {"pool.size", "5", "SQLAlchemy pool_size: idle connections kept per process; 0 = no limit"},
    {"pool.max_overflow", "10", "max_overflow: connections beyond pool.size; -1 = unlimited"},
    {"pool.timeout", "30s",
     "pool_timeout: how long a checkout waits; 0 = fail at once; none = forever"},
    {"pool.recycle", "-1",
     "pool_recycle: replace connections older than this at checkout; -1 = never"},
    {"pool.pre_ping", "false", "pool_pre_ping: SELECT 1 before reusing a connection"},
    {"pool.use_lifo", "false", "pool_use_lifo: reuse the most recently returned connection"},
    {"pool.reset_on_return", "rollback", "rollback, commit or none"},
    {"pool.compat", "2.0", "SQLAlchemy semantics, 1.4 or 2.0 (they differ only for pool.size 0)"},
    {"hikari.maximum_pool_size", "10",
     "pool.policy = hikari: maximumPoolSize, connections per process, idle and in use"},
    {"hikari.minimum_idle", "max",
     "minimumIdle: idle connections HikariCP refills to in the background; max = "
     "hikari.maximum_pool_size (HikariCP's default: a fixed-size pool)"},
    {"hikari.connection_timeout", "30s",
     "connectionTimeout: how long getConnection() waits; at least 250ms; 0 = forever"},
    {"hikari.idle_timeout", "10min",
     "idleTimeout: idle connections beyond minimum_idle are closed after this (the "
     "housekeeper looks every 30s); 0 = never; at least 10s when minimum_idle is below "
     "maximum_pool_size"},
    {"hikari.max_lifetime", "30min",
     "maxLifetime: each connection is retired after this, minus up to 2.5% at random; "
     "0 = never; at least 30s"},
    {"hikari.keepalive_time", "0",
     "keepaliveTime: idle connections are checked this often, minus up to 10% at random; "
     "0 = off; at least 30s and below max_lifetime"},
    {"psycopg.min_size", "4",
     "pool.policy = psycopg: min_size, connections per process opened at the start and kept"},
    {"psycopg.max_size", "min",
     "max_size: the pool grows to this, one connect at a time, only while a client waits; "
     "min = psycopg.min_size (psycopg_pool's default: a fixed-size pool)"},
    {"psycopg.timeout", "30s", "timeout: how long getconn() waits; then PoolTimeout"},
    {"psycopg.max_idle", "10min",
     "max_idle: every max_idle one connection beyond min_size that stayed idle all along "
     "is closed; at least 1s"},
    {"psycopg.max_lifetime", "1h",
     "max_lifetime: a connection returned after this, minus up to 5% at random, is "
     "replaced; 0 = replace every returned connection"},
    {"psycopg.reconnect_timeout", "5min",
     "reconnect_timeout: a failed connect is retried with back-off (1s, doubling, +-10%) "
     "for this long, then given up"},
    {"psycopg.num_workers", "3",
     "num_workers: worker threads; at most this many connects in flight per process"},
    {"psycopg.check", "false",
     "check on checkout (psycopg_pool 3.2's check=ConnectionPool.check_connection): a "
     "SELECT-like round trip before getconn() returns a connection; 3.1 has none"},
    {"pgbouncer.default_pool_size", "20",
     "pool.policy = pgbouncer: server connections pgbouncer opens, shared by every process's "
     "pool (one database/user pair)"},
    {"pgbouncer.min_pool_size", "0", "servers kept open (refilled one per janitor tick)"},
    {"pgbouncer.reserve_pool_size", "0",
     "extra servers, opened for a client that has waited pgbouncer.reserve_pool_timeout"},
    {"pgbouncer.reserve_pool_timeout", "5s", "wait after which the reserve is used"},
    {"pgbouncer.server_idle_timeout", "10min",
     "servers idle this long are closed (down to min_pool_size); 0 = never"},
    {"pgbouncer.server_lifetime", "1h",
     "servers this old are closed when idle, one per server_lifetime / default_pool_size"},
    {"pgbouncer.query_wait_timeout", "120s",
     "a transaction waiting this long for a server is refused and its client disconnected "
     "(a timeout); 0 = wait forever"},
    {"pgbouncer.server_login_retry", "15s", "after a failed server login, the wait before the "
                                            "next (clients fail at once meanwhile)"},
    {"pgbouncer.server_check_delay", "30s",
     "servers idle this long run select 1 (database.ping) before reuse; 0 = before every reuse"},
    {"pgbouncer.max_db_connections", "0", "cap on the database's servers; 0 = no cap"},
    {"pgbouncer.connect", "const:1ms",
     "an app connection's set-up to pgbouncer, which logs clients in itself (distribution)"},
    {"workload.arrival", "poisson", "poisson, constant, onoff, diurnal, trace or closed"},
    {"workload.rate", "100",
     "mean arrivals per second, all processes together (onoff: between bursts)"},
    {"workload.burst_rate", "", "onoff: arrivals per second during a burst"},
    {"workload.burst_on", "1s", "onoff: how long each burst lasts"},
    {"workload.burst_off", "9s", "onoff: time between bursts (the first burst starts after it)"},
    {"workload.period", "1h", "diurnal: length of one cycle of the sinusoidal rate"},
    {"workload.amplitude", "0.5",
     "diurnal: the rate swings between rate*(1-a) and rate*(1+a), 0..1"},
    {"workload.service", "exp:10ms", "how long a request holds its connection (distribution)"},
    {"workload.clients", "", "closed: number of clients, each request -> think -> request ..."},
    {"workload.think", "exp:100ms",
     "closed: think time between a client's requests (distribution)"},
    {"workload.trace", "", "trace: CSV of arrival times in seconds and optional hold times"},
    {"app.processes", "1", "worker processes (gunicorn workers), each with its own pool"},
    {"app.threads", "0", "concurrent requests per process (gthread threads); 0 = unlimited"},
    {"app.routing", "round_robin", "how requests are spread over processes: round_robin or random"},
    {"database.max_connections", "100",
     "the server refuses connections beyond this (all processes)"},
    {"database.connect", "const:30ms", "connection setup cost (distribution)"},
    {"database.ping", "const:200us", "cost of a pre-ping round trip (distribution)"},
    {"database.reset", "const:50us", "cost of the reset-on-return rollback (distribution)"},
    {"database.idle_session_timeout", "0", "server closes connections idle this long; 0 = never"},
    {"database.connect_capacity", "0",
     "connection set-ups the server handles at once; 0 = unlimited (shared: may be fractional, "
     "or a curve of concurrency:capacity pairs as poolsim calibrate measures it, e.g. "
     "1:1,2:1.2,4:1.4,8:1.6,16:1.7: with n set-ups in flight each runs at capacity(n)/n of a "
     "lone set-up's speed, interpolated between points)"},
    {"database.connect_sharing", "queue",
     "set-ups beyond connect_capacity: queue (wait for a free one) or shared (all run at once "
     "and share it, as CPU-bound handshakes do)"},
    {"database.outages", "",
     "restarts: START+LENGTH list, e.g. 20s+5s,40s+1s; all connections die"},
    {"network.idle_drop_after", "0",
     "a middlebox silently kills connections idle this long; 0 = never"},
    {"network.drop_rate", "0", "silent connection drops per connection per hour"},
    {"network.connect_fail", "0", "probability that a connect attempt fails, 0..1"},
};

namespace {

// Keeps the requests of one replication countable: beyond this a run would take hours.
constexpr double kMaxRequestsPerReplication = 1e10;

class Reader {
 public:
  Reader(const std::map<std::string, std::string>& values, std::filesystem::path base_dir)
      : values_(values), base_dir_(std::move(base_dir)) {
    for (const auto& [key, value] : values) {
      const bool known = std::any_of(kOptions.begin(), kOptions.end(),
                                     [&](const OptionInfo& o) { return key == o.key; });
      if (!known)
        throw ScenarioError(key + " = " + value + ": unknown option (see poolsim --help)");
    }
  }

  std::string text(const char* key) {
    auto it = values_.find(key);
    if (it != values_.end()) return it->second;
    for (const OptionInfo& o : kOptions) {
      if (key == std::string(o.key)) return o.default_value;
    }
    throw std::logic_error(std::string("no such option ") + key);
  }

  [[noreturn]] void refuse(const char* key, const std::string& why) {
    throw ScenarioError(std::string(key) + " = " + shown(text(key)) + ": " + why);
  }

  template <typename Parse>
  auto parse(const char* key, Parse parse_value) {
    try {
      return parse_value(text(key));
    } catch (const ParseError& e) {
      refuse(key, e.what());
    }
  }

  Duration duration(const char* key) {
    return parse(key, [](const std::string& t) { return parse_duration(t); });
  }
  double number(const char* key) {
    return parse(key, [](const std::string& t) { return parse_number(t); });
  }
  std::int64_t integer(const char* key, std::int64_t min, std::int64_t max, const char* allowed) {
    const std::int64_t v = parse(key, [](const std::string& t) { return parse_integer(t); });
    if (v < min || v > max) refuse(key, allowed);
    return v;
  }
  bool boolean(const char* key) {
    return parse(key, [](const std::string& t) { return parse_bool(t); });
  }
  Distribution distribution(const char* key) {
    return parse(key, [this](const std::string& t) { return Distribution::parse(t, base_dir_); });
  }
  // -1 (or "none" where allowed) means "not set".
  std::optional<Duration> duration_or(const char* key, const char* off_word) {
    const std::string t = text(key);
    if (t == off_word) return std::nullopt;
    return duration(key);
  }
  bool given(const char* key) const { return values_.count(key) != 0; }
  const std::filesystem::path& base_dir() const { return base_dir_; }

 private:
  static std::string shown(const std::string& t) { return t.empty() ? "(empty)" : t; }

  const std::map<std::string, std::string>& values_;
  std::filesystem::path base_dir_;
};

std::vector<Outage> parse_outages(Reader& in) {
  std::vector<Outage> outages;
  const std::string text = in.text("database.outages");
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    const auto plus = item.find('+');
    if (plus == std::string::npos) {
      in.refuse("database.outages", "must be a list of START+LENGTH, e.g. 20s+5s,40s+1s");
    }
    Outage o{};
    try {
      o.start = parse_duration(item.substr(0, plus));
      o.length = parse_duration(item.substr(plus + 1));
    } catch (const ParseError& e) {
      in.refuse("database.outages", std::string("each START+LENGTH: ") + e.what());
    }
    if (o.length.count() <= 0) in.refuse("database.outages", "each outage must last longer than 0");
    if (!outages.empty() && o.start < outages.back().start + outages.back().length) {
      in.refuse("database.outages", "outages must be in time order and must not overlap");
    }
    outages.push_back(o);
  }
  return outages;
}

// database.connect_capacity as "N:C,N:C,...": whole concurrencies from 1, strictly ascending,
// each capacity above 0 and at most its concurrency (n set-ups cannot do more than n lone
// set-ups' worth of work).
std::vector<CapacityPoint> parse_connect_curve(Reader& in) {
  constexpr std::size_t kMaxPoints = 64;
  const char* key = "database.connect_capacity";
  const std::string allowed =
      "a curve is concurrency:capacity pairs separated by commas, e.g. 1:1,2:1.2,8:1.6, with "
      "whole concurrencies from 1 to 1000000 in ascending order and each capacity above 0 and "
      "at most its concurrency";
  std::vector<CapacityPoint> curve;
  std::stringstream items(in.text(key));
  std::string item;
  while (std::getline(items, item, ',')) {
    const auto colon = item.find(':');
    if (colon == std::string::npos) in.refuse(key, allowed);
    CapacityPoint point{};
    try {
      const std::int64_t n = parse_integer(item.substr(0, colon));
      if (n < 1 || n > 1'000'000) in.refuse(key, allowed);
      point.concurrency = static_cast<int>(n);
      point.capacity = parse_number(item.substr(colon + 1));
    } catch (const ParseError& e) {
      in.refuse(key, allowed + " (" + item + ": " + e.what() + ")");
    }
    if (!(point.capacity > 0) || point.capacity > point.concurrency) in.refuse(key, allowed);
    if (!curve.empty() && point.concurrency <= curve.back().concurrency) in.refuse(key, allowed);
    curve.push_back(point);
  }
  const std::string text = in.text(key);
  if (curve.empty() || text.back() == ',') in.refuse(key, allowed);
  if (curve.size() > kMaxPoints) in.refuse(key, allowed + "; at most 64 points");
  return curve;
}

std::shared_ptr<const std::vector<TraceEntry>> read_trace(Reader& in, std::filesystem::path* path) {
  const std::string name = in.text("workload.trace");
  if (name.empty())
    in.refuse("workload.trace", "a CSV file is required with workload.arrival = trace");
  *path = std::filesystem::path(name).is_absolute() ? std::filesystem::path(name)
                                                    : in.base_dir() / name;
  std::ifstream file(*path);
  if (!file || std::filesystem::is_directory(*path)) {
    in.refuse("workload.trace", "cannot read the file " + path->string());
  }
  auto entries = std::make_shared<std::vector<TraceEntry>>();
  std::string line;
  int number = 0;
  while (std::getline(file, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    const auto comma = line.find(',');
    const std::string first = line.substr(0, comma);
    TraceEntry entry{};
    // Like every duration of a scenario, at most kMaxDuration: beyond the int64 range of
    // Duration, llround would give an unspecified (negative) count.
    const auto seconds = [](const std::string& cell) {
      const double s = parse_number(cell);
      if (s < 0) throw ParseError("must not be negative");
      if (s > to_seconds(kMaxDuration)) {
        throw ParseError("must be at most " +
                         std::to_string(std::llround(to_seconds(kMaxDuration))) + " (" +
                         format_duration(kMaxDuration) + ")");
      }
      return Duration(static_cast<std::int64_t>(std::llround(s * 1e9)));
    };
    try {
      entry.at = seconds(first);
      if (comma != std::string::npos) entry.hold = seconds(line.substr(comma + 1));
    } catch (const ParseError& e) {
      const char first_char = first.empty() ? ' ' : trim(first).empty() ? ' ' : trim(first).front();
      const bool looks_numeric = std::isdigit(static_cast<unsigned char>(first_char)) ||
                                 first_char == '.' || first_char == '-' || first_char == '+';
      if (entries->empty() && number == 1 && !looks_numeric) continue;  // a header line
      in.refuse("workload.trace", "line " + std::to_string(number) + " (" + line +
                                      "): arrival,hold in seconds; " + e.what());
    }
    if (!entries->empty() && entry.at < entries->back().at) {
      in.refuse("workload.trace",
                "line " + std::to_string(number) +
                    ": arrival times must not go backwards (the file is not sorted)");
    }
    entries->push_back(entry);
  }
  if (entries->empty())
    in.refuse("workload.trace", "the file " + path->string() + " has no arrivals");
  return entries;
}

// The workload keys that one kind of arrival alone reads (nullptr: every kind, or none): given
// with another they would be ignored, and the user would think they were in effect.
const char* arrival_reading(std::string_view key) {
  if (key == "workload.burst_rate" || key == "workload.burst_on" || key == "workload.burst_off")
    return "onoff";
  if (key == "workload.period" || key == "workload.amplitude") return "diurnal";
  if (key == "workload.clients" || key == "workload.think") return "closed";
  if (key == "workload.trace") return "trace";
  return nullptr;
}

}  // namespace

bool option_applies(Arrival arrival, std::string_view key) {
  const char* reader = arrival_reading(key);
  if (reader == nullptr) return true;
  const std::string_view kind = reader;
  return (kind == "onoff" && arrival == Arrival::kOnOff) ||
         (kind == "diurnal" && arrival == Arrival::kDiurnal) ||
         (kind == "closed" && arrival == Arrival::kClosed) ||
         (kind == "trace" && arrival == Arrival::kTrace);
}

bool option_applies(Policy policy, std::string_view key) {
  if (key.starts_with("hikari.")) return policy == Policy::kHikari;
  if (key.starts_with("psycopg.")) return policy == Policy::kPsycopg;
  if (key.starts_with("pgbouncer.")) return policy == Policy::kPgbouncer;
  switch (policy) {
    case Policy::kQueuePool:
    case Policy::kPgbouncer:
      return true;
    case Policy::kNull:
    case Policy::kStatic:
      return key != "pool.size" && key != "pool.max_overflow" && key != "pool.timeout" &&
             key != "pool.use_lifo";
    case Policy::kHikari:
    case Policy::kPsycopg:
      return !key.starts_with("pool.") || key == "pool.policy" || key == "pool.reset_on_return";
  }
  return true;
}

std::map<std::string, std::string> Scenario::rerun_options() const {
  std::map<std::string, std::string> options;
  for (const auto& [key, value] : echo) {
    if (option_applies(pool.policy, key) && option_applies(arrival, key)) {
      options.emplace(key, value);
    }
  }
  return options;
}

const std::string& Scenario::option(const std::string& key) const {
  for (const auto& [k, v] : echo) {
    if (k == key) return v;
  }
  throw std::logic_error("no option " + key);
}

void Scenario::set_option(const std::string& key, const std::string& text) {
  for (auto& [k, v] : echo) {
    if (k == key) {
      v = text;
      return;
    }
  }
  throw std::logic_error("no option " + key);
}

double curve_speed(const std::vector<CapacityPoint>& curve, double running) {
  const CapacityPoint& first = curve.front();
  if (running <= first.concurrency) return first.capacity / first.concurrency;
  for (std::size_t i = 1; i < curve.size(); ++i) {
    const CapacityPoint& a = curve[i - 1];
    const CapacityPoint& b = curve[i];
    if (running <= b.concurrency) {
      const double f = (running - a.concurrency) / (b.concurrency - a.concurrency);
      return (a.capacity + f * (b.capacity - a.capacity)) / running;
    }
  }
  return curve.back().capacity / running;
}

double Scenario::connect_speed(double running) const {
  if (!connect_curve.empty()) return curve_speed(connect_curve, running);
  return connect_capacity > 0 && running > connect_capacity ? connect_capacity / running : 1.0;
}

Scenario make_scenario(const std::map<std::string, std::string>& values,
                       const std::filesystem::path& base_dir) {
  Reader in(values, base_dir);
  Scenario s;

  s.duration = in.duration("duration");
  if (s.duration.count() <= 0) in.refuse("duration", "must be longer than 0");
  s.warmup = in.duration("warmup");
  s.seed = static_cast<std::uint64_t>(in.integer(
      "seed", 0, std::numeric_limits<std::int64_t>::max(), "must be a whole number >= 0"));
  s.replications = static_cast<int>(in.integer("replications", 1, 10000, "must be 1 to 10000"));

  PoolConfig& pool = s.pool;
  const std::string policy = in.text("pool.policy");
  if (policy == "null") {
    pool.policy = Policy::kNull;
  } else if (policy == "static") {
    pool.policy = Policy::kStatic;
  } else if (policy == "hikari") {
    pool.policy = Policy::kHikari;
  } else if (policy == "psycopg") {
    pool.policy = Policy::kPsycopg;
  } else if (policy == "pgbouncer") {
    pool.policy = Policy::kPgbouncer;
  } else if (policy != "queuepool") {
    in.refuse("pool.policy",
              "must be queuepool (SQLAlchemy's QueuePool), null (NullPool: a connection per "
              "checkout), static (StaticPool: one shared connection), hikari (HikariCP), "
              "psycopg (psycopg_pool) or pgbouncer (QueuePools through pgbouncer)");
  }
  for (const OptionInfo& option : kOptions) {
    if (option_applies(pool.policy, option.key) || !in.given(option.key)) continue;
    const std::string_view key = option.key;
    if (key.starts_with("hikari.") || key.starts_with("psycopg.") ||
        key.starts_with("pgbouncer.")) {
      const std::string owner(key.substr(0, key.find('.')));
      in.refuse(option.key, "applies to pool.policy = " + owner +
                                " only (this scenario's pool is " + policy + ")");
    } else if (pool.policy == Policy::kNull) {
      // As SQLAlchemy's create_engine(poolclass=NullPool, pool_size=...) does: a TypeError.
      in.refuse(option.key, "does not apply to pool.policy = null (NullPool opens a connection "
                            "for every checkout and closes it on return; SQLAlchemy refuses it "
                            "too)");
    } else if (pool.policy == Policy::kStatic) {
      in.refuse(option.key, "does not apply to pool.policy = static (StaticPool gives its one "
                            "connection to every checkout and never waits; SQLAlchemy refuses "
                            "it too)");
    } else if (pool.policy == Policy::kHikari) {
      in.refuse(option.key, "does not apply to pool.policy = hikari (HikariCP is set with "
                            "hikari.maximum_pool_size, minimum_idle, connection_timeout, "
                            "idle_timeout, max_lifetime, keepalive_time)");
    } else {
      in.refuse(option.key, "does not apply to pool.policy = psycopg (psycopg_pool is set with "
                            "psycopg.min_size, max_size, timeout, max_idle, max_lifetime, "
                            "reconnect_timeout, num_workers, check)");
    }
  }
  HikariConfig& hikari = s.hikari;
  hikari.maximum_pool_size = static_cast<int>(in.integer(
      "hikari.maximum_pool_size", 1, 1'000'000, "must be a whole number from 1 to 1000000"));
  const std::string idle_allowed = "must be max or a whole number from 0 to "
                                   "hikari.maximum_pool_size (" +
                                   std::to_string(hikari.maximum_pool_size) + ")";
  hikari.minimum_idle =
      in.text("hikari.minimum_idle") == "max"
          ? hikari.maximum_pool_size
          : static_cast<int>(in.integer("hikari.minimum_idle", 0, hikari.maximum_pool_size,
                                        idle_allowed.c_str()));
  hikari.connection_timeout = in.duration("hikari.connection_timeout");
  hikari.idle_timeout = in.duration("hikari.idle_timeout");
  hikari.max_lifetime = in.duration("hikari.max_lifetime");
  hikari.keepalive_time = in.duration("hikari.keepalive_time");
  pool.pool_size = static_cast<int>(
      in.integer("pool.size", 0, 1'000'000, "must be a whole number from 0 to 1000000"));
  pool.max_overflow =
      static_cast<int>(in.integer("pool.max_overflow", -1, 1'000'000,
                                  "must be -1 (unlimited) or a whole number from 0 to 1000000"));
  pool.timeout = in.duration_or("pool.timeout", "none");
  pool.recycle = in.duration_or("pool.recycle", "-1");
  pool.pre_ping = in.boolean("pool.pre_ping");
  pool.order = in.boolean("pool.use_lifo") ? QueueOrder::kLifo : QueueOrder::kFifo;
  const std::string reset = in.text("pool.reset_on_return");
  if (reset == "rollback") {
    pool.reset_on_return = ResetOnReturn::kRollback;
  } else if (reset == "commit") {
    pool.reset_on_return = ResetOnReturn::kCommit;
  } else if (reset == "none") {
    pool.reset_on_return = ResetOnReturn::kNone;
  } else {
    in.refuse("pool.reset_on_return", "must be rollback, commit or none");
  }
  const std::string compat = in.text("pool.compat");
  if (compat == "1.4") {
    pool.compat = Compat::kSqlalchemy14;
  } else if (compat == "2.0") {
    pool.compat = Compat::kSqlalchemy20;
  } else {
    in.refuse("pool.compat", "must be 1.4 or 2.0");
  }
  hikari.reset_on_return = pool.reset_on_return;
  if (pool.policy == Policy::kHikari) {
    if (auto why = validate(hikari)) throw ScenarioError(*why);
  }
  PsycopgConfig& psycopg = s.psycopg;
  psycopg.min_size = static_cast<int>(in.integer("psycopg.min_size", 0, 1'000'000,
                                                 "must be a whole number from 0 to 1000000"));
  if (in.text("psycopg.max_size") != "min") {
    const std::string allowed = "must be min or a whole number from psycopg.min_size (" +
                                std::to_string(psycopg.min_size) + ") to 1000000";
    psycopg.max_size = static_cast<int>(
        in.integer("psycopg.max_size", psycopg.min_size, 1'000'000, allowed.c_str()));
  }
  psycopg.timeout = in.duration("psycopg.timeout");
  psycopg.max_idle = in.duration("psycopg.max_idle");
  psycopg.max_lifetime = in.duration("psycopg.max_lifetime");
  psycopg.reconnect_timeout = in.duration("psycopg.reconnect_timeout");
  psycopg.num_workers = static_cast<int>(
      in.integer("psycopg.num_workers", 1, 10'000, "must be a whole number from 1 to 10000"));
  psycopg.check = in.boolean("psycopg.check");
  psycopg.reset_on_return = pool.reset_on_return;
  if (pool.policy == Policy::kPsycopg) {
    if (auto why = validate(psycopg)) throw ScenarioError(*why);
  }
  PgbouncerConfig& bouncer = s.pgbouncer;
  const auto bouncer_count = [&in](const char* key, std::int64_t min) {
    const std::string allowed =
        "must be a whole number from " + std::to_string(min) + " to 1000000";
    return static_cast<int>(in.integer(key, min, 1'000'000, allowed.c_str()));
  };
  bouncer.default_pool_size = bouncer_count("pgbouncer.default_pool_size", 1);
  bouncer.min_pool_size = bouncer_count("pgbouncer.min_pool_size", 0);
  bouncer.reserve_pool_size = bouncer_count("pgbouncer.reserve_pool_size", 0);
  bouncer.max_db_connections = bouncer_count("pgbouncer.max_db_connections", 0);
  bouncer.reserve_pool_timeout = in.duration("pgbouncer.reserve_pool_timeout");
  bouncer.server_idle_timeout = in.duration("pgbouncer.server_idle_timeout");
  bouncer.server_lifetime = in.duration("pgbouncer.server_lifetime");
  bouncer.query_wait_timeout = in.duration("pgbouncer.query_wait_timeout");
  bouncer.server_login_retry = in.duration("pgbouncer.server_login_retry");
  bouncer.server_check_delay = in.duration("pgbouncer.server_check_delay");
  s.bouncer_connect = in.distribution("pgbouncer.connect");
  if (pool.policy == Policy::kPgbouncer) {
    if (auto why = validate(bouncer)) throw ScenarioError(*why);
  }

  const std::string arrival = in.text("workload.arrival");
  const std::pair<const char*, Arrival> arrivals[] = {
      {"poisson", Arrival::kPoisson}, {"constant", Arrival::kConstant},
      {"onoff", Arrival::kOnOff},     {"diurnal", Arrival::kDiurnal},
      {"trace", Arrival::kTrace},     {"closed", Arrival::kClosed}};
  const auto found = std::find_if(std::begin(arrivals), std::end(arrivals),
                                  [&](const auto& a) { return arrival == a.first; });
  if (found == std::end(arrivals)) {
    in.refuse("workload.arrival", "must be poisson, constant, onoff, diurnal, trace or closed");
  }
  s.arrival = found->second;
  for (const OptionInfo& option : kOptions) {
    if (in.given(option.key) && !option_applies(s.arrival, option.key)) {
      in.refuse(option.key, std::string("applies to workload.arrival = ") +
                                arrival_reading(option.key) + " only (this scenario's is " +
                                arrival + ")");
    }
  }
  s.rate = in.number("workload.rate");
  if (!(s.rate > 0) || s.rate > 1e9)
    in.refuse("workload.rate", "must be more than 0 and at most 1e9 per second");
  s.service = in.distribution("workload.service");
  double peak_rate = s.rate;
  if (s.arrival == Arrival::kOnOff) {
    if (!in.given("workload.burst_rate")) {
      in.refuse("workload.burst_rate",
                "required with workload.arrival = onoff (arrivals per second in a burst)");
    }
    s.burst_rate = in.number("workload.burst_rate");
    if (!(s.burst_rate > 0) || s.burst_rate > 1e9) {
      in.refuse("workload.burst_rate", "must be more than 0 and at most 1e9 per second");
    }
    s.burst_on = in.duration("workload.burst_on");
    s.burst_off = in.duration("workload.burst_off");
    if (s.burst_on.count() <= 0) in.refuse("workload.burst_on", "must be longer than 0");
    if (s.burst_off.count() <= 0) in.refuse("workload.burst_off", "must be longer than 0");
    peak_rate = std::max(s.rate, s.burst_rate);
    // Drawing the arrivals visits every burst and every gap between them, arrivals or not.
    if (to_seconds(s.duration + s.warmup) / to_seconds(s.burst_on + s.burst_off) >
        kMaxRequestsPerReplication) {
      in.refuse("workload.burst_on",
                "with this workload.burst_off and duration a replication would have over 1e10 "
                "bursts");
    }
  }
  if (s.arrival == Arrival::kDiurnal) {
    s.period = in.duration("workload.period");
    if (s.period.count() <= 0) in.refuse("workload.period", "must be longer than 0");
    s.amplitude = in.number("workload.amplitude");
    if (!(s.amplitude >= 0 && s.amplitude <= 1))
      in.refuse("workload.amplitude", "must be from 0 to 1");
    peak_rate = s.rate * (1 + s.amplitude);
  }
  if (s.arrival == Arrival::kClosed) {
    if (!in.given("workload.clients")) {
      in.refuse("workload.clients", "required with workload.arrival = closed (number of clients)");
    }
    s.clients = static_cast<int>(
        in.integer("workload.clients", 1, 1'000'000, "must be a whole number from 1 to 1000000"));
    s.think = in.distribution("workload.think");
    // A request that fails at once (pool.timeout = 0 at the limit, a connect refused during an
    // outage) holds nothing: only its think time keeps the client from sending the next one at
    // the same instant, forever.
    if (!(s.think.mean_seconds() > 0)) {
      in.refuse("workload.think",
                "a closed loop needs a think time > 0 (after a request that fails at once, the "
                "next would come at the same instant, forever)");
    }
    // Each client whose requests succeed sends one per think + hold: that bounds a replication.
    const double cycle = s.think.mean_seconds() + s.service.mean_seconds();
    if (s.clients * to_seconds(s.duration + s.warmup) / cycle > kMaxRequestsPerReplication) {
      in.refuse("workload.clients",
                "with this think and hold time a replication would have over 1e10 requests");
    }
  }
  if (s.arrival == Arrival::kTrace) s.trace = read_trace(in, &s.trace_file);
  const double seconds = to_seconds(s.duration + s.warmup);
  if (s.arrival != Arrival::kTrace && s.arrival != Arrival::kClosed &&
      peak_rate * seconds > kMaxRequestsPerReplication) {
    in.refuse("workload.rate", "with this duration a replication would have over 1e10 requests");
  }

  s.processes = static_cast<int>(
      in.integer("app.processes", 1, 10'000, "must be a whole number from 1 to 10000"));
  s.threads = static_cast<int>(in.integer("app.threads", 0, 1'000'000,
                                          "must be 0 (unlimited) or a whole number up to 1000000"));
  const std::string routing = in.text("app.routing");
  if (routing == "round_robin") {
    s.routing = Routing::kRoundRobin;
  } else if (routing == "random") {
    s.routing = Routing::kRandom;
  } else {
    in.refuse("app.routing", "must be round_robin or random");
  }

  s.max_connections = static_cast<int>(in.integer("database.max_connections", 1, 10'000'000,
                                                  "must be a whole number from 1 to 10000000"));
  s.connect = in.distribution("database.connect");
  s.ping = in.distribution("database.ping");
  s.reset = in.distribution("database.reset");
  s.idle_session_timeout = in.duration("database.idle_session_timeout");
  const std::string sharing = in.text("database.connect_sharing");
  if (sharing == "queue") {
    s.connect_sharing = ConnectSharing::kQueue;
  } else if (sharing == "shared") {
    s.connect_sharing = ConnectSharing::kShared;
  } else {
    in.refuse("database.connect_sharing", "must be queue or shared");
  }
  if (in.text("database.connect_capacity").find(':') != std::string::npos) {
    s.connect_curve = parse_connect_curve(in);
    if (s.connect_sharing != ConnectSharing::kShared) {
      in.refuse("database.connect_capacity",
                "a curve of concurrency:capacity pairs needs database.connect_sharing = shared");
    }
  } else {
    s.connect_capacity = in.number("database.connect_capacity");
  }
  if (!(s.connect_capacity >= 0) || s.connect_capacity > 1e7) {
    in.refuse("database.connect_capacity",
              "must be 0 (unlimited), a number up to 1e7, or a curve of concurrency:capacity "
              "pairs (e.g. 1:1,2:1.2,8:1.6)");
  }
  if (s.connect_sharing == ConnectSharing::kQueue &&
      s.connect_capacity != std::floor(s.connect_capacity)) {
    in.refuse("database.connect_capacity",
              "must be a whole number with database.connect_sharing = queue (a fraction of a "
              "set-up needs shared)");
  }
  s.outages = parse_outages(in);

  s.idle_drop_after = in.duration("network.idle_drop_after");
  s.drop_rate = in.number("network.drop_rate");
  if (!(s.drop_rate >= 0) || s.drop_rate > 1e9)
    in.refuse("network.drop_rate", "must be from 0 to 1e9 per connection per hour");
  s.connect_fail =
      in.parse("network.connect_fail", [](const std::string& t) { return parse_probability(t); });

  if (pool.policy == Policy::kPgbouncer) {
    // The faults below act on connections, and through pgbouncer there are two kinds (the
    // app's to pgbouncer, pgbouncer's to the server); which one a fault hits is not modelled
    // yet. A pre-ping through pgbouncer is a transaction of its own on a server.
    const std::string not_yet =
        "is not modelled with pool.policy = pgbouncer yet (it would act on the app's "
        "connections to pgbouncer or on pgbouncer's to the server); leave it at its default";
    const std::pair<const char*, bool> faults[] = {
        {"database.idle_session_timeout", s.idle_session_timeout.count() > 0},
        {"database.outages", !s.outages.empty()},
        {"network.idle_drop_after", s.idle_drop_after.count() > 0},
        {"network.drop_rate", s.drop_rate > 0},
        {"network.connect_fail", s.connect_fail > 0}};
    for (const auto& [key, on] : faults) {
      if (on) in.refuse(key, not_yet);
    }
    if (pool.pre_ping) {
      in.refuse("pool.pre_ping",
                "is not modelled with pool.policy = pgbouncer yet (a ping through pgbouncer is "
                "a transaction on a server of its own); leave it false");
    }
  }

  for (const OptionInfo& o : kOptions) s.echo.emplace_back(o.key, in.text(o.key));
  return s;
}

}  // namespace poolsim::sim
