// The actions a pool core has asked for and its driver has not yet taken, oldest first. Every
// core keeps one and hands it to its driver two ways:
//
//   while (auto action = core.poll_action()) { std::visit(driver, *action); }  // a copy each
//   core.take_actions(driver);  // each visited where it lies, then forgotten
//
// take_actions() is the simulator's hot path: an Action is 72 bytes (Notify's optionals), and
// copying one out of the ring right after the core wrote it field by field stalls the CPU on
// store forwarding. Visiting it in place reads only the fields the driver uses. The price is a
// rule: the visitor must not feed the core that owns the queue (its new actions would move the
// one being visited). A visitor that does gets std::logic_error, never a dangling reference.
#pragma once

#include <optional>
#include <stdexcept>
#include <utility>
#include <variant>

#include "pool_model/events.hpp"
#include "pool_model/ring_queue.hpp"

namespace poolsim {

class ActionQueue {
 public:
  bool empty() const { return items_.empty(); }
  template <typename A>  // an Action or one of its alternatives
  void push(A&& action) {
    if (visiting_) [[unlikely]] {
      throw std::logic_error("a pool core was fed from inside its own take_actions() visitor");
    }
    items_.push_back(std::forward<A>(action));
  }
  std::optional<Action> poll() {
    if (items_.empty()) return std::nullopt;
    std::optional<Action> action(std::in_place, std::move(items_.front()));
    items_.pop_front();
    return action;
  }
  template <typename Visitor>
  void take_each(Visitor&& visitor) {
    while (!items_.empty()) {
      visiting_ = true;
      try {
        std::visit(visitor, std::as_const(items_.front()));
      } catch (...) {
        visiting_ = false;
        items_.pop_front();
        throw;
      }
      visiting_ = false;
      items_.pop_front();
    }
  }

 private:
  RingQueue<Action> items_;
  bool visiting_ = false;
};

}  // namespace poolsim
