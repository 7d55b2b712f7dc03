// pgbouncer's server pool in transaction pooling mode (pool.policy = pgbouncer) as a state
// machine.
//
// RULES, from pgbouncer 1.18.0's source (Debian 12's pgbouncer 1.18.0-1+deb12u1, whose two
// patches touch only auth_query; src/objects.c, src/janitor.c, src/server.c, src/client.c,
// src/main.c) and doc/config.md. pgbouncer keeps times in microseconds of a loop time cached
// once per pass of its event loop; here that is the `now` of each input. A server's "last
// packet" is its request_time (server.c server_proto sets it on every packet read).
//
//  P1 Janitor (janitor.c janitor_setup, do_full_maint): a persistent libevent timer of
//     USEC / 3 = 333333 us from pgbouncer's start; libevent reschedules a persistent timer from
//     its previous due time, so the phase holds. Each tick maintains the pool in this order:
//     its unused servers (P10, P11), its size (P12), its waiting clients (P14); then P2 runs,
//     as after every pass of the event loop. Ticks that can change nothing are skipped, the
//     later ones keeping their times: the same behaviour in fewer events (skip_idle_ticks =
//     false runs them all; a test checks that the actions and their times are the same).
//  P2 After every input (main.c main_loop_once -> janitor.c per_loop_maint, per_loop_activate)
//    , the waiting clients are walked oldest first: while a server is idle the client
//     gets it; else a check in flight is counted for it; else an unused server is checked for
//     it (P13); else one login is asked for (P6) and the walk stops. So a login starts in the
//     same pass as the client that needs it, not at a tick.
//  P3 A transaction's first statement (client.c handle_client_work -> objects.c find_server)
//     takes the head of the idle list; if none is idle it fails fast (P9) or waits at
//     the tail of waiting_client_list. A server that becomes idle goes at once to the oldest
//     waiter (objects.c release_server -> reuse_on_release -> activate_client, whose replayed
//     packet takes the idle head, this server): waiters are served in arrival order.
//  P4 Idle servers are reused last in, first out (objects.c change_server_state: SV_IDLE is
//     prepended unless server_round_robin, and find_server takes the head). SV_USED is
//     prepended too ("use LIFO"), SV_TESTED appended.
//  P5 A transaction's end (server.c handle_server_work 'Z' with status I, then server_proto
//     SBUF_EV_FLUSH, mode != session -> objects.c release_server): the server is
//     unlinked. No server_reset_query runs: release_server sends a server to SV_TESTED for it
//     only when pool_mode = session or server_reset_query_always (default 0). With
//     server_check_delay = 0 the server goes to SV_USED (checked before every reuse); if
//     life_over (P11) it is closed; otherwise it is idle (P4) and goes to the oldest waiter.
//  P6 Logins (objects.c launch_new_connection): none while one is in flight (a non-empty
//     new_server_list: at most one SV_LOGIN per pool); none within server_login_retry of the
//     start of a failed one (last_connect_failed, last_connect_time); none once the pool's
//     servers, the login included, reach default_pool_size, but for the reserve (P7); none at
//     max_db_connections. (The eviction tried first never finds a victim with one pool: it
//     takes the idle list's tail, empty whenever a waiter asks, and used or tested servers only
//     of pools nobody waits on.) A server's connect_time is its login's start.
//  P7 The reserve (launch_new_connection): past default_pool_size a login is allowed while
//     servers < default_pool_size + reserve_pool_size and the oldest waiter has waited at least
//     reserve_pool_timeout ("taking connection from reserve_pool"). P2 asks at every input and
//     tick, so in a quiet pool it starts at the first tick at or after that; one at a time,
//     each for whoever then waits longest.
//  P8 Login outcome (server.c handle_server_startup 'Z' -> release_server from SV_LOGIN;
//     objects.c disconnect_server of an SV_LOGIN server that is not ready): a
//     success clears last_login_failed and last_connect_failed, and the server is idle, to the
//     oldest waiter, with no lifetime check; a failure sets both. Waiting clients stay queued;
//     the next login comes at the first input or tick server_login_retry after the failed
//     one started.
//  P9 Fast fail (objects.c check_fast_fail): a transaction that finds no idle server
//     while the last login failed and no server is connected is refused at once ("server login
//     has been failing, try again later (server_login_retry)"), and a login is asked for (P6).
//  P10 Unused servers at a tick (janitor.c pool_server_maint -> check_unused_servers of the
//     used, tested and idle lists in turn, each head first): with idle = now - last
//     packet and age = now - connect_time, the first that holds of: idle > server_idle_timeout
//     (> 0) and (min_pool_size = 0 or connected servers > min_pool_size, counted again after
//     each close) -> closed; age >= server_lifetime -> closed if life_over (P11), else left
//     alone; on the idle list, with a server_check_query, idle > server_check_delay ->
//     SV_USED. A server in a transaction is never closed by a tick.
//  P11 life_over (objects.c): age >= server_lifetime and the pool's last lifetime close
//     (last_lifetime_disconnect, initially never) at least server_lifetime / default_pool_size
//     ago: at most one lifetime close per such gap, and no random jitter. A server past its
//     lifetime in a transaction is closed when released (P5), if the gap allows.
//  P12 min_pool_size (janitor.c check_pool_size): at a tick, while connected servers are
//     fewer than min_pool_size and default_pool_size and the pool has a client
//     (pool_client_count > 0), one login is asked for (P6): at most one per tick.
//  P13 Server check (janitor.c launch_recheck): the head of the used list becomes
//     SV_TESTED and runs server_check_query (a Ping for the waiter it was started for). Its
//     answer (server.c 'Z' -> release_server from SV_TESTED) makes it idle, last packet now,
//     for the oldest waiter, unless life_over. A failed check closes it (not a login failure)
//     and P2 looks again. A tick may close a server whose check is in flight (P10).
//  P14 query_wait_timeout (janitor.c pool_client_maint): at a tick, a client that has
//     waited more than query_wait_timeout (> 0) is disconnected with FATAL
//     "query_wait_timeout": a timeout here.
//  P15 A server that dies in a transaction (server.c server_proto "server conn crashed?" ->
//     objects.c disconnect_server of an SV_ACTIVE server) is closed, and its client with
//     it. Nothing replaces it but P2 and P12; it is not a login failure.
//
// Mapping: CheckoutRequested is P3, Grant its link, Fail kTimeout P14, Fail kConnectFailed P9
// (with the last ConnectFailed's cause), OpenConnection a login (P6), Ping P13, Returned P5,
// DisconnectDetected P15, CloseConnection every close (kClose: pgbouncer sends Terminate).
// WaitExpired runs P14 for one waiter once the tick it would time out at has come. A check
// answered with anything but kOk is a dead server. No Reset is ever asked for (P5).
// Left out: session and statement pooling; clients' own logins (auth, max_client_conn,
// client_login_timeout, a fresh pool's wait for its first server's welcome, kill_pool_logins);
// server_connect_timeout (the driver's connect outcome decides: a connect it gives up on is a
// ConnectFailed); cancel requests; PAUSE, RELOAD and close_needed; server_round_robin,
// server_reset_query_always, query_timeout, idle_transaction_timeout, client_idle_timeout,
// max_user_connections; SET round trips for client parameters (varcache_apply); a client that
// closes mid-transaction; an idle server's EOF (a dead idle server is found when next used).
// The core cannot see client connections between transactions: the pool counts as having a
// client (P12) from its first transaction on, since SQLAlchemy keeps its connections open.
// SQLAlchemy's ResetDone, Invalidated, Detached, DetachedReturned, PoolInvalidated and Disposed
// have no pgbouncer counterpart: they are refused with std::logic_error.
#include "pool_model/pgbouncer_core.hpp"

#include <algorithm>
#include <stdexcept>
#include <variant>

#include "pool_model/pool_config.hpp"
#include "pool_model/slots.hpp"

namespace poolsim {

namespace {

[[noreturn]] void broken(const std::string& what) {
  throw std::logic_error("PgbouncerCore: " + what);
}

std::string fmt(Duration d) { return format_duration(d); }

// pgbouncer's strict "more than" tests (idle > timeout) at integer instants: the first instant
// that passes.
constexpr Duration kJustAfter{1};

}  // namespace

std::optional<std::string> validate(const PgbouncerConfig& c) {
  if (c.default_pool_size < 1) {
    return "pgbouncer.default_pool_size = " + std::to_string(c.default_pool_size) +
           ": must be a whole number >= 1";
  }
  if (c.min_pool_size < 0 || c.min_pool_size > c.default_pool_size) {
    return "pgbouncer.min_pool_size = " + std::to_string(c.min_pool_size) +
           ": must be from 0 to pgbouncer.default_pool_size (" +
           std::to_string(c.default_pool_size) + "); pgbouncer never fills beyond it";
  }
  if (c.reserve_pool_size < 0) {
    return "pgbouncer.reserve_pool_size = " + std::to_string(c.reserve_pool_size) +
           ": must be a whole number >= 0";
  }
  if (c.max_db_connections < 0) {
    return "pgbouncer.max_db_connections = " + std::to_string(c.max_db_connections) +
           ": must be 0 (no limit) or a whole number >= 1";
  }
  const std::pair<const char*, Duration> durations[] = {
      {"pgbouncer.reserve_pool_timeout", c.reserve_pool_timeout},
      {"pgbouncer.server_idle_timeout", c.server_idle_timeout},
      {"pgbouncer.server_lifetime", c.server_lifetime},
      {"pgbouncer.query_wait_timeout", c.query_wait_timeout},
      {"pgbouncer.server_login_retry", c.server_login_retry},
      {"pgbouncer.server_check_delay", c.server_check_delay},
  };
  for (const auto& [key, value] : durations) {
    if (value.count() < 0) return std::string(key) + " = " + fmt(value) + ": must be >= 0";
  }
  if (c.janitor_period.count() <= 0) {
    return "pgbouncer.janitor_period = " + fmt(c.janitor_period) + ": must be > 0";
  }
  return std::nullopt;
}

PgbouncerCore::PgbouncerCore(const PgbouncerConfig& config) : config_(config) {
  if (auto problem = validate(config)) throw std::invalid_argument(*problem);
}

void PgbouncerCore::start(Instant now) {
  if (started_) broken("started twice");
  started_ = true;
  now_ = now;
  epoch_ = now;  // P1: nothing to do yet, so no tick is planned
}

void PgbouncerCore::handle(Instant now, const Event& event) {
  if (!started_) broken("an input before start()");
  if (now < now_) broken("time went backwards");
  now_ = now;
  std::visit([this](const auto& e) { on(e); }, event);
  per_loop_activate();  // P2
  plan_janitor();
}

void PgbouncerCore::handle_timeout(Instant now) {
  if (!started_) broken("an input before start()");
  if (now < now_) broken("time went backwards");
  now_ = now;
  bool ticked = false;
  while (!timers_.empty() && timers_.top().at <= now) {
    const Timer timer = timers_.top();
    timers_.pop();
    if (timer.gen != janitor_gen_ || ticked) continue;  // cancelled, or a tick already run
    janitor_at_.reset();
    ticked = true;
    janitor();
  }
  if (ticked) per_loop_activate();  // P1: the pass that ran the tick ends with P2
  plan_janitor();
}

PgbouncerStatus PgbouncerCore::status() const {
  PgbouncerStatus s;
  s.cl_active = active_;
  s.cl_waiting = static_cast<int>(waiting_.size());
  s.sv_active = active_;
  s.sv_idle = idle_.size;
  s.sv_used = used_.size;
  s.sv_tested = tested_.size;
  s.sv_login = login_ ? 1 : 0;
  if (std::optional<RequestId> oldest = oldest_waiter()) {
    s.maxwait = now_ - waiting_.at(static_cast<std::uint64_t>(*oldest));
  }
  return s;
}

// ---- inputs ---------------------------------------------------------------------------------

void PgbouncerCore::on(const CheckoutRequested& e) {  // P3
  const auto key = static_cast<std::uint64_t>(e.request);
  if (waiting_.count(key) != 0) broken("a request asked twice");
  has_clients_ = true;
  if (idle_.size > 0) {
    link(SlotId{idle_.head}, e.request);
    return;
  }
  if (last_login_failed_ && connected() == 0) {  // P9
    emit(Fail{e.request, Failure::kConnectFailed, last_failure_cause_, 0});
    launch_new_connection();
    return;
  }
  waiting_.emplace(key, now_);
  queue_.push_back(e.request);
}

void PgbouncerCore::on(const ConnectSucceeded& e) {  // P8
  if (!login_ || *login_ != e.slot) broken("a login nobody started");
  slots_[static_cast<std::size_t>(e.slot)].conn = e.conn;
  release_server(e.slot);
}

void PgbouncerCore::on(const ConnectFailed& e) {  // P8
  if (!login_ || *login_ != e.slot) broken("a login nobody started");
  last_login_failed_ = true;
  last_connect_failed_ = true;
  last_failure_cause_ = e.cause;
  change_state(e.slot, State::kFree);
}

void PgbouncerCore::on(const PingResult& e) {  // P13
  const auto index = static_cast<std::size_t>(e.slot);
  if (index < slots_.size() && slots_[index].state == State::kAbandoned) {
    change_state(e.slot, State::kFree);  // closed by a tick meanwhile: the answer is moot
    return;
  }
  slot_in(e.slot, State::kTested, "PingResult").check_pending = false;
  if (e.outcome == PingOutcome::kOk) {
    release_server(e.slot);
  } else {
    disconnect_server(e.slot);
  }
}

void PgbouncerCore::on(const Returned& e) {  // P5
  slot_in(e.slot, State::kActive, "Returned");
  release_server(e.slot);
}

void PgbouncerCore::on(const DisconnectDetected& e) {  // P15
  slot_in(e.slot, State::kActive, "DisconnectDetected");
  disconnect_server(e.slot);
}

void PgbouncerCore::on(const ResetDone&) {
  broken("ResetDone has no pgbouncer counterpart: transaction pooling runs no reset query");
}
void PgbouncerCore::on(const Invalidated&) {
  broken("Invalidated has no pgbouncer counterpart: the app invalidates its own connection");
}
void PgbouncerCore::on(const Detached&) { broken("Detached has no pgbouncer counterpart"); }
void PgbouncerCore::on(const DetachedReturned&) {
  broken("DetachedReturned has no pgbouncer counterpart");
}
void PgbouncerCore::on(const PoolInvalidated&) {
  broken("PoolInvalidated has no pgbouncer counterpart: a dead server is closed alone");
}
void PgbouncerCore::on(const Disposed&) { broken("Disposed has no pgbouncer counterpart"); }

void PgbouncerCore::on(const WaitExpired& e) {  // P14, for one waiter
  const auto found = waiting_.find(static_cast<std::uint64_t>(e.request));
  if (found == waiting_.end() || config_.query_wait_timeout.count() == 0) return;
  const Instant due =
      tick_at_or_after(saturating_add(found->second, config_.query_wait_timeout + kJustAfter));
  if (due > now_) return;
  waiting_.erase(found);
  emit(Fail{e.request, Failure::kTimeout, 0, 0});
}

// ---- the janitor ----------------------------------------------------------------------------

void PgbouncerCore::janitor() {  // P1: pool_server_maint, then pool_client_maint
  check_unused_servers(used_, false);
  check_unused_servers(tested_, false);
  check_unused_servers(idle_, true);
  check_pool_size();
  pool_client_maint();
}

void PgbouncerCore::check_unused_servers(List& list, bool idle_test) {  // P10
  for (std::uint32_t i = list.head; i != kNone;) {
    const std::uint32_t next = slots_[i].next;  // statlist_for_each_safe
    const SlotId id{i};
    const Slot& slot = slots_[i];
    const Duration idle = now_ - slot.request_time;
    const Duration age = now_ - slot.connect_time;
    if (config_.server_idle_timeout.count() > 0 && idle > config_.server_idle_timeout &&
        (config_.min_pool_size == 0 || connected() > config_.min_pool_size)) {
      disconnect_server(id);  // "server idle timeout"
    } else if (age >= config_.server_lifetime) {
      if (life_over(slot)) {
        disconnect_server(id);  // "server lifetime over"
        last_lifetime_disconnect_ = now_;
      }
    } else if (idle_test && !config_.server_check_query.empty() &&
               idle > config_.server_check_delay) {
      change_state(id, State::kUsed);
    }
    i = next;
  }
}

void PgbouncerCore::check_pool_size() {  // P12 (the pool never holds too many: P6)
  const int cur = connected();
  if (cur < config_.min_pool_size && cur < config_.default_pool_size && has_clients_) {
    launch_new_connection();
  }
}

void PgbouncerCore::pool_client_maint() {  // P14
  if (config_.query_wait_timeout.count() == 0) return;
  // Waiters queue in arrival order, so those past the timeout are the oldest ones.
  while (!queue_.empty()) {
    const RequestId request = queue_.front();
    const auto found = waiting_.find(static_cast<std::uint64_t>(request));
    if (found != waiting_.end()) {
      if (now_ - found->second <= config_.query_wait_timeout) break;
      waiting_.erase(found);
      emit(Fail{request, Failure::kTimeout, 0, 0});  // "query_wait_timeout"
    }
    queue_.pop_front();
  }
}

void PgbouncerCore::per_loop_activate() {  // P2
  int tested = tested_.size;
  int used = used_.size;
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    const RequestId request = queue_[i];
    if (waiting_.count(static_cast<std::uint64_t>(request)) == 0) continue;
    if (idle_.size > 0) {
      waiting_.erase(static_cast<std::uint64_t>(request));  // activate_client
      link(SlotId{idle_.head}, request);
    } else if (tested > 0) {
      --tested;
    } else if (used > 0) {
      launch_recheck(request);
      --used;
    } else {
      launch_new_connection();
      break;
    }
  }
  drop_answered_waiters();
}

// ---- objects.c ------------------------------------------------------------------------------

void PgbouncerCore::link(SlotId id, RequestId request) {
  change_state(id, State::kActive);
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  slot.request = request;
  emit(Grant{request, id, slot.conn});
}

void PgbouncerCore::release_server(SlotId id) {  // P5, P8, P13
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  const State from = slot.state;
  slot.request_time = now_;  // the packet that released it: ReadyForQuery
  State to = State::kIdle;
  if (from == State::kActive && config_.server_check_delay.count() == 0 &&
      !config_.server_check_query.empty()) {
    to = State::kUsed;
  }
  if (from == State::kLogin) {
    last_login_failed_ = false;
    last_connect_failed_ = false;
  } else if (life_over(slot)) {
    disconnect_server(id);  // "server lifetime over"
    last_lifetime_disconnect_ = now_;
    return;
  }
  change_state(id, to);
  if (to == State::kIdle) reuse_on_release();
}

void PgbouncerCore::reuse_on_release() {  // P3: the oldest waiter takes the idle head
  drop_answered_waiters();
  if (queue_.empty()) return;
  const RequestId request = queue_.front();
  queue_.pop_front();
  waiting_.erase(static_cast<std::uint64_t>(request));
  link(SlotId{idle_.head}, request);
}

void PgbouncerCore::disconnect_server(SlotId id) {
  const Slot& slot = slots_[static_cast<std::size_t>(id)];
  emit(CloseConnection{slot.conn, CloseKind::kClose, std::nullopt});
  // A server whose check is in flight keeps its slot until the answer comes (P13).
  change_state(id, slot.check_pending ? State::kAbandoned : State::kFree);
}

void PgbouncerCore::launch_recheck(RequestId request) {  // P13
  const SlotId id{used_.head};
  change_state(id, State::kTested);
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  slot.request = request;
  slot.check_pending = true;
  emit(Ping{id, slot.conn, request});
}

void PgbouncerCore::launch_new_connection() {  // P6, P7
  const std::optional<Instant> allowed = launch_allowed_from();
  if (!allowed || *allowed > now_) return;
  const SlotId id = alloc_slot();
  Slot& slot = slots_[static_cast<std::size_t>(id)];
  slot.connect_time = now_;
  slot.request_time = now_;
  last_connect_time_ = now_;
  change_state(id, State::kLogin);
  emit(OpenConnection{id, std::nullopt});
}

bool PgbouncerCore::life_over(const Slot& slot) const {  // P11
  if (now_ - slot.connect_time < config_.server_lifetime) return false;
  const Duration gap = config_.server_lifetime / config_.default_pool_size;
  return !last_lifetime_disconnect_ || now_ - *last_lifetime_disconnect_ >= gap;
}

// When launch_new_connection() would start a login if nothing else happened first, or nullopt
// for never (a login in flight, the pool full, max_db_connections reached).
std::optional<Instant> PgbouncerCore::launch_allowed_from() const {
  if (login_) return std::nullopt;
  Instant from = now_;
  if (last_connect_failed_) {
    from = std::max(from, saturating_add(last_connect_time_, config_.server_login_retry));
  }
  const int n = servers();
  if (n >= config_.default_pool_size) {  // P7
    const std::optional<RequestId> oldest = oldest_waiter();
    if (config_.reserve_pool_timeout.count() == 0 || config_.reserve_pool_size == 0 || !oldest ||
        n >= config_.default_pool_size + config_.reserve_pool_size) {
      return std::nullopt;
    }
    const Instant since = waiting_.at(static_cast<std::uint64_t>(*oldest));
    from = std::max(from, saturating_add(since, config_.reserve_pool_timeout));
  }
  if (config_.max_db_connections > 0 && n >= config_.max_db_connections) return std::nullopt;
  return from;
}

// Whether P2 or P12 asks for a login at the next tick.
bool PgbouncerCore::launch_wanted() const {
  const auto waiters = static_cast<int>(waiting_.size());
  if (waiters > 0 && idle_.size == 0 && waiters > tested_.size + used_.size) return true;
  const int cur = connected();
  return has_clients_ && cur < config_.min_pool_size && cur < config_.default_pool_size;
}

// ---- the janitor's dormancy -----------------------------------------------------------------

// The earliest instant at which a tick would change something, with no input before it. A
// tick changes something only through a time test of P6, P7, P10, P11, P12 or P14 turning
// true, and each turns true at an instant read off the state. (Everything else a tick does,
// P2 has done after the last input already.)
std::optional<Instant> PgbouncerCore::next_work() const {
  std::optional<Instant> due;
  const auto consider = [&due](Instant t) {
    if (!due || t < *due) due = t;
  };
  if (const std::optional<RequestId> oldest = oldest_waiter();
      oldest && config_.query_wait_timeout.count() > 0) {
    consider(saturating_add(waiting_.at(static_cast<std::uint64_t>(*oldest)),
                            config_.query_wait_timeout + kJustAfter));
  }
  if (launch_wanted()) {
    if (std::optional<Instant> from = launch_allowed_from()) consider(*from);
  }
  const bool idle_closes = config_.server_idle_timeout.count() > 0 &&
                           (config_.min_pool_size == 0 || connected() > config_.min_pool_size);
  const Duration gap = config_.server_lifetime / config_.default_pool_size;
  for (const List* list : {&used_, &tested_, &idle_}) {
    for (std::uint32_t i = list->head; i != kNone; i = slots_[i].next) {
      const Slot& slot = slots_[i];
      if (idle_closes) {
        consider(saturating_add(slot.request_time, config_.server_idle_timeout + kJustAfter));
      }
      const Instant life_end = saturating_add(slot.connect_time, config_.server_lifetime);
      consider(last_lifetime_disconnect_
                   ? std::max(life_end, saturating_add(*last_lifetime_disconnect_, gap))
                   : life_end);
      if (list == &idle_ && !config_.server_check_query.empty()) {
        const Instant check = saturating_add(slot.request_time,
                                             config_.server_check_delay + kJustAfter);
        // Moved at a tick only while it is within its lifetime.
        if (tick_at_or_after(std::max(check, now_)) < life_end) consider(check);
      }
    }
  }
  return due;
}

// Keeps one live janitor timer, at the first tick at or after next_work() (every tick with
// skip_idle_ticks off); timers planned before are cancelled by generation.
void PgbouncerCore::plan_janitor() {
  std::optional<Instant> at;
  const std::optional<Instant> due = config_.skip_idle_ticks ? next_work() : now_;
  if (due) {
    Instant tick = tick_at_or_after(std::max(*due, now_));
    // A tick at this very instant that is not planned is past: drivers run the timers due by
    // now before the input (and the tick just run, in handle_timeout, is not run twice).
    if (tick == now_ && janitor_at_ != now_) tick = saturating_add(tick, config_.janitor_period);
    if (tick != Instant::max()) at = tick;
  }
  if (at != janitor_at_) {
    janitor_at_ = at;
    ++janitor_gen_;
    if (at) schedule(*at, janitor_gen_);
  }
  while (!timers_.empty() && timers_.top().gen != janitor_gen_) timers_.pop();
}

// The first tick, epoch + k periods with k >= 1, that is not before t.
Instant PgbouncerCore::tick_at_or_after(Instant t) const {
  const std::int64_t period = config_.janitor_period.count();
  const std::int64_t behind = (t - epoch_).count();
  if (behind <= period) return saturating_add(epoch_, config_.janitor_period);
  const std::int64_t turns = behind / period + (behind % period != 0 ? 1 : 0);
  if (turns > (Instant::max() - epoch_).count() / period) return Instant::max();
  return epoch_ + Duration(turns * period);
}

// ---- bookkeeping ------------------------------------------------------------------------------

void PgbouncerCore::change_state(SlotId id, State state) {  // change_server_state
  const auto index = static_cast<std::size_t>(id);
  Slot& slot = slots_[index];
  switch (slot.state) {
    case State::kActive: --active_; break;
    case State::kLogin: login_.reset(); break;
    case State::kIdle:
    case State::kUsed:
    case State::kTested: remove(*list_of(slot.state), id); break;
    case State::kFree:
    case State::kAbandoned: break;
  }
  slot.state = state;
  switch (state) {
    case State::kFree:
      slot = Slot{};
      free_slots_.push_back(id);
      break;
    case State::kLogin: login_ = id; break;
    case State::kIdle: push_front(idle_, id); break;  // P4: LIFO
    case State::kUsed: push_front(used_, id); break;
    case State::kTested: push_back(tested_, id); break;
    case State::kActive: ++active_; break;
    case State::kAbandoned: break;
  }
}

PgbouncerCore::List* PgbouncerCore::list_of(State state) {
  switch (state) {
    case State::kIdle: return &idle_;
    case State::kUsed: return &used_;
    case State::kTested: return &tested_;
    default: return nullptr;
  }
}

void PgbouncerCore::push_front(List& list, SlotId id) {
  const auto i = static_cast<std::uint32_t>(id);
  Slot& slot = slots_[i];
  slot.prev = kNone;
  slot.next = list.head;
  if (list.head != kNone) {
    slots_[list.head].prev = i;
  } else {
    list.tail = i;
  }
  list.head = i;
  ++list.size;
}

void PgbouncerCore::push_back(List& list, SlotId id) {
  const auto i = static_cast<std::uint32_t>(id);
  Slot& slot = slots_[i];
  slot.next = kNone;
  slot.prev = list.tail;
  if (list.tail != kNone) {
    slots_[list.tail].next = i;
  } else {
    list.head = i;
  }
  list.tail = i;
  ++list.size;
}

void PgbouncerCore::remove(List& list, SlotId id) {
  const auto i = static_cast<std::uint32_t>(id);
  Slot& slot = slots_[i];
  if (slot.prev != kNone) {
    slots_[slot.prev].next = slot.next;
  } else {
    list.head = slot.next;
  }
  if (slot.next != kNone) {
    slots_[slot.next].prev = slot.prev;
  } else {
    list.tail = slot.prev;
  }
  slot.prev = kNone;
  slot.next = kNone;
  --list.size;
}

PgbouncerCore::Slot& PgbouncerCore::slot_in(SlotId id, State expected, const char* event) {
  if (Slot* slot = find_slot(slots_, id, expected)) return *slot;
  broken(not_in_state(event, id));
}

SlotId PgbouncerCore::alloc_slot() { return take_free_slot(slots_, free_slots_); }

std::optional<RequestId> PgbouncerCore::oldest_waiter() const {
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    if (waiting_.count(static_cast<std::uint64_t>(queue_[i])) != 0) return queue_[i];
  }
  return std::nullopt;
}

void PgbouncerCore::drop_answered_waiters() {
  while (!queue_.empty() && waiting_.count(static_cast<std::uint64_t>(queue_.front())) == 0) {
    queue_.pop_front();
  }
}

void PgbouncerCore::check_invariants() const {
  int counts[7] = {};
  for (const Slot& slot : slots_) ++counts[static_cast<int>(slot.state)];
  if (counts[static_cast<int>(State::kFree)] != static_cast<int>(free_slots_.size())) {
    broken("the free slots are not the slots without a server");
  }
  if (counts[static_cast<int>(State::kActive)] != active_) broken("the active count is wrong");
  if (counts[static_cast<int>(State::kLogin)] != (login_ ? 1 : 0)) {
    broken("the login in flight is not the one slot logging in");
  }
  if (login_ && slots_[static_cast<std::size_t>(*login_)].state != State::kLogin) {
    broken("the login in flight is in another state");
  }
  const auto check_list = [this, &counts](const List& list, State state, const char* name) {
    int n = 0;
    std::uint32_t prev = kNone;
    for (std::uint32_t i = list.head; i != kNone; i = slots_[i].next) {
      if (i >= slots_.size() || slots_[i].state != state || slots_[i].prev != prev || n > list.size) {
        broken(std::string("the ") + name + " list is not linked right");
      }
      prev = i;
      ++n;
    }
    if (n != list.size || prev != list.tail || n != counts[static_cast<int>(state)]) {
      broken(std::string("the ") + name + " list is not the " + name + " servers");
    }
  };
  check_list(idle_, State::kIdle, "idle");
  check_list(used_, State::kUsed, "used");
  check_list(tested_, State::kTested, "tested");
  // P4: every server enters the idle list with its last packet now, at the head.
  for (std::uint32_t i = idle_.head; i != kNone && slots_[i].next != kNone; i = slots_[i].next) {
    if (slots_[i].request_time < slots_[slots_[i].next].request_time) {
      broken("the idle list is not most recently released first");
    }
  }
  // P13: a used server always needs its check (it has been idle longer than the delay).
  for (std::uint32_t i = used_.head; i != kNone; i = slots_[i].next) {
    if (config_.server_check_query.empty() ||
        (config_.server_check_delay.count() > 0 &&
         now_ - slots_[i].request_time < config_.server_check_delay)) {
      broken("a used server that needs no check");
    }
  }
  const int limit = config_.default_pool_size + config_.reserve_pool_size;
  if (servers() > limit) broken("more servers than default_pool_size + reserve_pool_size");
  if (config_.max_db_connections > 0 && servers() > config_.max_db_connections) {
    broken("more servers than max_db_connections");
  }
  std::size_t live = 0;
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    live += waiting_.count(static_cast<std::uint64_t>(queue_[i]));
  }
  if (live != waiting_.size()) broken("the waiters are not the waiting requests");
  if (!queue_.empty() && waiting_.count(static_cast<std::uint64_t>(queue_.front())) == 0) {
    broken("an answered request at the head of the queue");
  }
  for (std::size_t i = 1; i < queue_.size(); ++i) {
    const auto a = waiting_.find(static_cast<std::uint64_t>(queue_[i - 1]));
    const auto b = waiting_.find(static_cast<std::uint64_t>(queue_[i]));
    if (a != waiting_.end() && b != waiting_.end() && a->second > b->second) {
      broken("the waiters are not in arrival order");
    }
  }
  if (!waiting_.empty() && idle_.size > 0) broken("a client waits while a server is idle");
  for (const Slot& slot : slots_) {
    if ((slot.state == State::kTested || slot.state == State::kAbandoned) != slot.check_pending) {
      broken("a check in flight outside the tested list");
    }
    if (slot.state == State::kActive && waiting_.count(static_cast<std::uint64_t>(slot.request))) {
      broken("a request both waits and holds a server");
    }
  }
  if (janitor_at_.has_value() != !timers_.empty() ||
      (janitor_at_ && (timers_.top().at != *janitor_at_ || timers_.top().gen != janitor_gen_))) {
    broken("the planned tick is not the first timer");
  }
  if (janitor_at_ && ((*janitor_at_ - epoch_).count() % config_.janitor_period.count() != 0 ||
                      *janitor_at_ <= epoch_)) {
    broken("a tick off the janitor's phase");
  }
}

}  // namespace poolsim
