// PsycopgCore against the rules at the top of psycopg_core.cpp (S1-S13), one test per rule or
// published behaviour; each expectation is worked out from psycopg_pool 3.1.5's source (3.2+'s
// for check = true), as the comments show. A small driver plays the database: it answers
// OpenConnection, Ping and Reset when the test says so, and records every action. Invariants
// are checked after every input. Time moves only through the times the tests pass.
#include "pool_model/psycopg_core.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace poolsim {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;

Instant at(Duration d) { return Instant(d); }

class Psycopg {
 public:
  explicit Psycopg(PsycopgConfig config, Duration start = {}) : core_(config) {
    core_.start(at(start));
    last_input_ = start;
    collect();
  }

  // As a driver does: the timers due by t first, then the input.
  void feed(Duration t, const Event& e) {
    run_until(t);
    core_.handle(at(t), e);
    last_input_ = t;
    collect();
  }
  void tick(Duration t) {
    core_.handle_timeout(at(t));
    ++ticks;
    last_input_ = t;
    collect();
  }
  // Runs every timer due up to t, in order.
  void run_until(Duration t) {
    while (auto next = core_.poll_timeout()) {
      if (*next > at(t)) break;
      tick(next->time_since_epoch());
    }
  }
  void checkout(Duration t, std::uint64_t request) {
    feed(t, CheckoutRequested{RequestId{request}});
  }
  // putconn(): Returned, or a connection that came back broken.
  void give_back(Duration t, std::uint64_t request) { feed(t, Returned{take(request)}); }
  void give_back_broken(Duration t, std::uint64_t request) {
    feed(t, DisconnectDetected{take(request)});
  }
  void invalidate(Duration t, std::uint64_t request, Invalidation kind) {
    feed(t, Invalidated{take(request), kind});
  }

  // Runs the timers, one by one, until a connect is started (unless one is pending); returns
  // the time of the input that started it.
  Duration next_open(Duration limit = hours(2)) {
    while (opens_.empty()) {
      const auto next = core_.poll_timeout();
      if (!next || *next > at(limit)) {
        ADD_FAILURE() << "no connect started before " << format_duration(limit);
        return limit;
      }
      tick(next->time_since_epoch());
    }
    return last_input_;
  }
  // The connect started first (or the i-th pending) succeeds, or fails.
  ConnId connect(Duration t, std::size_t i = 0) {
    EXPECT_LT(i, opens_.size()) << "no connect in flight";
    if (i >= opens_.size()) return ConnId{};
    const OpenConnection open = opens_[i];
    opens_.erase(opens_.begin() + static_cast<std::ptrdiff_t>(i));
    EXPECT_FALSE(open.request) << "a psycopg client never connects";
    const ConnId conn{next_conn_++};
    feed(t, ConnectSucceeded{open.slot, conn});
    return conn;
  }
  void connect_fails(Duration t, std::size_t i = 0) {
    ASSERT_LT(i, opens_.size());
    const OpenConnection open = opens_[i];
    opens_.erase(opens_.begin() + static_cast<std::ptrdiff_t>(i));
    feed(t, ConnectFailed{open.slot, 1});
  }
  // Every connect in flight, and those the freed workers start then, succeed at t.
  void connect_all(Duration t) {
    while (!opens_.empty()) connect(t);
  }
  Ping answer_ping(Duration t, PingOutcome outcome, std::size_t i = 0) {
    EXPECT_LT(i, pings_.size());
    if (i >= pings_.size()) return Ping{};
    const Ping ping = pings_[i];
    pings_.erase(pings_.begin() + static_cast<std::ptrdiff_t>(i));
    feed(t, PingResult{ping.slot, outcome, 0});
    return ping;
  }
  Reset answer_reset(Duration t, ResetOutcome outcome, std::size_t i = 0) {
    EXPECT_LT(i, resets_.size());
    if (i >= resets_.size()) return Reset{};
    const Reset reset = resets_[i];
    resets_.erase(resets_.begin() + static_cast<std::ptrdiff_t>(i));
    feed(t, ResetDone{reset.slot, reset.conn, outcome});
    return reset;
  }

  PsycopgCore& core() { return core_; }
  PsycopgStatus status() const { return core_.status(); }
  Duration last_input() const { return last_input_; }
  std::size_t opens_pending() const { return opens_.size(); }
  std::size_t pings_pending() const { return pings_.size(); }
  std::size_t resets_pending() const { return resets_.size(); }
  const std::vector<Ping>& pings() const { return pings_; }
  bool is_granted(std::uint64_t request) const { return granted_.count(request) != 0; }
  ConnId conn_of(std::uint64_t request) const { return granted_.at(request).conn; }
  const std::map<std::uint64_t, Grant>& granted() const { return granted_; }

  std::vector<std::uint64_t> grant_order;  // requests granted, in order
  std::vector<Fail> failed;                // in order
  std::vector<Duration> fail_times;
  std::vector<ConnId> closed;              // connections closed, in order
  std::vector<Duration> close_times;
  std::vector<std::string> log;            // "open", "close", "ping", "reset", "grant", "fail"
  std::set<std::uint64_t> answered;        // requests granted or failed
  int opened = 0;
  std::size_t max_opens_in_flight = 0;
  int ticks = 0;

 private:
  SlotId take(std::uint64_t request) {
    const SlotId slot = granted_.at(request).slot;
    granted_.erase(request);
    return slot;
  }
  void answer_once(RequestId request) {
    const auto r = static_cast<std::uint64_t>(request);
    EXPECT_TRUE(answered.insert(r).second) << "request " << r << " answered twice";
  }
  void collect() {
    core_.check_invariants();
    while (auto action = core_.poll_action()) {
      std::visit(
          [this](const auto& a) {
            using T = std::decay_t<decltype(a)>;
            if constexpr (std::is_same_v<T, OpenConnection>) {
              opens_.push_back(a);
              ++opened;
              max_opens_in_flight = std::max(max_opens_in_flight, opens_.size());
              log.emplace_back("open");
            } else if constexpr (std::is_same_v<T, CloseConnection>) {
              closed.push_back(a.conn);
              close_times.push_back(last_input_);
              log.emplace_back("close");
            } else if constexpr (std::is_same_v<T, Ping>) {
              EXPECT_TRUE(a.request) << "a psycopg check is always for a client";
              pings_.push_back(a);
              log.emplace_back("ping");
            } else if constexpr (std::is_same_v<T, Reset>) {
              EXPECT_EQ(a.kind, ResetKind::kRollback);
              resets_.push_back(a);
              log.emplace_back("reset");
            } else if constexpr (std::is_same_v<T, Grant>) {
              answer_once(a.request);
              granted_.emplace(static_cast<std::uint64_t>(a.request), a);
              grant_order.push_back(static_cast<std::uint64_t>(a.request));
              log.emplace_back("grant");
            } else if constexpr (std::is_same_v<T, Fail>) {
              answer_once(a.request);
              failed.push_back(a);
              fail_times.push_back(last_input_);
              log.emplace_back("fail");
            } else {
              ADD_FAILURE() << "unexpected action " << Action(a);
            }
          },
          *action);
    }
  }

  PsycopgCore core_;
  std::vector<OpenConnection> opens_;
  std::vector<Ping> pings_;
  std::vector<Reset> resets_;
  std::map<std::uint64_t, Grant> granted_;
  std::uint64_t next_conn_ = 100;
  Duration last_input_{};
};

PsycopgConfig config(int min_size, int max_size) {
  PsycopgConfig c;
  c.min_size = min_size;
  c.max_size = max_size;
  c.reset_on_return = ResetOnReturn::kNone;
  return c;
}

std::vector<std::uint64_t> requests(const std::vector<Fail>& fails) {
  std::vector<std::uint64_t> out;
  for (const Fail& f : fails) out.push_back(static_cast<std::uint64_t>(f.request));
  return out;
}

// S2 [P3, P36]: _nconns = min_size at once; min_size AddConnection tasks in one FIFO queue,
// taken by num_workers workers, a connect holding its worker: 3 in flight, then one more each
// time one ends, until 10 have been opened.
TEST(PsycopgCore, OpensMinSizeConnectionsAtMostNumWorkersAtATime) {
  PsycopgConfig c = config(10, 10);
  c.num_workers = 3;
  Psycopg pool(c);
  EXPECT_EQ(pool.opens_pending(), 3u);
  EXPECT_EQ(pool.status().pool_size, 10) << "_nconns counts the connects to come";
  EXPECT_EQ(pool.status().tasks_queued, 7);
  for (int i = 1; i <= 10; ++i) {
    pool.connect(milliseconds(10 * i));
    EXPECT_EQ(pool.opens_pending(), static_cast<std::size_t>(std::min(3, 10 - i)));
  }
  EXPECT_EQ(pool.opened, 10);
  EXPECT_EQ(pool.max_opens_in_flight, 3u);
  EXPECT_EQ(pool.status().pool_available, 10);
  EXPECT_EQ(pool.status().pool_size, 10);
  EXPECT_EQ(pool.status().connections_num, 10);
  // ShrinkPool is scheduled max_idle after open().
  EXPECT_EQ(pool.core().poll_timeout(), at(minutes(10)));
}

// S3, S7 [P7]: getconn pops from the left, putconn appends on the right. The deque is
// [c1 c2 c3] in connect order; r1, r2 take c1, c2; c1 comes back: [c3 c1]; r3 gets c3, r4 c1.
TEST(PsycopgCore, GetconnTakesTheConnectionIdleLongest) {
  PsycopgConfig c = config(3, 3);
  Psycopg pool(c);
  const ConnId c1 = pool.connect(milliseconds(10));
  const ConnId c2 = pool.connect(milliseconds(20));
  const ConnId c3 = pool.connect(milliseconds(30));
  pool.checkout(seconds(1), 1);
  pool.checkout(seconds(1), 2);
  EXPECT_EQ(pool.conn_of(1), c1);
  EXPECT_EQ(pool.conn_of(2), c2);
  pool.give_back(seconds(2), 1);
  pool.checkout(seconds(3), 3);
  pool.checkout(seconds(3), 4);
  EXPECT_EQ(pool.conn_of(3), c3);
  EXPECT_EQ(pool.conn_of(4), c1);
  EXPECT_EQ(pool.status().pool_available, 0);
}

// S5, S6 [P9, P10]: min 2, max 4, both lent. r3 queues: _nconns 3, one growth connect. r4 and
// r5 queue while _growing: nothing more. c3 goes to r3; _nconns 3 < 4 and r4, r5 wait: the
// next growth connect (_nconns 4). c4 goes to r4; _nconns = max_size: _growing = False. r5
// gets the first connection returned.
TEST(PsycopgCore, AWaiterGrowsThePoolOneConnectionAtATime) {
  PsycopgConfig c = config(2, 4);
  c.num_workers = 3;
  Psycopg pool(c);
  pool.connect_all(milliseconds(10));
  pool.checkout(seconds(1), 1);
  pool.checkout(seconds(1), 2);
  pool.max_opens_in_flight = 0;
  pool.checkout(seconds(1), 3);
  EXPECT_EQ(pool.opens_pending(), 1u);
  EXPECT_EQ(pool.status().pool_size, 3);
  EXPECT_TRUE(pool.status().growing);
  pool.checkout(seconds(1), 4);
  pool.checkout(seconds(1), 5);
  EXPECT_EQ(pool.opens_pending(), 1u) << "one growth connect at a time, with 3 workers";
  EXPECT_EQ(pool.status().requests_waiting, 3);
  EXPECT_EQ(pool.status().requests_queued, 3);
  pool.connect(milliseconds(1100));
  EXPECT_TRUE(pool.is_granted(3));
  EXPECT_EQ(pool.opens_pending(), 1u);
  EXPECT_EQ(pool.status().pool_size, 4);
  pool.connect(milliseconds(1200));
  EXPECT_TRUE(pool.is_granted(4));
  EXPECT_EQ(pool.opens_pending(), 0u) << "max_size reached";
  EXPECT_FALSE(pool.status().growing);
  EXPECT_FALSE(pool.is_granted(5));
  const ConnId first = pool.conn_of(1);
  pool.give_back(milliseconds(1300), 1);
  ASSERT_TRUE(pool.is_granted(5));
  EXPECT_EQ(pool.conn_of(5), first);
  EXPECT_EQ(pool.grant_order, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(pool.max_opens_in_flight, 1u);
  EXPECT_EQ(pool.opened, 4);

  // Growth stops when nobody waits any more, below max_size: min 1, max 4, one waiter, one
  // growth connect; after it is handed over _waiting is empty and _nconns 2 >= min_size.
  Psycopg one(config(1, 4));
  one.connect(milliseconds(10));
  one.checkout(seconds(1), 1);
  one.checkout(seconds(1), 2);
  one.connect(milliseconds(1100));
  EXPECT_TRUE(one.is_granted(2));
  EXPECT_EQ(one.opens_pending(), 0u);
  EXPECT_FALSE(one.status().growing);
  EXPECT_EQ(one.status().pool_size, 2);
}

// S4 [P8]: a returned connection goes to the oldest waiter, never into the deque while a
// client waits.
TEST(PsycopgCore, AReturnedConnectionGoesToTheOldestWaiter) {
  Psycopg pool(config(2, 2));
  pool.connect_all(milliseconds(10));
  pool.checkout(seconds(1), 1);
  pool.checkout(seconds(1), 2);
  pool.checkout(seconds(2), 3);
  pool.checkout(seconds(3), 4);
  pool.checkout(seconds(4), 5);
  EXPECT_EQ(pool.opens_pending(), 0u) << "_nconns = max_size: no growth";
  const ConnId second = pool.conn_of(2);
  pool.give_back(seconds(5), 2);
  EXPECT_EQ(pool.conn_of(3), second);
  pool.give_back(seconds(5), 1);
  EXPECT_TRUE(pool.is_granted(4));
  EXPECT_FALSE(pool.is_granted(5));
  EXPECT_EQ(pool.status().pool_available, 0);
  EXPECT_EQ(pool.status().requests_waiting, 1);
}

// S3, S4 [P12, P13]: WaitingClient.wait(timeout) ends at getconn + timeout with PoolTimeout;
// the entry stays in _waiting (requests_waiting 1) until the next connection added drains it
// into the deque. timeout 0 still serves an idle connection in 3.1.
TEST(PsycopgCore, AWaiterTimesOutAtExactlyTimeout) {
  PsycopgConfig c = config(1, 1);
  c.timeout = seconds(2);
  Psycopg pool(c);
  pool.connect(milliseconds(10));
  pool.checkout(seconds(1), 1);
  pool.checkout(seconds(1), 2);
  pool.run_until(seconds(3) - nanoseconds(1));
  EXPECT_TRUE(pool.failed.empty());
  pool.run_until(seconds(3));
  ASSERT_EQ(pool.failed.size(), 1u);
  EXPECT_EQ(pool.failed[0].request, RequestId{2});
  EXPECT_EQ(pool.failed[0].failure, Failure::kTimeout);
  EXPECT_EQ(pool.fail_times[0], seconds(3));
  EXPECT_EQ(pool.status().requests_waiting, 1) << "the timed-out waiter is still in _waiting";
  EXPECT_EQ(pool.status().requests_errors, 1);
  pool.give_back(seconds(4), 1);
  EXPECT_EQ(pool.status().requests_waiting, 0);
  EXPECT_EQ(pool.status().pool_available, 1);

  PsycopgConfig zero = config(1, 1);
  zero.timeout = Duration{};
  Psycopg now(zero);
  now.connect(milliseconds(10));
  now.checkout(seconds(1), 1);
  EXPECT_TRUE(now.is_granted(1)) << "3.1: the timeout only bounds a wait";
  now.checkout(seconds(1), 2);
  now.run_until(seconds(1));
  EXPECT_EQ(requests(now.failed), std::vector<std::uint64_t>{2});
  EXPECT_EQ(now.fail_times[0], seconds(1));
}

// S3, S4 [P38, P13]: with max_waiting 2 and two clients queued, a third gets TooManyRequests
// at once. The two time out but stay in _waiting, so a fourth is refused too, until a
// connection is added and drains them.
TEST(PsycopgCore, MaxWaitingGivesTooManyRequestsCountingStaleWaiters) {
  PsycopgConfig c = config(1, 1);
  c.max_waiting = 2;
  c.timeout = seconds(1);
  Psycopg pool(c);
  pool.connect(milliseconds(10));
  pool.checkout(milliseconds(100), 1);
  pool.checkout(milliseconds(200), 2);
  pool.checkout(milliseconds(300), 3);
  pool.checkout(milliseconds(400), 4);
  ASSERT_EQ(pool.failed.size(), 1u);
  EXPECT_EQ(pool.failed[0].request, RequestId{4});
  EXPECT_EQ(pool.failed[0].failure, Failure::kTooManyRequests);
  EXPECT_EQ(pool.fail_times[0], milliseconds(400));
  EXPECT_EQ(pool.status().requests_queued, 2);
  pool.checkout(seconds(2), 5);  // 2 and 3 timed out at 1.2 s and 1.3 s
  EXPECT_EQ(requests(pool.failed), (std::vector<std::uint64_t>{4, 2, 3, 5}));
  EXPECT_EQ(pool.failed.back().failure, Failure::kTooManyRequests);
  EXPECT_EQ(pool.status().requests_errors, 4);
  pool.give_back(seconds(3), 1);
  pool.checkout(seconds(3), 6);
  EXPECT_TRUE(pool.is_granted(6));
}

// S6-S8 [P22-P24]: expire_at = connect end + max_lifetime x [0.95, 1.0), looked at only on
// return. Eight connections made at 10 ms expire in [95.01 s, 100.01 s): returned at 95.01 s
// - 1 ns they stay; past expiry they are still given out; returned at 100.01 s each is
// replaced (AddConnection queued, then the close), _nconns unchanged. (A ±5% factor would keep
// about half of them.)
TEST(PsycopgCore, MaxLifetimeWithItsJitterEndsAConnectionWhenItIsReturned) {
  PsycopgConfig c = config(8, 8);
  c.max_lifetime = seconds(100);
  c.num_workers = 3;
  Psycopg pool(c);
  pool.connect_all(milliseconds(10));
  for (std::uint64_t r = 1; r <= 8; ++r) pool.checkout(seconds(1), r);
  for (std::uint64_t r = 1; r <= 8; ++r) pool.give_back(milliseconds(95'010) - nanoseconds(1), r);
  EXPECT_TRUE(pool.closed.empty());
  pool.run_until(milliseconds(100'010));
  EXPECT_TRUE(pool.closed.empty()) << "no timer closes an expired idle connection";
  for (std::uint64_t r = 11; r <= 18; ++r) pool.checkout(milliseconds(100'010), r);
  EXPECT_EQ(pool.granted().size(), 8u) << "expired connections are still given out";
  pool.log.clear();
  for (std::uint64_t r = 11; r <= 18; ++r) pool.give_back(milliseconds(100'010), r);
  EXPECT_EQ(pool.closed.size(), 8u);
  EXPECT_EQ(pool.opens_pending(), 3u) << "3 workers";
  EXPECT_EQ(pool.status().tasks_queued, 5);
  EXPECT_EQ(pool.status().pool_size, 8);
  EXPECT_EQ(pool.status().returns_bad, 0) << "an expired return is not a bad one";
  ASSERT_GE(pool.log.size(), 2u);
  EXPECT_EQ(pool.log[0], "open") << "the replacement is queued before the close";
  EXPECT_EQ(pool.log[1], "close");

  // max_lifetime 0: expire_at is the connect's end exactly, and `expire_at <= now` holds for a
  // connection returned at that same instant.
  PsycopgConfig zero = config(1, 1);
  zero.max_lifetime = Duration{};
  Psycopg brief(zero);
  const ConnId made = brief.connect(seconds(1));
  brief.checkout(seconds(1), 1);
  brief.give_back(seconds(1), 1);
  EXPECT_EQ(brief.closed, std::vector<ConnId>{made});
  EXPECT_EQ(brief.opens_pending(), 1u);
}

// S9 [P26, P27]: min 1, max 3. c1 is taken (the deque empties: _nconns_min 0); r2, r3 grow the
// pool to 3; all come back at 2 s: [c1 c2 c3]. ShrinkPool at 600 s: nconns_min 0, nothing;
// _nconns_min = 3. 1200 s: closes c1 (leftmost), _nconns 2. At 1500 s the deque empties again
// (r4, r5), so 1800 s closes nothing; 2400 s closes c2; then _nconns = min_size.
TEST(PsycopgCore, ShrinkPoolClosesAtMostOneIdleConnectionPerMaxIdle) {
  PsycopgConfig c = config(1, 3);
  Psycopg pool(c);
  const ConnId c1 = pool.connect(milliseconds(10));
  pool.checkout(seconds(1), 1);
  pool.checkout(seconds(1), 2);
  pool.checkout(seconds(1), 3);
  const ConnId c2 = pool.connect(milliseconds(1100));
  const ConnId c3 = pool.connect(milliseconds(1200));
  ASSERT_EQ(pool.granted().size(), 3u);
  EXPECT_EQ(pool.status().pool_size, 3);
  for (std::uint64_t r = 1; r <= 3; ++r) pool.give_back(seconds(2), r);
  pool.run_until(seconds(1199));
  EXPECT_TRUE(pool.closed.empty()) << "the first run saw the deque empty";
  pool.run_until(seconds(1200));
  EXPECT_EQ(pool.closed, std::vector<ConnId>{c1});
  EXPECT_EQ(pool.status().pool_size, 2);
  pool.checkout(seconds(1500), 4);
  pool.checkout(seconds(1500), 5);
  EXPECT_EQ(pool.conn_of(4), c2);
  EXPECT_EQ(pool.conn_of(5), c3);
  pool.give_back(seconds(1501), 4);
  pool.give_back(seconds(1501), 5);
  pool.run_until(hours(10));
  EXPECT_EQ(pool.closed, (std::vector<ConnId>{c1, c2}));
  EXPECT_EQ(pool.close_times, (std::vector<Duration>{seconds(1200), seconds(2400)}));
  EXPECT_EQ(pool.status().pool_size, 1);
  EXPECT_EQ(pool.status().pool_available, 1);
  EXPECT_EQ(pool.opened, 3);
}

// S2, S9 [P26, P34]: ShrinkPool's tick only queues it; with the one worker busy connecting from
// 0 to 605 s, the 600 s run happens at 605 s and schedules the next one at 605 + 600 s.
TEST(PsycopgCore, ShrinkPoolWaitsForAFreeWorkerAndItsPeriodDrifts) {
  PsycopgConfig c = config(1, 1);
  c.num_workers = 1;
  Psycopg pool(c);
  pool.run_until(seconds(600));
  EXPECT_EQ(pool.status().tasks_queued, 1) << "ShrinkPool waits behind the connect";
  EXPECT_FALSE(pool.core().poll_timeout());
  pool.connect(seconds(605));
  EXPECT_EQ(pool.status().tasks_queued, 0);
  EXPECT_EQ(pool.core().poll_timeout(), at(seconds(1205)));
}

// S10 [P30-P33]: connects refused at once from t = 0. The first failure sets give_up_at = 300 s
// and delay d in [0.9 s, 1.1 s); the delays double: tries at (2^k - 1) d for k = 0..8 (255 d
// < 300 s), then 511 d > 300 s is clamped to the give-up time: a last try at 300 s, whose
// failure gives up (_nconns 1 -> 0). Nothing restarts it until a client waits.
TEST(PsycopgCore, AFailedConnectBacksOffThenGivesUpAfterReconnectTimeout) {
  PsycopgConfig c = config(1, 1);
  Psycopg pool(c);
  pool.connect_fails(Duration{});
  const Duration d = pool.next_open();
  ASSERT_GE(d, milliseconds(900));
  ASSERT_LT(d, milliseconds(1100));
  pool.connect_fails(d);
  for (int k = 2; k <= 8; ++k) {
    const Duration t = pool.next_open();
    EXPECT_EQ(t, d * ((1 << k) - 1)) << "try " << k;
    pool.connect_fails(t);
  }
  EXPECT_EQ(pool.next_open(), seconds(300));
  EXPECT_EQ(pool.status().pool_size, 1);
  pool.connect_fails(seconds(300));
  EXPECT_EQ(pool.status().pool_size, 0) << "gave up: _nconns -= 1";
  EXPECT_EQ(pool.status().connections_num, 10);
  EXPECT_EQ(pool.status().connections_errors, 10);
  pool.run_until(hours(1));
  EXPECT_EQ(pool.opens_pending(), 0u);
  EXPECT_EQ(pool.opened, 10);
  pool.checkout(hours(1), 1);
  EXPECT_EQ(pool.opens_pending(), 1u) << "a waiting client grows the pool again";
  EXPECT_EQ(pool.status().pool_size, 1);
}

// S10 [P11, P31]: the give-up time counts from the start of the first try, each delay from a
// failure. A growth connect (min 0, max 2) whose tries fail 100 s after they start: tries at 0,
// 100 + d, 200 + 3d, 300 + 7d; the last one started after give_up_at = 300 s, so its failure
// gives up (_nconns 1 -> 0). Meanwhile _growing stays true: another waiter starts no connect
// although _nconns 1 < max_size.
TEST(PsycopgCore, AGrowthConnectRetriesFromItsFirstTryAndBlocksOtherGrowth) {
  PsycopgConfig c = config(0, 2);
  Psycopg pool(c);
  EXPECT_EQ(pool.opens_pending(), 0u);
  pool.checkout(Duration{}, 1);
  EXPECT_EQ(pool.opens_pending(), 1u);
  pool.connect_fails(seconds(100));
  const Duration d = pool.next_open() - seconds(100);
  ASSERT_GE(d, milliseconds(900));
  ASSERT_LT(d, milliseconds(1100));
  pool.connect_fails(seconds(200) + d);
  pool.checkout(seconds(250), 2);
  EXPECT_EQ(pool.opens_pending(), 1u) << "the retry at 200 s + 3d, and no second growth";
  EXPECT_EQ(pool.status().pool_size, 1);
  EXPECT_EQ(pool.last_input(), seconds(250));
  pool.connect_fails(seconds(300) + 3 * d);
  EXPECT_EQ(pool.next_open(), seconds(300) + 7 * d);
  EXPECT_TRUE(pool.status().growing);
  pool.connect_fails(seconds(400) + 7 * d);
  EXPECT_EQ(pool.status().pool_size, 0);
  EXPECT_FALSE(pool.status().growing);
  EXPECT_EQ(pool.opened, 4);
  EXPECT_EQ(requests(pool.failed), (std::vector<std::uint64_t>{1, 2}));
  pool.checkout(seconds(500), 3);
  EXPECT_EQ(pool.opens_pending(), 1u);
}

// S12 [P17]: check = true. c1 is dead: closed, connections_lost 1, a replacement queued
// (_nconns unchanged); the client tries again at once, finds nothing idle and waits (no growth
// at max_size); the replacement is handed to it and checked too before it is given.
TEST(PsycopgCore, CheckOnCheckoutReplacesADeadConnection) {
  PsycopgConfig c = config(1, 1);
  c.check = true;
  Psycopg pool(c);
  const ConnId c1 = pool.connect(milliseconds(10));
  pool.checkout(seconds(1), 1);
  ASSERT_EQ(pool.pings_pending(), 1u);
  EXPECT_EQ(pool.pings()[0].conn, c1);
  EXPECT_EQ(pool.pings()[0].request, RequestId{1});
  EXPECT_FALSE(pool.is_granted(1));
  pool.answer_ping(seconds(1), PingOutcome::kDisconnect);
  EXPECT_EQ(pool.closed, std::vector<ConnId>{c1});
  EXPECT_EQ(pool.opens_pending(), 1u);
  EXPECT_EQ(pool.status().pool_size, 1);
  EXPECT_EQ(pool.status().connections_lost, 1);
  EXPECT_EQ(pool.status().requests_waiting, 1);
  const ConnId c2 = pool.connect(milliseconds(1050));
  ASSERT_EQ(pool.pings_pending(), 1u) << "a connection handed to a waiter is checked too";
  EXPECT_EQ(pool.pings()[0].conn, c2);
  pool.answer_ping(milliseconds(1051), PingOutcome::kOk);
  ASSERT_TRUE(pool.is_granted(1));
  EXPECT_EQ(pool.conn_of(1), c2);
  EXPECT_TRUE(pool.failed.empty());

  // A check that only raised leaves the connection IDLE: it goes back, the retry takes it.
  Psycopg again(c);
  const ConnId kept = again.connect(milliseconds(10));
  again.checkout(seconds(1), 1);
  again.answer_ping(seconds(1), PingOutcome::kError);
  EXPECT_TRUE(again.closed.empty());
  ASSERT_EQ(again.pings_pending(), 1u);
  EXPECT_EQ(again.pings()[0].conn, kept);
  again.answer_ping(seconds(1), PingOutcome::kOk);
  EXPECT_TRUE(again.is_granted(1));
  EXPECT_EQ(again.opened, 1);
}

// S12 [P15, P17]: after the first failed check the client tries at once; after the second it
// sleeps AttemptWithBackoff's d in [0.9 s, 1.1 s), after the third 2d. With check on, every try
// fails with PoolTimeout when no time is left (3.2.1+): timeout 0 fails even with an idle
// connection.
TEST(PsycopgCore, FailedChecksAfterTheFirstPauseWithBackoff) {
  PsycopgConfig c = config(5, 5);
  c.check = true;
  c.num_workers = 5;
  Psycopg pool(c);
  pool.connect_all(milliseconds(10));
  pool.checkout(seconds(1), 1);
  pool.answer_ping(seconds(1), PingOutcome::kDisconnect);
  ASSERT_EQ(pool.pings_pending(), 1u) << "the first retry is at once";
  pool.answer_ping(seconds(1), PingOutcome::kDisconnect);
  EXPECT_EQ(pool.pings_pending(), 0u);
  EXPECT_EQ(pool.opens_pending(), 2u);
  pool.connect_all(milliseconds(1500));  // the replacements wait idle: the client sleeps
  EXPECT_EQ(pool.status().pool_available, 5);
  EXPECT_EQ(pool.pings_pending(), 0u);
  while (pool.pings_pending() == 0) pool.tick(pool.core().poll_timeout()->time_since_epoch());
  const Duration d = pool.last_input() - seconds(1);
  EXPECT_GE(d, milliseconds(900));
  EXPECT_LT(d, milliseconds(1100));
  pool.answer_ping(pool.last_input(), PingOutcome::kDisconnect);
  EXPECT_EQ(pool.pings_pending(), 0u);
  pool.run_until(seconds(1) + 3 * d - nanoseconds(1));
  EXPECT_EQ(pool.pings_pending(), 0u);
  pool.run_until(seconds(1) + 3 * d);
  ASSERT_EQ(pool.pings_pending(), 1u);
  pool.answer_ping(seconds(1) + 3 * d, PingOutcome::kOk);
  EXPECT_TRUE(pool.is_granted(1));
  EXPECT_EQ(pool.status().connections_lost, 3);

  PsycopgConfig zero = config(1, 1);
  zero.check = true;
  zero.timeout = Duration{};
  Psycopg none(zero);
  none.connect(milliseconds(10));
  none.checkout(seconds(1), 1);
  EXPECT_EQ(requests(none.failed), std::vector<std::uint64_t>{1});
  EXPECT_EQ(none.pings_pending(), 0u);
}

// S7 [P19, P20]: a connection returned in a transaction is rolled back in putconn before anyone
// gets it; a failed rollback closes it: returns_bad 1, a replacement queued, _nconns kept.
// With reset_on_return = none it is back at once.
TEST(PsycopgCore, ARolledBackConnectionIsReusedAndAFailedRollbackReplacesIt) {
  PsycopgConfig c = config(1, 1);
  c.reset_on_return = ResetOnReturn::kRollback;
  Psycopg pool(c);
  const ConnId c1 = pool.connect(milliseconds(10));
  pool.checkout(seconds(1), 1);
  pool.checkout(seconds(1), 2);
  pool.give_back(seconds(2), 1);
  ASSERT_EQ(pool.resets_pending(), 1u);
  EXPECT_FALSE(pool.is_granted(2)) << "the rollback comes first";
  const Reset reset = pool.answer_reset(milliseconds(2001), ResetOutcome::kOk);
  EXPECT_EQ(reset.conn, c1);
  ASSERT_TRUE(pool.is_granted(2));
  pool.give_back(seconds(3), 2);
  pool.answer_reset(milliseconds(3001), ResetOutcome::kFailed);
  EXPECT_EQ(pool.closed, std::vector<ConnId>{c1});
  EXPECT_EQ(pool.opens_pending(), 1u);
  EXPECT_EQ(pool.status().returns_bad, 1);
  EXPECT_EQ(pool.status().pool_size, 1);

  Psycopg plain(config(1, 1));
  plain.connect(milliseconds(10));
  plain.checkout(seconds(1), 1);
  plain.give_back(seconds(2), 1);
  EXPECT_EQ(plain.resets_pending(), 0u);
  EXPECT_EQ(plain.status().pool_available, 1);
}

// S7 [P20]: a connection that comes back broken (UNKNOWN) is not rolled back: closed,
// returns_bad += 1, an AddConnection replaces it; invalidate() is the same. What psycopg_pool
// has no counterpart for is refused.
TEST(PsycopgCore, ABrokenReturnIsClosedAndReplaced) {
  PsycopgConfig c = config(2, 2);
  c.reset_on_return = ResetOnReturn::kRollback;
  Psycopg pool(c);
  pool.connect_all(milliseconds(10));
  pool.checkout(seconds(1), 1);
  pool.checkout(seconds(1), 2);
  const ConnId first = pool.conn_of(1);
  pool.give_back_broken(seconds(2), 1);
  EXPECT_EQ(pool.resets_pending(), 0u);
  EXPECT_EQ(pool.closed, std::vector<ConnId>{first});
  EXPECT_EQ(pool.opens_pending(), 1u);
  EXPECT_EQ(pool.status().returns_bad, 1);
  EXPECT_EQ(pool.status().pool_size, 2);
  const SlotId slot = pool.granted().at(2).slot;
  pool.invalidate(seconds(3), 2, Invalidation::kSoft);
  EXPECT_EQ(pool.closed.size(), 2u);
  EXPECT_EQ(pool.opens_pending(), 2u);
  EXPECT_EQ(pool.status().returns_bad, 2);
  const std::pair<Event, std::string> refused[] = {
      {Detached{slot}, "Detached:"},
      {DetachedReturned{ConnId{1}}, "DetachedReturned:"},
      {PoolInvalidated{}, "PoolInvalidated:"},
      {Disposed{}, "Disposed:"}};
  for (const auto& [e, name] : refused) {
    try {
      pool.core().handle(at(seconds(4)), e);
      ADD_FAILURE() << name << " was accepted";
    } catch (const std::logic_error& error) {
      EXPECT_NE(std::string(error.what()).find(name), std::string::npos) << error.what();
    }
  }
}

// S9 and the timer rules: an idle pool wakes only for ShrinkPool, once per max_idle (60 times in
// 10 hours), and a timer that would come at the last instant is not set.
TEST(PsycopgCore, AnIdlePoolWakesOnlyForShrinkPool) {
  Psycopg pool(config(2, 4));
  pool.connect_all(milliseconds(10));
  pool.ticks = 0;
  pool.run_until(hours(10));
  EXPECT_EQ(pool.ticks, 60);
  EXPECT_TRUE(pool.closed.empty());

  PsycopgConfig never = config(2, 2);
  never.max_idle = Duration::max();
  Psycopg quiet(never);
  quiet.connect_all(milliseconds(10));
  EXPECT_FALSE(quiet.core().poll_timeout());
}

// S1 [P1]: what _check_size and BasePool.__init__ raise ValueError for, and poolsim's own.
TEST(PsycopgCore, RefusesWhatPsycopgPoolRaisesValueErrorFor) {
  const auto refused = [](auto change, const std::string& key) {
    PsycopgConfig c;
    change(c);
    const auto why = validate(c);
    ASSERT_TRUE(why) << key;
    EXPECT_NE(why->find(key), std::string::npos) << *why;
    EXPECT_THROW(PsycopgCore{c}, std::invalid_argument);
  };
  refused([](PsycopgConfig& c) { c.min_size = -1; }, "psycopg.min_size");
  refused([](PsycopgConfig& c) { c.max_size = 3; }, "psycopg.max_size");  // below min_size 4
  refused([](PsycopgConfig& c) { c.min_size = 0; }, "psycopg.max_size");  // 0 and None -> 0
  refused([](PsycopgConfig& c) { c.num_workers = 0; }, "psycopg.num_workers");
  refused([](PsycopgConfig& c) { c.max_waiting = -1; }, "psycopg.max_waiting");
  refused([](PsycopgConfig& c) { c.max_idle = Duration{}; }, "psycopg.max_idle");
  refused([](PsycopgConfig& c) { c.max_idle = milliseconds(999); }, "psycopg.max_idle");
  refused([](PsycopgConfig& c) { c.timeout = -seconds(1); }, "psycopg.timeout");
  refused([](PsycopgConfig& c) { c.reset_on_return = ResetOnReturn::kCommit; },
          "pool.reset_on_return");
  EXPECT_FALSE(validate(PsycopgConfig{}));
  PsycopgConfig lazy;
  lazy.min_size = 0;
  lazy.max_size = 1;
  EXPECT_FALSE(validate(lazy));
  EXPECT_EQ(PsycopgCore(PsycopgConfig{}).config().max_size, std::nullopt);
  EXPECT_EQ(PsycopgCore(PsycopgConfig{}).status().pool_max, 4) << "max_size None = min_size";
}

// Random valid inputs for thousands of steps, check_invariants() after each (the driver does),
// then every request is answered once the database answers everything.
TEST(PsycopgCore, InvariantsHoldThroughRandomEvents) {
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    std::mt19937_64 rng(seed);
    const auto pick = [&rng](std::uint64_t n) { return static_cast<std::size_t>(rng() % n); };
    PsycopgConfig c;
    c.min_size = static_cast<int>(pick(3));
    c.max_size = std::max(1, c.min_size + static_cast<int>(pick(4)));
    c.num_workers = 1 + static_cast<int>(pick(3));
    c.max_waiting = static_cast<int>(pick(3));
    c.check = seed % 2 == 0;
    c.reset_on_return = seed % 3 == 0 ? ResetOnReturn::kNone : ResetOnReturn::kRollback;
    c.timeout = milliseconds(pick(3000));
    c.max_lifetime = seconds(5 + pick(20));
    c.max_idle = seconds(1 + pick(30));
    c.reconnect_timeout = seconds(pick(20));
    c.seed = seed;
    SCOPED_TRACE("seed " + std::to_string(seed));
    Psycopg pool(c);
    Duration t{};
    std::uint64_t next_request = 1;
    std::vector<std::uint64_t> asked;
    for (int step = 0; step < 4000; ++step) {
      t += microseconds(pick(300'000));
      switch (pick(8)) {
        case 0:
        case 1:
          asked.push_back(next_request);
          pool.checkout(t, next_request++);
          break;
        case 2:
          if (pool.opens_pending() > 0) {
            const std::size_t i = pick(pool.opens_pending());
            if (pick(3) == 0) {
              pool.connect_fails(t, i);
            } else {
              pool.connect(t, i);
            }
          }
          break;
        case 3:
          if (pool.pings_pending() > 0) {
            const PingOutcome outcomes[] = {PingOutcome::kOk, PingOutcome::kOk,
                                            PingOutcome::kDisconnect, PingOutcome::kError};
            pool.answer_ping(t, outcomes[pick(4)], pick(pool.pings_pending()));
          }
          break;
        case 4:
          if (!pool.granted().empty()) {
            auto it = pool.granted().begin();
            std::advance(it, static_cast<std::ptrdiff_t>(pick(pool.granted().size())));
            const std::uint64_t r = it->first;
            switch (pick(6)) {
              case 0: pool.give_back_broken(t, r); break;
              case 1: pool.invalidate(t, r, Invalidation::kHard); break;
              default: pool.give_back(t, r);
            }
          }
          break;
        case 5:
          if (pool.resets_pending() > 0) {
            pool.answer_reset(t, pick(4) == 0 ? ResetOutcome::kFailed : ResetOutcome::kOk,
                              pick(pool.resets_pending()));
          }
          break;
        case 6:
          if (!asked.empty()) pool.feed(t, WaitExpired{RequestId{asked[pick(asked.size())]}});
          break;
        default: pool.run_until(t);
      }
    }
    // The database answers everything from now on, and every holder gives back.
    for (int round = 0; round < 200 && pool.answered.size() < asked.size(); ++round) {
      t += seconds(1);
      while (pool.opens_pending() > 0) pool.connect(t);
      while (pool.pings_pending() > 0) pool.answer_ping(t, PingOutcome::kOk);
      while (pool.resets_pending() > 0) pool.answer_reset(t, ResetOutcome::kOk);
      while (!pool.granted().empty()) pool.give_back(t, pool.granted().begin()->first);
      pool.run_until(t);
    }
    EXPECT_EQ(pool.answered.size(), asked.size()) << "a request was never answered";
    const PsycopgStatus s = pool.status();
    EXPECT_EQ(s.requests_num, static_cast<std::int64_t>(asked.size()));
    EXPECT_LE(s.pool_size, *c.max_size);
  }
}

}  // namespace
}  // namespace poolsim
