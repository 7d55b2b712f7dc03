// psycopg_pool's ConnectionPool (psycopg 3's pool, sync) as a state machine without I/O, clock,
// threads or locks.
//
// The same Event/Action interface as PoolCore (SQLAlchemy's QueuePool) and HikariCore, so the
// simulator drives any of them. Like HikariCP, a psycopg client never connects: num_workers
// worker threads run the pool's tasks (connects, the periodic ShrinkPool) from one FIFO queue,
// and a connection returned or newly opened goes straight to the oldest waiting client. So
// OpenConnection carries no request here. Unlike HikariCP, the pool grows only while a client
// waits, one connection at a time, and shrinks by at most one connection per max_idle. The
// rules, each with its source in psycopg_pool 3.1.5, are at the top of psycopg_core.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pool_model/action_queue.hpp"
#include "pool_model/events.hpp"
#include "pool_model/pool_config.hpp"
#include "pool_model/ring_queue.hpp"
#include "pool_model/time.hpp"

namespace poolsim {

// ConnectionPool's settings, with psycopg_pool's defaults (3.1). Spelled in scenario files as
// psycopg.min_size and so on.
struct PsycopgConfig {
  int min_size = 4;
  std::optional<int> max_size;  // nullopt: the same as min_size (psycopg's max_size=None)
  Duration timeout = std::chrono::seconds(30);        // getconn()'s wait for a connection
  int max_waiting = 0;                                // 0 = no limit; then TooManyRequests
  Duration max_lifetime = std::chrono::hours(1);      // minus up to 5% jitter, per connection
  Duration max_idle = std::chrono::minutes(10);       // the ShrinkPool period
  Duration reconnect_timeout = std::chrono::minutes(5);  // a connect retries this long
  int num_workers = 3;                                // worker threads: connects in flight
  // psycopg_pool 3.2's check=ConnectionPool.check_connection: a connection is checked (a Ping)
  // before getconn() returns it. Off: 3.1, which has no check on checkout.
  bool check = false;
  // kRollback: a connection comes back in a transaction (INTRANS: getconn/putconn without a
  // commit, or an error) and putconn() rolls it back; kNone: it comes back IDLE (connection()
  // committed), nothing to do. psycopg never commits on return: kCommit is refused. Spelled
  // pool.reset_on_return in scenario files.
  ResetOnReturn reset_on_return = ResetOnReturn::kRollback;
  std::uint64_t seed = 1;  // draws the jitter of max_lifetime and of the reconnect back-off
};

// Refuses what psycopg_pool raises ValueError for (and settings poolsim cannot run as written:
// negative durations, max_idle below 1s, a commit on return): one line naming the key, value
// and what is allowed, or nullopt.
std::optional<std::string> validate(const PsycopgConfig& config);

// ConnectionPool.get_stats(): its gauges, the counters poolsim can keep, and a few more counts.
struct PsycopgStatus {
  int pool_min = 0;
  int pool_max = 0;
  int pool_size = 0;         // _nconns: idle + lent out + being connected (or backing off)
  int pool_available = 0;    // len(_pool): idle
  int requests_waiting = 0;  // len(_waiting): timed-out waiters still in the deque included
  int lent = 0;              // given to clients: in use, being checked or rolled back
  int connecting = 0;        // connects in flight (busy workers)
  int tasks_queued = 0;      // tasks waiting for a free worker
  bool growing = false;      // _growing: a growth connect is queued, running or backing off
  std::int64_t requests_num = 0;
  std::int64_t requests_queued = 0;
  std::int64_t requests_errors = 0;  // timeouts while waiting, TooManyRequests
  std::int64_t returns_bad = 0;      // connections returned broken
  std::int64_t connections_num = 0;  // connect attempts
  std::int64_t connections_errors = 0;
  std::int64_t connections_lost = 0;  // connections found broken by the check on checkout
  bool operator==(const PsycopgStatus&) const = default;
};

class PsycopgCore {
 public:
  // Throws std::invalid_argument with validate()'s message for an unusable config.
  explicit PsycopgCore(const PsycopgConfig& config);

  // The pool is opened at `now` (ConnectionPool(open=True)): min_size connects are queued for
  // the workers and ShrinkPool is scheduled. Call once, before any other input.
  void start(Instant now);
  void handle(Instant now, const Event& event);  // now never goes backwards
  void handle_timeout(Instant now);              // extra calls are harmless
  std::optional<Action> poll_action() { return actions_.poll(); }
  // Visits every pending action in place, oldest first (see action_queue.hpp): the visitor
  // must not feed this core.
  template <typename Visitor>
  void take_actions(Visitor&& visitor) {
    actions_.take_each(std::forward<Visitor>(visitor));
  }
  // The earliest pending timer: a waiter's deadline, ShrinkPool, a connect's back-off, a
  // client's pause between checks. A timer may turn out to have nothing left to do.
  std::optional<Instant> poll_timeout() const {
    if (timers_.empty()) return std::nullopt;
    return timers_.top().at;
  }
  PsycopgStatus status() const;
  // Whether a getconn() call waits on the pool's timers: for a connection (its timeout), or
  // pausing between checks. One whose check is in flight waits for the PingResult only.
  bool clients_wait_on_timers() const;
  // Throws std::logic_error describing the first broken invariant.
  void check_invariants() const;
  const PsycopgConfig& config() const { return config_; }

 private:
  enum class State : std::uint8_t {
    kFree,        // no connection: free for reuse
    kConnecting,  // a worker's connect is in flight
    kIdle,        // in the idle deque (_pool)
    kChecking,    // taken by a client; its check is in flight (check = true)
    kInUse,       // given to its client
    kResetting,   // returned; the rollback is in flight
  };
  struct Slot {
    State state = State::kFree;
    ConnId conn{};
    RequestId request{};
    Instant expire_at{};        // _expire_at
    std::uint64_t attempt = 0;  // the AddConnection task connecting it
  };
  // ConnectionAttempt / AttemptWithBackoff: the delay before the next try and when to give up.
  struct Backoff {
    Duration timeout{};
    Duration delay{};
    bool started = false;  // Python's give_up_at > 0 (monotonic() is never 0 there)
    Instant give_up_at{};
  };
  // One AddConnection task, with its attempt, from the moment it is queued to its success or
  // its giving up.
  struct Attempt {
    enum class Phase : std::uint8_t { kQueued, kConnecting, kBackingOff };
    bool growing = false;
    Phase phase = Phase::kQueued;
    Backoff backoff;
    Instant try_start{};  // `now` of _add_connection: taken before the connect
    SlotId slot{};
  };
  struct Task {
    bool shrink = false;        // ShrinkPool, else AddConnection
    std::uint64_t attempt = 0;  // AddConnection's
  };
  // A getconn() not yet answered.
  struct Request {
    enum class Phase : std::uint8_t { kWaiting, kChecking, kSleeping };
    Phase phase = Phase::kWaiting;
    Instant deadline;
    std::uint64_t waiter = 0;  // its WaitingClient in _waiting while kWaiting
    int check_failures = 0;    // check = true: the loop's failed checks so far
    Backoff backoff;           // and its pause between them
    std::uint64_t gen = 0;     // names its current pause
  };
  struct Waiter {
    RequestId request{};
    std::uint64_t serial = 0;  // stale once the request stops waiting on this entry
  };
  enum class TimerKind : std::uint8_t { kWait, kShrink, kRetry, kSleep };
  struct Timer {
    Instant at;
    std::uint64_t seq;  // FIFO among timers due at the same instant
    TimerKind kind;
    std::uint64_t id;   // request (kWait, kSleep) or attempt (kRetry)
    std::uint64_t gen;  // the waiter's serial (kWait) or the pause's gen (kSleep)
    bool operator>(const Timer& other) const {
      return at != other.at ? at > other.at : seq > other.seq;
    }
  };

  void on(const CheckoutRequested& e);
  void on(const ConnectSucceeded& e);
  void on(const ConnectFailed& e);
  void on(const PingResult& e);
  void on(const Returned& e);
  void on(const ResetDone& e);
  void on(const Invalidated& e);
  void on(const DisconnectDetected& e);
  void on(const Detached& e);
  void on(const DetachedReturned& e);
  void on(const PoolInvalidated& e);
  void on(const Disposed& e);
  void on(const WaitExpired& e);
  void fire(const Timer& timer);

  void get_connection(RequestId request);
  void serve(SlotId slot, RequestId request);
  void grant(SlotId slot);
  void fail(RequestId request, Failure failure);
  void wait_expired(RequestId request, std::optional<std::uint64_t> serial);
  void check_failed(RequestId request);
  void return_connection(SlotId slot);
  void discard_broken(SlotId slot);
  void add_to_pool(SlotId slot);
  void maybe_grow_pool();
  void add_connection_task(bool growing);
  void run_workers();
  void start_connect(std::uint64_t attempt);
  void shrink_pool();
  void close_slot(SlotId slot);
  void update_delay(Backoff& backoff, Instant now);

  Slot& slot_in(SlotId slot, State expected, const char* event);
  SlotId alloc_slot();
  std::uint64_t draw(std::uint64_t bound);
  void schedule(Instant at, TimerKind kind, std::uint64_t id, std::uint64_t gen) {
    // At the last instant (saturating_add's "never comes") only a client's own timers are
    // kept (each ends its request): the pool's timers there would come due again at once,
    // forever, once a driver's clock got that far.
    if (at == Instant::max() && (kind == TimerKind::kShrink || kind == TimerKind::kRetry)) return;
    timers_.push(Timer{at, next_timer_++, kind, id, gen});
  }
  template <typename A>  // an alternative of Action: it goes to its place, not through an Action
  void emit(A&& action) {
    actions_.push(std::forward<A>(action));
  }

  PsycopgConfig config_;
  int max_size_ = 0;
  Instant now_ = kNever;
  bool started_ = false;
  std::uint64_t rng_;
  std::vector<Slot> slots_;
  std::vector<SlotId> free_slots_;
  RingQueue<SlotId> pool_;       // _pool: idle connections, oldest returned at the front
  RingQueue<Waiter> waiting_;    // _waiting: oldest first, stale entries included
  std::unordered_map<std::uint64_t, Request> requests_;  // getconn() calls not yet answered
  std::uint64_t next_waiter_ = 0;
  int nconns_ = 0;               // _nconns
  int nconns_min_ = 0;           // _nconns_min
  bool shrunk_once_ = false;     // ShrinkPool has run: from then on nconns_min_ <= len(_pool)
  bool growing_ = false;         // _growing
  std::unordered_map<std::uint64_t, Attempt> attempts_;  // AddConnection tasks alive
  std::uint64_t next_attempt_ = 1;
  RingQueue<Task> tasks_;        // _tasks: the workers' queue
  int connecting_ = 0;           // busy workers (a ShrinkPool run takes no model time)
  PsycopgStatus counters_;       // the get_stats() counters
  std::uint64_t next_timer_ = 0;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  ActionQueue actions_;
};

}  // namespace poolsim
