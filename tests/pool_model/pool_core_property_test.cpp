// Property tests: random driver scripts against PoolCore, from a printed seed.
//
// A random driver plays every part at once (requests arriving, connects and pings finishing
// well or badly, resets failing, handles returned, invalidated, detached, the pool disposed,
// time passing) with random pool settings. After every input the core's invariants hold, and
// the driver checks what the core asked of it: a connection is granted to one holder at a time,
// only open connections are used or closed, and every request is answered exactly once, which
// the final drain (answer everything, return everything, let every deadline pass) makes total.
// A failure prints the seed and the script that led to it.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pool_model/pool_core.hpp"

namespace poolsim {
namespace {

class RandomDriver {
 public:
  explicit RandomDriver(std::uint64_t seed) : rng_(seed), core_(random_config()) {}

  void run(int steps) {
    for (int i = 0; i < steps; ++i) random_step();
    drain_everything();
  }

  std::string script() const { return script_.str(); }

 private:
  struct Held {
    SlotId slot;
    ConnId conn;
  };

  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  bool chance(int percent) { return pick(100) < percent; }

  PoolConfig random_config() {
    PoolConfig c;
    c.pool_size = pick(5);
    c.max_overflow = pick(5) - 1;
    const int t = pick(5);
    c.timeout = t == 0   ? std::optional<Duration>(Duration(0))
                : t == 1 ? std::nullopt
                : t == 2 ? std::optional<Duration>(std::chrono::seconds(-1))
                         : std::optional<Duration>(std::chrono::seconds(pick(10) + 1));
    if (chance(50)) c.recycle = std::chrono::seconds(pick(5));
    c.pre_ping = chance(50);
    c.order = chance(50) ? QueueOrder::kLifo : QueueOrder::kFifo;
    c.reset_on_return = static_cast<ResetOnReturn>(pick(3));
    c.compat = chance(50) ? Compat::kSqlalchemy14 : Compat::kSqlalchemy20;
    c.events = chance(50) ? PoolEvents::kOn : PoolEvents::kOff;
    script_ << "config pool_size=" << c.pool_size << " max_overflow=" << c.max_overflow
            << " timeout=" << (c.timeout ? format_duration(*c.timeout) : "none")
            << " recycle=" << (c.recycle ? format_duration(*c.recycle) : "never")
            << " pre_ping=" << c.pre_ping << " lifo=" << (c.order == QueueOrder::kLifo)
            << " reset=" << static_cast<int>(c.reset_on_return)
            << " compat=" << (c.compat == Compat::kSqlalchemy14 ? "1.4" : "2.0") << "\n";
    return c;
  }

  void feed(const Event& event) {
    script_ << format_duration(now_.time_since_epoch()) << " " << event << "\n";
    core_.handle(now_, event);
    after_input();
  }

  void timeout() {
    script_ << format_duration(now_.time_since_epoch()) << " handle_timeout\n";
    core_.handle_timeout(now_);
    after_input();
  }

  void after_input() {
    core_.check_invariants();
    while (auto action = core_.poll_action()) {
      script_ << "    " << *action << "\n";
      std::visit([this](const auto& a) { carry_out(a); }, *action);
    }
    const PoolStatus status = core_.status();
    EXPECT_EQ(status.waiting, static_cast<std::int64_t>(waiting().size()))
        << "the core's waiters and the requests left unanswered with nothing in flight differ";
  }

  void carry_out(const OpenConnection& a) {
    ASSERT_TRUE(a.request) << "QueuePool opens a connection only for a request";
    ASSERT_TRUE(in_flight_.insert(static_cast<std::uint64_t>(*a.request)).second)
        << "two things in flight for one request";
    connects_.push_back(a);
  }
  void carry_out(const CloseConnection& a) {
    ASSERT_EQ(open_.erase(static_cast<std::uint64_t>(a.conn)), 1u)
        << "closing a connection that is not open";
  }
  void carry_out(const Ping& a) {
    ASSERT_TRUE(open_.count(static_cast<std::uint64_t>(a.conn))) << "pinging a closed connection";
    ASSERT_TRUE(a.request) << "QueuePool pings only for a checkout";
    ASSERT_TRUE(in_flight_.insert(static_cast<std::uint64_t>(*a.request)).second);
    pings_.push_back(a);
  }
  void carry_out(const Reset& a) {
    ASSERT_TRUE(open_.count(static_cast<std::uint64_t>(a.conn))) << "resetting a closed connection";
    resets_.push_back(a);
  }
  void carry_out(const Grant& a) {
    answer(a.request);
    ASSERT_TRUE(open_.count(static_cast<std::uint64_t>(a.conn))) << "granting a closed connection";
    for (const Held& h : held_) {
      ASSERT_NE(h.conn, a.conn) << "one connection granted to two holders";
      ASSERT_NE(h.slot, a.slot) << "one slot granted to two holders";
    }
    held_.push_back(Held{a.slot, a.conn});
  }
  void carry_out(const Fail& a) { answer(a.request); }
  void carry_out(const Notify&) {}

  void answer(RequestId request) {
    const auto id = static_cast<std::uint64_t>(request);
    ASSERT_TRUE(unanswered_.erase(id)) << "request " << id << " answered twice or never asked";
    in_flight_.erase(id);
  }

  std::vector<std::uint64_t> waiting() const {
    std::vector<std::uint64_t> out;
    for (std::uint64_t id : unanswered_) {
      if (!in_flight_.count(id)) out.push_back(id);
    }
    return out;
  }

  template <typename T>
  T take(std::vector<T>& items) {
    const auto i = static_cast<std::size_t>(pick(static_cast<int>(items.size())));
    T item = items[i];
    items.erase(items.begin() + static_cast<std::ptrdiff_t>(i));
    return item;
  }

  void finish_connect(bool ok) {
    const OpenConnection c = take(connects_);
    in_flight_.erase(static_cast<std::uint64_t>(*c.request));
    if (ok) {
      const std::uint64_t conn = next_conn_++;
      open_.insert(conn);
      feed(ConnectSucceeded{c.slot, ConnId{conn}});
    } else {
      feed(ConnectFailed{c.slot, 1});
    }
  }

  void finish_ping(PingOutcome outcome) {
    const Ping p = take(pings_);
    in_flight_.erase(static_cast<std::uint64_t>(*p.request));
    feed(PingResult{p.slot, outcome, 2});
  }

  void finish_reset(bool ok) {
    const Reset r = take(resets_);
    feed(ResetDone{r.slot, r.conn, ok ? ResetOutcome::kOk : ResetOutcome::kFailed});
  }

  void random_step() {
    if (chance(20)) now_ += std::chrono::milliseconds(pick(3000));
    switch (pick(12)) {
      case 0:
      case 1: {
        const std::uint64_t id = next_request_++;
        unanswered_.insert(id);
        feed(CheckoutRequested{RequestId{id}});
        return;
      }
      case 2:
        if (!connects_.empty()) finish_connect(!chance(20));
        return;
      case 3:
        if (!pings_.empty()) finish_ping(static_cast<PingOutcome>(chance(70) ? 0 : pick(3)));
        return;
      case 4:
        if (!resets_.empty()) finish_reset(!chance(15));
        return;
      case 5:
      case 6:
        if (!held_.empty()) feed(Returned{take(held_).slot});
        return;
      case 7:
        if (!held_.empty()) {
          const std::size_t i = static_cast<std::size_t>(pick(static_cast<int>(held_.size())));
          if (chance(50)) {
            feed(Invalidated{held_[i].slot, Invalidation::kSoft});
          } else {
            const Held h = take(held_);
            feed(chance(50) ? Event(Invalidated{h.slot, Invalidation::kHard})
                            : Event(DisconnectDetected{h.slot}));
          }
        }
        return;
      case 8:
        if (!held_.empty() && chance(50)) {
          const Held h = take(held_);
          detached_.push_back(h.conn);
          feed(Detached{h.slot});
        } else if (!detached_.empty()) {
          feed(DetachedReturned{take(detached_)});
        }
        return;
      case 9:
        if (chance(20)) feed(chance(50) ? Event(Disposed{}) : Event(PoolInvalidated{}));
        return;
      case 10: {
        const auto waits = waiting();
        if (!waits.empty() && chance(30)) {
          feed(WaitExpired{
              RequestId{waits[static_cast<std::size_t>(pick(static_cast<int>(waits.size())))]}});
        }
        return;
      }
      default:
        if (auto deadline = core_.poll_timeout(); deadline && chance(50)) {
          now_ = std::max(now_, *deadline);
        }
        timeout();
    }
  }

  // Answer every outstanding action, return every handle and let every deadline pass, until
  // nothing is left: then every request must have had its answer.
  void drain_everything() {
    for (int round = 0; round < 10000; ++round) {
      if (!connects_.empty()) {
        finish_connect(true);
      } else if (!pings_.empty()) {
        finish_ping(PingOutcome::kOk);
      } else if (!resets_.empty()) {
        finish_reset(true);
      } else if (!held_.empty()) {
        feed(Returned{take(held_).slot});
      } else if (!detached_.empty()) {
        feed(DetachedReturned{take(detached_)});
      } else if (core_.poll_timeout()) {
        now_ = std::max(now_, *core_.poll_timeout());
        timeout();
      } else {
        break;
      }
    }
    // Waiters with no timeout can only be woken by a return; none is left to come.
    const bool waits_forever = !core_.config().timeout;
    if (!waits_forever) {
      EXPECT_TRUE(unanswered_.empty()) << unanswered_.size() << " requests never answered";
    }
    EXPECT_TRUE(connects_.empty() && pings_.empty() && resets_.empty());
  }

  std::mt19937_64 rng_;
  std::ostringstream script_;
  PoolCore core_;
  Instant now_{};
  std::uint64_t next_request_ = 1;
  std::uint64_t next_conn_ = 100;
  std::set<std::uint64_t> unanswered_;
  std::set<std::uint64_t> in_flight_;  // requests with a connect or ping under way
  std::set<std::uint64_t> open_;
  std::vector<OpenConnection> connects_;
  std::vector<Ping> pings_;
  std::vector<Reset> resets_;
  std::vector<Held> held_;
  std::vector<ConnId> detached_;
};

TEST(PoolCoreProperty, RandomScriptsKeepEveryInvariant) {
  const std::uint64_t base_seed = 20261125;
  for (std::uint64_t i = 0; i < 3000; ++i) {
    const std::uint64_t seed = base_seed + i;
    RandomDriver driver(seed);
    try {
      driver.run(150);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "seed " << seed << ": " << e.what() << "\nscript:\n" << driver.script();
      return;
    }
    if (testing::Test::HasFailure()) {
      ADD_FAILURE() << "seed " << seed << "\nscript:\n" << driver.script();
      return;
    }
  }
}

}  // namespace
}  // namespace poolsim
