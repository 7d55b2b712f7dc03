// Policy `queuepool`: SQLAlchemy's QueuePool + _ConnectionRecord + _ConnectionFairy, exactly.
//
// Every transition of the pool lives in this file. The rules, with their place in
// ../shared/queuepool_spec.md (section numbers) and in SQLAlchemy 1.4.46:
//
//  R1 State (§1, §3). A queue of records with maxsize pool_size (0 = unbounded); overflow
//     starts at -pool_size and counts every record that exists or is being created, minus
//     pool_size. A record is a slot that may be empty (its connection was invalidated); an
//     empty record is queued, counted in checkedin() and reconnects at its next checkout.
//  R2 Checkout (§4, impl.py _do_get). An idle record always wins, even an empty one: FIFO
//     takes the head, LIFO the tail. Else, if max_overflow is -1 or overflow < max_overflow,
//     overflow += 1 and a new record connects (starttime = connect start). Else the request
//     waits, oldest first, until now + timeout; timeout 0 goes straight to the deadline; a
//     negative timeout fails every checkout made at the limit with ValueError (§2).
//  R3 Deadline (§4). When the wait ends, overflow is checked again: still at the limit ->
//     TimeoutError with size and overflow read now; room appeared meanwhile (a creation failed,
//     dispose() reset the counter) -> the waiter creates a connection instead. Only a queue
//     put wakes a waiter.
//  R4 A failed creation (§4) restores overflow, fails the request and wakes nobody.
//  R5 get_connection() (§5), on every checkout including right after creation, first match
//     wins: empty record -> connect; recycle set and now - starttime > recycle -> recycle;
//     pool invalidate_time > starttime -> recycle; soft_invalidate_time > starttime -> recycle.
//     All strict. Recycle = close event, terminate, connect. A failed (re)connect of an
//     existing record checks the empty record in (checkin event with no connection) and fails
//     the request; overflow is unchanged.
//  R6 Checkout loop (§6). A connection made during this checkout is fresh and never pinged.
//     Otherwise, with pre_ping, ping: ok -> deliver; disconnect -> invalidate (reason
//     InvalidatePoolError), stamp the pool (invalidate_time = now if it is older than the
//     record's starttime), reconnect once (the new connection is fresh, so it is delivered);
//     any other error -> invalidate, check the empty record in, fail the request.
//  R7 Checkin (§7). reset event, then rollback / commit / nothing; a failing reset invalidates
//     the record (no error to the caller). checkin event (no connection if invalidated), then
//     the queue put: a waiter gets it (oldest first); a full queue closes whichever connection
//     came back (close event, normal close) and overflow -= 1; else it joins the tail.
//  R8 Hand-offs run after the returning step finishes, as the woken thread would run after the
//     one that woke it (§9); a DES has no barging.
//  R9 Invalidate (§10): hard = invalidate event, close event, terminate, empty record through
//     R7's put with no reset. Soft = soft_invalidate event and a time stamp. An Engine
//     disconnect stamps the pool first, then hard-invalidates. Detach empties the record,
//     puts it back (R7) then fires detach; the detached connection is reset and closed with
//     close_detached when its handle closes (a failing reset there leaves it open).
//  R10 dispose() (§11) closes the idle records in queue order and sets overflow = -pool_size,
//     whatever is still checked out. Engine.dispose() is the driver's: dispose, then a new
//     PoolCore with the same config; handles out return to the old one.
//  R11 compat 2.0 (§13): pool_size == 0 means max_overflow = -1 and overflow() reports 0.
//
// Policy `null`: SQLAlchemy's NullPool (sqlalchemy/pool/impl.py, 1.4.46 and 2.0), a Pool
// subclass that shares _ConnectionRecord and _ConnectionFairy with QueuePool, so everything
// above that is about a record holds for it too (R5, R6, R7's reset, R9); only the pool class
// differs:
//  N1 _do_get() is _create_connection(): every checkout creates a record and connects, never
//     waits, never times out (pool_size, max_overflow, timeout and use_lifo do not apply; the
//     core works as if pool_size = 0 and max_overflow = -1).
//  N2 _do_return_conn() is record.close(): after the checkin event the connection is closed
//     (close event, normal close) and the record is gone; an empty record closes nothing.
//  N3 dispose() does nothing (no records are idle). status() is the text "NullPool": size,
//     checkedin and overflow are 0 here, checkedout counts the records out.
// A pool-wide invalidation (R6, R9) is stamped as in QueuePool; with every connection new it
// can only matter to a record created before the stamp (a connect slower than the disconnect).
#include "pool_model/pool_core.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "pool_model/slots.hpp"

namespace poolsim {
namespace {

void require(bool condition, const char* what) {
  if (!condition) throw std::logic_error(std::string("PoolCore: ") + what);
}

std::size_t index(SlotId slot) { return static_cast<std::size_t>(slot); }

}  // namespace

std::ostream& operator<<(std::ostream& out, const PoolStatus& status) {
  return out << "size=" << status.size << " checkedin=" << status.checkedin
             << " checkedout=" << status.checkedout << " overflow=" << status.overflow
             << " waiting=" << status.waiting;
}

namespace {

// N1: a NullPool works as a QueuePool with no idle queue and no limit.
PoolConfig normalized(const PoolConfig& config) {
  if (config.policy != Policy::kNull) return config;
  PoolConfig out = config;
  out.pool_size = 0;
  out.max_overflow = -1;
  out.timeout.reset();
  out.order = QueueOrder::kFifo;
  return out;
}

}  // namespace

PoolCore::PoolCore(const PoolConfig& config)
    : config_(normalized(config)),
      max_overflow_(effective_max_overflow(config_)),
      // Widened before the minus: a pool_size of INT_MIN is refused just below, not negated.
      overflow_(-static_cast<std::int64_t>(config_.pool_size)) {
  if (auto problem = validate(config)) throw std::invalid_argument(*problem);
  if (config.policy == Policy::kStatic) {
    throw std::invalid_argument(
        "pool.policy = static: SQLAlchemy's StaticPool is StaticCore (static_core.hpp), not "
        "PoolCore");
  }
}

// ---- the driver's interface ------------------------------------------------------------------

void PoolCore::handle(Instant now, const Event& event) {
  std::visit([&](const auto& e) { handle(now, e); }, event);
}

void PoolCore::advance(Instant now) {
  require(now >= now_, "time went backwards");
  now_ = now;
}

void PoolCore::handle_timeout(Instant now) {
  advance(now);
  // With one constant timeout, waiters' deadlines are in arrival order.
  while (!waiters_.empty() && waiters_.front().deadline && *waiters_.front().deadline <= now) {
    const RequestId request = waiters_.front().request;
    waiters_.pop_front();
    wait_expired(request);
  }
  run_handoffs();
}

PoolStatus PoolCore::status() const {
  const auto idle = static_cast<std::int64_t>(idle_.size());
  return PoolStatus{config_.pool_size, idle, config_.pool_size - idle + overflow_,
                    reported_overflow(), static_cast<std::int64_t>(waiters_.size())};
}

RecordId PoolCore::record_of(SlotId slot) const {
  require(index(slot) < slots_.size() && slots_[index(slot)].state != SlotState::kFree,
          "record_of: no record in that slot");
  return slots_[index(slot)].record;
}

// ---- inputs ----------------------------------------------------------------------------------

void PoolCore::on(const CheckoutRequested& e) {
  flow_ = e.request;
  do_get(e.request);
}

void PoolCore::on(const ConnectSucceeded& e) {
  require(index(e.slot) < slots_.size(), "ConnectSucceeded for an unknown slot");
  Slot& slot = slots_[index(e.slot)];
  require(slot.state == SlotState::kCreating || slot.state == SlotState::kConnecting,
          "ConnectSucceeded for a slot that is not connecting");
  flow_ = slot.request;
  slot.conn = e.conn;
  slot.fresh = true;
  if (!first_connect_done_) {
    first_connect_done_ = true;
    notify(PoolEvent::kFirstConnect, e.conn, slot.record);
  }
  notify(PoolEvent::kConnect, e.conn, slot.record);
  if (slot.state == SlotState::kCreating) {
    // R5: the new record now exists and get_connection() checks it like any other; a
    // connect slower than recycle, or a pool invalidated meanwhile, replaces it at once.
    slot.state = SlotState::kConnecting;
    if (needs_replacement(slot)) {
      close_connection(slot, CloseKind::kTerminate);
      start_connect(e.slot);
      return;
    }
  }
  checkout_loop(e.slot);
}

void PoolCore::on(const ConnectFailed& e) {
  require(index(e.slot) < slots_.size(), "ConnectFailed for an unknown slot");
  Slot& slot = slots_[index(e.slot)];
  const RequestId request = slot.request;
  flow_ = request;
  if (slot.state == SlotState::kCreating) {  // R4
    --overflow_;
    free_slot(e.slot);
  } else {  // R5: _checkin_failed of an existing record
    require(slot.state == SlotState::kConnecting,
            "ConnectFailed for a slot that is not connecting");
    checkin(e.slot);
  }
  emit(Fail{request, Failure::kConnectFailed, e.cause, 0});
}

void PoolCore::on(const PingResult& e) {
  Slot& slot = slot_in(e.slot, SlotState::kPinging, "PingResult");
  const RequestId request = slot.request;
  flow_ = request;
  switch (e.outcome) {
    case PingOutcome::kOk: deliver(e.slot); return;
    case PingOutcome::kDisconnect: {  // R6
      const Instant started = slot.starttime;
      invalidate_connection(slot, InvalidateReason::kPrePingDisconnect);
      stamp_pool_invalidation(started);
      start_connect(e.slot);
      return;
    }
    case PingOutcome::kError:
      invalidate_connection(slot, InvalidateReason::kPingError);
      checkin(e.slot);
      emit(Fail{request, Failure::kPingError, e.cause, 0});
      return;
  }
}

void PoolCore::on(const Returned& e) {
  Slot& slot = slot_in(e.slot, SlotState::kCheckedOut, "Returned");
  flow_.reset();
  notify(PoolEvent::kReset, slot.conn, slot.record);
  if (config_.reset_on_return == ResetOnReturn::kNone) {
    checkin(e.slot);
    return;
  }
  slot.state = SlotState::kResetting;
  emit(Reset{e.slot, *slot.conn,
             config_.reset_on_return == ResetOnReturn::kCommit ? ResetKind::kCommit
                                                               : ResetKind::kRollback});
}

void PoolCore::on(const ResetDone& e) {
  flow_.reset();
  if (!e.slot) {  // a detached connection: closed after a good reset, left open after a bad one
    if (e.outcome == ResetOutcome::kOk) {
      notify(PoolEvent::kCloseDetached, e.conn, std::nullopt);
      emit(CloseConnection{e.conn, CloseKind::kClose, flow_});
    }
    return;
  }
  Slot& slot = slot_in(*e.slot, SlotState::kResetting, "ResetDone");
  require(slot.conn == e.conn, "ResetDone names another connection than the slot's");
  if (e.outcome == ResetOutcome::kFailed) {
    invalidate_connection(slot, InvalidateReason::kResetFailed);
  }
  checkin(*e.slot);
}

void PoolCore::on(const Invalidated& e) {
  Slot& slot = slot_in(e.slot, SlotState::kCheckedOut, "Invalidated");
  flow_.reset();
  if (e.kind == Invalidation::kSoft) {
    notify(PoolEvent::kSoftInvalidate, slot.conn, slot.record, InvalidateReason::kExplicit);
    slot.soft_invalidate_time = now_;
    return;
  }
  invalidate_connection(slot, InvalidateReason::kExplicit);
  checkin(e.slot);
}

void PoolCore::on(const DisconnectDetected& e) {
  Slot& slot = slot_in(e.slot, SlotState::kCheckedOut, "DisconnectDetected");
  flow_.reset();
  stamp_pool_invalidation(slot.starttime);
  invalidate_connection(slot, InvalidateReason::kDisconnect);
  checkin(e.slot);
}

void PoolCore::on(const Detached& e) {
  Slot& slot = slot_in(e.slot, SlotState::kCheckedOut, "Detached");
  flow_.reset();
  const ConnId conn = *slot.conn;
  const RecordId record = slot.record;
  slot.conn.reset();
  return_record(e.slot);
  notify(PoolEvent::kDetach, conn, record);
}

void PoolCore::on(const DetachedReturned& e) {
  flow_.reset();
  notify(PoolEvent::kReset, e.conn, std::nullopt);
  if (config_.reset_on_return == ResetOnReturn::kNone) {
    on(ResetDone{std::nullopt, e.conn, ResetOutcome::kOk});
    return;
  }
  emit(Reset{std::nullopt, e.conn,
             config_.reset_on_return == ResetOnReturn::kCommit ? ResetKind::kCommit
                                                               : ResetKind::kRollback});
}

void PoolCore::on(const PoolInvalidated&) { invalidate_time_ = now_; }

void PoolCore::on(const Disposed&) {  // R10
  flow_.reset();
  std::int64_t live = overflow_ + overflow_offset_ + config_.pool_size;
  while (!idle_.empty()) {
    const SlotId id = take_idle();
    Slot& slot = slots_[index(id)];
    if (slot.conn) close_connection(slot, CloseKind::kClose);
    free_slot(id);
    --live;
  }
  overflow_ = -config_.pool_size;
  overflow_offset_ = live;  // the records still out, which overflow no longer counts
}

void PoolCore::on(const WaitExpired& e) {
  std::size_t i = 0;
  while (i < waiters_.size() && waiters_[i].request != e.request) ++i;
  require(i < waiters_.size(), "WaitExpired for a request that is not waiting");
  waiters_.erase(i);
  wait_expired(e.request);
}

// ---- QueuePool ---------------------------------------------------------------------------------

void PoolCore::do_get(RequestId request) {  // R2
  if (!can_create() && config_.timeout && config_.timeout->count() < 0) {
    // Queue.get(block=True, timeout<0) raises ValueError before it looks at the queue.
    emit(Fail{request, Failure::kNegativeTimeout, 0, 0});
  } else if (!idle_.empty()) {
    prepare(take_idle(), request);
  } else if (can_create()) {
    create_record(request);
  } else if (config_.timeout && config_.timeout->count() == 0) {
    wait_expired(request);
  } else {
    std::optional<Instant> deadline;
    if (config_.timeout) deadline = saturating_add(now_, *config_.timeout);
    waiters_.push_back(Waiter{request, deadline});
  }
}

void PoolCore::wait_expired(RequestId request) {  // R3
  flow_ = request;
  if (can_create()) {
    create_record(request);
  } else {
    emit(Fail{request, Failure::kTimeout, 0, reported_overflow()});
  }
}

void PoolCore::create_record(RequestId request) {
  ++overflow_;
  const SlotId id = alloc_slot();
  Slot& slot = slots_[index(id)];
  slot = Slot{};
  slot.state = SlotState::kCreating;
  slot.request = request;
  slot.record = RecordId{next_record_++};
  slot.starttime = now_;
  emit(OpenConnection{id, request});
}

void PoolCore::prepare(SlotId id, RequestId request) {  // R5, then R6
  Slot& slot = slots_[index(id)];
  slot.request = request;
  if (!slot.conn) {
    start_connect(id);
  } else if (needs_replacement(slot)) {
    close_connection(slot, CloseKind::kTerminate);
    start_connect(id);
  } else {
    checkout_loop(id);
  }
}

void PoolCore::start_connect(SlotId id) {
  Slot& slot = slots_[index(id)];
  slot.state = SlotState::kConnecting;
  slot.starttime = now_;  // stamped before connecting: a record's age includes connect time
  emit(OpenConnection{id, slot.request});
}

void PoolCore::checkout_loop(SlotId id) {  // R6
  Slot& slot = slots_[index(id)];
  const bool fresh = slot.fresh;
  slot.fresh = false;
  if (config_.pre_ping && !fresh) {
    slot.state = SlotState::kPinging;
    emit(Ping{id, *slot.conn, slot.request});
    return;
  }
  deliver(id);
}

void PoolCore::deliver(SlotId id) {
  Slot& slot = slots_[index(id)];
  slot.state = SlotState::kCheckedOut;
  notify(PoolEvent::kCheckout, slot.conn, slot.record);
  emit(Grant{slot.request, id, *slot.conn});
}

void PoolCore::checkin(SlotId id) {  // R7 after the reset: checkin event, then the put
  Slot& slot = slots_[index(id)];
  notify(PoolEvent::kCheckin, slot.conn, slot.record);
  return_record(id);
}

void PoolCore::return_record(SlotId id) {  // R7's put, R8
  Slot& slot = slots_[index(id)];
  if (!waiters_.empty()) {
    slot.state = SlotState::kHandedOff;
    slot.request = waiters_.front().request;
    waiters_.pop_front();
    handoffs_.push_back(id);
  } else if (queue_full()) {
    if (slot.conn) close_connection(slot, CloseKind::kClose);
    free_slot(id);
    --overflow_;
  } else {
    slot.state = SlotState::kIdle;
    idle_.push_back(id);
  }
}

void PoolCore::run_handoffs() {
  while (!handoffs_.empty()) {
    const SlotId id = handoffs_.front();
    handoffs_.pop_front();
    flow_ = slots_[index(id)].request;
    prepare(id, slots_[index(id)].request);
  }
}

void PoolCore::invalidate_connection(Slot& slot, InvalidateReason reason) {
  notify(PoolEvent::kInvalidate, slot.conn, slot.record, reason);
  close_connection(slot, CloseKind::kTerminate);
}

void PoolCore::close_connection(Slot& slot, CloseKind kind) {
  notify(PoolEvent::kClose, slot.conn, slot.record);
  emit(CloseConnection{*slot.conn, kind, flow_});
  slot.conn.reset();
}

void PoolCore::stamp_pool_invalidation(Instant record_start) {
  if (invalidate_time_ < record_start) invalidate_time_ = now_;
}

bool PoolCore::needs_replacement(const Slot& slot) const {
  return (config_.recycle && now_ - slot.starttime > *config_.recycle) ||
         invalidate_time_ > slot.starttime || slot.soft_invalidate_time > slot.starttime;
}

bool PoolCore::can_create() const { return max_overflow_ == -1 || overflow_ < max_overflow_; }

bool PoolCore::queue_full() const {  // N2: a NullPool's queue is always full
  if (config_.policy == Policy::kNull) return true;
  return config_.pool_size > 0 && idle_.size() == static_cast<std::size_t>(config_.pool_size);
}

std::int64_t PoolCore::reported_overflow() const {
  if (config_.policy == Policy::kNull) return 0;
  if (config_.compat == Compat::kSqlalchemy20 && config_.pool_size == 0) return 0;
  return overflow_;
}

// ---- bookkeeping -------------------------------------------------------------------------------

SlotId PoolCore::take_idle() {
  SlotId id;
  if (config_.order == QueueOrder::kLifo) {
    id = idle_.back();
    idle_.pop_back();
  } else {
    id = idle_.front();
    idle_.pop_front();
  }
  return id;
}

SlotId PoolCore::alloc_slot() { return take_free_slot(slots_, free_slots_); }

void PoolCore::free_slot(SlotId id) {
  slots_[index(id)].state = SlotState::kFree;
  slots_[index(id)].conn.reset();
  free_slots_.push_back(id);
}

PoolCore::Slot& PoolCore::slot_in(SlotId id, SlotState expected, const char* event) {
  if (index(id) >= slots_.size() || slots_[index(id)].state != expected) {
    throw std::logic_error(std::string("PoolCore: ") + event +
                           " for a slot in the wrong state (slot " +
                           std::to_string(static_cast<std::uint32_t>(id)) + ")");
  }
  return slots_[index(id)];
}

// ---- invariants --------------------------------------------------------------------------------

void PoolCore::check_invariants() const {
  require(handoffs_.empty(), "hand-offs left over after an input");
  std::int64_t live = 0;
  std::vector<std::uint64_t> requests;
  std::size_t idle_states = 0;
  for (const Slot& slot : slots_) {
    if (slot.state == SlotState::kFree) {
      require(!slot.conn, "a free slot holds a connection");
      continue;
    }
    ++live;
    switch (slot.state) {
      case SlotState::kIdle: ++idle_states; break;
      case SlotState::kCreating:
      case SlotState::kConnecting:
        require(!slot.conn, "a connecting slot already holds a connection");
        requests.push_back(static_cast<std::uint64_t>(slot.request));
        break;
      case SlotState::kPinging:
      case SlotState::kCheckedOut:
        require(slot.conn.has_value(), "a pinging or checked-out slot has no connection");
        requests.push_back(static_cast<std::uint64_t>(slot.request));
        break;
      case SlotState::kResetting:
        require(slot.conn.has_value(), "a resetting slot has no connection");
        break;
      case SlotState::kHandedOff:
      case SlotState::kFree: require(false, "a slot in a transient state between inputs");
    }
  }
  require(idle_states == idle_.size(), "idle slots and the queue disagree");
  std::vector<SlotId> queued;
  for (std::size_t i = 0; i < idle_.size(); ++i) {
    require(slots_[index(idle_[i])].state == SlotState::kIdle, "a queued slot is not idle");
    queued.push_back(idle_[i]);
  }
  std::sort(queued.begin(), queued.end());
  require(std::adjacent_find(queued.begin(), queued.end()) == queued.end(),
          "a slot is queued twice");
  require(free_slots_.size() + static_cast<std::size_t>(live) == slots_.size(),
          "free list and live slots disagree");
  require(overflow_ + overflow_offset_ == live - config_.pool_size,
          "overflow does not count the live records");
  if (max_overflow_ >= 0 && overflow_offset_ == 0) {
    require(overflow_ <= max_overflow_, "overflow above max_overflow");
  }
  if (config_.pool_size > 0) {
    require(idle_.size() <= static_cast<std::size_t>(config_.pool_size), "queue above pool_size");
  }
  require(waiters_.empty() || idle_.empty(), "a request waits while a record is idle");
  for (std::size_t i = 0; i < waiters_.size(); ++i) {
    requests.push_back(static_cast<std::uint64_t>(waiters_[i].request));
  }
  std::sort(requests.begin(), requests.end());
  require(std::adjacent_find(requests.begin(), requests.end()) == requests.end(),
          "a request is in two places at once");
}

}  // namespace poolsim
