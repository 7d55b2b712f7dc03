#include "real_pool/live.hpp"

#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "real_pool/fault_proxy.hpp"
#include "real_pool/pg_pool.hpp"
#include "real_pool/test_server.hpp"
#include "sim/random.hpp"
#include "sim/sizing.hpp"
#include "sim/stats.hpp"
#include "sim/units.hpp"
#include "sim/workload.hpp"

namespace poolsim::real_pool {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void refuse(const sim::Scenario& s, const char* key, const std::string& why) {
  throw LiveError(std::string(key) + " = " + s.option(key) + ": " + why);
}

// A libpq connection for the runner's own queries (pg_stat_activity, pg_terminate_backend).
// The monitor and fault threads share it: a PGconn is not thread-safe, so every use is under
// the mutex (ThreadSanitizer found the two threads in it at once, and reconnect() freeing it
// under the monitor's query).
class Admin {
 public:
  explicit Admin(const std::string& dsn) : conn_(PQconnectdb(dsn.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      const std::string why = PQerrorMessage(conn_);
      PQfinish(conn_);
      conn_ = nullptr;
      throw LiveError("cannot connect to the database: " + why.substr(0, why.find('\n')));
    }
  }
  ~Admin() {
    if (conn_) PQfinish(conn_);
  }
  Admin(const Admin&) = delete;
  Admin& operator=(const Admin&) = delete;

  // The first column of the first row, or nullopt (also when the connection broke: a restart).
  std::optional<std::string> value(const std::string& sql) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK) return std::nullopt;
    PGresult* r = PQexec(conn_, sql.c_str());
    std::optional<std::string> out;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) out = PQgetvalue(r, 0, 0);
    PQclear(r);
    return out;
  }
  void reconnect(const std::string& dsn) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (conn_) PQfinish(conn_);
    conn_ = PQconnectdb(dsn.c_str());
  }

 private:
  std::mutex mutex_;
  PGconn* conn_;  // guarded by mutex_
};

// Host and port of a conninfo string, for the fault proxy to forward to.
std::pair<std::string, int> host_and_port(const std::string& dsn) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error);
  if (!options) {
    const std::string why = error ? error : "cannot parse";
    PQfreemem(error);
    throw LiveError("--dsn: " + why);
  }
  std::string host = "127.0.0.1";
  int port = 5432;
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    if (!o->val) continue;
    if (std::string(o->keyword) == "host" || std::string(o->keyword) == "hostaddr") host = o->val;
    if (std::string(o->keyword) == "port") port = std::atoi(o->val);
  }
  PQconninfoFree(options);
  return {host, port};
}

}  // namespace

void check_dsn(const std::string& dsn) {
  if (dsn.find_first_not_of(" \t\n") == std::string::npos) {
    throw LiveError("--dsn: empty (give a libpq connection string or URI, or auto)");
  }
}

namespace {

struct Outcome {
  enum Kind { kCompleted, kTimeout, kConnectFailed, kTooMany, kDisconnect } kind;
  bool counted;
  bool waited;
  std::int64_t wait_ns;
  std::int64_t latency_ns;
};

class LiveRun {
 public:
  LiveRun(const sim::Scenario& s, const LiveOptions& o) : s_(s), options_(o) {
    if (s.arrival == sim::Arrival::kClosed) {
      refuse(s, "workload.arrival",
             "live runs replay open-loop workloads (poisson, constant, onoff, diurnal, trace)");
    }
    if (s.connect_fail > 0)
      refuse(s, "network.connect_fail", "a live run has no way to fail connects on purpose");
    if (s.pool.policy == Policy::kPgbouncer) {
      refuse(s, "pool.policy",
             "pgbouncer runs in the simulator only so far (the real pool runs queuepool, null, "
             "static, hikari and psycopg; poolsim.Pgbouncer starts a real pgbouncer for "
             "sqlalchemy_live)");
    }
    const bool own = o.dsn == "auto";
    if (!own && !s.outages.empty()) {
      refuse(s, "database.outages", "restarts need a server the run starts itself (--dsn auto)");
    }
    if (own) {
      server_ = std::make_unique<TestServer>();
      if (s.max_connections != 100)
        server_->set_parameter("max_connections", std::to_string(s.max_connections));
      dsn_ = server_->dsn();
    } else {
      dsn_ = o.dsn;
    }
    admin_ = std::make_unique<Admin>(dsn_);
    if (!own) {
      const auto max = admin_->value("SHOW max_connections");
      if (max && std::stoi(*max) != s.max_connections) {
        refuse(s, "database.max_connections",
               "the server has " + *max +
                   "; a live run sets it only on a server it starts (--dsn auto)");
      }
    }
    application_ = "poolsim_live_" + std::to_string(::getpid());
    std::string pool_dsn = dsn_ + " application_name=" + application_;
    if (s.idle_session_timeout.count() > 0) {
      const auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(s.idle_session_timeout).count();
      pool_dsn += " options='-c idle_session_timeout=" + std::to_string(ms) + "'";
    }
    if (s.idle_drop_after.count() > 0) {
      const auto [host, port] = host_and_port(dsn_);
      proxy_ = std::make_unique<FaultProxy>(host, port);
      proxy_->set_idle_kill(
          std::chrono::duration_cast<std::chrono::milliseconds>(s.idle_drop_after));
      pool_dsn += " host=127.0.0.1 port=" + std::to_string(proxy_->port());
    }
    for (int p = 0; p < s.processes; ++p) {
      if (s.pool.policy == Policy::kHikari) {
        pools_.push_back(std::make_unique<PgPool>(pool_dsn, s.hikari));
      } else if (s.pool.policy == Policy::kPsycopg) {
        pools_.push_back(std::make_unique<PgPool>(pool_dsn, s.psycopg));
      } else {
        pools_.push_back(std::make_unique<PgPool>(pool_dsn, s.pool));
      }
    }
    busy_.assign(static_cast<std::size_t>(s.processes), 0);
  }

  ~LiveRun() {
    for (std::thread& t : workers_) t.join();
  }

  sim::Json run(const sim::Progress& progress) {
    const auto wall_start = Clock::now();
    start_ = Clock::now();
    const Clock::time_point end = start_ + s_.warmup + s_.duration;
    std::atomic<bool> done{false};
    std::thread monitor([&] { monitor_loop(done, end); });
    std::thread faults([&] { fault_loop(done, end); });

    sim::Workload workload(s_, 0);
    sim::Rng routing = sim::stream_rng(s_.seed, sim::Stream::kRouting, 0);
    std::uint64_t next_process = 0;
    while (auto request = workload.next()) {
      std::this_thread::sleep_until(start_ + request->at.time_since_epoch());
      const auto process =
          static_cast<std::size_t>(s_.routing == sim::Routing::kRandom
                                       ? routing.below(static_cast<std::uint64_t>(s_.processes))
                                       : next_process++ % static_cast<std::uint64_t>(s_.processes));
      dispatch(process, *request);
      if (progress)
        progress(std::min(0.99, to_seconds(request->at.time_since_epoch()) /
                                    to_seconds(s_.warmup + s_.duration)));
    }
    std::this_thread::sleep_until(end);
    {
      std::unique_lock<std::mutex> lock(mutex_);
      idle_cv_.wait(lock, [this] { return in_flight_ == 0; });
      stopping_ = true;
    }
    work_cv_.notify_all();
    done = true;
    monitor.join();
    faults.join();

    sim::ReplicationStats stats;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats = std::move(stats_);
    }
    std::uint64_t opened = 0, closed = 0;
    for (const auto& pool : pools_) {
      opened += pool->counters().opened;
      closed += pool->counters().closed;
    }
    stats.opened = opened - opened_at_warmup_;
    stats.closed = closed - closed_at_warmup_;
    stats.sim_time_s = to_seconds(s_.duration);
    const double wall = std::chrono::duration<double>(Clock::now() - wall_start).count();
    sim::Json result = sim::simulation_result(s_, {stats}, wall);
    result["mode"] = "live";
    result.erase("events");
    return result;
  }

 private:
  struct Job {
    std::size_t process;
    Clock::time_point arrival;
    Duration hold;
    bool counted;
  };

  void dispatch(std::size_t process, const sim::PlannedRequest& request) {
    Job job{process, start_ + request.at.time_since_epoch(), request.hold,
            request.at >= Instant(s_.warmup)};
    std::lock_guard<std::mutex> lock(mutex_);
    ++in_flight_;
    jobs_.push_back(job);
    // Open loop: a request never waits for a worker thread; one is started when none is free.
    if (idle_workers_ == 0) {
      workers_.emplace_back([this] { worker_loop(); });
    } else {
      work_cv_.notify_one();
    }
  }

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ++idle_workers_;
      work_cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      --idle_workers_;
      if (jobs_.empty()) return;
      Job job = jobs_.front();
      jobs_.pop_front();
      // app.threads: a process serves at most that many requests at once, the rest queue.
      if (s_.threads > 0) {
        thread_cv_.wait(lock, [&] { return busy_[job.process] < s_.threads; });
      }
      ++busy_[job.process];
      lock.unlock();
      const Outcome outcome = serve(job);
      lock.lock();
      --busy_[job.process];
      thread_cv_.notify_all();
      record(outcome);
      if (--in_flight_ == 0) idle_cv_.notify_all();
    }
  }

  Outcome serve(const Job& job) {
    PgPool& pool = *pools_[job.process];
    const auto checkout_start = Clock::now();
    Outcome out{Outcome::kCompleted, job.counted, false, 0, 0};
    auto since = [](Clock::time_point t) {
      return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t).count();
    };
    PgPool::Handle handle;
    try {
      handle = pool.checkout();
    } catch (const PoolError& e) {
      out.wait_ns = since(checkout_start);
      out.waited = out.wait_ns > 0;
      out.kind = e.kind == PoolError::Kind::kTimeout              ? Outcome::kTimeout
                 : e.kind == PoolError::Kind::kTooManyConnections ? Outcome::kTooMany
                                                                  : Outcome::kConnectFailed;
      return out;
    }
    out.wait_ns = since(checkout_start);
    // A checkout that found an idle connection takes microseconds: count it as no wait, as
    // the simulation does, and only waits for a connection or a connect as waits.
    out.waited = out.wait_ns > std::chrono::nanoseconds(kLiveNoWait).count();
    const std::string seconds = std::to_string(to_seconds(job.hold));
    const char* values[] = {seconds.c_str()};
    const std::string& sql = options_.sql.empty() ? kSleep : options_.sql;
    PGresult* r = PQexecParams(handle.conn(), sql.c_str(),
                               options_.sql.empty() || sql.find("$1") != std::string::npos ? 1 : 0,
                               nullptr, values, nullptr, nullptr, 0);
    const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
      out.kind = Outcome::kDisconnect;
      if (PQstatus(handle.conn()) == CONNECTION_BAD) {
        handle.disconnected();
      } else {
        handle.invalidate();
      }
      return out;
    }
    handle.release();
    out.latency_ns = since(job.arrival);
    return out;
  }

  void record(const Outcome& o) {
    if (!o.counted) return;
    sim::ReplicationStats& s = stats_;
    ++s.requests;
    s.wait.add(o.wait_ns);
    if (o.waited) ++s.waited;
    switch (o.kind) {
      case Outcome::kCompleted:
        ++s.completed;
        s.latency.add(o.latency_ns);
        break;
      case Outcome::kTimeout: ++s.timeouts; break;
      case Outcome::kConnectFailed: ++s.connect_failed; break;
      case Outcome::kTooMany: ++s.too_many_connections; break;
      case Outcome::kDisconnect: ++s.disconnect; break;
    }
  }

  // Samples open connections every few milliseconds, and the server's count of the run's
  // backends every 50 ms, over the measured window.
  void monitor_loop(std::atomic<bool>& done, Clock::time_point end) {
    const Clock::time_point warm = start_ + s_.warmup;
    double open_sum = 0, in_use_sum = 0, peak_open = 0, peak_server = 0;
    std::uint64_t samples = 0;
    bool warm_seen = false;
    auto next_server = Clock::now();
    while (!done) {
      const auto now = Clock::now();
      if (!warm_seen && now >= warm) {
        warm_seen = true;
        for (const auto& pool : pools_) {
          opened_at_warmup_ += pool->counters().opened;
          closed_at_warmup_ += pool->counters().closed;
        }
      }
      if (now >= warm && now < end) {
        double open = 0, in_use = 0;
        for (const auto& pool : pools_) {
          open += static_cast<double>(pool->open_connections());
          in_use += static_cast<double>(pool->in_use());
        }
        open_sum += open;
        in_use_sum += std::max(0.0, in_use);
        peak_open = std::max(peak_open, open);
        ++samples;
        if (now >= next_server) {
          next_server = now + std::chrono::milliseconds(50);
          if (auto n =
                  admin_->value("SELECT count(*) FROM pg_stat_activity WHERE application_name = '" +
                                application_ + "'")) {
            peak_server = std::max(peak_server, std::stod(*n));
          }
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.mean_open = samples ? open_sum / static_cast<double>(samples) : 0;
    stats_.mean_in_use = samples ? in_use_sum / static_cast<double>(samples) : 0;
    stats_.peak_open = peak_open;
    stats_.peak_server = peak_server;
  }

  // network.drop_rate: pg_terminate_backend of one of the run's backends at the times of a
  // Poisson process whose rate is drop_rate per connection per hour times the connections open.
  // database.outages: the run's own server is stopped and started again.
  void fault_loop(std::atomic<bool>& done, Clock::time_point end) {
    sim::Rng rng = sim::stream_rng(s_.seed, sim::Stream::kDrops, 0);
    std::size_t outage = 0;
    bool down = false;
    while (!done && Clock::now() < end) {
      const auto elapsed = Clock::now() - start_;
      if (outage < s_.outages.size()) {
        const sim::Outage& o = s_.outages[outage];
        if (!down && elapsed >= o.start) {
          server_->stop();
          down = true;
        } else if (down && elapsed >= o.start + o.length) {
          server_->start();
          admin_->reconnect(dsn_);
          down = false;
          ++outage;
        }
      }
      if (s_.drop_rate > 0 && !down) {
        double open = 0;
        for (const auto& pool : pools_) open += static_cast<double>(pool->open_connections());
        const double per_tick = s_.drop_rate / 3600.0 * open * 0.005;  // a 5 ms tick
        if (rng.uniform() < per_tick) {
          admin_->value(
              "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '" +
              application_ + "' ORDER BY random() LIMIT 1");
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (down) server_->start();
  }

  inline static const std::string kSleep = "SELECT pg_sleep($1)";

  const sim::Scenario& s_;
  LiveOptions options_;
  std::unique_ptr<TestServer> server_;
  std::string dsn_;
  std::string application_;
  std::unique_ptr<Admin> admin_;
  std::unique_ptr<FaultProxy> proxy_;
  std::vector<std::unique_ptr<PgPool>> pools_;
  Clock::time_point start_{};

  std::mutex mutex_;
  std::condition_variable work_cv_, idle_cv_, thread_cv_;
  std::deque<Job> jobs_;
  std::vector<std::thread> workers_;
  std::vector<int> busy_;
  int idle_workers_ = 0;
  std::uint64_t in_flight_ = 0;
  bool stopping_ = false;
  sim::ReplicationStats stats_;
  std::uint64_t opened_at_warmup_ = 0, closed_at_warmup_ = 0;
};

}  // namespace

std::string mask_password(const std::string& conninfo) {
  std::string out = conninfo;
  auto lower = [](std::string t) {
    for (char& ch : t) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return t;
  };
  // URI form: postgresql://user:PASSWORD@host/...
  const std::string folded = lower(out);
  for (const char* scheme : {"postgresql://", "postgres://"}) {
    const auto start = folded.find(scheme);
    if (start == std::string::npos) continue;
    const auto user = start + std::string(scheme).size();
    const auto at = out.find('@', user);
    const auto colon = out.find(':', user);
    if (at != std::string::npos && colon != std::string::npos && colon < at) {
      out.replace(colon + 1, at - colon - 1, "****");
    }
    break;
  }
  // Keyword form: password = value, password='quoted \' value'
  for (std::size_t from = 0;;) {
    const auto key = lower(out).find("password", from);
    if (key == std::string::npos) break;
    std::size_t i = key + 8;
    while (i < out.size() && std::isspace(static_cast<unsigned char>(out[i]))) ++i;
    if (i >= out.size() || out[i] != '=') {
      from = key + 8;
      continue;
    }
    ++i;
    while (i < out.size() && std::isspace(static_cast<unsigned char>(out[i]))) ++i;
    std::size_t end = i;
    if (end < out.size() && out[end] == '\'') {
      for (++end; end < out.size() && out[end] != '\''; ++end) {
        if (out[end] == '\\') ++end;
      }
      end = std::min(out.size(), end + 1);
    } else {
      while (end < out.size() && !std::isspace(static_cast<unsigned char>(out[end]))) ++end;
    }
    out.replace(i, end - i, "****");
    from = i + 4;
  }
  return out;
}

sim::Json run_live(const sim::Scenario& scenario, const LiveOptions& options,
                   const sim::Progress& progress) {
  check_dsn(options.dsn);
  LiveRun run(scenario, options);
  return run.run(progress);
}

namespace {

// What validate compares, and the tolerance it allows on top of the simulation's 95% interval.
// The live run is one replication measured on a real machine: a checkout of an idle connection
// costs microseconds that the model counts as no wait (p_wait counts waits above 200 us),
// pg_sleep and the round trip add a fraction of a millisecond to every hold, threads wake up
// late by up to a millisecond under load, and the server's connection count is sampled every
// 50 ms. The tolerances are those noise levels, no more.
struct Compared {
  const char* key;
  double absolute;
  double relative;
};
constexpr Compared kCompared[] = {
    {"p_wait", 0.03, 0.0},
    {"timeouts", 0.01, 0.0},
    {"errors", 0.01, 0.0},
    {"wait_ms.mean", 1.0, 0.10},
    {"wait_ms.p95", 2.0, 0.15},
    {"latency_ms.mean", 1.0, 0.05},
    {"connections.opened_per_s", 0.5, 0.15},
    {"connections.mean_open", 0.5, 0.10},
    {"connections.peak_server", 2.0, 0.0},
};

}  // namespace

sim::Json validate(const sim::Scenario& scenario, const LiveOptions& options, bool calibrate_first,
                   const sim::Progress& progress, const LiveRunner& live_runner) {
  check_dsn(options.dsn);
  sim::Scenario s = scenario;
  sim::Json calibration;
  std::optional<Measurements> before;
  // With --dsn auto the measurements, before and after, have a server of their own, idle while
  // the live run starts another.
  std::unique_ptr<TestServer> measured;
  if (calibrate_first && options.dsn == "auto") measured = std::make_unique<TestServer>();
  auto measure_server = [&options, &measured] {
    return measure(measured ? measured->dsn() : options.dsn);
  };
  auto apply = [&s, &calibration](const Calibration& c) {
    calibration = c.json;
    std::map<std::string, std::string> database;
    for (const auto& item : c.json["options"].items()) {
      database[item.key()] = item.value().get<std::string>();
    }
    // A live request holds its connection for pg_sleep(hold) plus the statement's overhead,
    // and sends no ROLLBACK afterwards (autocommit: no transaction is open). The simulation's
    // after-hold cost, database.reset, is where that time belongs: the connection is busy and
    // the request not finished. The report's calibration block says where it came from.
    database["database.reset"] = calibration["statement"]["distribution"].get<std::string>();
    calibration["database.reset"] = "the measured statement overhead (see statement)";
    // Read as the scenario parser reads them: the one place that says what they mean.
    const sim::Scenario parsed = sim::make_scenario(database, {});
    s.connect = parsed.connect;
    s.ping = parsed.ping;
    s.reset = parsed.reset;
    s.connect_capacity = parsed.connect_capacity;
    s.connect_curve = parsed.connect_curve;
    s.connect_sharing = parsed.connect_sharing;
    for (const auto& [key, text] : database) s.set_option(key, text);
  };
  if (calibrate_first) {
    before = measure_server();
    apply(summarize(*before));  // the live run's costs are the simulation's, not its options
  }
  const sim::Progress live_progress = [&progress](double f) {
    if (progress) progress(0.8 * f);
  };
  sim::Json live =
      live_runner ? live_runner(s, live_progress) : run_live(s, options, live_progress);
  sim::Json drift;
  if (calibrate_first) {
    // Measured again: the simulation takes both measurements together, and a machine whose
    // speed changed between them ran the live side under conditions neither describes.
    const Measurements after = measure_server();
    drift = compare_drift(*before, after);
    apply(summarize(merge(*before, after)));
  }
  if (calibrate_first && live.contains("calibration")) {
    // The runner measured its own cost beyond the hold (SQLAlchemy: psycopg2's BEGIN, the
    // statement, the ROLLBACK on return and Python's share): that, not libpq's, is what holds
    // its connections after each hold.
    const std::string spec = live["calibration"]["statement"]["distribution"].get<std::string>();
    s.reset = sim::Distribution::parse(spec);
    s.set_option("database.reset", spec);
    calibration["runner_statement"] = live["calibration"]["statement"];
    calibration["database.reset"] =
        "the statement overhead measured through the live runner (see runner_statement)";
    live.erase("calibration");
  }
  s.replications = std::max(10, s.replications);
  std::vector<sim::ReplicationStats> runs;
  for (int i = 0; i < s.replications; ++i) {
    runs.push_back(sim::run_replication(s, i));
    if (progress) progress(0.8 + 0.2 * (i + 1) / s.replications);
  }
  const sim::Json simulated = sim::simulation_result(s, runs, 0);
  sim::Json agreement = sim::Json::object();
  sim::Json tolerance = sim::Json::object();
  for (const Compared& c : kCompared) {
    std::vector<double> values;
    for (const sim::ReplicationStats& r : runs) values.push_back(sim::replication_metric(c.key, r));
    const sim::Estimate e = sim::student_t95(values);
    const double live_value = sim::result_metric(c.key, live);
    const double allowed = e.half_width + c.absolute + c.relative * std::abs(e.mean);
    agreement[c.key] = sim::Json{{"live", live_value},
                                 {"sim", e.mean},
                                 {"ci95", e.half_width},
                                 {"allowed", allowed},
                                 {"within", std::abs(live_value - e.mean) <= allowed}};
    tolerance[c.key] = sim::Json{{"absolute", c.absolute}, {"relative", c.relative}};
  }
  bool all_within = true;
  for (const auto& item : agreement.items()) all_within = all_within && item.value()["within"];
  const bool drifted = calibrate_first && drift["drifted"].get<bool>();
  sim::Json report{{"verdict", drifted ? "drift" : all_within ? "agrees" : "differs"},
                   {"live", live},
                   {"sim", simulated},
                   {"agreement", agreement},
                   {"tolerance", tolerance}};
  if (calibrate_first) {
    report["calibration"] = calibration;
    report["drift"] = drift;
  }
  return report;
}

std::string validate_table(const sim::Json& report) {
  std::string out = "poolsim validate: the same workload live and simulated (" +
                    report["sim"]["replications"].dump() + " replications)\n\n";
  char line[200];
  std::snprintf(line, sizeof line, "  %-26s %12s %12s %12s %12s  %s\n", "metric", "live", "sim",
                "sim ±95%", "allowed ±", "verdict");
  out += line;
  const bool drifted = report["verdict"] == "drift";
  int agree = 0, total = 0;
  for (const auto& item : report["agreement"].items()) {
    const sim::Json& a = item.value();
    const bool within = a["within"].get<bool>();
    agree += within;
    ++total;
    std::snprintf(line, sizeof line, "  %-26s %12.4g %12.4g %12.4g %12.4g  %s\n",
                  item.key().c_str(), a["live"].get<double>(), a["sim"].get<double>(),
                  a["ci95"].get<double>(), a["allowed"].get<double>(),
                  drifted ? (within ? "(within)" : "(outside)") : within ? "agrees" : "DIFFERS");
    out += line;
  }
  if (drifted) {
    out += "\n  verdict: none. The machine's speed changed during the run: " +
           drift_text(report["drift"]) +
           ". Neither measurement describes what the live run saw, so this comparison says "
           "nothing about the model: run it again.\n  (" +
           report["drift"]["rule"].get<std::string>() + ")\n";
    return out;
  }
  out += "\n  " + std::to_string(agree) + " of " + std::to_string(total) +
         " metrics agree (allowed = the 95% interval + a stated tolerance for measurement noise)\n";
  if (report.contains("drift")) {
    const sim::Json& d = report["drift"];
    std::snprintf(line, sizeof line,
                  "  measured before and after the live run: a lone connect %.1f / %.1f ms, a "
                  "round of storms %.0f / %.0f ms (no drift)\n",
                  d["lone_connect"]["before_ms"].get<double>(),
                  d["lone_connect"]["after_ms"].get<double>(),
                  d["storm_round"]["before_ms"].get<double>(),
                  d["storm_round"]["after_ms"].get<double>());
    out += line;
  }
  return out;
}

}  // namespace poolsim::real_pool
