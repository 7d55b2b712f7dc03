// psycopg_pool's ConnectionPool (pool.policy = psycopg) as a state machine.
//
// RULES, from psycopg_pool 3.1.5's source (what Debian 12's python3-psycopg-pool 3.1.7
// contains: its version.py says 3.1.5; pool.py "P", base.py "B", sched.py "S") and its
// documentation. Where 3.2 or later (the upstream pool_async.py, from which pool.py is generated)
// differs, it says so. poolsim has no threads: a worker's task runs when a worker is free, a
// client's wait is a timer, and a ShrinkPool run takes no model time.
//
//  S1 Settings (B BasePool.__init__, _check_size): max_size None means min_size.
//     ValueError for min_size < 0, max_size < min_size, min_size = max_size = 0, num_workers
//     < 1. psycopg_pool accepts the rest; validate() also refuses negative durations and
//     max_waiting, and max_idle below 1 s (ShrinkPool runs every max_idle even in an idle
//     pool: at 0 a busy loop, at 1 ns 10^9 runs a second).
//  S2 Open (P _open, _start_initial_tasks, worker, run_task; S Scheduler):
//     _nconns = min_size from the start, before any connection exists; min_size
//     AddConnection tasks go into the one FIFO task queue, and ShrinkPool is scheduled
//     max_idle later. num_workers workers take tasks in order and a connect holds its worker
//     until it ends, so at most num_workers connects are in flight (initial fill,
//     replacements, retries alike). A scheduled task (retry, ShrinkPool) joins the queue when
//     it comes due (MaintenanceTask.tick). Timers due at the same instant run first in, first
//     out (the scheduler's heap leaves that order open).
//  S3 getconn (P getconn, _get_ready_connection): an idle connection is taken
//     from the left of the deque (the one idle longest: returns append on the right), and
//     _nconns_min = min(_nconns_min, len(_pool)) after the pop. Else, when max_waiting > 0 and
//     len(_waiting) >= max_waiting, TooManyRequests at once (Fail kTooManyRequests,
//     requests_errors += 1, no growth). Else the client appends a WaitingClient,
//     requests_queued += 1, _maybe_grow_pool() (S5), and waits `timeout`; then PoolTimeout
//     (Fail kTimeout at exactly getconn + timeout; requests_errors += 1). The timeout only
//     bounds a wait: timeout 0 still gets an idle connection (3.2.1+ fails it, S12).
//  S4 Waiters (P _add_to_pool, WaitingClient.set): served first come, first
//     served; a connection added while someone waits goes to that waiter and never into the
//     deque. A waiter that timed out stays in _waiting (stale) until _add_to_pool pops it, so
//     it counts in requests_waiting, in the max_waiting test and in S6's growth test. A
//     connection finding only stale waiters drains them and goes into the deque. (Same in
//     3.2+.)
//  S5 Growth (P _maybe_grow_pool): only when a client queues: if _nconns < max_size and
//     not _growing, _nconns += 1, _growing = True and one AddConnection(growing) is queued.
//     One growth connect at a time, whatever num_workers is.
//  S6 A connect that succeeds (P _add_connection): the connection goes through
//     _add_to_pool (S4). If it was a growth connect: while _nconns < min_size, or _nconns <
//     max_size and _waiting is not empty (stale entries included), _nconns += 1 and the next
//     growth connect is queued; else _growing = False. Each connection's expiry is set when
//     its connect ends (B _set_connection_expiry_date): now + max_lifetime x
//     _jitter(1, -0.05, 0) = max_lifetime x [0.95, 1.0). (The API docs say "reduced by a
//     random 10%" and the issue that added it ±5%; the code's 0.95 + 0.05 random() is
//     followed.) The jitter is drawn from a SplitMix64 seeded by config.seed.
//  S7 putconn (P putconn, _return_connection, _reset_connection): with no reset=
//     callback (poolsim has none) it runs in the caller's thread, not on a worker. A
//     connection returned in a transaction (INTRANS/INERROR) is rolled back (a Reset
//     kRollback; reset_on_return = none stands for one returned IDLE); a failed rollback
//     closes it. A connection then closed or broken (UNKNOWN) is not put back: returns_bad +=
//     1 and an AddConnection is queued for a replacement, _nconns unchanged. An expired one
//     (expire_at <= now, after the rollback) is replaced the same way, the AddConnection
//     queued before the close. Otherwise _add_to_pool (S4). DisconnectDetected and
//     Invalidated (hard or soft) are a broken return: closed and replaced, no rollback.
//  S8 max_lifetime is only looked at on return: an idle connection past its expiry is
//     still given out, and one never borrowed never expires. (3.2+'s check() and 3.3's
//     drain() close expired idle connections too; neither is modelled.)
//  S9 ShrinkPool (P ShrinkPool._run, _shrink_pool): the worker that runs it first
//     schedules the next run max_idle after its own run time (the period drifts by the
//     queue's delay), then: nconns_min = _nconns_min; _nconns_min = len(_pool); if _nconns >
//     min_size and nconns_min > 0, the connection at the left of the deque (idle longest) is
//     closed, _nconns -= 1, _nconns_min -= 1. At most one connection per max_idle, chosen by
//     "the deque never emptied during the last period", not by idle time; _nconns_min starts
//     at min_size. With an empty deque 3.1 raises IndexError (logged; the run was already
//     rescheduled) and 3.2+ tests for it: either way nothing is closed.
//  S10 A connect that fails (P _add_connection; B ConnectionAttempt): with
//     `now` taken before the connect started, if the attempt has a give-up time and now >=
//     give_up_at it gives up: _nconns -= 1, a growth attempt clears _growing (reconnect_failed
//     is a no-op), and nothing restarts it (a later waiter's growth does, S5-S6). Otherwise
//     update_delay(now): the first time give_up_at = now + reconnect_timeout and delay = 1 s x
//     [0.9, 1.1) (jitter drawn once per attempt), later delay x 2; then delay = min(delay,
//     give_up_at - now), never negative. The retry joins the queue delay after the failure
//     (Scheduler.enter measures from its call). With instant failures: tries at 0, d, 3d, 7d,
//     ... 255d, then one at give_up_at, after which the attempt gives up. A growth attempt
//     keeps _growing the whole time, blocking other growth.
//  S11 No check on checkout in 3.1: a connection the server dropped is given out.
//  S12 check = true: 3.2's check=ConnectionPool.check_connection (pool.py 3.2.1+
//     getconn, _getconn_with_check_loop, _check_connection, _return_connection(from_getconn);
//     base.py AttemptWithBackoff). deadline = getconn + timeout, and every try
//     first fails with PoolTimeout when no time is left (3.2.1+: even with a connection
//     idle). Each try gets a connection as in S3 (a wait ends at the deadline), then checks it
//     in the client (Ping{slot, conn, request}), whether it came from the deque or was handed
//     to it while waiting. Ok: given. A dead one (kDisconnect: UNKNOWN) is closed,
//     connections_lost += 1, a replacement queued; one whose check only raised (kError: still
//     IDLE) goes back through the return path (expiry, _add_to_pool). Then the client tries
//     again: after its first failed check at once, after later ones with
//     AttemptWithBackoff(timeout = deadline - time of the first failure): 1 s x [0.9, 1.1),
//     doubling, clamped to its give-up time, and PoolTimeout when a failure comes at or after
//     it. 3.2.0 had the loop without the pauses and without the no-time-left rule.
// S13 get_stats(): pool_size = _nconns, pool_available = len(_pool), requests_waiting
//     = len(_waiting), and the counters poolsim can keep (PsycopgStatus).
// Not modelled: close() and PoolClosed, wait(), resize(), check(), the configure=, reset= and
// reconnect_failed= callbacks, a connection returned ACTIVE. SQLAlchemy's detach(), pool-wide
// invalidation and dispose() have no psycopg_pool counterpart: Detached, DetachedReturned,
// PoolInvalidated and Disposed are refused with std::logic_error.
#include "pool_model/psycopg_core.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <variant>

#include "pool_model/slots.hpp"

namespace poolsim {

namespace {

[[noreturn]] void broken(const std::string& what) {
  throw std::logic_error("PsycopgCore: " + what);
}

constexpr Duration kInitialDelay = std::chrono::milliseconds(900);  // 1 s - 10% (S10)
constexpr Duration kDelayJitter = std::chrono::milliseconds(200);   // ... + [0, 20%)

// to - from, or the farthest duration there is when that lies beyond the int64 range.
Duration until(Instant from, Instant to) {
  std::int64_t d = 0;
  if (__builtin_sub_overflow(to.time_since_epoch().count(), from.time_since_epoch().count(), &d)) {
    return to > from ? Duration::max() : Duration::min();
  }
  return Duration(d);
}

Duration doubled(Duration d) {
  return d > Duration::max() / 2 ? Duration::max() : d * 2;
}

}  // namespace

// _check_size and BasePool.__init__ raise ValueError for the first four; the others are
// poolsim's (see S1).
std::optional<std::string> validate(const PsycopgConfig& c) {
  const int max_size = c.max_size.value_or(c.min_size);
  if (c.min_size < 0) {
    return "psycopg.min_size = " + std::to_string(c.min_size) + ": must be a whole number >= 0";
  }
  if (max_size < c.min_size) {
    return "psycopg.max_size = " + std::to_string(max_size) +
           ": must be at least psycopg.min_size (" + std::to_string(c.min_size) + ")";
  }
  if (max_size == 0) {
    return "psycopg.max_size = 0: with psycopg.min_size 0, max_size must be at least 1";
  }
  if (c.num_workers < 1) {
    return "psycopg.num_workers = " + std::to_string(c.num_workers) + ": must be at least 1";
  }
  if (c.max_waiting < 0) {
    return "psycopg.max_waiting = " + std::to_string(c.max_waiting) +
           ": must be 0 (no limit) or a whole number >= 1";
  }
  if (c.timeout.count() < 0) {
    return "psycopg.timeout = " + format_duration(c.timeout) + ": must be >= 0";
  }
  if (c.max_lifetime.count() < 0) {
    return "psycopg.max_lifetime = " + format_duration(c.max_lifetime) +
           ": must be >= 0 (0: every returned connection is replaced)";
  }
  if (c.max_idle < std::chrono::seconds(1)) {
    return "psycopg.max_idle = " + format_duration(c.max_idle) +
           ": must be at least 1s (ShrinkPool runs once per max_idle, idle or not; "
           "psycopg_pool's default is 10min)";
  }
  if (c.reconnect_timeout.count() < 0) {
    return "psycopg.reconnect_timeout = " + format_duration(c.reconnect_timeout) +
           ": must be >= 0";
  }
  if (c.reset_on_return == ResetOnReturn::kCommit) {
    return "pool.reset_on_return = commit: psycopg_pool rolls back a connection returned in "
           "a transaction and never commits it (pool.policy = psycopg); allowed: rollback, none";
  }
  return std::nullopt;
}

PsycopgCore::PsycopgCore(const PsycopgConfig& config) : config_(config), rng_(config.seed) {
  if (auto problem = validate(config)) throw std::invalid_argument(*problem);
  max_size_ = config_.max_size.value_or(config_.min_size);
  nconns_ = config_.min_size;  // S2: counted before any connection exists
  nconns_min_ = config_.min_size;
  counters_.pool_min = config_.min_size;
  counters_.pool_max = max_size_;
}

void PsycopgCore::start(Instant now) {
  if (started_) broken("started twice");
  started_ = true;
  now_ = now;
  for (int i = 0; i < config_.min_size; ++i) add_connection_task(false);  // S2
  schedule(saturating_add(now, config_.max_idle), TimerKind::kShrink, 0, 0);
  run_workers();
}

void PsycopgCore::handle(Instant now, const Event& event) {
  if (!started_) broken("an input before start()");
  if (now < now_) broken("time went backwards");
  now_ = now;
  std::visit([this](const auto& e) { on(e); }, event);
}

void PsycopgCore::handle_timeout(Instant now) {
  if (!started_) broken("an input before start()");
  if (now < now_) broken("time went backwards");
  now_ = now;
  while (!timers_.empty() && timers_.top().at <= now) {
    const Timer timer = timers_.top();
    timers_.pop();
    fire(timer);
  }
}

PsycopgStatus PsycopgCore::status() const {
  PsycopgStatus s = counters_;
  s.pool_size = nconns_;
  s.pool_available = static_cast<int>(pool_.size());
  s.requests_waiting = static_cast<int>(waiting_.size());
  s.connecting = connecting_;
  s.tasks_queued = static_cast<int>(tasks_.size());
  s.growing = growing_;
  for (const Slot& slot : slots_) {
    if (slot.state == State::kChecking || slot.state == State::kInUse ||
        slot.state == State::kResetting) {
      ++s.lent;
    }
  }
  return s;
}

bool PsycopgCore::clients_wait_on_timers() const {
  return std::any_of(requests_.begin(), requests_.end(), [](const auto& entry) {
    return entry.second.phase != Request::Phase::kChecking;
  });
}

// ---- inputs ---------------------------------------------------------------------------------

void PsycopgCore::on(const CheckoutRequested& e) {  // S3, S12
  const auto key = static_cast<std::uint64_t>(e.request);
  if (requests_.count(key) != 0) broken("a request asked twice");
  ++counters_.requests_num;
  Request& r = requests_[key];
  r.deadline = saturating_add(now_, config_.timeout);
  get_connection(e.request);
}

void PsycopgCore::on(const ConnectSucceeded& e) {  // S6
  Slot& slot = slot_in(e.slot, State::kConnecting, "ConnectSucceeded");
  const auto found = attempts_.find(slot.attempt);
  if (found == attempts_.end()) broken("a connect nobody started");
  const bool growing = found->second.growing;
  attempts_.erase(found);
  --connecting_;
  slot.conn = e.conn;
  slot.attempt = 0;
  const std::int64_t life = config_.max_lifetime.count();
  const std::int64_t spread = life / 20;  // max_lifetime x [0.95, 1.0)
  slot.expire_at =
      saturating_add(now_, Duration(life - spread + static_cast<std::int64_t>(draw(
                                                        static_cast<std::uint64_t>(spread)))));
  add_to_pool(e.slot);
  if (growing) {
    if (nconns_ < config_.min_size || (nconns_ < max_size_ && !waiting_.empty())) {
      ++nconns_;
      add_connection_task(true);
    } else {
      growing_ = false;
    }
  }
  run_workers();  // this worker is free again
}

void PsycopgCore::on(const ConnectFailed& e) {  // S10
  slot_in(e.slot, State::kConnecting, "ConnectFailed");
  const std::uint64_t id = slots_[static_cast<std::size_t>(e.slot)].attempt;
  const auto found = attempts_.find(id);
  if (found == attempts_.end()) broken("a connect nobody started");
  Attempt& a = found->second;
  slots_[static_cast<std::size_t>(e.slot)] = Slot{};
  free_slots_.push_back(e.slot);
  --connecting_;
  ++counters_.connections_errors;
  const Backoff& b = a.backoff;
  if (b.started && a.try_start >= b.give_up_at) {  // time_to_give_up(now)
    --nconns_;
    if (a.growing && growing_) growing_ = false;
    attempts_.erase(found);
  } else {
    update_delay(a.backoff, a.try_start);
    a.phase = Attempt::Phase::kBackingOff;
    schedule(saturating_add(now_, a.backoff.delay), TimerKind::kRetry, id, 0);
  }
  run_workers();
}

void PsycopgCore::on(const PingResult& e) {  // S12
  Slot& slot = slot_in(e.slot, State::kChecking, "PingResult");
  const RequestId request = slot.request;
  if (e.outcome == PingOutcome::kOk) {
    grant(e.slot);
    return;
  }
  if (e.outcome == PingOutcome::kDisconnect) {
    ++counters_.connections_lost;
    close_slot(e.slot);
    add_connection_task(false);
    run_workers();
  } else {
    return_connection(e.slot);  // the check raised, the connection is still IDLE
  }
  check_failed(request);
}

void PsycopgCore::on(const Returned& e) {  // S7
  Slot& slot = slot_in(e.slot, State::kInUse, "Returned");
  if (config_.reset_on_return == ResetOnReturn::kNone) {
    return_connection(e.slot);
    return;
  }
  slot.state = State::kResetting;
  emit(Reset{e.slot, slot.conn, ResetKind::kRollback});
}

void PsycopgCore::on(const ResetDone& e) {  // S7
  if (!e.slot) broken("ResetDone without a slot: psycopg_pool detaches nothing");
  const Slot& slot = slot_in(*e.slot, State::kResetting, "ResetDone");
  if (slot.conn != e.conn) broken("ResetDone for another connection than the slot's");
  if (e.outcome == ResetOutcome::kOk) {
    return_connection(*e.slot);
  } else {
    discard_broken(*e.slot);  // the rollback failed: closed, so UNKNOWN
  }
}

void PsycopgCore::on(const Invalidated& e) {  // S7: a broken return
  slot_in(e.slot, State::kInUse, "Invalidated");
  discard_broken(e.slot);
}

void PsycopgCore::on(const DisconnectDetected& e) {  // S7
  slot_in(e.slot, State::kInUse, "DisconnectDetected");
  discard_broken(e.slot);
}

void PsycopgCore::on(const Detached&) { broken("Detached: psycopg_pool has no detach()"); }
void PsycopgCore::on(const DetachedReturned&) {
  broken("DetachedReturned: psycopg_pool has no detach()");
}
void PsycopgCore::on(const PoolInvalidated&) {
  broken("PoolInvalidated: psycopg_pool has no pool-wide invalidation (a broken connection is "
         "replaced alone)");
}
void PsycopgCore::on(const Disposed&) {
  broken("Disposed: psycopg_pool has no dispose() (close() ends the pool)");
}

void PsycopgCore::on(const WaitExpired& e) { wait_expired(e.request, std::nullopt); }

void PsycopgCore::fire(const Timer& timer) {
  switch (timer.kind) {
    case TimerKind::kWait: wait_expired(RequestId{timer.id}, timer.gen); return;
    case TimerKind::kShrink:  // S9: the scheduler hands it to the workers
      tasks_.push_back(Task{true, 0});
      run_workers();
      return;
    case TimerKind::kRetry: {  // S10
      auto found = attempts_.find(timer.id);
      if (found == attempts_.end() || found->second.phase != Attempt::Phase::kBackingOff) {
        broken("a retry for no attempt backing off");
      }
      found->second.phase = Attempt::Phase::kQueued;
      tasks_.push_back(Task{false, timer.id});
      run_workers();
      return;
    }
    case TimerKind::kSleep: {  // S12: the pause between checks is over
      auto found = requests_.find(timer.id);
      if (found == requests_.end() || found->second.phase != Request::Phase::kSleeping ||
          found->second.gen != timer.gen) {
        return;
      }
      get_connection(RequestId{timer.id});
      return;
    }
  }
}

// ---- getconn ------------------------------------------------------------------------------

// One try: _get_ready_connection, else the wait queue (S3; S12's no-time-left rule first).
void PsycopgCore::get_connection(RequestId request) {
  Request& r = requests_.at(static_cast<std::uint64_t>(request));
  if (config_.check && until(now_, r.deadline).count() <= 0) {
    fail(request, Failure::kTimeout);
    return;
  }
  if (!pool_.empty()) {
    const SlotId slot = pool_.front();
    pool_.pop_front();
    nconns_min_ = std::min(nconns_min_, static_cast<int>(pool_.size()));
    serve(slot, request);
    return;
  }
  if (config_.max_waiting > 0 && static_cast<int>(waiting_.size()) >= config_.max_waiting) {
    ++counters_.requests_errors;
    fail(request, Failure::kTooManyRequests);
    return;
  }
  r.phase = Request::Phase::kWaiting;
  r.waiter = ++next_waiter_;
  waiting_.push_back(Waiter{request, r.waiter});
  ++counters_.requests_queued;
  schedule(r.deadline, TimerKind::kWait, static_cast<std::uint64_t>(request), r.waiter);
  maybe_grow_pool();
}

// The client has a connection: checked first with check = true (S12).
void PsycopgCore::serve(SlotId id, RequestId request) {
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  slot.request = request;
  slot.state = State::kChecking;
  if (config_.check) {
    requests_.at(static_cast<std::uint64_t>(request)).phase = Request::Phase::kChecking;
    emit(Ping{id, slot.conn, request});
    return;
  }
  grant(id);
}

void PsycopgCore::grant(SlotId id) {
  Slot& slot = slot_in(id, State::kChecking, "grant");
  slot.state = State::kInUse;
  requests_.erase(static_cast<std::uint64_t>(slot.request));
  emit(Grant{slot.request, id, slot.conn});
}

void PsycopgCore::fail(RequestId request, Failure failure) {
  requests_.erase(static_cast<std::uint64_t>(request));
  emit(Fail{request, failure, 0, 0});
}

// WaitingClient.wait() timed out: PoolTimeout. Its entry stays in _waiting, stale (S4).
void PsycopgCore::wait_expired(RequestId request, std::optional<std::uint64_t> serial) {
  const auto found = requests_.find(static_cast<std::uint64_t>(request));
  if (found == requests_.end()) return;
  const Request& r = found->second;
  if (r.phase != Request::Phase::kWaiting || (serial && r.waiter != *serial) ||
      r.deadline > now_) {
    return;
  }
  ++counters_.requests_errors;
  fail(request, Failure::kTimeout);
}

// _getconn_with_check_loop after a failed check: at once the first time, then AttemptWithBackoff.
void PsycopgCore::check_failed(RequestId request) {
  Request& r = requests_.at(static_cast<std::uint64_t>(request));
  ++r.check_failures;
  if (r.check_failures == 1) {
    r.backoff = Backoff{};
    r.backoff.timeout = until(now_, r.deadline);
    get_connection(request);  // time_to_give_up is false, asleep(0)
    return;
  }
  update_delay(r.backoff, now_);
  if (r.backoff.started && now_ >= r.backoff.give_up_at) {
    fail(request, Failure::kTimeout);
    return;
  }
  r.phase = Request::Phase::kSleeping;
  ++r.gen;
  schedule(saturating_add(now_, r.backoff.delay), TimerKind::kSleep,
           static_cast<std::uint64_t>(request), r.gen);
}

// ---- putconn and the pool's own steps -------------------------------------------------------

// _return_connection after the reset, for a connection still working (S7).
void PsycopgCore::return_connection(SlotId id) {
  if (slots_[static_cast<std::size_t>(id)].expire_at <= now_) {
    add_connection_task(false);  // queued before the close
    run_workers();
    close_slot(id);
    return;
  }
  add_to_pool(id);
}

void PsycopgCore::discard_broken(SlotId id) {  // S7: UNKNOWN on return
  ++counters_.returns_bad;
  close_slot(id);
  add_connection_task(false);
  run_workers();
}

void PsycopgCore::add_to_pool(SlotId id) {  // S4
  while (!waiting_.empty()) {
    const Waiter w = waiting_.front();
    waiting_.pop_front();
    const auto found = requests_.find(static_cast<std::uint64_t>(w.request));
    if (found != requests_.end() && found->second.phase == Request::Phase::kWaiting &&
        found->second.waiter == w.serial) {
      found->second.waiter = 0;
      serve(id, w.request);
      return;
    }
  }
  slots_[static_cast<std::size_t>(id)].state = State::kIdle;
  pool_.push_back(id);
}

void PsycopgCore::maybe_grow_pool() {  // S5
  if (nconns_ >= max_size_ || growing_) return;
  ++nconns_;
  growing_ = true;
  add_connection_task(true);
  run_workers();
}

void PsycopgCore::add_connection_task(bool growing) {
  const std::uint64_t id = next_attempt_++;
  Attempt& a = attempts_[id];
  a.growing = growing;
  a.backoff.timeout = config_.reconnect_timeout;
  tasks_.push_back(Task{false, id});
}

// The workers take queued tasks while one is free (S2).
void PsycopgCore::run_workers() {
  while (connecting_ < config_.num_workers && !tasks_.empty()) {
    const Task task = tasks_.front();
    tasks_.pop_front();
    if (task.shrink) {
      shrink_pool();
    } else {
      start_connect(task.attempt);
    }
  }
}

void PsycopgCore::start_connect(std::uint64_t id) {
  Attempt& a = attempts_.at(id);
  const SlotId slot = alloc_slot();
  Slot& s = slots_[static_cast<std::size_t>(slot)];
  s.state = State::kConnecting;
  s.attempt = id;
  a.phase = Attempt::Phase::kConnecting;
  a.try_start = now_;
  a.slot = slot;
  ++connecting_;
  ++counters_.connections_num;
  emit(OpenConnection{slot, std::nullopt});
}

void PsycopgCore::shrink_pool() {  // S9
  schedule(saturating_add(now_, config_.max_idle), TimerKind::kShrink, 0, 0);
  const int nconns_min = nconns_min_;
  nconns_min_ = static_cast<int>(pool_.size());
  shrunk_once_ = true;
  if (nconns_ > config_.min_size && nconns_min > 0 && !pool_.empty()) {
    const SlotId id = pool_.front();
    pool_.pop_front();
    --nconns_;
    --nconns_min_;
    close_slot(id);
  }
}

void PsycopgCore::close_slot(SlotId id) {
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  emit(CloseConnection{slot.conn, CloseKind::kClose, std::nullopt});
  slot = Slot{};
  free_slots_.push_back(id);
}

// ConnectionAttempt.update_delay / AttemptWithBackoff.update_delay (S10, S12).
void PsycopgCore::update_delay(Backoff& b, Instant now) {
  if (!b.started) {
    b.started = true;
    b.give_up_at = saturating_add(now, b.timeout);
    b.delay = kInitialDelay + Duration(static_cast<std::int64_t>(
                                  draw(static_cast<std::uint64_t>(kDelayJitter.count()))));
  } else {
    b.delay = doubled(b.delay);
  }
  if (saturating_add(now, b.delay) > b.give_up_at) {
    b.delay = std::max(Duration{}, until(now, b.give_up_at));
  }
}

// ---- bookkeeping ------------------------------------------------------------------------------

// A uniform draw in [0, bound) (Python's random() scaled), from SplitMix64.
std::uint64_t PsycopgCore::draw(std::uint64_t bound) {
  if (bound == 0) return 0;
  rng_ += 0x9E3779B97F4A7C15ULL;
  std::uint64_t z = rng_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z % bound;
}

PsycopgCore::Slot& PsycopgCore::slot_in(SlotId id, State expected, const char* event) {
  if (Slot* slot = find_slot(slots_, id, expected)) return *slot;
  broken(not_in_state(event, id));
}

SlotId PsycopgCore::alloc_slot() { return take_free_slot(slots_, free_slots_); }

void PsycopgCore::check_invariants() const {
  int connections = 0;  // open connections: idle or lent out
  int connecting = 0;
  int idle = 0;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    const Slot& slot = slots_[i];
    switch (slot.state) {
      case State::kFree: break;
      case State::kConnecting: {
        ++connecting;
        const auto found = attempts_.find(slot.attempt);
        if (found == attempts_.end() || found->second.phase != Attempt::Phase::kConnecting ||
            static_cast<std::size_t>(found->second.slot) != i) {
          broken("a connecting slot without its attempt");
        }
        break;
      }
      case State::kIdle: ++idle; ++connections; break;
      case State::kChecking:
      case State::kInUse:
      case State::kResetting: {
        ++connections;
        const auto found = requests_.find(static_cast<std::uint64_t>(slot.request));
        if (slot.state == State::kChecking &&
            (found == requests_.end() || found->second.phase != Request::Phase::kChecking)) {
          broken("a connection checked for a request that is not checking");
        }
        if (slot.state != State::kChecking && found != requests_.end()) {
          broken("a connection given to a request still unanswered");
        }
        break;
      }
    }
  }
  if (idle != static_cast<int>(pool_.size())) broken("the idle deque is not the idle slots");
  for (std::size_t i = 0; i < pool_.size(); ++i) {
    if (slots_[static_cast<std::size_t>(pool_[i])].state != State::kIdle) {
      broken("a connection in the idle deque is not idle");
    }
  }
  // _nconns counts every connection and every AddConnection task (queued, connecting or
  // backing off): a replacement keeps the count, a give-up or a shrink lowers it.
  if (nconns_ != connections + static_cast<int>(attempts_.size())) {
    broken("pool_size is not the connections plus the connects to come");
  }
  if (nconns_ < 0 || nconns_ > max_size_) broken("pool_size outside 0..max_size");
  if (connecting != connecting_) broken("connecting slots and busy workers disagree");
  if (connecting_ > config_.num_workers) broken("more connects in flight than workers");
  if (connecting_ < config_.num_workers && !tasks_.empty()) {
    broken("a task waits while a worker is free");
  }
  int growing = 0;
  int queued = 0;
  int shrinks = 0;
  for (const auto& [id, a] : attempts_) {
    growing += a.growing ? 1 : 0;
    queued += a.phase == Attempt::Phase::kQueued ? 1 : 0;
  }
  for (std::size_t i = 0; i < tasks_.size(); ++i) {
    if (tasks_[i].shrink) {
      ++shrinks;
    } else if (attempts_.count(tasks_[i].attempt) == 0 ||
               attempts_.at(tasks_[i].attempt).phase != Attempt::Phase::kQueued) {
      broken("a queued AddConnection whose attempt is not queued");
    }
  }
  if (queued + shrinks != static_cast<int>(tasks_.size())) broken("the task queue lost a task");
  if (shrinks > 1) broken("ShrinkPool queued twice");
  if (growing != (growing_ ? 1 : 0)) broken("_growing and the growth connects disagree");
  if (nconns_min_ < 0) broken("_nconns_min < 0");
  if (shrunk_once_ && nconns_min_ > static_cast<int>(pool_.size())) {
    broken("_nconns_min above len(_pool) after a ShrinkPool run");
  }
  int live_waiters = 0;
  for (std::size_t i = 0; i < waiting_.size(); ++i) {
    const auto found = requests_.find(static_cast<std::uint64_t>(waiting_[i].request));
    if (found != requests_.end() && found->second.phase == Request::Phase::kWaiting &&
        found->second.waiter == waiting_[i].serial) {
      ++live_waiters;
    }
  }
  int waiting_requests = 0;
  int checking_requests = 0;
  for (const auto& [id, r] : requests_) {
    waiting_requests += r.phase == Request::Phase::kWaiting ? 1 : 0;
    checking_requests += r.phase == Request::Phase::kChecking ? 1 : 0;
  }
  if (live_waiters != waiting_requests) broken("a waiting request is not in _waiting");
  int checking_slots = 0;
  for (const Slot& slot : slots_) checking_slots += slot.state == State::kChecking ? 1 : 0;
  if (checking_slots != checking_requests) broken("a checking request without its check");
  if (!config_.check && checking_slots != 0) broken("a check with check = false");
  if (live_waiters > 0 && !pool_.empty()) {
    broken("a client waits while a connection is idle");
  }
}

}  // namespace poolsim
