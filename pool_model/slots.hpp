// The slots of every core: a vector of records named by their index (SlotId), freed ones
// reused first (PoolCore's records, StaticCore's checkouts, HikariCore's, PsycopgCore's and
// PgbouncerCore's connections).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pool_model/events.hpp"

namespace poolsim {

// A freed slot's id, or a new default slot's at the end.
template <typename Slot>
SlotId take_free_slot(std::vector<Slot>& slots, std::vector<SlotId>& free_slots) {
  if (!free_slots.empty()) {
    const SlotId id = free_slots.back();
    free_slots.pop_back();
    return id;
  }
  slots.emplace_back();
  return SlotId{static_cast<std::uint32_t>(slots.size() - 1)};
}

// Slot `id` if it exists and is in state `expected`, else nullptr (a driver's mistake: the
// core says so with not_in_state()).
template <typename Slot, typename State>
Slot* find_slot(std::vector<Slot>& slots, SlotId id, State expected) {
  const auto index = static_cast<std::size_t>(id);
  return index < slots.size() && slots[index].state == expected ? &slots[index] : nullptr;
}

inline std::string not_in_state(const char* event, SlotId id) {
  return std::string(event) + " for slot " + std::to_string(static_cast<std::uint32_t>(id)) +
         ", which is not in the state it needs";
}

}  // namespace poolsim
