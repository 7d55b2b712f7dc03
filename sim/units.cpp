#include "sim/units.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <string>

namespace poolsim::sim {

namespace {

constexpr const char* kDurationRule =
    "must be a duration with a unit: 250us, 30ms, 1.5s, 10min, 2h";

// A unit is multiplier * 10^shift nanoseconds, so a decimal count of units converts to
// nanoseconds by moving the decimal point `shift` places and multiplying by a small integer.
struct Unit {
  std::string_view name;
  std::uint64_t multiplier;
  std::size_t shift;
};
constexpr std::array<Unit, 6> kUnits = {
    {{"ns", 1, 0}, {"us", 1, 3}, {"ms", 1, 6}, {"s", 1, 9}, {"min", 6, 10}, {"h", 36, 11}}};

constexpr auto kMaxNs = static_cast<std::uint64_t>(kMaxDuration.count());

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view leading_digits(std::string_view text) {
  std::size_t n = 0;
  while (n < text.size() && is_digit(text[n])) ++n;
  return text.substr(0, n);
}

// `digits` padded with zeros (or cut) to exactly `width` characters.
std::string fixed_width(std::string_view digits, std::size_t width) {
  std::string out(digits.substr(0, width));
  out.resize(width, '0');
  return out;
}

std::uint64_t to_uint(std::string_view digits) {
  std::uint64_t value = 0;
  std::from_chars(digits.data(), digits.data() + digits.size(), value);
  return value;
}

[[noreturn]] void throw_too_large() {
  throw ParseError(
      "must be at most " +
      std::to_string(std::chrono::duration_cast<std::chrono::hours>(kMaxDuration).count()) + "h");
}

// whole.frac units, in nanoseconds, rounded half up; throws if above kMaxNs.
std::uint64_t to_nanoseconds(std::string_view whole, std::string_view frac, const Unit& unit) {
  // Move the decimal point: integer part `shifted`, fractional digits `rest`.
  std::string shifted = std::string(whole) + fixed_width(frac, unit.shift);
  const std::size_t first_nonzero = shifted.find_first_not_of('0');
  shifted.erase(0, std::min(first_nonzero, shifted.size()));
  if (shifted.size() > 19) throw_too_large();  // fits uint64 below 10^19
  const std::uint64_t integral = to_uint(shifted);
  if (integral > kMaxNs / unit.multiplier) throw_too_large();
  // multiplier * 0.rest, rounded; 17 digits are far below a nanosecond and keep it in uint64.
  constexpr std::uint64_t kScale = 100'000'000'000'000'000;  // 10^17
  const std::string_view rest = frac.size() > unit.shift ? frac.substr(unit.shift) : "";
  const std::uint64_t fraction = to_uint(fixed_width(rest, 17));
  const std::uint64_t ns =
      integral * unit.multiplier + (unit.multiplier * fraction + kScale / 2) / kScale;
  if (ns > kMaxNs) throw_too_large();
  return ns;
}

}  // namespace

std::string_view trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const std::size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(kSpace) - begin + 1);
}

Duration parse_duration(std::string_view text) {
  const std::string_view s = trim(text);
  if (s == "0") return Duration(0);
  if (!s.empty() && s.front() == '-') throw ParseError("must not be negative");
  const std::string_view whole = leading_digits(s);
  std::string_view frac;
  std::size_t pos = whole.size();
  if (pos < s.size() && s[pos] == '.') {
    frac = leading_digits(s.substr(pos + 1));
    pos += 1 + frac.size();
    if (frac.empty()) throw ParseError(kDurationRule);  // "5.s"
  }
  if (whole.empty()) throw ParseError(kDurationRule);  // ".5s", "ms", "nan", "inf"
  const std::string_view unit_name = s.substr(pos);
  if (unit_name.empty()) {
    throw ParseError("must have a unit: ns, us, ms, s, min or h (e.g. 30s)");
  }
  for (const Unit& unit : kUnits) {
    if (unit.name == unit_name) {
      return Duration(static_cast<std::int64_t>(to_nanoseconds(whole, frac, unit)));
    }
  }
  throw ParseError(kDurationRule);
}

double parse_number(std::string_view text) {
  const std::string_view s = trim(text);
  double value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(value)) {
    throw ParseError("must be a number");
  }
  return value;
}

std::int64_t parse_integer(std::string_view text) {
  const std::string_view s = trim(text);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    throw ParseError("must be a whole number");
  }
  return value;
}

double parse_probability(std::string_view text) {
  constexpr const char* kRule = "must be a probability between 0 and 1";
  double p = 0;
  try {
    p = parse_number(text);
  } catch (const ParseError&) {
    throw ParseError(kRule);
  }
  if (p < 0 || p > 1) throw ParseError(kRule);
  return p;
}

bool parse_bool(std::string_view text) {
  std::string lower(trim(text));
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") return true;
  if (lower == "false" || lower == "no" || lower == "off" || lower == "0") return false;
  throw ParseError("must be true or false (or yes/no, on/off, 1/0)");
}

}  // namespace poolsim::sim
