// HikariCP's pool (pool.policy = hikari) as a state machine.
//
// RULES, from HikariCP 5.1's source (com.zaxxer.hikari; HikariPool.java "HP", ConcurrentBag.java
// "CB", PoolEntry.java, ProxyConnection.java, HikariConfig.java; the 5.0.2-SNAPSHOT tree just
// before the 5.1.0 release, whose add/fill design 7.0 master keeps) and its documentation. Where
// 2.7.9 (Debian 12's libhikaricp-java) differs, it says so. poolsim has no threads, so the
// thread-local fast path of CB.borrow (a thread gets back its own last connection) is not
// modelled: every borrow scans the shared list.
//
//  H1 Start (HP constructor, checkFailFast): one connection is opened at once (with the default
//     initializationFailTimeout of 1 ms; poolsim starts the workload with it rather than after
//     it), and the housekeeper first runs 100 ms later, then every housekeeping period (30 s,
//     com.zaxxer.hikari.housekeeping.periodMs).
//  H2 Borrow (CB.borrow): an idle connection is taken if there is one, the oldest in the bag
//     first (the shared list is in creation order). Otherwise the request waits, first come
//     first served (a fair SynchronousQueue), after addBagItem(waiting) with the waiters so
//     far, itself included.
//  H3 A request never connects (HikariCP's "user threads only ever block on the pool").
//     addBagItem(waiting) queues one task for the single "connection adder" thread when
//     waiting > the tasks already queued (2.7.9: waiting - queued >= 0); the queue holds
//     maximum_pool_size tasks, more are discarded. A task (PoolEntryCreator) opens connections
//     while shouldContinueCreating(): total < maximum_pool_size and (idle < minimum_idle or
//     waiting > idle). It stops after one success, the adder then sleeping 30 ms; a task that
//     finds the condition false ends without a connect (the "elision" of HikariCP's spike
//     write-up). A failed connect sleeps a back-off of 10 ms, doubled after each failure up to
//     5 s, and the task tries again while the condition holds (2.7.9: 250 ms, x1.5, at most
//     min(10 s, connection_timeout), no sleep after a success). The total counts connections
//     in the pool, not the one being opened, so total + the one opening <= maximum_pool_size.
//  H4 A new connection goes to the oldest waiter if one waits (CB.add's hand-off), else into
//     the bag.
//  H5 Getting a connection (HP.getConnection): an evicted connection found at borrow is closed
//     and the borrow retried; one whose lastAccessed is more than alive_bypass_window (500 ms,
//     com.zaxxer.hikari.aliveBypassWindowMs) ago is checked first (isConnectionAlive: a Ping
//     round trip); a dead one is closed and the borrow retried. Retries keep the request's
//     deadline, connection_timeout from its first try; a request still waiting then fails
//     (SQLTransientConnectionException, "request timed out": a timeout).
//  H6 Return (ProxyConnection.close, PoolEntry.recycle, HP.recycle): the rollback HikariCP runs
//     for a connection left in a transaction (pool.reset_on_return; none skips it), then
//     PoolEntry.recycle(lastAccess) and CB.requite: to the oldest waiter, or into the bag.
//     ProxyConnection's lastAccess is set by the rollback (close: `lastAccess = currentTime()`
//     after delegate.rollback()) and, in autocommit (none), by each statement as it starts
//     (markCommitStateDirty): so with none a connection's lastAccessed is its last statement's
//     start, taken here as its grant (one statement per checkout, as poolsim's requests run),
//     and a connection held longer than alive_bypass_window is checked at its next borrow
//     (H5), however recently it came back. (Found by the live cross-check against HikariCP
//     2.7.9; 5.1 has the same code.) An evicted
//     connection goes back like any other and is closed at its next borrow (H5; HikariCP 6.0
//     closes it on return instead).
//  H7 Closing (HP.closeConnection) takes the connection out of the total at once; after the
//     close the pool is filled (fillPool): when total < maximum_pool_size and idle <
//     minimum_idle, minimum_idle - idle more tasks (each checks H3's condition when it runs).
//     2.7.9 queues min(maximum_pool_size - total, minimum_idle - idle) - queued.
//  H8 max_lifetime (createPoolEntry, MaxLifetimeTask): each connection ends max_lifetime minus
//     a random variance below max_lifetime / 40 after its creation (no variance up to 10 s).
//     An idle one is closed then and addBagItem(waiting) called; one in use is only marked
//     evicted (H5, H6).
//  H9 keepalive_time (4.0+, KeepaliveTask): every keepalive_time minus a random variance below
//     keepalive_time / 10 (fixed per connection), an idle connection is reserved and checked
//     (a Ping for no request); a dead one is closed and addBagItem(waiting) called, a live one
//     goes back (to a waiter if one came meanwhile). One in use skips that turn. A keepalive
//     leaves lastAccessed alone. HikariCP 5's default is 0 (off); 2.7.9 has no keepalive.
//  H10 Housekeeper (HouseKeeper.run): when idle_timeout > 0 and minimum_idle <
//     maximum_pool_size, idle connections beyond minimum_idle whose lastAccessed is more than
//     idle_timeout ago are closed, newest in the bag first (values(NOT_IN_USE) is reversed);
//     then fillPool. (Runs that can change nothing, and keepalive turns of a connection in
//     use, are skipped without moving the later ones: the same behaviour in fewer events.)
//  H11 A broken connection (ProxyConnection.checkException: SQLState 08..., 57P01...) is
//     evicted and closed at once, alone: unlike SQLAlchemy, nothing happens to the rest of the
//     pool (DisconnectDetected, a failed rollback). invalidate() maps to evicting that
//     connection (hard) or marking it evicted (soft); dispose() to softEvictConnections():
//     idle connections closed now, those in use marked.
// SQLAlchemy's detach() has no HikariCP counterpart: Detached, DetachedReturned and
// PoolInvalidated are refused with std::logic_error. HikariConfig.validateNumerics() quietly
// replaces some values (a max_lifetime under 30 s by 30 min, ...): validate() refuses them.
#include "pool_model/hikari_core.hpp"

#include <algorithm>
#include <stdexcept>
#include <variant>

#include "pool_model/slots.hpp"

namespace poolsim {

namespace {

using std::chrono::milliseconds;

[[noreturn]] void broken(const std::string& what) { throw std::logic_error("HikariCore: " + what); }

std::string ms(Duration d) { return format_duration(d); }

constexpr Duration kFirstBackoff = std::chrono::milliseconds(10);  // H3
constexpr Duration kMaxBackoff = std::chrono::seconds(5);
constexpr Duration kRestAfterAdd = std::chrono::milliseconds(30);
constexpr Duration kFirstHousekeeping = std::chrono::milliseconds(100);  // H1

// The first of next, next + period, next + 2 period, ... that is not before now.
Instant next_turn(Instant next, Duration period, Instant now) {
  if (next >= now) return next;
  const auto behind = (now - next).count();
  const auto turns = (behind + period.count() - 1) / period.count();
  return saturating_add(next, Duration(turns * period.count()));
}

}  // namespace

// HikariConfig's setters throw, and validateNumerics() replaces, what is refused here.
std::optional<std::string> validate(const HikariConfig& c) {
  using std::chrono::seconds;
  if (c.maximum_pool_size < 1) {
    return "hikari.maximum_pool_size = " + std::to_string(c.maximum_pool_size) +
           ": must be a whole number >= 1";
  }
  if (c.minimum_idle < 0 || c.minimum_idle > c.maximum_pool_size) {
    return "hikari.minimum_idle = " + std::to_string(c.minimum_idle) +
           ": must be from 0 to hikari.maximum_pool_size (" +
           std::to_string(c.maximum_pool_size) + "); HikariCP would use maximum_pool_size";
  }
  if (c.connection_timeout.count() != 0 && c.connection_timeout < milliseconds(250)) {
    return "hikari.connection_timeout = " + ms(c.connection_timeout) +
           ": must be 0 (wait forever) or at least 250ms (HikariCP would use 30s)";
  }
  if (c.max_lifetime.count() < 0 ||
      (c.max_lifetime.count() != 0 && c.max_lifetime < seconds(30))) {
    return "hikari.max_lifetime = " + ms(c.max_lifetime) +
           ": must be 0 (no limit) or at least 30s (HikariCP would use 30min)";
  }
  if (c.keepalive_time.count() < 0 ||
      (c.keepalive_time.count() != 0 &&
       (c.keepalive_time < seconds(30) ||
        (c.max_lifetime.count() != 0 && c.keepalive_time >= c.max_lifetime)))) {
    return "hikari.keepalive_time = " + ms(c.keepalive_time) +
           ": must be 0 (off) or from 30s to below hikari.max_lifetime; HikariCP would turn "
           "it off";
  }
  if (c.idle_timeout.count() < 0) {
    return "hikari.idle_timeout = " + ms(c.idle_timeout) + ": must be 0 (never) or positive";
  }
  // The idle timeout only matters (and is only adjusted) for a pool that may shrink.
  if (c.minimum_idle < c.maximum_pool_size && c.idle_timeout.count() != 0) {
    if (c.max_lifetime.count() != 0 && c.idle_timeout + seconds(1) > c.max_lifetime) {
      return "hikari.idle_timeout = " + ms(c.idle_timeout) +
             ": must be at least 1s below hikari.max_lifetime (" + ms(c.max_lifetime) +
             "), or 0; HikariCP would turn it off";
    }
    if (c.idle_timeout < seconds(10)) {
      return "hikari.idle_timeout = " + ms(c.idle_timeout) +
             ": must be 0 (never) or at least 10s (HikariCP would use 10min)";
    }
  }
  if (c.alive_bypass_window.count() < 0 || c.housekeeping_period.count() <= 0) {
    return "hikari: alive_bypass_window must be >= 0 and housekeeping_period > 0";
  }
  return std::nullopt;
}

HikariCore::HikariCore(const HikariConfig& config) : config_(config), rng_(config.seed) {
  if (auto problem = validate(config)) throw std::invalid_argument(*problem);
  // setConnectionTimeout(0) stores Integer.MAX_VALUE milliseconds.
  if (config_.connection_timeout.count() == 0) config_.connection_timeout = milliseconds(2147483647);
}

void HikariCore::start(Instant now) {
  if (started_) broken("started twice");
  started_ = true;
  now_ = now;
  schedule(saturating_add(now, kFirstHousekeeping), TimerKind::kHousekeeper, 0, 0);
  ++queued_tasks_;  // H1: checkFailFast's connection
  run_adder();
}

void HikariCore::handle(Instant now, const Event& event) {
  if (!started_) broken("an input before start()");
  if (now < now_) broken("time went backwards");
  now_ = now;
  wake_housekeeper();
  std::visit([this](const auto& e) { on(e); }, event);
}

void HikariCore::handle_timeout(Instant now) {
  if (!started_) broken("an input before start()");
  if (now < now_) broken("time went backwards");
  now_ = now;
  while (!timers_.empty() && timers_.top().at <= now) {
    const Timer timer = timers_.top();
    timers_.pop();
    if (timer.kind != TimerKind::kHousekeeper) wake_housekeeper();
    fire(timer);
  }
}

HikariStatus HikariCore::status() const {
  HikariStatus s;
  s.total = total_;
  s.idle = static_cast<int>(idle_.size());
  s.waiting = waiting_;
  for (const Slot& slot : slots_) {
    if (slot.state == State::kValidating || slot.state == State::kInUse ||
        slot.state == State::kResetting) {
      ++s.active;
    }
  }
  return s;
}

// ---- inputs ---------------------------------------------------------------------------------

void HikariCore::on(const CheckoutRequested& e) {
  const auto key = static_cast<std::uint64_t>(e.request);
  if (borrows_.count(key) != 0) broken("a request asked twice");
  borrows_[key] = Borrow{saturating_add(now_, config_.connection_timeout), false};
  borrow(e.request);
}

void HikariCore::on(const ConnectSucceeded& e) {
  if (adder_ != Adder::kConnecting || e.slot != creating_) broken("a connect nobody started");
  Slot& slot = slot_in(e.slot, State::kCreating, "ConnectSucceeded");
  adder_ = Adder::kIdle;
  slot.conn = e.conn;
  slot.order = next_order_++;
  slot.last_accessed = now_;
  slot.evicted = false;
  ++total_;
  if (config_.max_lifetime.count() > 0) {  // H8
    const Duration variance = config_.max_lifetime > std::chrono::seconds(10)
                                  ? jitter(config_.max_lifetime, 40)
                                  : Duration{};
    schedule(saturating_add(now_, config_.max_lifetime - variance), TimerKind::kLifetime,
             static_cast<std::uint64_t>(e.slot), slot.life);
  }
  slot.keepalive_dormant = false;
  if (config_.keepalive_time.count() > 0) {
    slot.heartbeat = config_.keepalive_time - jitter(config_.keepalive_time, 10);
    schedule_keepalive(e.slot);
  }
  make_available(e.slot);  // H4
  // H3: the task is done; the adder sleeps before it takes the next one.
  adder_ = Adder::kResting;
  schedule(saturating_add(now_, kRestAfterAdd), TimerKind::kBackoff, 0, ++backoff_gen_);
}

void HikariCore::on(const ConnectFailed& e) {
  if (adder_ != Adder::kConnecting || e.slot != creating_) broken("a connect nobody started");
  slot_in(e.slot, State::kCreating, "ConnectFailed");
  slots_[static_cast<std::size_t>(e.slot)].state = State::kFree;
  free_slots_.push_back(e.slot);
  // H3: sleep, then the same task tries again (if it still should).
  adder_ = Adder::kBackingOff;
  schedule(saturating_add(now_, backoff_), TimerKind::kBackoff, 0, ++backoff_gen_);
  backoff_ = std::min(backoff_ * 2, Duration(kMaxBackoff));
}

void HikariCore::on(const PingResult& e) {
  const auto index = static_cast<std::size_t>(e.slot);
  if (index >= slots_.size()) broken("PingResult for an unknown slot");
  Slot& slot = slots_[index];
  const bool alive = e.outcome == PingOutcome::kOk;
  if (slot.state == State::kReserved) {  // H9: a keepalive
    if (alive) {
      make_available(e.slot);
    } else {
      close_entry(e.slot);
      add_bag_item(waiting_);
    }
    return;
  }
  slot_in(e.slot, State::kValidating, "PingResult");
  const RequestId request = slot.request;
  if (alive) {
    grant(e.slot);
    return;
  }
  close_entry(e.slot);  // H5: dead at borrow
  retry(request);
}

void HikariCore::on(const Returned& e) {
  Slot& slot = slot_in(e.slot, State::kInUse, "Returned");
  if (config_.reset_on_return == ResetOnReturn::kNone) {
    recycle(e.slot, slot.granted_at);  // H6: autocommit, its statement's start
    return;
  }
  slot.state = State::kResetting;
  emit(Reset{e.slot, slot.conn,
             config_.reset_on_return == ResetOnReturn::kCommit ? ResetKind::kCommit
                                                               : ResetKind::kRollback});
}

void HikariCore::on(const ResetDone& e) {
  if (!e.slot) broken("ResetDone without a slot: HikariCP detaches nothing");
  slot_in(*e.slot, State::kResetting, "ResetDone");
  if (e.outcome == ResetOutcome::kOk) {
    recycle(*e.slot, now_);  // H6: the rollback's time
  } else {
    close_entry(*e.slot);  // the rollback failed: the connection is broken (H11)
  }
}

void HikariCore::on(const Invalidated& e) {
  slot_in(e.slot, State::kInUse, "Invalidated");
  if (e.kind == Invalidation::kSoft) {
    slots_[static_cast<std::size_t>(e.slot)].evicted = true;  // closed when returned (H6)
  } else {
    close_entry(e.slot);
  }
}

void HikariCore::on(const DisconnectDetected& e) {
  slot_in(e.slot, State::kInUse, "DisconnectDetected");
  close_entry(e.slot);  // H11: that connection alone
}

void HikariCore::on(const Detached&) { broken("HikariCP has no detach()"); }
void HikariCore::on(const DetachedReturned&) { broken("HikariCP has no detach()"); }
void HikariCore::on(const PoolInvalidated&) {
  broken("HikariCP has no pool-wide invalidation (a broken connection is evicted alone)");
}

void HikariCore::on(const Disposed&) {  // H11: softEvictConnections()
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    const State state = slots_[i].state;
    if (state != State::kFree && state != State::kCreating) soft_evict(SlotId{static_cast<std::uint32_t>(i)});
  }
}

void HikariCore::on(const WaitExpired& e) {
  auto found = borrows_.find(static_cast<std::uint64_t>(e.request));
  if (found == borrows_.end() || !found->second.waiting || found->second.deadline > now_) return;
  found->second.waiting = false;
  --waiting_;
  borrows_.erase(found);
  emit(Fail{e.request, Failure::kTimeout, 0, 0});
}

void HikariCore::fire(const Timer& timer) {
  switch (timer.kind) {
    case TimerKind::kWait: on(WaitExpired{RequestId{timer.id}}); return;
    case TimerKind::kHousekeeper:
      housekeep();
      if (housekeeping_has_nothing_to_do()) {
        housekeeper_dormant_ = true;  // until the next input: wake_housekeeper()
        housekeeper_next_ = saturating_add(now_, config_.housekeeping_period);
      } else {
        schedule(saturating_add(now_, config_.housekeeping_period), TimerKind::kHousekeeper, 0,
                 0);
      }
      return;
    case TimerKind::kLifetime: {  // H8
      const SlotId id{static_cast<std::uint32_t>(timer.id)};
      const Slot& slot = slots_[static_cast<std::size_t>(timer.id)];
      if (slot.life != timer.gen || slot.state == State::kFree || slot.state == State::kCreating) {
        return;
      }
      if (slot.state == State::kIdle) {
        close_entry(id);
        add_bag_item(waiting_);
      } else {
        slots_[static_cast<std::size_t>(timer.id)].evicted = true;
      }
      return;
    }
    case TimerKind::kKeepalive: {  // H9
      const SlotId id{static_cast<std::uint32_t>(timer.id)};
      Slot& slot = slots_[static_cast<std::size_t>(timer.id)];
      if (slot.life != timer.gen || slot.state == State::kFree || slot.state == State::kCreating) {
        return;
      }
      if (slot.state != State::kIdle) {  // skips this turn; make_available() wakes it
        slot.keepalive_dormant = true;
        slot.keepalive_next = saturating_add(now_, slot.heartbeat);
        return;
      }
      schedule_keepalive(id);
      idle_.erase({slot.order, id});
      slot.state = State::kReserved;
      emit(Ping{id, slot.conn, std::nullopt});
      return;
    }
    case TimerKind::kBackoff: {
      if (timer.gen != backoff_gen_) return;
      const bool retry = adder_ == Adder::kBackingOff;
      adder_ = Adder::kIdle;
      if (retry && should_create()) {
        start_connect();  // the same task again
      } else {
        run_adder();
      }
      return;
    }
  }
}

// ---- HikariPool / ConcurrentBag steps ---------------------------------------------------------

void HikariCore::borrow(RequestId request) {  // H2
  if (!idle_.empty()) {
    const SlotId slot = idle_.begin()->second;
    idle_.erase(idle_.begin());
    acquire(slot, request);
    return;
  }
  Borrow& b = borrows_.at(static_cast<std::uint64_t>(request));
  b.waiting = true;
  ++waiting_;
  waiters_.push_back(request);
  schedule(b.deadline, TimerKind::kWait, static_cast<std::uint64_t>(request), 0);
  add_bag_item(waiting_);
}

void HikariCore::acquire(SlotId id, RequestId request) {  // H5
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  slot.request = request;
  if (slot.evicted) {
    slot.state = State::kInUse;  // borrowed, then closed by the borrower
    close_entry(id);
    retry(request);
    return;
  }
  if (now_ - slot.last_accessed > config_.alive_bypass_window) {
    slot.state = State::kValidating;
    emit(Ping{id, slot.conn, request});
    return;
  }
  slot.state = State::kValidating;
  grant(id);
}

void HikariCore::retry(RequestId request) {  // H5: the same deadline
  const auto found = borrows_.find(static_cast<std::uint64_t>(request));
  if (found == borrows_.end()) broken("retry of an unknown request");
  if (found->second.deadline <= now_) {
    borrows_.erase(found);
    emit(Fail{request, Failure::kTimeout, 0, 0});
    return;
  }
  borrow(request);
}

void HikariCore::grant(SlotId id) {
  Slot& slot = slot_in(id, State::kValidating, "grant");
  slot.state = State::kInUse;
  slot.granted_at = now_;
  borrows_.erase(static_cast<std::uint64_t>(slot.request));
  emit(Grant{slot.request, id, slot.conn});
}

// H6: evicted or not (H5 closes it at its next borrow).
void HikariCore::recycle(SlotId id, Instant last_access) {
  slots_[static_cast<std::size_t>(id)].last_accessed = last_access;
  make_available(id);
}

// Into the bag: to the oldest waiter if one waits (ConcurrentBag.add/requite/unreserve).
void HikariCore::make_available(SlotId id) {
  if (std::optional<RequestId> waiter = oldest_waiter()) {
    acquire(id, *waiter);
    return;
  }
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  slot.state = State::kIdle;
  idle_.insert({slot.order, id});
  if (slot.keepalive_dormant) {  // the turns it was in use did nothing; its next one
    slot.keepalive_dormant = false;
    schedule(next_turn(slot.keepalive_next, slot.heartbeat, now_), TimerKind::kKeepalive,
             static_cast<std::uint64_t>(id), slot.life);
  }
}

std::optional<RequestId> HikariCore::oldest_waiter() {
  while (!waiters_.empty()) {
    const RequestId request = waiters_.front();
    waiters_.pop_front();
    auto found = borrows_.find(static_cast<std::uint64_t>(request));
    if (found != borrows_.end() && found->second.waiting) {
      found->second.waiting = false;
      --waiting_;
      return request;
    }
  }
  return std::nullopt;
}

void HikariCore::close_entry(SlotId id) {  // H7
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  if (slot.state == State::kIdle) idle_.erase({slot.order, id});
  emit(CloseConnection{slot.conn, CloseKind::kClose, std::nullopt});
  slot.state = State::kFree;
  slot.evicted = false;
  ++slot.life;
  free_slots_.push_back(id);
  --total_;
  fill_pool();
}

void HikariCore::soft_evict(SlotId id) {
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  if (slot.state == State::kIdle) {
    close_entry(id);
  } else {
    slot.evicted = true;
  }
}

void HikariCore::add_bag_item(int waiting) {  // H3
  if (waiting > queued_tasks_ && queued_tasks_ < config_.maximum_pool_size) {
    ++queued_tasks_;
    run_adder();
  }
}

void HikariCore::fill_pool() {  // H7
  const int idle = static_cast<int>(idle_.size());
  if (total_ >= config_.maximum_pool_size || idle >= config_.minimum_idle) return;
  queued_tasks_ = std::min(queued_tasks_ + config_.minimum_idle - idle, config_.maximum_pool_size);
  run_adder();
}

void HikariCore::run_adder() {  // H3: one task at a time; a task not needed ends at once
  while (adder_ == Adder::kIdle && queued_tasks_ > 0) {
    --queued_tasks_;
    if (should_create()) {
      backoff_ = kFirstBackoff;
      start_connect();
    }
  }
}

bool HikariCore::should_create() const {
  const int idle = static_cast<int>(idle_.size());
  return total_ < config_.maximum_pool_size && (idle < config_.minimum_idle || waiting_ > idle);
}

void HikariCore::start_connect() {
  const SlotId id = alloc_slot();
  slots_[static_cast<std::size_t>(id)].state = State::kCreating;
  creating_ = id;
  adder_ = Adder::kConnecting;
  emit(OpenConnection{id, std::nullopt});
}

void HikariCore::housekeep() {  // H10
  if (config_.idle_timeout.count() > 0 && config_.minimum_idle < config_.maximum_pool_size) {
    int to_remove = static_cast<int>(idle_.size()) - config_.minimum_idle;
    std::vector<SlotId> retire;
    for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {  // newest first
      const SlotId id = it->second;
      if (to_remove <= 0) break;
      if (now_ - slots_[static_cast<std::size_t>(id)].last_accessed > config_.idle_timeout) {
        retire.push_back(id);
        --to_remove;
      }
    }
    for (SlotId id : retire) close_entry(id);
  }
  fill_pool();
}

// A run changes nothing when no idle connection can be retired (at most minimum_idle are
// idle) and fillPool would add nothing: the pool is full enough, or the adder's queue is full
// already (it holds maximumPoolSize tasks; DiscardOldestPolicy swaps a task for an identical
// one). Then only an input can give it something to do.
bool HikariCore::housekeeping_has_nothing_to_do() const {
  const auto idle = static_cast<int>(idle_.size());
  const bool retires = config_.idle_timeout.count() > 0 &&
                       config_.minimum_idle < config_.maximum_pool_size &&
                       idle > config_.minimum_idle;
  const bool fills = total_ < config_.maximum_pool_size && idle < config_.minimum_idle &&
                     queued_tasks_ < config_.maximum_pool_size;
  return !retires && !fills;
}

void HikariCore::wake_housekeeper() {
  if (!housekeeper_dormant_) return;
  housekeeper_dormant_ = false;
  schedule(next_turn(housekeeper_next_, config_.housekeeping_period, now_),
           TimerKind::kHousekeeper, 0, 0);
}

void HikariCore::schedule_keepalive(SlotId id) {  // H9: a fixed delay, drawn once per connection
  const Slot& slot = slots_[static_cast<std::size_t>(id)];
  schedule(saturating_add(now_, slot.heartbeat), TimerKind::kKeepalive,
           static_cast<std::uint64_t>(id), slot.life);
}

// ---- bookkeeping ------------------------------------------------------------------------------

// A uniform draw in [0, base / divisor) (ThreadLocalRandom.nextLong(bound)), from SplitMix64.
Duration HikariCore::jitter(Duration base, std::int64_t divisor) {
  const auto bound = static_cast<std::uint64_t>(base.count() / divisor);
  if (bound == 0) return Duration{};
  rng_ += 0x9E3779B97F4A7C15ULL;
  std::uint64_t z = rng_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return Duration(static_cast<std::int64_t>(z % bound));
}

HikariCore::Slot& HikariCore::slot_in(SlotId id, State expected, const char* event) {
  if (Slot* slot = find_slot(slots_, id, expected)) return *slot;
  broken(not_in_state(event, id));
}

SlotId HikariCore::alloc_slot() { return take_free_slot(slots_, free_slots_); }

void HikariCore::check_invariants() const {
  int total = 0;
  int creating = 0;
  std::size_t idle = 0;
  for (const Slot& slot : slots_) {
    switch (slot.state) {
      case State::kFree: break;
      case State::kCreating: ++creating; break;
      case State::kIdle: ++idle; [[fallthrough]];
      default: ++total;
    }
  }
  if (total != total_) broken("the total is not the number of connections in the pool");
  if (idle != idle_.size()) broken("the idle set is not the idle connections");
  if (total_ > config_.maximum_pool_size) broken("more connections than maximum_pool_size");
  if (creating != (adder_ == Adder::kConnecting ? 1 : 0)) broken("connects and adder disagree");
  if (queued_tasks_ < 0 || queued_tasks_ > config_.maximum_pool_size) broken("adder queue size");
  int waiting = 0;
  for (const auto& [request, b] : borrows_) waiting += b.waiting ? 1 : 0;
  if (waiting != waiting_) broken("the waiter count is not the waiting requests");
  if (waiting_ > 0 && !idle_.empty()) broken("a request waits while a connection is idle");
}

}  // namespace poolsim
