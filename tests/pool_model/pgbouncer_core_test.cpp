// PgbouncerCore against the rules at the top of pgbouncer_core.cpp (P1-P15), one test per rule
// or published behaviour. A small driver plays pgbouncer's servers: it answers OpenConnection
// and Ping when the test says so, and records every action. Invariants are checked after every
// input. Time moves only through the times the tests pass.
//
// The janitor ticks every USEC / 3 = 333333 us (janitor.c), so the tick times below are
// k x 0.333333 s from the start; each expected one says which tick it is and why.
#include "pool_model/pgbouncer_core.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "pool_model/pool_config.hpp"  // format_duration

namespace poolsim {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr Duration kPeriod = microseconds(333333);  // janitor.c: {0, USEC / 3}

Instant at(Duration d) { return Instant(d); }
// The k-th janitor tick of a pgbouncer started at `start`.
Duration tick(std::int64_t k, Duration start = {}) { return start + k * kPeriod; }

struct Failed {
  std::uint64_t request;
  Failure failure;
  int cause;
};

class Bouncer {
 public:
  explicit Bouncer(PgbouncerConfig config, Duration start = {}) : core_(config) {
    core_.start(at(start));
    collect();
  }

  // As a driver does: the timers due by t first, then the input.
  void feed(Duration t, const Event& e) {
    run_until(t);
    core_.handle(at(t), e);
    last_input_ = t;
    collect();
  }
  void tick_at(Duration t) {
    core_.handle_timeout(at(t));
    last_input_ = t;
    ticks.push_back(t);
    collect();
  }
  // Runs every timer due up to t, in order.
  void run_until(Duration t) {
    while (auto next = core_.poll_timeout()) {
      if (*next > at(t)) break;
      tick_at(next->time_since_epoch());
    }
  }
  void checkout(Duration t, std::uint64_t request) {
    feed(t, CheckoutRequested{RequestId{request}});
  }
  void give_back(Duration t, std::uint64_t request) {
    const SlotId slot = granted_.at(request).slot;
    granted_.erase(request);
    feed(t, Returned{slot});
  }
  void server_dies(Duration t, std::uint64_t request) {
    const SlotId slot = granted_.at(request).slot;
    granted_.erase(request);
    feed(t, DisconnectDetected{slot});
  }

  // Runs the timers, one by one, until a login is asked for (unless one is pending); returns
  // the time of the input that asked for it.
  Duration next_open(Duration limit = hours(10)) {
    while (opens_.empty()) {
      const auto next = core_.poll_timeout();
      if (!next || *next > at(limit)) {
        ADD_FAILURE() << "no login asked for before " << format_duration(limit);
        return limit;
      }
      tick_at(next->time_since_epoch());
    }
    return open_times_.front();
  }
  // The login in flight succeeds (or fails).
  ConnId connect(Duration t) {
    EXPECT_EQ(opens_.size(), 1u) << "pgbouncer logs in one server at a time";
    if (opens_.empty()) return ConnId{};
    const OpenConnection open = opens_.front();
    opens_.erase(opens_.begin());
    open_times_.erase(open_times_.begin());
    const ConnId conn{next_conn_++};
    feed(t, ConnectSucceeded{open.slot, conn});
    return conn;
  }
  void connect_fails(Duration t, int cause = 7) {
    ASSERT_EQ(opens_.size(), 1u);
    const OpenConnection open = opens_.front();
    opens_.erase(opens_.begin());
    open_times_.erase(open_times_.begin());
    feed(t, ConnectFailed{open.slot, cause});
  }
  // Answers the oldest pending check.
  Ping answer_ping(Duration t, PingOutcome outcome) {
    EXPECT_FALSE(pings_.empty());
    if (pings_.empty()) return Ping{};
    const Ping ping = pings_.front();
    pings_.erase(pings_.begin());
    feed(t, PingResult{ping.slot, outcome, 0});
    return ping;
  }

  PgbouncerCore& core() { return core_; }
  PgbouncerStatus status() const { return core_.status(); }
  std::size_t opens_pending() const { return opens_.size(); }
  const std::vector<Ping>& pings() const { return pings_; }
  bool is_granted(std::uint64_t request) const { return granted_.count(request) != 0; }
  ConnId conn_of(std::uint64_t request) const { return granted_.at(request).conn; }
  std::vector<std::uint64_t> grant_order;  // requests granted, in order
  std::vector<Failed> failed;              // requests failed, in order
  std::vector<ConnId> closed;              // servers closed, in order
  std::vector<Duration> close_times;
  std::vector<Duration> ticks;  // every handle_timeout call
  int opened = 0;

 private:
  void collect() {
    core_.check_invariants();
    while (auto action = core_.poll_action()) {
      std::visit(
          [this](const auto& a) {
            using T = std::decay_t<decltype(a)>;
            if constexpr (std::is_same_v<T, OpenConnection>) {
              EXPECT_FALSE(a.request) << "pgbouncer logs servers in for the pool, not a client";
              opens_.push_back(a);
              open_times_.push_back(last_input_);
              ++opened;
            } else if constexpr (std::is_same_v<T, CloseConnection>) {
              EXPECT_EQ(a.kind, CloseKind::kClose);
              closed.push_back(a.conn);
              close_times.push_back(last_input_);
            } else if constexpr (std::is_same_v<T, Ping>) {
              EXPECT_TRUE(a.request) << "a check is always for a waiting client";
              pings_.push_back(a);
            } else if constexpr (std::is_same_v<T, Grant>) {
              ASSERT_EQ(granted_.count(static_cast<std::uint64_t>(a.request)), 0u);
              granted_.emplace(static_cast<std::uint64_t>(a.request), a);
              grant_order.push_back(static_cast<std::uint64_t>(a.request));
            } else if constexpr (std::is_same_v<T, Fail>) {
              failed.push_back(Failed{static_cast<std::uint64_t>(a.request), a.failure, a.cause});
            } else {
              ADD_FAILURE() << "unexpected action " << Action(a);  // Reset, Notify
            }
          },
          *action);
    }
  }

  PgbouncerCore core_;
  std::vector<OpenConnection> opens_;
  std::vector<Duration> open_times_;
  std::vector<Ping> pings_;
  std::map<std::uint64_t, Grant> granted_;
  std::uint64_t next_conn_ = 100;
  Duration last_input_{};
};

std::vector<std::uint64_t> ids(const std::vector<Failed>& failed) {
  std::vector<std::uint64_t> out;
  for (const Failed& f : failed) out.push_back(f.request);
  return out;
}

// A pool without server checks, lifetimes or idle timeouts unless a test turns them on.
PgbouncerConfig plain(int pool_size) {
  PgbouncerConfig c;
  c.default_pool_size = pool_size;
  c.server_check_query = "";
  c.server_idle_timeout = Duration{};
  c.server_lifetime = hours(1000);
  return c;
}

TEST(PgbouncerCore, ABurstLogsServersInOneAtATime) {  // P2, P6, P8
  Bouncer pool(PgbouncerConfig{});
  EXPECT_EQ(pool.opens_pending(), 0u) << "no server before the first client";
  EXPECT_FALSE(pool.core().poll_timeout()) << "an empty pool has no tick to run";
  for (std::uint64_t r = 1; r <= 5; ++r) pool.checkout(seconds(1), r);
  EXPECT_EQ(pool.opens_pending(), 1u) << "one login for five waiters";
  EXPECT_EQ(pool.next_open(), seconds(1)) << "asked for in the same pass, not at a tick";
  EXPECT_EQ(pool.status().cl_waiting, 5);
  EXPECT_EQ(pool.status().sv_login, 1);
  // Each login that completes serves the oldest waiter, and the next one starts at once.
  for (int i = 1; i <= 5; ++i) {
    const Duration done = seconds(1) + milliseconds(10 * i);
    pool.connect(done);
    EXPECT_EQ(pool.grant_order.size(), static_cast<std::size_t>(i));
    if (i < 5) {
      EXPECT_EQ(pool.next_open(), done);
    }
  }
  EXPECT_EQ(pool.grant_order, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(pool.opens_pending(), 0u);
  EXPECT_EQ(pool.opened, 5);
}

TEST(PgbouncerCore, DefaultPoolSizeCapsServersAndClientsQueue) {  // P3, P6
  Bouncer pool(plain(2));
  for (std::uint64_t r = 1; r <= 5; ++r) pool.checkout(seconds(1), r);
  pool.connect(milliseconds(1010));
  pool.connect(milliseconds(1020));
  EXPECT_EQ(pool.opens_pending(), 0u) << "default_pool_size servers: no third login";
  EXPECT_EQ(pool.status().sv_active, 2);
  EXPECT_EQ(pool.status().cl_waiting, 3);
  pool.run_until(seconds(60));
  EXPECT_EQ(pool.opened, 2);
  const ConnId first = pool.conn_of(1);
  const ConnId second = pool.conn_of(2);
  pool.give_back(seconds(61), 1);
  EXPECT_EQ(pool.conn_of(3), first);
  EXPECT_EQ(pool.status().maxwait, seconds(60)) << "client 4, waiting since 1 s";
  pool.give_back(seconds(62), 2);
  EXPECT_EQ(pool.conn_of(4), second);
  pool.give_back(seconds(63), 3);
  EXPECT_EQ(pool.conn_of(5), first);
  EXPECT_EQ(pool.grant_order, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(pool.opened, 2);
}

TEST(PgbouncerCore, AReturnedServerGoesToTheOldestWaiter) {  // P3, P5
  Bouncer pool(plain(1));
  pool.checkout(seconds(1), 1);
  pool.connect(milliseconds(1010));
  const ConnId conn = pool.conn_of(1);
  pool.checkout(seconds(2), 4);
  pool.checkout(seconds(3), 2);
  pool.checkout(seconds(4), 3);
  pool.give_back(seconds(5), 1);
  ASSERT_TRUE(pool.is_granted(4)) << "the one that waited longest, whatever its id";
  EXPECT_EQ(pool.conn_of(4), conn);
  pool.checkout(seconds(6), 5);  // behind 2 and 3
  pool.give_back(seconds(7), 4);
  pool.give_back(seconds(8), 2);
  pool.give_back(seconds(9), 3);
  EXPECT_EQ(pool.grant_order, (std::vector<std::uint64_t>{1, 4, 2, 3, 5}));
  EXPECT_EQ(pool.opened, 1);
}

TEST(PgbouncerCore, IdleServersAreReusedLastInFirstOut) {  // P4
  Bouncer pool(plain(3));
  for (std::uint64_t r = 1; r <= 3; ++r) pool.checkout(seconds(1), r);
  for (int i = 1; i <= 3; ++i) pool.connect(seconds(1) + milliseconds(10 * i));
  const ConnId c1 = pool.conn_of(1);
  const ConnId c2 = pool.conn_of(2);
  const ConnId c3 = pool.conn_of(3);
  pool.give_back(seconds(2), 1);
  pool.give_back(seconds(3), 2);
  pool.give_back(seconds(4), 3);
  pool.checkout(seconds(5), 4);
  EXPECT_EQ(pool.conn_of(4), c3) << "the last one returned";
  pool.give_back(seconds(6), 4);
  pool.checkout(seconds(7), 5);
  pool.checkout(seconds(7), 6);
  pool.checkout(seconds(7), 7);
  EXPECT_EQ(pool.conn_of(5), c3);
  EXPECT_EQ(pool.conn_of(6), c2);
  EXPECT_EQ(pool.conn_of(7), c1);
}

// pool_size 2, reserve 1 after 5 s. The third client waits from 1 s: it reaches 5 s at 6 s, and
// the first tick at or after that is tick 19 (6.333327 s; tick 18 is 5.999994 s).
TEST(PgbouncerCore, TheReserveOpensAtTheFirstTickAfterReservePoolTimeout) {  // P1, P7
  PgbouncerConfig c = plain(2);
  c.reserve_pool_size = 1;
  c.query_wait_timeout = Duration{};
  Bouncer pool(c);
  pool.checkout(milliseconds(500), 1);
  pool.checkout(milliseconds(500), 2);
  pool.connect(milliseconds(510));
  pool.connect(milliseconds(520));
  pool.checkout(seconds(1), 3);
  pool.checkout(seconds(2), 4);
  EXPECT_EQ(pool.opens_pending(), 0u);
  pool.run_until(tick(19) - microseconds(1));
  EXPECT_EQ(pool.opens_pending(), 0u);
  EXPECT_EQ(pool.next_open(), tick(19));
  EXPECT_EQ(pool.next_open(), microseconds(6'333'327));
  pool.connect(milliseconds(6400));
  EXPECT_TRUE(pool.is_granted(3)) << "the reserve server goes to the oldest waiter";
  // Client 4 has waited over 5 s too, but 3 servers = pool + reserve: no more, ever.
  pool.run_until(seconds(100));
  EXPECT_EQ(pool.opens_pending(), 0u);
  EXPECT_EQ(pool.opened, 3);
  pool.give_back(seconds(100), 1);
  EXPECT_TRUE(pool.is_granted(4));
}

TEST(PgbouncerCore, AnInputAfterReservePoolTimeoutOpensTheReserveAtOnce) {  // P2, P7
  PgbouncerConfig c = plain(1);
  c.reserve_pool_size = 2;
  Bouncer pool(c);
  pool.checkout(milliseconds(500), 1);
  pool.connect(milliseconds(510));
  pool.checkout(seconds(1), 2);
  // 5.1 s after client 2 began to wait, between ticks 18 and 19, another client's statement
  // runs per_loop_activate: the reserve login starts then.
  pool.run_until(milliseconds(6100));
  EXPECT_EQ(pool.opens_pending(), 0u);
  pool.checkout(milliseconds(6100), 3);
  EXPECT_EQ(pool.next_open(), milliseconds(6100));
  pool.connect(milliseconds(6200));
  EXPECT_TRUE(pool.is_granted(2));
  // Client 3 has waited 0.1 s: the second reserve server waits for its 5 s, at the first tick
  // at or after 11.1 s: tick 34 (11.333322 s; tick 33 is 10.999989 s).
  EXPECT_EQ(pool.next_open(), tick(34));
}

// Four servers returned at 10 s; server_idle_timeout 60 s closes them at the first tick where
// they have been idle more than 60 s: after 70 s, tick 211 (70.333263 s; tick 210 is 69.99993 s).
// min_pool_size 2 keeps two: the idle list is walked head first, so the two closed are the two
// returned last (P4).
TEST(PgbouncerCore, ServerIdleTimeoutClosesAtATickButKeepsMinPoolSize) {  // P10, P4
  PgbouncerConfig c = plain(5);
  c.min_pool_size = 2;
  c.server_idle_timeout = seconds(60);
  Bouncer pool(c);
  for (std::uint64_t r = 1; r <= 4; ++r) pool.checkout(seconds(1), r);
  for (int i = 1; i <= 4; ++i) pool.connect(seconds(1) + milliseconds(10 * i));
  std::vector<ConnId> conns;
  for (std::uint64_t r = 1; r <= 4; ++r) conns.push_back(pool.conn_of(r));
  for (std::uint64_t r = 1; r <= 4; ++r) pool.give_back(seconds(10), r);
  pool.run_until(tick(211) - microseconds(1));
  EXPECT_TRUE(pool.closed.empty());
  pool.run_until(tick(211));
  EXPECT_EQ(pool.closed, (std::vector<ConnId>{conns[3], conns[2]}));
  EXPECT_EQ(pool.close_times, (std::vector<Duration>{tick(211), tick(211)}));
  EXPECT_EQ(pool.status().sv_idle, 2);
  ASSERT_TRUE(pool.core().poll_timeout());
  EXPECT_GE(*pool.core().poll_timeout(), at(hours(1000))) << "only their lifetimes are left";
  pool.run_until(hours(10));
  EXPECT_EQ(pool.closed.size(), 2u);
  EXPECT_EQ(pool.opened, 4);
}

// min_pool_size 3: nothing until a client comes; then one login per tick (the one in flight
// blocks the next): the first for the waiter at once, the others at the ticks after each login.
TEST(PgbouncerCore, MinPoolSizeIsRefilledOneLoginPerTick) {  // P12, P6
  PgbouncerConfig c = plain(20);
  c.min_pool_size = 3;
  Bouncer pool(c);
  pool.run_until(seconds(10));
  EXPECT_EQ(pool.opened, 0) << "no client yet";
  EXPECT_TRUE(pool.ticks.empty());
  pool.checkout(seconds(11), 1);
  EXPECT_EQ(pool.next_open(), seconds(11));
  pool.connect(milliseconds(11050));
  // The first tick at or after 11.05 s: tick 34 is 11.333322 s (tick 33, 10.999989 s).
  EXPECT_EQ(pool.next_open(), tick(34));
  pool.connect(milliseconds(11400));
  // At or after 11.4 s: tick 35, 11.666655 s.
  EXPECT_EQ(pool.next_open(), tick(35));
  pool.connect(milliseconds(11700));
  pool.run_until(seconds(100));
  EXPECT_EQ(pool.opened, 3);
  EXPECT_EQ(pool.status().sv_idle + pool.status().sv_active, 3);
  // A server lost in a transaction is replaced at the next tick: at or after 20 s is tick 61
  // (20.333313 s; tick 60 is 19.99998 s).
  pool.server_dies(seconds(20), 1);
  EXPECT_EQ(pool.closed.size(), 1u);
  EXPECT_EQ(pool.next_open(), tick(61));
}

// server_lifetime 100 s. Server B (login at 2 s), idle from 3 s, ends at the first tick with
// age >= 100 s: at or after 102 s, tick 307 (102.333231 s; tick 306 is 101.999898 s). Server A
// (login at 1 s) is in a transaction from 1.01 s to 200 s: past its lifetime, but a tick never
// closes it; it is closed as it comes back, the gap since B's close (97.7 s) being over
// server_lifetime / pool_size = 50 s.
TEST(PgbouncerCore, ServerLifetimeClosesAServerWhenIdleNotWhileInUse) {  // P10, P11, P5
  PgbouncerConfig c = plain(2);
  c.server_lifetime = seconds(100);
  c.query_wait_timeout = Duration{};
  Bouncer pool(c);
  pool.checkout(seconds(1), 1);
  pool.connect(milliseconds(1010));
  pool.checkout(seconds(2), 2);
  EXPECT_EQ(pool.next_open(), seconds(2));
  pool.connect(milliseconds(2010));
  const ConnId a = pool.conn_of(1);
  const ConnId b = pool.conn_of(2);
  pool.give_back(seconds(3), 2);
  pool.run_until(tick(307) - microseconds(1));
  EXPECT_TRUE(pool.closed.empty());
  pool.run_until(tick(307));
  EXPECT_EQ(pool.closed, std::vector<ConnId>{b});
  EXPECT_EQ(pool.close_times, std::vector<Duration>{tick(307)});
  pool.run_until(seconds(199));
  EXPECT_EQ(pool.closed.size(), 1u) << "A is in a transaction";
  pool.give_back(seconds(200), 1);
  EXPECT_EQ(pool.closed, (std::vector<ConnId>{b, a}));
  EXPECT_EQ(pool.close_times.back(), seconds(200));
  EXPECT_EQ(pool.status().sv_idle, 0);
}

// Two servers past server_lifetime (100 s) at the same tick, pool_size 2: life_over lets one
// lifetime close through per 100 s / 2 = 50 s. Both reach 100 s at tick 304 (101.333232 s;
// their logins started at 1 s and 1.01 s). B, at the idle list's head, goes then; A at the
// first tick at or after 101.333232 + 50 s: tick 455, 151.666515 s (tick 454 is 151.333182 s).
TEST(PgbouncerCore, LifetimeClosesAreSpacedByLifetimeOverPoolSize) {  // P11, P10
  PgbouncerConfig c = plain(2);
  c.server_lifetime = seconds(100);
  Bouncer pool(c);
  pool.checkout(seconds(1), 1);
  pool.checkout(seconds(1), 2);
  pool.connect(milliseconds(1010));
  EXPECT_EQ(pool.next_open(), milliseconds(1010));
  pool.connect(milliseconds(1020));
  const ConnId a = pool.conn_of(1);
  const ConnId b = pool.conn_of(2);
  pool.give_back(seconds(5), 1);
  pool.give_back(seconds(5), 2);
  pool.run_until(tick(304) - microseconds(1));
  EXPECT_TRUE(pool.closed.empty());
  pool.run_until(tick(455) - microseconds(1));
  EXPECT_EQ(pool.closed, std::vector<ConnId>{b});
  EXPECT_EQ(pool.close_times, std::vector<Duration>{tick(304)});
  pool.run_until(tick(455));
  EXPECT_EQ(pool.closed, (std::vector<ConnId>{b, a}));
  EXPECT_EQ(pool.close_times.back(), tick(455));
}

// query_wait_timeout 10 s, checked at ticks with "more than": the client waiting from 2 s fails
// at the first tick after 12 s, tick 37 (12.333321 s; tick 36 is 11.999988 s); the one from
// 3 s at tick 40 (13.33332 s; tick 39 is 12.999987 s).
TEST(PgbouncerCore, QueryWaitTimeoutFailsAWaiterAtATick) {  // P14, P1
  PgbouncerConfig c = plain(1);
  c.query_wait_timeout = seconds(10);
  Bouncer pool(c);
  pool.checkout(seconds(1), 1);
  pool.connect(milliseconds(1010));
  pool.checkout(seconds(2), 2);
  pool.checkout(seconds(3), 3);
  pool.run_until(tick(37) - microseconds(1));
  EXPECT_TRUE(pool.failed.empty());
  pool.run_until(tick(37));
  EXPECT_EQ(ids(pool.failed), std::vector<std::uint64_t>{2});
  EXPECT_EQ(pool.failed[0].failure, Failure::kTimeout);
  pool.run_until(tick(40) - microseconds(1));
  EXPECT_EQ(pool.failed.size(), 1u);
  pool.run_until(tick(40));
  EXPECT_EQ(ids(pool.failed), (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(pool.status().cl_waiting, 0);
  pool.give_back(seconds(20), 1);
  EXPECT_EQ(pool.status().sv_idle, 1) << "nobody waits for it any more";
}

// A driver with its own timer per waiter: WaitExpired does nothing before the tick the waiter
// would time out at (tick 37, as above), and fails it from then on.
TEST(PgbouncerCore, WaitExpiredFailsAWaiterOnlyFromItsTick) {  // P14
  PgbouncerConfig c = plain(1);
  c.query_wait_timeout = seconds(10);
  Bouncer pool(c);
  pool.checkout(seconds(1), 1);
  pool.connect(milliseconds(1010));
  pool.checkout(seconds(2), 2);
  pool.checkout(seconds(2), 3);
  pool.core().handle(at(seconds(12)), WaitExpired{RequestId{3}});
  pool.core().handle(at(tick(37) - microseconds(1)), WaitExpired{RequestId{3}});
  EXPECT_EQ(pool.status().cl_waiting, 2);
  pool.core().handle(at(tick(37)), WaitExpired{RequestId{3}});
  pool.core().check_invariants();
  EXPECT_EQ(pool.status().cl_waiting, 1) << "3 failed; 2 still waits for its tick";
  pool.tick_at(tick(37));
  EXPECT_EQ(ids(pool.failed), (std::vector<std::uint64_t>{3, 2}));
}

// A failed login: waiters stay queued, a newcomer fails fast while no server is connected, and
// the next login comes at the first tick at or after the failed one's start + 15 s: at or after
// 16 s, tick 49 (16.333317 s; tick 48 is 15.999984 s).
TEST(PgbouncerCore, AFailedLoginWaitsServerLoginRetry) {  // P8, P9, P6
  Bouncer pool(PgbouncerConfig{});
  pool.checkout(seconds(1), 1);
  pool.connect_fails(milliseconds(1500), 7);
  EXPECT_EQ(pool.opens_pending(), 0u);
  EXPECT_EQ(pool.status().cl_waiting, 1) << "a waiting client stays queued";
  pool.checkout(seconds(5), 2);
  ASSERT_EQ(pool.failed.size(), 1u);
  EXPECT_EQ(pool.failed[0].request, 2u);
  EXPECT_EQ(pool.failed[0].failure, Failure::kConnectFailed);
  EXPECT_EQ(pool.failed[0].cause, 7);
  EXPECT_EQ(pool.next_open(), tick(49));
  pool.connect(milliseconds(16400));
  EXPECT_TRUE(pool.is_granted(1));
  // The login worked: the next newcomer queues, and its login starts at once.
  pool.checkout(seconds(17), 3);
  EXPECT_EQ(pool.failed.size(), 1u);
  EXPECT_EQ(pool.next_open(), seconds(17));
}

TEST(PgbouncerCore, AClientQueuesNormallyWhileAnyServerIsConnected) {  // P9
  Bouncer pool(plain(2));
  pool.checkout(seconds(1), 1);
  pool.connect(milliseconds(1010));
  pool.checkout(seconds(2), 2);
  pool.connect_fails(milliseconds(2100));
  pool.checkout(seconds(3), 3);
  EXPECT_TRUE(pool.failed.empty()) << "server 1 is connected (busy): no fast fail";
  EXPECT_EQ(pool.status().cl_waiting, 2);
  pool.give_back(seconds(4), 1);
  EXPECT_TRUE(pool.is_granted(2));
}

// server_check_delay 30 s: a server idle since 2 s moves to SV_USED at the first tick after
// 32 s, tick 97 (32.333301 s; tick 96 is 31.999968 s); before that it is reused unchecked.
// Reused at 32.2 s and back at 32.3 s, it moves at the first tick after 62.3 s, tick 187
// (62.333271 s); a client after that waits for one server_check_query.
TEST(PgbouncerCore, AServerUnusedForServerCheckDelayIsCheckedBeforeReuse) {  // P10, P13
  Bouncer pool(PgbouncerConfig{});
  pool.checkout(seconds(1), 1);
  pool.connect(milliseconds(1010));
  const ConnId conn = pool.conn_of(1);
  pool.give_back(seconds(2), 1);
  pool.checkout(milliseconds(32200), 2);
  EXPECT_TRUE(pool.is_granted(2)) << "idle 30.2 s but not moved yet: no check";
  EXPECT_TRUE(pool.pings().empty());
  pool.give_back(milliseconds(32300), 2);
  pool.run_until(tick(187) - microseconds(1));
  EXPECT_EQ(pool.status().sv_idle, 1);
  pool.run_until(tick(187));
  EXPECT_EQ(pool.status().sv_used, 1);
  pool.checkout(milliseconds(62400), 3);
  ASSERT_EQ(pool.pings().size(), 1u);
  EXPECT_EQ(pool.pings()[0].conn, conn);
  EXPECT_EQ(pool.pings()[0].request, RequestId{3});
  EXPECT_FALSE(pool.is_granted(3));
  EXPECT_EQ(pool.status().sv_tested, 1);
  EXPECT_EQ(pool.status().cl_waiting, 1);
  pool.answer_ping(milliseconds(62401), PingOutcome::kOk);
  ASSERT_TRUE(pool.is_granted(3));
  EXPECT_EQ(pool.conn_of(3), conn);
  EXPECT_EQ(pool.opened, 1);
}

// Servers idle from 1.5 s (A) and 2.5 s (B) move to SV_USED at the first ticks after 31.5 s and
// 32.5 s, each prepended: B is checked first. Its check fails: it is closed, and A is checked
// for the same client. A failed check is no failed login: the next login starts at once.
TEST(PgbouncerCore, AFailedCheckClosesTheServerAndChecksTheNext) {  // P13, P4
  Bouncer pool(PgbouncerConfig{});
  pool.checkout(seconds(1), 1);
  pool.checkout(seconds(1), 2);
  pool.connect(milliseconds(1010));
  pool.connect(milliseconds(1020));
  const ConnId a = pool.conn_of(1);
  const ConnId b = pool.conn_of(2);
  pool.give_back(milliseconds(1500), 1);
  pool.give_back(milliseconds(2500), 2);
  pool.run_until(seconds(40));
  EXPECT_EQ(pool.status().sv_used, 2);
  pool.checkout(seconds(40), 3);
  ASSERT_EQ(pool.pings().size(), 1u);
  EXPECT_EQ(pool.pings()[0].conn, b);
  pool.answer_ping(milliseconds(40001), PingOutcome::kDisconnect);
  EXPECT_EQ(pool.closed, std::vector<ConnId>{b});
  ASSERT_EQ(pool.pings().size(), 1u);
  EXPECT_EQ(pool.pings()[0].conn, a);
  EXPECT_EQ(pool.opens_pending(), 0u) << "a used server covers the waiter";
  pool.answer_ping(milliseconds(40002), PingOutcome::kOk);
  EXPECT_EQ(pool.conn_of(3), a);
  pool.checkout(seconds(41), 4);
  EXPECT_EQ(pool.next_open(), seconds(41));
  EXPECT_EQ(pool.opened, 3);
}

TEST(PgbouncerCore, ServerCheckDelayZeroChecksBeforeEveryReuse) {  // P5, P13
  PgbouncerConfig c;
  c.server_check_delay = Duration{};
  Bouncer pool(c);
  pool.checkout(seconds(1), 1);
  pool.connect(milliseconds(1010));
  pool.give_back(seconds(2), 1);
  EXPECT_EQ(pool.status().sv_used, 1) << "released straight to SV_USED";
  pool.checkout(milliseconds(2001), 2);
  ASSERT_EQ(pool.pings().size(), 1u);
  pool.answer_ping(milliseconds(2002), PingOutcome::kOk);
  EXPECT_TRUE(pool.is_granted(2));
}

// A pool started at 0.25 s, whose one server is idle from 0.6 s. Ticks at 0.25 s + k periods:
// the move to SV_USED at the first after 30.6 s (k = 92: 30.916636 s), the idle close at the
// first after 600.6 s (k = 1802: 600.916066 s); nothing between or after. Three hours later a
// login fails at 10800.2 s; its retry comes at the first tick at or after 10800.1 + 15 s,
// k = 32445: 0.25 s + 32445 x 0.333333 s = 10815.239185 s.
TEST(PgbouncerCore, SkippedJanitorTicksKeepTheirPhase) {  // P1
  const Duration start = milliseconds(250);
  Bouncer pool(PgbouncerConfig{}, start);
  pool.checkout(milliseconds(500), 1);
  pool.connect(milliseconds(510));
  const ConnId conn = pool.conn_of(1);
  pool.give_back(milliseconds(600), 1);
  pool.run_until(hours(3));
  EXPECT_EQ(pool.ticks, (std::vector<Duration>{tick(92, start), tick(1802, start)}));
  EXPECT_EQ(pool.ticks[1], microseconds(600'916'066));
  EXPECT_EQ(pool.closed, std::vector<ConnId>{conn});
  EXPECT_FALSE(pool.core().poll_timeout()) << "an idle, empty pool costs no events";
  pool.checkout(milliseconds(10'800'100), 2);
  pool.connect_fails(milliseconds(10'800'200));
  EXPECT_EQ(pool.next_open(), tick(32445, start));
  EXPECT_EQ(pool.next_open(), microseconds(10'815'239'185));
  for (const Duration t : pool.ticks) {
    EXPECT_EQ((t - start) % kPeriod, Duration{}) << format_duration(t) << " is off the phase";
  }
  EXPECT_EQ(pool.ticks.size(), 3u);
}

TEST(PgbouncerCore, AServerThatDiesInATransactionIsClosedAndReplacedOnDemand) {  // P15
  Bouncer pool(plain(1));
  pool.checkout(seconds(1), 1);
  pool.connect(milliseconds(1010));
  const ConnId conn = pool.conn_of(1);
  pool.checkout(seconds(2), 2);
  pool.server_dies(seconds(3), 1);
  EXPECT_EQ(pool.closed, std::vector<ConnId>{conn});
  EXPECT_EQ(pool.next_open(), seconds(3)) << "no login retry: it was no login failure";
  pool.connect(milliseconds(3010));
  EXPECT_TRUE(pool.is_granted(2));
  EXPECT_TRUE(pool.failed.empty());
}

TEST(PgbouncerCore, MaxDbConnectionsCapsTheServers) {  // P6
  PgbouncerConfig c = plain(20);
  c.max_db_connections = 2;
  c.reserve_pool_size = 5;
  Bouncer pool(c);
  for (std::uint64_t r = 1; r <= 4; ++r) pool.checkout(seconds(1), r);
  pool.connect(milliseconds(1010));
  pool.connect(milliseconds(1020));
  pool.run_until(seconds(60));
  EXPECT_EQ(pool.opens_pending(), 0u);
  EXPECT_EQ(pool.opened, 2);
}

TEST(PgbouncerCore, RefusesEventsWithoutAPgbouncerCounterpart) {
  Bouncer pool(plain(1));
  pool.checkout(seconds(1), 1);
  pool.connect(milliseconds(1010));
  const std::vector<std::pair<Event, std::string>> refused = {
      {ResetDone{SlotId{0}, ConnId{100}, ResetOutcome::kOk}, "ResetDone"},
      {Invalidated{SlotId{0}, Invalidation::kHard}, "Invalidated"},
      {Detached{SlotId{0}}, "Detached"},
      {DetachedReturned{ConnId{100}}, "DetachedReturned"},
      {PoolInvalidated{}, "PoolInvalidated"},
      {Disposed{}, "Disposed"},
  };
  for (const auto& [event, name] : refused) {
    try {
      pool.core().handle(at(seconds(2)), event);
      ADD_FAILURE() << name << " was accepted";
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(PgbouncerCore, ValidateNamesTheKeyAndWhatIsAllowed) {
  const auto refused = [](auto change, const std::string& key) {
    PgbouncerConfig c;
    change(c);
    const auto why = validate(c);
    ASSERT_TRUE(why) << key;
    EXPECT_EQ(why->rfind(key, 0), 0u) << *why;
    EXPECT_THROW(PgbouncerCore{c}, std::invalid_argument);
  };
  refused([](PgbouncerConfig& c) { c.default_pool_size = 0; }, "pgbouncer.default_pool_size");
  refused([](PgbouncerConfig& c) { c.min_pool_size = 21; }, "pgbouncer.min_pool_size");
  refused([](PgbouncerConfig& c) { c.reserve_pool_size = -1; }, "pgbouncer.reserve_pool_size");
  refused([](PgbouncerConfig& c) { c.max_db_connections = -1; }, "pgbouncer.max_db_connections");
  refused([](PgbouncerConfig& c) { c.query_wait_timeout = -seconds(1); },
          "pgbouncer.query_wait_timeout");
  refused([](PgbouncerConfig& c) { c.server_lifetime = -seconds(1); },
          "pgbouncer.server_lifetime");
  refused([](PgbouncerConfig& c) { c.janitor_period = Duration{}; }, "pgbouncer.janitor_period");
  const PgbouncerConfig defaults;
  EXPECT_FALSE(validate(defaults));
  EXPECT_EQ(defaults.default_pool_size, 20);
  EXPECT_EQ(defaults.server_idle_timeout, seconds(600));
  EXPECT_EQ(defaults.server_lifetime, seconds(3600));
  EXPECT_EQ(defaults.query_wait_timeout, seconds(120));
  EXPECT_EQ(defaults.janitor_period, kPeriod);
}

// ---- property test ------------------------------------------------------------------------------

// Random valid inputs against random small configs; invariants after every step, and the
// driver's own bookkeeping: every request is answered at most once, a Grant goes to a request
// that waits, never to a server in use; a close never hits a server in a transaction; at most
// one login at a time; no more servers than pool + reserve.
class RandomDriver {
 public:
  // With `shadow`, a second core with skip_idle_ticks off gets the same inputs and runs every
  // janitor tick; its actions, with their times, must be the primary's.
  RandomDriver(std::uint64_t seed, std::ostringstream& log, bool shadow = false)
      : rng_(seed), log_(log) {
    config_.default_pool_size = pick(1, 4);
    config_.min_pool_size = pick(0, config_.default_pool_size);
    config_.reserve_pool_size = pick(0, 2);
    config_.reserve_pool_timeout = milliseconds(pick(0, 3) * 1000);
    config_.server_idle_timeout = seconds(pick(0, 2) * 20);
    config_.server_lifetime = seconds(pick(0, 3) * 30);
    config_.query_wait_timeout = seconds(pick(0, 2) * 5);
    config_.server_login_retry = seconds(pick(0, 2) * 3);
    config_.server_check_delay = seconds(pick(0, 2) * 4);
    if (pick(0, 3) == 0) config_.server_check_query = "";
    config_.max_db_connections = pick(0, 1) * pick(1, 5);
    config_.janitor_period = pick(0, 1) == 0 ? kPeriod : milliseconds(pick(50, 2000));
    log_ << "pool " << config_.default_pool_size << " min " << config_.min_pool_size
         << " reserve " << config_.reserve_pool_size << "/"
         << format_duration(config_.reserve_pool_timeout) << " idle "
         << format_duration(config_.server_idle_timeout) << " life "
         << format_duration(config_.server_lifetime) << " wait "
         << format_duration(config_.query_wait_timeout) << " retry "
         << format_duration(config_.server_login_retry) << " check "
         << format_duration(config_.server_check_delay) << " '" << config_.server_check_query
         << "' maxdb " << config_.max_db_connections << " period "
         << format_duration(config_.janitor_period) << "\n";
    core_.emplace(config_);
    core_->start(at(now_));
    if (shadow) {
      PgbouncerConfig every_tick = config_;
      every_tick.skip_idle_ticks = false;
      shadow_.emplace(every_tick);
      shadow_->start(at(now_));
    }
    after_input();
  }

  void step() {
    const int choice = pick(0, 99);
    if (choice < 30) {
      input(CheckoutRequested{RequestId{next_request_++}});
    } else if (choice < 50 && !granted_.empty()) {
      input(Returned{take_granted()});
    } else if (choice < 53 && !granted_.empty()) {
      input(DisconnectDetected{take_granted()});
    } else if (choice < 65 && !opens_.empty()) {
      const SlotId slot = opens_.back();
      opens_.pop_back();
      if (pick(0, 3) == 0) {
        input(ConnectFailed{slot, 3});
      } else {
        const ConnId conn{next_conn_++};
        live_.insert(static_cast<std::uint64_t>(conn));
        input(ConnectSucceeded{slot, conn});
      }
    } else if (choice < 75 && !pings_.empty()) {
      const std::size_t i = static_cast<std::size_t>(pick(0, static_cast<int>(pings_.size()) - 1));
      const SlotId slot = pings_[i];
      pings_.erase(pings_.begin() + static_cast<std::ptrdiff_t>(i));
      const PingOutcome outcome = pick(0, 3) == 0 ? PingOutcome::kDisconnect : PingOutcome::kOk;
      input(PingResult{slot, outcome, 0});
    } else if (choice < 78 && !waiting_.empty()) {
      auto it = waiting_.begin();
      std::advance(it, pick(0, static_cast<int>(waiting_.size()) - 1));
      input(WaitExpired{RequestId{*it}});
    } else {
      const Duration by =
          pick(0, 9) == 0 ? seconds(pick(1, shadow_ ? 60 : 400)) : milliseconds(pick(0, 900));
      advance(now_ + by);
    }
  }

  // Everything answered, every transaction ended; then the pool must quiet down.
  void drain() {
    for (int round = 0; round < 1000 && (!opens_.empty() || !pings_.empty() || !granted_.empty());
         ++round) {
      while (!granted_.empty()) input(Returned{take_granted()});
      while (!pings_.empty()) {
        const SlotId slot = pings_.back();
        pings_.pop_back();
        input(PingResult{slot, PingOutcome::kOk, 0});
      }
      while (!opens_.empty()) {
        const SlotId slot = opens_.back();
        opens_.pop_back();
        const ConnId conn{next_conn_++};
        live_.insert(static_cast<std::uint64_t>(conn));
        input(ConnectSucceeded{slot, conn});
      }
      advance(now_ + milliseconds(500));
    }
    if (shadow_) {
      shadow_catch_up();
      compare();
      return;
    }
    if (config_.min_pool_size > 0 || config_.query_wait_timeout.count() == 0) return;
    // No client left waiting and no minimum to keep: within a few idle timeouts, lifetimes or
    // check delays the janitor has nothing left to do.
    advance(now_ + hours(2));
    if (!waiting_.empty() || !opens_.empty() || !pings_.empty()) return;
    EXPECT_FALSE(core_->poll_timeout()) << "a quiet pool still ticks";
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  SlotId take_granted() {
    auto it = granted_.begin();
    std::advance(it, pick(0, static_cast<int>(granted_.size()) - 1));
    const SlotId slot = it->second;
    granted_.erase(it);
    in_use_.erase(static_cast<std::uint32_t>(slot));
    return slot;
  }

  void input(const Event& e) {
    log_ << format_duration(now_) << " " << e << "\n";
    if (const auto* c = std::get_if<CheckoutRequested>(&e)) {
      waiting_.insert(static_cast<std::uint64_t>(c->request));
    }
    core_->handle(at(now_), e);
    after_input();
    if (shadow_) {
      shadow_catch_up();
      shadow_->handle(at(now_), e);
      record(*shadow_, shadow_actions_);
      compare();
    }
  }

  // The shadow runs every tick up to now, as the primary has run those it planned.
  void shadow_catch_up() {
    while (auto next = shadow_->poll_timeout()) {
      if (*next > at(now_)) break;
      shadow_->handle_timeout(*next);
      shadow_->check_invariants();
      record(*shadow_, shadow_actions_, next->time_since_epoch());
    }
  }
  void record(PgbouncerCore& core, std::vector<std::string>& out,
              std::optional<Duration> when = std::nullopt) {
    while (auto action = core.poll_action()) {
      std::ostringstream line;
      line << format_duration(when.value_or(now_)) << " " << *action;
      out.push_back(line.str());
    }
  }
  void compare() {
    ASSERT_EQ(primary_actions_.size(), shadow_actions_.size())
        << "with every tick run, the actions differ; last: "
        << (shadow_actions_.empty() ? "" : shadow_actions_.back()) << " / "
        << (primary_actions_.empty() ? "" : primary_actions_.back());
    for (std::size_t i = compared_; i < primary_actions_.size(); ++i) {
      ASSERT_EQ(primary_actions_[i], shadow_actions_[i]) << "action " << i;
    }
    compared_ = primary_actions_.size();
  }

  void advance(Duration to) {
    while (auto next = core_->poll_timeout()) {
      ASSERT_GE(*next, at(now_)) << "a timer in the past";
      if (*next > at(to)) break;
      now_ = next->time_since_epoch();
      log_ << format_duration(now_) << " tick\n";
      core_->handle_timeout(at(now_));
      after_input();
    }
    now_ = to;
  }

  void after_input() {
    core_->check_invariants();
    while (auto action = core_->poll_action()) {
      log_ << "  -> " << *action << "\n";
      if (shadow_) {
        std::ostringstream line;
        line << format_duration(now_) << " " << *action;
        primary_actions_.push_back(line.str());
      }
      std::visit(
          [this](const auto& a) {
            using T = std::decay_t<decltype(a)>;
            if constexpr (std::is_same_v<T, OpenConnection>) {
              ASSERT_TRUE(opens_.empty()) << "two logins at once";
              opens_.push_back(a.slot);
            } else if constexpr (std::is_same_v<T, CloseConnection>) {
              const auto conn = static_cast<std::uint64_t>(a.conn);
              ASSERT_EQ(live_.erase(conn), 1u) << "closed a server that is not open";
              for (const auto& [request, slot] : granted_) {
                ASSERT_NE(conn, static_cast<std::uint64_t>(conn_of_.at(
                                    static_cast<std::uint32_t>(slot))))
                    << "closed the server of a transaction";
              }
            } else if constexpr (std::is_same_v<T, Ping>) {
              ASSERT_EQ(live_.count(static_cast<std::uint64_t>(a.conn)), 1u);
              ASSERT_TRUE(a.request && waiting_.count(static_cast<std::uint64_t>(*a.request)));
              pings_.push_back(a.slot);
            } else if constexpr (std::is_same_v<T, Grant>) {
              const auto request = static_cast<std::uint64_t>(a.request);
              ASSERT_EQ(waiting_.erase(request), 1u) << "a grant for a request not waiting";
              ASSERT_TRUE(in_use_.insert(static_cast<std::uint32_t>(a.slot)).second)
                  << "a grant of a server in use";
              ASSERT_EQ(live_.count(static_cast<std::uint64_t>(a.conn)), 1u);
              conn_of_[static_cast<std::uint32_t>(a.slot)] = a.conn;
              granted_.emplace(request, a.slot);
            } else if constexpr (std::is_same_v<T, Fail>) {
              ASSERT_EQ(waiting_.erase(static_cast<std::uint64_t>(a.request)), 1u)
                  << "a failure for a request not waiting";
            } else {
              FAIL() << "unexpected action " << Action(a);
            }
          },
          *action);
    }
    const PgbouncerStatus s = core_->status();
    ASSERT_EQ(s.cl_waiting, static_cast<int>(waiting_.size()));
    ASSERT_EQ(s.sv_active, static_cast<int>(granted_.size()));
    // Servers closed while their check was in flight are out of live_ already.
    ASSERT_LE(static_cast<int>(live_.size() + opens_.size()),
              config_.default_pool_size + config_.reserve_pool_size);
  }

  PgbouncerConfig config_;
  std::mt19937_64 rng_;
  std::ostringstream& log_;
  std::optional<PgbouncerCore> core_;
  std::optional<PgbouncerCore> shadow_;
  std::vector<std::string> primary_actions_;
  std::vector<std::string> shadow_actions_;
  std::size_t compared_ = 0;
  Duration now_ = milliseconds(100);
  std::uint64_t next_request_ = 1;
  std::uint64_t next_conn_ = 1000;
  std::set<std::uint64_t> waiting_;                 // asked, not answered
  std::map<std::uint64_t, SlotId> granted_;         // request -> slot
  std::set<std::uint32_t> in_use_;                  // slots granted
  std::map<std::uint32_t, ConnId> conn_of_;         // slot -> its server when granted
  std::set<std::uint64_t> live_;                    // open servers
  std::vector<SlotId> opens_;
  std::vector<SlotId> pings_;
};

TEST(PgbouncerCore, InvariantsHoldAfterRandomEventSequences) {
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    std::ostringstream log;
    {
      RandomDriver driver(seed, log);
      for (int i = 0; i < 3000 && !::testing::Test::HasFatalFailure(); ++i) driver.step();
      if (!::testing::Test::HasFatalFailure()) driver.drain();
    }
    if (::testing::Test::HasFailure()) {
      const std::string text = log.str();
      ADD_FAILURE() << "seed " << seed << "; the script's last lines:\n"
                    << text.substr(text.size() > 4000 ? text.size() - 4000 : 0);
      return;
    }
  }
}

// P1's claim: the ticks skipped can change nothing. The same random inputs, with every tick
// run, give the same actions at the same times.
TEST(PgbouncerCore, SkippedTicksChangeNothing) {
  for (std::uint64_t seed = 1001; seed <= 1030; ++seed) {
    std::ostringstream log;
    {
      RandomDriver driver(seed, log, /*shadow=*/true);
      for (int i = 0; i < 800 && !::testing::Test::HasFatalFailure(); ++i) driver.step();
      if (!::testing::Test::HasFatalFailure()) driver.drain();
    }
    if (::testing::Test::HasFailure()) {
      const std::string text = log.str();
      ADD_FAILURE() << "seed " << seed << "; the script's last lines:\n"
                    << text.substr(text.size() > 4000 ? text.size() - 4000 : 0);
      return;
    }
  }
}

}  // namespace
}  // namespace poolsim
