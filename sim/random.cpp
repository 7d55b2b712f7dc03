#include "sim/random.hpp"

#include <cassert>

namespace poolsim::sim {

namespace {

// splitmix64's output function: a bijection of uint64 with good avalanche.
std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

std::uint64_t splitmix64(std::uint64_t& x) {
  x += 0x9e3779b97f4a7c15;
  return mix64(x);
}

}  // namespace

Rng::Rng(std::uint64_t seed, std::uint64_t stream) {
  // For one seed, distinct streams give distinct splitmix64 starting points (mix64 is a
  // bijection). splitmix64 never outputs four zeros in a row, so the state is valid.
  std::uint64_t x = mix64(mix64(seed) + stream);
  for (std::uint64_t& word : s_) word = splitmix64(x);
}

std::uint64_t Rng::below(std::uint64_t n) {
  assert(n > 0);
  // Reject the lowest (2^64 mod n) values so that every residue is equally likely.
  const std::uint64_t threshold = (0 - n) % n;
  for (;;) {
    const std::uint64_t r = next();
    if (r >= threshold) return r % n;
  }
}

double Rng::normal() {
  if (has_spare_normal_) {
    has_spare_normal_ = false;
    return spare_normal_;
  }
  double u = 0;
  double v = 0;
  double s = 0;
  do {
    u = 2 * uniform() - 1;
    v = 2 * uniform() - 1;
    s = u * u + v * v;
  } while (s >= 1 || s == 0);
  const double factor = std::sqrt(-2 * std::log(s) / s);
  spare_normal_ = v * factor;
  has_spare_normal_ = true;
  return u * factor;
}

Rng stream_rng(std::uint64_t seed, Stream stream, std::uint64_t index) {
  assert(index < (std::uint64_t{1} << 48));
  return Rng(seed, (static_cast<std::uint64_t>(stream) << 48) | index);
}

}  // namespace poolsim::sim
