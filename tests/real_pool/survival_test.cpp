// Fault survival under load: a PgPool (4 + 4 overflow, pre_ping, pool timeout 1.5 s) driven by
// 10 threads near saturation, through a FaultProxy, while the server suffers five faults one
// after another: every backend killed, a restart, max_connections exceeded, a black-holed
// network, the server down for twice the pool timeout.
//
// Each thread follows its own open-loop schedule (exponential gaps, fixed seed): a request is
// issued when it is due, also when the pool is slow, and late requests are caught up. Every
// request gets exactly one outcome: completed, a PoolError of a named kind, or a query error
// classified as a disconnect (after which the handle reports disconnected()). A query has a
// client-side deadline: in a black hole nothing moves until it ends, so a query that outlives
// it is a disconnect too ("query_timeout"; the connection is invalidated).
//
// Each fault is followed by recovery, measured from the fault's end: "checkout", until the pool
// hands out a connection that then serves its request; "served", until any request completes;
// "fresh", until a request issued after the end completes (it queues behind the requests that
// waited through the fault). They are reported against a connect's time, measured first: alone,
// and as one of pool_size + max_overflow started at once (what a pool refilling itself after a
// fault does; SCRAM is CPU-bound, so on 2 cores each takes several times as long). Then a short
// settle, and a quiesce: new requests pause, every request of the phase must have its outcome
// (none lost, none answered twice), nothing is checked out, and the server has exactly the
// pool's connections (none leaked). A monitor samples pg_stat_activity
// in the steady windows between faults: never more than pool_size + max_overflow.
//
// Runs as a role without superuser rights (as an application would), with 8 connection slots
// reserved for superusers: max_connections = 11 then leaves the pool 3 of the 8 it wants, while
// the test's admin connections always find a free slot (see kill_all_backends and with_retries).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "real_pool/fault_proxy.hpp"
#include "real_pool/pg_pool.hpp"
#include "real_pool/test_server.hpp"

namespace poolsim::real_pool {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

const std::string kApp = "poolsim_survival";
const std::string kRole = "poolsim_app";
const std::string kRolePassword = "survival-7f3c91d2";

constexpr int kPoolSize = 4;
constexpr int kMaxOverflow = 4;
constexpr int kPoolLimit = kPoolSize + kMaxOverflow;
constexpr int kThreads = 10;
constexpr double kRatePerThread = 60.0;  // requests/s: 600/s in all, about 3 erlangs
constexpr double kSleepShare = 0.8;      // SELECT pg_sleep(0.005), else SELECT 1
constexpr milliseconds kPoolTimeout{1500};
constexpr milliseconds kConnectTimeout{1000};
constexpr milliseconds kQueryTimeout{1000};
constexpr auto kRecoveryBound = 10s;  // generous: not a speed test

// ---------------------------------------------------------------------------------------------
// One request's outcome.

enum class Outcome : std::size_t {
  kCompleted,
  kTimeout,             // PoolError::kTimeout
  kConnectFailed,       // PoolError::kConnectFailed
  kTooManyConnections,  // PoolError::kTooManyConnections
  kPingError,           // PoolError::kPingError
  kDisconnect,          // the query failed with a disconnect error
  kQueryTimedOut,       // the query outlived its deadline: treated as a disconnect
  kQueryError,          // any other query error: none expected
  kUnexpected,          // any other exception: none expected
};
constexpr std::size_t kOutcomes = 9;
constexpr std::array<const char*, kOutcomes> kOutcomeNames = {
    "completed",  "timeout",       "connect_failed", "too_many",  "ping_error",
    "disconnect", "query_timeout", "query_error",    "unexpected"};

constexpr std::size_t index_of(Outcome outcome) { return static_cast<std::size_t>(outcome); }

Outcome outcome_of(PoolError::Kind kind) {
  switch (kind) {
    case PoolError::Kind::kTimeout: return Outcome::kTimeout;
    case PoolError::Kind::kConnectFailed: return Outcome::kConnectFailed;
    case PoolError::Kind::kTooManyConnections: return Outcome::kTooManyConnections;
    case PoolError::Kind::kPingError: return Outcome::kPingError;
  }
  return Outcome::kUnexpected;
}

// ---------------------------------------------------------------------------------------------
// A query with a client-side deadline (libpq's asynchronous API and poll()).

enum class QueryStatus { kOk, kDisconnect, kTimedOut, kError };

// What SQLAlchemy's psycopg2 dialect calls a disconnect: the connection is gone, or the server
// said it is closing it (admin shutdown, crash, starting up) or the link failed (class 08).
bool disconnect_sqlstate(const std::string& state) {
  return state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03";
}

QueryStatus query(PGconn* conn, const char* sql, Clock::duration timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  const auto gone = [&] { return PQstatus(conn) == CONNECTION_BAD; };
  if (PQsendQuery(conn, sql) == 0) return gone() ? QueryStatus::kDisconnect : QueryStatus::kError;
  bool failed = false;
  std::string sqlstate;
  for (;;) {
    while (PQisBusy(conn) != 0) {
      const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return QueryStatus::kTimedOut;
      pollfd fd{PQsocket(conn), POLLIN, 0};
      const int ready = ::poll(&fd, 1, static_cast<int>(left));
      if (ready < 0 && errno != EINTR) return QueryStatus::kError;
      if (ready > 0 && PQconsumeInput(conn) == 0) {
        return gone() ? QueryStatus::kDisconnect : QueryStatus::kError;
      }
    }
    PGresult* result = PQgetResult(conn);
    if (result == nullptr) break;
    const ExecStatusType status = PQresultStatus(result);
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      failed = true;
      const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
      if (state != nullptr && sqlstate.empty()) sqlstate = state;
    }
    PQclear(result);
  }
  if (gone() || (failed && disconnect_sqlstate(sqlstate))) return QueryStatus::kDisconnect;
  return failed ? QueryStatus::kError : QueryStatus::kOk;
}

// One request: checkout, one statement, give the connection back as the Engine would.
// `granted` is set when the pool hands out the connection.
Outcome run_request(PgPool& pool, const char* sql, Clock::time_point& granted) {
  try {
    PgPool::Handle handle = pool.checkout();
    granted = Clock::now();
    switch (query(handle.conn(), sql, kQueryTimeout)) {
      case QueryStatus::kOk: return Outcome::kCompleted;  // released by the handle
      case QueryStatus::kDisconnect: handle.disconnected(); return Outcome::kDisconnect;
      case QueryStatus::kTimedOut:
        handle.disconnected();  // the connection is in an unknown state: never reuse it
        return Outcome::kQueryTimedOut;
      case QueryStatus::kError: return Outcome::kQueryError;
    }
    return Outcome::kUnexpected;
  } catch (const PoolError& e) {
    return outcome_of(e.kind);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected exception: %s\n", e.what());
    return Outcome::kUnexpected;
  }
}

// ---------------------------------------------------------------------------------------------
// The load: kThreads open-loop streams, a ledger of every request, pause and resume.

struct PhaseStats {
  std::uint64_t issued = 0;
  std::array<std::uint64_t, kOutcomes> outcomes{};
  std::uint64_t answered_twice = 0;
  std::uint64_t late_errors = 0;  // failed requests issued after the pool had recovered
  std::uint64_t answered() const {
    std::uint64_t sum = 0;
    for (std::uint64_t n : outcomes) sum += n;
    return sum;
  }
  std::uint64_t errors() const { return answered() - outcomes[index_of(Outcome::kCompleted)]; }
};

class Load {
 public:
  explicit Load(PgPool& pool) : pool_(pool) { records_.reserve(1 << 15); }
  ~Load() { stop(); }
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;

  void start() {
    for (int t = 0; t < kThreads; ++t) threads_.emplace_back([this, t] { stream(t); });
  }
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  // Stops issuing requests and waits for those in flight; returns how many still had no
  // outcome when the time ran out (lost).
  std::uint64_t quiesce(Clock::duration timeout) {
    std::unique_lock lock(mutex_);
    paused_ = true;
    cv_.wait_for(lock, timeout, [&] { return in_flight_ == 0; });
    return in_flight_;
  }
  // Starts issuing again; the requests from now on belong to `phase`.
  void resume(int phase) {
    {
      std::lock_guard lock(mutex_);
      phase_ = phase;
      paused_ = false;
      mark_.reset();
      recovered_.reset();
      served_.reset();
      checkout_.reset();
      if (stats_.size() <= static_cast<std::size_t>(phase)) {
        stats_.resize(static_cast<std::size_t>(phase) + 1);
      }
    }
    cv_.notify_all();
  }
  // From the fault's end at `at`: `checkout`, until the pool hands out a connection that then
  // serves its request (the pool has recovered: with pre_ping that is one failed ping and one
  // connect); `served`, until that request or any other completes (its statement included:
  // those that waited through the fault come first, FIFO); `fresh`, until a request issued
  // after the end completes (it queues behind the fault's backlog).
  struct Recovery {
    Clock::duration checkout;
    Clock::duration served;
    Clock::duration fresh;
  };
  // Waits for both; nullopt after `timeout`.
  std::optional<Recovery> wait_recovery(Clock::time_point at, Clock::duration timeout) {
    std::unique_lock lock(mutex_);
    mark_ = at;
    recovered_.reset();
    served_.reset();
    checkout_.reset();
    for (const Record& r : records_) {  // requests already done since `at`
      if (!r.answered || r.outcome != Outcome::kCompleted || r.done < at) continue;
      if (!served_ || r.done < *served_) served_ = r.done;
      if (r.granted >= at && (!checkout_ || r.granted < *checkout_)) checkout_ = r.granted;
      if (r.issued >= at && (!recovered_ || r.done < *recovered_)) recovered_ = r.done;
    }
    cv_.wait_for(lock, timeout, [&] { return recovered_.has_value(); });
    if (!recovered_) return std::nullopt;
    // The request that set recovered_ was issued after `at`, so granted after it: checkout_ is set.
    return Recovery{*checkout_ - at, *served_ - at, *recovered_ - at};
  }
  PhaseStats stats(int phase) {
    std::lock_guard lock(mutex_);
    return stats_.at(static_cast<std::size_t>(phase));
  }

 private:
  struct Record {
    Clock::time_point issued;
    Clock::time_point done;
    Clock::time_point granted;  // when the pool handed it a connection (if it did)
    std::size_t phase = 0;
    Outcome outcome = Outcome::kUnexpected;
    bool answered = false;
  };

  void stream(int index) {
    std::mt19937_64 rng(0x5eed0000u + static_cast<std::uint64_t>(index));
    std::exponential_distribution<double> gap_seconds(kRatePerThread);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    const auto gap = [&] {
      return std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(gap_seconds(rng)));
    };
    Clock::time_point next = Clock::now() + gap();
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        if (paused_ && !stopping_) {
          cv_.wait(lock, [&] { return !paused_ || stopping_; });
          next = Clock::now() + gap();  // the schedule starts again after a pause
        }
        if (stopping_) return;
      }
      std::this_thread::sleep_until(next);
      std::size_t id = 0;
      {
        std::lock_guard lock(mutex_);
        if (paused_ || stopping_) continue;
        id = records_.size();
        records_.push_back({Clock::now(), {}, {}, static_cast<std::size_t>(phase_), {}, false});
        ++stats_[static_cast<std::size_t>(phase_)].issued;
        ++in_flight_;
      }
      next += gap();  // open loop: the next arrival does not wait for this one to finish
      const char* sql = uniform(rng) < kSleepShare ? "SELECT pg_sleep(0.005)" : "SELECT 1";
      Clock::time_point granted{};
      const Outcome outcome = run_request(pool_, sql, granted);
      finish(id, outcome, granted);
    }
  }

  void finish(std::size_t id, Outcome outcome, Clock::time_point granted) {
    {
      std::lock_guard lock(mutex_);
      Record& r = records_[id];
      PhaseStats& s = stats_[r.phase];
      if (r.answered) {
        ++s.answered_twice;
        return;
      }
      r.answered = true;
      r.outcome = outcome;
      r.done = Clock::now();
      r.granted = granted;
      ++s.outcomes[index_of(outcome)];
      --in_flight_;
      if (outcome != Outcome::kCompleted && recovered_ && r.issued >= *recovered_) {
        ++s.late_errors;
      }
      if (outcome == Outcome::kCompleted && mark_ && r.done >= *mark_ && !served_) {
        served_ = r.done;
      }
      if (outcome == Outcome::kCompleted && mark_ && r.granted >= *mark_ &&
          (!checkout_ || r.granted < *checkout_)) {
        checkout_ = r.granted;
      }
      if (outcome == Outcome::kCompleted && mark_ && r.issued >= *mark_ &&
          (!recovered_ || r.done < *recovered_)) {
        recovered_ = r.done;
      }
    }
    cv_.notify_all();
  }

  PgPool& pool_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Record> records_;  // all guarded by mutex_
  std::vector<PhaseStats> stats_;
  int phase_ = 0;
  bool paused_ = true;
  bool stopping_ = false;
  std::uint64_t in_flight_ = 0;
  std::optional<Clock::time_point> mark_;
  std::optional<Clock::time_point> recovered_;
  std::optional<Clock::time_point> served_;
  std::optional<Clock::time_point> checkout_;
  std::vector<std::thread> threads_;
};

// Samples pg_stat_activity (the pool's backends) and the pool's own count every 50 ms.
class Monitor {
 public:
  Monitor(const TestServer& server, const PgPool& pool) : server_(server), pool_(pool) {
    thread_ = std::thread([this] { run(); });
  }
  ~Monitor() {
    stop_ = true;
    thread_.join();
  }
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  struct Window {
    int samples = 0;
    int max_server = 0;        // backends in pg_stat_activity
    std::size_t max_pool = 0;  // the pool's open connections
  };
  // Starts a new window; returns the one that ends.
  Window next_window(bool steady) {
    std::lock_guard lock(mutex_);
    const Window ended = window_;
    window_ = {};
    steady_ = steady;
    return ended;
  }
  bool steady() {
    std::lock_guard lock(mutex_);
    return steady_;
  }

 private:
  void run() {
    while (!stop_) {
      int count = -1;
      try {
        count = server_.connections(kApp);
      } catch (const std::exception&) {
        // The server is down or restarting: no sample.
      }
      const std::size_t open = pool_.open_connections();
      {
        std::lock_guard lock(mutex_);
        if (count >= 0) {
          ++window_.samples;
          window_.max_server = std::max(window_.max_server, count);
        }
        window_.max_pool = std::max(window_.max_pool, open);
      }
      std::this_thread::sleep_for(50ms);
    }
  }

  const TestServer& server_;
  const PgPool& pool_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  Window window_;  // guarded by mutex_
  bool steady_ = true;
  std::thread thread_;
};

// One statement on a superuser connection of its own; returns the first value of the first row.
std::string admin_query(const TestServer& server, const std::string& sql,
                        const std::vector<std::string>& params) {
  const std::string conninfo = server.dsn() + " application_name=survival_admin";
  PGconn* conn = PQconnectdb(conninfo.c_str());
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  PGresult* result = PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                                  values.data(), nullptr, nullptr, 0);
  const bool ok = PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) > 0;
  const std::string value = ok ? PQgetvalue(result, 0, 0) : "";
  const std::string error = ok ? "" : PQerrorMessage(conn);
  PQclear(result);
  PQfinish(conn);
  if (!ok) throw std::runtime_error("admin query failed: " + error);
  return value;
}

// Kills every backend of the pool in one statement (pg_terminate_backend without a timeout only
// signals), then waits up to 5 s for them to exit; returns how many were signalled.
// TestServer::terminate_backends waits for each backend in turn, about 100 ms apiece
// (PostgreSQL polls in 100 ms steps), and by then the pool has already replaced the others.
int kill_all_backends(const TestServer& server) {
  const std::string pids = admin_query(
      server,
      "SELECT coalesce(array_agg(pid) FILTER (WHERE t), '{}') FROM (SELECT pid, "
      "pg_terminate_backend(pid) AS t FROM pg_stat_activity WHERE application_name = $1) s",
      {kApp});
  const auto deadline = Clock::now() + 5s;
  while (admin_query(server, "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                     {pids}) != "0" &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  return pids == "{}" ? 0 : static_cast<int>(std::count(pids.begin(), pids.end(), ',')) + 1;
}

// Runs an admin action again while it fails. PostgreSQL checks the slots reserved for superusers
// only after authentication: a refused application's connect storm, its backends authenticating,
// can take every process slot, and then a superuser gets "too many clients" too. The test keeps
// max_connections above the pool's 8 so that cannot last; this covers backends slow to exit.
void with_retries(const std::function<void()>& action) {
  for (int attempt = 1;; ++attempt) {
    try {
      action();
      return;
    } catch (const std::runtime_error& e) {
      if (attempt == 50) throw;
      std::printf("[survival] admin action failed (attempt %d), retrying: %s\n", attempt, e.what());
      std::this_thread::sleep_for(100ms);
    }
  }
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The time a connect takes on the pool's path (through the proxy, the application's role and
// its password: SCRAM, CPU-bound on both ends), `rounds` times `at_once` connects started
// together on as many threads; sorted. at_once = 1: one connect alone. A pool that recovers
// from an outage opens up to pool_size + max_overflow at once, and on a 2-core machine those
// share the CPU: each takes several times as long.
std::vector<Clock::duration> connect_times(const std::string& dsn, int rounds, int at_once) {
  std::vector<Clock::duration> times;
  std::mutex mutex;
  bool failed = false;
  for (int round = 0; round < rounds; ++round) {
    std::vector<std::thread> threads;
    for (int i = 0; i < at_once; ++i) {
      threads.emplace_back([&] {
        const Clock::time_point start = Clock::now();
        PGconn* conn = PQconnectdb(dsn.c_str());
        const Clock::duration took = Clock::now() - start;
        const bool ok = PQstatus(conn) == CONNECTION_OK;
        PQfinish(conn);
        std::lock_guard lock(mutex);
        times.push_back(took);
        failed = failed || !ok;
      });
    }
    for (std::thread& t : threads) t.join();
  }
  if (failed) throw std::runtime_error("a timing connect failed");
  std::sort(times.begin(), times.end());
  return times;
}

void sleep(Clock::duration d) { std::this_thread::sleep_for(d); }

// ---------------------------------------------------------------------------------------------

class SurvivalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new TestServer();
    // The application's role: no superuser, so max_connections minus the reserved slots
    // limits it while the test's admin connections (superuser) still get in.
    PGconn* admin = PQconnectdb(server_->dsn().c_str());
    ASSERT_EQ(PQstatus(admin), CONNECTION_OK) << PQerrorMessage(admin);
    const std::string sql = "CREATE ROLE " + kRole + " LOGIN PASSWORD '" + kRolePassword + "'";
    PGresult* result = PQexec(admin, sql.c_str());
    EXPECT_EQ(PQresultStatus(result), PGRES_COMMAND_OK) << PQerrorMessage(admin);
    PQclear(result);
    PQfinish(admin);
    server_->set_parameter("superuser_reserved_connections", "8");  // restarts
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void TearDown() override {
    EXPECT_EQ(server_->wait_for_connections(kApp, 0), 0) << "pool connections left behind";
  }

  // A request is stuck in the pool: joining its thread would hang. Stop the server (its
  // directory goes too) and end the process with the failures printed so far.
  [[noreturn]] static void give_up() {
    std::fprintf(stderr, "requests lost: giving up (their threads cannot be joined)\n");
    delete server_;
    std::fflush(nullptr);
    std::_Exit(1);
  }

  static std::string app_dsn(int port) {
    return "host=127.0.0.1 port=" + std::to_string(port) + " user=" + kRole +
           " password=" + kRolePassword + " dbname=postgres application_name=" + kApp;
  }
  static PoolConfig config() {
    PoolConfig c;
    c.pool_size = kPoolSize;
    c.max_overflow = kMaxOverflow;
    c.timeout = kPoolTimeout;
    c.pre_ping = true;
    return c;
  }

  static TestServer* server_;
};
TestServer* SurvivalTest::server_ = nullptr;

struct Fault {
  const char* name;
  std::function<void()> inject;  // returns when the fault is over
  std::optional<Outcome> felt;   // an error the fault must have caused (it did happen)
};

TEST_F(SurvivalTest, FaultsUnderLoad) {
  FaultProxy proxy("127.0.0.1", server_->port());
  auto pool = std::make_unique<PgPool>(app_dsn(proxy.port()), config(), kConnectTimeout);
  TestServer& server = *server_;
  const std::vector<Fault> faults = {
      {"kill_backends",
       [&] {
         const int killed = kill_all_backends(server);
         std::printf("[survival] kill_backends: %d backends terminated at once\n", killed);
         EXPECT_GT(killed, 0);
       },
       std::nullopt},
      {"restart", [&] { server.restart(); }, Outcome::kConnectFailed},
      {"max_connections",
       [&] {
         server.set_parameter("max_connections", "11");  // 3 slots for the pool; restarts
         sleep(2s);
         with_retries([&] { server.set_parameter("max_connections", "100"); });
       },
       Outcome::kTooManyConnections},
      {"blackhole",
       [&] {
         proxy.set_blackhole(true);
         sleep(2s);
         proxy.set_blackhole(false);
       },
       std::nullopt},
      {"server_down",
       [&] {
         server.stop();
         sleep(2 * kPoolTimeout);
         server.start();
       },
       Outcome::kConnectFailed},
  };

  // A connect's time, the yardstick of recovery with pre_ping (reported, not asserted): alone,
  // and as one of kPoolLimit started at once (a pool refilling itself after a fault).
  const std::vector<Clock::duration> alone = connect_times(app_dsn(proxy.port()), 21, 1);
  const std::vector<Clock::duration> burst = connect_times(app_dsn(proxy.port()), 3, kPoolLimit);
  const Clock::duration connect_alone = alone[alone.size() / 2];
  const Clock::duration connect_in_burst = burst[burst.size() / 2];
  std::printf(
      "[survival] one connect (through the proxy, SCRAM), alone: min %.1f ms, median "
      "%.1f ms, max %.1f ms of %zu; %d at once: median %.1f ms, max %.1f ms of %zu\n",
      ms(alone.front()), ms(connect_alone), ms(alone.back()), alone.size(), kPoolLimit,
      ms(connect_in_burst), ms(burst.back()), burst.size());

  Load load(*pool);
  auto monitor = std::make_unique<Monitor>(server, *pool);  // stopped before the pool goes
  load.start();

  // Quiesces the load and checks the phase's books; returns false if requests were lost.
  const auto close_phase = [&](int phase, const char* name,
                               std::optional<Load::Recovery> recovery,
                               const PgPool::Counters& before, const Monitor::Window& steady,
                               const Monitor::Window& faulty) {
    const std::uint64_t lost = load.quiesce(20s);
    const PoolStatus status = pool->status();
    const int open = static_cast<int>(pool->open_connections());
    const int on_server = server.wait_for_connections(kApp, open);
    const int leaked = on_server - open;
    const PhaseStats s = load.stats(phase);
    const PgPool::Counters after = pool->counters();
    std::string kinds;
    for (std::size_t k = 1; k < kOutcomes; ++k) {
      if (s.outcomes[k] > 0)
        kinds += " " + std::string(kOutcomeNames[k]) + "=" + std::to_string(s.outcomes[k]);
    }
    char recovery_text[160] = "-";
    if (recovery) {
      std::snprintf(recovery_text, sizeof recovery_text,
                    "checkout %.1f ms (connects: %.2f alone, %.2f in a burst), served %.1f ms, "
                    "fresh %.1f ms",
                    ms(recovery->checkout), ms(recovery->checkout) / ms(connect_alone),
                    ms(recovery->checkout) / ms(connect_in_burst), ms(recovery->served),
                    ms(recovery->fresh));
    }
    std::printf(
        "[survival] %-15s issued %5llu completed %5llu errors %4llu {%s } lost %llu twice %llu "
        "recovery %s late_errors %llu leaked %d | opened %llu closed %llu pings %llu "
        "(failed %llu) | backends max %d steady / %d fault, pool max %zu\n",
        name, static_cast<unsigned long long>(s.issued),
        static_cast<unsigned long long>(s.outcomes[index_of(Outcome::kCompleted)]),
        static_cast<unsigned long long>(s.errors()), kinds.c_str(),
        static_cast<unsigned long long>(lost), static_cast<unsigned long long>(s.answered_twice),
        recovery_text, static_cast<unsigned long long>(s.late_errors), leaked,
        static_cast<unsigned long long>(after.opened - before.opened),
        static_cast<unsigned long long>(after.closed - before.closed),
        static_cast<unsigned long long>(after.pings - before.pings),
        static_cast<unsigned long long>(after.ping_failures - before.ping_failures),
        steady.max_server, faulty.max_server, std::max(steady.max_pool, faulty.max_pool));
    std::fflush(stdout);

    EXPECT_EQ(lost, 0u) << name << ": requests without an outcome";
    EXPECT_EQ(s.issued, s.answered()) << name;
    EXPECT_EQ(s.answered_twice, 0u) << name;
    EXPECT_EQ(s.outcomes[index_of(Outcome::kQueryError)], 0u) << name;
    EXPECT_EQ(s.outcomes[index_of(Outcome::kUnexpected)], 0u) << name;
    EXPECT_GT(s.outcomes[index_of(Outcome::kCompleted)], 0u) << name;
    EXPECT_EQ(status.checkedout, 0) << name;
    EXPECT_EQ(status.waiting, 0) << name;
    EXPECT_EQ(leaked, 0) << name << ": backends the pool does not hold";
    EXPECT_LE(steady.max_server, kPoolLimit) << name << ": backends in steady state";
    EXPECT_LE(std::max(steady.max_pool, faulty.max_pool), static_cast<std::size_t>(kPoolLimit));
    return lost == 0;
  };

  // Phase 0: steady load, no fault.
  load.resume(0);
  PgPool::Counters before = pool->counters();
  monitor->next_window(true);
  sleep(2s);
  Monitor::Window steady = monitor->next_window(true);
  if (!close_phase(0, "steady", std::nullopt, before, steady, {})) {
    monitor.reset();  // it uses the server
    give_up();
  }
  EXPECT_EQ(load.stats(0).errors(), 0u) << "errors without a fault";

  for (std::size_t f = 0; f < faults.size(); ++f) {
    const int phase = static_cast<int>(f) + 1;
    before = pool->counters();
    load.resume(phase);
    sleep(1s);  // steady window
    steady = monitor->next_window(false);
    try {
      faults[f].inject();
    } catch (const std::exception& e) {
      ADD_FAILURE() << faults[f].name << ": the fault could not be made or undone: " << e.what();
    }
    const Clock::time_point end = Clock::now();
    const std::optional<Load::Recovery> recovery = load.wait_recovery(end, kRecoveryBound);
    EXPECT_TRUE(recovery) << faults[f].name << ": no request succeeded within "
                          << ms(kRecoveryBound) << " ms of the fault's end";
    sleep(500ms);  // settle
    const Monitor::Window faulty = monitor->next_window(true);
    if (!close_phase(phase, faults[f].name, recovery, before, steady, faulty)) {
      monitor.reset();
      give_up();
    }
    EXPECT_GT(pool->counters().opened, before.opened) << faults[f].name << ": no reconnect";
    if (const std::optional<Outcome> felt = faults[f].felt) {
      EXPECT_GT(load.stats(phase).outcomes[index_of(*felt)], 0u)
          << faults[f].name << ": no " << kOutcomeNames[index_of(*felt)] << " error";
    }
  }

  load.stop();
  monitor.reset();
  const PoolStatus status = pool->status();
  EXPECT_EQ(status.checkedout, 0);
  EXPECT_EQ(status.waiting, 0);
  EXPECT_GT(pool->open_connections(), 0u);
  pool.reset();  // the destructor closes every connection
  EXPECT_EQ(server.wait_for_connections(kApp, 0), 0);
}

// Handles dropped without release(): by an exception unwinding their scope (also one the pool
// throws) and by threads that end while holding them; the pool gets every one back.
thread_local PgPool::Handle t_held;

TEST_F(SurvivalTest, DroppedHandlesAreReturned) {
  PoolConfig c = config();
  c.pool_size = 2;
  c.max_overflow = 2;
  c.timeout = 200ms;
  constexpr auto kPatient = 10s;  // no fault here: deadlines only against a hang
  {
    PgPool pool(app_dsn(server_->port()), c, kPatient);
    const auto on_server = [&] {
      return server_->wait_for_connections(kApp, static_cast<int>(pool.open_connections()));
    };
    try {
      PgPool::Handle a = pool.checkout();
      PgPool::Handle b = pool.checkout();
      ASSERT_EQ(query(a.conn(), "BEGIN", kPatient), QueryStatus::kOk);
      ASSERT_EQ(query(a.conn(), "CREATE TEMP TABLE dropped (x int)", kPatient), QueryStatus::kOk);
      throw std::runtime_error("the request failed");
    } catch (const std::runtime_error&) {
    }
    EXPECT_EQ(pool.status().checkedout, 0);
    try {
      std::vector<PgPool::Handle> held;
      for (int i = 0; i <= c.pool_size + c.max_overflow; ++i) held.push_back(pool.checkout());
      FAIL() << "checkout beyond pool_size + max_overflow succeeded";
    } catch (const PoolError& e) {
      EXPECT_EQ(e.kind, PoolError::Kind::kTimeout);
    }
    EXPECT_EQ(pool.status().checkedout, 0);
    EXPECT_EQ(pool.status().overflow, 0);  // the two overflow connections were closed

    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&] {
        try {
          t_held = pool.checkout();                // released when the thread's storage goes
          PgPool::Handle local = pool.checkout();  // released when the function returns
          EXPECT_EQ(query(local.conn(), "SELECT 1", kPatient), QueryStatus::kOk);
        } catch (const PoolError& e) {
          ADD_FAILURE() << e.what();
        }
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(pool.status().checkedout, 0);
    EXPECT_EQ(pool.status().waiting, 0);
    EXPECT_EQ(on_server(), static_cast<int>(pool.open_connections()));

    // The transaction left open by the exception was rolled back: no temp table anywhere.
    std::vector<PgPool::Handle> all;
    for (int i = 0; i < c.pool_size + c.max_overflow; ++i) all.push_back(pool.checkout());
    for (const PgPool::Handle& h : all) {
      EXPECT_EQ(PQtransactionStatus(h.conn()), PQTRANS_IDLE);
      EXPECT_EQ(query(h.conn(), "SELECT * FROM dropped", kPatient), QueryStatus::kError);
    }
    all.clear();
    EXPECT_GE(pool.counters().resets, 1u);
    EXPECT_EQ(pool.status().checkedout, 0);
  }
  EXPECT_EQ(server_->wait_for_connections(kApp, 0), 0);  // the destructor closed everything
}

}  // namespace
}  // namespace poolsim::real_pool
