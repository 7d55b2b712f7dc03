// One lambda per std::variant alternative: std::visit(Overloaded{[](const Grant&) {...}, ...}, a).
// With no catch-all lambda, a new Event or Action alternative fails to compile until every
// driver handles it.
#pragma once

namespace poolsim {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace poolsim
