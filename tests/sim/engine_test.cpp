// The event list (sim/engine.hpp) against the simplest correct one: every pending event in a
// vector, the least (instant, sequence number) taken each time. Random interleavings of
// schedule(), schedule_in_order() on each lane and pop() from fixed seeds must give exactly the
// same events in the same order, ties at one instant included (they run in scheduling order).
#include "sim/engine.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <vector>

namespace poolsim::sim {
namespace {

enum class Kind : std::uint8_t { kA, kB };

struct Reference {
  struct Item {
    Instant at;
    std::uint64_t seq;
    std::uint64_t payload;
  };
  std::vector<Item> items;
  std::uint64_t next_seq = 0;
  void schedule(Instant at, std::uint64_t payload) { items.push_back({at, next_seq++, payload}); }
  Item pop() {
    const auto least = std::min_element(
        items.begin(), items.end(),
        [](const Item& x, const Item& y) { return x.at != y.at ? x.at < y.at : x.seq < y.seq; });
    const Item item = *least;
    items.erase(least);
    return item;
  }
};

// Each step schedules on the heap, on a lane (2 in 10) or pops (pops_in_10 in 10).
void run_interleaving(std::uint64_t seed, int steps, int spread_ns, unsigned pops_in_10) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  EventQueue<Kind> queue;
  Reference reference;
  Instant now{};
  std::array<Instant, EventQueue<Kind>::kLanes> lane_last{};
  std::uint64_t payload = 0;
  for (int step = 0; step < steps; ++step) {
    const auto choice = rng() % 10;
    if (choice < 8 - pops_in_10 ||
        queue.empty()) {  // on the heap, at now + [0, spread]: ties are common
      const Instant at = now + Duration(static_cast<std::int64_t>(rng() % (spread_ns + 1)));
      queue.schedule(at, Kind::kA, 7, payload, ~payload);
      reference.schedule(at, payload++);
    } else if (choice <
               10 - pops_in_10) {  // on a lane, no earlier than its last event and than now
      const std::size_t lane = rng() % EventQueue<Kind>::kLanes;
      const Instant at =
          std::max(lane_last[lane], now) + Duration(static_cast<std::int64_t>(rng() % 3));
      lane_last[lane] = at;
      queue.schedule_in_order(lane, at, Kind::kB, 7, payload, ~payload);
      reference.schedule(at, payload++);
    } else {
      ASSERT_EQ(queue.size(), reference.items.size());
      const SimEvent<Kind> got = queue.pop();
      const Reference::Item want = reference.pop();
      ASSERT_EQ(got.at, want.at);
      ASSERT_EQ(got.seq, want.seq);
      ASSERT_EQ(got.a, want.payload);
      ASSERT_EQ(got.b, ~want.payload);
      ASSERT_EQ(got.process, 7u);
      ASSERT_GE(got.at, now);  // time never goes backwards
      now = got.at;
    }
  }
  while (!queue.empty()) {
    const SimEvent<Kind> got = queue.pop();
    const Reference::Item want = reference.pop();
    ASSERT_EQ(got.at, want.at);
    ASSERT_EQ(got.seq, want.seq);
  }
  EXPECT_TRUE(reference.items.empty());
}

TEST(EventQueue, PopsInInstantThenSchedulingOrder) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) run_interleaving(seed, 20'000, 5, 4);
}

TEST(EventQueue, DeepHeapsKeepTheOrder) {
  // One pop in ten: thousands pending, then drained: every level of the heap is used.
  for (std::uint64_t seed = 100; seed <= 104; ++seed) run_interleaving(seed, 5'000, 1'000'000, 1);
}

}  // namespace
}  // namespace poolsim::sim
