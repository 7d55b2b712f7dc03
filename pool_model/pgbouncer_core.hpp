// pool.policy = pgbouncer: pgbouncer 1.18's server pool in transaction pooling mode, as a state
// machine without I/O, clock, threads or locks.
//
// The same Event/Action interface as PoolCore and HikariCore, one level further out: each app
// process keeps its own SQLAlchemy pool of client connections to pgbouncer, and all of them
// share this one pool (one database/user pair) of server connections. A request here is one
// client transaction: it needs a server from its first statement (CheckoutRequested) to its end
// (Returned). pgbouncer opens servers itself, one login at a time, so OpenConnection carries no
// request; its server_check_query is a Ping for the waiter it was started for. Whatever is
// driven by time happens at the janitor's ticks, three a second from pgbouncer's start. The
// rules, each with its source in pgbouncer, are at the top of pgbouncer_core.cpp.
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
#include "pool_model/ring_queue.hpp"
#include "pool_model/time.hpp"

namespace poolsim {

// pgbouncer.ini's pool settings, with pgbouncer 1.18's defaults (src/main.c, doc/config.md).
// Spelled in scenario files as pgbouncer.default_pool_size and so on. pool_mode is always
// transaction here.
struct PgbouncerConfig {
  int default_pool_size = 20;  // servers per database/user pair
  int min_pool_size = 0;       // kept open (and refilled) while a client is connected
  int reserve_pool_size = 0;   // extra servers for a client that waited reserve_pool_timeout
  Duration reserve_pool_timeout = std::chrono::seconds(5);   // 0 = the reserve is never used
  Duration server_idle_timeout = std::chrono::seconds(600);  // 0 = idle servers are kept
  Duration server_lifetime = std::chrono::seconds(3600);  // 0 = a server serves one transaction
  Duration query_wait_timeout = std::chrono::seconds(120);  // 0 = a client waits forever
  Duration server_login_retry = std::chrono::seconds(15);   // after a failed login
  Duration server_check_delay = std::chrono::seconds(30);   // 0 = check before every reuse
  std::string server_check_query = "select 1";              // empty = no check
  int max_db_connections = 0;                               // 0 = no limit
  // janitor.c's full_maint_period, {0, USEC / 3}: the janitor runs every 333333 us.
  Duration janitor_period = std::chrono::microseconds(333333);
  // The janitor runs only the ticks that can change something (poll_timeout()); false runs
  // every one, as pgbouncer does: the same actions at the same times, three events a second.
  bool skip_idle_ticks = true;
};

// Refuses settings pgbouncer would reject or that poolsim cannot run as written: one line naming
// the key, the value and what is allowed, or nullopt.
std::optional<std::string> validate(const PgbouncerConfig& config);

// SHOW POOLS's counts for the pool. The core sees transactions, not client connections:
// cl_active counts clients in a transaction (linked to a server), where pgbouncer also counts
// logged-in clients between transactions.
struct PgbouncerStatus {
  int cl_active = 0;   // clients linked to a server
  int cl_waiting = 0;  // clients waiting for a server
  int sv_active = 0;   // servers linked to a client
  int sv_idle = 0;     // servers ready for the next transaction
  int sv_used = 0;     // idle longer than server_check_delay: checked before reuse
  int sv_tested = 0;   // running server_check_query
  int sv_login = 0;    // logging in (at most one)
  Duration maxwait{};  // how long the oldest waiting client has waited
  bool operator==(const PgbouncerStatus&) const = default;
};

class PgbouncerCore {
 public:
  // Throws std::invalid_argument with validate()'s message for an unusable config.
  explicit PgbouncerCore(const PgbouncerConfig& config);

  // pgbouncer starts at `now`: the janitor's ticks are at now + k janitor periods. No server is
  // opened before the first client's transaction. Call once, before any other input.
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
  // The next janitor tick that can change something. Ticks that cannot (an idle pool, a pool
  // whose clients wait for a login in flight) are skipped, the later ones keeping their times.
  std::optional<Instant> poll_timeout() const {
    if (timers_.empty()) return std::nullopt;
    return timers_.top().at;
  }
  PgbouncerStatus status() const;
  // Throws std::logic_error describing the first broken invariant.
  void check_invariants() const;
  const PgbouncerConfig& config() const { return config_; }

 private:
  // A server's state: its list in the PgPool (SV_LOGIN is new_server_list, and so on).
  enum class State : std::uint8_t {
    kFree,       // no server: free for reuse
    kLogin,      // SV_LOGIN: its login is in flight
    kIdle,       // SV_IDLE: ready for the next transaction
    kUsed,       // SV_USED: idle longer than server_check_delay, checked before reuse
    kTested,     // SV_TESTED: its server_check_query is in flight
    kActive,     // SV_ACTIVE: linked to a client's transaction
    kAbandoned,  // closed by the janitor while its check was in flight: waits for the answer
  };
  static constexpr std::uint32_t kNone = 0xFFFFFFFF;
  struct Slot {
    State state = State::kFree;
    ConnId conn{};
    RequestId request{};     // the transaction it serves (kActive) or was checked for (kTested)
    Instant connect_time{};  // when its login started (server_lifetime counts from it)
    Instant request_time{};  // its last packet: login done, transaction ended, check answered
    bool check_pending = false;  // kTested and its check's answer not yet in
    std::uint32_t prev = kNone;  // its neighbours in its list
    std::uint32_t next = kNone;
  };
  // A statlist of servers: head first, linked through the slots.
  struct List {
    std::uint32_t head = kNone;
    std::uint32_t tail = kNone;
    int size = 0;
  };
  struct Timer {
    Instant at;
    std::uint64_t gen;  // the janitor's generation: older ones were cancelled
    bool operator>(const Timer& other) const { return at > other.at; }
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

  // pgbouncer's steps, named after the functions they follow.
  void janitor();                             // do_full_maint
  void check_unused_servers(List& list, bool idle_test);
  void check_pool_size();
  void pool_client_maint();
  void per_loop_activate();
  void link(SlotId slot, RequestId request);  // find_server's link, for a client
  void release_server(SlotId slot);
  void reuse_on_release();
  void disconnect_server(SlotId slot);
  void launch_recheck(RequestId request);
  void launch_new_connection();
  bool life_over(const Slot& slot) const;
  std::optional<Instant> launch_allowed_from() const;
  bool launch_wanted() const;

  // The janitor's dormancy: its next tick is the first one at which something can change.
  std::optional<Instant> next_work() const;
  void plan_janitor();
  Instant tick_at_or_after(Instant t) const;

  void change_state(SlotId slot, State state);  // change_server_state: moves between lists
  void push_front(List& list, SlotId slot);
  void push_back(List& list, SlotId slot);
  void remove(List& list, SlotId slot);
  List* list_of(State state);
  Slot& slot_in(SlotId slot, State expected, const char* event);
  SlotId alloc_slot();
  std::optional<RequestId> oldest_waiter() const;  // the head of waiting_client_list
  void drop_answered_waiters();
  int connected() const {  // pool_connected_server_count
    return active_ + idle_.size + used_.size + tested_.size;
  }
  int servers() const { return connected() + (login_ ? 1 : 0); }  // pool_server_count
  void schedule(Instant at, std::uint64_t gen) {
    // At the last instant (saturating_add's "never comes") nothing is kept: a tick there would
    // come due again at once, forever, once a driver's clock got that far.
    if (at == Instant::max()) return;
    timers_.push(Timer{at, gen});
  }
  template <typename A>  // an alternative of Action: it goes to its place, not through an Action
  void emit(A&& action) {
    actions_.push(std::forward<A>(action));
  }

  PgbouncerConfig config_;
  Instant now_ = kNever;
  bool started_ = false;
  std::vector<Slot> slots_;
  std::vector<SlotId> free_slots_;
  List idle_;    // idle_server_list: LIFO, the most recently released first
  List used_;    // used_server_list
  List tested_;  // tested_server_list
  int active_ = 0;
  std::optional<SlotId> login_;  // new_server_list: one login at a time
  // waiting_client_list: requests in arrival order, with the time each began to wait. Entries
  // answered out of order (WaitExpired) stay in the queue until they reach its front.
  RingQueue<RequestId> queue_;
  std::unordered_map<std::uint64_t, Instant> waiting_;
  bool has_clients_ = false;  // pool_client_count(pool) > 0: from the first transaction on
  bool last_login_failed_ = false;
  bool last_connect_failed_ = false;
  int last_failure_cause_ = 0;
  Instant last_connect_time_{};
  std::optional<Instant> last_lifetime_disconnect_;  // none yet: pgbouncer's 0
  Instant epoch_{};                    // pgbouncer's start: ticks at epoch_ + k periods
  std::optional<Instant> janitor_at_;  // the tick planned, if any
  std::uint64_t janitor_gen_ = 0;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  ActionQueue actions_;
};

}  // namespace poolsim
