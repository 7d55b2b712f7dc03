// pool.policy = hikari: HikariCP's pool as a state machine without I/O, clock or threads.
//
// The same Event/Action interface as PoolCore (SQLAlchemy's QueuePool), so the simulator drives
// either one. What differs is who connects: a QueuePool connects in the requesting thread,
// HikariCP's requests only ever wait on the pool, and one background "connection adder" opens
// connections one at a time while a returned connection goes straight to the oldest waiter.
// So OpenConnection carries no request here, and a keepalive Ping none either. The rules, each
// with its source in HikariCP, are at the top of hikari_core.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <queue>
#include <set>
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

// HikariConfig's pool settings, with HikariCP's defaults (5.x). Spelled in scenario files as
// hikari.maximum_pool_size and so on.
struct HikariConfig {
  int maximum_pool_size = 10;
  int minimum_idle = 10;  // HikariCP's default: the same as maximum_pool_size
  Duration connection_timeout = std::chrono::seconds(30);  // 0: Integer.MAX_VALUE ms
  Duration idle_timeout = std::chrono::minutes(10);   // 0 = idle connections are kept
  Duration max_lifetime = std::chrono::minutes(30);   // 0 = no limit
  Duration keepalive_time{};  // 0 = no keepalive (HikariCP 5's default)
  // com.zaxxer.hikari.aliveBypassWindowMs: a connection used this recently is not checked.
  Duration alive_bypass_window = std::chrono::milliseconds(500);
  // com.zaxxer.hikari.housekeeping.periodMs: idle retirement and refill run this often.
  Duration housekeeping_period = std::chrono::seconds(30);
  // HikariCP rolls back a connection returned with an open transaction; `none` skips it.
  ResetOnReturn reset_on_return = ResetOnReturn::kRollback;
  std::uint64_t seed = 1;  // draws the per-connection jitter of max_lifetime and keepalive_time
};

// Refuses what HikariConfig.validateNumerics() would quietly change (poolsim never runs a
// setting other than the one the user wrote): one line naming the key, value and what is
// allowed, or nullopt.
std::optional<std::string> validate(const HikariConfig& config);

// HikariPoolMXBean's counts.
struct HikariStatus {
  int total = 0;    // getTotalConnections(): in the pool, idle or not
  int idle = 0;     // getIdleConnections()
  int active = 0;   // getActiveConnections(): handed to requests (or being checked for them)
  int waiting = 0;  // getThreadsAwaitingConnection()
  bool operator==(const HikariStatus&) const = default;
};

class HikariCore {
 public:
  // Throws std::invalid_argument with validate()'s message for an unusable config.
  explicit HikariCore(const HikariConfig& config);

  // The pool is created at `now` (new HikariDataSource): its first connect and its
  // housekeeper start. Call once, before any other input.
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
  // The earliest pending timer: a waiter's deadline, a connection's max_lifetime or keepalive,
  // the housekeeper, the adder's back-off. A timer may turn out to have nothing left to do.
  std::optional<Instant> poll_timeout() const {
    if (timers_.empty()) return std::nullopt;
    return timers_.top().at;
  }
  HikariStatus status() const;
  // Throws std::logic_error describing the first broken invariant.
  void check_invariants() const;
  const HikariConfig& config() const { return config_; }

 private:
  enum class State : std::uint8_t {
    kFree,        // no connection: free for reuse
    kCreating,    // the adder's connect is in flight (not yet in the pool's total)
    kIdle,        // in the bag, not in use
    kReserved,    // taken out of use by the pool itself: a keepalive check in flight
    kValidating,  // borrowed for a request; its alive check is in flight
    kInUse,       // granted to its request
    kResetting,   // returned; the rollback is in flight
  };
  struct Slot {
    State state = State::kFree;
    bool evicted = false;  // closed when next returned or borrowed (maxLifetime, soft evict)
    ConnId conn{};
    RequestId request{};
    std::uint64_t order = 0;   // the bag's order: connections are offered oldest first
    std::uint64_t life = 0;    // changes whenever the slot gets a new connection
    Instant last_accessed{};   // its lastAccessed: created, rolled back, or last granted (H6)
    Instant granted_at{};      // when it was last handed out
    Duration heartbeat{};      // its keepalive period
    // A keepalive that found the connection in use is not rescheduled until the connection is
    // idle again (turns in use do nothing): then at its next turn, keepalive_next + k heartbeats.
    bool keepalive_dormant = false;
    Instant keepalive_next{};
  };
  struct Borrow {
    Instant deadline;
    bool waiting = false;  // in the bag's wait queue
  };
  enum class TimerKind : std::uint8_t { kWait, kHousekeeper, kLifetime, kKeepalive, kBackoff };
  struct Timer {
    Instant at;
    TimerKind kind;
    std::uint64_t id;   // request (kWait) or slot
    std::uint64_t gen;  // the slot's life, or the back-off's generation
    bool operator>(const Timer& other) const { return at > other.at; }
  };
  // The adder thread: free, opening a connection, sleeping before its task tries again, or
  // resting after a task that added one.
  enum class Adder : std::uint8_t { kIdle, kConnecting, kBackingOff, kResting };

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

  void borrow(RequestId request);
  void acquire(SlotId slot, RequestId request);
  void retry(RequestId request);
  void grant(SlotId slot);
  void recycle(SlotId slot, Instant last_access);
  void make_available(SlotId slot);
  void close_entry(SlotId slot);
  void soft_evict(SlotId slot);
  void add_bag_item(int waiting);
  void fill_pool();
  void run_adder();
  void start_connect();
  bool should_create() const;
  void housekeep();
  bool housekeeping_has_nothing_to_do() const;
  void wake_housekeeper();
  void schedule_keepalive(SlotId slot);
  std::optional<RequestId> oldest_waiter();

  Slot& slot_in(SlotId slot, State expected, const char* event);
  SlotId alloc_slot();
  Duration jitter(Duration base, std::int64_t divisor);
  void schedule(Instant at, TimerKind kind, std::uint64_t id, std::uint64_t gen) {
    // At the last instant (saturating_add's "never comes") only a waiter's deadline is kept:
    // the pool's own timers there would come due again at once, forever, once a driver's
    // clock got that far.
    if (at == Instant::max() && kind != TimerKind::kWait) return;
    timers_.push(Timer{at, kind, id, gen});
  }
  template <typename A>  // an alternative of Action: it goes to its place, not through an Action
  void emit(A&& action) {
    actions_.push(std::forward<A>(action));
  }

  HikariConfig config_;
  Instant now_ = kNever;
  bool started_ = false;
  std::uint64_t rng_;
  std::vector<Slot> slots_;
  std::vector<SlotId> free_slots_;
  std::set<std::pair<std::uint64_t, SlotId>> idle_;  // by order: the bag's shared list
  std::uint64_t next_order_ = 0;
  int total_ = 0;  // connections in the bag (idle, reserved, borrowed), not the one creating
  std::unordered_map<std::uint64_t, Borrow> borrows_;  // requests not yet answered
  RingQueue<RequestId> waiters_;  // oldest first; entries no longer waiting are skipped
  int waiting_ = 0;
  int queued_tasks_ = 0;  // the adder's queue (a ThreadPoolExecutor's, minus the running task)
  Adder adder_ = Adder::kIdle;
  SlotId creating_{};
  Duration backoff_{};
  std::uint64_t backoff_gen_ = 0;
  // The housekeeper is not rescheduled while its runs would change nothing (see fire()): a
  // pool that waits an hour for a slow reset would otherwise tick 120 times for nothing. Its
  // next run is then housekeeper_next_ + k periods, the first after the next input.
  bool housekeeper_dormant_ = false;
  Instant housekeeper_next_{};
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  ActionQueue actions_;
};

}  // namespace poolsim
