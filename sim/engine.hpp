// The simulation kernel's event list: events ordered by (instant, sequence number), so events
// at the same instant run in the order they were scheduled and runs are deterministic.
//
// An event is a small tagged struct, not a std::function: the model switches on `kind`.
// Cancellation is lazy: the model keeps a generation counter per timer and ignores an event
// whose generation is stale when it is popped, instead of searching the heap.
// The heap's storage grows to the largest number of pending events and is then reused, so the
// hot path allocates nothing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

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
  void schedule(Instant at, Kind kind, std::uint32_t process = 0, std::uint64_t a = 0,
                std::uint64_t b = 0) {
    heap_.push_back(SimEvent<Kind>{at, next_seq_++, kind, process, a, b});
    std::push_heap(heap_.begin(), heap_.end(), Later{});
  }
  bool empty() const { return heap_.empty(); }
  std::size_t size() const { return heap_.size(); }
  const SimEvent<Kind>& top() const { return heap_.front(); }
  SimEvent<Kind> pop() {
    std::pop_heap(heap_.begin(), heap_.end(), Later{});
    SimEvent<Kind> event = heap_.back();
    heap_.pop_back();
    return event;
  }
  void clear() {
    heap_.clear();
    next_seq_ = 0;
  }

 private:
  struct Later {
    bool operator()(const SimEvent<Kind>& x, const SimEvent<Kind>& y) const {
      return x.at != y.at ? x.at > y.at : x.seq > y.seq;
    }
  };
  std::vector<SimEvent<Kind>> heap_;
  std::uint64_t next_seq_ = 0;
};

}  // namespace poolsim::sim
