// The pool core: SQLAlchemy's QueuePool as a state machine without I/O, clock or threads.
//
// A driver (the simulator, the real libpq pool, the conformance replay) feeds it events with
// the time they happened and carries out the actions it asks for:
//
//   core.handle(now, CheckoutRequested{RequestId{1}});
//   while (auto action = core.poll_action()) { std::visit(driver, *action); }
//   // or core.take_actions(driver): the same, without copying each out (action_queue.hpp)
//   if (auto deadline = core.poll_timeout()) { /* call handle_timeout(*deadline) then */ }
//
// Requests are named by ids, so any number can be in flight at once (waiting for a
// connection, connecting, pinging). Every request is answered exactly once, by Grant or Fail.
// The rules and their sources are at the top of pool_core.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <type_traits>
#include <utility>
#include <vector>

#include "pool_model/action_queue.hpp"
#include "pool_model/events.hpp"
#include "pool_model/pool_config.hpp"
#include "pool_model/ring_queue.hpp"
#include "pool_model/time.hpp"

namespace poolsim {

// QueuePool's size(), checkedin(), checkedout() and overflow(), plus the number of waiters.
struct PoolStatus {
  int size = 0;
  std::int64_t checkedin = 0;
  std::int64_t checkedout = 0;
  std::int64_t overflow = 0;
  std::int64_t waiting = 0;
  bool operator==(const PoolStatus&) const = default;
};
std::ostream& operator<<(std::ostream& out, const PoolStatus& status);

class PoolCore {
 public:
  // Throws std::invalid_argument with validate()'s message for an unusable config.
  explicit PoolCore(const PoolConfig& config);

  void handle(Instant now, const Event& event);  // now never goes backwards
  // The same for one alternative of Event, without building the variant and dispatching on it
  // (the simulator's path: three inputs per request).
  template <typename E>
    requires(!std::is_same_v<E, Event> && std::is_constructible_v<Event, const E&>)
  void handle(Instant now, const E& event) {
    advance(now);
    on(event);
    run_handoffs();
  }
  void handle_timeout(Instant now);  // extra calls are harmless
  // Drain after every input. Inline, with poll_timeout: drivers call them on every event.
  std::optional<Action> poll_action() { return actions_.poll(); }
  // Visits every pending action in place, oldest first (see action_queue.hpp): the visitor
  // must not feed this core.
  template <typename Visitor>
  void take_actions(Visitor&& visitor) {
    actions_.take_each(std::forward<Visitor>(visitor));
  }
  // The earliest pending deadline: the oldest waiter's.
  std::optional<Instant> poll_timeout() const {
    if (waiters_.empty()) return std::nullopt;
    return waiters_.front().deadline;
  }
  PoolStatus status() const;
  // Throws std::logic_error describing the first broken invariant.
  void check_invariants() const;

  const PoolConfig& config() const { return config_; }
  // The record (SQLAlchemy _ConnectionRecord) now living in this slot.
  RecordId record_of(SlotId slot) const;

 private:
  enum class SlotState : std::uint8_t {
    kFree,        // not a record: free for reuse
    kIdle,        // in the queue (with a connection, or empty after invalidation)
    kCreating,    // a new record's first connect is in flight; overflow already counts it
    kConnecting,  // an existing record (re)connects for its request
    kPinging,     // pre-ping in flight
    kHandedOff,   // given to the oldest waiter; its checkout runs at the end of this input
    kCheckedOut,  // granted to its request
    kResetting,   // returned; reset-on-return in flight
  };
  struct Slot {
    SlotState state = SlotState::kFree;
    bool fresh = false;  // connected during this checkout: pre-ping skips it
    std::optional<ConnId> conn;
    RequestId request{};  // the request it is being prepared for, or its holder
    RecordId record{};
    Instant starttime{};
    Instant soft_invalidate_time = kNever;
  };
  struct Waiter {
    RequestId request;
    std::optional<Instant> deadline;
  };

  void advance(Instant now);  // now_ = now; std::logic_error if time went backwards
  // inputs
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

  // QueuePool / _ConnectionRecord / _ConnectionFairy steps
  void do_get(RequestId request);
  void wait_expired(RequestId request);
  void create_record(RequestId request);
  void prepare(SlotId slot, RequestId request);
  void start_connect(SlotId slot);
  void checkout_loop(SlotId slot);
  void deliver(SlotId slot);
  void checkin(SlotId slot);
  void return_record(SlotId slot);
  void run_handoffs();
  void invalidate_connection(Slot& slot, InvalidateReason reason);
  void close_connection(Slot& slot, CloseKind kind);
  void stamp_pool_invalidation(Instant record_start);
  bool needs_replacement(const Slot& slot) const;
  bool can_create() const;
  bool queue_full() const;
  std::int64_t reported_overflow() const;

  // bookkeeping
  SlotId take_idle();
  SlotId alloc_slot();
  void free_slot(SlotId slot);
  Slot& slot_in(SlotId slot, SlotState expected, const char* event);
  // Inline, so that with events off (every simulation) its optional arguments are never built:
  // passed out of line they cost a store-forwarding stall on every checkin.
  void notify(PoolEvent event, std::optional<ConnId> conn, std::optional<RecordId> record,
              std::optional<InvalidateReason> reason = std::nullopt) {
    if (config_.events == PoolEvents::kOn) emit(Notify{event, conn, record, reason, flow_});
  }
  template <typename A>  // an alternative of Action: it goes to its place, not through an Action
  void emit(A&& action) {
    actions_.push(std::forward<A>(action));
  }

  PoolConfig config_;
  int max_overflow_;  // effective (2.0: -1 when pool_size == 0)
  Instant now_ = kNever;
  std::int64_t overflow_;
  // dispose() resets overflow without forgetting the records still out; this keeps
  // overflow_ + overflow_offset_ == live records - pool_size checkable afterwards.
  std::int64_t overflow_offset_ = 0;
  Instant invalidate_time_ = kNever;
  bool first_connect_done_ = false;
  std::uint64_t next_record_ = 1;
  std::optional<RequestId> flow_;  // the request on whose behalf the current step runs

  std::vector<Slot> slots_;
  std::vector<SlotId> free_slots_;
  RingQueue<SlotId> idle_;      // the queue: put at the tail, get at head (FIFO) or tail
  RingQueue<Waiter> waiters_;   // oldest first
  RingQueue<SlotId> handoffs_;  // slots handed to waiters during the current input
  ActionQueue actions_;
};

}  // namespace poolsim
