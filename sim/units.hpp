// Parsing of scenario values: durations with units, numbers, probabilities, booleans.
//
// Each parser throws ParseError whose message says what is allowed; the caller puts
// "key = value: " in front, so the user reads one line naming the key, the value and the rule.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "pool_model/time.hpp"

namespace poolsim::sim {

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The longest duration a scenario may name: 10^6 hours (about 114 years). It keeps every
// duration, and the sum of two, inside the int64 nanosecond range of Duration (about 292 years).
inline constexpr Duration kMaxDuration = std::chrono::hours(1'000'000);

// std::llround(x) for 0 <= x < 2^63, bit for bit (halves away from zero), but inline: glibc's
// llround is a library call, and the simulator rounds every duration it samples.
inline std::int64_t round_to_integer(double x) {
  const auto whole = static_cast<std::int64_t>(x);  // x - whole is exact: no rounding below
  return whole + (x - static_cast<double>(whole) >= 0.5 ? 1 : 0);
}

// A non-negative decimal number and a unit (ns, us, ms, s, min, h): "250us", "1.5s", "0.5h";
// the bare "0" needs no unit. Surrounding whitespace is ignored. Exact decimal arithmetic,
// rounded to the nearest nanosecond (halves up).
Duration parse_duration(std::string_view text);

// A finite decimal number ("12", "-0.5", "1e3").
double parse_number(std::string_view text);

// A whole number that fits in int64 ("-1", "20"; not "1.5" or "1e3").
std::int64_t parse_integer(std::string_view text);

// A number in [0, 1].
double parse_probability(std::string_view text);

// true/false, yes/no, on/off, 1/0, in any case.
bool parse_bool(std::string_view text);

// `text` without leading and trailing spaces, tabs, CR and LF.
std::string_view trim(std::string_view text);

}  // namespace poolsim::sim
