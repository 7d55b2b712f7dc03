// A double-ended queue on one growing ring buffer. Unlike std::deque, which allocates and frees
// a block every few elements as a queue cycles, it keeps its storage once grown: the pool core
// and the simulator push and pop on every event without touching the allocator.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace poolsim {

template <typename T>
class RingQueue {
 public:
  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }

  T& front() { return items_[head_]; }
  const T& front() const { return items_[head_]; }
  T& back() { return items_[slot(size_ - 1)]; }
  T& operator[](std::size_t i) { return items_[slot(i)]; }
  const T& operator[](std::size_t i) const { return items_[slot(i)]; }

  // The item is assigned to its place: a variant takes one of its alternatives there directly.
  template <typename U = T>
  void push_back(U&& item) {
    new_back() = std::forward<U>(item);
  }
  // Builds the new element from its fields, in its place. (Copying in a temporary made from
  // scalars would read back 16 bytes at a time what was just written 8 at a time, which the
  // CPU cannot forward from its store buffer: a stall on every push of the simulator's.)
  template <typename... Args>
  void emplace_back(Args&&... args) {
    new_back() = T{std::forward<Args>(args)...};
  }
  void pop_front() {
    head_ = slot(1);
    --size_;
  }
  void pop_back() { --size_; }
  void clear() {
    head_ = 0;
    size_ = 0;
  }
  // Removes the i-th element, keeping the order of the others (linear: for rare use).
  void erase(std::size_t i) {
    for (; i + 1 < size_; ++i) items_[slot(i)] = std::move(items_[slot(i + 1)]);
    --size_;
  }

 private:
  std::size_t slot(std::size_t i) const {
    const std::size_t s = head_ + i;
    return s < items_.size() ? s : s - items_.size();
  }
  T& new_back() {  // the place of a new last element
    if (size_ == items_.size()) grow();
    return items_[slot(size_++)];
  }
  // Out of line and rare: keeps push_back small enough to inline on the hot path.
  [[gnu::noinline]] void grow() {
    std::vector<T> bigger(items_.empty() ? 8 : items_.size() * 2);
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = std::move(items_[slot(i)]);
    items_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<T> items_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace poolsim
