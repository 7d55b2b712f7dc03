#include "real_pool/pg_pool.hpp"

#include <poll.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "pool_model/overloaded.hpp"
#include "pool_model/static_core.hpp"

namespace poolsim::real_pool {
namespace detail {
namespace {

// What the core can answer a checkout with; each goes to the thread of its request.
using Answer = std::variant<OpenConnection, Ping, Grant, Fail>;

// A checkout in flight: lives on its thread's stack, linked into the pool's list so that
// another thread's input can hand it its answer.
struct Request {
  RequestId id{};
  std::condition_variable wake;
  std::optional<Answer> answer;
  Request* prev = nullptr;
  Request* next = nullptr;
  // Set under the lock by a thread that will notify `wake` after unlocking (Work::wake), and
  // cleared by it once done. The request may have its answer and be leaving by then (a
  // spurious or timed-out wait sees it): it must not vanish under that notify_one().
  std::atomic<bool> wake_pending{false};
  ~Request() {
    while (wake_pending.load(std::memory_order_acquire)) std::this_thread::yield();
  }
};

// A list that holds its first N items in place: a lock scope collects a few, without malloc.
template <typename T, std::size_t N>
class ShortList {
 public:
  void push_back(T item) {
    if (count_ < first_.size()) {
      first_[count_++] = item;
    } else {
      more_.push_back(item);
    }
  }
  // Calls f on each item in order, then empties the list.
  template <typename F>
  void drain(F f) {
    for (std::size_t i = 0; i < count_; ++i) f(first_[i]);
    count_ = 0;
    for (T item : more_) f(item);
    more_.clear();
  }

 private:
  std::array<T, N> first_{};
  std::size_t count_ = 0;
  std::vector<T> more_;
};

// Done after the lock, by the thread that caused it: I/O collected under the lock, and the
// wake-ups of the checkouts it answered. A waiter notified under the lock would wake only to
// block on the mutex still held and wait to be woken once more: at 8 threads on 4 connections
// (a hand-off per checkout) notifying after the unlock made checkouts 3x faster.
class Work {
 public:
  Work() = default;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work() { run_wakes(); }  // none is ever left waiting, whatever path forgot to run()
  void close(PGconn* conn) { closes_.push_back(conn); }  // only dispose closes more than 4
  // Under the lock: r has its answer, and is notified by run_wakes().
  void wake(Request& r) {
    r.wake_pending.store(true, std::memory_order_relaxed);
    wakes_.push_back(&r);
  }
  // Also safe under the lock (a checkout about to wait runs its wakes first): slower, not wrong.
  void run_wakes() {
    wakes_.drain([](Request* r) {
      r->wake.notify_one();
      r->wake_pending.store(false, std::memory_order_release);  // r may be gone after this
    });
  }
  void run() {  // after the unlock
    run_wakes();
    closes_.drain([](PGconn* conn) { PQfinish(conn); });
  }
  std::optional<Reset> reset;
  PGconn* reset_conn = nullptr;

 private:
  ShortList<PGconn*, 4> closes_;
  ShortList<Request*, 4> wakes_;
};

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "PgPool: %s\n", what);
  std::abort();
}

bool too_many_clients(const std::string& message) {
  return message.find("too many clients") != std::string::npos ||
         message.find("remaining connection slots are reserved") != std::string::npos ||
         message.find("53300") != std::string::npos;
}

// libpq's connect_timeout from a conninfo string or URI (seconds; 0 or less = none), if set.
std::optional<std::optional<Duration>> conninfo_connect_timeout(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  PQfreemem(error);  // a malformed conninfo is reported by the first connect, as libpq words it
  std::optional<std::optional<Duration>> found;
  for (PQconninfoOption* o = options; o != nullptr && o->keyword != nullptr; ++o) {
    if (std::string(o->keyword) != "connect_timeout" || o->val == nullptr) continue;
    const long seconds = std::strtol(o->val, nullptr, 10);
    found = seconds > 0 ? std::optional<Duration>(std::chrono::seconds(seconds)) : std::nullopt;
  }
  PQconninfoFree(options);
  return found;
}

// The pool design the real pool runs: SQLAlchemy's QueuePool or NullPool (PoolCore) and
// StaticPool (StaticCore), whose every connect and ping is some checkout's, or HikariCP's,
// psycopg_pool's or pgbouncer's server pool, which work in the background too.
class AnyCore {
 public:
  explicit AnyCore(PoolCore core) : core_(std::move(core)) {}
  explicit AnyCore(StaticCore core) : core_(std::move(core)) {}
  explicit AnyCore(HikariCore core) : core_(std::move(core)) {}
  explicit AnyCore(PsycopgCore core) : core_(std::move(core)) {}
  explicit AnyCore(PgbouncerCore core) : core_(std::move(core)) {}

  void start(Instant now) {
    std::visit(Overloaded{[](PoolCore&) {}, [](StaticCore&) {}, [&](auto& c) { c.start(now); }},
               core_);
  }
  void handle(Instant now, const Event& event) {
    // pgbouncer has no invalidation of its own: a client's broken server is closed as one
    // that died in its transaction.
    if (auto* bouncer = std::get_if<PgbouncerCore>(&core_)) {
      if (const auto* invalidated = std::get_if<Invalidated>(&event)) {
        bouncer->handle(now, DisconnectDetected{invalidated->slot});
        return;
      }
    }
    std::visit([&](auto& c) { c.handle(now, event); }, core_);
  }
  void handle_timeout(Instant now) {
    std::visit([&](auto& c) { c.handle_timeout(now); }, core_);
  }
  std::optional<Action> poll_action() {
    return std::visit([](auto& c) { return c.poll_action(); }, core_);
  }
  std::optional<Instant> poll_timeout() const {
    return std::visit([](const auto& c) { return c.poll_timeout(); }, core_);
  }
  bool background() const {
    return !std::holds_alternative<PoolCore>(core_) && !std::holds_alternative<StaticCore>(core_);
  }
  // StaticPool's one connection serves one checkout at a time (PgPool's turns).
  bool takes_turns() const { return std::holds_alternative<StaticCore>(core_); }
  // QueuePool's (nullptr for the others).
  const PoolCore* queuepool() const { return std::get_if<PoolCore>(&core_); }
  // SQLAlchemy's pools' settings and status (nullptr / nullopt for the others).
  const PoolConfig* sqlalchemy_config() const {
    if (const auto* c = std::get_if<PoolCore>(&core_)) return &c->config();
    if (const auto* c = std::get_if<StaticCore>(&core_)) return &c->config();
    return nullptr;
  }
  std::optional<PoolStatus> sqlalchemy_status() const {
    if (const auto* c = std::get_if<PoolCore>(&core_)) return c->status();
    if (const auto* c = std::get_if<StaticCore>(&core_)) return c->status();
    return std::nullopt;
  }
  // The message of a checkout that timed out, as the library words it.
  std::string timeout_message(std::int64_t overflow) const {
    return std::visit(
        Overloaded{
            [&](const PoolCore& c) { return poolsim::timeout_message(c.config(), overflow); },
            [](const StaticCore&) { return std::string("StaticPool never times out"); },
            [](const HikariCore& c) {
              return "Connection is not available, request timed out after " +
                     std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        c.config().connection_timeout)
                                        .count()) +
                     "ms.";
            },
            [](const PsycopgCore& c) {
              char seconds[32];
              std::snprintf(seconds, sizeof seconds, "%.2f", to_seconds(c.config().timeout));
              return std::string("couldn't get a connection after ") + seconds + " sec";
            },
            [](const PgbouncerCore&) { return std::string("query_wait_timeout"); }},
        core_);
  }
  // pgbouncer refuses a client at once while its logins fail and no server is up.
  bool fails_fast() const { return std::holds_alternative<PgbouncerCore>(core_); }

 private:
  std::variant<PoolCore, StaticCore, HikariCore, PsycopgCore, PgbouncerCore> core_;
};

}  // namespace

class PoolState {
 public:
  template <typename Core>
  PoolState(std::string conninfo, Core core, std::optional<Duration> timeout)
      : conninfo_(std::move(conninfo)),
        connect_timeout_(conninfo_connect_timeout(conninfo_).value_or(timeout)),
        core_(AnyCore(std::move(core))) {}

  mutable std::mutex mutex;
  AnyCore& core() { return core_; }
  const AnyCore& core() const { return core_; }
  PgPool::Counters counters;  // guarded by mutex
  std::size_t open_connections() const { return conns_.size(); }
  std::size_t in_use() const { return lent_.size(); }
  void lend(ConnId id) { lent_.insert(id); }
  void take_back(ConnId id) { lent_.erase(id); }
  // StaticPool's turns: PostgreSQL runs one statement at a time on a connection (psycopg2
  // locks it for each execute), so checkouts of its one connection take turns, first come
  // first served, from their checkout to the end of their reset, as the simulator has them.
  void take_turn(std::unique_lock<std::mutex>& lock) {
    if (!core_.takes_turns()) return;
    const std::uint64_t ticket = next_ticket_++;
    turn_wake_.wait(lock, [&] { return serving_ == ticket; });
  }
  void end_turn() {
    if (!core_.takes_turns()) return;
    ++serving_;
    turn_wake_.notify_all();
  }

  // The last background connect's error, for a checkout the core fails with kConnectFailed.
  std::string background_error;
  PoolError::Kind background_error_kind = PoolError::Kind::kConnectFailed;

  // ---- the pool's own threads (background cores only) ----------------------------------------
  // Work the core asked for that no checkout waits for: a connect or a keepalive check.
  std::condition_variable background_wake;  // new work, a new timer, or stopping
  bool stopping = false;
  // One pass of a pool thread, mutex held (released during I/O). A worker runs one queued
  // connect or check; the timer thread, which does no I/O but closes, runs the timers that are
  // due, so a slow connect never delays a timeout. Else it sleeps until there is something to
  // do. False once the pool is stopping.
  bool background_step(std::unique_lock<std::mutex>& lock, bool runs_timers) {
    if (stopping) return false;
    if (!runs_timers && !background_.empty()) {
      const Action action = background_.front();
      background_.pop_front();
      run_background(lock, action);
      return true;
    }
    const std::optional<Instant> next = runs_timers ? core_.poll_timeout() : std::nullopt;
    if (next && *next <= now()) {
      Work work;
      core_.handle_timeout(now());
      drain(nullptr, work);
      lock.unlock();
      work.run();
      lock.lock();
      return true;
    }
    timer_sleeps_until_ = next;  // nullopt: until woken
    if (next) {
      background_wake.wait_until(lock, to_steady(*next));
    } else {
      background_wake.wait(lock);
    }
    return true;
  }
  // The pool is gone: its idle connections are closed (handles still out close theirs).
  void close_idle(Work& work) {
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (lent_.count(it->first) != 0) {
        ++it;
        continue;
      }
      work.close(it->second);
      ++counters.closed;
      it = conns_.erase(it);
    }
  }

  // The one place the real pool reads a clock.
  static Instant steady_now() {
    return Instant(
        std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now().time_since_epoch()));
  }
  // The core's time. Called with the mutex held, so the core never sees time go backwards.
  Instant now() {
    last_now_ = std::max(last_now_, steady_now());
    return last_now_;
  }

  static std::chrono::steady_clock::time_point to_steady(Instant instant) {
    return std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            instant.time_since_epoch()));
  }

  void link(Request& request) {
    request.id = RequestId{++last_request_};
    request.next = requests_;
    if (requests_ != nullptr) requests_->prev = &request;
    requests_ = &request;
  }
  void unlink(Request& request) {
    if (request.prev != nullptr) request.prev->next = request.next;
    if (request.next != nullptr) request.next->prev = request.prev;
    if (requests_ == &request) requests_ = request.next;
    request.prev = request.next = nullptr;
  }

  // A background core opens: its first connects are queued for the pool's threads.
  void start(Work& work) {
    core_.start(now());
    drain(nullptr, work);
  }

  // Feeds one input to the core and drains what it asks for (mutex held).
  // Returns the time it passed.
  Instant handle(const Event& event, Request* self, Work& work) {
    const Instant at = now();
    core_.handle(at, event);
    drain(self, work);
    return at;
  }

  PGconn* conn(ConnId id) const {
    const auto found = conns_.find(id);
    if (found == conns_.end()) broken("the core named a connection the pool does not hold");
    return found->second;
  }
  ConnId add_conn(PGconn* conn) {
    const ConnId id{++last_conn_};
    conns_.emplace(id, conn);
    ++counters.opened;
    return id;
  }
  PGconn* remove_conn(ConnId id) {
    PGconn* conn = this->conn(id);
    conns_.erase(id);
    ++counters.closed;
    return conn;
  }

  // A new libpq connection, or nullptr with the error in `error`. Runs without the mutex.
  // Non-blocking libpq (PQconnectStartParams + PQconnectPoll) waited on with poll(), so the
  // deadline is kept on the pool's clock to the millisecond whatever the network does: a
  // black-holed server costs connect_timeout, not the kernel's TCP retry time.
  PGconn* connect(std::string& error) const {
    // Defaults first: the expanded conninfo (dbname, last) overrides them.
    static const char* const kKeywords[] = {"application_name", "dbname", nullptr};
    const char* values[] = {"poolsim", conninfo_.c_str(), nullptr};
    PGconn* conn = PQconnectStartParams(kKeywords, values, 1);
    if (conn == nullptr) {
      error = "libpq: out of memory";
      return nullptr;
    }
    const std::optional<Instant> deadline =
        connect_timeout_ ? std::optional<Instant>(steady_now() + *connect_timeout_) : std::nullopt;
    PostgresPollingStatusType polling = PGRES_POLLING_WRITING;
    while (PQstatus(conn) != CONNECTION_BAD && polling != PGRES_POLLING_OK &&
           polling != PGRES_POLLING_FAILED) {
      const auto events = static_cast<short>(polling == PGRES_POLLING_READING ? POLLIN : POLLOUT);
      if (!wait_socket(conn, events, deadline)) {
        error = "connection to the server timed out after " + format_duration(*connect_timeout_) +
                " (connect_timeout)";
        PQfinish(conn);
        return nullptr;
      }
      polling = PQconnectPoll(conn);
    }
    if (PQstatus(conn) != CONNECTION_OK) {
      error = PQerrorMessage(conn);
      PQfinish(conn);
      return nullptr;
    }
    return conn;
  }

  // Pre-ping and reset-on-return: one statement each, with the connect deadline. A round trip
  // that has not finished by then is a disconnect (ping) or a failed reset, and the core closes
  // the connection: through a black hole whose far end still acknowledges bytes (a proxy, a
  // middlebox) the kernel never gives up, and a blocking PQexec would hang the checkout or the
  // release forever.
  PingOutcome ping(PGconn* conn, std::string& error) const {
    switch (exec(conn, "SELECT 1", PGRES_TUPLES_OK, error)) {
      case Exec::kOk: return PingOutcome::kOk;
      case Exec::kTimedOut: return PingOutcome::kDisconnect;
      case Exec::kFailed: break;
    }
    return PQstatus(conn) == CONNECTION_BAD ? PingOutcome::kDisconnect : PingOutcome::kError;
  }
  ResetOutcome reset(PGconn* conn, ResetKind kind) const {
    std::string error;
    return exec(conn, kind == ResetKind::kCommit ? "COMMIT" : "ROLLBACK", PGRES_COMMAND_OK,
                error) == Exec::kOk
               ? ResetOutcome::kOk
               : ResetOutcome::kFailed;
  }

  // A ping of connection `id`, by the thread holding `lock` (released for the round trip). A
  // connection the core closed meanwhile is closed now, by this thread (work).
  PingOutcome run_ping(std::unique_lock<std::mutex>& lock, ConnId id, Work& work,
                       std::string& error) {
    PGconn* c = conn(id);
    pinging_.insert(id);
    lock.unlock();
    work.run();
    const PingOutcome outcome = ping(c, error);
    lock.lock();
    pinging_.erase(id);
    if (orphans_.erase(id) != 0) work.close(c);
    ++counters.pings;
    if (outcome != PingOutcome::kOk) ++counters.ping_failures;
    return outcome;
  }

  bool closed = false;  // the PgPool is gone; handles still out close their connections

 private:
  // Waits until the connection's socket is ready for `events` (or poll() fails: libpq then
  // finds out what is wrong); false once the deadline (nullopt: none) has passed.
  static bool wait_socket(PGconn* conn, short events, std::optional<Instant> deadline) {
    for (;;) {
      int wait_ms = -1;
      if (deadline) {
        const Duration left = *deadline - steady_now();
        if (left.count() <= 0) return false;
        wait_ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
      }
      pollfd fd{PQsocket(conn), events, 0};
      const int ready = ::poll(&fd, 1, wait_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready != 0) return true;
    }
  }

  enum class Exec { kOk, kFailed, kTimedOut };
  // PQexec with the connect deadline: PQsendQuery, then PQconsumeInput on poll() until the last
  // result. kFailed (error set) unless every result has the expected status; on kTimedOut the
  // statement is still in flight and the connection must be closed.
  Exec exec(PGconn* conn, const char* sql, ExecStatusType expected, std::string& error) const {
    const std::optional<Instant> deadline =
        connect_timeout_ ? std::optional<Instant>(steady_now() + *connect_timeout_) : std::nullopt;
    if (PQsendQuery(conn, sql) == 0) {
      error = PQerrorMessage(conn);
      return Exec::kFailed;
    }
    bool ok = true;
    for (;;) {
      while (PQisBusy(conn) != 0) {
        if (!wait_socket(conn, POLLIN, deadline)) {
          error = "no answer from the server after " + format_duration(*connect_timeout_) +
                  " (connect_timeout)";
          return Exec::kTimedOut;
        }
        if (PQconsumeInput(conn) == 0) {  // the connection is gone (or libpq is out of memory)
          error = PQerrorMessage(conn);
          return Exec::kFailed;
        }
      }
      PGresult* result = PQgetResult(conn);
      if (result == nullptr) break;
      if (PQresultStatus(result) != expected) ok = false;
      PQclear(result);
    }
    if (!ok) error = PQerrorMessage(conn);
    return ok ? Exec::kOk : Exec::kFailed;
  }

  // A connect or a keepalive check of the pool's own, by a pool thread, outside the lock.
  void run_background(std::unique_lock<std::mutex>& lock, const Action& action) {
    Work work;
    std::string error;
    if (const auto* open = std::get_if<OpenConnection>(&action)) {
      lock.unlock();
      PGconn* conn = connect(error);
      lock.lock();
      if (stopping) {  // the pool is going away: nobody will use it
        if (conn != nullptr) work.close(conn);
      } else if (conn != nullptr) {
        handle(ConnectSucceeded{open->slot, add_conn(conn)}, nullptr, work);
      } else {
        background_error = error;
        background_error_kind = too_many_clients(error) ? PoolError::Kind::kTooManyConnections
                                                        : PoolError::Kind::kConnectFailed;
        handle(ConnectFailed{open->slot, static_cast<int>(background_error_kind)}, nullptr, work);
      }
    } else {
      const Ping& ping = std::get<Ping>(action);
      const PingOutcome outcome = run_ping(lock, ping.conn, work, error);
      handle(PingResult{ping.slot, outcome, 0}, nullptr, work);
    }
    lock.unlock();
    work.run();
    lock.lock();
  }

  void drain(Request* self, Work& work) {
    bool woke = false;
    const auto background = [&](const Action& a) {
      background_.push_back(a);
      woke = true;
    };
    while (std::optional<Action> action = core_.poll_action()) {
      std::visit(Overloaded{
                     [&](const OpenConnection& a) {
                       if (a.request) {
                         answer(*a.request, a, self, work);
                       } else {
                         background(a);
                       }
                     },
                     [&](const Ping& a) {
                       if (a.request) {
                         answer(*a.request, a, self, work);
                       } else {
                         background(a);
                       }
                     },
                     [&](const Grant& a) { answer(a.request, a, self, work); },
                     [&](const Fail& a) { answer(a.request, a, self, work); },
                     [&](const CloseConnection& a) {
                       PGconn* gone = remove_conn(a.conn);
                       // pgbouncer's janitor may close a server whose check is in flight:
                       // the thread running it closes it when the answer is in.
                       if (pinging_.count(a.conn) != 0) {
                         orphans_.insert(a.conn);
                       } else {
                         work.close(gone);
                       }
                     },
                     [&](const Reset& a) {
                       PGconn* c = conn(a.conn);
                       if (PQtransactionStatus(c) == PQTRANS_IDLE) {
                         // Nothing to roll back (psycopg2 skips it too): no I/O, answer now.
                         core_.handle(now(), ResetDone{a.slot, a.conn, ResetOutcome::kOk});
                       } else {
                         work.reset = a;
                         work.reset_conn = c;
                       }
                     },
                     [&](const Notify&) {},
                 },
                 *action);
    }
    // The pool's threads are woken only for work: a connect or check to run, or a timer
    // earlier than the one the timer thread sleeps until (a stale value only wakes it once
    // more; it looks again before each sleep).
    if (!core_.background()) {
      if (woke) broken("QueuePool asked for background work");
      return;
    }
    const std::optional<Instant> next = core_.poll_timeout();
    if (woke || (next && (!timer_sleeps_until_ || *next < *timer_sleeps_until_))) {
      background_wake.notify_all();
    }
  }

  void answer(RequestId id, const Answer& answer, Request* self, Work& work) {
    if (self != nullptr && self->id == id) {
      if (self->answer) broken("two answers for one request");
      self->answer = answer;
      return;
    }
    for (Request* r = requests_; r != nullptr; r = r->next) {
      if (r->id == id) {
        if (r->answer) broken("two answers for one request");
        r->answer = answer;
        work.wake(*r);
        return;
      }
    }
    broken("the core answered a request nobody is waiting for");
  }

  std::string conninfo_;
  std::optional<Duration> connect_timeout_;
  AnyCore core_;
  std::deque<Action> background_;        // connects and checks for the pool's threads
  std::optional<Instant> timer_sleeps_until_;  // the timer thread's last wait (nullopt: none)
  std::uint64_t next_ticket_ = 0;        // StaticPool's turns
  std::uint64_t serving_ = 0;
  std::condition_variable turn_wake_;
  std::unordered_set<ConnId> lent_;      // connections handed out
  std::unordered_set<ConnId> pinging_;   // connections a thread is pinging
  std::unordered_set<ConnId> orphans_;   // of those, closed by the core meanwhile
  Instant last_now_ = kNever;
  std::uint64_t last_request_ = 0;
  std::uint64_t last_conn_ = 0;
  std::unordered_map<ConnId, PGconn*> conns_;
  Request* requests_ = nullptr;
};

}  // namespace detail

using detail::AnyCore;
using detail::Answer;
using detail::PoolState;
using detail::Request;
using detail::Work;

namespace {
AnyCore sqlalchemy_core(const PoolConfig& config) {
  return config.policy == Policy::kStatic ? AnyCore(StaticCore(config)) : AnyCore(PoolCore(config));
}
}  // namespace

PgPool::PgPool(std::string conninfo, PoolConfig config, std::optional<Duration> connect_timeout)
    : state_(std::make_shared<PoolState>(std::move(conninfo), sqlalchemy_core(config),
                                         connect_timeout)) {}

PgPool::PgPool(std::string conninfo, HikariConfig config, std::optional<Duration> connect_timeout)
    : state_(
          std::make_shared<PoolState>(std::move(conninfo), HikariCore(config), connect_timeout)) {
  start_threads(1);  // HikariCP's connection adder
}

PgPool::PgPool(std::string conninfo, PgbouncerConfig config,
               std::optional<Duration> connect_timeout)
    : state_(std::make_shared<PoolState>(std::move(conninfo), PgbouncerCore(config),
                                         connect_timeout)) {
  start_threads(1);  // pgbouncer logs servers in one at a time
}

PgPool::PgPool(std::string conninfo, PsycopgConfig config, std::optional<Duration> connect_timeout)
    : state_(
          std::make_shared<PoolState>(std::move(conninfo), PsycopgCore(config), connect_timeout)) {
  start_threads(config.num_workers);  // psycopg_pool's workers
}

void PgPool::start_threads(int count) {
  PoolState& s = *state_;
  Work work;
  {
    std::lock_guard lock(s.mutex);
    s.start(work);
  }
  work.run();
  // `count` workers for connects and checks, and one for the timers (HikariCP's housekeeper
  // and each waiter's own timeout; psycopg_pool's scheduler and waiters).
  for (int i = 0; i <= count; ++i) {
    threads_.emplace_back([&s, runs_timers = i == count] {
      std::unique_lock lock(s.mutex);
      while (s.background_step(lock, runs_timers)) {
      }
    });
  }
}

PgPool::~PgPool() {
  Work work;
  {
    std::lock_guard lock(state_->mutex);
    state_->closed = true;
    state_->stopping = true;
    state_->background_wake.notify_all();
    if (!state_->core().background()) state_->handle(Disposed{}, nullptr, work);
  }
  work.run_wakes();
  for (std::thread& t : threads_) t.join();
  {
    std::lock_guard lock(state_->mutex);
    state_->close_idle(work);
  }
  work.run();
}

PgPool::Handle PgPool::checkout() {
  PoolState& s = *state_;
  Request self;
  Work work;
  std::string error;
  PoolError::Kind error_kind = PoolError::Kind::kConnectFailed;
  std::unique_lock lock(s.mutex);
  s.take_turn(lock);
  s.link(self);
  const Instant start = s.handle(CheckoutRequested{self.id}, &self, work);
  // QueuePool's waiter keeps its own deadline; the background pools' timers end a wait.
  std::optional<Instant> deadline;
  if (const PoolCore* queuepool = s.core().queuepool()) {
    if (const auto& timeout = queuepool->config().timeout; timeout && timeout->count() > 0) {
      deadline = start + *timeout;
    }
  }
  for (;;) {
    if (!self.answer) {
      work.run_wakes();  // checkouts this one answered do not wait for it to be answered
      if (deadline) {
        if (self.wake.wait_until(lock, PoolState::to_steady(*deadline)) ==
                std::cv_status::timeout &&
            !self.answer) {
          s.handle(WaitExpired{self.id}, &self, work);
        }
      } else {
        self.wake.wait(lock);
      }
      continue;
    }
    const Answer answer = *std::exchange(self.answer, std::nullopt);
    std::optional<Handle> granted = std::visit(
        Overloaded{
            [&](const Grant& a) -> std::optional<Handle> {
              PGconn* conn = s.conn(a.conn);
              s.unlink(self);
              s.lend(a.conn);
              lock.unlock();
              work.run();
              return Handle(state_, a.slot, a.conn, conn);
            },
            [&](const Fail& a) -> std::optional<Handle> {
              s.unlink(self);
              s.end_turn();  // a failed checkout gives its turn to the next
              std::string message;
              PoolError::Kind kind = PoolError::Kind::kTimeout;
              switch (a.failure) {
                case Failure::kTimeout:
                  message = s.core().timeout_message(a.overflow);
                  break;
                case Failure::kNegativeTimeout:
                  message = "pool.timeout is negative: every checkout at the limit fails";
                  break;
                case Failure::kTooManyRequests:  // psycopg's max_waiting, which live runs leave at 0
                  message = "the pool already has max_waiting requests waiting";
                  break;
                case Failure::kConnectFailed:
                  // A background core's connects are its threads': their last error.
                  kind = error.empty() ? s.background_error_kind : error_kind;
                  message = error.empty() ? s.background_error : error;
                  if (s.core().fails_fast()) {
                    message = "server login has been failing, try again later "
                              "(server_login_retry): " + message;
                  }
                  break;
                case Failure::kPingError:
                  kind = PoolError::Kind::kPingError;
                  message = error;
                  break;
              }
              lock.unlock();
              work.run();
              throw PoolError(kind, message);
            },
            [&](const OpenConnection& a) -> std::optional<Handle> {
              lock.unlock();
              work.run();
              PGconn* conn = s.connect(error);
              const bool ok = conn != nullptr;
              if (!ok) {
                error_kind = detail::too_many_clients(error) ? PoolError::Kind::kTooManyConnections
                                                             : PoolError::Kind::kConnectFailed;
              }
              lock.lock();
              if (ok) {
                s.handle(ConnectSucceeded{a.slot, s.add_conn(conn)}, &self, work);
              } else {
                s.handle(ConnectFailed{a.slot, static_cast<int>(error_kind)}, &self, work);
              }
              return std::nullopt;
            },
            [&](const Ping& a) -> std::optional<Handle> {
              const PingOutcome outcome = s.run_ping(lock, a.conn, work, error);
              s.handle(PingResult{a.slot, outcome, 0}, &self, work);
              return std::nullopt;
            },
        },
        answer);
    if (granted) return std::move(*granted);
  }
}

// Check-in, invalidation and disconnect of a granted connection.
namespace {
// The connection stays lent until the pool has it back, its reset included: a closing pool
// closes only the connections nobody is using.
void give_back(PoolState& s, const Event& event, ConnId conn_id) {
  Work work;
  {
    std::lock_guard lock(s.mutex);
    if (s.closed) {
      s.take_back(conn_id);
      work.close(s.remove_conn(conn_id));
    } else {
      s.handle(event, nullptr, work);
      if (!work.reset) s.take_back(conn_id);
    }
    if (!work.reset) s.end_turn();
  }
  work.run();
  if (!work.reset) return;
  const Reset reset = *work.reset;
  const ResetOutcome outcome = s.reset(work.reset_conn, reset.kind);
  work.reset.reset();
  {
    std::lock_guard lock(s.mutex);
    ++s.counters.resets;
    s.take_back(conn_id);
    s.end_turn();
    if (s.closed) {  // the pool went away during the reset: nobody will check it out again
      work.close(s.remove_conn(reset.conn));
    } else {
      s.handle(ResetDone{reset.slot, reset.conn, outcome}, nullptr, work);
    }
  }
  work.run();
}
}  // namespace

void PgPool::Handle::release() {
  if (!state_) return;
  // libpq knows when the socket broke under the caller's query: that is the disconnect
  // SQLAlchemy's Engine detects in the error, with the same pool-wide invalidation.
  if (PQstatus(conn_) == CONNECTION_BAD) return disconnected();
  const std::shared_ptr<PoolState> state = std::move(state_);
  conn_ = nullptr;
  give_back(*state, Returned{slot_}, conn_id_);
}

void PgPool::Handle::invalidate() {
  if (!state_) return;
  const std::shared_ptr<PoolState> state = std::move(state_);
  conn_ = nullptr;
  give_back(*state, Invalidated{slot_, Invalidation::kHard}, conn_id_);
}

void PgPool::Handle::disconnected() {
  if (!state_) return;
  const std::shared_ptr<PoolState> state = std::move(state_);
  conn_ = nullptr;
  give_back(*state, DisconnectDetected{slot_}, conn_id_);
}

PgPool::Handle::Handle(Handle&& other) noexcept
    : state_(std::move(other.state_)),
      slot_(other.slot_),
      conn_id_(other.conn_id_),
      conn_(std::exchange(other.conn_, nullptr)) {}

PgPool::Handle& PgPool::Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
    slot_ = other.slot_;
    conn_id_ = other.conn_id_;
    conn_ = std::exchange(other.conn_, nullptr);
  }
  return *this;
}

PoolStatus PgPool::status() const {
  std::lock_guard lock(state_->mutex);
  const std::optional<PoolStatus> status = state_->core().sqlalchemy_status();
  if (!status) throw std::logic_error("PgPool::status() is SQLAlchemy's pools'");
  return *status;
}

std::size_t PgPool::in_use() const {
  std::lock_guard lock(state_->mutex);
  return state_->in_use();
}

PgPool::Counters PgPool::counters() const {
  std::lock_guard lock(state_->mutex);
  return state_->counters;
}

std::size_t PgPool::open_connections() const {
  std::lock_guard lock(state_->mutex);
  return state_->open_connections();
}

const PoolConfig& PgPool::config() const {
  const PoolConfig* config = state_->core().sqlalchemy_config();
  if (config == nullptr) throw std::logic_error("PgPool::config() is SQLAlchemy's pools'");
  return *config;
}

}  // namespace poolsim::real_pool
