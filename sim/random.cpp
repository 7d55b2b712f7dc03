#include "sim/random.hpp"

#include <cassert>
#include <cmath>

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

// Marsaglia and Tsang's construction: x_0 = r, x_{k+1} = -log(v / x_k + exp(-x_k)), every layer
// of area v = exp(-r) (r + 1). With their r, x_255 comes out at 8e-15: it is taken as 0, the top
// layer reaching the density's peak at 1 (the sliver left out has an area below 1e-28).
ExpZiggurat make_exp_ziggurat() {
  constexpr int n = ExpZiggurat::kLayers;
  constexpr double r = 7.69711747013104972;
  constexpr double two53 = 0x1p53;
  const double v = std::exp(-r) * (r + 1);
  double x[n];
  x[0] = r;
  for (int k = 1; k < n - 1; ++k) x[k] = -std::log(v / x[k - 1] + std::exp(-x[k - 1]));
  x[n - 1] = 0;
  ExpZiggurat z{};
  z.r = r;
  const double base_width = v / std::exp(-r);
  z.scale[0] = base_width / two53;
  z.inner[0] = static_cast<std::uint64_t>(r / base_width * two53);
  for (int k = 0; k < n; ++k) z.density[k] = k == n - 1 ? 1.0 : std::exp(-x[k]);
  for (int k = 1; k < n; ++k) {
    z.scale[k] = x[k - 1] / two53;
    z.inner[k] = static_cast<std::uint64_t>(x[k] / x[k - 1] * two53);
  }
  return z;
}

}  // namespace

// No other static initializer draws from an Rng, so it is built before any draw.
const ExpZiggurat kExpZiggurat = make_exp_ziggurat();

double Rng::exponential_edge(std::size_t layer, double x) {
  if (layer == 0) return kExpZiggurat.r - std::log(uniform_open());  // the tail, memoryless
  const double low = kExpZiggurat.density[layer - 1];
  const double y = low + uniform() * (kExpZiggurat.density[layer] - low);
  return y < std::exp(-x) ? x : -1;
}

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
