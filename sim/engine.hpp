// The simulation kernel's event list: events ordered by (instant, sequence number), so events
// at the same instant run in the order they were scheduled and runs are deterministic.
//
// An event is a small tagged struct, not a std::function: the model switches on `kind`.
// Cancellation is lazy: the model keeps a generation counter per timer and ignores an event
// whose generation is stale when it is popped, instead of searching the heap.
//
// Besides the heap there are a few FIFO lanes, for streams of events that are scheduled in time
// order anyway: the next arrival (always later than the last), and events a constant delay
// after "now" (a const:50us reset, a const ping, the server's idle_session_timeout). A lane is
// a ring buffer, O(1) both ways; pop() takes the least (instant, sequence number) among the
// heap's top and the lanes' fronts, so the order of events is exactly the heap-only order and
// results do not change. On the reference model two of every three events per request skip
// the heap.
//
// The heap is a binary heap kept by hand: sifting moves a hole and writes the event once at the
// end (std::push_heap/pop_heap moved whole 40-byte events through temporaries and made the
// reference model ~4% slower). tests/sim/engine_test.cpp holds it to a plain sorted list.
//
// Storage grows to the largest number of pending events and is then reused, so the hot path
// allocates nothing.
#pragma once

#include <algorithm>
#include <array>
#include <cassert>
#include <cstdint>
#include <vector>

#include "pool_model/ring_queue.hpp"
#include "pool_model/time.hpp"

namespace poolsim::sim {

template <typename Kind>
struct SimEvent {
  Instant at;
  std::uint64_t seq;
  Kind kind;
  std::uint32_t process;
  std::uint64_t a;  // meaning depends on kind: a request, a slot, a connection, ...
  std::uint64_t b;
};

template <typename Kind>
class EventQueue {
 public:
  static constexpr std::size_t kLanes = 4;

  void schedule(Instant at, Kind kind, std::uint32_t process = 0, std::uint64_t a = 0,
                std::uint64_t b = 0) {
    const SimEvent<Kind> event{at, next_seq_++, kind, process, a, b};
    // Sift up: parents later than the new event move down into the hole, then it fills it.
    std::size_t hole = heap_.size();
    heap_.emplace_back();
    while (hole > 0) {
      const std::size_t parent = (hole - 1) / 2;
      if (!Later{}(heap_[parent], event)) break;
      heap_[hole] = heap_[parent];
      hole = parent;
    }
    heap_[hole] = event;
  }
  // For a stream whose events are scheduled in time order: `at` is no earlier than the last
  // event put in the same lane.
  void schedule_in_order(std::size_t lane, Instant at, Kind kind, std::uint32_t process = 0,
                         std::uint64_t a = 0, std::uint64_t b = 0) {
    RingQueue<SimEvent<Kind>>& fifo = lanes_[lane];
    assert(fifo.empty() || fifo.back().at <= at);
    fifo.emplace_back(at, next_seq_++, kind, process, a, b);
  }
  bool empty() const {
    return heap_.empty() &&
           std::all_of(lanes_.begin(), lanes_.end(), [](const auto& fifo) { return fifo.empty(); });
  }
  std::size_t size() const {
    std::size_t n = heap_.size();
    for (const auto& fifo : lanes_) n += fifo.size();
    return n;
  }
  // Inlined into the event loop, which it is the heart of (the compiler would not: it is long).
  [[gnu::always_inline]] SimEvent<Kind> pop() {
    // The earliest of the heap's top and the lanes' fronts.
    const SimEvent<Kind>* best = heap_.empty() ? nullptr : &heap_.front();
    std::size_t from = kLanes;  // kLanes: the heap
    for (std::size_t i = 0; i < kLanes; ++i) {
      if (!lanes_[i].empty() && (best == nullptr || Later{}(*best, lanes_[i].front()))) {
        best = &lanes_[i].front();
        from = i;
      }
    }
    assert(best != nullptr);
    if (from < kLanes) {
      const SimEvent<Kind> event = lanes_[from].front();
      lanes_[from].pop_front();
      return event;
    }
    const SimEvent<Kind> top = heap_.front();
    const SimEvent<Kind> last = heap_.back();
    heap_.pop_back();
    // Sift down: the earlier child moves up into the hole until `last` fits there.
    const std::size_t n = heap_.size();
    std::size_t hole = 0;
    for (std::size_t child = 1; child < n; child = 2 * hole + 1) {
      if (child + 1 < n && Later{}(heap_[child], heap_[child + 1])) ++child;
      if (!Later{}(last, heap_[child])) break;
      heap_[hole] = heap_[child];
      hole = child;
    }
    if (n > 0) heap_[hole] = last;
    return top;
  }

 private:
  struct Later {
    bool operator()(const SimEvent<Kind>& x, const SimEvent<Kind>& y) const {
      return x.at != y.at ? x.at > y.at : x.seq > y.seq;
    }
  };
  std::vector<SimEvent<Kind>> heap_;
  std::array<RingQueue<SimEvent<Kind>>, kLanes> lanes_;
  std::uint64_t next_seq_ = 0;
};

}  // namespace poolsim::sim
