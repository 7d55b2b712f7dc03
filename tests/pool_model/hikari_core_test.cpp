// HikariCore against the rules at the top of hikari_core.cpp (H1-H11), one test per rule or
// published behaviour. A small driver plays the database: it answers OpenConnection, Ping and
// Reset when the test says so, and records every action. Invariants are checked after every
// input. Time moves only through the times the tests pass.
#include "pool_model/hikari_core.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace poolsim {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

Instant at(Duration d) { return Instant(d); }

class Hikari {
 public:
  explicit Hikari(HikariConfig config, Duration start = {}) : core_(config) {
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
  void tick(Duration t) {
    core_.handle_timeout(at(t));
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
  void give_back(Duration t, std::uint64_t request) {
    const SlotId slot = granted_.at(request).slot;
    granted_.erase(request);
    feed(t, Returned{slot});
  }

  // Runs the timers, one by one, until the adder starts a connect (unless one is pending);
  // returns the time of the input that started it.
  Duration next_open(Duration limit = std::chrono::hours(1)) {
    while (opens_.empty()) {
      const auto next = core_.poll_timeout();
      if (!next || *next > at(limit)) {
        ADD_FAILURE() << "no connect started before " << format_duration(limit);
        return limit;
      }
      tick(next->time_since_epoch());
    }
    return last_input_;  // when the connect was asked for
  }

  // The connect in flight succeeds (or fails).
  ConnId connect(Duration t) {
    EXPECT_EQ(opens_.size(), 1u) << "the adder opens one connection at a time";
    if (opens_.empty()) return ConnId{};
    const OpenConnection open = opens_.front();
    opens_.erase(opens_.begin());
    EXPECT_FALSE(open.request) << "a HikariCP request never connects";
    const ConnId conn{next_conn_++};
    feed(t, ConnectSucceeded{open.slot, conn});
    return conn;
  }
  void connect_fails(Duration t) {
    ASSERT_EQ(opens_.size(), 1u);
    const OpenConnection open = opens_.front();
    opens_.erase(opens_.begin());
    feed(t, ConnectFailed{open.slot, 1});
  }
  // Answers the oldest pending ping.
  Ping answer_ping(Duration t, PingOutcome outcome) {
    EXPECT_FALSE(pings_.empty());
    if (pings_.empty()) return Ping{};
    const Ping ping = pings_.front();
    pings_.erase(pings_.begin());
    feed(t, PingResult{ping.slot, outcome, 0});
    return ping;
  }
  void answer_resets(Duration t) {
    while (!resets_.empty()) {
      const Reset reset = resets_.front();
      resets_.erase(resets_.begin());
      feed(t, ResetDone{reset.slot, reset.conn, ResetOutcome::kOk});
    }
  }

  HikariCore& core() { return core_; }
  Duration last_input() const { return last_input_; }
  HikariStatus status() const { return core_.status(); }
  std::size_t opens_pending() const { return opens_.size(); }
  std::size_t pings_pending() const { return pings_.size(); }
  bool is_granted(std::uint64_t request) const { return granted_.count(request) != 0; }
  const std::map<std::uint64_t, Grant>& granted() const { return granted_; }
  std::vector<std::uint64_t> failed;        // requests failed (timeouts), in order
  std::vector<std::uint64_t> grant_order;   // requests granted, in order
  std::vector<ConnId> closed;               // connections closed, in order
  int opened = 0;

 private:
  void collect() {
    core_.check_invariants();
    while (auto action = core_.poll_action()) {
      std::visit(
          [this](const auto& a) {
            using T = std::decay_t<decltype(a)>;
            if constexpr (std::is_same_v<T, OpenConnection>) {
              opens_.push_back(a);
              ++opened;
            } else if constexpr (std::is_same_v<T, CloseConnection>) {
              closed.push_back(a.conn);
            } else if constexpr (std::is_same_v<T, Ping>) {
              pings_.push_back(a);
            } else if constexpr (std::is_same_v<T, Reset>) {
              resets_.push_back(a);
            } else if constexpr (std::is_same_v<T, Grant>) {
              ASSERT_EQ(granted_.count(static_cast<std::uint64_t>(a.request)), 0u);
              granted_.emplace(static_cast<std::uint64_t>(a.request), a);
              grant_order.push_back(static_cast<std::uint64_t>(a.request));
            } else if constexpr (std::is_same_v<T, Fail>) {
              EXPECT_EQ(a.failure, Failure::kTimeout);
              failed.push_back(static_cast<std::uint64_t>(a.request));
            } else {
              ADD_FAILURE() << "unexpected action " << Action(a);
            }
          },
          *action);
    }
  }

  HikariCore core_;
  std::vector<OpenConnection> opens_;
  std::vector<Ping> pings_;
  std::vector<Reset> resets_;
  std::map<std::uint64_t, Grant> granted_;
  std::uint64_t next_conn_ = 100;
  Duration last_input_{};
};

HikariConfig config(int max, int min_idle) {
  HikariConfig c;
  c.maximum_pool_size = max;
  c.minimum_idle = min_idle;
  c.reset_on_return = ResetOnReturn::kNone;
  return c;
}

// Fills a pool created at 0 with `n` connections, each connect taking `connect`: the first
// at once (H1), the others one at a time, each 30 ms after the one before, from the
// housekeeper's first fillPool at 100 ms.
void fill(Hikari& pool, int n, Duration connect) {
  pool.connect(connect);
  for (int i = 1; i < n; ++i) pool.connect(pool.next_open() + connect);
  EXPECT_EQ(pool.status().total, n);
  pool.run_until(pool.core().poll_timeout()->time_since_epoch());  // the adder's last rest
  EXPECT_EQ(pool.opens_pending(), 0u);
}

TEST(HikariCore, StartsWithOneConnectThenTheHousekeeperFillsOneAtATime) {  // H1, H3, H7
  Hikari pool(config(10, 4));
  EXPECT_EQ(pool.opens_pending(), 1u);  // checkFailFast's connection
  pool.connect(milliseconds(20));
  EXPECT_EQ(pool.opens_pending(), 0u);
  // Nothing more until the housekeeper's first run at 100 ms; then one connect at a time,
  // each 30 ms after the one before (the adder's rest).
  EXPECT_EQ(pool.next_open(), milliseconds(100));
  pool.connect(milliseconds(120));
  EXPECT_EQ(pool.next_open(), milliseconds(150));
  pool.connect(milliseconds(170));
  EXPECT_EQ(pool.next_open(), milliseconds(200));
  pool.connect(milliseconds(220));
  EXPECT_EQ(pool.status().total, 4);
  pool.run_until(seconds(10));
  EXPECT_EQ(pool.opens_pending(), 0u) << "minimum_idle reached: the other tasks are elided";
  EXPECT_EQ(pool.opened, 4);
}

// HikariCP's "Welcome to the Jungle" case: 5 idle connections, 150 ms connects, 2 ms
// queries, 50 requests at once, maximum_pool_size 50. Returned connections serve the waiters
// long before a new connection is ready; the adder opens one, and then finds no more demand.
TEST(HikariCore, ASpikeOfFiftyIsServedByFiveConnectionsAndOneMore) {  // H2-H5
  Hikari pool(config(50, 5));
  fill(pool, 5, milliseconds(150));
  const Duration spike = seconds(2);
  for (std::uint64_t r = 1; r <= 50; ++r) pool.checkout(spike, r);
  // The 5 idle ones were last used over 500 ms ago: each is checked first.
  EXPECT_EQ(pool.pings_pending(), 5u);
  EXPECT_EQ(pool.status().waiting, 45);
  EXPECT_EQ(pool.opens_pending(), 1u) << "one connect for the waiters, not 45";
  Duration t = spike + std::chrono::microseconds(200);
  for (int i = 0; i < 5; ++i) pool.answer_ping(t, PingOutcome::kOk);
  // Each query takes 2 ms; a returned connection goes to the oldest waiter, unchecked (it was
  // used just now).
  while (!pool.granted().empty()) {
    t += milliseconds(2);
    std::vector<std::uint64_t> holders;
    for (const auto& [request, grant] : pool.granted()) holders.push_back(request);
    for (std::uint64_t r : holders) pool.give_back(t, r);
    EXPECT_EQ(pool.pings_pending(), 0u);
  }
  EXPECT_EQ(pool.grant_order.size(), 50u);
  EXPECT_TRUE(std::is_sorted(pool.grant_order.begin(), pool.grant_order.end()))
      << "waiters are served first come, first served";
  EXPECT_LT(t - spike, milliseconds(30));  // 10 rounds of 2 ms
  EXPECT_TRUE(pool.failed.empty());
  pool.connect(spike + milliseconds(150));
  EXPECT_EQ(pool.opens_pending(), 0u) << "no demand left: the queued tasks are elided";
  EXPECT_EQ(pool.status().total, 6);  // "5 (technically six)"
  EXPECT_EQ(pool.opened, 6);
}

TEST(HikariCore, AWaiterTimesOutAtConnectionTimeout) {  // H5
  HikariConfig c = config(1, 1);
  c.connection_timeout = seconds(2);
  Hikari pool(c);
  pool.connect(milliseconds(10));
  pool.checkout(seconds(1), 1);  // last used at 10 ms: checked
  pool.answer_ping(seconds(1), PingOutcome::kOk);
  ASSERT_TRUE(pool.is_granted(1));
  pool.checkout(seconds(1), 2);
  EXPECT_EQ(pool.status().waiting, 1);
  pool.run_until(seconds(3) - std::chrono::nanoseconds(1));
  EXPECT_TRUE(pool.failed.empty());
  pool.run_until(seconds(3));
  EXPECT_EQ(pool.failed, std::vector<std::uint64_t>{2});
  EXPECT_EQ(pool.status().waiting, 0);
  // The connection returned later goes back into the bag, to nobody.
  pool.give_back(seconds(4), 1);
  EXPECT_EQ(pool.status().idle, 1);
}

// In autocommit (reset_on_return none) lastAccessed is the last statement's start, here the
// grant: the window counts from there, not from the return (H6).
TEST(HikariCore, ARecentlyUsedConnectionIsNotChecked) {  // H5: the 500 ms bypass window
  Hikari pool(config(1, 1));
  pool.connect(milliseconds(10));
  pool.checkout(milliseconds(300), 1);  // 290 ms after its creation: no check
  EXPECT_TRUE(pool.is_granted(1));
  pool.give_back(milliseconds(400), 1);
  pool.checkout(milliseconds(800), 2);  // exactly 500 ms after the last grant: still no check
  EXPECT_TRUE(pool.is_granted(2));
  pool.give_back(milliseconds(1250), 2);
  pool.checkout(milliseconds(1301), 3);  // 501 ms after the grant, 51 ms after the return
  EXPECT_FALSE(pool.is_granted(3));
  EXPECT_EQ(pool.pings_pending(), 1u);
  pool.answer_ping(milliseconds(1302), PingOutcome::kOk);
  EXPECT_TRUE(pool.is_granted(3));
}

// With a rollback on return the rollback sets lastAccessed: a connection held 2 s and rolled
// back 100 ms ago is not checked (H6).
TEST(HikariCore, ARolledBackConnectionCountsFromItsRollback) {  // H5, H6
  HikariConfig c = config(1, 1);
  c.reset_on_return = ResetOnReturn::kRollback;
  Hikari pool(c);
  pool.connect(milliseconds(10));
  pool.checkout(milliseconds(100), 1);
  pool.give_back(milliseconds(2100), 1);
  pool.answer_resets(milliseconds(2101));
  pool.checkout(milliseconds(2201), 2);
  EXPECT_TRUE(pool.is_granted(2));
  EXPECT_EQ(pool.pings_pending(), 0u);
  pool.give_back(milliseconds(2300), 2);
  pool.answer_resets(milliseconds(2301));
  pool.checkout(milliseconds(2802), 3);  // 501 ms after that rollback: checked
  EXPECT_FALSE(pool.is_granted(3));
  EXPECT_EQ(pool.pings_pending(), 1u);
}

TEST(HikariCore, ADeadConnectionAtBorrowIsClosedAndReplacedInTheBackground) {  // H5, H7
  Hikari pool(config(2, 2));
  fill(pool, 2, milliseconds(10));
  pool.checkout(seconds(5), 1);
  const Ping first = pool.answer_ping(seconds(5), PingOutcome::kDisconnect);
  EXPECT_EQ(pool.closed, std::vector<ConnId>{first.conn});
  EXPECT_EQ(pool.opens_pending(), 1u) << "fillPool replaces it";
  // The retried borrow takes the other idle connection, checked too.
  pool.answer_ping(seconds(5), PingOutcome::kOk);
  EXPECT_TRUE(pool.is_granted(1));
  EXPECT_TRUE(pool.failed.empty());
}

TEST(HikariCore, MaxLifetimeEndsEachConnectionWithinItsJitter) {  // H8
  HikariConfig c = config(3, 3);
  c.max_lifetime = minutes(40);
  c.keepalive_time = Duration{};
  c.idle_timeout = Duration{};
  Hikari pool(c);
  fill(pool, 3, milliseconds(10));
  pool.checkout(minutes(1), 1);
  pool.answer_ping(minutes(1), PingOutcome::kOk);
  // Nothing ends before 40 min - 40 min / 40 = 39 min after its creation.
  pool.run_until(minutes(39));
  EXPECT_TRUE(pool.closed.empty());
  pool.run_until(minutes(40) + milliseconds(200));
  // The two idle ones are closed (and replaced one by one); the one in use is only marked.
  EXPECT_EQ(pool.closed.size(), 2u);
  EXPECT_EQ(pool.opens_pending(), 1u);
  pool.give_back(minutes(41), 1);
  EXPECT_EQ(pool.closed.size(), 2u) << "HikariCP 5 takes an evicted connection back";
  pool.checkout(minutes(41), 2);  // the only idle one is the evicted one: closed, then a wait
  EXPECT_EQ(pool.closed.size(), 3u) << "an evicted connection is closed at its next borrow";
  EXPECT_EQ(pool.status().waiting, 1);
}

TEST(HikariCore, IdleTimeoutRetiresConnectionsAboveMinimumIdle) {  // H10
  HikariConfig c = config(4, 1);
  c.idle_timeout = seconds(60);
  c.keepalive_time = Duration{};
  Hikari pool(c);
  pool.connect(milliseconds(10));
  // Four at once: three wait and the adder grows the pool to four, one connect at a time.
  for (std::uint64_t r = 1; r <= 4; ++r) pool.checkout(seconds(1), r);
  pool.answer_ping(seconds(1), PingOutcome::kOk);
  for (int i = 1; i <= 3; ++i) pool.connect(pool.next_open() + milliseconds(10));
  EXPECT_EQ(pool.status().total, 4);
  ASSERT_EQ(pool.granted().size(), 4u);
  for (std::uint64_t r = 1; r <= 4; ++r) pool.give_back(seconds(2), r);
  // Housekeeping at 0.1 s, then every 30 s: at 60.1 s they have been idle 58.1 s, at 90.1 s
  // 88.1 s, over idle_timeout.
  pool.run_until(seconds(61));
  EXPECT_TRUE(pool.closed.empty());
  pool.run_until(seconds(91));
  EXPECT_EQ(pool.closed.size(), 3u) << "all but minimum_idle";
  EXPECT_EQ(pool.status().total, 1);
  EXPECT_EQ(pool.opens_pending(), 0u);
}

TEST(HikariCore, KeepaliveChecksIdleConnectionsAndReplacesDeadOnes) {  // H9
  HikariConfig c = config(1, 1);
  c.keepalive_time = seconds(60);
  Hikari pool(c);
  const ConnId first = pool.connect(milliseconds(10));
  pool.run_until(seconds(54));  // 60 s minus at most 6 s of jitter
  EXPECT_EQ(pool.pings_pending(), 0u);
  pool.run_until(seconds(61));
  ASSERT_EQ(pool.pings_pending(), 1u);
  EXPECT_EQ(pool.status().idle, 0) << "reserved while it is checked";
  pool.answer_ping(seconds(61), PingOutcome::kOk);
  EXPECT_EQ(pool.status().idle, 1);
  pool.run_until(seconds(122));
  ASSERT_EQ(pool.pings_pending(), 1u);
  pool.answer_ping(seconds(122), PingOutcome::kDisconnect);
  EXPECT_EQ(pool.closed, std::vector<ConnId>{first});
  EXPECT_EQ(pool.opens_pending(), 1u);
}

// Keepalive turns and housekeeper runs that find nothing to do are skipped without moving the
// later ones (HikariCP's scheduleWithFixedDelay keeps ticking): after ten minutes in use, the
// next keepalive and the next housekeeping run come at their old turns, not ten minutes plus a
// period after the return.
TEST(HikariCore, KeepaliveAndHousekeepingKeepTheirTurnsThroughLongUse) {  // H9, H10
  HikariConfig c = config(2, 1);
  c.keepalive_time = seconds(60);
  c.idle_timeout = seconds(10);
  Hikari pool(c);
  pool.connect(milliseconds(10));
  while (pool.pings_pending() == 0) pool.tick(pool.core().poll_timeout()->time_since_epoch());
  const Duration first_ping = pool.last_input();
  const Duration heartbeat = first_ping - milliseconds(10);
  ASSERT_GT(heartbeat, seconds(54));
  ASSERT_LE(heartbeat, seconds(60));
  pool.answer_ping(first_ping, PingOutcome::kOk);
  // Two requests hold both connections (the second one added for the waiter) for 10 minutes.
  pool.checkout(first_ping + seconds(1), 1);
  pool.answer_ping(first_ping + seconds(1), PingOutcome::kOk);
  pool.checkout(first_ping + seconds(1), 2);
  pool.connect(pool.next_open() + milliseconds(10));
  ASSERT_EQ(pool.granted().size(), 2u);
  // Given back 15 s before one of the housekeeper's turns (0.1 s + 30 s k), at least 10
  // minutes later: that turn retires the connection above minimum_idle (idle 15 s > 10 s).
  const Duration held = first_ping + minutes(10);
  const Duration turn =
      milliseconds(100) + seconds(30) * ((held - milliseconds(100)) / seconds(30) + 2);
  const Duration back = turn - seconds(15);
  pool.give_back(back, 1);
  pool.give_back(back, 2);
  EXPECT_TRUE(pool.closed.empty());
  pool.run_until(turn - milliseconds(1));
  EXPECT_TRUE(pool.closed.empty());
  pool.run_until(turn);
  EXPECT_EQ(pool.closed.size(), 1u) << "retired at the housekeeper's turn " << format_duration(turn);
  // The first connection's keepalive turns are at 10 ms + heartbeat k.
  const Duration keepalive = milliseconds(10) + heartbeat * ((back - milliseconds(10)) / heartbeat + 1);
  pool.run_until(keepalive - milliseconds(1));
  EXPECT_EQ(pool.pings_pending(), 0u);
  pool.run_until(keepalive);
  EXPECT_EQ(pool.pings_pending(), 1u) << "the keepalive at its turn " << format_duration(keepalive);
}

TEST(HikariCore, TheHousekeeperSleepsWhileAConnectHangsAndItsQueueIsFull) {  // H3, H7, H10
  // The first connect never finishes (a server that accepts and never answers). Each turn's
  // fillPool queues minimum_idle tasks until the adder's queue holds maximum_pool_size; after
  // that a turn changes nothing, so no more turns are scheduled while a request waits out a
  // day-long connection_timeout (it was 2,880 turns a day, for nothing).
  HikariConfig c = config(4, 4);
  c.connection_timeout = std::chrono::hours(24);
  Hikari pool(c);
  ASSERT_EQ(pool.opens_pending(), 1u);
  pool.checkout(seconds(1), 1);
  int turns = 0;
  while (auto next = pool.core().poll_timeout()) {
    if (*next >= at(std::chrono::hours(24) + seconds(1))) break;
    pool.tick(next->time_since_epoch());
    ++turns;
  }
  // Turns at 100 ms and 30.1 s fill the queue (4, then capped at 4); the one after finds it
  // full and sleeps. Then only the waiter's deadline is left.
  EXPECT_LE(turns, 3);
  EXPECT_EQ(pool.core().poll_timeout(), at(std::chrono::hours(24) + seconds(1)));
  pool.run_until(std::chrono::hours(24) + seconds(1));
  EXPECT_EQ(pool.failed, std::vector<std::uint64_t>{1});
  EXPECT_EQ(pool.opens_pending(), 1u) << "still the one hanging connect";
}

TEST(HikariCore, AFailedConnectBacksOffAndRetries) {  // H3
  HikariConfig c = config(1, 1);
  c.connection_timeout = seconds(30);
  Hikari pool(c);
  pool.connect_fails(milliseconds(10));
  EXPECT_EQ(pool.opens_pending(), 0u);
  EXPECT_EQ(pool.next_open(), milliseconds(20));  // 10 ms later
  pool.connect_fails(milliseconds(25));
  EXPECT_EQ(pool.next_open(), milliseconds(45));  // 20 ms later
  pool.connect_fails(milliseconds(45));
  EXPECT_EQ(pool.next_open(), milliseconds(85));  // 40 ms later
}

TEST(HikariCore, ABrokenConnectionIsClosedAlone) {  // H11
  Hikari pool(config(2, 2));
  fill(pool, 2, milliseconds(10));
  pool.checkout(seconds(1), 1);
  pool.answer_ping(seconds(1), PingOutcome::kOk);
  pool.checkout(seconds(1), 2);
  pool.answer_ping(seconds(1), PingOutcome::kOk);
  const Grant broken = pool.granted().at(1);
  pool.feed(seconds(2), DisconnectDetected{broken.slot});
  EXPECT_EQ(pool.closed, std::vector<ConnId>{broken.conn});
  pool.give_back(seconds(2), 2);
  EXPECT_EQ(pool.closed.size(), 1u) << "the other connection is kept";
  EXPECT_EQ(pool.opens_pending(), 1u);
  EXPECT_THROW(pool.feed(seconds(3), PoolInvalidated{}), std::logic_error);
}

TEST(HikariCore, ResetOnReturnRunsBeforeTheConnectionIsReused) {  // H6
  HikariConfig c = config(1, 1);
  c.reset_on_return = ResetOnReturn::kRollback;
  Hikari pool(c);
  pool.connect(milliseconds(10));
  pool.checkout(milliseconds(100), 1);
  pool.checkout(milliseconds(100), 2);
  pool.give_back(milliseconds(200), 1);
  EXPECT_FALSE(pool.is_granted(2)) << "the rollback comes first";
  pool.answer_resets(milliseconds(201));
  EXPECT_TRUE(pool.is_granted(2));
}

TEST(HikariCore, RefusesWhatHikariConfigWouldQuietlyChange) {
  const auto refused = [](auto change, const std::string& key) {
    HikariConfig c;
    change(c);
    const auto why = validate(c);
    ASSERT_TRUE(why) << key;
    EXPECT_NE(why->find(key), std::string::npos) << *why;
    EXPECT_THROW(HikariCore{c}, std::invalid_argument);
  };
  refused([](HikariConfig& c) { c.maximum_pool_size = 0; }, "hikari.maximum_pool_size");
  refused([](HikariConfig& c) { c.minimum_idle = 11; }, "hikari.minimum_idle");
  refused([](HikariConfig& c) { c.connection_timeout = milliseconds(100); },
          "hikari.connection_timeout");
  refused([](HikariConfig& c) { c.max_lifetime = seconds(10); }, "hikari.max_lifetime");
  // The idle timeout is checked (and used) only for a pool that may shrink.
  refused([](HikariConfig& c) { c.minimum_idle = 5; c.idle_timeout = seconds(5); },
          "hikari.idle_timeout");
  refused([](HikariConfig& c) { c.minimum_idle = 5; c.idle_timeout = c.max_lifetime; },
          "hikari.idle_timeout");
  HikariConfig fixed_size;
  fixed_size.idle_timeout = seconds(5);
  EXPECT_FALSE(validate(fixed_size));
  refused([](HikariConfig& c) { c.keepalive_time = seconds(10); }, "hikari.keepalive_time");
  EXPECT_FALSE(validate(HikariConfig{}));
}

}  // namespace
}  // namespace poolsim
