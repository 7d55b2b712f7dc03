// pool.policy = static: SQLAlchemy's StaticPool, one connection shared by every checkout.
//
// The same Event/Action interface as PoolCore, with one difference in what a SlotId names:
// here it is a checkout (SQLAlchemy's _ConnectionFairy, the handle), not a record, because
// every concurrent checkout gets the same record. Each checkout has its own slot, so a driver
// can tell whose ping, reset or return it is; Grant gives each the shared connection. The rules
// and their sources are at the top of static_core.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "pool_model/action_queue.hpp"
#include "pool_model/events.hpp"
#include "pool_model/pool_config.hpp"
#include "pool_model/pool_core.hpp"
#include "pool_model/ring_queue.hpp"
#include "pool_model/time.hpp"

namespace poolsim {

class StaticCore {
 public:
  // Uses recycle, pre_ping, reset_on_return and events; throws std::invalid_argument with
  // validate()'s message for an unusable config.
  explicit StaticCore(const PoolConfig& config);

  void handle(Instant now, const Event& event);  // now never goes backwards
  void handle_timeout(Instant) {}                // a StaticPool never waits
  std::optional<Action> poll_action() { return actions_.poll(); }
  // Visits every pending action in place, oldest first (see action_queue.hpp): the visitor
  // must not feed this core.
  template <typename Visitor>
  void take_actions(Visitor&& visitor) {
    actions_.take_each(std::forward<Visitor>(visitor));
  }
  std::optional<Instant> poll_timeout() const { return std::nullopt; }
  // StaticPool's status() is the text "StaticPool"; here checkedout counts the checkouts out
  // (and in progress), everything else is 0.
  PoolStatus status() const;
  // Throws std::logic_error describing the first broken invariant.
  void check_invariants() const;
  const PoolConfig& config() const { return config_; }
  // The record the checkout in this slot is on.
  RecordId record_of(SlotId slot) const;

 private:
  enum class State : std::uint8_t {
    kFree,        // no checkout
    kCreating,    // its _do_get() is making the pool's record: the first connect is in flight
    kConnecting,  // (re)connecting the record for this checkout
    kPinging,     // pre-ping in flight
    kCheckedOut,  // granted to its request
    kResetting,   // returned; reset-on-return in flight
  };
  struct Record {
    bool live = false;
    RecordId id{};
    std::optional<ConnId> conn;
    Instant starttime{};
    Instant soft_invalidate_time = kNever;
    bool fresh = false;      // connected and not yet checked out: pre-ping skips it
    bool fairy_ref = false;  // set by every checkout, cleared by the checkin that fires checkin
    int refs = 0;            // checkouts on it, plus one while it is the pool's record
  };
  struct Checkout {
    State state = State::kFree;
    RequestId request{};
    std::uint32_t record = 0;
    std::optional<ConnId> conn;  // the handle's own connection (the record may move on)
    bool handle_made = false;    // its _ConnectionFairy exists (get_connection() returned)
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

  void get_connection(SlotId slot);
  void start_connect(SlotId slot);
  void checkout_loop(SlotId slot);
  void checkin(SlotId slot);
  void invalidate_record(Record& record, InvalidateReason reason);
  void close_record(Record& record, CloseKind kind);
  bool is_hard_or_soft_invalidated(const Record& record) const;
  bool needs_recycle(const Record& record) const;
  void set_pool_record(std::optional<std::uint32_t> record);

  Checkout& checkout_in(SlotId slot, State expected, const char* event);
  Record& record_in(const Checkout& checkout) { return records_[checkout.record]; }
  std::uint32_t new_record();
  void release(std::uint32_t record);
  SlotId alloc_checkout();
  void free_checkout(SlotId slot);
  void notify(PoolEvent event, std::optional<ConnId> conn, std::optional<RecordId> record,
              std::optional<InvalidateReason> reason = std::nullopt);
  template <typename A>  // an alternative of Action: it goes to its place, not through an Action
  void emit(A&& action) {
    actions_.push(std::forward<A>(action));
  }

  PoolConfig config_;
  Instant now_ = kNever;
  Instant invalidate_time_ = kNever;
  bool first_connect_done_ = false;
  std::uint64_t next_record_ = 1;
  std::optional<RequestId> flow_;
  std::optional<std::uint32_t> pool_record_;  // StaticPool.connection, once memoized
  std::vector<Record> records_;
  std::vector<std::uint32_t> free_records_;
  std::vector<Checkout> checkouts_;
  std::vector<SlotId> free_checkouts_;
  ActionQueue actions_;
};

}  // namespace poolsim
