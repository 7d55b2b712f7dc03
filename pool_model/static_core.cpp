// Policy `static`: SQLAlchemy's StaticPool (sqlalchemy/pool/impl.py, 1.4.46; 2.0 is the same),
// a Pool subclass that keeps exactly one _ConnectionRecord and gives it to every checkout. The
// record, its get_connection(), the checkout loop with pre-ping and the reset on return are
// QueuePool's (rules R5-R7 and R9 in pool_core.cpp); what StaticPool changes, with where it
// comes from (impl.py StaticPool, base.py _ConnectionRecord/_ConnectionFairy/_finalize_fairy):
//
//  S1 _do_get() returns the pool's record (the memoized property `connection`). If that record
//     is hard or soft invalidated (_is_hard_or_soft_invalidated: it has no connection, or the
//     pool's invalidate_time or its soft_invalidate_time is after its starttime, strictly), the
//     record is dropped, not closed, and a new one made. A new record connects in its
//     constructor and becomes the pool's record only when that connect succeeds (the property
//     is stored after it returns): checkouts that come during a first connect make records of
//     their own and the last to connect is kept; a failed connect leaves no record.
//  S2 There is no queue, limit or wait: pool_size, max_overflow, timeout and use_lifo do not
//     apply. Every checkout runs get_connection() on the record (R5: connect it if empty;
//     recycle it if too old, stamped by a pool invalidation or soft invalidated, closing the
//     connection other checkouts may still hold) and then the checkout loop (R6), and sets the
//     record's fairy_ref. Any number of checkouts hold the record at once.
//  S3 A return (_finalize_fairy) resets the handle's own connection (R7: the one it was given,
//     even if the record has moved on); a failing reset invalidates the record's current
//     connection. Then the checkin event fires only if the record's fairy_ref is set, and
//     clears it: of checkouts that overlap, only the first to return fires checkin.
//     _do_return_conn() does nothing: the connection stays open.
//  S4 A hard invalidate through a handle invalidates the record's current connection (nothing
//     if the record is already empty: record.invalidate returns early), then checks the handle
//     in as S3 does without a reset. Soft: the soft_invalidate event and a stamp. An Engine
//     disconnect stamps the pool (if its invalidate_time is older than the record's start),
//     then invalidates hard. detach() clears the record's fairy_ref and drops its connection
//     without closing it, puts nothing back and fires detach with the handle's connection,
//     which is reset and closed when the handle closes (R9).
//  S5 dispose() closes the record's connection (normal close) and forgets the record, even
//     while checkouts hold it; a record without a connection is kept (S1 drops it later).
//     status() is the text "StaticPool".
// The recorded traces (tests/pool_model/conformance/staticpool_scenarios.json) show each rule.
// What the pool never does: close a dropped record's connection (S1). In CPython the DBAPI
// connection is closed when the record is garbage-collected; no pool event says so.
#include "pool_model/static_core.hpp"

#include <stdexcept>
#include <string>

#include "pool_model/slots.hpp"

namespace poolsim {
namespace {

void require(bool condition, const char* what) {
  if (!condition) throw std::logic_error(std::string("StaticCore: ") + what);
}

std::size_t index(SlotId slot) { return static_cast<std::size_t>(slot); }

}  // namespace

StaticCore::StaticCore(const PoolConfig& config) : config_(config) {
  if (auto problem = validate(config)) throw std::invalid_argument(*problem);
  config_.policy = Policy::kStatic;
}

void StaticCore::handle(Instant now, const Event& event) {
  require(now >= now_, "time went backwards");
  now_ = now;
  std::visit([this](const auto& e) { on(e); }, event);
}

PoolStatus StaticCore::status() const {
  std::int64_t out = 0;
  for (const Checkout& c : checkouts_) out += c.state != State::kFree ? 1 : 0;
  return PoolStatus{0, 0, out, 0, 0};
}

RecordId StaticCore::record_of(SlotId slot) const {
  require(index(slot) < checkouts_.size() && checkouts_[index(slot)].state != State::kFree,
          "record_of: no checkout in that slot");
  return records_[checkouts_[index(slot)].record].id;
}

// ---- inputs ----------------------------------------------------------------------------------

void StaticCore::on(const CheckoutRequested& e) {  // S1
  flow_ = e.request;
  if (pool_record_ && is_hard_or_soft_invalidated(records_[*pool_record_])) {
    set_pool_record(std::nullopt);
  }
  const SlotId slot = alloc_checkout();
  Checkout& c = checkouts_[index(slot)];
  c = Checkout{};
  c.request = e.request;
  if (pool_record_) {
    c.record = *pool_record_;
    ++records_[c.record].refs;
    get_connection(slot);
    return;
  }
  c.state = State::kCreating;
  c.record = new_record();
  ++records_[c.record].refs;
  records_[c.record].starttime = now_;
  emit(OpenConnection{slot, e.request});
}

void StaticCore::on(const ConnectSucceeded& e) {
  require(index(e.slot) < checkouts_.size(), "ConnectSucceeded for an unknown slot");
  Checkout& c = checkouts_[index(e.slot)];
  require(c.state == State::kCreating || c.state == State::kConnecting,
          "ConnectSucceeded for a slot that is not connecting");
  flow_ = c.request;
  Record& record = record_in(c);
  record.conn = e.conn;
  record.fresh = true;
  if (!first_connect_done_) {
    first_connect_done_ = true;
    notify(PoolEvent::kFirstConnect, e.conn, record.id);
  }
  notify(PoolEvent::kConnect, e.conn, record.id);
  if (c.state == State::kCreating) {  // S1: the new record is the pool's now
    set_pool_record(c.record);
    get_connection(e.slot);
    return;
  }
  checkout_loop(e.slot);
}

void StaticCore::on(const ConnectFailed& e) {
  require(index(e.slot) < checkouts_.size(), "ConnectFailed for an unknown slot");
  Checkout& c = checkouts_[index(e.slot)];
  require(c.state == State::kCreating || c.state == State::kConnecting,
          "ConnectFailed for a slot that is not connecting");
  const RequestId request = c.request;
  flow_ = request;
  if (c.state == State::kCreating) {
    free_checkout(e.slot);  // S1: no record came of it
  } else if (!c.handle_made) {
    // R5's _checkin_failed(_fairy_was_created=False): the record is empty, so invalidate()
    // does nothing, and it is checked in whatever its fairy_ref says.
    Record& record = record_in(c);
    record.fairy_ref = false;
    notify(PoolEvent::kCheckin, record.conn, record.id);
    free_checkout(e.slot);
  } else {
    checkin(e.slot);  // R6's reconnect after a failed ping: the handle's checkin
  }
  emit(Fail{request, Failure::kConnectFailed, e.cause, 0});
}

void StaticCore::on(const PingResult& e) {  // R6 on the shared record
  Checkout& c = checkout_in(e.slot, State::kPinging, "PingResult");
  const RequestId request = c.request;
  flow_ = request;
  Record& record = record_in(c);
  switch (e.outcome) {
    case PingOutcome::kOk:
      c.state = State::kCheckedOut;
      notify(PoolEvent::kCheckout, c.conn, record.id);
      emit(Grant{request, e.slot, *c.conn});
      return;
    case PingOutcome::kDisconnect:
      invalidate_record(record, InvalidateReason::kPrePingDisconnect);
      if (invalidate_time_ < record.starttime) invalidate_time_ = now_;
      start_connect(e.slot);
      return;
    case PingOutcome::kError:
      invalidate_record(record, InvalidateReason::kPingError);
      checkin(e.slot);
      emit(Fail{request, Failure::kPingError, e.cause, 0});
      return;
  }
}

void StaticCore::on(const Returned& e) {  // S3
  Checkout& c = checkout_in(e.slot, State::kCheckedOut, "Returned");
  flow_.reset();
  notify(PoolEvent::kReset, c.conn, record_in(c).id);
  if (config_.reset_on_return == ResetOnReturn::kNone) {
    checkin(e.slot);
    return;
  }
  c.state = State::kResetting;
  emit(Reset{e.slot, *c.conn,
             config_.reset_on_return == ResetOnReturn::kCommit ? ResetKind::kCommit
                                                               : ResetKind::kRollback});
}

void StaticCore::on(const ResetDone& e) {
  flow_.reset();
  if (!e.slot) {  // a detached connection: closed after a good reset, left open after a bad one
    if (e.outcome == ResetOutcome::kOk) {
      notify(PoolEvent::kCloseDetached, e.conn, std::nullopt);
      emit(CloseConnection{e.conn, CloseKind::kClose, std::nullopt});
    }
    return;
  }
  Checkout& c = checkout_in(*e.slot, State::kResetting, "ResetDone");
  require(c.conn == e.conn, "ResetDone names another connection than the checkout's");
  if (e.outcome == ResetOutcome::kFailed) {
    invalidate_record(record_in(c), InvalidateReason::kResetFailed);
  }
  checkin(*e.slot);
}

void StaticCore::on(const Invalidated& e) {  // S4
  Checkout& c = checkout_in(e.slot, State::kCheckedOut, "Invalidated");
  flow_.reset();
  Record& record = record_in(c);
  if (e.kind == Invalidation::kSoft) {
    if (!record.conn) return;  // record.invalidate(): already invalidated
    notify(PoolEvent::kSoftInvalidate, record.conn, record.id, InvalidateReason::kExplicit);
    record.soft_invalidate_time = now_;
    return;
  }
  invalidate_record(record, InvalidateReason::kExplicit);
  checkin(e.slot);
}

void StaticCore::on(const DisconnectDetected& e) {  // S4
  Checkout& c = checkout_in(e.slot, State::kCheckedOut, "DisconnectDetected");
  flow_.reset();
  Record& record = record_in(c);
  if (invalidate_time_ < record.starttime) invalidate_time_ = now_;
  invalidate_record(record, InvalidateReason::kDisconnect);
  checkin(e.slot);
}

void StaticCore::on(const Detached& e) {  // S4
  Checkout& c = checkout_in(e.slot, State::kCheckedOut, "Detached");
  flow_.reset();
  Record& record = record_in(c);
  const ConnId conn = *c.conn;
  const RecordId id = record.id;
  record.fairy_ref = false;
  record.conn.reset();
  free_checkout(e.slot);
  notify(PoolEvent::kDetach, conn, id);
}

void StaticCore::on(const DetachedReturned& e) {
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

void StaticCore::on(const PoolInvalidated&) { invalidate_time_ = now_; }

void StaticCore::on(const Disposed&) {  // S5
  flow_.reset();
  if (!pool_record_ || !records_[*pool_record_].conn) return;
  close_record(records_[*pool_record_], CloseKind::kClose);
  set_pool_record(std::nullopt);
}

void StaticCore::on(const WaitExpired&) {
  throw std::logic_error("StaticCore: WaitExpired, but a StaticPool never waits");
}

// ---- _ConnectionRecord / _ConnectionFairy steps ------------------------------------------------

void StaticCore::get_connection(SlotId slot) {  // R5, on the shared record
  Checkout& c = checkouts_[index(slot)];
  Record& record = record_in(c);
  if (!record.conn) {
    start_connect(slot);
  } else if (needs_recycle(record)) {
    close_record(record, CloseKind::kTerminate);
    start_connect(slot);
  } else {
    checkout_loop(slot);
  }
}

void StaticCore::start_connect(SlotId slot) {
  Checkout& c = checkouts_[index(slot)];
  c.state = State::kConnecting;
  record_in(c).starttime = now_;  // a record's age includes its connect time
  emit(OpenConnection{slot, c.request});
}

void StaticCore::checkout_loop(SlotId slot) {  // R6; the handle now exists (fairy_ref set)
  Checkout& c = checkouts_[index(slot)];
  Record& record = record_in(c);
  c.conn = record.conn;
  c.handle_made = true;
  record.fairy_ref = true;
  const bool fresh = record.fresh;
  record.fresh = false;
  if (config_.pre_ping && !fresh) {
    c.state = State::kPinging;
    emit(Ping{slot, *c.conn, c.request});
    return;
  }
  c.state = State::kCheckedOut;
  notify(PoolEvent::kCheckout, c.conn, record.id);
  emit(Grant{c.request, slot, *c.conn});
}

void StaticCore::checkin(SlotId slot) {  // S3's checkin: only the first overlapping return fires
  Checkout& c = checkouts_[index(slot)];
  Record& record = record_in(c);
  if (record.fairy_ref) {
    record.fairy_ref = false;
    notify(PoolEvent::kCheckin, record.conn, record.id);
  }
  free_checkout(slot);
}

void StaticCore::invalidate_record(Record& record, InvalidateReason reason) {
  if (!record.conn) return;  // record.invalidate(): already invalidated
  notify(PoolEvent::kInvalidate, record.conn, record.id, reason);
  close_record(record, CloseKind::kTerminate);
}

void StaticCore::close_record(Record& record, CloseKind kind) {
  notify(PoolEvent::kClose, record.conn, record.id);
  emit(CloseConnection{*record.conn, kind, flow_});
  record.conn.reset();
}

bool StaticCore::is_hard_or_soft_invalidated(const Record& record) const {
  return !record.conn || invalidate_time_ > record.starttime ||
         record.soft_invalidate_time > record.starttime;
}

bool StaticCore::needs_recycle(const Record& record) const {
  return (config_.recycle && now_ - record.starttime > *config_.recycle) ||
         invalidate_time_ > record.starttime || record.soft_invalidate_time > record.starttime;
}

void StaticCore::set_pool_record(std::optional<std::uint32_t> record) {
  if (record) ++records_[*record].refs;
  if (pool_record_) release(*pool_record_);
  pool_record_ = record;
}

// ---- bookkeeping -------------------------------------------------------------------------------

StaticCore::Checkout& StaticCore::checkout_in(SlotId slot, State expected, const char* event) {
  if (index(slot) >= checkouts_.size() || checkouts_[index(slot)].state != expected) {
    throw std::logic_error(std::string("StaticCore: ") + event +
                           " for a slot in the wrong state (slot " +
                           std::to_string(static_cast<std::uint32_t>(slot)) + ")");
  }
  return checkouts_[index(slot)];
}

std::uint32_t StaticCore::new_record() {
  std::uint32_t i;
  if (!free_records_.empty()) {
    i = free_records_.back();
    free_records_.pop_back();
  } else {
    i = static_cast<std::uint32_t>(records_.size());
    records_.emplace_back();
  }
  records_[i] = Record{};
  records_[i].live = true;
  records_[i].id = RecordId{next_record_++};
  return i;
}

void StaticCore::release(std::uint32_t record) {
  if (--records_[record].refs > 0) return;
  records_[record].live = false;
  free_records_.push_back(record);
}

SlotId StaticCore::alloc_checkout() { return take_free_slot(checkouts_, free_checkouts_); }

void StaticCore::free_checkout(SlotId slot) {
  Checkout& c = checkouts_[index(slot)];
  c.state = State::kFree;
  c.conn.reset();
  release(c.record);
  free_checkouts_.push_back(slot);
}

void StaticCore::notify(PoolEvent event, std::optional<ConnId> conn,
                        std::optional<RecordId> record, std::optional<InvalidateReason> reason) {
  if (config_.events == PoolEvents::kOn) emit(Notify{event, conn, record, reason, flow_});
}

// ---- invariants --------------------------------------------------------------------------------

void StaticCore::check_invariants() const {
  std::vector<int> refs(records_.size(), 0);
  if (pool_record_) {
    require(records_[*pool_record_].live, "the pool's record is not live");
    ++refs[*pool_record_];
  }
  for (const Checkout& c : checkouts_) {
    if (c.state == State::kFree) {
      require(!c.conn, "a free checkout holds a connection");
      continue;
    }
    require(c.record < records_.size() && records_[c.record].live,
            "a checkout is on a record that is gone");
    ++refs[c.record];
    switch (c.state) {
      case State::kCreating:
        require(!records_[c.record].conn, "a record being created already has a connection");
        require(pool_record_ != c.record, "a record being created is already the pool's");
        break;
      case State::kConnecting:
        require(!records_[c.record].conn, "a connecting record already has a connection");
        break;
      case State::kPinging:
      case State::kCheckedOut:
      case State::kResetting:
        require(c.conn.has_value(), "a checkout past its connect has no connection");
        break;
      case State::kFree: break;
    }
  }
  std::size_t live = 0;
  for (std::size_t i = 0; i < records_.size(); ++i) {
    if (!records_[i].live) continue;
    ++live;
    require(records_[i].refs == refs[i], "a record's reference count is wrong");
    require(refs[i] > 0, "a live record nobody refers to");
  }
  require(live + free_records_.size() == records_.size(), "free records and live ones disagree");
}

}  // namespace poolsim
